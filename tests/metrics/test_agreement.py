"""Agreement statistics against textbook values, bootstrap determinism, swap consistency by hand."""

import math

import pytest

from dagster_project.metrics.agreement import (
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    judge_vs_majority,
    majority_vote,
    ratings_to_counts,
    success_rate,
    swap_consistency,
)

# Wikipedia's Cohen's kappa example: 50 proposals, A/B yes/yes 20, yes/no 5, no/yes 10, no/no 15.
WIKI_A = ["yes"] * 25 + ["no"] * 25
WIKI_B = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15

# Fleiss (1971) as reproduced on Wikipedia: 10 items, 14 raters, 5 categories -> kappa 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_cohen_kappa_wikipedia_example() -> None:
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    assert cohen_kappa(WIKI_A, WIKI_B) == pytest.approx(0.4)
    assert cohen_kappa(WIKI_B, WIKI_A) == pytest.approx(0.4)


def test_cohen_kappa_edge_cases() -> None:
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))  # p_e = 1: undefined
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 0])
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_fleiss_kappa_fleiss_1971_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=1e-4)
    assert round(fleiss_kappa(FLEISS_TABLE), 3) == 0.210


def test_fleiss_kappa_from_rating_lists() -> None:
    # Expand the table back into 14 ratings per item; the kappa must not change.
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE]
    labels, counts = ratings_to_counts(ratings, labels=[0, 1, 2, 3, 4])
    assert labels == [0, 1, 2, 3, 4] and counts == FLEISS_TABLE
    assert fleiss_kappa(counts) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_rejects_varying_rater_counts() -> None:
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="at least two"):
        fleiss_kappa([[1, 0], [0, 1]])
    _, counts = ratings_to_counts([["a", "b", None], ["a", "a", "a"]])
    with pytest.raises(ValueError):
        fleiss_kappa(counts)


def test_majority_vote_tie_rules() -> None:
    assert majority_vote(["ok", "bad", "ok"], ["bad", "ok"]) == "ok"
    assert majority_vote(["ok", "bad"], ["bad", "ok"]) == "bad"  # tie -> first in labels
    assert majority_vote(["ok", "bad"], ["ok", "bad"]) == "ok"
    assert majority_vote(["ok", "bad"], ["bad", "ok"], tie_break="drop") is None
    assert majority_vote([None, None], ["ok"]) is None
    assert majority_vote(["ok", None, None], ["bad", "ok"]) == "ok"
    with pytest.raises(ValueError):
        majority_vote(["meh"], ["bad", "ok"])


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    outcomes = [True] * 17 + [False] * 8
    a = success_rate(outcomes, n_resamples=500, seed=7)
    b = success_rate(outcomes, n_resamples=500, seed=7)
    c = success_rate(outcomes, n_resamples=500, seed=8)
    assert a == b
    assert a != c
    assert a.estimate == pytest.approx(17 / 25)
    assert a.low <= a.estimate <= a.high
    assert 0.4 < a.low < a.estimate < a.high < 0.9
    assert (a.confidence, a.n_resamples, a.seed) == (0.95, 500, 7)
    # The generic path resamples the same way: same interval for the mean.
    g = bootstrap_ci(outcomes, lambda s: sum(s) / len(s), n_resamples=500, seed=7)
    assert (g.low, g.high) == pytest.approx((a.low, a.high))


def test_bootstrap_ci_of_kappa_counts_undefined_resamples() -> None:
    pairs = list(zip(WIKI_A, WIKI_B, strict=True))
    ci = bootstrap_ci(pairs, lambda s: cohen_kappa([x for x, _ in s], [y for _, y in s]), 300, seed=1)
    assert ci.estimate == pytest.approx(0.4)
    assert ci.low < 0.4 < ci.high
    tiny = bootstrap_ci([("x", "x"), ("y", "y")], lambda s: cohen_kappa(*zip(*s, strict=True)), 200, seed=0)
    assert tiny.n_undefined > 0  # resamples with one label only
    with pytest.raises(ValueError):
        success_rate([])
    with pytest.raises(ValueError):
        success_rate([True], confidence=1.5)


