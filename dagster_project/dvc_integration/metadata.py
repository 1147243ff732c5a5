"""Generic asset metadata read from a stage's output files: row counts, a preview, key numbers.

It knows file formats, not domains: every parquet file gets a row count, the first one (or the one
`meta.dagster.preview` names) a preview table, and numbers in metrics.json / stats.json / report.json
are shown as they are.
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg

SUMMARY_FILES = ("metrics.json", "stats.json", "report.json")
MAX_NUMBERS = 24
PREVIEW_ROWS = 5
PREVIEW_CHARS = 80


def _files(root: Path, outs: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for out in outs:
        p = root / out
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            files.append(p)
    return files


def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}." if prefix or k else ""))
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, int | float):
        flat[prefix.rstrip(".")] = obj
    return flat


def _preview_markdown(path: Path) -> str:
    import polars as pl

    df = pl.read_parquet(path, n_rows=PREVIEW_ROWS)
    cols = df.columns[:6]

    def cell(v: Any) -> str:
        s = str(v).replace("\n", " ").replace("|", "\\|")
        return s if len(s) <= PREVIEW_CHARS else s[: PREVIEW_CHARS - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(cell(row[c]) for c in cols) + " |" for row in df.select(cols).iter_rows(named=True)
    ]
    return "\n".join(lines)


def output_metadata(root: Path, outs: tuple[str, ...], preview: str | None = None) -> dict[str, Any]:
    """Metadata for the files a stage wrote under `outs` (paths relative to `root`)."""
    import pyarrow.parquet as pq

    meta: dict[str, Any] = {}
    files = _files(root, outs)
    parquet = [f for f in files if f.suffix == ".parquet"]
    for f in parquet:
        meta[f"rows/{f.stem}"] = dg.MetadataValue.int(pq.ParquetFile(f).metadata.num_rows)
    preview_file = next(
        (f for f in parquet if preview and f.name == preview), parquet[0] if parquet else None
    )
    if preview_file is not None:
        meta["preview"] = dg.MetadataValue.md(f"`{preview_file.name}`\n\n" + _preview_markdown(preview_file))
    numbers: dict[str, float] = {}
    for f in files:
        if f.name in SUMMARY_FILES:
            try:
                numbers.update({f"{f.stem}/{k}": v for k, v in _flatten(json.loads(f.read_text())).items()})
            except (json.JSONDecodeError, OSError):
                continue
    # Shallow keys first (the headline figures), then deeper breakdowns, up to MAX_NUMBERS.
    for k in sorted(numbers, key=lambda k: (k.count("."), k))[:MAX_NUMBERS]:
        v = numbers[k]
        meta[k] = dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(int(v))
    meta["size_bytes"] = dg.MetadataValue.int(sum(f.stat().st_size for f in files))
    return meta
