"""Stage kind `dpo`: preference training of a student with TRL's DPOTrainer, from the previous student.

    python -m dagster_project.stages.dpo --params params.yaml [--section dpo] \\
        --student assets/students/sft --preferences assets/critiques/r1 --out assets/students/r1

Reads `<preferences>/preferences.parquet` (rows with the input's columns, `chosen` and `rejected`, e.g.
from the `critique` kind) and the student's folder (a `from_pretrained` checkpoint with its
`prompt_format.json`). Each row becomes TRL's {prompt, chosen, rejected} in the student's own format
(the completion template with the chosen / rejected text in its column); the policy starts from the
student and the frozen reference is the same student, so round k+1 = DPO(round k). The loss is TRL's
(`loss_type`, `beta`). A share `val_fraction` of the inputs (all pairs of one `key_column` value on one
side, seeded) is held out. Writes into `--out`, atomically:

- the new student (model, tokenizer, `prompt_format.json`): the generate kind asks it as any student;
- `margins.json`: on the held-out pairs, the mean log p(chosen) - log p(rejected) of the starting student
  and of the trained one, the share of pairs with a positive margin before and after, and the DPO
  implicit reward margin beta x (after - before);
- `dpo_log.json`: TRL's logged history (loss, rewards/margins, rewards/accuracies, ...), the run's
  settings, pairs, steps and seconds; `dvclive/`: the same curves for `dvc plots`.
"""

import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import Field, model_validator

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
)
from dagster_project.student.prompt_format import PromptFormat, check_student_prompt_columns

LossType = Literal["sigmoid", "ipo", "hinge", "robust", "sft"]


class Params(StageParams):
    """`dpo`: TRL's DPO loss and the optimisation of one preference round."""

    beta: float = Field(default=0.1, gt=0)
    # TRL's loss types, combined with `loss_weights` (e.g. [sigmoid, sft]: DPO plus the chosen texts' NLL,
    # which keeps the chosen log-probabilities from falling with the rejected ones)
    loss_type: list[LossType] = Field(default=["sigmoid"], min_length=1)
    loss_weights: list[float] | None = None  # one per loss_type (null: 1.0 each)
    learning_rate: float = Field(default=5e-4, gt=0)
    epochs: float = Field(default=2, gt=0)
    batch_size: int = Field(default=16, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "linear"
    max_length: int = Field(default=128, gt=8)  # prompt + completion tokens
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: int = 0
    key_column: str = "prompt"  # the input a pair belongs to: held-out pairs never share one with training
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    min_pairs: int = Field(default=8, gt=0)  # fewer training pairs than this: an error, not a silent no-op

    @model_validator(mode="after")
    def _one_weight_per_loss(self) -> "Params":
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss_type "
                "entries; give one weight per loss type, or null"
            )
        return self


