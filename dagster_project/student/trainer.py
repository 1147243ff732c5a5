"""How the student trains: the Hugging Face `Trainer` with our loss (completion + weighted prompt loss),
a resumable length-grouped sampler, the fused CPU output projection, callbacks (loss log, dvclive curves,
a progress bar with tokens/s) and the `TrainingArguments` of the train stage."""

import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import get_length_grouped_indices

from dagster_project.student.checkpoints import is_main_process, world_size
from dagster_project.student.data import IGNORE_INDEX
from dagster_project.student.dataset import StudentDataset
from dagster_project.student.fast_kernels import linear_cross_entropy, plain_lm_head


class LossLog(TrainerCallback):
    """Collects every logged loss (the Trainer's own history, kept small and JSON-ready), and sets the
    dataset's epoch for the answer-swap draws."""

    def __init__(self, dataset: "StudentDataset | None" = None) -> None:
        self.history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if self.dataset is not None:
            self.dataset.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if logs and "loss" in logs:
            entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"]}
            for key in ("learning_rate",):  # not tokens_per_s: a run fact, it would change the bytes
                if key in logs:
                    entry[key] = logs[key]
            self.history.append(entry)
        if logs and "eval_loss" in logs:
            self.eval_history.append({"step": state.global_step, "eval_loss": logs["eval_loss"]})


def truncate_curve(tsv: Path, last_step: int) -> None:
    """Keep the header and the whole rows of a dvclive curve up to `last_step`; a file whose header was
    torn is removed (dvclive writes a new one)."""
    lines = tsv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t") if lines and lines[0].endswith("\n") else []
    if "step" not in header:
        tsv.unlink()
        return
    step_col = header.index("step")
    keep = lines[:1]
    for line in lines[1:]:
        cells = line.rstrip("\n").split("\t")
        whole = line.endswith("\n") and len(cells) == len(header) and cells[step_col].isdigit()
        if whole and int(cells[step_col]) <= last_step:
            keep.append(line)
    tsv.write_text("".join(keep))


class Curves(TrainerCallback):
    """Training curves with dvclive (`dvc plots show`/`diff`): train/loss, train/learning_rate and
    eval/loss per optimizer step, written on the main process only. Throughput (tokens/s) is a run fact,
    not a curve of the output: it would change the student's bytes on every rebuild.

    On resume from step N, rows logged after N by the killed run are dropped before logging goes on.
    """

    KEYS = {
        "loss": "train/loss",
        "learning_rate": "train/learning_rate",
    }

    def __init__(self, live_dir: Path, resume_step: int) -> None:
        self.live_dir, self.resume_step, self.live = live_dir, resume_step, None
        if is_main_process():
            self.live = self._open()  # here, not at train begin: opening costs ~1 s (it imports DVC)

    def _open(self) -> Any:
        from dvclive import Live

        if self.resume_step:
            # A kill can land while dvclive writes: keep only whole rows up to the resumed step, and drop a
            # torn summary (dvclive would fail to read it; the next log writes it again).
            for tsv in (self.live_dir / "plots").rglob("*.tsv"):
                truncate_curve(tsv, self.resume_step)
            summary = self.live_dir / "metrics.json"
            try:
                json.loads(summary.read_text())
            except FileNotFoundError:
                pass
            except ValueError:
                summary.unlink()
        else:
            shutil.rmtree(self.live_dir, ignore_errors=True)
        return Live(str(self.live_dir), resume=bool(self.resume_step), save_dvc_exp=False, dvcyaml=None)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if self.live is None or not logs:
            return
        self.live.step = state.global_step
        for key, name in self.KEYS.items():
            if key in logs:
                self.live.log_metric(name, float(logs[key]))
        if "eval_loss" in logs:
            self.live.log_metric("eval/loss", float(logs["eval_loss"]))
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if self.live is not None:
            self.live.end()


