"""Stage `train`: fine-tune the student, a causal LM, on rows with named columns (`train.prompt_format`).

Reads its params section (`--section`, default `train`) and `<data>/train.parquet` + `<data>/val.parquet`;
writes a `from_pretrained`-loadable checkpoint (model + tokenizer), `train_log.json` and
`prompt_format.json` (the format the evaluate stage must ask in) into `--out`, atomically. The run's
timings and throughput go to `<out's parent>/.runs/<out's name>.json` (git-ignored), not train_log.json.

Each row becomes a prompt and a completion through the recipe's templates over its columns (the default,
grounded QA, is below; a classification recipe might use "Text: {text}\\nTopic:" and " {label}"); the
loss is on the completion, plus `prompt_loss_weight` x the prompt loss:

    Context: {context}
    Question: {question}
    Answer: {answer}<eos>

Offline default (`base_model: null`): a byte-level BPE tokenizer is trained on the training texts and
a tiny GPT-2 is initialised from config, so nothing is downloaded. With `base_model` set, the tokenizer
and weights come from `from_pretrained(base_model)` (a hub name or a local path).

The same script runs on CPU, one GPU (bf16 where supported) or N GPUs (`torchrun -m ...`), through the
Hugging Face `Trainer`. The library code is in `dagster_project/student/`.
"""

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    data_facts,
    load_stage_params,
    run_main,
    split_run_facts,
    stage_parser,
    write_json,
)
from dagster_project.student.checkpoints import (
    CHECKPOINT_ROOT_ENV,
    DEFAULT_CHECKPOINT_ROOT,
    is_main_process,
    last_checkpoint,
    run_fingerprint,
    world_size,
)
from dagster_project.student.data import load_rows
from dagster_project.student.prompt_format import (
    DEFAULT_COMPLETION,
    DEFAULT_PROMPT,
    PromptFormat,
    PromptFormatError,
    parse_template,
)
from dagster_project.student.swap import SwapColumns

# ---------------------------------------------------------------------------------------------- params


