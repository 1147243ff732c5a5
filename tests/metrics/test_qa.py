"""SQuAD-style answer metrics: normalization, exact match, token F1, aggregation (hand-computed)."""

import pytest

from dagster_project.metrics import aggregate, exact_match, normalize_answer, score_pairs, token_f1
from dagster_project.metrics.qa import (
    aggregate_conversations,
    exact_match_multi,
    max_over_references,
    multi_turn_f1,
    token_f1_multi,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Kordel River", "kordel river"),
        ("  an   apple, a pear!  ", "apple pear"),
        ("1,582,720", "1582720"),
        ("Théâtre", "théâtre"),
        ("the", ""),
        ("Anthem", "anthem"),  # "an" inside a word is not an article
        ("A.B. Smith's", "ab smiths"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_ignores_case_articles_and_punctuation() -> None:
    assert exact_match("the Kordel River.", "Kordel river") == 1.0
    assert exact_match("Kordel", "Kordel River") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_hand_computed() -> None:
    # pred {ashan, elddra, king}, ref {ashan, elddra}: P = 2/3, R = 1, F1 = 2*(2/3)/(5/3) = 0.8
    assert token_f1("King Ashan Elddra", "Ashan Elddra") == pytest.approx(0.8)
    # one of two tokens right on each side: P = R = 1/2, F1 = 1/2
    assert token_f1("Ashan Tostoseld", "Ashan Elddra") == pytest.approx(0.5)
    assert token_f1("the Ashan", "Ashan") == 1.0
    assert token_f1("Kordel", "Narmor") == 0.0


def test_token_f1_counts_repeated_tokens_once_per_occurrence() -> None:
    # pred [a1, a1, b], ref [a1, b]: common = 2 (a1 once, b once), P = 2/3, R = 1, F1 = 0.8
    assert token_f1("x x y", "x y") == pytest.approx(0.8)


def test_token_f1_empty_answers() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # both normalize to empty
    assert token_f1("", "Kordel") == 0.0
    assert token_f1("Kordel", "") == 0.0


def test_score_pairs_and_aggregate() -> None:
    scores = score_pairs(["Kordel", "King Ashan Elddra", "1379"], ["kordel", "Ashan Elddra", "1380"])
    assert scores == [
        {"exact_match": 1.0, "token_f1": 1.0},
        {"exact_match": 0.0, "token_f1": pytest.approx(0.8)},
        {"exact_match": 0.0, "token_f1": 0.0},
    ]
    assert aggregate(scores) == {"exact_match": pytest.approx(1 / 3), "token_f1": pytest.approx(0.6)}
    assert aggregate([]) == {"exact_match": 0.0, "token_f1": 0.0}


def test_score_pairs_rejects_misaligned_inputs() -> None:
    with pytest.raises(ValueError):
        score_pairs(["a"], ["a", "b"])


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("The Eiffel Tower", "Eiffel Tower"),  # article
        ("an Eiffel tower", "the eiffel TOWER"),  # articles and case
        ("Eiffel Tower.", "Eiffel, Tower!"),  # punctuation
        ("  Eiffel\tTower \n", "Eiffel Tower"),  # whitespace
    ],
)
def test_token_f1_ignores_squad_normalization_differences(prediction: str, reference: str) -> None:
    assert token_f1(prediction, reference) == 1.0
    assert exact_match(prediction, reference) == 1.0


def test_max_over_references_takes_the_best_gold() -> None:
    # vs "King Ashan": {king} against {king, ashan} -> P = 1, R = 1/2, F1 = 2/3; vs "the king": 1.0
    assert token_f1_multi("the king", ["King Ashan", "the king"]) == 1.0
    assert token_f1_multi("king", ["King Ashan", "Narmor"]) == pytest.approx(2 / 3)
    assert exact_match_multi("king", ["King Ashan", "Narmor"]) == 0.0
    assert max_over_references("Kordel", "kordel") == 1.0  # a single string is one reference
    with pytest.raises(ValueError):
        max_over_references("Kordel", [])


def test_multi_turn_f1_hand_computed() -> None:
    score = multi_turn_f1(
        ["Kordel", "the king", "1379"],
        ["Kordel River", ["King Ashan", "the king"], "1380"],
    )
    # turn 1: {kordel} vs {kordel, river}: P = 1, R = 1/2, F1 = 2/3; turn 2: max(2/3, 1) = 1; turn 3: 0
    assert score.per_turn_f1 == [pytest.approx(2 / 3), 1.0, 0.0]
    assert score.per_turn_em == [0.0, 1.0, 0.0]
    assert score.mean_f1 == pytest.approx(5 / 9)
    assert score.mean_em == pytest.approx(1 / 3)
    assert score.n_turns == 3
    assert score.to_dict()["mean_f1"] == pytest.approx(5 / 9)


def test_multi_turn_f1_rejects_misaligned_turns_and_handles_empty() -> None:
    with pytest.raises(ValueError):
        multi_turn_f1(["a"], ["a", "b"])
    empty = multi_turn_f1([], [])
    assert (empty.mean_f1, empty.n_turns) == (0.0, 0)


def test_aggregate_conversations_weights_every_turn_once() -> None:
    a = multi_turn_f1(["x", "y"], ["x", "z"])  # F1 1, 0
    b = multi_turn_f1(["x"], ["x"])  # F1 1
    agg = aggregate_conversations([a, b])
    assert agg == {
        "token_f1": pytest.approx(2 / 3),
        "exact_match": pytest.approx(2 / 3),
        "n_turns": 3.0,
        "n_conversations": 2.0,
    }
    assert aggregate_conversations([])["token_f1"] == 0.0
