"""The student's training rows and their encoding: a row (named columns) becomes token ids and labels.

`load_rows` reads a split and checks, before any training, that every placeholder of the prompt format
is a column. `encode_examples` renders each row's prompt and completion (`PromptFormat`) and tokenises
them in one batch; the loss is on the completion only (its labels; the prompt's are IGNORE_INDEX).
"""

import copy
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from tokenizers import Tokenizer

from dagster_project.student.prompt_format import PromptFormat

if TYPE_CHECKING:  # transformers is heavy to import; only its types are named here
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)
DEFAULT_FORMAT = PromptFormat()  # Context/Question/Answer (see prompt_format.py)


def load_rows(
    data_dir: str | Path, split: str, prompt_format: PromptFormat, extra_columns: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Rows of `<data_dir>/<split>.parquet` with the columns the prompt format reads (and `extra_columns`),
    keeping rows where none of them is empty. A placeholder that is not a column fails here (a
    PromptFormatError naming the column, the template key and the columns there are)."""
    path = Path(data_dir) / f"{split}.parquet"
    available = list(pl.read_parquet_schema(path))
    prompt_format.check_columns(available, str(path))
    columns = list(dict.fromkeys([*prompt_format.columns, *extra_columns]))
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r}; its columns: {', '.join(available)}")
    rows = pl.read_parquet(path, columns=columns).to_dicts()
    return [r for r in rows if all(_filled(r[c]) for c in columns)]


def _filled(value: Any) -> bool:
    return bool(value) if isinstance(value, str) else value is not None


def token_ids(tokenizer: "PreTrainedTokenizerBase", texts: Sequence[str]) -> list[list[int]]:
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


def _raw_backend(tokenizer: "PreTrainedTokenizerBase") -> Tokenizer | None:
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
    tokenizer: "PreTrainedTokenizerBase",
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
    tokenizer: "PreTrainedTokenizerBase",
    row: Mapping[str, Any],
    max_length: int,
    prompt_format: PromptFormat = DEFAULT_FORMAT,
) -> dict:
    """Token ids and labels for one example (see `encode_examples`)."""
    return encode_examples(tokenizer, [row], max_length, prompt_format)[0]
