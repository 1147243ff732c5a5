"""Batches of encoded examples: right-padded rows without an attention mask, or packed rows."""

import array
import itertools
from typing import Any

import torch

from dagster_project.student.data import IGNORE_INDEX


def _long_tensor(rows: list[list[int]]) -> torch.Tensor:
    """An int64 tensor of equal-length rows, through a flat C array: `torch.tensor` on nested lists
    took 6x as long (~0.2 ms per tensor of a default batch)."""
    flat = array.array("q", itertools.chain.from_iterable(rows))
    return torch.frombuffer(flat, dtype=torch.int64).view(len(rows), -1)


def make_collator(pad_id: int, packing: bool = False, max_length: int | None = None):
    """Collate a batch into padded rows; with `packing`, into as few rows of <= `max_length` as fit.

    Rows are padded on the right and get no attention mask (see `pad_rows`); padding gets label
    IGNORE_INDEX. `prompt_mask` marks the prompt tokens (1) for the optional
    prompt loss (see `QATrainer`); `n_tokens` counts the real (non-padding) tokens for tokens/s.

    Packing (first-fit decreasing) concatenates several examples into one row. `position_ids` restart
    at 0 for every example and no `attention_mask` is passed: transformers then derives a block-diagonal
    causal mask from the position ids (`masking_utils.find_packed_sequence_indices`; only without a KV
    cache, hence `use_cache=False` in `QATrainer.compute_loss`), so no token
    attends across an example boundary and a packed batch has the same loss as the unpacked one
    (tested). The first token of each example is never a target (as in an unpacked row). This needs a
    model whose attention uses `create_causal_mask` (GPT-2, Llama, Qwen, SmolLM... in transformers 5);
    for others, keep packing off.
    """

    def pad_rows(rows: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        # Built as lists, made tensors once: a tensor per example and field cost ~1.5 ms per CPU step.
        width = max(sum(len(ex["input_ids"]) for ex in row) for row in rows)
        ids, labels, prompt_mask, positions = [], [], [], []
        n_real = 0
        for row in rows:
            row_ids, row_labels, row_prompt, row_positions = [], [], [], []
            for ex in row:
                n, n_prompt = len(ex["input_ids"]), ex["n_prompt"]
                row_ids += ex["input_ids"]
                row_labels += ex["labels"]
                # the prompt's first token is never a target (nothing precedes it)
                row_prompt += [0] + [1] * max(0, n_prompt - 1) + [0] * (n - max(1, n_prompt))
                if packing:
                    row_positions += range(n)
            pad = width - len(row_ids)
            n_real += len(row_ids)
            ids.append(row_ids + [pad_id] * pad)
            labels.append(row_labels + [IGNORE_INDEX] * pad)
            prompt_mask.append(row_prompt + [0] * pad)
            if packing:
                positions.append(row_positions + list(range(pad)))  # padding: a segment of its own
        # n_tokens is a plain int: as a tensor it would go to the GPU and cost a sync to read back.
        batch = {
            "input_ids": _long_tensor(ids),
            "labels": _long_tensor(labels),
            "prompt_mask": _long_tensor(prompt_mask),
            "n_tokens": n_real,
        }
        if packing:  # unpacked rows need no position ids: they count from 0 anyway
            batch["position_ids"] = _long_tensor(positions)
        # No attention mask either way: padding is on the right, so under the causal mask no real token
        # ever attends to it, and positions count from 0 as they would with the mask. Padding positions
        # compute garbage that no loss term reads. Without a mask, attention takes its fused causal
        # kernel (CPU and GPU) and no 4-D mask is built (9% of a CPU step for the default student).
        return batch

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not packing:
            return pad_rows([[ex] for ex in batch])
        limit = max_length or max(len(ex["input_ids"]) for ex in batch)
        rows: list[list[dict[str, Any]]] = []
        room: list[int] = []
        for ex in sorted(batch, key=lambda e: -len(e["input_ids"])):
            n = len(ex["input_ids"])
            slot = next((r for r, free in enumerate(room) if free >= n), None)
            if slot is None:
                rows.append([ex])
                room.append(limit - n)
            else:
                rows[slot].append(ex)
                room[slot] -= n
        return pad_rows(rows)

    return collate
