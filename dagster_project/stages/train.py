"""Stage `train`: fine-tune the student, a causal LM, on the deduplicated grounded QA examples.

Reads the `train` section of params.yaml and `<data>/train.parquet` + `<data>/val.parquet`; writes a
`from_pretrained`-loadable checkpoint (model + tokenizer), `train_log.json` and `prompt_format.json`
(the format the evaluate stage must ask in) into `--out`.

Offline default (`base_model: null`): a byte-level BPE tokenizer is trained on the training texts and
a tiny GPT-2 is initialised from config, so nothing is downloaded. With `base_model` set, the tokenizer
and weights come from `from_pretrained(base_model)` (a hub name or a local path).

Each example is a prompt and a completion, in the recipe's `train.prompt_format` (see
`prompt_format.py`; the default below, or a chat template); the loss is on the completion only:

    Context: {context}
    Question: {question}
    Answer: {answer}<eos>

The same script runs on CPU, one GPU (bf16 where supported) or N GPUs (`torchrun -m ...`), through the
Hugging Face `Trainer`.
"""

import array
import copy
import functools
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_pt_utils import get_length_grouped_indices

from dagster_project.stages import fast_kernels
from dagster_project.stages import prompt_format as prompt_format_module
from dagster_project.stages.common import atomic_output_dir, load_stage_params, stage_parser, write_json
from dagster_project.stages.fast_kernels import linear_cross_entropy, plain_lm_head, use_fused_kernels
from dagster_project.stages.prompt_format import PromptFormat

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)


DEFAULT_FORMAT = PromptFormat()  # Context/Question/Answer (see prompt_format.py)

# Compiled once: answer swap runs these on most examples of every batch, and `re`'s own cache (512
# patterns) is flushed by the per-answer patterns below, which made each call recompile.
_DIGITS = re.compile(r"\d+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_LOWER_WORD = re.compile(r"\b[a-z]+\b")


# ---------------------------------------------------------------------------------------------------
# Data


def load_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of `<data_dir>/<split>.parquet` with non-empty context, question and answer."""
    df = pl.read_parquet(Path(data_dir) / f"{split}.parquet", columns=["context", "question", "answer"])
    return [r for r in df.to_dicts() if r["context"] and r["question"] and r["answer"]]


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """The ids of each text, without special tokens. Through the Rust tokenizer directly when there is
    one, as one batch and without character offsets (`encode_batch_fast`): answer swap re-encodes most
    examples of every batch, and a tokenizer call per text cost ~2x as much."""
    if not texts:
        return []
    backend = _raw_backend(tokenizer)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # tokenizers < 0.21: no _fast
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


_RAW_BACKENDS: "weakref.WeakKeyDictionary[Any, Tokenizer]" = weakref.WeakKeyDictionary()


def _raw_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """The tokenizer's Rust backend set to neither pad nor truncate (None without one), made once per
    tokenizer. transformers sets the backend's padding and truncation per call of its own, and a
    pretrained tokenizer.json can leave them on; used raw, the backend would pad every text of a batch
    to the longest, or cut a prompt from the right (prompts are cut from the left, here)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or (backend.padding is None and backend.truncation is None):
        return backend
    if tokenizer not in _RAW_BACKENDS:
        raw = copy.copy(backend)
        raw.no_padding()
        raw.no_truncation()
        _RAW_BACKENDS[tokenizer] = raw
    return _RAW_BACKENDS[tokenizer]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_length: int,
    prompt_format: PromptFormat = DEFAULT_FORMAT,
) -> list[dict]:
    """Token ids and labels for each example; a prompt is cut from the left if it is too long."""
    if not rows:
        return []
    texts = [prompt_format.prompt(r, tokenizer) for r in rows] + [prompt_format.completion(r) for r in rows]
    ids = token_ids(tokenizer, texts)
    return [
        assemble_example(prompt, completion, tokenizer.eos_token_id, max_length)
        for prompt, completion in zip(ids[: len(rows)], ids[len(rows) :], strict=True)
    ]


