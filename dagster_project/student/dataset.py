"""The training dataset: encoded examples, with answer-swap augmentation (swap.py) drawn on every access."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from dagster_project.student.data import DEFAULT_FORMAT, assemble_example, encode_examples, token_ids
from dagster_project.student.prompt_format import PromptFormat
from dagster_project.student.swap import DEFAULT_COLUMNS, AnswerSwap, SwapColumns


class StudentDataset(torch.utils.data.Dataset):
    """Tokenised examples; with `swap_prob` > 0, answer-swap augmentation (`AnswerSwap`) on every access.

    `epoch` is set by the trainer at the start of each epoch (the swap draws are seeded by it).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        rows: Sequence[Mapping[str, Any]],
        max_length: int,
        swap_prob: float = 0.0,
        seed: int = 0,
        prompt_format: PromptFormat = DEFAULT_FORMAT,
        swap_columns: SwapColumns = DEFAULT_COLUMNS,
    ):
        self.tokenizer, self.rows, self.max_length = tokenizer, list(rows), max_length
        self.prompt_format = prompt_format
        self.examples = encode_examples(tokenizer, self.rows, max_length, prompt_format)
        self.swap = (
            AnswerSwap(tokenizer, self.rows, prompt_format, swap_prob, seed, swap_columns)
            if swap_prob > 0
            else None
        )
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The examples at `indices`; the DataLoader asks for a whole batch at once, so everything a
        batch's swaps need is encoded in one call: the new answers of planned examples (`SwapPlan`),
        and the whole text of the others."""
        examples = [self.examples[i] for i in indices]
        planned, whole = [], []
        for k, i in enumerate(indices):
            new = self.swap.new_answer(i, self.epoch) if self.swap is not None else None
            if new is None:
                continue
            if self.swap.plans[i] is not None:
                planned.append((k, i, new))
            elif (row := self.swap.swapped_row(i, new)) is not None:
                whole.append((k, row))
        if planned or whole:
            plans = self.swap.plans
            answers = sorted({lead + new for _, i, new in planned for lead in plans[i].leads})
            texts = answers + [self.prompt_format.prompt(r, self.tokenizer) for _, r in whole]
            ids = token_ids(self.tokenizer, texts + [self.prompt_format.completion(r) for _, r in whole])
            answer_ids = dict(zip(answers, ids, strict=False))
            eos = self.tokenizer.eos_token_id
            for k, i, new in planned:
                plan = plans[i]
                by_lead = {lead: answer_ids[lead + new] for lead in plan.leads}
                prompt, completion = plan.join(plan.prompt, by_lead), plan.join(plan.completion, by_lead)
                examples[k] = assemble_example(prompt, completion, eos, self.max_length)
            prompts, completions = ids[len(answers) : len(texts)], ids[len(texts) :]
            for (k, _), prompt, completion in zip(whole, prompts, completions, strict=True):
                examples[k] = assemble_example(prompt, completion, eos, self.max_length)
        return [
            {"input_ids": ex["input_ids"], "labels": ex["labels"], "n_prompt": ex["n_prompt"]}
            for ex in examples
        ]

    @classmethod
    def from_examples(cls, examples: Sequence[Mapping[str, Any]]) -> "StudentDataset":
        """A dataset of already-encoded examples ({input_ids, labels, n_prompt}), without augmentation."""
        ds = cls.__new__(cls)
        ds.tokenizer, ds.rows, ds.max_length, ds.prompt_format = None, [], 0, DEFAULT_FORMAT
        ds.examples, ds.swap, ds.epoch = [dict(ex) for ex in examples], None, 0
        return ds

    @property
    def lengths(self) -> list[int]:
        return [len(ex["input_ids"]) for ex in self.examples]
