"""SQuAD-style answer metrics: normalization, exact match, token F1, aggregation (hand-computed)."""

import pytest

from dagster_project.metrics import aggregate, exact_match, normalize_answer, score_pairs, token_f1


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
