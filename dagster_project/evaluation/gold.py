"""The gold test set and the trivial baseline the student is compared with."""

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from dagster_project.student.prompt_format import PromptFormat


def load_gold(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the gold test set (JSON lines); `category` defaults to "all"."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row.setdefault("category", "all")
            row["category"] = str(row["category"] or "all")
            rows.append(row)
    return rows


def most_frequent_answer(train_answers: Sequence[str]) -> str:
    """The most common answer string (ties: the one seen first); "" for no answers."""
    counts = Counter(a.strip() for a in train_answers if a and a.strip())
    return counts.most_common(1)[0][0] if counts else ""


def most_frequent_completion(train: pl.DataFrame, prompt_format: PromptFormat) -> tuple[str, str]:
    """(answer, definition) of the baseline: the most frequent completion the student was trained to write
    (its completion template over the rows of train.parquet, e.g. the `answer` or the `label` column),
    predicted for every test item; "" when train.parquet lacks a completion column."""
    columns = prompt_format.completion_columns
    what = columns[0] if len(columns) == 1 else "completion"
    definition = (
        f"most frequent answer: the {what} string that occurs most often in the training split "
        "(assets/deduped/train.parquet), predicted for every test question"
    )
    if not columns or any(c not in train.columns for c in columns):
        return "", definition + f" (train.parquet has no column {', '.join(columns) or '(none)'}: empty)"
    rows = train.select(columns).to_dicts()
    texts = [prompt_format.completion(r) for r in rows if all(r[c] is not None for c in columns)]
    return most_frequent_answer(texts), definition
