"""The CoDi recipe's multi-turn gold set (demo data): conversations in CoQA's official JSON layout.

    python -m dagster_project.world.codi_gold   # writes examples/codi/data/gold_coqa.json

Each conversation is about one passage of the demo world's gold test set (entities whose passages are
not in the corpus), with five turns of a fixed rotation of turn-type patterns and phrasings written
here, unlike the offline teacher's (so a student cannot score by matching the stand-in's templates).
Answers are spans of the passage, "yes"/"no" (comparisons) or CoQA's "unknown" (unanswerable turns);
each question carries its `turn_type` (an addition to CoQA's layout the loader reads). Seeded and
deterministic.
"""

import json
from pathlib import Path

from dagster_project.teacher.offline.codi import (
    NOUNS,
    NUMBERS,
    YEARS,
    _number,
    _the,
    absent_categories,
    facts_of,
)
from dagster_project.teacher.offline.grounded_qa import passage_subject, split_sentences

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = (
    ("factoid", "followup", "unanswerable", "followup", "comparison"),
    ("summary", "factoid", "clarification", "followup", "unanswerable"),
    ("factoid", "comparison", "followup", "unanswerable", "followup"),
    ("unanswerable", "factoid", "followup", "clarification", "comparison"),
)


def conversation(passage: str, pattern: tuple[str, ...], k: int) -> list[tuple[str, str, str]]:
    """(turn_type, question, answer) turns about `passage` (fewer when it runs out of facts)."""
    subject = _the(passage_subject(passage))
    facts = facts_of(passage)
    absent = absent_categories(passage)
    turns: list[tuple[str, str, str]] = []
    used: list = []
    for t, kind in enumerate(pattern):
        unused = [f for f in facts if f not in used]
        if kind == "summary":
            turns.append((kind, "Give me the gist of this text.", split_sentences(passage)[0].rstrip(".")))
        elif kind in ("factoid", "followup") and unused:
            fact = unused[(k + t) % len(unused)]
            used.append(fact)
            noun = NOUNS[fact.category]
            q = (
                f"{passage_subject(passage)}: what's the {noun}?"
                if kind == "factoid"
                else f"and its {noun}, please?"
            )
            turns.append((kind, q, fact.answer))
        elif kind == "clarification" and used:
            turns.append((kind, f"Could you repeat the {NOUNS[used[-1].category]}?", used[-1].answer))
        elif kind == "comparison":
            numeric = [f for f in facts if f.category in NUMBERS and _number(f.answer) is not None]
            if not numeric:
                continue
            fact = numeric[k % len(numeric)]
            value = _number(fact.answer) or 0
            threshold = value + (1 if k % 2 else -1) * max(1, value // 3)
            shown = str(threshold) if fact.category in YEARS else f"{threshold:,}"
            word = "after" if fact.category in YEARS else "above"
            turns.append(
                (
                    kind,
                    f"Would you say its {NOUNS[fact.category]} is {word} {shown}?",
                    "yes" if value > threshold else "no",
                )
            )
        elif kind == "unanswerable":
            noun = NOUNS.get(absent[k % len(absent)], absent[k % len(absent)])
            turns.append((kind, f"Does the text say what the {noun} of {subject} is?", "unknown"))
    return turns


def build(gold_path: Path, limit: int = 40) -> dict:
    """The CoQA-layout document over the first `limit` distinct gold passages."""
    contexts: list[str] = []
    for line in gold_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ctx = json.loads(line)["context"]
            if ctx not in contexts:
                contexts.append(ctx)
    data = []
    for k, passage in enumerate(contexts[:limit]):
        turns = conversation(passage, PATTERNS[k % len(PATTERNS)], k)
        data.append(
            {
                "source": "distill-demo-world",
                "id": f"codi-gold-{k:03d}",
                "filename": f"demo_{k:03d}",
                "story": passage,
                "questions": [
                    {"input_text": q, "turn_id": t + 1, "turn_type": kind}
                    for t, (kind, q, _) in enumerate(turns)
                ],
                "answers": [
                    {"input_text": a, "span_text": a if a in passage else "unknown", "turn_id": t + 1}
                    for t, (_, _, a) in enumerate(turns)
                ],
            }
        )
    return {"version": "1.0", "data": data}


def main() -> None:
    """Write examples/codi/data/gold_coqa.json from data/demo_world/gold_test.jsonl."""
    out = ROOT / "examples" / "codi" / "data" / "gold_coqa.json"
    doc = build(ROOT / "data" / "demo_world" / "gold_test.jsonl")
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(
        f"wrote {out}: {len(doc['data'])} conversations, "
        f"{sum(len(c['questions']) for c in doc['data'])} turns"
    )


if __name__ == "__main__":
    main()
