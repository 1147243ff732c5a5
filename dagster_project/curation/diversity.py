"""Corpus diversity figures, vectorised: distinct-n and the unique-normalized ratio.

distinct-n = distinct word n-grams / all word n-grams over the corpus (Li et al., 2016); higher = more
diverse. unique_ratio = distinct normalized texts / texts (1.0 = no exact duplicates left).
"""

import polars as pl

from dagster_project.curation.minhash import word_ngram_hashes


def distinct_n(texts: pl.Series, n: int) -> float:
    """Distinct word n-grams / all word n-grams of `texts` (0.0 when there are none)."""
    h, _ = word_ngram_hashes(texts, n, keep_short=False)
    return float(pl.Series(h).n_unique() / h.size) if h.size else 0.0  # hash-based count, multithreaded


def diversity(normalized: pl.Series) -> dict[str, float | int]:
    """distinct-1, distinct-2, unique_ratio and n of already-normalized texts."""
    n = normalized.len()
    return {
        "n": n,
        "distinct_1": round(distinct_n(normalized, 1), 4),
        "distinct_2": round(distinct_n(normalized, 2), 4),
        "unique_ratio": round(normalized.n_unique() / n, 4) if n else 0.0,
    }
