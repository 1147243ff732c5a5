"""Multi-turn training rows: a conversation (a passage and its turns) becomes one example per assistant
turn, whose prompt holds the passage and the history before that turn and whose completion is the turn's
answer. The loss is therefore on assistant turns only (the prompt's labels are ignored, as for any row),
and every assistant turn of a conversation is learned once.

The history is rendered exactly as the evaluate stage's `multi_turn_qa` task renders the gold history,
so the student is asked at test time in the format it learned:

    <passage>
    Q: <question 1> A: <answer 1>
    Q: <question 2> A: <answer 2>

(the `context` column; the turn's own `question` and `answer` are columns of their own, so any
`prompt_format` over context/question/answer reads them).

Truncation (`fit_history`): a prompt that does not fit `max_length` tokens loses its **oldest history
turns first**, one at a time, until it fits; the passage is never cut (and with it every answer span).
A turn whose passage and question do not fit even without history is left out and counted, rather than
trained on a cut passage.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster_project.student.prompt_format import PromptFormat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

HISTORY_KEY = "_history"  # the (question, answer) pairs before the turn, for truncation
PASSAGE_KEY = "_passage"


def render_context(passage: str, history: Sequence[tuple[str, str]]) -> str:
    """The passage followed by one "Q: ... A: ..." line per earlier turn (as `multi_turn_qa` asks)."""
    lines = "\n".join(f"Q: {q} A: {a}" for q, a in history)
    return f"{passage}\n{lines}" if lines else passage


def expand_conversations(
    rows: Sequence[Mapping[str, Any]], context_column: str = "context", turns_column: str = "turns"
) -> list[dict[str, Any]]:
    """One row per turn: context (passage + history), question, answer, turn (depth), turn_type."""
    out = []
    for row in rows:
        passage = str(row[context_column])
        turns = row[turns_column] or []
        history: list[tuple[str, str]] = []
        for t, turn in enumerate(turns):
            question, answer = str(turn["question"]), str(turn["answer"])
            out.append(
                {
                    "context": render_context(passage, history),
                    "question": question,
                    "answer": answer,
                    "turn": t,
                    "turn_type": str(turn.get("turn_type") or ""),
                    PASSAGE_KEY: passage,
                    HISTORY_KEY: list(history),
                }
            )
            history.append((question, answer))
    return out


def load_conversation_rows(
    data_dir: str | Path, split: str, context_column: str = "context", turns_column: str = "turns"
) -> list[dict[str, Any]]:
    """The expanded turns of `<data_dir>/<split>.parquet` (conversation rows); a missing column is named."""
    import polars as pl

    path = Path(data_dir) / f"{split}.parquet"
    available = list(pl.read_parquet_schema(path))
    missing = [c for c in (context_column, turns_column) if c not in available]
    if missing:
        raise ValueError(
            f"{path} has no column {missing[0]!r} (train.conversation needs conversation rows: a passage "
            f"column and a list of {{question, answer}} turns); its columns: {', '.join(available)}"
        )
    rows = pl.read_parquet(path, columns=[context_column, turns_column]).to_dicts()
    return expand_conversations(rows, context_column, turns_column)


def fit_history(
    rows: Sequence[dict[str, Any]],
    tokenizer: "PreTrainedTokenizerBase",
    prompt_format: PromptFormat,
    max_length: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows whose prompt fits `max_length` with the completion (oldest history turns dropped first; see
    the module doc), and counts: turns_truncated, history_turns_dropped, turns_left_out."""
    from dagster_project.student.data import token_ids

    def fits(row: Mapping[str, Any]) -> bool:
        prompt, completion = token_ids(
            tokenizer, [prompt_format.prompt(row, tokenizer), prompt_format.completion(row)]
        )
        return len(prompt) + min(len(completion) + 1, max_length // 2) <= max_length

    kept, stats = [], {"turns_truncated": 0, "history_turns_dropped": 0, "turns_left_out": 0}
    for row in rows:
        if fits(row):
            kept.append(row)
            continue
        history = list(row.get(HISTORY_KEY, []))
        fitted = None
        while history:
            history.pop(0)
            stats["history_turns_dropped"] += 1
            candidate = {
                **row,
                "context": render_context(row[PASSAGE_KEY], history),
                HISTORY_KEY: list(history),
            }
            if fits(candidate):
                fitted = candidate
                break
        if fitted is None:
            stats["turns_left_out"] += 1
            continue
        stats["turns_truncated"] += 1
        kept.append(fitted)
    return kept, stats


def strip_private(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the bookkeeping keys (passage, history) once truncation is done."""
    return [{k: v for k, v in r.items() if k not in (HISTORY_KEY, PASSAGE_KEY)} for r in rows]
