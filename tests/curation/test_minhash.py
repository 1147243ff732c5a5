"""MinHash-LSH near-duplicate search against the rapidfuzz all-pairs oracle on planted data."""

import numpy as np
import polars as pl
import pytest
from rapidfuzz import fuzz, process

from dagster_project.curation import clusters, minhash, normalize, synthetic

STEPS = list(normalize.STEPS)


def test_jaccard_estimate_is_unbiased():
    rng = np.random.default_rng(0)
    errors = []
    for jaccard in (0.3, 0.6, 0.9):
        for _ in range(60):
            k = int(jaccard * 60)
            words = [f"w{x}" for x in rng.choice(100_000, size=60 + (60 - k), replace=False)]
            a = words[:60]
            b = words[:k] + words[60:]
            ids, offsets = minhash.shingles(pl.Series([" ".join(a), " ".join(b)]))
            sig = minhash.signatures(ids, offsets, num_perm=256)
            true = k / (120 - k)
            errors.append((sig[:, 0] == sig[:, 1]).mean() - true)
    assert abs(np.mean(errors)) < 0.01
    assert np.std(errors) < 0.05


def test_shingles_are_word_sets_or_ngrams():
    ids, offsets = minhash.shingles(pl.Series(["a b  a", "", None, "c\td e"]))
    assert np.diff(offsets).tolist() == [3, 0, 0, 3]  # "a" twice: a repeat cannot change a minimum
    ids, offsets = minhash.shingles(pl.Series(["a b c d", "x", "b c d"]), ngram=3)
    assert np.diff(offsets).tolist() == [2, 1, 1]
    assert ids[1] == ids[3]  # "b c d" in both


def test_candidate_pairs_cover_buckets_and_cap_big_ones():
    keys = np.array([[5, 7, 5, 9, 5, 7]], dtype=np.uint64)
    i, j = minhash.candidate_pairs(keys)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 2), (0, 4), (1, 5), (2, 4)]
    big = np.zeros((1, 500), dtype=np.uint64)  # one bucket of 500: a window, not 124,750 pairs
    i, j = minhash.candidate_pairs(big, window=4)
    assert i.size == 4 * 500 - 10
    labels = clusters.connected_components(500, i, j)
    assert (labels == 0).all()  # the chain still joins the whole bucket


def test_blocks_restrict_candidates():
    texts = pl.Series(["what cargo does imeldkor carry timber", "what cargo does imeldkor carry timbre"])
    assert minhash.near_duplicate_pairs(texts, 90, "ratio").i.size == 1
    blocked = minhash.near_duplicate_pairs(texts, 90, "ratio", blocks=pl.Series(["p1", "p2"]))
    assert blocked.i.size == 0


def test_token_sort_ratio_is_ratio_of_sorted_words():
    texts = synthetic.planted_texts(300, seed=3)["text"].to_list() + ["b  a\tc", "é a Z b", ""]
    prepared, scorer = minhash.prepare(pl.Series(texts), "token_sort_ratio")
    assert scorer == "ratio"
    a = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio)
    b = process.cdist(prepared.to_list(), prepared.to_list(), scorer=fuzz.ratio)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("scorer", "n"), [("token_sort_ratio", 3000), ("ratio", 1500)])
def test_planted_duplicates_recall_and_precision_vs_all_pairs_oracle(scorer, n):
    """Exact, near (edit distance) and reordered copies plus look-alikes, at the default threshold 95."""
    df = synthetic.planted_texts(n, seed=7)
    keys = normalize.normalize_series(df["text"], STEPS)
    pairs = minhash.near_duplicate_pairs(
        keys, 95.0, scorer, minhash.LSHConfig(num_perm=120, bands=20, rows=6)
    )
    labels = clusters.connected_components(keys.len(), pairs.i, pairs.j)
    oi, oj = synthetic.oracle_pairs(keys.to_list(), scorer, 95.0)
    q = synthetic.cluster_quality(labels, oi, oj, df["kind"].to_list(), df["source"].to_numpy())
    print(q)
    assert q["oracle_pairs"] > n // 10
    assert q["oracle_pair_recall"] >= 0.99
    assert q["oracle_precision"] >= 0.99
    assert q["planted_precision"] >= 0.99
    assert q["lookalikes_merged"] <= 0.01
    if scorer == "token_sort_ratio":  # with plain ratio a reordered text is no longer a duplicate
        assert q["planted_recall"] >= 0.99
    # Verified pairs are exactly oracle pairs (same scorer, same threshold): no false edges.
    ours = set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    assert ours <= set(zip(oi.tolist(), oj.tolist(), strict=True))
