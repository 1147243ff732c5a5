"""Stage kind `teacher_filter`: the teacher answers a yes/no question about every row; "no" rows are removed.

    python -m dagster_project.stages.teacher_filter --params params.yaml [--section teacher_filter] \\
        --input assets/synthesized/examples.parquet --out assets/filtered

Reads one params section (`Params`) and a table (parquet/jsonl). Each row is rendered into the prompt
(`variables`: prompt variable -> column; `constants`; `files`: YAML/JSON files given whole, e.g. the task
card) and sent through the teacher primitive (cache, retries, schema validation; temperature 0 by
default). The answer's `verdict_field` says yes or no (case-insensitive; "true"/"false" count too), its
`reason_field` why. Writes into the output folder (atomically):

    examples.parquet  the kept rows (every input column) plus `verdict` (yes / no / unrated) and
                      `verdict_reason`: the verdict is a column, so the kept set shows what was asked
    rejects.parquet   the removed rows: every input column, `verdict`, `verdict_reason`, and `reason`
                      ("filter_no", or "filter_unrated" when `keep_unrated` is false)
    stats.json        n_in, n_kept, n_removed, n_unrated, kept_share, verdict counts, the engine's
                      requests and rejects, and JSON repairs

The engine's run facts (calls, cache hits, retries, tokens, cost, wall time) go to
`<out's parent>/.runs/<out's name>.json` (git-ignored, not a DVC output), never into `stats.json`.

A row the teacher could not judge (every sample rejected) is kept by default and counted as unrated.
``--dry-run`` prints how many requests would miss the cache, their estimated tokens and worst-case cost,
and sends and writes nothing.
"""

import json
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field

from dagster_project.params_schema import DataFile, PromptFile, StageParams, gold_checks_before_spending
from dagster_project.stages.common import (
    atomic_output_dir,
    data_facts,
    exit_on_teacher_error,
    load_stage_params,
    print_dry_run,
    prompt_constants,
    stage_parser,
    write_json,
    write_parquet,
)
from dagster_project.synthesis.shots import read_table

YES = {"yes", "true", "y", "1"}
NO = {"no", "false", "n", "0"}
ROW = "_filter_row"


class Params(StageParams):
    """`teacher_filter`: the yes/no prompt, the teacher, what the rows fill in, and unrated rows."""

    prompt: PromptFile
    teacher_model: str = "offline-teacher"
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int = 0
    max_attempts: int = Field(default=2, ge=1)
    variables: dict[str, str] = {}  # prompt variable -> input column
    constants: dict[str, Any] = {}
    files: dict[str, DataFile] = {}  # prompt variable -> a YAML/JSON file whose parsed content it takes
    verdict_field: str = "verdict"
    reason_field: str = "reason"
    keep_unrated: bool = True


def verdict_of(value: Any) -> str:
    """'yes', 'no' or 'unrated' for an answer's verdict field."""
    text = str(value).strip().lower() if value is not None else ""
    return "yes" if text in YES else ("no" if text in NO else "unrated")


def requests_for(df: pl.DataFrame, params: Params, root: Path) -> tuple[Any, list[Any]]:
    """The prompt and one request per row (row index carried as `_filter_row`)."""
    from dagster_project.teacher.mapping import build_requests
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(root / params.prompt)
    missing = sorted(set(params.variables.values()) - set(df.columns))
    if missing:
        raise SystemExit(
            f"error: teacher_filter: the input has no column(s) {missing}; its columns: {df.columns}"
        )
    constants = prompt_constants("teacher_filter", params.constants, params.files, root)
    rows = df.select(sorted(set(params.variables.values()))).with_row_index(ROW).to_dicts()
    requests = build_requests(
        prompt,
        rows,
        model=params.teacher_model,
        variables=params.variables,
        constants=constants,
        temperature=params.temperature,
        seed=params.seed,
    )
    return prompt, requests


