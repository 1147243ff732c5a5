import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dagster_project.world.topics import LABEL_NAMES, generate

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "synthesizrr" / "data"
FILES = (
    "labels.yaml",
    "corpus.jsonl",
    "corpus_topics.jsonl",
    "seeds.jsonl",
    "gold_test.jsonl",
    "gold_train.jsonl",
)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("topics")
    generate(out, seed=0)
    return out


def test_deterministic_and_seed_dependent(fresh, tmp_path):
    generate(tmp_path / "again", seed=0)
    for name in FILES:
        assert (fresh / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    generate(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "gold_test.jsonl").read_bytes() != (fresh / "gold_test.jsonl").read_bytes()


def test_committed_files_equal_a_fresh_generation(fresh):
    """examples/synthesizrr/data is `topics --seed 0` (regenerate it after changing the generator)."""
    for name in FILES:
        assert (DATA / name).read_bytes() == (fresh / name).read_bytes(), name


def test_labels_file(fresh):
    labels = yaml.safe_load((fresh / "labels.yaml").read_text())
    assert list(labels) == LABEL_NAMES == ["politics", "trade", "science", "seafaring", "nature"]
    for spec in labels.values():
        assert set(spec) == {"description", "cues"}
        assert isinstance(spec["description"], str) and "\n" not in spec["description"]
        assert 5 <= len(spec["cues"]) <= 12


def test_sizes_formats_and_balance(fresh):
    corpus = _rows(fresh / "corpus.jsonl")
    topics = _rows(fresh / "corpus_topics.jsonl")
    seeds = _rows(fresh / "seeds.jsonl")
    test, train = _rows(fresh / "gold_test.jsonl"), _rows(fresh / "gold_train.jsonl")

    assert 300 <= len(corpus) <= 400
    assert all(set(r) == {"id", "title", "text"} for r in corpus)  # no label in the corpus
    assert all(40 <= len(r["text"].split()) <= 120 for r in corpus)
    assert [t["id"] for t in topics] == [r["id"] for r in corpus]
    assert set(Counter(t["topic"] for t in topics).values()) == {len(corpus) // 5}

    for rows in (seeds, test, train):
        assert all(set(r) == {"id", "text", "label"} for r in rows)
        assert len({r["id"] for r in rows}) == len(rows)
        assert len({r["text"] for r in rows}) == len(rows)
    assert Counter(r["label"] for r in seeds) == dict.fromkeys(LABEL_NAMES, 8)
    assert all(15 <= len(r["text"].split()) <= 40 for r in seeds)
    assert Counter(r["label"] for r in test) == dict.fromkeys(LABEL_NAMES, 40)
    assert Counter(r["label"] for r in train) == dict.fromkeys(LABEL_NAMES, 30)
    assert all(8 <= len(r["text"].split()) <= 60 for r in test + train)


def test_gold_is_new_text(fresh):
    corpus = {r["text"] for r in _rows(fresh / "corpus.jsonl")}
    seeds = {r["text"] for r in _rows(fresh / "seeds.jsonl")}
    test = {r["text"] for r in _rows(fresh / "gold_test.jsonl")}
    train = {r["text"] for r in _rows(fresh / "gold_train.jsonl")}
    assert not test & train
    assert not (test | train) & (corpus | seeds)
    assert not seeds & corpus
    # Gold texts are varied: no single text skeleton (digits and capitalised names removed) dominates.
    skeletons = Counter(" ".join(w for w in t.split() if w[:1].islower()) for t in test)
    assert skeletons.most_common(1)[0][1] <= 10


def test_seeds_are_about_corpus_entities(fresh):
    corpus_text = " ".join(r["text"] for r in _rows(fresh / "corpus.jsonl"))
    for seed in _rows(fresh / "seeds.jsonl"):
        names = [w.strip(".,:;") for w in seed["text"].split()[1:] if w[:1].isupper()]
        assert any(name in corpus_text for name in names if len(name) > 3), seed["text"]
