"""Near-duplicate search without all pairs: MinHash signatures + LSH banding, vectorised in numpy, then
every candidate pair verified with rapidfuzz at the recipe's scorer and threshold.

1. `shingles`: each text's word n-grams (n=1: its set of words, so reordered words still match) hashed
   to 32-bit integer ids with polars' vectorised hash;
2. `signatures`: `num_perm` hash functions h(x) = a*x + b mod 2^32 (a odd: a permutation of the 32-bit
   ids, which are already hashes, so no further mixing is needed; the Jaccard estimate is unbiased, see
   tests/curation/test_minhash.py) over every shingle id; a text's
   signature is the minimum per function (numpy `minimum.reduceat`). Texts are processed in chunks of
   tokens and permutation blocks on a small thread pool (numpy releases the GIL), so memory stays bounded;
3. `candidate_pairs`: the signature is cut into `bands` bands of `rows` values; two texts whose band
   values agree in any band are candidates. Per band the band keys are sorted and equal runs (buckets)
   are paired: every pair in a bucket of up to `window + 1` texts, and each text with the next `window`
   texts in larger buckets (union-find joins the chain), so a huge bucket cannot blow up quadratically;
4. `verify`: rapidfuzz `cpdist` scores the candidate pairs in batches (multithreaded C++).

Probability that a pair of Jaccard similarity s becomes a candidate: 1 - (1 - s^rows)^bands.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

SCORERS = {
    "ratio": fuzz.ratio,
    "token_sort_ratio": fuzz.token_sort_ratio,
    "token_set_ratio": fuzz.token_set_ratio,
}
_M64 = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.empty(0, dtype=np.int64)


def default_workers() -> int:
    """Threads for numpy/rapidfuzz work: the CPUs this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_INV_M64 = np.uint64(pow(int(_M64), -1, 2**64))


def _window_hashes(h: np.ndarray, n: int) -> np.ndarray:
    """acc[i] = sum_j h[i+j] * M^j (mod 2^64) over j < n (windows running off the end are garbage; the
    caller masks them). A prefix sum in place of n shifted passes: with p[k] = M^k, the window sum of
    h[k] * p[k] is divided by p[i] (M is odd, so it has an inverse mod 2^64). uint64 arithmetic wraps."""
    size = h.size
    powers = np.full(size, _M64, dtype=np.uint64)
    powers[0] = 1
    powers = np.cumprod(powers, dtype=np.uint64)
    inverse = np.full(size, _INV_M64, dtype=np.uint64)
    inverse[0] = 1
    inverse = np.cumprod(inverse, dtype=np.uint64)
    prefix = np.cumsum(h * powers, dtype=np.uint64)
    acc = np.empty_like(h)
    end = np.minimum(np.arange(size) + n - 1, size - 1)
    acc[:] = prefix[end]
    acc[1:] -= prefix[:-1]
    return acc * inverse


