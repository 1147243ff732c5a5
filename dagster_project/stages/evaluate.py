"""Stage `evaluate`: the student vs a trivial baseline (and optionally the teacher) on a held-out gold set.

Reads its params section (`--section`, default `evaluate`), the checkpoint in `--student` (with its
prompt_format.json, the format it was trained in, and its train_log.json for the loss curve), the
training split in `--data` (baseline and diversity figures) and the gold test set (`evaluate.gold_test`,
JSON lines with named columns). `evaluate.task` picks the task kind (`dagster_project/evaluation/tasks.py`):
qa (offline default) | multi_turn_qa | classification | free_text (teacher-as-judge).
Writes into `--out`, each file atomically:

- `metrics.json` (DVC metrics, the headline only, so `dvc metrics show/diff` stay readable): {"task",
  "n_test", "student": {...}, "baseline": {...}, ["teacher"], "diversity", ...}; for qa
  `student.exact_match` / `student.token_f1`, for classification `student.accuracy` / `student.macro_f1`
- `breakdown.json` (not a DVC metric): {"task", "n_test", "per_category": {category: {"n", system: {...}}},
  ["details": {system: {...}}]} -- the per-category means and the task's details (classification:
  per-class figures and the confusion matrix)
- `report.md` and `report.html` (self-contained, inline SVG charts): headline, per category, confusion
  matrix (classification), training loss, diversity of the training data, the 10 best and worst answers
- `predictions.parquet`: id, turn, category, the item's input (question; classification: text), answer
  (the reference), prediction, baseline_prediction, [teacher_prediction], score and the task's figures
- `plots/*.csv`: DVC plot data (headline, per_category, confusion, train_loss)

The student answers by greedy decoding (batched, left-padded, KV cache) in the prompt format it was
trained in, rendered over the gold row's columns (checked before the model loads), stopping at
end-of-text or a newline. The baseline answers every item with the most frequent completion of the
training split (its completion template over train.parquet: the `answer`, or e.g. the `label` column).
With `evaluate.teacher_reference` the teacher answers the same items through the teacher engine (cached)
with `evaluate.reference_prompt`. With `evaluate.zero_shot` (default) the base model the student was
fine-tuned from (`base_model` in its train_log.json) answers them too, in the same format, before any
fine-tuning. metrics.json's `headline` puts the three on one line: zero-shot, student, teacher (the
task's first headline figure) and the ratio student / teacher.
"""

import json
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from dagster_project.evaluation.diversity import diversity_figures, load_texts
from dagster_project.evaluation.gold import most_frequent_completion
from dagster_project.evaluation.gold_schema import GoldError, check_gold_file, read_gold
from dagster_project.evaluation.report import (
    headline_line,
    plot_files,
    render_report,
    systems_of,
    three_numbers,
    write_outputs,
)
from dagster_project.evaluation.scoring import score_systems
from dagster_project.evaluation.tasks import TASKS, FreeText, task_class
from dagster_project.evaluation.teacher import teacher_answers, teacher_judge
from dagster_project.params_schema import DataFile, FileRef, StageParams, _check_file
from dagster_project.stages.common import load_stage_params, run_main, stage_parser
from dagster_project.student.prompt_format import PromptFormat, check_student_prompt_columns


class DiversityParams(StageParams):
    max_texts: int = Field(default=2000, gt=1)  # seeded sample of training texts for self-BLEU and cosine
    embedding: Literal["auto", "tfidf", "sentence-transformers"] = "auto"
    embedding_model: str | None = None  # a sentence-transformers name/path; null: the bundled MiniLM
    reference_texts: str | None = (
        None  # human texts (JSONL field `text`, or one a line) for MAUVE; null: none
    )
    label_column: str | None = None  # train.parquet column grouping texts for label-wise cosine; null: none


