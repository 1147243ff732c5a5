"""Stage kind `synthesize`: the teacher maps a prompt over the rows of a table into new rows.

    python -m dagster_project.stages.synthesize --params params.yaml [--section synthesize] \
        --input assets/corpus/grounding.parquet --out assets/synthesized

Reads one params section (`Params` below). Input: a parquet or JSONL table. Each input row (or, with
`distinct`, the first row of each distinct combination of those columns) is rendered into the prompt:
`variables` maps prompt variables to columns, `constants` are fixed values, `files` are YAML/JSON files
given whole to the prompt (e.g. label descriptions), and `shots` draws in-context examples from another
table. `samples` requests go out per row (seeds `seed`, `seed+1000`, ...). Every
request runs through the teacher engine (cache, retries, schema validation); answers become rows by the
prompt file's `output` block (explode, declared checks: see teacher/prompts.py). Writes `<out>/`:

- `examples.parquet`: id, the `carry` columns, the answer's fields, teacher_model, request_id
  (`id` = sha256 of the `id_columns` values, shortened; rows with a repeated id are rejects)
- `rejects.parquet`: request_id, the carried id columns, attempt, reason, raw (every rejected sample or row)
`--shard i/N` (0 <= i < N) keeps only the requests of input rows i, i+N, i+2N, ... (after `distinct` and
`limit`): N shards, each its own stage (a `foreach` in dvc.yaml), together send exactly the requests of one
unsharded run, and the dedup stage merges their outputs. Shards share the teacher cache safely: each
process appends to its own cache file.

- `stats.json`: what the run produced: backend, requests, engine rejects by reason, n_requests, n_examples,
  n_rejects, rejects_by_reason and json_repairs (accepted answers whose JSON needed a repair: fences,
  prose, trailing commas)

The run facts - the engine's calls, cache hits, retries and their reasons, 429s, pause time, tokens in/out,
wall time and estimated cost in USD per model, which depend on what the cache held - go to
`<out's parent>/.runs/<out's name>.json` (git-ignored, not a DVC output; `read_run_facts` in
stages/common.py), so an unchanged rebuild writes the same `stats.json`.

A run that yields no example at all fails (exit 5) naming the reject reasons: an empty table is never a
successful build. ``--dry-run`` renders every request and prints (JSON) how many would miss the cache and
their estimated tokens and cost, sends nothing and writes nothing. With ``DISTILL_TEACHER_BUDGET_USD`` set,
a run that would pass the budget stops sending, keeps every finished response in the teacher cache and
exits 3; an endpoint that stays down exits 4 and writes nothing (a rerun resumes from the cache).

The teacher cache (``.cache/teacher/``) is deliberately neither a dependency nor an output of this stage:
it only grows, and a bigger cache must not invalidate anything. What the stage produces is fixed by its
declared deps and params; the cache only decides how many calls a run costs.
"""

import argparse
import hashlib
import json
import sys
from collections import Counter
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
    run_main,
    stage_parser,
    write_json,
    write_parquet,
)
from dagster_project.synthesis.shots import ShotSampler, read_table
from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.mapping import build_requests, map_prompt
from dagster_project.teacher.prompts import Prompt, PromptError, load_prompt


class ShotsParams(StageParams):
    """In-context examples for each request, drawn (seeded) from a table."""

    file: str  # parquet or JSONL; may be an upstream stage's output, so it is checked when the stage runs
    k: int = Field(default=3, ge=0)
    columns: list[str] = Field(min_length=1)  # the columns each example carries into the prompt
    variable: str = "examples"  # the prompt variable that receives the list of examples
    match: dict[str, str] = {}  # input column -> shots column that must be equal (e.g. the label)
    exclude: dict[str, str] = {}  # input column -> shots column that must differ (e.g. the seed's own id)


class Params(StageParams):
    """`synthesize`: the prompt over the input rows, the teacher and its sampling, and the output rows."""

    prompt: PromptFile
    teacher_model: str = "offline-teacher"
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int = 0
    max_attempts: int = Field(default=3, ge=1)
    samples: int = Field(default=1, ge=1)  # requests per input row
    seed_by: list[str] = []  # columns that give each row its own seed (rows rendering the same prompt)
    variables: dict[str, str] = {}  # prompt variable -> input column
    constants: dict[str, Any] = {}  # prompt variable -> fixed value
    files: dict[str, DataFile] = {}  # prompt variable -> a YAML/JSON file whose parsed content it takes
    distinct: list[str] = []  # render once per distinct combination of these columns (first row wins)
    carry: dict[str, str] = {}  # output column -> input column copied into every row made from it
    defaults: dict[str, Any] = {}  # input column -> the value of rows where it is null or absent
    id_columns: list[str] = Field(min_length=1)  # output columns hashed into each row's id
    shots: ShotsParams | None = None
    limit: int | None = Field(default=None, gt=0)  # use only the first N input rows (trying things out)


