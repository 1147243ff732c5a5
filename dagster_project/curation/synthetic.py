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


def oracle_pairs(
    texts: list[str], scorer: str, threshold: float, workers: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) scoring >= threshold by rapidfuzz `cdist` (all pairs: only for small sets)."""
    from rapidfuzz import process

    from dagster_project.curation.minhash import SCORERS, prepare

    prepared, scorer = prepare(pl.Series(texts, dtype=pl.String), scorer)
    texts = prepared.to_list()
    m = process.cdist(texts, texts, scorer=SCORERS[scorer], score_cutoff=threshold, workers=workers)
    i, j = np.nonzero(np.triu(m >= max(threshold, 1e-9), k=1))
    return i.astype(np.int64), j.astype(np.int64)


def cluster_quality(
    labels: np.ndarray,
    oracle_i: np.ndarray,
    oracle_j: np.ndarray,
    kinds: list[str] | None = None,
    sources: np.ndarray | None = None,
) -> dict[str, float | int]:
    """How clusters (a label per text) agree with the all-pairs oracle and with the planted truth.

    oracle_pair_recall     oracle pairs whose two texts share a cluster
    oracle_precision       texts placed in a cluster with others whose oracle component is the same
                           (1.0 means no cluster joins texts the oracle keeps apart)
    planted_recall         planted exact/near/reorder copies clustered with their original
    planted_precision      clustered non-singleton texts that belong with their cluster's planted group
    lookalikes_merged      look-alikes wrongly clustered with their original (should be ~0)
    """
    from dagster_project.curation.clusters import connected_components

    n = labels.size
    out: dict[str, float | int] = {"n": n, "oracle_pairs": int(oracle_i.size)}
    out["oracle_pair_recall"] = float((labels[oracle_i] == labels[oracle_j]).mean()) if oracle_i.size else 1.0
    oracle_labels = connected_components(n, oracle_i, oracle_j)
    sizes = np.bincount(labels, minlength=n)
    in_cluster = sizes[labels] > 1
    # For each of our clusters, the oracle component of its smallest member; every member must agree.
    agree = oracle_labels == oracle_labels[labels]
    out["oracle_precision"] = float(agree[in_cluster].mean()) if in_cluster.any() else 1.0
    if kinds is not None and sources is not None:
        kinds_a = np.array(kinds)
        group = np.where(sources >= 0, sources, np.arange(n))  # the original each text was planted from
        group = np.where(kinds_a == "lookalike", -1 - np.arange(n), group)  # look-alikes stand alone
        planted = np.isin(kinds_a, ["exact", "near", "reorder"])
        out["planted_duplicates"] = int(planted.sum())
        out["planted_recall"] = (
            float((labels[planted] == labels[sources[planted]]).mean()) if planted.any() else 1.0
        )
        # precision: in every cluster, the planted group of most members; members outside it are wrong
        frame = pl.DataFrame({"label": labels, "group": group}).filter(pl.Series(in_cluster))
        if frame.height:
            majority = frame.group_by(["label", "group"]).len().group_by("label").agg(pl.col("len").max())
            out["planted_precision"] = float(majority["len"].sum() / frame.height)
        else:
            out["planted_precision"] = 1.0
        look = kinds_a == "lookalike"
        out["lookalikes_merged"] = (
            float((labels[look] == labels[sources[look]]).mean()) if look.any() else 0.0
        )
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}
