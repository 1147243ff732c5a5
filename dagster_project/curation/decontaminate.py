"""Decontamination: find the rows that leak an evaluation set, by word n-gram overlap and by near-match.

- `ngram_overlap`: a row leaks when it shares any word n-gram (13 by default, as in GPT-3/Llama reports)
  with an evaluation text; 64-bit n-gram hashes, looked up with a sorted array (`searchsorted`).
- `near_matches`: a row leaks when a rapidfuzz scorer rates it >= threshold against an evaluation text
  (catches paraphrases by small edits and texts shorter than n words). Exact all-pairs (`cdist`, in row
  chunks) while rows x evaluation texts is small; above `exact_budget` pairs, MinHash-LSH candidates
  between the two sets, then the same verification. The LSH is looser than the dedup one (16 bands of 3
  rows: a pair of Jaccard 0.6 is a candidate with P = 0.98): evaluation sets are small, so the extra
  random candidates (rows x eval texts x ~16 J^3) stay cheap, and a few edited words in a short question
  still match.
"""

import numpy as np
import polars as pl
from rapidfuzz import process

from dagster_project.curation.minhash import (
    SCORERS,
    LSHConfig,
    band_keys,
    default_workers,
    prepare,
    shingles,
    signatures,
    verify,
    word_ngram_hashes,
)

DECONTAMINATION_LSH = LSHConfig(num_perm=48, bands=16, rows=3)


def ngram_overlap(texts: pl.Series, eval_texts: pl.Series, n: int = 13, seed: int = 0) -> np.ndarray:
    """Per row of `texts`, the index of the first evaluation text sharing a word n-gram with it, else -1."""
    out = np.full(texts.len(), -1, dtype=np.int64)
    gh, glens = word_ngram_hashes(eval_texts, n, seed, keep_short=False)
    if gh.size == 0:
        return out
    owner = np.repeat(np.arange(glens.size), glens)
    order = np.argsort(gh, kind="stable")
    gh_sorted, owner_sorted = gh[order], owner[order]
    rh, rlens = word_ngram_hashes(texts, n, seed, keep_short=False)
    if rh.size == 0:
        return out
    hit = pl.Series(rh).is_in(pl.Series(gh_sorted).implode()).to_numpy()  # hash lookup, then only hits
    rows = np.repeat(np.arange(rlens.size), rlens)[hit]
    owners = owner_sorted[np.searchsorted(gh_sorted, rh[hit])]
    first_rows, first_idx = np.unique(rows, return_index=True)
    out[first_rows] = owners[first_idx]
    return out


def _best_per_row(
    n: int, rows: np.ndarray, gold: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    best = np.full(n, -1, dtype=np.int64)
    best_score = np.zeros(n, dtype=np.float64)
    if rows.size == 0:
        return best, best_score
    order = np.lexsort((gold, -score, rows))  # per row: highest score, then lowest evaluation index
    rows, gold, score = rows[order], gold[order], score[order]
    first_rows, first_idx = np.unique(rows, return_index=True)
    best[first_rows] = gold[first_idx]
    best_score[first_rows] = score[first_idx]
    return best, best_score


def near_matches(
    texts: pl.Series,
    eval_texts: pl.Series,
    scorer: str,
    threshold: float,
    config: LSHConfig | None = None,
    exact_budget: int = 2_000_000,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, (index of the best-scoring evaluation text scoring >= threshold or -1, its score)."""
    n, g = texts.len(), eval_texts.len()
    if n == 0 or g == 0:
        return np.full(n, -1, dtype=np.int64), np.zeros(n)
    workers = workers or default_workers()
    if n * g <= exact_budget:
        texts, exact_scorer = prepare(texts, scorer)
        eval_prepared, _ = prepare(eval_texts, scorer)
        gold_list = eval_prepared.cast(pl.String).fill_null("").to_list()
        step = max(1, exact_budget // (4 * g))
        rows_l, gold_l, score_l = [], [], []
        for s in range(0, n, step):
            chunk = texts.slice(s, step).cast(pl.String).fill_null("").to_list()
            m = process.cdist(
                chunk, gold_list, scorer=SCORERS[exact_scorer], score_cutoff=threshold, workers=workers
            )
            r, c = np.nonzero(m >= max(threshold, 1e-9))
            rows_l.append(r + s)
            gold_l.append(c)
            score_l.append(m[r, c].astype(np.float64))
        return _best_per_row(n, np.concatenate(rows_l), np.concatenate(gold_l), np.concatenate(score_l))

    cfg = config or DECONTAMINATION_LSH
    both = pl.concat([texts.cast(pl.String), eval_texts.cast(pl.String)])
    ids, offsets = shingles(both, cfg.ngram, cfg.seed)
    lens = np.diff(offsets)
    present = np.flatnonzero(lens > 0)
    keep = np.repeat(lens > 0, lens)
    offsets = np.concatenate([[0], np.cumsum(lens[present])])
    sig = signatures(ids[keep], offsets, cfg.bands * cfg.rows, cfg.seed, workers)
    keys = band_keys(sig, cfg.bands, cfg.rows)
    del sig
    is_row = present < n
    row_pos, gold_pos = present[is_row], present[~is_row] - n
    found = []
    for band in keys:
        rk, gk = band[is_row], band[~is_row]
        order = np.argsort(gk, kind="stable")
        gk_sorted = gk[order]
        lo = np.searchsorted(gk_sorted, rk, side="left")
        cnt = np.searchsorted(gk_sorted, rk, side="right") - lo
        if not cnt.any():
            continue
        r = np.repeat(np.arange(rk.size), cnt)
        within = np.arange(r.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        gsel = order[np.repeat(lo, cnt) + within]
        found.append(row_pos[r].astype(np.int64) * g + gold_pos[gsel])
    if not found:
        return np.full(n, -1, dtype=np.int64), np.zeros(n)
    codes = np.unique(np.concatenate(found))
    ci, cj = codes // g, codes % g
    scores = verify(both, ci, cj + n, scorer, threshold, workers=workers)
    ok = scores >= threshold
    return _best_per_row(n, ci[ok], cj[ok], scores[ok])