def assemble_example(prompt: list[int], completion: list[int], eos_id: int, max_length: int) -> dict:
    """One example from the token ids of its prompt and completion: eos after the completion, which
    keeps at most half of `max_length`; the prompt loses its start if the whole is too long."""
    completion = (completion + [eos_id])[: max_length // 2]
    prompt = prompt[-(max_length - len(completion)) :]
    return {
        "input_ids": prompt + completion,
        "labels": [IGNORE_INDEX] * len(prompt) + completion,
        "n_prompt": len(prompt),
        "truncated": len(prompt) + len(completion) >= max_length,
    }


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    row: Mapping[str, Any],
    max_length: int,
    prompt_format: PromptFormat = DEFAULT_FORMAT,
) -> dict:
    """Token ids and labels for one example (see `encode_examples`)."""
    return encode_examples(tokenizer, [row], max_length, prompt_format)[0]


def answer_shape(answer: str) -> str:
    """A coarse type of an answer: digit runs -> 0, capitalised words -> A, lowercase runs -> a.

    "Fenselbri Tostoseld" -> "A A", "3,126,371" -> "0,0,0", "1725" -> "0", "the flute" -> "a a".
    """
    shape = re.sub(r"\d+", "0", answer)
    shape = re.sub(r"[A-Z]\w*", "A", shape)
    return re.sub(r"[a-z]\w*", "a", shape)


def swap_answer(row: Mapping[str, Any], new_answer: str) -> dict[str, Any] | None:
    """The example with every whole-word occurrence of its answer in the context replaced by
    `new_answer`, and `new_answer` as the answer; None if the swap is impossible or ambiguous."""
    answer = row["answer"]
    pattern = _whole_word(answer)
    if new_answer == answer or answer in row["question"] or not pattern.search(row["context"]):
        return None
    return {**row, "context": pattern.sub(lambda _: new_answer, row["context"]), "answer": new_answer}


@functools.lru_cache(maxsize=65536)
def _whole_word(text: str) -> re.Pattern:
    """A pattern matching `text` as a whole word (not inside a longer word)."""
    return re.compile(rf"(?<!\w){re.escape(text)}(?!\w)")