def split_by_key(
    df: pl.DataFrame, key: str, val_fraction: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, val): a seeded share `val_fraction` of the distinct `key` values, all their rows, held out."""
    keys = sorted(set(df[key].to_list()))
    random.Random(seed).shuffle(keys)
    n_val = math.ceil(val_fraction * len(keys)) if val_fraction else 0
    held = set(keys[:n_val])
    return df.filter(~pl.col(key).is_in(held)), df.filter(pl.col(key).is_in(held))


def main() -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="dpo")
    parser.add_argument("--student", required=True, help="the student to start from (and the reference)")
    parser.add_argument("--preferences", required=True, help="a folder with preferences.parquet, or the file")
    parser.add_argument("--out", required=True, help="the new student's folder")
    args = parser.parse_args()
    params: Params = load_stage_params(args.params, args.section, Params)

    path = Path(args.preferences)
    path = path / "preferences.parquet" if path.is_dir() else path
    if not path.exists():
        raise SystemExit(f"error: dpo: {path} does not exist; run the critique stage that writes it first.")
    df = pl.read_parquet(path)
    prompt_format = PromptFormat.load(args.student)
    needed = {"chosen", "rejected", params.key_column, *prompt_format.prompt_columns}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise SystemExit(
            f"error: dpo: {path} has no column(s) {missing} (the student's prompt format and "
            f"{args.section}.key_column need them); its columns: {df.columns}."
        )
    if len(prompt_format.completion_columns) != 1:
        raise SystemExit(
            f"error: dpo: the student's completion template ({args.student}/prompt_format.json) must use "
            "exactly one column (the text chosen or rejected); it uses "
            f"{list(prompt_format.completion_columns)}."
        )
    check_student_prompt_columns(prompt_format, args.student, df.columns, str(path))
    train_df, val_df = split_by_key(df, params.key_column, params.val_fraction, params.seed)
    if train_df.height < params.min_pairs:
        raise SystemExit(
            f"error: dpo: {train_df.height} training pairs in {path} (of {df.height}; {val_df.height} held "
            f"out), fewer than {args.section}.min_pairs ({params.min_pairs}): critique more candidates."
        )

    # torch, transformers and TRL load only now: validating params and columns stays light.
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from dagster_project.preference.dpo import DpoCurves, dpo_rows, margins
    from dagster_project.student.model import precision_flags
    from dagster_project.student.threads import set_threads

    threads = set_threads("dpo") if not torch.cuda.is_available() else torch.get_num_threads()
    set_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.student)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    train_rows = dpo_rows(train_df.to_dicts(), prompt_format, tokenizer)
    val_rows = dpo_rows(val_df.to_dicts(), prompt_format, tokenizer)
    before = margins(model, tokenizer, val_rows) if val_rows else []

    steps_per_epoch = math.ceil(
        math.ceil(len(train_rows) / params.batch_size) / params.gradient_accumulation_steps
    )
    total_steps = max(1, math.ceil(steps_per_epoch * params.epochs))
    flags = precision_flags(params.precision)
    run_dir = Path(tempfile.mkdtemp(prefix="dpo-run-"))
    config = DPOConfig(
        output_dir=str(run_dir),
        beta=params.beta,
        loss_type=list(params.loss_type),
        loss_weights=params.loss_weights,
        learning_rate=params.learning_rate,
        max_steps=total_steps,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        warmup_steps=math.ceil(params.warmup_ratio * total_steps),
        lr_scheduler_type=params.lr_scheduler,
        max_length=params.max_length,
        logging_steps=max(1, total_steps // 25),
        logging_first_step=True,
        eval_strategy="steps" if val_rows else "no",
        eval_steps=max(1, total_steps // 4),
        save_strategy="no",
        report_to="none",
        seed=params.seed,
        data_seed=params.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        **flags,
    )
    live_dir = run_dir / "dvclive"
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if val_rows else None,
        processing_class=tokenizer,
        callbacks=[DpoCurves(live_dir)],
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    final = trainer.model
    after = margins(final, tokenizer, val_rows) if val_rows else []

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    held_out = {
        "n_pairs": len(val_rows),
        "mean_margin_before": mean(before),
        "mean_margin_after": mean(after),
        "positive_before": mean([float(m > 0) for m in before]),
        "positive_after": mean([float(m > 0) for m in after]),
        "implicit_reward_margin": (
            params.beta * (mean(after) - mean(before)) if val_rows else None  # type: ignore[operator]
        ),
        "what": "log p(chosen|x) - log p(rejected|x), summed over the completion's tokens, on held-out pairs",
    }
    history = [{k: v for k, v in entry.items()} for entry in trainer.state.log_history]
    log = {
        "student_from": str(args.student),
        "n_train_pairs": len(train_rows),
        "n_val_pairs": len(val_rows),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 2),
        "device": device,
        "cpu_threads": threads,
        "beta": params.beta,
        "loss_type": params.loss_type,
        "loss_weights": params.loss_weights,
        "final_train": _last(history, "rewards/margins"),
        "final_eval": _last(history, "eval_rewards/margins"),
        "log_history": history,
    }
    with atomic_output_dir(args.out) as tmp:
        final.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        prompt_format.save(tmp)
        write_json(tmp / "margins.json", held_out)
        write_json(tmp / "dpo_log.json", log)
        if live_dir.exists():
            shutil.copytree(live_dir, tmp / "dvclive")
    shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"dpo: {len(train_rows)} pairs, {trainer.state.global_step} steps in {seconds:.0f}s -> {args.out}; "
        f"held-out margin {json.dumps({k: held_out[k] for k in ('mean_margin_before', 'mean_margin_after')})}"
    )


def _last(history: list[dict], key: str) -> dict | None:
    """The last logged entry holding `key` (TRL logs the reward figures with the loss)."""
    return next((e for e in reversed(history) if key in e), None)


if __name__ == "__main__":
    run_main(main)
