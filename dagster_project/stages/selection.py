"""Stage kind `selection`: score every datastore row against a task and keep the best (ReBase's retrieval).

    python -m dagster_project.stages.selection --params params.yaml [--section selection] \\
        --datastore assets/datastore --task data/tasks/qa.yaml --out assets/selected_qa

Reads one params section (`Params`), the datastore (`datastore.parquet` cells, `datasets.json`), the
task card (YAML with `description`) and the task's examples (a table with `input` and `output`). With the
sentence-embedding model (all-MiniLM-L6-v2 bundled), three cosines are computed:

- each cell value vs the task's example inputs (the max over the examples),
- each cell value vs the task's example outputs (the max over the examples),
- the task description vs the dataset's description (one value per dataset).

Per row (dataset, config, split, row_id) the max of each of the first two over its cells, and the third;
the row's score is the mean of the three (`scoring: mean`), or the mean of their ranks scaled to [0, 1]
(`scoring: rank_average`, ties share their average rank). The `top_n` best rows are kept. Datasets named in
`banned` (e.g. the target benchmark) are dropped before scoring and never selected. Writes (atomically):

    selection.parquet  rank, key, dataset, config, split, row_id, score, score_input, score_output,
                       score_description, best_input_column, best_output_column, row (the row's columns
                       as JSON), description
    report.json        what fed the selection: selected rows per dataset and per (dataset, column) that
                       gave the best input/output cosine, banned datasets and their rows, the embedder
"""

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import Field

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    stage_parser,
    write_json,
    write_parquet,
)

ROW_KEYS = ["dataset", "config", "split", "row_id"]


class Params(StageParams):
    """`selection`: the embedder, the scoring, how many rows, and the datasets that are never used."""

    top_n: int = Field(default=3000, gt=0)
    scoring: Literal["mean", "rank_average"] = "mean"
    banned: list[str] = []  # dataset names never selected (the target benchmark, its copies)
    embedding_model: str | None = None  # null: the bundled all-MiniLM-L6-v2
    embedding_backend: Literal["auto", "sentence-transformers", "tfidf"] = "sentence-transformers"
    input_column: str = "input"  # the examples' columns
    output_column: str = "output"


