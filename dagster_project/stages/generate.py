"""Stage kind `generate`: a trained student answers every row of a table, in the format it was trained in.

    python -m dagster_project.stages.generate --params params.yaml [--section generate] \\
        --student assets/student --input data/heldout.jsonl --out assets/generated

The student's prompt template (its `prompt_format.json`) is rendered over each input row; its columns
are checked before the model loads. Decoding is greedy and stops at end-of-text or a newline. Writes into
`--out`, atomically:

- `predictions.parquet`: the input's columns plus `output_column` (the student's text);
- `stats.json`: rows, empty answers, mean answer words, the student folder, the generation settings.

Unlike `evaluate`, no gold answer is needed: the outputs go on to a judge, a comparison or a critic.
"""

from pathlib import Path

import polars as pl
from pydantic import Field

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_parquet,
)
from dagster_project.student.prompt_format import PromptFormat, PromptFormatError
from dagster_project.synthesis.shots import read_table


class Params(StageParams):
    """`generate`: what the student's answers are called, and how they are decoded."""

    output_column: str = "prediction"
    max_new_tokens: int = Field(default=48, gt=0)
    batch_size: int = Field(default=32, gt=0)
    limit: int | None = Field(default=None, gt=0)  # answer only the first N rows (trying things out)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0], kind="generate")
    parser.add_argument("--student", required=True, help="the trained student's folder")
    parser.add_argument("--input", required=True, help="the rows to answer (parquet or JSON lines)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)

    rows = read_table(Path(args.input))
    rows = rows.head(params.limit) if params.limit else rows
    if rows.height == 0:
        raise SystemExit(f"error: generate: {args.input} has no rows; the student has nothing to answer.")
    if params.output_column in rows.columns:
        raise SystemExit(
            f"error: generate: {args.input} already has a column {params.output_column!r}; set "
            f"{args.section}.output_column to a new name."
        )
    prompt_format = PromptFormat.load(args.student)
    try:
        prompt_format.check_columns(rows.columns, str(args.input), templates=("prompt",))
    except PromptFormatError as exc:
        raise SystemExit(f"error: the student's format ({args.student}/prompt_format.json): {exc}") from None

    # Torch and transformers load only now: validating params and columns stays light.
    from dagster_project.evaluation.generate import generate_answers, load_student

    model, tokenizer = load_student(args.student)
    answers = generate_answers(
        model, tokenizer, rows.to_dicts(), params.max_new_tokens, params.batch_size, prompt_format
    )
    out_df = rows.with_columns(pl.Series(params.output_column, answers, dtype=pl.String))
    words = [len(a.split()) for a in answers]
    with atomic_output_dir(args.out) as tmp:
        write_parquet(out_df, tmp / "predictions.parquet")
        write_json(
            tmp / "stats.json",
            {
                "rows": len(answers),
                "empty_answers": sum(1 for a in answers if not a),
                "mean_answer_words": sum(words) / len(words),
                "student": str(args.student),
                "max_new_tokens": params.max_new_tokens,
            },
        )
    print(
        f"generate: the student answered {len(answers)} rows "
        f"({sum(not a for a in answers)} empty) -> {args.out}"
    )


if __name__ == "__main__":
    run_main(main)