def _word_pools(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Capitalised words of the contexts (name material) and lowercase words of the answers."""
    names = sorted({w for r in rows for w in re.findall(r"\b[A-Z][a-z]{3,}\b", r["context"])})
    lower = sorted({w for r in rows for w in re.findall(r"\b[a-z]+\b", r["answer"])})
    return names, lower


def novel_answer(answer: str, rng: random.Random, names: Sequence[str], lower: Sequence[str]) -> str:
    """An answer of the same shape as `answer` that is (almost surely) new: a digit run becomes random
    digits of the same length; a capitalised word becomes the front of one name spliced to the back of
    another; a lowercase word becomes another answer word.

    "Imgabel" -> e.g. "Tosgar", "3,126,371" -> e.g. "8,403,915", "dyed cloth" -> e.g. "salt wine".
    """

    def digits(m: re.Match) -> str:
        n = len(m.group())
        return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))

    def name(m: re.Match) -> str:
        if len(names) < 2:
            return m.group()
        a, b = rng.sample(names, 2)
        return a[: rng.randint(2, max(2, len(a) - 2))] + b[rng.randint(2, len(b) - 2) :]

    def word(m: re.Match) -> str:
        return rng.choice(lower) if lower else m.group()

    out = _DIGITS.sub(digits, answer)
    out = _CAPITALISED.sub(name, out)
    return _LOWER_WORD.sub(word, out)


SWAP_MARK = "\ue000"  # a private-use character: where an answer goes in a swap plan's texts
_Pieces = tuple[list[list[int]], list[str]]  # token ids between the answer's places, and each place's lead


class SwapPlan:
    """An example's prompt and completion as token ids around its answer's places, so an answer swap
    encodes only the new answer, not the whole example again (on CPU that re-encoding was ~8% of a
    training step: a tokenizer call right after the model's kernels ran cost ~4x one made alone).

    A text is `ids[0] + enc(leads[0] + answer) + ids[1] + ...`. A space before an answer moves into its
    lead, because byte-level BPE glues a space to the word after it. `plan_swaps` makes a plan only
    where joining gives exactly the ids of encoding the text whole, checked on the example's own answer
    and on a stand-in new one; a new answer has the same shape (`novel_answer`), so the same pre-token
    boundaries. `leads` holds the distinct leads, the answer encodings a swap needs.
    """

    __slots__ = ("prompt", "completion", "leads")

    def __init__(self, prompt: _Pieces, completion: _Pieces) -> None:
        self.prompt, self.completion = prompt, completion
        self.leads = tuple(sorted(set(prompt[1]) | set(completion[1])))

    @staticmethod
    def join(text: _Pieces, answer_ids: Mapping[str, list[int]]) -> list[int]:
        """The ids of `text` with the answer whose ids after each lead are `answer_ids[lead]`."""
        pieces, leads = text
        ids = list(pieces[0])
        for lead, piece in zip(leads, pieces[1:], strict=True):
            ids += answer_ids[lead]
            ids += piece
        return ids


def _split_at_marks(text: str) -> tuple[list[str], list[str]] | None:
    """(pieces, leads) of a text around its SWAP_MARKs, or None where a pre-token could span an answer's
    edge: the answer must follow a space (its lead), a line break or the start of the text (pre-tokenizers
    like Llama 3's and Qwen's glue one punctuation mark to the word after it), and must not be followed
    by a letter, digit or apostrophe (e.g. the contraction "'s")."""
    parts = text.split(SWAP_MARK)
    leads = []
    for k in range(len(parts) - 1):
        lead = " " if parts[k].endswith(" ") else ""
        parts[k] = parts[k][: len(parts[k]) - len(lead)]
        if not lead and parts[k][-1:] not in ("", "\n", "\r"):
            return None
        after = parts[k + 1][:1]
        if after.isalnum() or after in ("'", "’"):
            return None
        leads.append(lead)
    return parts, leads


def _shifted(answer: str) -> str:
    """A stand-in new answer of the same shape: each ASCII letter one on in its case (z -> a), each digit
    one on (9 -> 1, never 0)."""

    def shift(c: str) -> str:
        if c.isascii() and c.isalpha():
            base = ord("a") if c.islower() else ord("A")
            return chr(base + (ord(c) - base + 1) % 26)
        return str(int(c) % 9 + 1) if c.isascii() and c.isdigit() else c

    return "".join(shift(c) for c in answer)


def plan_swaps(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, Any]], prompt_format: PromptFormat
) -> list[SwapPlan | None]:
    """A `SwapPlan` for each row whose answer swap can be encoded by pieces exactly; None for the others
    (re-encoded whole when swapped). A plan must give the ids of encoding the text whole both for the
    row's own answer and for a stand-in new one (`_shifted`: BPE merges across a piece edge would show).
    One tokenizer call for all rows."""
    # row index -> (prompt (pieces, leads), completion (pieces, leads), the row with the stand-in answer)
    candidates: dict[int, tuple[tuple[list[str], list[str]], tuple[list[str], list[str]], dict]] = {}
    for i, row in enumerate(rows):
        answer, context = row["answer"], row["context"]
        if not (answer[:1].isalnum() and answer[-1:].isalnum()):
            continue
        # None: the answer is in the question or not in the context (swap_answer's own rules)
        stand_in = swap_answer(row, _shifted(answer))
        if stand_in is None or any(SWAP_MARK in str(v) for v in row.values()):
            continue
        marked = {**row, "context": _whole_word(answer).sub(SWAP_MARK, context), "answer": SWAP_MARK}
        prompt = _split_at_marks(prompt_format.prompt(marked, tokenizer))
        completion = _split_at_marks(prompt_format.completion(marked))
        if prompt is not None and completion is not None:
            candidates[i] = (prompt, completion, stand_in)
    texts: list[str] = []
    for i, ((prompt_pieces, _), (completion_pieces, _), stand_in) in candidates.items():
        texts += [*prompt_pieces, *completion_pieces]
        for version in (rows[i], stand_in):
            answer = version["answer"]
            texts += [answer, " " + answer, prompt_format.prompt(version, tokenizer)]
            texts.append(prompt_format.completion(version))
    ids = iter(token_ids(tokenizer, texts))
    plans: list[SwapPlan | None] = [None] * len(rows)
    for i, ((prompt_pieces, prompt_leads), (completion_pieces, completion_leads), _) in candidates.items():
        plan = SwapPlan(
            ([next(ids) for _ in prompt_pieces], prompt_leads),
            ([next(ids) for _ in completion_pieces], completion_leads),
        )
        exact = True
        for _ in range(2):  # the row's own answer, then the stand-in
            answer_ids = {"": next(ids), " ": next(ids)}
            whole_prompt, whole_completion = next(ids), next(ids)
            exact &= plan.join(plan.prompt, answer_ids) == whole_prompt
            exact &= plan.join(plan.completion, answer_ids) == whole_completion
        if exact:
            plans[i] = plan
    return plans


class QADataset(torch.utils.data.Dataset):
    """Tokenised examples; with `swap_prob` > 0, answer-swap augmentation on every access.

    Answer swap: with probability `swap_prob` an example is shown with its answer replaced, in the
    context and as the target, by a new answer of the same shape (see `novel_answer`). The answer then
    changes from epoch to epoch and is mostly a string never seen before, so it cannot be memorised:
    the only way to be right is to read it off the context (to copy). Without it a tiny model trained
    on a few hundred passages memorises the training answers and never learns to copy, so it fails on
    the held-out entities of the test set. Draws are seeded by (seed, index, epoch) -- `epoch` is set
    by the trainer at the start of each epoch -- so a run is deterministic and a run resumed from a
    checkpoint sees exactly the examples the uninterrupted run would have seen.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        rows: Sequence[Mapping[str, Any]],
        max_length: int,
        swap_prob: float = 0.0,
        seed: int = 0,
        prompt_format: PromptFormat = DEFAULT_FORMAT,
    ):
        self.tokenizer, self.rows, self.max_length = tokenizer, list(rows), max_length
        self.swap_prob, self.seed, self.prompt_format = swap_prob, seed, prompt_format
        self.examples = encode_examples(tokenizer, self.rows, max_length, prompt_format)
        self.names, self.lower = _word_pools(self.rows)
        self.plans = plan_swaps(tokenizer, self.rows, prompt_format) if swap_prob > 0 else []
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.examples)

    def _new_answer(self, i: int) -> str | None:
        """The answer example `i` is shown with this epoch, or None (not drawn for a swap)."""
        if self.swap_prob <= 0:
            return None
        rng = random.Random(f"{self.seed}:{i}:{self.epoch}")
        if rng.random() >= self.swap_prob:
            return None
        return novel_answer(self.rows[i]["answer"], rng, self.names, self.lower)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The examples at `indices`; the DataLoader asks for a whole batch at once, so everything a
        batch's swaps need is encoded in one call: the new answers of planned examples (`SwapPlan`),
        and the whole text of the others."""
        examples = [self.examples[i] for i in indices]
        planned, whole = [], []
        for k, i in enumerate(indices):
            new = self._new_answer(i)
            if new is None or new == self.rows[i]["answer"]:
                continue
            if self.plans[i] is not None:
                planned.append((k, i, new))
            elif (row := swap_answer(self.rows[i], new)) is not None:
                whole.append((k, row))
        if planned or whole:
            answers = sorted({lead + new for _, i, new in planned for lead in self.plans[i].leads})
            texts = answers + [self.prompt_format.prompt(r, self.tokenizer) for _, r in whole]
            ids = token_ids(self.tokenizer, texts + [self.prompt_format.completion(r) for _, r in whole])
            answer_ids = dict(zip(answers, ids, strict=False))
            eos = self.tokenizer.eos_token_id
            for k, i, new in planned:
                plan = self.plans[i]
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
    def from_examples(cls, examples: Sequence[Mapping[str, Any]], seed: int = 0) -> "QADataset":
        """A dataset of already-encoded examples ({input_ids, labels, n_prompt}), without augmentation."""
        ds = cls.__new__(cls)
        ds.tokenizer, ds.rows, ds.max_length, ds.swap_prob, ds.seed = None, [], 0, 0.0, seed
        ds.examples, ds.names, ds.lower, ds.epoch = [dict(ex) for ex in examples], [], [], 0
        ds.plans = []
        return ds

    @property
    def lengths(self) -> list[int]:
        return [len(ex["input_ids"]) for ex in self.examples]


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


# ---------------------------------------------------------------------------------------------------
# Tokenizer and model


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (GPT-2 style), with eos and pad tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def build_student(
    params: Mapping[str, Any],
    train_rows: Sequence[Mapping[str, Any]],
    prompt_format: PromptFormat = DEFAULT_FORMAT,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the untrained (or pretrained) model the params ask for.

    The offline default tokenizer is trained on the training texts in `prompt_format` (style plain:
    it has no chat template). A pretrained tokenizer must be able to render `prompt_format`.
    """
    base_model = params["base_model"]
    # Read every key of the section up front, whichever branch uses it (a test checks this).
    vocab_size, n_layer, n_head, n_embd = (params[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd"))
    max_length = params["max_length"]
    if base_model:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        prompt_format.check_tokenizer(tokenizer)  # before the weights load: fail fast
        model = AutoModelForCausalLM.from_pretrained(base_model)
        return tokenizer, model
    prompt_format.check_tokenizer(None)  # style chat: the tokenizer trained here has no chat template
    texts = [prompt_format.prompt(r) + prompt_format.completion(r) for r in train_rows]
    tokenizer = train_tokenizer(texts, vocab_size)
    tokenizer.model_max_length = max_length
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max_length,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(sinusoidal_positions(max_length, n_embd))
    return tokenizer, model


def sinusoidal_positions(n_positions: int, dim: int, scale: float = 0.02) -> torch.Tensor:
    """Sinusoidal position vectors (Vaswani et al.) at GPT-2's init scale, to initialise `wpe`.

    They stay trainable. Starting from vectors whose dot products depend on relative offset lets a
    tiny model find "the token after the one I just copied" (a previous-token head, the first half
    of an induction head) in far fewer steps than from random position vectors.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table * scale * math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------
# Training


# Keys added after the first release of the `train` section: a params.yaml without them keeps today's
# behaviour. params.yaml lists them all (the e2e test checks that every key there is read).
TRAIN_DEFAULTS: dict[str, Any] = {
    "gradient_accumulation_steps": 1,
    "lr_scheduler": "cosine",  # cosine | linear | constant_with_warmup
    "packing": False,
    "eval_steps": 0,  # 0: evaluate once, at the end
    "early_stopping_patience": 0,  # evaluations without a better val loss before stopping (0: off)
    "save_steps": 200,  # checkpoint every N optimizer steps for resume (0: no checkpoints)
    "precision": "auto",  # auto (bf16 on a GPU that supports it) | bf16 | fp16 | fp32
    "torch_compile": False,
    "lora": {"enabled": False, "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None},
    "prompt_format": dict(prompt_format_module.DEFAULT_PARAMS),  # see prompt_format.py
}
CHECKPOINT_ROOT_ENV = "DISTILL_TRAIN_CHECKPOINTS"  # operational (not a param): where checkpoints live
DEFAULT_CHECKPOINT_ROOT = ".cache/train-checkpoints"


def _param(params: Mapping[str, Any], key: str) -> Any:
    return params[key] if key in params else TRAIN_DEFAULTS[key]


def _plain(obj: Any) -> Any:
    """A JSON-ready copy of a (tracked) params mapping."""
    if isinstance(obj, Mapping):
        return {k: _plain(obj[k]) for k in obj}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def run_fingerprint(params: Mapping[str, Any], train_rows: Sequence, val_rows: Sequence) -> str:
    """What a checkpoint must match to be resumed: params, data, the code of this file, of the prompt
    format and of the fused kernels, and the world size."""
    h = hashlib.sha256()
    raw = getattr(params, "_data", params)  # a TrackedParams' plain data: hashing is not "reading" a key
    h.update(json.dumps(_plain(raw), sort_keys=True, default=str).encode())
    h.update(json.dumps([list(train_rows), list(val_rows)], sort_keys=True, default=str).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(prompt_format_module.__file__).read_bytes())
    h.update(Path(fast_kernels.__file__).read_bytes())
    h.update(str(_world_size()).encode())
    return h.hexdigest()[:16]


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-<step>` folder in `run_dir` (the Trainer writes
    trainer_state.json last, so a folder cut short by a kill is skipped), or None."""
    done = [
        d
        for d in Path(run_dir).glob("checkpoint-*")
        if d.name.split("-")[-1].isdigit() and (d / "trainer_state.json").exists()
    ]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


def _world_size() -> int:
    """How many processes train together (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class _LossLog(TrainerCallback):
    """Collects every logged loss (the Trainer's own history, kept small and JSON-ready), and sets the
    dataset's epoch for the answer-swap draws."""

    def __init__(self, dataset: "QADataset | None" = None) -> None:
        self.history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if self.dataset is not None:
            self.dataset.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if logs and "loss" in logs:
            entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"]}
            for key in ("learning_rate", "tokens_per_s"):
                if key in logs:
                    entry[key] = logs[key]
            self.history.append(entry)
        if logs and "eval_loss" in logs:
            self.eval_history.append({"step": state.global_step, "eval_loss": logs["eval_loss"]})


def _truncate_curve(tsv: Path, last_step: int) -> None:
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


class _Curves(TrainerCallback):
    """Training curves with dvclive (`dvc plots show`/`diff`): train/loss, train/learning_rate,
    train/tokens_per_s and eval/loss per optimizer step, written on the main process only.

    On resume from step N, rows logged after N by the killed run are dropped before logging goes on.
    """

    KEYS = {
        "loss": "train/loss",
        "learning_rate": "train/learning_rate",
        "tokens_per_s": "train/tokens_per_s",
    }

    def __init__(self, live_dir: Path, resume_step: int) -> None:
        self.live_dir, self.resume_step, self.live = live_dir, resume_step, None
        if _is_main_process():
            self.live = self._open()  # here, not at train begin: opening costs ~1 s (it imports DVC)

    def _open(self) -> Any:
        from dvclive import Live

        if self.resume_step:
            # A kill can land while dvclive writes: keep only whole rows up to the resumed step, and drop a
            # torn summary (dvclive would fail to read it; the next log writes it again).
            for tsv in (self.live_dir / "plots").rglob("*.tsv"):
                _truncate_curve(tsv, self.resume_step)
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
    """The Trainer's progress bar (steps, elapsed, ETA) with the latest tokens/s and loss beside it."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        super().on_log(args, state, control, logs=logs, **kwargs)
        if self.training_bar is not None and logs and "tokens_per_s" in logs:
            self.training_bar.set_postfix(
                {"tokens/s": f"{logs['tokens_per_s']:,.0f}", "loss": f"{logs['loss']:.4g}"}, refresh=False
            )


class QATrainer(Trainer):
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
        # the architecture allows it; evaluation always goes through the model's own logits.
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
        self._loss_fn = torch.compile(qa_loss, dynamic=None) if compile_loss else qa_loss

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001, ANN202
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, QADataset):
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
            targets, weights = qa_loss_weights(inputs["input_ids"], labels, prompt_mask, weight)
            loss = linear_cross_entropy(
                hidden.flatten(0, 1), head_weight, targets.flatten(), weights.flatten()
            )
            return (loss, None) if return_outputs else loss
        outputs = model(**forward)
        loss = self._loss_fn(outputs.logits, inputs["input_ids"], labels, prompt_mask, weight)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            now = time.perf_counter()
            elapsed = max(now - self._time_at_last_log, 1e-9)
            world = max(1, self.args.world_size)
            logs["tokens_per_s"] = round((self.tokens_seen - self._tokens_at_last_log) * world / elapsed, 1)
            self._tokens_at_last_log, self._time_at_last_log = self.tokens_seen, now
        super().log(logs, start_time)


def qa_loss_weights(
    input_ids: torch.Tensor, labels: torch.Tensor, prompt_mask: torch.Tensor, prompt_loss_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, weights), both batch x length: position t predicts token t+1 with weight 1/(number of
    completion targets) on completion targets, `prompt_loss_weight`/(number of prompt targets) on prompt
    targets, and 0 elsewhere (padding, and the last position, which predicts nothing). The weighted sum
    of the token losses is `qa_loss`."""
    targets = torch.roll(input_ids, -1, dims=1)
    completion = torch.roll(labels != IGNORE_INDEX, -1, dims=1)
    completion[:, -1] = False
    weights = completion.float() / completion.sum().clamp(min=1)
    if prompt_loss_weight > 0:
        prompt = torch.roll(prompt_mask, -1, dims=1).float()  # predicting prompt tokens 2..n
        prompt[:, -1] = 0
        weights = weights + prompt_loss_weight * prompt / prompt.sum().clamp(min=1)
    return targets, weights


def qa_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompt_loss_weight: float,
) -> torch.Tensor:
    """Mean completion-token loss + `prompt_loss_weight` x mean prompt-token loss, in fp32.

    One cross entropy over every position, weighted by `qa_loss_weights`. Computing on the unsliced
    logits avoids a copy of the (batch x length x vocabulary) tensor.
    """
    targets, weights = qa_loss_weights(input_ids, labels, prompt_mask, prompt_loss_weight)
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

    def __init__(self, dataset: QADataset, batch_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):  # noqa: ANN204
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.dataset.epoch)
        return iter(get_length_grouped_indices(self.dataset.lengths, self.batch_size, generator=generator))


def compile_blocks(model: PreTrainedModel) -> int:
    """torch.compile each transformer block of `model` in place; returns how many were compiled.

    Regional rather than whole-model compilation: the attention-mask logic stays eager, where
    transformers can see that a batch without padding needs no mask and give attention the fused causal
    (flash) kernel. Traced inside a whole-model compile it always builds a 4-D mask instead (torch < 2.14),
    which rules that kernel out: on an H100, GPT-2 124M at 1,024 tokens trained 8% faster this way
    (benchmarks/train_gpu.py). Blocks are found by the classes the model names in `_no_split_modules`
    (GPT2Block, LlamaDecoderLayer, Qwen2DecoderLayer...); a model that names none is compiled whole.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        block.compile()
    if not blocks:
        model.compile()
    return len(blocks)


def _precision(setting: str) -> dict[str, bool]:
    """bf16/fp16 flags for TrainingArguments; `auto` is bf16 on a GPU that supports it, else fp32."""
    cuda = torch.cuda.is_available()
    if setting == "auto":
        setting = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if setting in ("bf16", "fp16") and not cuda:
        print(f"train: precision {setting} asked for but no GPU: training in fp32")
        setting = "fp32"
    return {"bf16": setting == "bf16", "fp16": setting == "fp16"}


def apply_lora(model: PreTrainedModel, lora: Mapping[str, Any]) -> PreTrainedModel:
    """The model wrapped with LoRA adapters (peft) when `lora.enabled`, else the model itself.

    Every key of the block is read either way. `target_modules: null` takes peft's default for the
    architecture (e.g. GPT-2's `c_attn`). The adapters are merged into the weights before saving,
    so the student stays a plain `from_pretrained`-loadable checkpoint.
    """
    enabled, r, alpha, dropout = lora["enabled"], lora["r"], lora["alpha"], lora["dropout"]
    targets = lora["target_modules"]
    if not enabled:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets) if targets else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


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
        remove_unused_columns=False,  # keep prompt_mask for QATrainer.compute_loss
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
        # Without use_cpu, transformers leaves N CPU processes (torchrun) undistributed: each would train
        # alone on all the data and act as rank 0.
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if not torch.cuda.is_available() and _world_size() > 1 else None,
        **precision_flags,
    )


def train_student(
    train_rows: Sequence[Mapping[str, Any]],
    val_rows: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    out_dir: str | Path,
    checkpoint_root: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train the student on `train_rows`, score it on `val_rows`, save it into `out_dir`; return the log.

    Checkpoints go to `<checkpoint_root>/<run fingerprint>/` (default `.cache/train-checkpoints`, or
    $DISTILL_TRAIN_CHECKPOINTS): outside the DVC output, so a killed run resumes from its last checkpoint
    when it is rerun with the same params, data and code. The folder is deleted after success.
    """
    seed = params["seed"]
    set_seed(seed)
    # Read every key of the section up front, whichever branch uses it (a test checks this).
    accumulation = _param(params, "gradient_accumulation_steps")
    scheduler, packing = _param(params, "lr_scheduler"), _param(params, "packing")
    eval_steps, patience = _param(params, "eval_steps"), _param(params, "early_stopping_patience")
    save_steps, precision = _param(params, "save_steps"), _param(params, "precision")
    compile_model, lora = _param(params, "torch_compile"), _param(params, "lora")
    prompt_format = PromptFormat.from_params(_param(params, "prompt_format"))  # a bad template fails here

    root = Path(checkpoint_root or os.environ.get(CHECKPOINT_ROOT_ENV) or DEFAULT_CHECKPOINT_ROOT)
    run_dir = root / run_fingerprint(params, train_rows, val_rows)
    resume_from = last_checkpoint(run_dir) if save_steps else None

    tokenizer, model = build_student(params, train_rows, prompt_format)
    if resume_from is not None and (run_dir / "tokenizer").exists():
        tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")  # the very tokenizer of the run
    use_fused_kernels(model)  # same function, fewer ops (see fast_kernels.py)
    model = apply_lora(model, lora)
    if compile_model:
        compile_blocks(model)
    max_length = min(params["max_length"], getattr(model.config, "n_positions", None) or params["max_length"])
    train_ds = QADataset(tokenizer, train_rows, max_length, params["answer_swap_prob"], seed, prompt_format)
    val_ds = QADataset(tokenizer, val_rows, max_length, prompt_format=prompt_format)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    batch_size = params["batch_size"]
    epochs = params["epochs"]
    world_size = _world_size()  # torchrun: each process takes batch_size examples per step
    steps_per_epoch = math.ceil(math.ceil(len(train_ds) / (batch_size * world_size)) / accumulation)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    evaluating = eval_steps > 0 and len(val_ds) > 0
    if evaluating and (save_steps or patience):
        save_steps = eval_steps  # a checkpoint at every evaluation, so the best model can be restored
    flags = _precision(precision)
    print(
        f"train: {len(train_ds)} examples ({sum(e['truncated'] for e in train_ds.examples)} truncated), "
        f"val: {len(val_ds)}, model: {n_params / 1e6:.2f}M params ({n_trainable / 1e6:.2f}M trainable), "
        f"vocab {len(tokenizer)}, {total_steps} steps of {batch_size}x{accumulation}"
        + (f" x {world_size} processes" if world_size > 1 else "")
        + (", packed" if packing else "")
    )
    if resume_from is not None:
        print(f"train: resumed from {resume_from} (step {resume_from.name.split('-')[-1]})")
    if _is_main_process() and save_steps:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "tokenizer").exists():
            tokenizer.save_pretrained(run_dir / "tokenizer")

    losses = _LossLog(train_ds)
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from is not None else 0
    callbacks = [losses, _Curves(run_dir / "dvclive", resume_step), *callbacks]
    if evaluating and patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    args = training_arguments(
        run_dir,
        total_steps=total_steps,
        batch_size=batch_size,
        accumulation=accumulation,
        learning_rate=params["learning_rate"],
        warmup_steps=math.ceil(params["warmup_ratio"] * total_steps),
        scheduler=scheduler,
        save_steps=save_steps,
        eval_steps=eval_steps if evaluating else 0,
        seed=seed,
        precision_flags=flags,
    )
    trainer = QATrainer(
        model=model,
        prompt_loss_weight=params["prompt_loss_weight"],
        compile_loss=compile_model,
        fused_lm_head=not compile_model and world_size == 1 and not torch.cuda.is_available(),
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds if len(val_ds) else None,
        data_collator=make_collator(tokenizer.pad_token_id, packing, max_length),
        callbacks=callbacks,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    train_seconds = time.perf_counter() - started
    val_loss = trainer.evaluate()["eval_loss"] if len(val_ds) else None

    steps_run = trainer.state.global_step - resume_step
    log = {
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
        "world_size": args.world_size,
        "bf16": flags["bf16"],
        "fp16": flags["fp16"],
        "packing": bool(packing),
        "loss_history": losses.history,
        "eval_history": losses.eval_history,
    }
    if trainer.is_world_process_zero():
        out_dir = Path(out_dir)
        final = trainer.model
        if hasattr(final, "merge_and_unload"):  # LoRA: merge the adapters into a plain checkpoint
            final = final.merge_and_unload()
        final.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        prompt_format.save(out_dir)  # the evaluate stage asks the student in this format
        write_json(out_dir / "train_log.json", log)
        if (run_dir / "dvclive").exists():
            shutil.copytree(run_dir / "dvclive", out_dir / "dvclive")
        shutil.rmtree(run_dir, ignore_errors=True)  # success: the checkpoints are not needed any more
    return log


def main() -> None:
    """CLI: `python -m dagster_project.stages.train --params P --data DEDUPED --out STUDENT`.

    N GPUs: `torchrun --nproc-per-node N -m dagster_project.stages.train ...` (or `accelerate launch -m
    ...`): the Trainer runs DDP; only rank 0 writes `--out` (atomically) and deletes the checkpoints.
    """
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train.parquet and val.parquet")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, "train")
    train_rows = load_split(args.data, "train")
    val_rows = load_split(args.data, "val") if (Path(args.data) / "val.parquet").exists() else []
    if not train_rows:
        raise SystemExit(f"error: {args.data}/train.parquet has no usable rows (context, question, answer).")
    if _is_main_process():
        with atomic_output_dir(args.out) as tmp:
            log = train_student(train_rows, val_rows, params, tmp)
    else:  # other DDP ranks train along but write nothing
        train_student(train_rows, val_rows, params, args.out)
        return
    summary = {
        k: log[k] for k in ("train_loss", "val_loss", "train_seconds", "tokens_per_second", "n_params")
    }
    print(f"train: wrote {args.out}: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
