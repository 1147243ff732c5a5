"""Generate the reflections recipe's DEMO data: client utterances and human ratings of reflections.

`python -m dagster_project.world.reflections --out examples/reflections/data --seed 0` writes,
deterministically (every file name starts with `demo_`: this is project-made demo data, not clinical
data and not real people's words):

- `demo_utterances_train.jsonl`   {"id", "context", "utterance"}: what a client says in a counselling
                                  conversation (context: the counsellor's previous turn, may be empty);
                                  the teacher writes reflections of these to train the students.
- `demo_utterances_heldout.jsonl` the same shape, disjoint: every system reflects these and is judged.
- `demo_judged_items.jsonl`       {"id", "context", "utterance", "reflection"}: reflections of varied
                                  quality (good simple and complex ones; advice, questions, parroting,
                                  off-topic and vague ones) for the human raters and the judge.
- `demo_human_labels.csv`         id,rater,label: three simulated raters (`acceptable` / `unacceptable`)
                                  per judged item. They are a seeded simulation: each rater gives the
                                  item's intended label and flips it with a rater-specific rate; vague
                                  reflections are a coin toss for every rater. A real run replaces this file
                                  with real raters' labels (same format).

Utterances are built from templates (a life area, a situation, a feeling, sometimes a "but" that shows
ambivalence), so the students have something learnable: turning "I ... my ..." into "you ... your ...",
keeping the situation and naming the feeling or the two sides of the ambivalence.
"""

import argparse
import csv
import json
import random
from pathlib import Path

from dagster_project.teacher.offline.reflections import second_person

AREAS: dict[str, dict[str, list[str]]] = {
    "drinking": {
        "situations": [
            "I've been drinking most nights since {event}",
            "I usually have a few beers after work to unwind",
            "my {person} says I drink too much at parties",
            "I woke up again not remembering how I got home",
        ],
        "sides": [
            "it's the only thing that helps me relax",
            "I don't want to give up going out with friends",
        ],
    },
    "smoking": {
        "situations": [
            "I keep telling myself I'll quit smoking after {event}",
            "I'm back to a pack a day since {event}",
            "my {person} hates the smell of cigarettes in the car",
            "I tried the patches twice and started smoking again",
        ],
        "sides": ["smoking is the only break I get all day", "I've failed every time I tried to stop"],
    },
    "work": {
        "situations": [
            "my boss keeps piling extra shifts on me",
            "I've been passed over for promotion since {event}",
            "I dread going into the office every Monday",
            "I stay late every night to finish my reports",
        ],
        "sides": ["we need the money", "I don't know what else I would do"],
    },
    "family": {
        "situations": [
            "my {person} and I haven't spoken since {event}",
            "I argue with my {person} about every little thing",
            "my {person} never listens when I talk about my week",
            "I spend every weekend looking after my {person}",
        ],
        "sides": ["I still love them", "I'm afraid of making things worse"],
    },
    "sleep": {
        "situations": [
            "I can't sleep more than a few hours a night since {event}",
            "I lie awake worrying about tomorrow",
            "I scroll on my phone until two in the morning",
            "I'm exhausted by the middle of every afternoon",
        ],
        "sides": ["the night is the only time I have to myself", "I've tried everything and nothing works"],
    },
    "exercise": {
        "situations": [
            "the doctor says I need to move more since {event}",
            "I bought a gym membership and went twice",
            "my knees hurt when I try to go running",
            "my {person} wants me to join a walking group",
        ],
        "sides": ["I hate feeling out of breath", "I never have the time"],
    },
    "money": {
        "situations": [
            "the bills keep stacking up since {event}",
            "I lent my {person} money and never got it back",
            "I keep buying things online that I don't need",
            "I hide my credit card statements from my {person}",
        ],
        "sides": ["shopping is the only thing that cheers me up", "I don't want anyone to know"],
    },
    "health": {
        "situations": [
            "I keep forgetting to take my blood pressure pills",
            "I've been putting off the check-up since {event}",
            "my {person} noticed I've lost a lot of weight",
            "I get headaches almost every day now",
        ],
        "sides": ["I'm scared of what the doctor might find", "I feel fine most of the time"],
    },
}
EVENTS = [
    "I lost my job",
    "the divorce",
    "we moved house",
    "my father died",
    "the baby was born",
    "Christmas",
    "the accident",
    "I started the new job",
]
PEOPLE = ["wife", "husband", "sister", "brother", "mother", "father", "son", "daughter", "partner", "friend"]
FEELINGS = [
    "exhausted",
    "ashamed",
    "frustrated",
    "overwhelmed",
    "lonely",
    "anxious",
    "angry",
    "stuck",
    "worried",
    "embarrassed",
    "hopeless",
    "tired of it",
]
COUNSELLOR_TURNS = [
    "",
    "",
    "What brings you here today?",
    "How have things been this week?",
    "Tell me more about that.",
    "What would you like to talk about?",
]

