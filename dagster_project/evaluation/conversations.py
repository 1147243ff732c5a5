"""Multi-turn gold sets in CoQA's and QuAC's formats, read into one shape.

`load_conversations(path, refusal)` returns one dict per conversation: {"id", "context", "turns":
[{"question", "answers": [gold answers], "turn_type"}]}. Accepted (JSON lines, or one JSON document):

- CoQA, official (`{"version", "data": [{"id", "story", "questions": [{"input_text", "turn_id"}],
  "answers": [{"input_text", ...}], "additional_answers": {"0": [...], ...}}]}`: the additional answers
  join each turn's gold answers) and Hugging Face rows (`story`, `questions`: strings, `answers:
  {"input_text": [...]}`). A question object may carry `turn_type` (this project's gold sets do).
- QuAC, official (`{"data": [{"paragraphs": [{"context", "qas": [{"question", "orig_answer": {"text"},
  "answers": [{"text"}]}]}]}]}`) and Hugging Face rows (`context`, `questions`, `orig_answers: {"texts"}`,
  `answers: {"texts": [[...]]}`). "CANNOTANSWER" becomes the refusal, and the trailing " CANNOTANSWER"
  QuAC appends to every context is removed.
- canonical rows: `context` and `turns: [{question, answer (a string or list), turn_type}]`.

CoQA's "unknown" becomes the refusal too, so one figure measures unanswerable detection in every format.
A row that is none of these is an error naming its position and the fix. The evaluate stage's
`multi_turn_qa` task reads the same CoQA files through `gold_schema.read_gold`.
"""

import json
from pathlib import Path
from typing import Any

from dagster_project.evaluation.gold_schema import GoldError, raw_rows


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get("input_text", value.get("text", value.get("texts")))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def _refusal(text: str, refusal: str) -> str:
    return refusal if text.strip().lower() in ("unknown", "cannotanswer") else text


def _coqa(row: dict, refusal: str) -> list[dict] | None:
    questions, answers = row.get("questions"), row.get("answers")
    if not isinstance(questions, list):
        return None
    main = answers.get("input_text") if isinstance(answers, dict) else answers
    if not isinstance(main, list) or len(main) != len(questions):
        return None
    extra = row.get("additional_answers") or {}
    turns = []
    for t, (q, a) in enumerate(zip(questions, main, strict=True)):
        golds = _texts(a) + [x for k in sorted(extra) for x in _texts(extra[k][t : t + 1])]
        turns.append(
            {
                "question": q.get("input_text", "") if isinstance(q, dict) else str(q),
                "answers": [_refusal(g, refusal) for g in golds if g.strip()],
                "turn_type": (q.get("turn_type") if isinstance(q, dict) else None) or "",
            }
        )
    return turns


def _quac_hf(row: dict, refusal: str) -> list[dict] | None:
    questions = row.get("questions")
    orig = _texts(row.get("orig_answers"))
    if not isinstance(questions, list) or len(orig) != len(questions):
        return None
    more = (row.get("answers") or {}).get("texts") or [[] for _ in questions]
    return [
        {"question": str(q), "answers": [_refusal(g, refusal) for g in [o, *m] if g.strip()], "turn_type": ""}
        for q, o, m in zip(questions, orig, more, strict=False)
    ]


def _canonical(row: dict, refusal: str) -> list[dict] | None:
    turns = row.get("turns")
    if not isinstance(turns, list):
        return None
    out = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("question"), str):
            return None
        golds = _texts(turn.get("answer", turn.get("answers")))
        out.append(
            {
                "question": turn["question"],
                "answers": [_refusal(g, refusal) for g in golds if g.strip()],
                "turn_type": turn.get("turn_type") or "",
            }
        )
    return out


def _quac_official(doc: Any, refusal: str) -> list[dict] | None:
    data = doc.get("data") if isinstance(doc, dict) else None
    if not (isinstance(data, list) and data and isinstance(data[0], dict) and "paragraphs" in data[0]):
        return None
    if not any("orig_answer" in qa for a in data for p in a.get("paragraphs", []) for qa in p.get("qas", [])):
        return None  # SQuAD, not QuAC
    rows = []
    for article in data:
        for p in article.get("paragraphs", []):
            turns = [
                {
                    "question": qa["question"],
                    "answers": [
                        _refusal(g, refusal)
                        for g in [*_texts(qa.get("orig_answer")), *_texts(qa.get("answers"))]
                        if g.strip()
                    ],
                    "turn_type": "",
                }
                for qa in p.get("qas", [])
            ]
            rows.append({"id": p.get("id", f"{len(rows)}"), "context": p["context"], "turns": turns})
    return rows


def load_conversations(path: str | Path, refusal: str = "unknown") -> list[dict[str, Any]]:
    """The conversations of a CoQA / QuAC / canonical multi-turn file (see the module doc)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if not text.strip():
        raise GoldError(f"{path}: missing or empty; point it at a CoQA/QuAC-format file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    quac = _quac_official(doc, refusal) if doc is not None else None
    if quac is not None:
        rows = quac
    else:
        rows, problems = [], []
        for raw in raw_rows(path):
            row = raw.data if isinstance(raw.data, dict) else {}
            context = row.get("context", row.get("story"))
            turns = _canonical(row, refusal) if "turns" in row else None
            if turns is None and "orig_answers" in row:
                turns = _quac_hf(row, refusal)
            elif turns is None:
                turns = _coqa(row, refusal)
            if not isinstance(context, str) or not turns or any(not t["answers"] for t in turns):
                problems.append(
                    f"{path}:{raw.line}: not a conversation (CoQA: story, questions, answers; QuAC: context, "
                    "questions, orig_answers; or context and turns: [{question, answer}]), or a turn without "
                    "an answer"
                )
                continue
            rows.append({"id": str(row.get("id", raw.line)), "context": context, "turns": turns})
        if problems:
            raise GoldError("\n".join(problems[:5]))
    for row in rows:
        row["context"] = row["context"].removesuffix(" CANNOTANSWER").rstrip()
    if not rows:
        raise GoldError(f"{path}: no conversations")
    return rows
