"""Corpus diversity figures, vectorised: distinct-n and the unique-normalized ratio.

distinct-n = distinct word n-grams / all word n-grams over the corpus (Li et al., 2016); higher = more
diverse. unique_ratio = distinct normalized texts / texts (1.0 = no exact duplicates left).
"""

import numpy as np
import polars as pl

from dagster_project.curation.minhash import word_ngram_hashes

_MIX = np.uint64(0x9E3779B97F4A7C15)


def _figures(h1: np.ndarray, h2: np.ndarray, texts: pl.Series) -> dict[str, float | int]:
    n = texts.len()

    def ratio(h: np.ndarray) -> float:
        return round(pl.Series(h).n_unique() / h.size, 4) if h.size else 0.0  # hash-based, multithreaded

    return {
        "distinct_1": ratio(h1),
        "distinct_2": ratio(h2),
        "unique_ratio": round(texts.n_unique() / n, 4) if n else 0.0,
    }


def diversity_before_after(normalized: pl.Series, kept: np.ndarray) -> dict[str, dict[str, float | int]]:
    """distinct-1, distinct-2 and unique_ratio of all `normalized` texts and of the `kept` ones (a
    boolean mask); the words are hashed once for both."""
    h, lens = word_ngram_hashes(normalized, 1)
    doc = np.repeat(np.arange(lens.size), lens)
    same = doc[1:] == doc[:-1]  # bigram k = words k, k+1 of one text
    h2, doc2 = (h[:-1] * _MIX + h[1:])[same], doc[:-1][same]
    return {
        "before": _figures(h, h2, normalized),
        "after": _figures(h[kept[doc]], h2[kept[doc2]], normalized.filter(pl.Series(kept))),
    }


def diversity(normalized: pl.Series) -> dict[str, float | int]:
    """distinct-1, distinct-2 and unique_ratio of already-normalized texts."""
    return diversity_before_after(normalized, np.ones(normalized.len(), dtype=bool))["before"]
