"""Classification metrics and label-word mapping, checked against hand-computed values."""

import pytest

from dagster_project.metrics.classification import (
    INVALID,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    map_predictions,
    map_to_label,
    normalize_label_text,
    per_class_scores,
)

LABELS = ["pos", "neg", "neu"]
Y_TRUE = ["pos", "pos", "neg", "neg", "neu", "neu"]
Y_PRED = ["pos", "neg", "neg", INVALID, "neu", "pos"]


def test_normalize_label_text() -> None:
    assert normalize_label_text("  Label: NEGATIVE!!\n") == "label negative"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive.", "positive"),
        ("The sentiment is NEGATIVE, not positive", "negative"),  # first occurrence wins
        ("very positive", "very positive"),  # longer label wins at the same position
        ("It is nonnegative", INVALID),  # whole words only
        ("no idea", INVALID),
        ("", INVALID),
    ],
)
def test_map_to_label(text: str, expected: str) -> None:
    assert map_to_label(text, ["positive", "negative", "very positive"]) == expected


def test_map_to_label_returns_the_label_as_given() -> None:
    assert map_predictions(["sci fi!", "SPORTS"], ["Sci-Fi", "Sports"]) == ["Sci-Fi", "Sports"]


def test_accuracy_and_macro_f1_hand_computed() -> None:
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.5)
    # pos: TP 1, predicted 2, support 2 -> P = R = F1 = 1/2
    # neg: TP 1, predicted 2 (the invalid is not a neg prediction), support 2 -> 1/2
    # neu: TP 1, predicted 1, support 2 -> P = 1, R = 1/2, F1 = 2/3
    scores = per_class_scores(Y_TRUE, Y_PRED, LABELS)
    assert [round(scores[c].f1, 6) for c in LABELS] == [0.5, 0.5, round(2 / 3, 6)]
    assert scores["neu"].precision == 1.0 and scores["neu"].recall == 0.5 and scores["neu"].support == 2
    assert macro_f1(Y_TRUE, Y_PRED, LABELS) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_zero_division_gives_zero() -> None:
    scores = per_class_scores(["a", "a"], ["a", "a"], ["a", "b"])
    assert scores["b"].precision == 0.0 and scores["b"].recall == 0.0 and scores["b"].f1 == 0.0
    assert macro_f1(["a", "a"], ["a", "a"], ["a", "b"]) == pytest.approx(0.5)


def test_confusion_matrix_in_stated_order_with_invalid_column() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, LABELS)
    assert cm.row_labels == LABELS
    assert cm.col_labels == [*LABELS, INVALID]
    assert cm.counts == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert confusion_matrix(Y_TRUE, Y_PRED, ["neu", "neg", "pos"]).counts[0] == [1, 0, 1, 0]


def test_confusion_matrix_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(["x"], ["pos"], LABELS)
    with pytest.raises(ValueError):
        confusion_matrix(["pos"], [INVALID], LABELS, with_invalid=False)
    with pytest.raises(ValueError):
        confusion_matrix(["pos"], ["pos"], ["pos", "pos"])
    with pytest.raises(ValueError):
        accuracy(["pos"], [])


def test_classification_report_counts_invalid() -> None:
    report = classification_report(Y_TRUE, Y_PRED, LABELS)
    assert report.n == 6 and report.n_invalid == 1
    assert report.invalid_rate == pytest.approx(1 / 6)
    assert report.accuracy == pytest.approx(0.5)
    assert report.macro_f1 == pytest.approx(5 / 9)
    d = report.to_dict()
    assert d["per_class"]["neu"]["f1"] == pytest.approx(2 / 3)
    assert d["confusion"]["counts"][1] == [0, 1, 0, 1]
