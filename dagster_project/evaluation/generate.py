"""The student's answers: the checkpoint loaded for generation, and greedy or sampled decoding in its prompt
format."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dagster_project.student.prompt_format import PromptFormat


def load_student(
    student_dir: str | Path, precision: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The checkpoint and its tokenizer for generation. `auto`: on a GPU in bf16 where it has it
    (generation is memory-bound), else fp32; `bf16`: also on a CPU with native bf16 (prefill is
    compute-bound there: about 1.8x faster); `fp32`: always fp32."""
    from dagster_project.student.model import cpu_has_bf16

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    if torch.cuda.is_available():
        bf16 = precision != "fp32" and torch.cuda.is_bf16_supported()
        model = model.to("cuda", dtype=torch.bfloat16 if bf16 else None)
    elif precision == "bf16" and cpu_has_bf16():
        model = model.to(dtype=torch.bfloat16)
    return model, tokenizer


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    prompt_format: PromptFormat | None = None,
) -> list[str]:
    """Greedy answers for each row (an item with its gold row's columns), asked in `prompt_format` (the
    student's; the default format when None), in the order of `rows`."""
    answers = _decode(model, tokenizer, rows, max_new_tokens, batch_size, prompt_format, {"do_sample": False})
    return [a[0] for a in answers]


@torch.no_grad()
def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    prompt_format: PromptFormat | None = None,
    *,
    n: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[str]]:
    """`n` sampled answers per row (temperature, nucleus `top_p`), in the order of `rows`.

    Batches hold `batch_size` rows (`batch_size * n` sequences). The same seed, batch size and device
    give the same answers; torch's global generator is seeded once, before the first batch.
    """
    if temperature <= 0:
        raise ValueError("sampling needs temperature > 0 (temperature 0 is greedy: use generate_answers)")
    torch.manual_seed(seed)
    settings = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return _decode(model, tokenizer, rows, max_new_tokens, batch_size, prompt_format, settings, n)


def _decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
    prompt_format: PromptFormat | None,
    settings: Mapping[str, Any],
    n: int = 1,
) -> list[list[str]]:
    """`n` answers per row with `model.generate(**settings)`; each stops at end-of-text or a newline."""
    prompt_format = prompt_format or PromptFormat()
    prompt_format.check_tokenizer(tokenizer)  # style chat without a chat template: fail before any work
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # a too-long prompt loses the start of its context, never the question
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    n_positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    max_prompt = max(8, (n_positions or 2048) - max_new_tokens)
    prompts = [prompt_format.prompt(r, tokenizer) for r in rows]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths, less padding
    answers: list[list[str]] = [[] for _ in prompts]
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="generate", unit="batch"):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [prompts[i] for i in idx],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_prompt,
            add_special_tokens=False,
        ).to(model.device)
        out = model.generate(
            **batch,
            **settings,
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for k, text in enumerate(texts):  # sequences of one prompt are consecutive
            answers[idx[k // n]].append(text.split("\n")[0].strip())
    return answers