def rank01(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (lowest 0, highest 1); ties share their average rank; one value gets 1."""
    n = len(values)
    if n == 0:
        return values.astype(float)
    if n == 1:
        return np.ones(1)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=float)
    for v in np.unique(values):  # ties: the mean of their ranks
        same = values == v
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    return ranks / (n - 1)


def combine(
    row_input: np.ndarray, row_output: np.ndarray, row_description: np.ndarray, scoring: str = "mean"
) -> np.ndarray:
    """Each row's final score from its three per-row cosines: their mean, or the mean of their ranks."""
    parts = [np.asarray(p, dtype=float) for p in (row_input, row_output, row_description)]
    if scoring == "rank_average":
        parts = [rank01(p) for p in parts]
    elif scoring != "mean":
        raise ValueError(f"unknown scoring {scoring!r}; one of mean, rank_average")
    return np.mean(parts, axis=0)


def row_max(row_of_cell: np.ndarray, cell_values: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the max of its cells' values, and the index of the cell that gave it."""
    best = np.full(n_rows, -np.inf)
    arg = np.full(n_rows, -1)
    for i, (r, v) in enumerate(zip(row_of_cell, cell_values, strict=True)):
        if v > best[r]:
            best[r], arg[r] = v, i
    return best, arg


def max_cosine(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each (L2-normalised) vector of `values`, its max cosine to the rows of `targets`."""
    if len(values) == 0:
        return np.zeros(0)
    return (values @ targets.T).max(axis=1)


def score_cells(
    cells: pl.DataFrame,
    cell_input: np.ndarray,
    cell_output: np.ndarray,
    description_cosine: dict[str, float],
    scoring: str = "mean",
) -> pl.DataFrame:
    """One row per datastore row: its three per-row cosines, the columns that gave the first two, and its
    score (see the module doc). `cells` holds the datastore columns; the arrays are per cell."""
    rows = cells.select(ROW_KEYS).unique(maintain_order=True).with_row_index("_r")
    idx = cells.join(rows, on=ROW_KEYS, how="left", maintain_order="left")["_r"].to_numpy()
    best_in, arg_in = row_max(idx, cell_input, rows.height)
    best_out, arg_out = row_max(idx, cell_output, rows.height)
    desc = np.array([description_cosine[d] for d in rows["dataset"].to_list()], dtype=float)
    columns = cells["column"].to_numpy()
    return rows.drop("_r").with_columns(
        score=pl.Series(combine(best_in, best_out, desc, scoring)),
        score_input=pl.Series(best_in),
        score_output=pl.Series(best_out),
        score_description=pl.Series(desc),
        best_input_column=pl.Series(columns[arg_in].astype(str)),
        best_output_column=pl.Series(columns[arg_out].astype(str)),
    )


def row_json(cells: pl.DataFrame) -> pl.DataFrame:
    """Each row's columns as one JSON object (column -> value, in the datastore's order)."""
    grouped = cells.group_by(ROW_KEYS, maintain_order=True).agg(pl.col("column"), pl.col("value"))
    return grouped.with_columns(
        row=pl.Series(
            [
                json.dumps(dict(zip(c, v, strict=True)), ensure_ascii=False)
                for c, v in zip(grouped["column"].to_list(), grouped["value"].to_list(), strict=True)
            ],
            dtype=pl.String,
        )
    ).select([*ROW_KEYS, "row"])


def select(
    cells: pl.DataFrame,
    datasets: dict[str, Any],
    description: str,
    examples: pl.DataFrame,
    params: Params,
    embedder: Any,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The selected rows (best first) and the report; see the module doc."""
    banned = set(params.banned)
    unknown = sorted(banned - set(datasets))
    banned_rows = {d: datasets[d]["rows_kept"] for d in sorted(banned & set(datasets))}
    cells = cells.filter(~pl.col("dataset").is_in(sorted(banned)))
    if cells.height == 0:
        raise SystemExit("error: selection: no datastore cell is left once the banned datasets are dropped.")
    for col in (params.input_column, params.output_column):
        if col not in examples.columns:
            raise SystemExit(
                f"error: selection: the examples have no column {col!r}; columns: {examples.columns}"
            )
    texts = cells["value"].to_list()
    unique = list(dict.fromkeys(texts))
    vectors = embedder.encode(unique)
    position = {t: i for i, t in enumerate(unique)}
    cell_vectors = vectors[[position[t] for t in texts]]
    ex_in = embedder.encode([str(v) for v in examples[params.input_column].to_list()])
    ex_out = embedder.encode([str(v) for v in examples[params.output_column].to_list()])
    names = sorted(set(cells["dataset"].to_list()))
    desc_vecs = embedder.encode([description] + [datasets[n]["description"] for n in names])
    desc_cos = {n: float(desc_vecs[0] @ desc_vecs[i + 1]) for i, n in enumerate(names)}

    scored = score_cells(
        cells, max_cosine(cell_vectors, ex_in), max_cosine(cell_vectors, ex_out), desc_cos, params.scoring
    )
    top = (
        scored.sort(["score", *ROW_KEYS], descending=[True, False, False, False, False])
        .head(params.top_n)
        .with_row_index("rank", offset=1)
        .join(row_json(cells), on=ROW_KEYS, how="left", maintain_order="left")
    )
    top = top.with_columns(
        key=pl.concat_str([pl.col(c).cast(pl.String) for c in ROW_KEYS], separator="/"),
        description=pl.col("dataset").replace_strict(
            {n: datasets[n]["description"] for n in names}, return_dtype=pl.String
        ),
    )
    top = top.select(
        "rank",
        "key",
        *ROW_KEYS,
        "score",
        "score_input",
        "score_output",
        "score_description",
        "best_input_column",
        "best_output_column",
        "row",
        "description",
    )
    per_dataset = dict(top.group_by("dataset").len().sort("dataset").iter_rows())

    def column_counts(col: str) -> dict[str, int]:
        counts = top.group_by("dataset", col).len().sort("dataset", col)
        return {f"{d}.{c}": n for d, c, n in counts.iter_rows()}

    report = {
        "n_rows_scored": scored.height,
        "n_selected": top.height,
        "top_n": params.top_n,
        "scoring": params.scoring,
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "selected_per_dataset": {n: per_dataset.get(n, 0) for n in names},
        "scored_per_dataset": dict(scored.group_by("dataset").len().sort("dataset").iter_rows()),
        "best_input_column": column_counts("best_input_column"),
        "best_output_column": column_counts("best_output_column"),
        "description_cosine": {n: round(v, 4) for n, v in desc_cos.items()},
        "banned": {"datasets": banned_rows, "not_in_datastore": unknown},
        "score_min_selected": float(top["score"].min()) if top.height else None,
    }
    return top, report


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    from dagster_project.metrics.diversity import resolve_embedder

    parser = stage_parser(__doc__.splitlines()[0], kind="selection")
    parser.add_argument("--datastore", required=True, help="a datastore stage's output folder")
    parser.add_argument("--task", required=True, help="the task card (YAML with a description)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    store = Path(args.datastore)
    cells = pl.read_parquet(store / "datastore.parquet")
    datasets = json.loads((store / "datasets.json").read_text(encoding="utf-8"))
    card = yaml.safe_load(Path(args.task).read_text(encoding="utf-8")) or {}
    if not isinstance(card, dict) or not str(card.get("description") or "").strip():
        raise SystemExit(f"error: selection: {args.task} has no `description`; the task card needs one.")
    if not isinstance(card.get("examples"), list) or not card["examples"]:
        raise SystemExit(f"error: selection: {args.task} has no `examples` (a list of {{input, output}}).")
    examples = pl.DataFrame([{k: str(v) for k, v in ex.items()} for ex in card["examples"]])
    embedder = resolve_embedder(params.embedding_model, params.embedding_backend)
    top, report = select(cells, datasets, str(card["description"]), examples, params, embedder)
    with atomic_output_dir(args.out) as tmp:
        write_parquet(top, tmp / "selection.parquet")
        write_json(tmp / "report.json", report)
    print(
        f"selection: {report['n_selected']} of {report['n_rows_scored']} rows; per dataset "
        f"{report['selected_per_dataset']}; banned {report['banned']['datasets']}"
    )


if __name__ == "__main__":
    main()
