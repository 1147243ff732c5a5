"""In-context examples ("shots") for teacher requests, drawn reproducibly from a table."""

import hashlib
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl


def read_table(path: str | Path) -> pl.DataFrame:
    """A parquet or JSONL file as a table (the formats stage kinds exchange rows in)."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: {path}: file not found")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pl.read_ndjson(path)
    raise SystemExit(f"error: {path}: expected a .parquet or .jsonl table")


def draw_shots(
    rows: Sequence[Mapping[str, Any]],
    pool: pl.DataFrame,
    k: int,
    columns: Sequence[str],
    match: Mapping[str, str],
    exclude: Mapping[str, str],
    seed: int,
) -> list[list[dict[str, Any]]]:
    """For each row, up to `k` examples from `pool` (only `columns`), seeded by (seed, row position).

    A candidate must equal the row on every `match` pair (row column -> pool column) and differ on every
    `exclude` pair (e.g. the row's own seed is never its own example). Fewer than `k` candidates: all.
    """
    missing = sorted({*columns, *match.values(), *exclude.values()} - set(pool.columns))
    if missing:
        raise SystemExit(f"error: shots: the shots table has no column(s) {missing}; columns: {pool.columns}")
    candidates = pool.to_dicts()
    out = []
    for i, row in enumerate(rows):
        ok = [
            c
            for c in candidates
            if all(c[p] == row.get(r) for r, p in match.items())
            and all(c[p] != row.get(r) for r, p in exclude.items())
        ]
        digest = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        picked = rng.sample(ok, min(k, len(ok)))
        out.append([{c: shot[c] for c in columns} for shot in picked])
    return out
