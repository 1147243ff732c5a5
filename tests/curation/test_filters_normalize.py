import polars as pl

from dagster_project.curation import diversity, filters, normalize


def test_normalize_steps_in_order():
    steps = list(normalize.STEPS)
    assert normalize.normalize_text("  Ｗhat's  the\tCAPITAL?! ", steps) == "whats the capital"
    assert normalize.normalize_text("A.B", ["punctuation"]) == "AB"
    assert normalize.normalize_text("ﬁne  Café", ["nfkc", "whitespace"]) == "fine Café"
    df = pl.DataFrame({"question": ["Hi, there?", None], "answer": ["Yes!", "x"]})
    assert df.select(normalize.key_expr(["question", "answer"], steps))["question"].to_list() == [
        "hi there | yes",
        " | x",
    ]


def test_filters_give_the_first_failing_reason():
    df = pl.DataFrame(
        {
            "question": [
                "What is the capital of Norland?",
                "   ",
                "Why?",
                "Где находится столица Норланда?",
                "What is the capital of Norland?",
                "What is x" + "y" * 600,
            ],
            "answer": ["Eastport", "x", "because", "Истпорт", "I'm sorry, as an AI I cannot say", "z"],
        }
    )
    cfg = filters.FilterConfig(
        required=["question", "answer"],
        min_chars={"question": 8},
        max_chars={"question": 500},
        min_latin_ratio=0.5,
        refusal_patterns=[r"\bas an ai\b", r"\bi(?: am|'m) (?:sorry|unable)\b"],
        text_fields=["question", "answer"],
    )
    out = filters.filter_reasons(df, cfg)
    assert out["reason"].to_list() == [None, "empty_field", "too_short", "charset", "refusal", "too_long"]
    assert out["detail"].to_list()[1:3] == ["question", "question < 8 chars"]
    assert filters.filter_reasons(df, filters.FilterConfig())["reason"].null_count() == df.height


def test_diversity_figures():
    d = diversity.diversity(pl.Series(["a b c", "a b c", "a b d"]))
    assert d == {
        "distinct_1": round(4 / 9, 4),
        "distinct_2": round(3 / 6, 4),
        "unique_ratio": round(2 / 3, 4),
    }
