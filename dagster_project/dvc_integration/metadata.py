"""Generic asset metadata read from a stage's output files: row counts, a preview, key numbers.

It knows file formats, not domains: every parquet file gets a row count, the first one (or the one
`meta.dagster.preview` names) a preview table, numbers in metrics.json / stats.json / report.json
are shown as they are, and step curves (a TSV/CSV with a `step` column and one value column, as dvclive
writes them for `dvc plots`) are drawn as one table of sparklines.
"""

import json
import math
from pathlib import Path
from typing import Any

import dagster as dg

SUMMARY_FILES = ("metrics.json", "stats.json", "report.json")
MAX_NUMBERS = 24
PREVIEW_ROWS = 5
PREVIEW_CHARS = 80
MAX_CURVES = 12
MAX_CURVE_BYTES = 8 * 1024 * 1024
SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


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


def read_curve(path: Path) -> tuple[str, list[int], list[float]] | None:
    """(value column, steps, values) of a step curve file, or None when the file is not one: a header
    with `step` and exactly one other column besides dvclive's `timestamp`, numeric rows (blank lines
    skipped), at most MAX_CURVE_BYTES (the header is read first, so a large data file is not loaded)."""
    sep = "\t" if path.suffix == ".tsv" else ","
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split(sep)
            value_columns = [c for c in header if c not in ("step", "timestamp")]
            if "step" not in header or len(value_columns) != 1 or path.stat().st_size > MAX_CURVE_BYTES:
                return None
            lines = [line for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    step_at, value_at = header.index("step"), header.index(value_columns[0])
    steps, values = [], []
    for line in lines:
        cells = line.split(sep)
        try:
            steps.append(int(float(cells[step_at])))
            values.append(float(cells[value_at]))
        except (IndexError, ValueError, OverflowError):  # OverflowError: a step of inf
            return None
    return (value_columns[0], steps, values) if steps else None


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The curve in `width` block characters (each the mean of its share of the points), low to high;
    "" when no value (or no range) is finite."""
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:], strict=False) if b > a]
    finite = [v for v in values if math.isfinite(v)]
    if not finite or not math.isfinite(max(finite) - min(finite)):
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(
        SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] if math.isfinite(v) else " "
        for v in values
    )


def _curves_markdown(root: Path, files: list[Path]) -> str | None:
    rows = []
    for f in files:
        if f.suffix not in (".tsv", ".csv") or len(rows) == MAX_CURVES:
            continue
        curve = read_curve(f)
        if curve is None:
            continue
        _, steps, values = curve
        best = min((i for i, v in enumerate(values) if math.isfinite(v)), key=values.__getitem__, default=0)
        name = str(f.relative_to(root)).replace("|", "\\|").replace("`", "'")
        shape = sparkline(values)
        rows.append(
            f"| `{name}` | {len(values)} | {values[0]:.4g} | {values[-1]:.4g} | "
            f"{values[best]:.4g} (step {steps[best]}) | {f'`{shape}`' if shape else 'n/a'} |"
        )
    if not rows:
        return None
    head = ["| curve | points | first | last | min | shape |", "|---|---|---|---|---|---|"]
    return "\n".join(head + rows)


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
    for f in files:  # the evaluate stage's one line: zero-shot -> student / teacher (and the ratio)
        if f.name == "metrics.json":
            try:
                headline = json.loads(f.read_text()).get("headline")
            except (json.JSONDecodeError, OSError, AttributeError):
                continue
            if isinstance(headline, dict) and "metric" in headline:
                from dagster_project.evaluation.report import headline_line

                meta["headline"] = dg.MetadataValue.text(headline_line(headline))
    curves = _curves_markdown(root, files)
    if curves is not None:
        meta["curves"] = dg.MetadataValue.md(curves)
    meta["size_bytes"] = dg.MetadataValue.int(sum(f.stat().st_size for f in files))
    return meta
