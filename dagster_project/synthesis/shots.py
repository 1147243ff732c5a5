"""In-context examples ("shots") for teacher requests, drawn reproducibly from a table."""

import hashlib
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl


def read_table(path: str | Path) -> pl.DataFrame:
    """A parquet, JSON-lines or CSV file as a table (the formats stage kinds exchange rows in)."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: {path}: file not found")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            return pl.read_ndjson(path, infer_schema_length=None)  # every row decides the columns
        if path.suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=0)  # every value a string, as written
    except Exception as exc:  # polars' own errors name neither the file nor the line
        raise SystemExit(f"error: {path}: cannot read it as a table: {_bad_line(path) or exc}") from None
    raise SystemExit(f"error: {path}: expected a .parquet, .jsonl or .csv table")


def _bad_line(path: Path) -> str | None:
    """The first line of a JSON-lines file that is not a JSON object, named (polars' error names none)."""
    if path.suffix not in (".jsonl", ".json"):
        return None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {n} is not valid JSON ({exc.msg}); every line must be one JSON object"
        if not isinstance(row, dict):
            return f"line {n} is a JSON {type(row).__name__}, not an object"
    return None


class ShotSampler:
    """Draws up to `k` examples (only `columns`) from `pool` for a row, seeded by a key of the request.

    A candidate must equal the row on every `match` pair (row column -> pool column) and differ on every
    `exclude` pair (e.g. the row's own seed or passage is never its own example). Each draw is seeded by
    (seed, the request's key), so adding or removing other rows changes no other request's examples.
    `counts` records how many examples each request got (fewer than `k` when too few candidates match).
    """

    def __init__(
        self,
        pool: pl.DataFrame,
        k: int,
        columns: Sequence[str],
        match: Mapping[str, str],
        exclude: Mapping[str, str],
        seed: int,
    ):
        missing = sorted({*columns, *match.values(), *exclude.values()} - set(pool.columns))
        if missing:
            raise SystemExit(
                f"error: shots: the shots table has no column(s) {missing}; columns: {pool.columns}"
            )
        self.candidates = pool.to_dicts()
        self.k, self.columns, self.match, self.exclude, self.seed = k, list(columns), match, exclude, seed
        self.counts: Counter = Counter()

    def draw(self, row: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        """The examples for one request of `row`; `key` identifies the request (row values and sample)."""
        ok = [
            c
            for c in self.candidates
            if all(c[p] == row.get(r) for r, p in self.match.items())
            and all(c[p] != row.get(r) for r, p in self.exclude.items())
        ]
        digest = hashlib.sha256(f"{self.seed}\x1f{key}".encode()).digest()
        picked = random.Random(int.from_bytes(digest[:8], "big")).sample(ok, min(self.k, len(ok)))
        self.counts[len(picked)] += 1
        return [{c: shot[c] for c in self.columns} for shot in picked]
