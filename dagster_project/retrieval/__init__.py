"""Retrieval library code used by the `retrieve` stage (no Dagster, no stage code).

- `bm25`:  a BM25 index over passage texts (bm25s) and top-k search;
- `dense`: cosine similarity over L2-normalised sentence embeddings (all-MiniLM-L6-v2 offline by default,
  through `dagster_project.metrics.diversity.resolve_embedder`) and top-k search;
- `band`:  keep only hits whose query-passage cosine similarity lies inside a [min, max] band, counting
  what was dropped below and above it (SynthesizRR's filter against off-topic passages and near-copies).
"""

from dagster_project.retrieval.band import Band, BandCounts, apply_band
from dagster_project.retrieval.bm25 import build_bm25, search_bm25
from dagster_project.retrieval.dense import cosine_of_pairs, dense_top_k, embed, load_embedder

__all__ = [
    "Band",
    "BandCounts",
    "apply_band",
    "build_bm25",
    "cosine_of_pairs",
    "dense_top_k",
    "embed",
    "load_embedder",
    "search_bm25",
]
