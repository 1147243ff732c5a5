"""Stage kind `generate`: a trained student answers every row of a table, in the format it was trained in.

    python -m dagster_project.stages.generate --params params.yaml [--section generate] \\
        --student assets/student --input data/heldout.jsonl --out assets/generated

The student's prompt template (its `prompt_format.json`) is rendered over each input row; its columns
are checked before the model loads. Decoding stops at end-of-text or a newline; it is greedy by default
(`temperature: 0`), or samples `num_candidates` answers per row with `temperature`, `top_p` and `seed`
(batches of `batch_size` rows; on a GPU when there is one). Writes into `--out`, atomically:

- `predictions.parquet`: the input's columns plus `output_column` (the student's text); when sampling
  several candidates, one row per candidate, numbered in `candidate_column` (0, 1, ...);
- `stats.json`: rows, empty answers, mean answer words, distinct answers per row, the student folder, the
  generation settings.

Unlike `evaluate`, no gold answer is needed: the outputs go on to a judge, a comparison or a critic.
"""

from pathlib import Path

import polars as pl
from pydantic import Field, model_validator

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_parquet,
)
from dagster_project.student.prompt_format import PromptFormat, check_student_prompt_columns
from dagster_project.synthesis.shots import read_table


class Params(StageParams):
    """`generate`: what the student's answers are called, and how they are decoded."""

    output_column: str = "prediction"
    max_new_tokens: int = Field(default=48, gt=0)
    batch_size: int = Field(default=32, gt=0)
    limit: int | None = Field(default=None, gt=0)  # answer only the first N rows (trying things out)
    temperature: float = Field(default=0.0, ge=0, le=5)  # 0: greedy; > 0: sampled
    top_p: float = Field(default=1.0, gt=0, le=1)  # nucleus sampling (temperature > 0 only)
    num_candidates: int = Field(default=1, gt=0)  # answers per row (more than one needs temperature > 0)
    seed: int = 0  # seeds sampling: the same seed, batch size and device give the same candidates
    candidate_column: str = "candidate"  # the candidate's number, with num_candidates > 1

    @model_validator(mode="after")
    def _several_candidates_need_sampling(self) -> "Params":
        if self.num_candidates > 1 and self.temperature == 0:
            raise ValueError(
                f"num_candidates is {self.num_candidates} but temperature is 0 (greedy decoding gives the "
                "same answer every time): set temperature > 0 (e.g. 1.0), or num_candidates: 1"
            )
        return self


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
    for key in ("output_column", "candidate_column"):
        column = getattr(params, key)
        if column in rows.columns and (key == "output_column" or params.num_candidates > 1):
            raise SystemExit(
                f"error: generate: {args.input} already has a column {column!r}; set "
                f"{args.section}.{key} to a new name."
            )
    prompt_format = PromptFormat.load(args.student)
    check_student_prompt_columns(prompt_format, args.student, rows.columns, str(args.input))

    # Torch and transformers load only now: validating params and columns stays light.
    from dagster_project.evaluation.generate import generate_answers, load_student, sample_answers

    model, tokenizer = load_student(args.student)
    settings = (params.max_new_tokens, params.batch_size, prompt_format)
    if params.temperature == 0:
        per_row = [[a] for a in generate_answers(model, tokenizer, rows.to_dicts(), *settings)]
    else:
        per_row = sample_answers(
            model,
            tokenizer,
            rows.to_dicts(),
            *settings,
            n=params.num_candidates,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
        )
    answers = [a for row in per_row for a in row]
    if params.num_candidates == 1:
        out_df = rows.with_columns(pl.Series(params.output_column, answers, dtype=pl.String))
    else:  # one row per candidate: the input row repeated, the candidate's number beside its text
        repeated = rows.select(pl.all().repeat_by(params.num_candidates).explode())
        out_df = repeated.with_columns(
            pl.Series(params.candidate_column, list(range(params.num_candidates)) * rows.height),
            pl.Series(params.output_column, answers, dtype=pl.String),
        )
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
                "input_rows": rows.height,
                "num_candidates": params.num_candidates,
                "distinct_per_row": sum(len(set(r)) for r in per_row) / len(per_row),
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
            },
        )
    print(
        f"generate: the student answered {rows.height} rows with {len(answers)} answers "
        f"({sum(not a for a in answers)} empty) -> {args.out}"
    )


if __name__ == "__main__":
    run_main(main)