def example_id(values: list[Any]) -> str:
    """A stable id for one example: sha256 of its id columns' values, shortened."""
    return hashlib.sha256("\x1f".join(str(v) for v in values).encode()).hexdigest()[:16]


def where_row(path: Path, index: int) -> str:
    """`path:line` of a table's row (JSON lines: blank lines skipped; CSV: after the header), else `row N`."""
    if path.suffix in (".jsonl", ".json"):
        lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        return f"{path}:{lines[index]}" if index < len(lines) else f"{path}: row {index + 1}"
    if path.suffix == ".csv":
        return f"{path}:{index + 2}"
    return f"{path}: row {index + 1}"


def input_rows(path: Path, params: Params) -> pl.DataFrame:
    """The rows to render: the input table, one row per distinct combination if asked, maybe capped.

    Every input column the params name must exist, and there must be rows: an empty input is an error,
    never an empty output built "successfully".
    """
    df = read_table(path)
    for column, value in params.defaults.items():  # a column with a default may be absent or null
        filled = pl.lit(value) if column not in df.columns else pl.col(column).fill_null(pl.lit(value))
        df = df.with_columns(filled.alias(column))
    named = {*params.variables.values(), *params.carry.values(), *params.distinct, *params.seed_by}
    if params.shots is not None:
        named |= {*params.shots.match, *params.shots.exclude}
    missing = sorted(named - set(df.columns))
    if missing:
        raise SystemExit(
            f"error: synthesize: {path} has no column(s) {missing}; its columns: {df.columns}. Fix the "
            "section's variables/carry/distinct/seed_by/shots."
        )
    for column in sorted(set(params.variables.values())):
        nulls = df.with_row_index("_i").filter(pl.col(column).is_null())["_i"]
        if len(nulls):
            raise SystemExit(
                f"error: synthesize: {where_row(path, nulls[0])} has no value for {column!r} ({len(nulls)} "
                f"row(s) without one); fill it in, or give it a value for such rows with {column}: ... "
                "under the section's defaults"
            )
    if params.distinct:
        df = df.unique(subset=params.distinct, keep="first", maintain_order=True)
    df = df.head(params.limit) if params.limit else df
    if df.height == 0:
        raise SystemExit(f"error: synthesize: {path} has no rows to render (an upstream stage kept none).")
    return df


def answer_fields(prompt: Prompt) -> dict[str, Any]:
    """The answer's row fields and their polars types, in the output schema's order."""
    schema = prompt.output_schema
    if prompt.output.explode:
        schema = schema.get("properties", {}).get(prompt.output.explode, {}).get("items", {})
    types = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64, "boolean": pl.Boolean}
    fields = {}
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(kind, list):  # e.g. [string, "null"]: the first non-null type
            kind = next((k for k in kind if k != "null"), None)
        fields[name] = types.get(kind, pl.String)
    return fields


