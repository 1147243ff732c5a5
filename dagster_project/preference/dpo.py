"""Preference training of a student: TRL's `DPOTrainer` on (prompt, chosen, rejected) rows, the held-out
log-probability margin, and dvclive curves of the DPO figures.

The loss is TRL's (`loss_type`, `beta`); nothing here re-implements it. What this module adds is what the
stage needs around it: the rows rendered in the student's own prompt format, a measurement of the
margin log p(chosen | x) - log p(rejected | x) on held-out pairs (sums over the completion's tokens,
end-of-text included, tokenised as the train stage does: prompt and completion apart), and the curves.
"""

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from dagster_project.student.prompt_format import PromptFormat


def dpo_rows(
    rows: Sequence[Mapping[str, Any]], prompt_format: PromptFormat, tokenizer: PreTrainedTokenizerBase
) -> list[dict[str, str]]:
    """{prompt, chosen, rejected} texts: the row's prompt in the student's format, and each completion
    rendered by the completion template with the chosen / rejected text as its (single) column."""
    (column,) = prompt_format.completion_columns
    out = []
    for row in rows:
        out.append(
            {
                "prompt": prompt_format.prompt(row, tokenizer),
                "chosen": prompt_format.completion({**row, column: row["chosen"]}),
                "rejected": prompt_format.completion({**row, column: row["rejected"]}),
            }
        )
    return out


@torch.no_grad()
def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
) -> list[float]:
    """log p(completion + end-of-text | prompt) under `model`, one sum of token log-probs per pair."""
    model.eval()
    eos = tokenizer.eos_token_id
    sequences = []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
        sequences.append((p, c))
    scores = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, c) in enumerate(chunk):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            target[i, len(p) : len(p) + len(c)] = True
        ids, mask, target = ids.to(model.device), mask.to(model.device), target.to(model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        scores += (logp * target[:, 1:]).sum(dim=1).tolist()
    return scores


def margins(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, str]]
) -> list[float]:
    """log p(chosen | prompt) - log p(rejected | prompt) per {prompt, chosen, rejected} row."""
    prompts = [r["prompt"] for r in rows]
    chosen = completion_logprobs(model, tokenizer, prompts, [r["chosen"] for r in rows])
    rejected = completion_logprobs(model, tokenizer, prompts, [r["rejected"] for r in rows])
    return [c - r for c, r in zip(chosen, rejected, strict=True)]


class DpoCurves(TrainerCallback):
    """dvclive curves of a DPO run (`dvc plots`): the loss, the reward margins, accuracies, chosen and
    rejected rewards, for training and evaluation, per optimizer step."""

    KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")

    def __init__(self, live_dir: Path) -> None:
        from dvclive import Live

        shutil.rmtree(live_dir, ignore_errors=True)
        self.live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if not logs:
            return
        self.live.step = state.global_step
        for key in self.KEYS:
            if key in logs:
                self.live.log_metric(f"train/{key}", float(logs[key]))
            if f"eval_{key}" in logs:
                self.live.log_metric(f"eval/{key}", float(logs[f"eval_{key}"]))
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        self.live.end()