def word_ngram_hashes(
    texts: pl.Series, ngram: int = 1, seed: int = 0, unique: bool = False, keep_short: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word n-grams (words split on whitespace), in text order.

    Returns (hashes, lens): text i owns the lens[i] hashes after those of texts 0..i-1. `unique` keeps each
    word once per text (only for ngram 1); with `keep_short` a text of fewer than `ngram` words gets its
    single words instead of nothing.
    """
    words = texts.cast(pl.String).fill_null("").str.replace_all(r"[^\S ]", " ").str.split(" ")
    if unique and ngram == 1:
        words = words.list.unique()  # (a MinHash does not need it: a repeated shingle cannot change a min)
    raw_lens = words.list.len().to_numpy().astype(np.int64)
    flat = words.explode()
    nonempty = (flat.str.len_bytes() > 0).fill_null(False).to_numpy()
    h = flat.hash(seed=seed).to_numpy()[nonempty]
    doc = np.repeat(np.arange(raw_lens.size), raw_lens)[nonempty]
    lens = np.bincount(doc, minlength=raw_lens.size).astype(np.int64)
    if ngram > 1 and h.size:
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        pos = np.arange(h.size) - starts
        doc_len = np.repeat(lens, lens)
        acc = _window_hashes(h, ngram)
        full = pos + ngram <= doc_len
        keep = full | (doc_len < ngram) if keep_short else full
        h = np.where(full, acc, h)[keep]
        lens = np.bincount(doc[keep], minlength=lens.size).astype(np.int64)
    return h, lens


def shingles(texts: pl.Series, ngram: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit ids of each text's word n-gram shingles (repeats kept: they cannot change a minimum).

    Returns (ids, offsets): text i owns ids[offsets[i]:offsets[i+1]]. A text with fewer than `ngram` words
    gets its single words as shingles; an empty text gets none.
    """
    h, lens = word_ngram_hashes(texts, ngram, seed, unique=False, keep_short=True)
    ids = (h ^ (h >> np.uint64(32))).astype(np.uint32)
    offsets = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return ids, offsets


def signatures(
    ids: np.ndarray,
    offsets: np.ndarray,
    num_perm: int = 128,
    seed: int = 0,
    workers: int | None = None,
    block_elements: int = 1 << 24,
) -> np.ndarray:
    """MinHash signatures, shape (num_perm, n_texts), uint32; every text must have at least one shingle."""
    lens = np.diff(offsets)
    if (lens <= 0).any():
        raise ValueError("signatures: every text needs at least one shingle (filter empty texts first)")
    n = lens.size
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    sig = np.empty((num_perm, n), dtype=np.uint32)
    perm_block = 16
    max_tokens = max(1, block_elements // perm_block)
    # Cut the texts into chunks of about max_tokens shingles.
    cuts = [0]
    while cuts[-1] < n:
        target = offsets[cuts[-1]] + max_tokens
        nxt = int(np.searchsorted(offsets, target, side="right")) - 1
        cuts.append(min(n, max(nxt, cuts[-1] + 1)))

    def work(task: tuple[int, int, int]) -> None:
        d0, d1, p0 = task
        p1 = min(num_perm, p0 + perm_block)
        x = ids[offsets[d0] : offsets[d1]]
        h = np.multiply(x[None, :], a[p0:p1, None])
        h += b[p0:p1, None]
        sig[p0:p1, d0:d1] = np.minimum.reduceat(h, offsets[d0:d1] - offsets[d0], axis=1)

    tasks = [
        (d0, d1, p0)
        for d0, d1 in zip(cuts[:-1], cuts[1:], strict=True)
        for p0 in range(0, num_perm, perm_block)
    ]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        list(pool.map(work, tasks))
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int, salt: np.ndarray | None = None) -> np.ndarray:
    """One 64-bit key per (band, text): the band's `rows` signature values (and `salt`, e.g. a block id)."""
    if bands * rows > sig.shape[0]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[0]}")
    keys = np.empty((bands, sig.shape[1]), dtype=np.uint64)
    for band in range(bands):
        k = np.full(sig.shape[1], band + 1, dtype=np.uint64) if salt is None else salt + np.uint64(band + 1)
        for r in range(rows):
            k = (k ^ sig[band * rows + r].astype(np.uint64)) * _M64
            k ^= k >> np.uint64(29)
        keys[band] = k
    return keys