def test_judge_vs_majority() -> None:
    # 3 raters; item 4 is a 1-1 tie (one rater missing), item 5 has no judge verdict.
    ratings = [
        ["ok", "ok", "bad"],
        ["bad", "bad", "bad"],
        ["ok", "ok", "ok"],
        ["ok", "bad", None],
        ["bad", "ok", "bad"],
        ["ok", "bad", "bad"],
    ]
    judge = ["ok", "bad", "ok", "ok", None, "ok"]
    res = judge_vs_majority(judge, ratings, labels=["bad", "ok"], n_resamples=200, seed=0)
    # majorities: ok, bad, ok, bad (tie -> first label "bad"), -, bad; judge: ok, bad, ok, ok, -, ok
    assert (res.n_items, res.n_dropped) == (5, 1)
    assert res.percent_agreement == pytest.approx(3 / 5)
    assert res.confusion.row_labels == ["bad", "ok"]
    assert res.confusion.counts == [[1, 2], [0, 2]]
    # p_o = 3/5; majority bad 3/5, ok 2/5; judge bad 1/5, ok 4/5; p_e = 3/25 + 8/25 = 11/25
    assert res.kappa.estimate == pytest.approx((3 / 5 - 11 / 25) / (1 - 11 / 25))
    assert len(res.per_rater_kappa) == 3
    assert res.raters_fleiss_kappa is None and res.raters_fleiss_ci is None  # item 4 has two ratings only
    dropped = judge_vs_majority(judge, ratings, ["bad", "ok"], tie_break="drop", n_resamples=50)
    assert (dropped.n_items, dropped.n_dropped) == (4, 2)
    assert dropped.to_dict()["kappa"]["estimate"] == pytest.approx(dropped.kappa.estimate)


def test_swap_consistency_by_hand() -> None:
    ab = ["A", "A", "B", "tie", "A"]
    ba = ["B", "A", "A", "tie", "tie"]
    res = swap_consistency(ab, ba)
    # pair 1: A then (swapped) B -> original A both times; pair 2: first shown both times;
    # pair 3: B then A -> original B; pair 4: tie both; pair 5: A vs tie -> inconsistent.
    assert res.winners == ["A", None, "B", "tie", None]
    assert (res.n_pairs, res.n_consistent) == (5, 3)
    assert res.consistency_rate == pytest.approx(0.6)
    assert (res.n_inconsistent_first, res.n_inconsistent_second) == (1, 0)
    # non-tie verdicts: A, A, B, A | B, A, A -> 5 of 7 picked the first shown
    assert res.first_position_rate == pytest.approx(5 / 7)
    with pytest.raises(ValueError):
        swap_consistency(["A"], ["first"])
    with pytest.raises(ValueError):
        swap_consistency(["A"], [])


def test_cohen_kappa_perfect_chance_and_negative_by_hand() -> None:
    # Perfect: p_o = 1 -> 1.
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    # Chance: A says a,a,b,b; B says a,b,a,b -> p_o = 1/2, p_e = 1/2*1/2 + 1/2*1/2 = 1/2 -> 0.
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    # Negative: always opposite -> p_o = 0, p_e = 1/2 -> (0 - 1/2) / (1 - 1/2) = -1.
    assert cohen_kappa(["a", "b", "a", "b"], ["b", "a", "b", "a"]) == pytest.approx(-1.0)
    # Worse than chance but not perfectly opposite: p_o = 1/4, p_e = 1/2 -> -1/2.
    assert cohen_kappa(["a", "a", "b", "b"], ["b", "a", "a", "a"]) == pytest.approx(
        (0.25 - (2 / 4 * 3 / 4 + 2 / 4 * 1 / 4)) / (1 - (2 / 4 * 3 / 4 + 2 / 4 * 1 / 4))
    )


def test_cohen_kappa_equals_scikit_learn_on_random_labels() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    import random

    rng = random.Random(7)
    for trial in range(50):
        labels = ["yes", "no", "maybe"][: 2 + trial % 2]
        n = rng.randint(5, 60)
        a = [rng.choice(labels) for _ in range(n)]
        b = [x if rng.random() < 0.6 else rng.choice(labels) for x in a]
        ours = cohen_kappa(a, b)
        theirs = sklearn_metrics.cohen_kappa_score(a, b)
        if math.isnan(ours):
            assert math.isnan(theirs)
        else:
            assert ours == pytest.approx(theirs, abs=1e-12)


def test_kappa_bootstrap_interval_covers_the_estimate_and_narrows_with_more_items() -> None:
    import random

    rng = random.Random(3)

    def interval(n: int):
        gold = [rng.choice(["yes", "no"]) for _ in range(n)]
        judge = [g if rng.random() < 0.8 else ("no" if g == "yes" else "yes") for g in gold]
        ratings = [[g, g, g] for g in gold]
        return judge_vs_majority(judge, ratings, ["yes", "no"], n_resamples=500, seed=0).kappa

    small, large = interval(40), interval(1000)
    for ci in (small, large):
        assert ci.low <= ci.estimate <= ci.high
    assert (large.high - large.low) < 0.5 * (small.high - small.low)
