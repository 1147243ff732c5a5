"""Task kinds of the evaluate stage (`evaluate.task`): how a gold row becomes prompts, and how answers score.

Gold rows are JSON lines; each kind reads these fields (`id` and `category` always optional):
- `qa`: `context`, `question`, `answer` (a string, or a list of acceptable answers). One prompt per row.
  Scores: SQuAD exact match and token F1, max over the gold answers.
- `multi_turn_qa`: `context` and `turns: [{question, answer}]`. One prompt per turn; turn t's context is
  the document followed by the gold history of turns < t ("Q: ... A: ..." lines), as CoQA/QuAC evaluate
  (gold history, so an early mistake does not cascade). Scores: per-turn F1/EM, turn-weighted means.
- `classification`: `text` (or `context`), optional `question`, and `label`. The student's generated
  words are mapped onto the label list (`metrics.classification.map_to_label`; unmatched text is
  `<invalid>`). Scores: accuracy, macro-F1, per-class P/R/F1, confusion matrix.
- `free_text`: `context`, `question`, optional `answer` (a reference shown to the judge). A judge
  (the teacher with a judge prompt) labels each answer a success or not. Scores: success rate with a
  95% percentile-bootstrap interval; answers the judge could not label are counted, not guessed.

Every kind also yields a per-item `score` in [0, 1] (F1, correctness or judge success) that ranks the
best and worst examples in the report.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster_project.metrics.agreement import success_rate
from dagster_project.metrics.classification import classification_report, map_predictions
from dagster_project.metrics.qa import exact_match_multi, token_f1_multi

TASKS = ("qa", "multi_turn_qa", "classification", "free_text")
DEFAULT_CLASSIFICATION_QUESTION = "Which label fits this text?"

__all__ = [
    "DEFAULT_CLASSIFICATION_QUESTION",
    "TASKS",
    "expand_items",
    "score_classification",
    "score_free_text",
    "score_qa_items",
    "summarize",
]


def _history(turns: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"Q: {t['question']} A: {_first(t['answer'])}" for t in turns)


def _first(answer: str | Sequence[str]) -> str:
    return answer if isinstance(answer, str) else (answer[0] if answer else "")


def expand_items(rows: Sequence[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """One item per prompt the student answers: row index, turn, context, question, reference, category."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {list(TASKS)}")
    items: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        base = {"row": i, "id": str(row.get("id", i)), "category": str(row.get("category") or "all")}
        if task == "multi_turn_qa":
            turns = row["turns"]
            for t, turn in enumerate(turns):
                history = _history(turns[:t])
                context = f"{row['context']}\n{history}" if history else row["context"]
                items.append(
                    base
                    | {
                        "turn": t,
                        "context": context,
                        "question": turn["question"],
                        "reference": turn["answer"],
                    }
                )
        elif task == "classification":
            text = row.get("text", row.get("context", ""))
            question = row.get("question") or DEFAULT_CLASSIFICATION_QUESTION
            items.append(base | {"turn": 0, "context": text, "question": question, "reference": row["label"]})
        else:
            items.append(
                base
                | {
                    "turn": 0,
                    "context": row["context"],
                    "question": row["question"],
                    "reference": row.get("answer", ""),
                }
            )
    return items


def score_qa_items(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[dict]:
    """Per item {"exact_match", "token_f1"}, each the max over that item's gold answers."""
    return [
        {"exact_match": exact_match_multi(p, r), "token_f1": token_f1_multi(p, r)}
        for p, r in zip(predictions, references, strict=True)
    ]


def score_classification(
    texts: Sequence[str], gold: Sequence[str], labels: Sequence[str]
) -> tuple[dict[str, Any], list[str], list[float]]:
    """(summary, mapped labels, per-item correctness) of generated texts against gold labels."""
    if not labels:
        raise ValueError("task classification needs evaluate.labels (the label words)")
    mapped = map_predictions(texts, labels)
    report = classification_report(list(gold), mapped, list(labels))
    summary = {
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "invalid_rate": report.invalid_rate,
    }
    extra = {
        "per_class": {k: vars(v) for k, v in report.per_class.items()},
        "confusion": report.confusion.to_dict(),
    }
    return summary | {"_details": extra}, mapped, [float(m == g) for m, g in zip(mapped, gold, strict=True)]


def score_free_text(
    verdicts: Sequence[bool | None], n_resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], list[float]]:
    """Success rate of judge verdicts with a 95% bootstrap interval; None = the judge gave no verdict.

    Per item: 1.0 / 0.0, and NaN for an unjudged answer, which the headline rate, the per-category means
    and the best/worst lists all leave out (it is counted in `n_unjudged`)."""
    judged = [v for v in verdicts if v is not None]
    if not judged:
        summary: dict[str, Any] = {"success_rate": float("nan"), "success_ci_low": float("nan")}
        summary["success_ci_high"] = float("nan")
    else:
        ci = success_rate(judged, n_resamples=n_resamples, seed=seed)
        summary = {"success_rate": ci.estimate, "success_ci_low": ci.low, "success_ci_high": ci.high}
    summary["n_unjudged"] = len(verdicts) - len(judged)
    return summary, [float("nan") if v is None else float(v) for v in verdicts]


def summarize(
    task: str,
    predictions: Sequence[str],
    items: Sequence[Mapping[str, Any]],
    labels: Sequence[str] = (),
    judge: Callable[[Sequence[Mapping[str, Any]], Sequence[str]], list[bool | None]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """(headline figures, per-item scores) of one system's `predictions` on `items` for `task`.

    Per-item scores always hold `score` (used for ranking and per-category means) plus the task's own
    figures. The headline may hold a `_details` entry (classification breakdowns) that callers move out.
    """
    references = [it["reference"] for it in items]
    if task in ("qa", "multi_turn_qa"):
        per_item = score_qa_items(predictions, references)
        n = len(per_item)
        headline = {
            "exact_match": sum(s["exact_match"] for s in per_item) / n if n else 0.0,
            "token_f1": sum(s["token_f1"] for s in per_item) / n if n else 0.0,
        }
        if task == "multi_turn_qa":
            headline["n_turns"] = n
            headline["n_conversations"] = len({it["row"] for it in items})
        return headline, [s | {"score": s["token_f1"]} for s in per_item]
    if task == "classification":
        headline, mapped, correct = score_classification(predictions, [str(r) for r in references], labels)
        return headline, [
            {"accuracy": c, "score": c, "label": m} for c, m in zip(correct, mapped, strict=True)
        ]
    if judge is None:
        raise ValueError("task free_text needs a judge (evaluate.judge_prompt)")
    verdicts = judge(items, predictions)
    headline, success = score_free_text(verdicts, n_resamples, seed)
    return headline, [{"success_rate": s, "score": s} for s in success]