def candidate_pairs(keys: np.ndarray, window: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of texts sharing a band key in any band, deduplicated; see the module doc."""
    n = keys.shape[1]
    found = []
    for band_key in keys:
        # members of a shared bucket, found by hashing (polars, multithreaded), then only those are sorted
        shared = np.flatnonzero(pl.Series(band_key).is_duplicated().to_numpy())
        order = shared[np.argsort(band_key[shared], kind="stable")]
        sub_order, sub_keys = order, band_key[order]
        for j in range(1, window + 1):
            if j >= sub_keys.size:
                break
            same = sub_keys[j:] == sub_keys[:-j]
            if not same.any():
                break
            found.append(sub_order[:-j][same].astype(np.int64) * n + sub_order[j:][same])
    if not found:
        return _EMPTY, _EMPTY
    codes = np.unique(np.concatenate(found))
    return codes // n, codes % n


def prepare(texts: pl.Series, scorer: str) -> tuple[pl.Series, str]:
    """(texts, scorer) to score with: token_sort_ratio equals ratio of the texts with their words sorted,
    so the words are sorted once per text (polars) instead of once per pair (rapidfuzz)."""
    if scorer == "token_sort_ratio":
        words = texts.cast(pl.String).fill_null("").str.replace_all(r"[^\S ]", " ").str.split(" ")
        # empty "words" (from repeated spaces) sort first, so stripping the joined text drops them
        return words.list.sort().list.join(" ").str.strip_chars(" "), "ratio"
    return texts, scorer


def verify(
    texts: pl.Series,
    i: np.ndarray,
    j: np.ndarray,
    scorer: str,
    threshold: float,
    batch: int = 250_000,
    workers: int | None = None,
) -> np.ndarray:
    """The rapidfuzz `scorer` score of each pair (texts[i], texts[j]); 0 where below `threshold`."""
    out = np.zeros(i.size, dtype=np.float64)
    if i.size == 0:
        return out
    used, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)  # prepare only these texts
    texts, scorer = prepare(texts.gather(used), scorer)
    i, j = inverse[: i.size], inverse[i.size :]
    fn = SCORERS[scorer]
    for s in range(0, i.size, batch):
        left = texts.gather(i[s : s + batch]).to_list()
        right = texts.gather(j[s : s + batch]).to_list()
        out[s : s + batch] = process.cpdist(
            left, right, scorer=fn, score_cutoff=threshold, workers=workers or default_workers()
        )
    return out


@dataclass
class LSHConfig:
    """MinHash-LSH settings: `bands * rows <= num_perm`; `ngram` word shingles."""

    num_perm: int = 128
    bands: int = 32
    rows: int = 4
    ngram: int = 1
    seed: int = 0
    window: int = 64


@dataclass
class NearPairs:
    """Verified near-duplicate pairs (i < j, row positions) with their scores, and what it took."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    n_candidates: int


def near_duplicate_pairs(
    texts: pl.Series,
    threshold: float,
    scorer: str,
    config: LSHConfig | None = None,
    blocks: pl.Series | None = None,
    workers: int | None = None,
) -> NearPairs:
    """All pairs of `texts` that score >= `threshold`, found through MinHash-LSH candidates.

    `blocks` (optional, one value per text) restricts candidates to texts sharing a block value.
    Empty texts take no part.
    """
    cfg = config or LSHConfig()
    ids, offsets = shingles(texts, cfg.ngram, cfg.seed)
    lens = np.diff(offsets)
    rows_with = np.flatnonzero(lens > 0)
    if rows_with.size < 2:
        return NearPairs(_EMPTY, _EMPTY, np.empty(0), 0)
    if rows_with.size < lens.size:  # drop the empty texts
        keep = np.repeat(lens > 0, lens)
        ids = ids[keep]
        offsets = np.concatenate([[0], np.cumsum(lens[rows_with])])
    sig = signatures(ids, offsets, cfg.num_perm, cfg.seed, workers)
    salt = None
    if blocks is not None:
        salt = blocks.cast(pl.String).fill_null("").hash(seed=cfg.seed).to_numpy()[rows_with]
    keys = band_keys(sig, cfg.bands, cfg.rows, salt)
    del sig
    ci, cj = candidate_pairs(keys, cfg.window)
    del keys
    ci, cj = rows_with[ci], rows_with[cj]
    scores = verify(texts, ci, cj, scorer, threshold, workers=workers)
    ok = scores >= threshold
    return NearPairs(ci[ok], cj[ok], scores[ok], int(ci.size))
