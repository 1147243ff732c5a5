"""Quality filters as polars expressions: each row gets the first reason it fails (or null) and a detail.

Checks, in this order:
    empty_field  a required field is null or blank
    too_short    a field has fewer characters than its minimum
    too_long     a field has more characters than its maximum
    charset      among the letters of the checked text, the share of Latin-script letters is below the
                 minimum (e.g. a teacher answering in another script); text without letters passes
    refusal      the checked text matches one of the refusal regexes (case-insensitive)
"""

from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass
class FilterConfig:
    """What to check; empty/zero values switch a check off."""

    required: list[str] = field(default_factory=list)
    min_chars: dict[str, int] = field(default_factory=dict)
    max_chars: dict[str, int] = field(default_factory=dict)
    min_latin_ratio: float = 0.0
    refusal_patterns: list[str] = field(default_factory=list)
    text_fields: list[str] = field(default_factory=list)  # the text the charset/refusal checks read


def _text(fields: list[str]) -> pl.Expr:
    return pl.concat_str([pl.col(f).cast(pl.String).fill_null("") for f in fields], separator=" ")


_RATIO = "__latin_ratio"


def latin_ratio(texts: pl.Series) -> pl.Series:
    """Latin-script letters / all letters of each text (1.0 when it has no letters). Pure-ASCII texts
    (nearly all, usually) are 1.0 without running the slow Unicode-class regexes."""
    ratio = np.ones(texts.len())
    other = np.flatnonzero(texts.fill_null("").str.contains(r"[^\x00-\x7F]").to_numpy())
    if other.size:
        sub = texts.gather(other)
        letters = sub.str.count_matches(r"\p{L}").to_numpy()
        latin = sub.str.count_matches(r"\p{Latin}").to_numpy()
        ratio[other] = np.where(letters > 0, latin / np.maximum(letters, 1), 1.0)
    return pl.Series(_RATIO, ratio)


def checks(cfg: FilterConfig) -> list[tuple[str, str, pl.Expr]]:
    """(reason, detail, failing-condition) for every check the config switches on, in order."""
    out: list[tuple[str, str, pl.Expr]] = []
    for f in cfg.required:
        blank = pl.col(f).cast(pl.String).fill_null("").str.strip_chars() == ""
        out.append(("empty_field", f, blank))
    for f, lo in cfg.min_chars.items():
        out.append(
            ("too_short", f"{f} < {lo} chars", pl.col(f).cast(pl.String).fill_null("").str.len_chars() < lo)
        )
    for f, hi in cfg.max_chars.items():
        out.append(
            ("too_long", f"{f} > {hi} chars", pl.col(f).cast(pl.String).fill_null("").str.len_chars() > hi)
        )
    if cfg.min_latin_ratio > 0 and cfg.text_fields:
        out.append(
            ("charset", f"latin letters < {cfg.min_latin_ratio:g}", pl.col(_RATIO) < cfg.min_latin_ratio)
        )
    for pattern in cfg.refusal_patterns:
        if cfg.text_fields:
            out.append(("refusal", pattern, _text(cfg.text_fields).str.contains(f"(?i){pattern}")))
    return out


def filter_reasons(df: pl.DataFrame, cfg: FilterConfig) -> pl.DataFrame:
    """Columns `reason` and `detail` for every row of `df`: the first failed check, or nulls."""
    found = checks(cfg)
    if not found:
        return pl.DataFrame(
            {"reason": [None] * df.height, "detail": [None] * df.height},
            schema=[("reason", pl.String), ("detail", pl.String)],
        )
    chain_r = pl.when(found[0][2]).then(pl.lit(found[0][0]))
    chain_d = pl.when(found[0][2]).then(pl.lit(found[0][1]))
    for r, d, cond in found[1:]:
        chain_r = chain_r.when(cond).then(pl.lit(r))
        chain_d = chain_d.when(cond).then(pl.lit(d))
    if cfg.min_latin_ratio > 0 and cfg.text_fields:
        df = df.with_columns(latin_ratio(df.select(_text(cfg.text_fields)).to_series()))
    reason = chain_r.otherwise(pl.lit(None, dtype=pl.String)).alias("reason")
    detail = chain_d.otherwise(pl.lit(None, dtype=pl.String)).alias("detail")
    return df.select(reason, detail)
