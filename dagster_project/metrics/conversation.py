"""Multi-turn QA figures, CoQA-style: per-turn token F1, unanswerable detection, breakdowns.

- `coqa_f1(prediction, golds)`: token F1 after SQuAD/CoQA normalisation (`metrics.qa.normalize_answer`).
  With one gold answer it is plain token F1; with several (CoQA's main answer plus its additional
  answers) it is CoQA's official rule: for each gold answer left out, the max F1 over the others, averaged.
- `is_refusal(text, refusal)`: the answer says "the passage does not say" (normalised equality with the
  recipe's refusal, CoQA's "unknown" or QuAC's "CANNOTANSWER").
- `unanswerable_scores`: precision, recall and F1 of predicting the refusal, over turns whose gold is the
  refusal (positives).
- `by_key`: mean F1 and count per value of a key (turn depth, turn type).
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dagster_project.metrics.qa import normalize_answer, token_f1

REFUSALS = ("unknown", "cannotanswer")  # CoQA's and QuAC's own refusal answers (normalised)


def coqa_f1(prediction: str, golds: str | Sequence[str]) -> float:
    """CoQA's turn F1 (see the module doc); blank golds are ignored, none left raises ValueError."""
    refs = [golds] if isinstance(golds, str) else [g for g in golds if str(g).strip()]
    refs = [r for r in refs if r.strip()]
    if not refs:
        raise ValueError("no non-empty gold answer to score against")
    if len(refs) == 1:
        return token_f1(prediction, refs[0])
    scores = []
    for i in range(len(refs)):
        others = refs[:i] + refs[i + 1 :]
        scores.append(max(token_f1(prediction, r) for r in others))
    return sum(scores) / len(scores)


def is_refusal(text: str, refusal: str = "unknown") -> bool:
    """Whether `text` is a refusal: the recipe's refusal, "unknown" or "CANNOTANSWER" (normalised)."""
    norm = normalize_answer(text)
    return bool(norm) and (norm == normalize_answer(refusal) or norm in REFUSALS)


def unanswerable_scores(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, float]:
    """Precision, recall, F1 of refusing (positive: the gold answer is the refusal) and the counts."""
    tp = sum(p and g for p, g in zip(predicted, gold, strict=True))
    fp = sum(p and not g for p, g in zip(predicted, gold, strict=True))
    fn = sum(g and not p for p, g in zip(predicted, gold, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_unanswerable": float(tp + fn),
        "n_refused": float(tp + fp),
    }


def by_key(rows: Iterable[Mapping[str, Any]], key: str, value: str = "f1") -> dict[str, dict[str, float]]:
    """{key value: {"f1": mean, "n": count}} over rows, keys in sorted order (numbers numerically)."""
    groups: dict[Any, list[float]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(float(row[value]))
    order = sorted(
        groups, key=lambda k: (not isinstance(k, int | float), k if isinstance(k, int | float) else str(k))
    )
    return {str(k): {value: sum(groups[k]) / len(groups[k]), "n": float(len(groups[k]))} for k in order}
