"""Curation algorithms at scale, Dagster-free and stage-free: normalization, MinHash-LSH near-duplicate
search, clusters, decontamination, quality filters and diversity figures. The `dedup` stage composes them.

Everything works on polars Series/DataFrames and numpy arrays (no per-row Python loops on the hot path).
"""
