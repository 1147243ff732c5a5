"""The gold (test) file's schema, one per task kind, checked before any stage runs.

A gold file is JSON lines, one object a line (or one JSON document: a list of rows, or the official
SQuAD / CoQA layout `{"data": [...]}`). `read_gold` turns every accepted format into the canonical rows
the task kinds read, and names every row it cannot use with its line and the fix; nothing is scored
against an empty reference.

Canonical rows and the formats accepted, per task kind (`evaluate.task`):

- `qa`: a reference in the reference column (`evaluate.reference_column`, default `answer`): a
  non-empty string or a list of non-empty strings (any one counts as correct). SQuAD's `answers`
  (`{"text": [...], "answer_start": [...]}` as Hugging Face writes it, or `[{"text": ..}, ..]` as the
  official JSON does) is accepted when the row has no `answer`: it becomes `answer`, the list of texts.
  A SQuAD 2.0 unanswerable question (no answer text) is an error: drop those rows. The official nested
  SQuAD file (`data[].paragraphs[].qas[]`) is flattened to one row per question with its `context`.
- `multi_turn_qa`: `context` and `turns: [{question, answer}, ...]` (the answer as for qa). CoQA is
  accepted: `story` becomes `context`, and `questions` + `answers` (Hugging Face: a list of strings and
  `{"input_text": [...]}`; official: lists of `{"input_text": ...}`) become `turns`.
- `classification`: a label in the reference column (default `label`): a non-empty string (a number or
  boolean is read as its text); the text to classify in any columns the student's prompt format reads
  (`text` in the default format; checked against `train.prompt_format`, not here).
- `free_text`: the reference is optional (shown to the judge when present).

Every row must also hold the columns the student's prompt format names (checked against
`train.prompt_format` by `distill check`, and against the student's saved format when evaluate starts).
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_PROBLEMS = 5  # problems listed before "... and N more"


class GoldError(ValueError):
    """The gold file cannot be used as it is; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class GoldRow:
    """One row as read: its line in the file (1-based; for a JSON document, its position) and its data."""

    line: int
    data: Any


def raw_rows(path: str | Path) -> list[GoldRow]:
    """The rows of a gold file: JSON lines, or one JSON document (a list, or SQuAD/CoQA `{"data": ..}`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldError(f"{path}: file not found; point evaluate.gold_test at the test set.") from None
    except UnicodeDecodeError as exc:
        raise GoldError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8 JSON lines.") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")) and "\n" in stripped.strip():
        try:  # one (pretty-printed) JSON document rather than JSON lines
            return _document_rows(json.loads(text))
        except json.JSONDecodeError:
            pass
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(GoldRow(i, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise GoldError(
                f"{path}:{i}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON "
                "object (JSON lines)."
            ) from None
    return rows


def _document_rows(doc: Any) -> list[GoldRow]:
    data = doc.get("data", doc) if isinstance(doc, dict) else doc
    if not isinstance(data, list):
        data = [data]
    rows: list[GoldRow] = []
    for article in data:
        if isinstance(article, dict) and isinstance(article.get("paragraphs"), list):  # official SQuAD
            for paragraph in article["paragraphs"]:
                for qa in paragraph.get("qas", []) if isinstance(paragraph, dict) else []:
                    row = {"context": paragraph.get("context"), **qa}
                    if "title" in article:
                        row.setdefault("title", article["title"])
                    rows.append(GoldRow(len(rows) + 1, row))
        else:
            rows.append(GoldRow(len(rows) + 1, article))
    return rows


# ---------------------------------------------------------------------------------------- references


def reference_list(value: Any) -> list[str] | None:
    """The non-blank answer texts of a reference value (a string, a list, SQuAD's `answers` in either
    layout); None when the value is not a reference at all (e.g. a number for qa)."""
    if isinstance(value, Mapping):
        value = value.get("text", value.get("input_text"))
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list | tuple):
        texts = []
        for v in value:
            if isinstance(v, Mapping):
                v = v.get("text", v.get("input_text"))
            if not isinstance(v, str):
                return None
            if v.strip():
                texts.append(v)
        return texts
    return None


def _reference(row: dict, column: str, what: str) -> tuple[Any, str | None]:
    """(canonical reference, problem) of a qa-style row's reference column."""
    if column not in row:
        return None, f"no {what} column {column!r}"
    texts = reference_list(row[column])
    if texts is None:
        return None, f"{column!r} is {type(row[column]).__name__}, not a string or a list of strings"
    if not texts:
        return None, f"{column!r} is empty (nothing to score against; SQuAD 2.0 unanswerable? drop the row)"
    return (texts[0] if len(texts) == 1 and isinstance(row[column], str) else texts), None


# --------------------------------------------------------------------------------------------- tasks


def _qa(row: dict, column: str | None) -> str | None:
    col = column or "answer"
    if column is None and "answer" not in row and "answers" in row:  # SQuAD
        row["answer"] = row.pop("answers")
    ref, problem = _reference(row, col, "reference")
    if problem:
        return (
            f"{problem} (its columns: {', '.join(row) or 'none'}); give each row `{col}` (a string or a list "
            "of accepted strings) or SQuAD's `answers`, or set evaluate.reference_column to the column "
            "holding the reference"
        )
    row[col] = ref
    return None


