"""Generate the critic recipe's DEMO data: plain, mundane sentences for the teacher to paraphrase humorously.

`python -m dagster_project.world.critic --out examples/critic/data --seed 0` writes, deterministically
(file names start with `demo_`: project-made demo data):

- `demo_sentences_train.jsonl`    {"id", "sentence"}: the inputs of round 0 (the teacher's paraphrases,
                                  SFT) and of every critic round (the student samples candidates for them).
- `demo_sentences_heldout.jsonl`  the same shape, disjoint: every system (teacher, SFT student, each
                                  round's student) paraphrases these and the critic compares them.

Each sentence is "<subject> <mishap> <when>." over a small vocabulary ("The coffee machine broke down
during lunch."), so a tiny student can learn to copy it and add a humorous turn. A held-out sentence
never shares its (subject, mishap) with a training sentence: the students must generalise the turn of
phrase, not recall a sentence.
"""

import argparse
import json
import random
from pathlib import Path

SUBJECTS = [
    "the office printer",
    "the coffee machine",
    "my alarm clock",
    "the wifi",
    "the elevator",
    "the toaster",
    "my phone",
    "the bus",
    "the dishwasher",
    "my laptop",
    "the fridge",
    "the vending machine",
    "the train",
    "the smoke alarm",
    "my umbrella",
    "the lawn mower",
]
MISHAPS = [
    "broke down",
    "stopped working",
    "made a strange noise",
    "ran out of battery",
    "refused to start",
    "jammed again",
    "was late",
    "beeped for an hour",
    "froze completely",
    "lost the signal",
]
WHEN = [
    "this morning",
    "during lunch",
    "on Monday",
    "before the meeting",
    "at midnight",
    "last night",
    "after the update",
    "in the rain",
]


def sentence(subject: str, mishap: str, when: str) -> str:
    """One input sentence, capitalised and ending with a full stop."""
    text = f"{subject} {mishap} {when}."
    return text[0].upper() + text[1:]


def make_world(seed: int = 0, n_train: int = 120, n_heldout: int = 40) -> dict[str, list[dict[str, str]]]:
    """The train and held-out sentences: disjoint (subject, mishap) combinations, seeded."""
    rng = random.Random(seed)
    combos = [(s, m) for s in SUBJECTS for m in MISHAPS]
    rng.shuffle(combos)
    n_heldout_combos = max(1, len(combos) // 4)
    heldout_combos, train_combos = combos[:n_heldout_combos], combos[n_heldout_combos:]
    out: dict[str, list[dict[str, str]]] = {}
    for split, pool, n in (("train", train_combos, n_train), ("heldout", heldout_combos, n_heldout)):
        if n > len(pool):
            raise ValueError(f"{split}: {n} sentences asked, {len(pool)} (subject, mishap) pairs available")
        picked = rng.sample(pool, n)
        out[split] = [
            {"id": f"{split}-{i:03d}", "sentence": sentence(s, m, rng.choice(WHEN))}
            for i, (s, m) in enumerate(picked)
        ]
    return out


def write_world(out_dir: Path, seed: int = 0, n_train: int = 120, n_heldout: int = 40) -> list[Path]:
    """Write the two JSON lines files into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, rows in make_world(seed, n_train, n_heldout).items():
        path = out_dir / f"demo_sentences_{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    """CLI: write the demo sentences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/critic/data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--heldout", type=int, default=40)
    args = parser.parse_args()
    for path in write_world(Path(args.out), args.seed, args.train, args.heldout):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