class LoraParams(StageParams):
    enabled: bool = False
    r: int = Field(default=8, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | None = None  # null: peft's default for the architecture


class PromptFormatParams(StageParams):
    """`train.prompt_format`: how a row becomes prompt and completion (student/prompt_format.py).
    Placeholders are column names; that each is a column is checked when the data loads."""

    style: Literal["plain", "chat"] = "plain"
    completion: str = DEFAULT_COMPLETION  # before the prompt: the prompt is checked against it
    prompt: str = DEFAULT_PROMPT
    system: str | None = None

    @field_validator("completion", "prompt")
    @classmethod
    def _placeholders_are_column_names(cls, template: str, info: ValidationInfo) -> str:
        try:
            parse_template(template, str(info.field_name))
            completion = info.data.get("completion")
            if info.field_name == "prompt" and isinstance(completion, str):
                PromptFormat("plain", template, completion)  # the prompt must not use a completion column
        except PromptFormatError as exc:
            raise ValueError(exc.reason) from None
        return template

    @model_validator(mode="after")
    def _system_needs_chat(self) -> "PromptFormatParams":
        if self.system is not None and self.style != "chat":
            raise ValueError("system (a system message) needs style: chat")
        return self


class AnswerSwapParams(StageParams):
    """`train.answer_swap`: augmentation for extractive QA (student/swap.py): with probability `prob` an
    example's answer becomes a new one of the same shape, in `context_column` and as the target."""

    prob: float = Field(default=0.0, ge=0, le=1)  # 0: off
    answer_column: str = "answer"  # a column of the completion template
    context_column: str = "context"  # a column of the prompt template, where the answer is copied from


class ConversationParams(StageParams):
    """`train.conversation`: rows are conversations (a passage and a list of turns); each assistant turn
    becomes one example given the passage and the history (student/conversation.py: loss on assistant
    turns only; a long history loses its oldest turns first, never the passage)."""

    context_column: str = "context"  # the passage
    turns_column: str = "turns"  # a list of {question, answer, ...}


class Params(StageParams):
    """`train`: the student, its data format, the optimisation and the hardware settings."""

    base_model: str | None = None  # null: a tiny GPT-2 from config with a BPE tokenizer trained on the data
    vocab_size: int = Field(default=1000, ge=300)  # base_model null only
    n_layer: int = Field(default=2, gt=0)
    n_head: int = Field(default=4, gt=0)
    n_embd: int = Field(default=64, gt=0)
    max_length: int = Field(default=160, gt=8)
    epochs: float = Field(default=20, gt=0)
    batch_size: int = Field(default=8, gt=0)
    learning_rate: float = Field(default=0.005, gt=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    prompt_loss_weight: float = Field(default=1.0, ge=0)
    seed: int = 0
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    packing: bool = False
    eval_steps: int = Field(default=0, ge=0)  # 0: evaluate once, at the end
    early_stopping_patience: int = Field(default=0, ge=0)  # 0: off
    save_steps: int = Field(default=200, ge=0)  # checkpoints for resume (0: none)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    torch_compile: bool = False
    lora: LoraParams = LoraParams()
    prompt_format: PromptFormatParams = PromptFormatParams()
    answer_swap: AnswerSwapParams = AnswerSwapParams()
    conversation: ConversationParams | None = None  # null: one example per row (single-turn)

    @model_validator(mode="after")
    def _early_stopping_needs_evaluation(self) -> "Params":
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("early_stopping_patience needs eval_steps > 0 (how often to evaluate)")
        return self

    @model_validator(mode="after")
    def _chat_needs_a_pretrained_model(self) -> "Params":
        if self.prompt_format.style == "chat" and not self.base_model:
            raise ValueError(
                "prompt_format.style: chat needs a pretrained chat model as base_model (its tokenizer's "
                "chat template); the offline default tokenizer (base_model: null) has none: use style: plain"
            )
        return self

    @model_validator(mode="after")
    def _answer_swap_columns_are_in_the_templates(self) -> "Params":
        swap, fmt = self.answer_swap, PromptFormat.from_params(self.prompt_format)
        if swap.prob == 0:
            return self
        if swap.answer_column not in fmt.completion_columns:
            raise ValueError(
                f"answer_swap.prob is {swap.prob}, but answer_swap.answer_column {swap.answer_column!r} is "
                f"not a placeholder of prompt_format.completion (it uses: {', '.join(fmt.completion_columns)}"
                "); answer swap is for extractive QA: set answer_swap.prob: 0, or name the answer column"
            )
        if swap.context_column not in fmt.prompt_columns:
            raise ValueError(
                f"answer_swap.prob is {swap.prob}, but answer_swap.context_column {swap.context_column!r} "
                f"is not a placeholder of prompt_format.prompt (it uses: {', '.join(fmt.prompt_columns)}); "
                "set answer_swap.prob: 0, or name the column the answer is copied from"
            )
        return self

    def swap_columns(self) -> SwapColumns:
        fmt = PromptFormat.from_params(self.prompt_format)
        return SwapColumns.of(fmt, self.answer_swap.answer_column, self.answer_swap.context_column)


# -------------------------------------------------------------------------------------------- training


def train_student(
    train_rows: Sequence[Mapping[str, Any]],
    val_rows: Sequence[Mapping[str, Any]],
    params: Params,
    out_dir: str | Path,
    checkpoint_root: str | Path | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train the student on `train_rows`, score it on `val_rows`, save it into `out_dir`; return the log.

    Checkpoints go to `<checkpoint_root>/<run fingerprint>/` (default `.cache/train-checkpoints`, or
    $DISTILL_TRAIN_CHECKPOINTS): outside the DVC output, so a killed run resumes from its last checkpoint
    when it is rerun with the same params, data and code. The folder is deleted after success.
    """
    # torch and transformers load here, not at import: params validation imports this module.
    import torch
    from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed

    from dagster_project.student.collate import make_collator
    from dagster_project.student.dataset import StudentDataset
    from dagster_project.student.fast_kernels import use_fused_kernels
    from dagster_project.student.model import apply_lora, build_student, compile_blocks, precision_flags
    from dagster_project.student.threads import set_threads
    from dagster_project.student.trainer import Curves, LossLog, StudentTrainer, training_arguments

    prompt_format = PromptFormat.from_params(params.prompt_format)
    for rows, name in ((train_rows, "the training rows"), (val_rows, "the validation rows")):
        if rows:  # every placeholder is a column: fail before any work
            prompt_format.check_columns(rows[0].keys(), name)
    threads = set_threads("train") if not torch.cuda.is_available() else torch.get_num_threads()
    set_seed(params.seed)
    root = Path(checkpoint_root or os.environ.get(CHECKPOINT_ROOT_ENV) or DEFAULT_CHECKPOINT_ROOT)
    run_dir = root / run_fingerprint(params, train_rows, val_rows, code=[Path(__file__)])
    resume_from = last_checkpoint(run_dir) if params.save_steps else None

    # The model
    tokenizer, model = build_student(params, train_rows, prompt_format)
    if resume_from is not None and (run_dir / "tokenizer").exists():
        tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")  # the very tokenizer of the run
    use_fused_kernels(model)  # same function, fewer ops (see student/fast_kernels.py)
    model = apply_lora(model, params.lora)
    if params.torch_compile:
        compile_blocks(model)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # The data
    max_length = min(params.max_length, getattr(model.config, "n_positions", None) or params.max_length)
    conversation_stats = None
    if params.conversation is not None:  # multi-turn: the history fitted to max_length, oldest turns first
        from dagster_project.student.conversation import fit_history, strip_private

        train_rows, conversation_stats = fit_history(train_rows, tokenizer, prompt_format, max_length)
        val_rows, _ = fit_history(val_rows, tokenizer, prompt_format, max_length)
        train_rows, val_rows = strip_private(train_rows), strip_private(val_rows)
    swap_prob, swap_columns = params.answer_swap.prob, params.swap_columns()
    train_ds = StudentDataset(
        tokenizer, train_rows, max_length, swap_prob, params.seed, prompt_format, swap_columns
    )
    val_ds = StudentDataset(tokenizer, val_rows, max_length, prompt_format=prompt_format)

    # The schedule
    batch_size, accumulation = params.batch_size, params.gradient_accumulation_steps
    n_processes = world_size()  # torchrun: each process takes batch_size examples per step
    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / (batch_size * n_processes)) / accumulation)
    total_steps = max(1, math.ceil(steps_per_epoch * params.epochs))
    evaluating = params.eval_steps > 0 and len(val_ds) > 0
    save_steps, patience = params.save_steps, params.early_stopping_patience
    if evaluating and (save_steps or patience):
        save_steps = params.eval_steps  # a checkpoint at every evaluation, so the best model can be restored
    flags = precision_flags(params.precision)
    print(
        f"train: {len(train_ds)} examples ({sum(e['truncated'] for e in train_ds.examples)} truncated), "
        f"val: {len(val_ds)}, model: {n_params / 1e6:.2f}M params ({n_trainable / 1e6:.2f}M trainable), "
        f"vocab {len(tokenizer)}, {total_steps} steps of {batch_size}x{accumulation}"
        + (f" x {n_processes} processes" if n_processes > 1 else "")
        + (", packed" if params.packing else "")
    )
    if resume_from is not None:
        print(f"train: resumed from {resume_from} (step {resume_from.name.split('-')[-1]})")
    if is_main_process() and save_steps:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "tokenizer").exists():
            tokenizer.save_pretrained(run_dir / "tokenizer")

    # Train
    losses = LossLog(train_ds)
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from is not None else 0
    callbacks = [losses, Curves(run_dir / "dvclive", resume_step), *callbacks]
    if evaluating and patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    args = training_arguments(
        run_dir,
        total_steps=total_steps,
        batch_size=batch_size,
        accumulation=accumulation,
        learning_rate=params.learning_rate,
        warmup_steps=math.ceil(params.warmup_ratio * total_steps),
        scheduler=params.lr_scheduler,
        save_steps=save_steps,
        eval_steps=params.eval_steps if evaluating else 0,
        seed=params.seed,
        precision_flags=flags,
    )
    trainer = StudentTrainer(
        model=model,
        prompt_loss_weight=params.prompt_loss_weight,
        compile_loss=params.torch_compile,
        fused_lm_head=not params.torch_compile and n_processes == 1 and not torch.cuda.is_available(),
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds if len(val_ds) else None,
        data_collator=make_collator(tokenizer.pad_token_id, params.packing, max_length),
        callbacks=callbacks,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    train_seconds = time.perf_counter() - started
    val_loss = trainer.evaluate()["eval_loss"] if len(val_ds) else None

    steps_run = trainer.state.global_step - resume_step
    log = {
        "base_model": params.base_model,  # the evaluate stage asks it zero-shot beside the student
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "n_truncated": sum(e["truncated"] for e in train_ds.examples),
        "n_params": n_params,
        "n_trainable_params": n_trainable,
        "vocab_size": len(tokenizer),
        "max_length": max_length,
        "steps": trainer.state.global_step,
        "planned_steps": total_steps,
        "resumed_from_step": resume_step or None,
        "stopped_early": trainer.state.global_step < total_steps,
        "best_step": trainer.state.best_global_step,
        "train_loss": result.training_loss,
        "final_logged_loss": losses.history[-1]["loss"] if losses.history else None,
        "val_loss": val_loss,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_second": round(trainer.tokens_seen * max(1, args.world_size) / train_seconds, 1),
        "steps_per_second": round(steps_run / train_seconds, 3),
        "device": str(trainer.args.device),
        "cpu_threads": threads,
        "world_size": args.world_size,
        "bf16": flags["bf16"],
        "fp16": flags["fp16"],
        "packing": params.packing,
        **({"conversation": conversation_stats} if conversation_stats is not None else {}),
        "loss_history": losses.history,
        "eval_history": losses.eval_history,
    }

    # Save (rank 0 only)
    if trainer.is_world_process_zero():
        out_dir = Path(out_dir)
        final = trainer.model
        if hasattr(final, "merge_and_unload"):  # LoRA: merge the adapters into a plain checkpoint
            final = final.merge_and_unload()
        final.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        prompt_format.save(out_dir)  # the evaluate stage asks the student in this format
        write_json(out_dir / "train_log.json", split_run_facts(log)[0])  # run facts: see main
        if (run_dir / "dvclive").exists():
            shutil.copytree(run_dir / "dvclive", out_dir / "dvclive")
        shutil.rmtree(run_dir, ignore_errors=True)  # success: the checkpoints are not needed any more
    return log


def _conversation_rows(
    data: str, conversation: ConversationParams, prompt_format: PromptFormat, has_val: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The expanded turns of the train and val conversations, their columns checked against the format."""
    from dagster_project.student.conversation import load_conversation_rows

    c = conversation
    try:
        train_rows = load_conversation_rows(data, "train", c.context_column, c.turns_column)
        val_rows = load_conversation_rows(data, "val", c.context_column, c.turns_column) if has_val else []
    except ValueError as exc:
        raise SystemExit(f"error: train.conversation: {exc}") from None
    if train_rows:
        prompt_format.check_columns(train_rows[0].keys(), f"the turns of {data}/train.parquet")
    return train_rows, val_rows


def main() -> None:
    """CLI: `python -m dagster_project.stages.train --params P [--section S] --data DEDUPED --out STUDENT`.

    N GPUs: `torchrun --nproc-per-node N -m dagster_project.stages.train ...` (or `accelerate launch -m
    ...`): the Trainer runs DDP; only rank 0 writes `--out` (atomically) and deletes the checkpoints.
    """
    parser = stage_parser(__doc__.splitlines()[0], kind="train")
    parser.add_argument("--data", required=True, help="folder with train.parquet and val.parquet")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)
    prompt_format = PromptFormat.from_params(params.prompt_format)
    has_val = (Path(args.data) / "val.parquet").exists()
    try:  # every placeholder must be a column: checked here, before any training
        if params.conversation is not None:  # one row per assistant turn (student/conversation.py)
            train_rows, val_rows = _conversation_rows(args.data, params.conversation, prompt_format, has_val)
        else:
            train_rows = load_rows(args.data, "train", prompt_format)
            val_rows = load_rows(args.data, "val", prompt_format) if has_val else []
    except PromptFormatError as exc:  # its key is train.prompt_format.<template>: name the section read
        raise SystemExit(f"error: {args.section}{exc.key.removeprefix('train')}: {exc.reason}") from None
    if not train_rows:
        columns = ", ".join(prompt_format.columns)
        raise SystemExit(f"error: {args.data}/train.parquet has no usable rows (non-empty {columns}).")
    if is_main_process():
        with atomic_output_dir(args.out) as tmp:
            log = train_student(train_rows, val_rows, params, tmp)
        data_facts(log, args.out, "train_log.json")  # timings and throughput, beside the output
    else:  # other DDP ranks train along but write nothing
        train_student(train_rows, val_rows, params, args.out)
        return
    keys = ("train_loss", "val_loss", "train_seconds", "tokens_per_second", "n_params")
    summary = {k: log[k] for k in keys}
    print(f"train: wrote {args.out}: {json.dumps(summary)}")


if __name__ == "__main__":
    run_main(main)