# Reflections of the judged items, by kind (the intended label in brackets):
# good_simple / good_complex (acceptable), vague (a coin toss for raters), advice / question / parrot /
# off_topic / too_short (unacceptable).
BAD_TEMPLATES = {
    "advice": ["You should just stop and think about your health.", "Try to make a plan and stick to it."],
    "question": ["Why do you think that is?", "Have you talked to anyone about this?"],
    "off_topic": [
        "It sounds like you really enjoy your garden.",
        "You are excited about your holiday plans.",
    ],
    "too_short": ["Okay.", "I see."],
}
VAGUE = [
    "It sounds like things are hard right now.",
    "That sounds difficult for you.",
    "You have a lot going on.",
]
RATER_FLIP = {"rater_a": 0.1, "rater_b": 0.15, "rater_c": 0.2}


def _utterance(rng: random.Random) -> tuple[str, dict[str, str]]:
    area = rng.choice(sorted(AREAS))
    spec = AREAS[area]
    situation = rng.choice(spec["situations"]).format(event=rng.choice(EVENTS), person=rng.choice(PEOPLE))
    feeling = rng.choice(FEELINGS)
    parts = {"area": area, "situation": situation, "feeling": feeling}
    shape = rng.random()
    if shape < 0.35:
        side = rng.choice(spec["sides"])
        parts["side"] = side
        text = f"{situation[0].upper()}{situation[1:]}, but {side}."
    elif shape < 0.7:
        text = f"{situation[0].upper()}{situation[1:]} and I feel {feeling}."
    else:
        text = f"Honestly, I'm {feeling} because {situation}."
    return text, parts


def _rows(rng: random.Random, n: int, prefix: str, seen: set[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    while len(rows) < n:
        text, _ = _utterance(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {"id": f"{prefix}{len(rows):04d}", "context": rng.choice(COUNSELLOR_TURNS), "utterance": text}
        )
    return rows


def _judged_items(rng: random.Random, n: int, seen: set[str]) -> list[tuple[dict[str, object], str]]:
    """(item, intended label) pairs: a mix of reflection kinds, each over its own utterance."""
    kinds = ["good_simple", "good_complex", "vague", "advice", "question", "parrot", "off_topic", "too_short"]
    weights = [0.25, 0.2, 0.12, 0.1, 0.1, 0.09, 0.08, 0.06]
    items = []
    while len(items) < n:
        text, parts = _utterance(rng)
        if text in seen:
            continue
        seen.add(text)
        kind = rng.choices(kinds, weights)[0]
        situation = second_person(parts["situation"])
        if kind == "good_simple":
            reflection, label = f"It sounds like {situation}.", "acceptable"
        elif kind == "good_complex":
            if "side" in parts:
                reflection = (
                    f"Part of you knows {situation}, and part of you feels {second_person(parts['side'])}."
                )
            else:
                reflection = (
                    f"You're feeling {parts['feeling']} because {situation}, and it's wearing you down."
                )
            label = "acceptable"
        elif kind == "vague":
            reflection, label = rng.choice(VAGUE), rng.choice(["acceptable", "unacceptable"])
        elif kind == "parrot":
            reflection, label = text, "unacceptable"
        else:
            reflection, label = rng.choice(BAD_TEMPLATES[kind]), "unacceptable"
        item = {"id": f"judged{len(items):04d}", "context": "", "utterance": text, "reflection": reflection}
        items.append((item, label if kind != "vague" else "vague"))
    return items


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def generate(out: Path, seed: int = 0, n_train: int = 600, n_heldout: int = 60, n_judged: int = 80) -> None:
    """Write the demo files (see module doc) into `out`."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    _write_jsonl(out / "demo_utterances_train.jsonl", _rows(rng, n_train, "train", seen))
    _write_jsonl(out / "demo_utterances_heldout.jsonl", _rows(rng, n_heldout, "heldout", seen))
    judged = _judged_items(rng, n_judged, seen)
    _write_jsonl(out / "demo_judged_items.jsonl", [item for item, _ in judged])
    with (out / "demo_human_labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "rater", "label"])
        for item, intended in judged:
            for rater, flip in RATER_FLIP.items():
                if intended == "vague":
                    label = rng.choice(["acceptable", "unacceptable"])
                else:
                    other = "unacceptable" if intended == "acceptable" else "acceptable"
                    label = other if rng.random() < flip else intended
                writer.writerow([item["id"], rater, label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate(Path(args.out), seed=args.seed)


if __name__ == "__main__":
    main()
