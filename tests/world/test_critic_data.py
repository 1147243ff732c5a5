"""The critic recipe's demo sentences: deterministic, the committed files are the generator's output, and
no held-out sentence shares its (subject, mishap) with a training sentence."""

from pathlib import Path

from dagster_project.world.critic import MISHAPS, SUBJECTS, write_world

REPO = Path(__file__).resolve().parents[2]


def _combo(sentence: str) -> tuple[str, str]:
    low = sentence.lower()
    subject = next(s for s in SUBJECTS if low.startswith(s))
    mishap = next(m for m in MISHAPS if low[len(subject) :].strip().startswith(m))
    return subject, mishap


def test_committed_data_is_the_generators_and_splits_are_disjoint(tmp_path: Path) -> None:
    import json

    for path in write_world(tmp_path):
        assert path.read_text() == (REPO / "examples/critic/data" / path.name).read_text(), path.name
    rows = {
        split: [
            json.loads(line) for line in (tmp_path / f"demo_sentences_{split}.jsonl").read_text().splitlines()
        ]
        for split in ("train", "heldout")
    }
    assert (len(rows["train"]), len(rows["heldout"])) == (120, 40)
    train = {_combo(r["sentence"]) for r in rows["train"]}
    assert not train & {_combo(r["sentence"]) for r in rows["heldout"]}