class _ProgressBar(ProgressCallback):
    """The Trainer's progress bar (steps, elapsed, ETA) with the latest tokens/s and loss beside it; the
    Trainer's own per-log dict lines are not printed (train_log.json and the dvclive curves keep them)."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if self.training_bar is not None and logs and "tokens_per_s" in logs:
            self.training_bar.set_postfix(
                {"tokens/s": f"{logs['tokens_per_s']:,.0f}", "loss": f"{logs['loss']:.4g}"}, refresh=False
            )


class StudentTrainer(Trainer):
    """A `Trainer` whose loss is the completion loss plus `prompt_loss_weight` x the prompt loss.

    Both terms are means over their own tokens. The completion (answer) is what the student must
    learn; weight on the prompt (language modelling of context and question) helps a model trained
    from scratch learn to copy: fictional names recur inside each context, and predicting their
    second occurrence needs the same copy circuit (induction heads) that extracting an answer needs.
    (Measured on look-alike data, 600 steps: weight 1.0 gave val answer loss 2.94, weight 0.1 gave
    4.01.) Set it to 0 for the classic answer-only loss, e.g. when fine-tuning a pretrained model.
    Evaluation (val loss) uses the completion loss alone. Logs tokens/s (real tokens, no padding), also
    beside the progress bar's ETA.
    """

    def __init__(
        self,
        *args: Any,
        prompt_loss_weight: float = 0.0,
        compile_loss: bool = False,
        fused_lm_head: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(_ProgressBar)
        # With `fused_lm_head` (the stage sets it for a single CPU process), training steps run the
        # model's decoder and then the output projection fused with the loss (fast_kernels.py), when
        # the architecture allows it; validation projects the completion positions only.
        self._lm_head = plain_lm_head(self.model) if fused_lm_head else None
        # Our loss is a mean per micro-batch, so the Trainer must divide it by the accumulation steps.
        # Left True (GPT-2's forward takes **kwargs), it would not, and N accumulated micro-batches would
        # give an N times larger gradient.
        self.model_accepts_loss_kwargs = False
        self.prompt_loss_weight = prompt_loss_weight
        self.tokens_seen = 0
        self._tokens_at_last_log, self._time_at_last_log = 0, time.perf_counter()
        # Compiled (with the `torch_compile` param), the fp32 log-softmax over the vocabulary runs fused
        # over the bf16 logits instead of materialising an fp32 copy of them.
        self._loss_fn = torch.compile(completion_loss, dynamic=None) if compile_loss else completion_loss

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001, ANN202
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, StudentDataset):
            return LengthGroupedSampler(dataset, self.args.per_device_train_batch_size, self.args.data_seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        prompt_mask = inputs.pop("prompt_mask")
        labels = inputs.pop("labels")
        n_tokens = inputs.pop("n_tokens", None)
        if model.training and n_tokens is not None:
            self.tokens_seen += int(n_tokens)
        weight = self.prompt_loss_weight if model.training else 0.0
        forward = {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs.get("attention_mask"),
            "position_ids": inputs.get("position_ids"),
            "use_cache": False,  # with a cache, transformers ignores packed position ids (attention leaks)
        }
        if model.training and self._lm_head is not None:
            decoder, head_weight = self._lm_head
            hidden = decoder(**forward).last_hidden_state
            targets, weights = completion_loss_weights(inputs["input_ids"], labels, prompt_mask, weight)
            loss = linear_cross_entropy(
                hidden.flatten(0, 1), head_weight, targets.flatten(), weights.flatten()
            )
            return (loss, None) if return_outputs else loss
        if not model.training and self._lm_head is not None and not return_outputs:
            # Validation loss: the completion tokens' logits only (a pretrained model's vocabulary makes
            # the whole batch x length x vocabulary logits the largest tensor of the step).
            decoder, head_weight = self._lm_head
            hidden = decoder(**forward).last_hidden_state.flatten(0, 1)
            targets, weights = completion_loss_weights(inputs["input_ids"], labels, prompt_mask, 0.0)
            keep = weights.flatten().nonzero().squeeze(1)
            logits = (hidden.index_select(0, keep) @ head_weight.T).float()
            token_loss = torch.nn.functional.cross_entropy(logits, targets.flatten()[keep], reduction="none")
            return (token_loss * weights.flatten()[keep]).sum()
        outputs = model(**forward)
        loss = self._loss_fn(outputs.logits, inputs["input_ids"], labels, prompt_mask, weight)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):  # noqa: ANN001, ANN201
        """The validation loss alone: the stage never reads evaluation logits (generation is the evaluate
        stage's), so none are kept or gathered."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            now = time.perf_counter()
            elapsed = max(now - self._time_at_last_log, 1e-9)
            world = max(1, self.args.world_size)
            logs["tokens_per_s"] = round((self.tokens_seen - self._tokens_at_last_log) * world / elapsed, 1)
            self._tokens_at_last_log, self._time_at_last_log = self.tokens_seen, now
        super().log(logs, start_time)


def completion_loss_weights(
    input_ids: torch.Tensor, labels: torch.Tensor, prompt_mask: torch.Tensor, prompt_loss_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, weights), both batch x length: position t predicts token t+1 with weight 1/(number of
    completion targets) on completion targets, `prompt_loss_weight`/(number of prompt targets) on prompt
    targets, and 0 elsewhere (padding, and the last position, which predicts nothing). The weighted sum
    of the token losses is `completion_loss`."""
    targets = torch.roll(input_ids, -1, dims=1)
    completion = torch.roll(labels != IGNORE_INDEX, -1, dims=1)
    completion[:, -1] = False
    weights = completion.float() / completion.sum().clamp(min=1)
    if prompt_loss_weight > 0:
        prompt = torch.roll(prompt_mask, -1, dims=1).float()  # predicting prompt tokens 2..n
        prompt[:, -1] = 0
        weights = weights + prompt_loss_weight * prompt / prompt.sum().clamp(min=1)
    return targets, weights


def completion_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompt_loss_weight: float,
) -> torch.Tensor:
    """Mean completion-token loss + `prompt_loss_weight` x mean prompt-token loss, in fp32.

    One cross entropy over every position, weighted by `completion_loss_weights`. Computing on the unsliced
    logits avoids a copy of the (batch x length x vocabulary) tensor.
    """
    targets, weights = completion_loss_weights(input_ids, labels, prompt_mask, prompt_loss_weight)
    token_loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), reduction="none"
    )
    return (token_loss * weights.flatten()).sum()


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Batches of similar length (less padding), reshuffled every epoch from (seed, epoch) alone.

    transformers' own length-grouped sampler draws from the global torch RNG, whose state differs
    between an uninterrupted run and one resumed mid-run, so a resumed run would see other batches.
    This one reads `dataset.epoch` (set at each epoch start) and gives the same order either way.
    """

    def __init__(self, dataset: StudentDataset, batch_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):  # noqa: ANN204
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.dataset.epoch)
        return iter(get_length_grouped_indices(self.dataset.lengths, self.batch_size, generator=generator))


def training_arguments(
    run_dir: str | Path,
    *,
    total_steps: int,
    batch_size: int,
    accumulation: int,
    learning_rate: float,
    warmup_steps: int,
    scheduler: str,
    save_steps: int,
    eval_steps: int,
    seed: int,
    precision_flags: Mapping[str, bool],
) -> TrainingArguments:
    """The `TrainingArguments` of the train stage (benchmarks/train.py builds its runs with it too).

    `eval_steps` 0: no evaluation during training; `save_steps` 0: no checkpoints. With both, the best
    checkpoint by validation loss is restored at the end.
    """
    return TrainingArguments(
        output_dir=str(run_dir),
        max_steps=total_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        lr_scheduler_type=scheduler,
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, total_steps // 50),
        logging_first_step=True,
        logging_nan_inf_filter=False,  # its check reads every step's loss back: a GPU sync per step
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=2,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps or None,
        load_best_model_at_end=bool(eval_steps and save_steps),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # keep prompt_mask for StudentTrainer.compute_loss
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
        # Without use_cpu, transformers leaves N CPU processes (torchrun) undistributed: each would train
        # alone on all the data and act as rank 0.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if not torch.cuda.is_available() and world_size() > 1 else None,
        **precision_flags,
    )