class Params(StageParams):
    """`evaluate`: the gold set and task, generation, the teacher reference/judge and the report."""

    gold_test: DataFile
    task: str = "qa"  # a task kind of dagster_project/evaluation/tasks.py
    labels: list[str] = []  # classification: the label words the student generates
    reference_column: str | None = None  # gold column with the reference; null: the task's (answer, label)
    id_column: str = "id"
    category_column: str = "category"  # gold column the report breaks the figures down by
    max_new_tokens: int = Field(default=12, gt=0)
    batch_size: int = Field(default=32, gt=0)
    # auto: bf16 on a GPU, fp32 on a CPU; bf16: also on a CPU with native bf16 (avx512_bf16/amx), ~1.8x there
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    teacher_reference: bool = False  # the teacher answers the test set too (through the engine, cached)
    zero_shot: bool = True  # the student's base model (train.base_model) answers too, before fine-tuning
    teacher_model: str = "offline-teacher"  # the teacher for reference answers and the free_text judge
    reference_prompt: str = "prompts/reference_answer.yaml"  # checked when teacher_reference is on
    judge_prompt: str = "prompts/judge_success.yaml"  # checked when the task needs a judge
    bootstrap_resamples: int = Field(default=1000, ge=100)
    seed: int = 0
    diversity: DiversityParams = DiversityParams()

    @field_validator("task")
    @classmethod
    def _a_known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task; allowed values: {', '.join(TASKS)}")
        return task

    @model_validator(mode="after")
    def _what_the_task_needs(self) -> "Params":
        problems = TASKS[self.task].check_params(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check_files(self, root: Path, section: str) -> list[str]:
        problems = super().check_files(root, section)
        gold = root / self.gold_test
        if not problems and gold.is_file():  # its schema for the task, before any stage runs
            problems += [
                f"{section}.gold_test: {p}" for p in check_gold_file(gold, self.task, self.reference_column)
            ]
        if self.teacher_reference:
            key = f"{section}.reference_prompt"
            problems += _check_file(FileRef("prompt"), self.reference_prompt, root, key, self)
            problems += _check_variables(root / self.reference_prompt, key, REFERENCE_VARIABLES)
        if issubclass(TASKS[self.task], FreeText):
            key = f"{section}.judge_prompt"
            problems += _check_file(FileRef("prompt"), self.judge_prompt, root, key, self)
            problems += _check_variables(root / self.judge_prompt, key, JUDGE_VARIABLES)
        return problems


# What evaluate renders its teacher prompts with (`evaluation.teacher`).
REFERENCE_VARIABLES = ("context", "question")
JUDGE_VARIABLES = ("context", "question", "answer", "reference")


def _check_variables(path: Path, key: str, provided: tuple[str, ...]) -> list[str]:
    """A prompt that uses a variable evaluate does not provide fails here, not after training."""
    from dagster_project.teacher.prompts import PromptError, load_prompt

    try:
        unknown = sorted(load_prompt(path).variables - set(provided))
    except PromptError:
        return []  # reported by the file check
    if not unknown:
        return []
    return [
        f"{key}: prompt '{path.name}' uses variable(s) {', '.join(repr(u) for u in unknown)}, but evaluate "
        f"renders it with {', '.join(provided)} only; use those names in the prompt."
    ]


def main() -> None:
    """`python -m dagster_project.stages.evaluate --params params.yaml --student ... --data ... --out ...`."""
    # torch and transformers load here, not at import: params validation imports this module.
    from dagster_project.evaluation.generate import generate_answers, load_student
    from dagster_project.student.threads import set_threads

    parser = stage_parser(__doc__.splitlines()[0], kind="evaluate")
    parser.add_argument("--student", required=True, help="checkpoint folder (from_pretrained-loadable)")
    parser.add_argument("--data", required=True, help="folder with train.parquet (baseline and diversity)")
    parser.add_argument("--out", required=True, help="report folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)

    # The gold items, asked in the student's format over their columns (checked before the model loads)
    try:
        gold_rows = read_gold(params.gold_test, params.task, params.reference_column)
    except GoldError as exc:
        raise SystemExit(f"error: {args.section}.gold_test: {exc}") from None
    task = task_class(params.task)(
        params.labels,
        reference_column=params.reference_column,
        id_column=params.id_column,
        category_column=params.category_column,
        n_resamples=params.bootstrap_resamples,
        seed=params.seed,
    )
    prompt_format = PromptFormat.load(args.student)  # the format the student was trained in
    try:
        items = task.items(gold_rows)
    except ValueError as exc:
        raise SystemExit(f"error: {args.section}: {exc}") from None
    columns = [c for c in items[0] if all(c in it for it in items)] if items else []
    check_student_prompt_columns(prompt_format, args.student, columns, f"the gold set {params.gold_test}")

    # The baseline and the diversity of the training texts
    train = pl.read_parquet(Path(args.data) / "train.parquet")
    baseline_answer, baseline_definition = most_frequent_completion(train, prompt_format)
    text_column = next((c for c in ("question", "text") if c in train.columns), None)
    texts = train[text_column].to_list() if text_column else []
    div = params.diversity
    div_labels = None  # checked before the model loads: a typo fails fast
    if div.label_column is not None and text_column is not None:
        if div.label_column not in train.columns:
            raise SystemExit(
                f"error: {args.section}.diversity.label_column is {div.label_column!r}, but "
                f"{Path(args.data) / 'train.parquet'} has no such column "
                f"(it has: {', '.join(train.columns)})."
            )
        div_labels = [str(v) for v in train[div.label_column].to_list()]

    # Answers: the student, the baseline and optionally the teacher
    set_threads("evaluate")
    model, tokenizer = load_student(args.student, params.precision)
    predictions = {
        "student": generate_answers(
            model, tokenizer, items, params.max_new_tokens, params.batch_size, prompt_format
        ),
        "baseline": [baseline_answer] * len(items),
    }
    del model
    base = _base_model(args.student) if params.zero_shot else None
    if base is not None:  # the base model before fine-tuning, asked in the very same format
        base_model, base_tokenizer = load_student(base, params.precision)
        predictions["zero_shot"] = generate_answers(
            base_model, base_tokenizer, items, params.max_new_tokens, params.batch_size, prompt_format
        )
        del base_model
    teacher_info = None
    if params.teacher_reference:
        predictions["teacher"], teacher_info = teacher_answers(
            items, params.reference_prompt, params.teacher_model, params.seed
        )
    if isinstance(task, FreeText):
        task.judge = teacher_judge(params.judge_prompt, params.teacher_model, params.seed)

    # Scores and the report
    metrics, table = score_systems(task, items, predictions)
    metrics |= {
        "gold_test": params.gold_test,
        "baseline_definition": baseline_definition,
        "baseline_answer": baseline_answer,
    }
    if teacher_info:
        metrics["teacher_reference"] = teacher_info
    if base is not None:
        metrics["zero_shot_model"] = base
    metrics["headline"] = three_numbers(metrics, task.headline_keys[0])
    reference_texts = load_texts(div.reference_texts) if div.reference_texts else None
    metrics["diversity"] = diversity_figures(
        texts, div.max_texts, div.embedding, div.embedding_model, reference_texts, params.seed, div_labels
    )
    log_path = Path(args.student) / "train_log.json"
    loss_history = json.loads(log_path.read_text()).get("loss_history", []) if log_path.exists() else []
    report_md, report_html = render_report(metrics, table, args.student, loss_history)
    write_outputs(args.out, metrics, table, report_md, report_html, plot_files(metrics, table, loss_history))
    heads = "; ".join(
        f"{s} " + " ".join(f"{k} {metrics[s][k]:.3f}" for k in task.headline_keys)
        for s in systems_of(metrics)
    )
    print(f"evaluate: {metrics['n_test']} items ({task.name}); {heads}; wrote {args.out}")
    print(f"evaluate: {headline_line(metrics['headline'])}")


def _base_model(student: str) -> str | None:
    """The base model the student was fine-tuned from (its train_log.json), None for a model trained
    from config (whose untrained self answers nothing worth a number)."""
    log_path = Path(student) / "train_log.json"
    if not log_path.exists():
        return None
    return json.loads(log_path.read_text()).get("base_model") or None


if __name__ == "__main__":
    run_main(main)
