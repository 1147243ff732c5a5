"""The student model: its tokenizer, the model itself (a tiny GPT-2 from config, or a pretrained causal
LM), LoRA adapters, regional compilation and the training precision."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from dagster_project.student.data import DEFAULT_FORMAT
from dagster_project.student.prompt_format import PromptFormat

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


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
    params: Any,
    train_rows: Sequence[Mapping[str, Any]],
    prompt_format: PromptFormat = DEFAULT_FORMAT,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the untrained (or pretrained) model the params (`train`'s model: base_model,
    vocab_size, n_layer, n_head, n_embd, max_length) ask for.

    The offline default tokenizer is trained on the training texts in `prompt_format` (style plain:
    it has no chat template). A pretrained tokenizer must be able to render `prompt_format`.
    """
    if params.base_model:
        tokenizer = AutoTokenizer.from_pretrained(params.base_model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        prompt_format.check_tokenizer(tokenizer)  # before the weights load: fail fast
        model = AutoModelForCausalLM.from_pretrained(params.base_model)
        return tokenizer, model
    prompt_format.check_tokenizer(None)  # style chat: the tokenizer trained here has no chat template
    texts = [prompt_format.prompt(r) + prompt_format.completion(r) for r in train_rows]
    tokenizer = train_tokenizer(texts, params.vocab_size)
    tokenizer.model_max_length = params.max_length
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=params.max_length,
        n_embd=params.n_embd,
        n_layer=params.n_layer,
        n_head=params.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(sinusoidal_positions(params.max_length, params.n_embd))
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 `avx512_bf16` or `amx_bf16`; Linux's cpuinfo):
    there bf16 matrix products run about 1.5-2x faster than fp32 (measured on a 2-core AMD EPYC)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_flags(setting: str) -> dict[str, bool]:
    """bf16/fp16 flags for TrainingArguments; `auto` is bf16 on a GPU that supports it, else fp32.

    Training stays fp32 on a CPU, also one with native bf16: measured on the demo's SmolLM2 student (1
    thread, 2-core AMD EPYC with avx512_bf16), transformers' CPU bf16 flag gave 95.4 vs 95.3 tokens/s."""
    cuda = torch.cuda.is_available()
    if setting == "auto":
        setting = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if setting in ("bf16", "fp16") and not cuda:
        print(f"train: precision {setting} asked for but no GPU: training in fp32")
        setting = "fp32"
    return {"bf16": setting == "bf16", "fp16": setting == "fp16"}


def apply_lora(model: PreTrainedModel, lora: Any) -> PreTrainedModel:
    """The model wrapped with LoRA adapters (peft) when `lora.enabled` (`train.lora`'s model), else the
    model itself.

    `target_modules: null` takes peft's default for the architecture (e.g. GPT-2's `c_attn`). The adapters
    are merged into the weights before saving, so the student stays a plain `from_pretrained`-loadable
    checkpoint.
    """
    if not lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
