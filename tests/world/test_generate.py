import json
import re
from pathlib import Path

from dagster_project.world.generate import generate


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, seed=0)
    generate(b, seed=0)
    for name in ("passages.jsonl", "queries.txt", "gold_test.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    generate(tmp_path / "c", seed=1)
    assert (tmp_path / "c" / "passages.jsonl").read_bytes() != (a / "passages.jsonl").read_bytes()


def test_world_shape_and_held_out_gold(tmp_path):
    counts = generate(tmp_path, seed=0)
    passages = _rows(tmp_path / "passages.jsonl")
    gold = _rows(tmp_path / "gold_test.jsonl")
    queries = (tmp_path / "queries.txt").read_text().splitlines()
    assert counts == {"passages": len(passages), "gold": len(gold), "queries": len(queries)}
    assert 250 <= len(passages) <= 350 and 120 <= len(gold) <= 150 and 20 <= len(queries) <= 60
    assert len({p["id"] for p in passages}) == len(passages)
    words = [len(p["text"].split()) for p in passages]
    assert min(words) >= 30 and max(words) <= 95
    assert sum((tmp_path / n).stat().st_size for n in ("passages.jsonl", "gold_test.jsonl")) < 1_000_000

    texts = {p["text"] for p in passages}
    titles = {p["title"] for p in passages}
    for row in gold:
        assert set(row) == {"id", "context", "question", "answer", "category"}
        assert row["answer"] in row["context"]  # a verbatim span
        assert row["context"] not in texts  # the entity is held out of the corpus
        subject = re.match(r"(?:The )?([A-Z]\w+(?: [A-Z]\w+)*)", row["context"]).group(1)
        assert subject not in titles, subject
    assert len({row["id"] for row in gold}) == len(gold)
    assert len({row["category"] for row in gold}) >= 20


def test_checked_in_world_matches_generator(tmp_path):
    """data/demo_world is the output of `generate --seed 0` (regenerate it after changing the generator)."""
    repo_world = Path(__file__).resolve().parents[2] / "data" / "demo_world"
    generate(tmp_path, seed=0)
    for name in ("passages.jsonl", "queries.txt", "gold_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (repo_world / name).read_bytes(), name
