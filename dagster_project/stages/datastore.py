"""Stage kind `datastore`: rows of existing datasets, flattened column by column, each with its description.

    python -m dagster_project.stages.datastore --params params.yaml [--section datastore] \\
        --out assets/datastore

Reads one params section (`Params`). Datasets come from `folder` (every subfolder is one dataset, named by
the folder: jsonl/csv/parquet files named by split, as Hugging Face `datasets` loads a folder, plus a
`README.md` dataset card or a `description.txt`) and from `sources` (a local folder or a Hugging Face hub
name, with its config and splits; hub names need the network and `HF_HUB_OFFLINE` unset). Every dataset
is loaded with `datasets.load_dataset`; its rows (the first `max_rows_per_dataset` over its splits in
order) are flattened into one table of cells, label ids of `ClassLabel` columns turned into their names.
Writes into the output folder (atomically):

    datastore.parquet  dataset, config, split, row_id, column, value  one row per non-empty cell (strings;
                       lists and mappings as JSON, values longer than max_chars cut)
    datasets.json      per dataset: source, description, splits (rows loaded / kept), columns, label columns
    report.json        datasets, rows and cells in all, rows per dataset

A dataset's description is the first paragraph of its card's body (YAML front matter and headings
skipped), else `description.txt`, else the `description` the params give, else the loader's own.
A dataset with no description is an error naming it: selection scores descriptions.
"""

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, model_validator

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    stage_parser,
    write_json,
    write_parquet,
)

CELL_SCHEMA = {
    "dataset": pl.String,
    "config": pl.String,
    "split": pl.String,
    "row_id": pl.Int64,
    "column": pl.String,
    "value": pl.String,
}
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")


class SourceParams(StageParams):
    """One dataset: a local folder (`path`) or a Hugging Face hub name (`hub`)."""

    path: str | None = None  # relative to the params file's folder
    hub: str | None = None  # e.g. "squad"; needs the network
    name: str | None = None  # the dataset's name in the datastore (default: folder name or hub name)
    config: str | None = None
    splits: list[str] = []  # empty: every split
    description: str | None = None  # overrides the card

    @model_validator(mode="after")
    def _one_location(self) -> "SourceParams":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path (a local folder) or hub (a Hugging Face dataset name)")
        return self

    def check_files(self, root: Path, section: str) -> list[str]:
        if self.path is not None and not (root / self.path).is_dir():
            return [f"{section}.path: folder '{self.path}' does not exist; point it at a dataset folder."]
        return []

    @property
    def dataset_name(self) -> str:
        return self.name or (Path(self.path).name if self.path else str(self.hub))


class Params(StageParams):
    """`datastore`: where the datasets are, and how much of each is kept."""

    folder: str | None = None  # every subfolder of this folder is a dataset (relative to params.yaml)
    sources: list[SourceParams] = []
    max_rows_per_dataset: int = Field(default=1000, gt=0)
    max_chars: int = Field(default=2000, gt=0)  # a longer cell value is cut to this many characters

    @model_validator(mode="after")
    def _some_source(self) -> "Params":
        if self.folder is None and not self.sources:
            raise ValueError("name a folder of dataset folders (folder) or list sources")
        return self

    def check_files(self, root: Path, section: str) -> list[str]:
        problems = super().check_files(root, section)
        if self.folder is not None and not (root / self.folder).is_dir():
            problems.append(f"{section}.folder: '{self.folder}' is not a folder; create it or fix the path.")
        return problems


def card_description(text: str) -> str:
    """The first paragraph of a dataset card's body: front matter, headings and blank lines skipped."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if lines:
            return " ".join(ln.strip() for ln in lines)
    return ""


def folder_description(folder: Path) -> str:
    """A local dataset's description: its README.md card, else description.txt, else ''."""
    card, txt = folder / "README.md", folder / "description.txt"
    if card.is_file():
        found = card_description(card.read_text(encoding="utf-8"))
        if found:
            return found
    return txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""


def cell_text(value: Any, feature: Any, max_chars: int) -> str | None:
    """One cell as text: ClassLabel ids as names, lists/mappings as JSON, None/blank as None."""
    from datasets import ClassLabel, Sequence

    if value is None:
        return None
    if isinstance(feature, ClassLabel) and isinstance(value, int):
        value = feature.int2str(value) if value >= 0 else None
    elif (
        isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel) and isinstance(value, list)
    ):
        value = [feature.feature.int2str(v) for v in value]
    if value is None:
        return None
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value).strip()
    return text[:max_chars] if text else None


