"""Seeded synthetic texts with planted duplicates, for tests and benchmarks of the curation code.

Originals are ~30 pseudo-words drawn from a Zipf-like vocabulary (so common words are shared, as in real
text). A fraction of rows are planted copies of an earlier original:
    exact      the original with its case and punctuation changed (equal after normalization)
    near       1-2 letters substituted inside words (edit distance)
    reorder    two words swapped, or the last third of the text moved to the front
    lookalike  5-7 words replaced by others: similar text, another "fact" - must NOT be removed
"""

import numpy as np
import polars as pl

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
KINDS = ("exact", "near", "reorder", "lookalike")


def _vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    lengths = rng.integers(3, 10, size=size)
    chars = LETTERS[rng.integers(0, 26, size=int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    return np.array(["".join(w) for w in np.split(chars, cuts)])


def planted_texts(
    n: int,
    seed: int = 0,
    dup_fraction: float = 0.2,
    words: tuple[int, int] = (24, 36),
    vocab_size: int = 30_000,
) -> pl.DataFrame:
    """`n` rows: id, text, kind (original|exact|near|reorder|lookalike), source (original row or -1)."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, vocab_size)
    probs = 1.0 / (np.arange(vocab_size) + 20.0)
    probs /= probs.sum()
    n_planted = int(n * dup_fraction)
    n_orig = n - n_planted
    lengths = rng.integers(words[0], words[1] + 1, size=n_orig)
    flat = vocab[rng.choice(vocab_size, size=int(lengths.sum()), p=probs)]
    texts: list[str] = [" ".join(w) for w in np.split(flat, np.cumsum(lengths)[:-1])]
    kinds = ["original"] * n_orig
    sources = [-1] * n_orig
    src = rng.integers(0, n_orig, size=n_planted)
    which = rng.integers(0, len(KINDS), size=n_planted)
    for s, k in zip(src.tolist(), which.tolist(), strict=True):
        kind = KINDS[k]
        toks = texts[s].split(" ")
        if kind == "exact":
            out = " ".join(toks).upper() + "!" if rng.random() < 0.5 else "  ".join(toks).capitalize() + "."
        elif kind == "near":
            for _ in range(int(rng.integers(1, 3))):
                w = int(rng.integers(0, len(toks)))
                word = toks[w]
                p = int(rng.integers(1, len(word)))  # never the first letter, so word order holds
                toks[w] = word[:p] + LETTERS[rng.integers(0, 26)] + word[p + 1 :]
            out = " ".join(toks)
        elif kind == "reorder":
            if rng.random() < 0.5:
                a, b = rng.choice(len(toks), size=2, replace=False)
                toks[a], toks[b] = toks[b], toks[a]
            else:
                cut = len(toks) * 2 // 3
                toks = toks[cut:] + toks[:cut]
            out = " ".join(toks)
        else:
            for w in rng.choice(len(toks), size=int(rng.integers(5, 8)), replace=False):
                toks[w] = vocab[rng.integers(0, vocab_size)]
            out = " ".join(toks)
        texts.append(out)
        kinds.append(kind)
        sources.append(s)
    order = rng.permutation(n)  # planted rows anywhere, originals not always first
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    src_all = np.array(sources)
    src_pos = np.where(src_all >= 0, position[np.maximum(src_all, 0)], -1)
    frame = pl.DataFrame(
        {
            "id": [f"t{i}" for i in range(n)],
            "text": [texts[o] for o in order],
            "kind": [kinds[o] for o in order],
            "source": src_pos[order],
        }
    )
    return frame