def output_frames(
    rows: list[dict], rejects: list[dict], params: Params, prompt: Prompt, inputs: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """examples and rejects as tables with fixed schemas (also when empty); repeated ids become rejects.

    A reject keeps the carried columns that are id columns (e.g. passage_id), enough to trace its input.
    """
    # A nested input column (list, struct) is carried as JSON text, which every later stage can compare.
    nested = {out for out, col in params.carry.items() if inputs.schema[col].is_nested()}
    carried = {out: pl.String if out in nested else inputs.schema[col] for out, col in params.carry.items()}
    traced = {k: t for k, t in carried.items() if k in params.id_columns}
    fields = {k: v for k, v in answer_fields(prompt).items() if k not in carried}
    unknown = [c for c in params.id_columns if c not in carried and c not in fields]
    if unknown:
        raise SystemExit(
            f"error: synthesize: id_columns {unknown} are neither carried columns {sorted(carried)} nor "
            f"answer fields {sorted(fields)} of {prompt.path}."
        )
    schema = {"id": pl.String, **carried, **fields, "teacher_model": pl.String, "request_id": pl.String}
    seen: set[str] = set()
    examples = []
    for row in rows:
        ex_id = example_id([row.get(c) for c in params.id_columns])
        if ex_id in seen:
            raw = json.dumps({k: row.get(k) for k in fields}, ensure_ascii=False)
            reject = {"request_id": row["request_id"], "attempt": 0, "reason": "duplicate_id", "raw": raw}
            rejects.append({**{k: _as_type(row.get(k), t) for k, t in traced.items()}, **reject})
            continue
        seen.add(ex_id)
        values = {k: _as_type(row.get(k), t) for k, t in fields.items()}
        examples.append(
            {
                "id": ex_id,
                **{k: _as_type(row.get(k), t) for k, t in carried.items()},
                **values,
                "teacher_model": params.teacher_model,
                "request_id": row["request_id"],
            }
        )
    reject_schema = {"request_id": pl.String, **traced, "attempt": pl.Int64, "reason": pl.String}
    reject_schema["raw"] = pl.String
    rejects = [{k: _as_type(r.get(k), t) for k, t in reject_schema.items()} for r in rejects]
    return pl.DataFrame(examples, schema=schema), pl.DataFrame(rejects, schema=reject_schema)


def _as_type(value: Any, dtype: Any) -> Any:
    """A string column holds strings: a structured value the schema did not type is kept as JSON."""
    if dtype == pl.String and value is not None and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value


def shard_spec(text: str) -> tuple[int, int]:
    """`i/N` -> (i, N), with 0 <= i < N (argparse type of --shard)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not i/N (e.g. 0/4: the first of four shards)"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N, the number of shards, must be at least 1")
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r}: the shard index must be 0..{count - 1} (0-based)")
    return index, count


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="synthesize")
    parser.add_argument("--input", required=True, help="the table whose rows are rendered (parquet/jsonl)")
    parser.add_argument("--out", default="assets/synthesized", help="output folder")
    parser.add_argument(
        "--dry-run", action="store_true", help="estimate calls, tokens and cost; send and write nothing"
    )
    parser.add_argument(
        "--shard", type=shard_spec, default=None, help="i/N: only input rows i, i+N, ... (0-based)"
    )
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent
    gold_checks_before_spending(args.params)  # a bare `dvc repro` fails here, before teacher calls
    prompt = load_prompt(root / params.prompt)

    inputs = input_rows(Path(args.input), params)
    rows = inputs.to_dicts()
    sampler, extra = None, None
    if params.shots is not None:
        s = params.shots
        sampler = ShotSampler(read_table(root / s.file), s.k, s.columns, s.match, s.exclude, params.seed)

        def extra(i: int, sample: int) -> dict[str, Any]:
            key = json.dumps(rows[i], sort_keys=True, default=str) + f"\x1f{sample}"
            return {s.variable: sampler.draw(rows[i], key)}

    constants = prompt_constants(args.section, params.constants, params.files, root)
    try:
        requests = build_requests(
            prompt,
            rows,
            model=params.teacher_model,
            variables=params.variables,
            constants=constants,
            temperature=params.temperature,
            seed=params.seed,
            samples=params.samples,
            sampling={"top_p": params.top_p} if params.top_p is not None else None,
            extra_variables=extra,
            seed_by=params.seed_by,
        )
    except PromptError as exc:  # e.g. a label the label file does not describe
        raise SystemExit(f"error: {args.section}: cannot render {params.prompt}: {exc}") from None
    if args.shard is not None:
        # Filtered after rendering, so each request is exactly the unsharded run's (seeds, shots).
        index, count = args.shard
        requests = [r for j, r in enumerate(requests) if (j // params.samples) % count == index]
        if not requests:
            raise SystemExit(
                f"error: {args.section}: shard {index}/{count} has no input rows ({len(rows)} rows in "
                f"{args.input}): use at most {len(rows)} shards"
            )

    with TeacherEngine(max_attempts=params.max_attempts) as engine:
        if args.dry_run:
            print_dry_run(args.section, engine, requests)
            return
        with exit_on_teacher_error(
            args.section,
            "every answer received is cached - check the endpoint (DISTILL_TEACHER_BASE_URL) and rerun "
            "to resume.",
        ):
            result = map_prompt(engine, prompt, requests, carry=params.carry)

    examples, rejects = output_frames(result.rows, result.rejects, params, prompt, inputs)
    if examples.height == 0:
        reasons = Counter(rejects["reason"].to_list()).most_common(5)
        print(
            f"{args.section}: error: {len(requests)} requests gave no example; reject reasons: {reasons}. "
            "Nothing written. Check the prompt, its output checks and the teacher (every answer is cached); "
            "for malformed JSON answers try DISTILL_TEACHER_STRUCTURED_OUTPUT=1 (the endpoint must support "
            "json_schema).",
            file=sys.stderr,
        )
        raise SystemExit(5)
    stats = {
        **engine.counters.as_dict(),
        "backend": engine.backend_kind,
        "n_requests": len(requests),
        **({"shard": f"{args.shard[0]}/{args.shard[1]}"} if args.shard else {}),
        "n_examples": examples.height,
        "n_rejects": rejects.height,
        # every reject row of rejects.parquet by reason (engine rejects and pair-level ones alike)
        "rejects_by_reason": dict(
            sorted(Counter(r.split(":", 1)[0] for r in rejects["reason"].to_list()).items())
        ),
        "json_repairs": result.json_repairs,  # accepted answers whose JSON the lenient parser repaired
        **({"shots_per_request": dict(sorted(sampler.counts.items()))} if sampler else {}),
    }
    with atomic_output_dir(args.out) as tmp:
        write_parquet(examples, tmp / "examples.parquet")
        write_parquet(rejects, tmp / "rejects.parquet")
        write_json(tmp / "stats.json", data_facts(stats, args.out, "stats.json"))
    print(
        f"{args.section}: {len(requests)} requests -> {examples.height} examples, {rejects.height} rejects "
        f"({engine.counters.calls} teacher calls, {engine.counters.cache_hits} cache hits)"
    )


if __name__ == "__main__":
    run_main(main)