def _coqa_turns(row: dict) -> list[dict] | None:
    questions, answers = row.get("questions"), row.get("answers")
    if not isinstance(questions, list):
        return None
    q_texts = [q.get("input_text") if isinstance(q, Mapping) else q for q in questions]
    if isinstance(answers, Mapping):  # Hugging Face: {"input_text": [...], "answer_start": [...], ...}
        a_texts = answers.get("input_text")
    elif isinstance(answers, list):
        a_texts = [a.get("input_text") if isinstance(a, Mapping) else a for a in answers]
    else:
        return None
    if not isinstance(a_texts, list) or len(a_texts) != len(q_texts):
        return None
    return [{"question": q, "answer": a} for q, a in zip(q_texts, a_texts, strict=True)]


def _multi_turn(row: dict, column: str | None) -> str | None:
    col = column or "answer"
    if "turns" not in row and "questions" in row:  # CoQA
        turns = _coqa_turns(row)
        if turns is None:
            return (
                "CoQA-style row whose `questions` and `answers` do not pair up; give each row `context` and "
                "`turns: [{question, answer}]`"
            )
        row["turns"] = turns
        for key in ("questions", "answers"):
            row.pop(key, None)
    if "context" not in row and isinstance(row.get("story"), str):  # CoQA
        row["context"] = row.pop("story")
    if not isinstance(row.get("context"), str) or not row["context"].strip():
        return (
            f"no `context` text (its columns: {', '.join(row) or 'none'}); give each row `context` (CoQA: "
            "`story`) and `turns: [{question, answer}]`"
        )
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns:
        return "no `turns` (a non-empty list of {question, answer}); CoQA's `questions` + `answers` work too"
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("question"), str):
            return f"turn {t} has no `question` string; each turn is {{question, {col}}}"
        _, problem = _reference(turn, col, "answer")
        if problem:
            return f"turn {t}: {problem}; each turn is {{question, {col}}} with a non-empty answer"
        turn[col] = _reference(turn, col, "answer")[0]
    return None


def _classification(row: dict, column: str | None) -> str | None:
    col = column or "label"
    value = row.get(col)
    if isinstance(value, bool | int | float) and not isinstance(value, bool):
        value = str(value)
    elif isinstance(value, bool):
        value = str(value).lower()
    if not isinstance(value, str) or not value.strip():
        return (
            f"no label in {col!r} (its columns: {', '.join(row) or 'none'}); give each row `{col}` (the gold "
            "label) or set evaluate.reference_column to the column holding it"
        )
    row[col] = value
    return None  # the columns the student reads are checked against its prompt format (any columns)


def _free_text(row: dict, column: str | None) -> str | None:
    col = column or "answer"
    if col in row and reference_list(row[col]) is None:
        return f"{col!r} is {type(row[col]).__name__}, not a string or a list of strings"
    return None


CHECKS = {"qa": _qa, "multi_turn_qa": _multi_turn, "classification": _classification, "free_text": _free_text}


def read_gold(
    path: str | Path, task: str = "qa", reference_column: str | None = None
) -> list[dict[str, Any]]:
    """The canonical rows of the gold file for `task` (see the module docstring); GoldError naming every
    unusable row (its line and the fix) and an empty file. `category` defaults to "all"."""
    check = CHECKS.get(task, _qa)
    rows, problems = [], []
    for raw in raw_rows(path):
        if not isinstance(raw.data, dict):
            problems.append(f"{path}:{raw.line}: a {type(raw.data).__name__}, not a JSON object of columns")
            continue
        row = dict(raw.data)
        problem = check(row, reference_column)
        if problem:
            problems.append(f"{path}:{raw.line}: {task} gold row: {problem}")
            continue
        row.setdefault("category", "all")
        row["category"] = str(row["category"] or "all")
        rows.append(row)
    if problems:
        more = (
            f"\n... and {len(problems) - MAX_PROBLEMS} more such rows" if len(problems) > MAX_PROBLEMS else ""
        )
        raise GoldError("\n".join(problems[:MAX_PROBLEMS]) + more)
    if not rows:
        raise GoldError(f"{path}: has no rows; evaluate needs at least one gold row (JSON lines).")
    return rows


def eval_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows for decontamination, whatever the task: SQuAD's `answers` read as `answer`, a conversation
    (`turns`, or CoQA) as one row per turn with its `context`. Unusable rows are skipped here: the
    evaluate stage's schema check names them."""
    for raw in raw_rows(path):
        if not isinstance(raw.data, dict):
            continue
        row = dict(raw.data)
        if "turns" in row or "questions" in row:
            if _multi_turn(row, None) is None:
                for t, turn in enumerate(row["turns"]):
                    yield {"id": f"{row.get('id', raw.line)}#{t}", "context": row["context"], **turn}
            continue
        _qa(row, None)
        yield row


def check_gold_file(path: str | Path, task: str, reference_column: str | None) -> list[str]:
    """Problems with a gold file for `task` (each naming the line and the fix); [] when it is usable."""
    try:
        read_gold(path, task, reference_column)
    except GoldError as exc:
        return str(exc).splitlines()
    return []
