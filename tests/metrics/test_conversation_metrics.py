"""CoQA-style per-turn F1 against hand-computed values, refusal detection, unanswerable P/R."""

import pytest

from dagster_project.metrics.conversation import by_key, coqa_f1, is_refusal, unanswerable_scores


def test_turn_f1_against_hand_computed_values():
    # "the river Delash" -> [river, delash] vs [delash, river, valley]: common 2, P 2/2, R 2/3 -> F1 0.8
    assert coqa_f1("the river Delash", "Delash River valley") == pytest.approx(0.8)
    # articles and punctuation are dropped: exact
    assert coqa_f1("The Kordel.", "kordel") == 1.0
    assert coqa_f1("1,582,720", "1582720") == 1.0  # punctuation removed inside numbers too
    assert coqa_f1("no idea", "Kordel") == 0.0


def test_several_gold_answers_average_the_leave_one_out_maxima_as_coqa_does():
    golds = ["Kordel", "the city of Kordel", "Imgabel"]
    # prediction "Kordel": F1 1.0 vs g0, 2*(1*1/3)/(1+1/3) = 0.5 vs g1 ([city, of, kordel]), 0 vs g2
    # leave out g0: max(0.5, 0) = 0.5; leave out g1: max(1, 0) = 1; leave out g2: max(1, 0.5) = 1
    assert coqa_f1("Kordel", golds) == pytest.approx((0.5 + 1 + 1) / 3)
    with pytest.raises(ValueError):
        coqa_f1("x", ["", " "])


def test_refusals_of_coqa_quac_and_the_recipe_are_recognised():
    assert is_refusal("unknown") and is_refusal("Unknown.") and is_refusal("CANNOTANSWER")
    assert is_refusal("not stated", "not stated") and not is_refusal("Kordel") and not is_refusal("")


def test_unanswerable_precision_and_recall():
    predicted = [True, True, False, False, True]
    gold = [True, False, True, False, True]
    s = unanswerable_scores(predicted, gold)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["n_unanswerable"] == 3 and s["n_refused"] == 3
    assert unanswerable_scores([False], [False])["precision"] == 0.0


def test_breakdown_by_key_orders_depths_numerically():
    rows = [{"depth": 10, "f1": 1.0}, {"depth": 2, "f1": 0.0}, {"depth": 2, "f1": 1.0}]
    assert by_key(rows, "depth") == {"2": {"f1": 0.5, "n": 2.0}, "10": {"f1": 1.0, "n": 1.0}}
