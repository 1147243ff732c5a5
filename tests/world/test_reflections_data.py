"""The reflections recipe's demo data: a fresh generation equals the committed files; the data is marked
as demo data, the splits are disjoint and every judged item has three raters."""

import csv
import json
from collections import Counter
from pathlib import Path

from dagster_project.world.reflections import RATER_FLIP, generate

DATA = Path(__file__).resolve().parents[2] / "examples" / "reflections" / "data"
FILES = [
    "demo_utterances_train.jsonl",
    "demo_utterances_heldout.jsonl",
    "demo_judged_items.jsonl",
    "demo_human_labels.csv",
]


def test_committed_files_equal_a_fresh_generation(tmp_path):
    generate(tmp_path, seed=0)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_splits_are_disjoint_and_every_item_has_three_raters():
    def utterances(name):
        return {json.loads(line)["utterance"] for line in (DATA / name).read_text().splitlines()}

    train, heldout = utterances(FILES[0]), utterances(FILES[1])
    judged = utterances(FILES[2])
    assert len(train) == 600 and len(heldout) == 60 and len(judged) == 80
    assert not train & heldout and not train & judged and not heldout & judged
    with (DATA / FILES[3]).open() as f:
        rows = list(csv.DictReader(f))
    per_item = Counter(r["id"] for r in rows)
    assert set(per_item.values()) == {3} and len(per_item) == 80
    assert {r["rater"] for r in rows} == set(RATER_FLIP)
    assert {r["label"] for r in rows} == {"acceptable", "unacceptable"}
