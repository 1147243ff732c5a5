"""Text normalization as polars expressions, and the dedup key of a row (its key fields, normalized).

Steps (applied in the order the recipe lists them):
    nfkc         Unicode NFKC (full-width letters, ligatures and compatibility forms fold to plain ones)
    lowercase    Unicode lower case
    punctuation  drop every Unicode punctuation character (category P*)
    whitespace   collapse runs of whitespace to one space and strip the ends
"""

import polars as pl

STEPS = ("nfkc", "lowercase", "punctuation", "whitespace")
KEY_SEPARATOR = " | "


def normalize_expr(expr: pl.Expr, steps: list[str]) -> pl.Expr:
    """`expr` (a string expression) with the normalization `steps` applied in order."""
    for step in steps:
        if step == "nfkc":  # NFKC leaves pure ASCII unchanged: only the other texts pay for it
            expr = (
                pl.when(expr.str.contains(r"[^\x00-\x7F]")).then(expr.str.normalize("NFKC")).otherwise(expr)
            )
        elif step == "lowercase":
            expr = expr.str.to_lowercase()
        elif step == "punctuation":
            expr = expr.str.replace_all(r"\p{P}+", "")
        elif step == "whitespace":
            # only runs of 2+ whitespace or a non-space one are rewritten (most single spaces match nothing)
            expr = expr.str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars()
        else:
            raise ValueError(f"unknown normalization step {step!r}; allowed: {', '.join(STEPS)}")
    return expr


def normalize_series(texts: pl.Series, steps: list[str]) -> pl.Series:
    """Normalize every text of `texts` (nulls become empty strings)."""
    frame = pl.DataFrame({"t": texts.cast(pl.String).fill_null("")})
    return frame.select(normalize_expr(pl.col("t"), steps))["t"]


def normalize_text(text: str, steps: list[str]) -> str:
    """Normalize one text (the same rules as `normalize_series`)."""
    return normalize_series(pl.Series([text]), steps)[0]


def key_expr(fields: list[str], steps: list[str], separator: str = KEY_SEPARATOR) -> pl.Expr:
    """The dedup key of a row: each of `fields` normalized, joined by ' | ' (or `separator`)."""
    parts = [normalize_expr(pl.col(f).cast(pl.String).fill_null(""), steps) for f in fields]
    return pl.concat_str(parts, separator=separator)


def raw_text_expr(fields: list[str]) -> pl.Expr:
    """The row's `fields` as they are, joined by a space (for filters and reports)."""
    return pl.concat_str([pl.col(f).cast(pl.String).fill_null("") for f in fields], separator=" ")