def judge(
    df: pl.DataFrame, params: Params, root: Path, engine: Any = None
) -> tuple[list[str], list[str], dict[str, Any]]:
    """Each row's verdict and reason, and the engine's counters (with JSON repairs)."""
    from dagster_project.teacher.engine import TeacherEngine
    from dagster_project.teacher.mapping import map_prompt

    prompt, requests = requests_for(df, params, root)
    own = engine is None
    engine = engine or TeacherEngine(max_attempts=params.max_attempts)
    try:
        result = map_prompt(engine, prompt, requests, carry={ROW: ROW})
    finally:
        if own:
            engine.close()
    verdicts, reasons = ["unrated"] * df.height, [""] * df.height
    for row in result.rows:
        verdicts[row[ROW]] = verdict_of(row.get(params.verdict_field))
        reasons[row[ROW]] = str(row.get(params.reason_field) or "")
    for rej in result.rejects:  # rows whose every sample was rejected: why, for the unrated ones
        i = rej.get(ROW)
        if i is not None and verdicts[i] == "unrated" and not reasons[i]:
            reasons[i] = f"unrated: {rej['reason']}"
    counters = {
        **engine.counters.as_dict(),
        "backend": engine.backend_kind,
        "json_repairs": result.json_repairs,
    }
    return verdicts, reasons, counters


def apply_filter(
    df: pl.DataFrame, verdicts: list[str], reasons: list[str], keep_unrated: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, removed rows) with the verdict and its reason as columns; removed rows get a `reason`."""
    judged = df.with_columns(
        verdict=pl.Series(verdicts, dtype=pl.String), verdict_reason=pl.Series(reasons, dtype=pl.String)
    )
    keep = pl.col("verdict") == "yes"
    if keep_unrated:
        keep = keep | (pl.col("verdict") == "unrated")
    kept = judged.filter(keep)
    removed = judged.filter(~keep).with_columns(
        reason=pl.when(pl.col("verdict") == "no")
        .then(pl.lit("filter_no"))
        .otherwise(pl.lit("filter_unrated"))
    )
    return kept, removed


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="teacher_filter")
    parser.add_argument("--input", required=True, help="the table to filter (parquet/jsonl)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="estimate calls, tokens and cost; send and write nothing"
    )
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    gold_checks_before_spending(args.params)  # a bare `dvc repro` fails here, before teacher calls
    df = read_table(Path(args.input))
    if df.height == 0:
        raise SystemExit(f"error: {args.section}: {args.input} has no rows to judge.")
    if args.dry_run:
        from dagster_project.teacher.engine import TeacherEngine

        _, requests = requests_for(df, params, Path(args.params).parent)
        with TeacherEngine(max_attempts=params.max_attempts) as engine:
            print_dry_run(args.section, engine, requests)
        return
    with exit_on_teacher_error(args.section, "rerun to resume from the cache."):
        verdicts, reasons, counters = judge(df, params, Path(args.params).parent)
    kept, removed = apply_filter(df, verdicts, reasons, params.keep_unrated)
    counts = {v: verdicts.count(v) for v in ("yes", "no", "unrated")}
    stats = {
        "n_in": df.height,
        "n_kept": kept.height,
        "n_removed": removed.height,
        "n_unrated": counts["unrated"],
        "kept_share": kept.height / df.height,
        "verdicts": counts,
        "removed_reasons": dict(
            removed.group_by("verdict_reason")
            .len()
            .sort(["len", "verdict_reason"], descending=[True, False])
            .head(10)
            .iter_rows()
        ),
        "teacher": counters,
    }
    with atomic_output_dir(args.out) as tmp:
        write_parquet(kept, tmp / "examples.parquet")
        write_parquet(removed, tmp / "rejects.parquet")
        write_json(tmp / "stats.json", data_facts(stats, args.out, "stats.json"))
    print(
        f"{args.section}: {df.height} rows -> {kept.height} kept, {removed.height} removed "
        f"({json.dumps(counts)})"
    )


if __name__ == "__main__":
    main()