def label_columns(features: Any) -> list[str]:
    """Columns whose ids are label names (ClassLabel, or a sequence of them)."""
    from datasets import ClassLabel, Sequence

    return [
        k
        for k, f in features.items()
        if isinstance(f, ClassLabel) or (isinstance(f, Sequence) and isinstance(f.feature, ClassLabel))
    ]


def load_source(source: SourceParams, root: Path, cache_dir: str) -> tuple[Any, str]:
    """The dataset's splits (a DatasetDict) and its description."""
    import datasets

    datasets.disable_progress_bars()
    if source.path is not None:
        folder = root / source.path
        if not any(p.suffix in DATA_SUFFIXES for p in folder.rglob("*") if p.name != "README.md"):
            raise SystemExit(f"error: datastore: {folder} holds no jsonl/csv/parquet/txt data file.")
        loaded = datasets.load_dataset(str(folder), source.config, cache_dir=cache_dir)
        description = source.description or folder_description(folder)
    else:
        loaded = datasets.load_dataset(str(source.hub), source.config, cache_dir=cache_dir)
        description = source.description or ""
    if not description:
        first = next(iter(loaded.values()), None)
        description = (first.info.description or "").strip() if first is not None else ""
    return loaded, description


def flatten(
    name: str, config: str, loaded: Any, splits: list[str], max_rows: int, max_chars: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cells of one dataset (its first `max_rows` rows over `splits`, in order) and its summary."""
    names = splits or list(loaded)
    unknown = [s for s in names if s not in loaded]
    if unknown:
        raise SystemExit(
            f"error: datastore: dataset {name} has no split(s) {unknown}; it has {list(loaded)}."
        )
    cells: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"splits": {}, "columns": [], "label_columns": []}
    left = max_rows
    for split in names:
        ds = loaded[split]
        summary["columns"] = list(dict.fromkeys([*summary["columns"], *ds.column_names]))
        summary["label_columns"] = sorted({*summary["label_columns"], *label_columns(ds.features)})
        take = min(left, ds.num_rows)
        summary["splits"][split] = {"rows": ds.num_rows, "kept": take}
        left -= take
        for row_id, row in enumerate(ds.select(range(take))):
            for column, value in row.items():
                text = cell_text(value, ds.features[column], max_chars)
                if text is not None:
                    cells.append(
                        {
                            "dataset": name,
                            "config": config,
                            "split": split,
                            "row_id": row_id,
                            "column": column,
                            "value": text,
                        }
                    )
    summary["rows_kept"] = max_rows - left
    return cells, summary


def sources_of(params: Params, root: Path) -> list[SourceParams]:
    """`sources` plus one source per subfolder of `folder` (sorted by name); names must be unique."""
    found = list(params.sources)
    if params.folder is not None:
        base = root / params.folder
        for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.append(SourceParams(path=str(sub.relative_to(root))))
    names = [s.dataset_name for s in found]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise SystemExit(f"error: datastore: dataset name(s) {dups} occur twice; give one a `name`.")
    if not found:
        raise SystemExit(f"error: datastore: {params.folder} holds no dataset folder.")
    return found


def build(params: Params, root: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Load and flatten every dataset; (cells, datasets summary)."""
    cells: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="datastore-hf-") as cache_dir:
        for source in sources_of(params, root):
            name = source.dataset_name
            loaded, description = load_source(source, root, cache_dir)
            if not description:
                raise SystemExit(
                    f"error: datastore: dataset {name} has no description: add a README.md dataset card or a "
                    "description.txt to its folder, or a `description` in its source entry."
                )
            config = source.config or "default"
            found, summary = flatten(
                name, config, loaded, source.splits, params.max_rows_per_dataset, params.max_chars
            )
            cells += found
            info[name] = {
                "source": source.path or f"hub:{source.hub}",
                "config": config,
                "description": description,
                **summary,
            }
    return pl.DataFrame(cells, schema=CELL_SCHEMA), info


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="datastore")
    parser.add_argument("--out", default="assets/datastore", help="output folder")
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    cells, info = build(params, Path(args.params).parent)
    report = {
        "n_datasets": len(info),
        "n_rows": sum(d["rows_kept"] for d in info.values()),
        "n_cells": cells.height,
        "rows_per_dataset": {k: d["rows_kept"] for k, d in info.items()},
    }
    with atomic_output_dir(args.out) as tmp:
        write_parquet(cells, tmp / "datastore.parquet")
        write_json(tmp / "datasets.json", info)
        write_json(tmp / "report.json", report)
    print(f"datastore: {report['n_datasets']} datasets, {report['n_rows']} rows, {report['n_cells']} cells")


if __name__ == "__main__":
    main()
