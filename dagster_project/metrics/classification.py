"""Classification metrics for a student that answers with a label word (SynthesizRR-style tasks).

What each figure means:
- `map_to_label`: turns generated text into a label. The text and every label are normalized
  (lowercase, punctuation turned into spaces, whitespace collapsed); the label whose words occur
  first in the text wins (a longer label wins a tie at the same position, so "very positive" beats
  "positive"); if no label occurs, the prediction is `INVALID` ("<invalid>"). Invalid predictions stay
  in every figure as wrong answers and are counted separately (`n_invalid`).
- accuracy: fraction of items whose predicted label equals the gold label.
- per-class precision / recall / F1: for label c, precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2PR / (P + R); a zero denominator gives 0.0 (scikit-learn's `zero_division=0`).
- macro-F1: unweighted mean of the per-class F1 over the stated label set (every label counts the same,
  also a label with no gold items; `<invalid>` is never a class of its own).
- confusion matrix: rows are gold labels, columns predicted labels, both in the stated `labels` order;
  an extra last column `<invalid>` holds predictions outside the label set.
Definitions follow the standard ones (scikit-learn's `precision_recall_fscore_support`, `f1_score(
average="macro")`, `confusion_matrix`); the mapping rule is this project's own and is stated above.
"""

import re
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ClassScores",
    "ClassificationReport",
    "ConfusionMatrix",
    "INVALID",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "macro_f1",
    "map_predictions",
    "map_to_label",
    "normalize_label_text",
    "per_class_scores",
]

INVALID = "<invalid>"

_NON_WORD = re.compile(r"[^\w]+")


def normalize_label_text(text: str) -> str:
    """Lowercase, turn every run of non-word characters (punctuation, `_` excepted) into one space, strip."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def map_to_label(text: str, labels: Sequence[str]) -> str:
    """The label whose (normalized) words occur first in `text`, else `INVALID`.

    Matching is on whole words: "negative" is not found in "nonnegative". At the same start position the
    label with more words wins. The label is returned as given in `labels` (not normalized).
    """
    words = normalize_label_text(text).split()
    best: tuple[int, int, str] | None = None  # (start position, -number of words, label)
    for label in labels:
        label_words = normalize_label_text(label).split()
        if not label_words:
            raise ValueError(f"label {label!r} is empty after normalization")
        k = len(label_words)
        for start in range(len(words) - k + 1):
            if words[start : start + k] == label_words:
                candidate = (start, -k, label)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
                break
    return INVALID if best is None else best[2]


def map_predictions(texts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """`map_to_label` over many generated texts."""
    return [map_to_label(t, labels) for t in texts]


def _check_aligned(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} gold labels")


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of items with y_pred == y_true (0.0 for no items)."""
    _check_aligned(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts with rows = gold label and columns = predicted label, in `row_labels` / `col_labels` order.

    `col_labels` is `row_labels` plus, when `with_invalid` was asked for, a last `INVALID` column that
    collects every prediction outside the label set.
    """

    row_labels: list[Any]
    col_labels: list[Any]
    counts: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion_matrix(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    labels: Sequence[Hashable],
    with_invalid: bool = True,
) -> ConfusionMatrix:
    """Confusion matrix in the stated `labels` order (rows gold, columns predicted).

    A gold label outside `labels` raises ValueError. A predicted label outside `labels` goes to the last
    `INVALID` column when `with_invalid` is true, and raises ValueError otherwise.
    """
    _check_aligned(y_true, y_pred)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels!r}")
    index = {label: i for i, label in enumerate(labels)}
    cols = labels + [INVALID] if with_invalid else list(labels)
    counts = [[0] * len(cols) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        if t not in index:
            raise ValueError(f"gold label {t!r} is not one of {labels!r}")
        if p in index:
            counts[index[t]][index[p]] += 1
        elif with_invalid:
            counts[index[t]][-1] += 1
        else:
            raise ValueError(f"predicted label {p!r} is not one of {labels!r}")
    return ConfusionMatrix(row_labels=labels, col_labels=cols, counts=counts)


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and its support (number of gold items of that class)."""

    precision: float
    recall: float
    f1: float
    support: int


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def per_class_scores(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> dict[Hashable, ClassScores]:
    """Precision / recall / F1 / support per label, in `labels` order (zero denominators give 0.0)."""
    cm = confusion_matrix(y_true, y_pred, labels, with_invalid=True)
    out: dict[Hashable, ClassScores] = {}
    for i, label in enumerate(cm.row_labels):
        tp = cm.counts[i][i]
        support = sum(cm.counts[i])
        predicted = sum(row[i] for row in cm.counts)
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        out[label] = ClassScores(precision=precision, recall=recall, f1=f1, support=support)
    return out


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Unweighted mean of per-class F1 over `labels` (0.0 for no labels)."""
    scores = per_class_scores(y_true, y_pred, labels)
    return sum(s.f1 for s in scores.values()) / len(scores) if scores else 0.0


@dataclass(frozen=True)
class ClassificationReport:
    """Every classification figure for one system on one test set (see the module docstring)."""

    labels: list[Any]
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: ConfusionMatrix
    n_invalid: int
    invalid_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classification_report(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> ClassificationReport:
    """Accuracy, macro-F1, per-class scores, confusion matrix and the invalid count in one object.

    `y_pred` may hold `INVALID` (or any value outside `labels`); such items count as wrong and in
    `n_invalid`. Per-class keys are `str(label)` so the result serialises to JSON.
    """
    per_class = per_class_scores(y_true, y_pred, labels)
    label_set = set(labels)
    n_invalid = sum(p not in label_set for p in y_pred)
    return ClassificationReport(
        labels=list(labels),
        n=len(y_true),
        accuracy=accuracy(y_true, y_pred),
        macro_f1=sum(s.f1 for s in per_class.values()) / len(per_class) if per_class else 0.0,
        per_class={str(k): v for k, v in per_class.items()},
        confusion=confusion_matrix(y_true, y_pred, labels, with_invalid=True),
        n_invalid=n_invalid,
        invalid_rate=n_invalid / len(y_pred) if y_pred else 0.0,
    )
