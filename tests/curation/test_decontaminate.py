"""Planted evaluation items - verbatim and paraphrased by small edits - are found; look-alikes are not."""

import numpy as np
import polars as pl
import pytest

from dagster_project.curation import decontaminate, normalize, synthetic

STEPS = list(normalize.STEPS)


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    texts = synthetic.planted_texts(2000, seed=seed, dup_fraction=0.0)["text"].to_list()
    evals = texts[:100]
    train = texts[100:]
    leaks = {}
    for k in range(60):
        src = evals[k].split(" ")
        if k % 3 == 0:  # verbatim, with case/punctuation noise
            text = " ".join(src).upper() + "?"
        elif k % 3 == 1:  # one or two letters edited
            w = int(rng.integers(0, len(src)))
            src[w] = src[w][:1] + "x" + src[w][2:]
            text = " ".join(src)
        else:  # an eval text embedded in a longer example: shares 13-grams, too long to near-match
            text = "context says " + " ".join(src[:20]) + " and more words follow here"
        leaks[len(train)] = k
        train.append(text)
    return pl.Series(train), pl.Series(evals), leaks


@pytest.mark.parametrize("exact_budget", [10**9, 0])  # all-pairs cdist, and the MinHash-LSH path
def test_planted_leaks_are_found(exact_budget):
    train, evals, leaks = _planted()
    t = normalize.normalize_series(train, STEPS)
    e = normalize.normalize_series(evals, STEPS)
    gram = decontaminate.ngram_overlap(t, e, 13)
    near, score = decontaminate.near_matches(t, e, "token_sort_ratio", 95.0, exact_budget=exact_budget)
    found = np.where(near >= 0, near, gram)
    for row, k in leaks.items():
        assert found[row] == k, (row, k, train[row])
    clean = np.ones(t.len(), bool)
    clean[list(leaks)] = False
    assert (found[clean] == -1).all()
    assert (score[near >= 0] >= 95).all()


def test_ngram_overlap_needs_n_shared_words():
    e = pl.Series(["a b c d e f"])
    t = pl.Series(["x a b c d y", "q b c d e f", "a b c", ""])
    assert decontaminate.ngram_overlap(t, e, 5).tolist() == [-1, 0, -1, -1]
    assert decontaminate.ngram_overlap(t, e, 3).tolist() == [0, 0, 0, -1]
