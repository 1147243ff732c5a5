"""Stage `train`: fine-tune the student, a causal LM, on the deduplicated grounded QA examples.

Reads the `train` section of params.yaml and `<data>/train.parquet` + `<data>/val.parquet`; writes a
`from_pretrained`-loadable checkpoint (model + tokenizer) and `train_log.json` into `--out`.

Offline default (`base_model: null`): a byte-level BPE tokenizer is trained on the training texts and
a tiny GPT-2 is initialised from config, so nothing is downloaded. With `base_model` set, the tokenizer
and weights come from `from_pretrained(base_model)` (a hub name or a local path).

Each example is a prompt and a completion; the loss is on the completion only:

    Context: {context}
    Question: {question}
    Answer: {answer}<eos>

The same script runs on CPU, one GPU (bf16 where supported) or N GPUs (`torchrun -m ...`), through the
Hugging Face `Trainer`.
"""

import inspect
import json
import math
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
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
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from dagster_project.stages.common import atomic_output_dir, load_stage_params, stage_parser, write_json

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)


# ---------------------------------------------------------------------------------------------------
# Prompt format (evaluate.py imports it, so train and test prompts can never drift apart)


def format_prompt(context: str, question: str) -> str:
    """The prompt the student sees; the answer follows it after one space."""
    return f"Context: {context}\nQuestion: {question}\nAnswer:"


def format_completion(answer: str) -> str:
    """The completion the student learns (the eos token is appended as an id, not as text)."""
    return f" {answer}"


# ---------------------------------------------------------------------------------------------------
# Data


def load_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of `<data_dir>/<split>.parquet` with non-empty context, question and answer."""
    df = pl.read_parquet(Path(data_dir) / f"{split}.parquet", columns=["context", "question", "answer"])
    return [r for r in df.to_dicts() if r["context"] and r["question"] and r["answer"]]


def encode_example(tokenizer: PreTrainedTokenizerBase, row: Mapping[str, Any], max_length: int) -> dict:
    """Token ids and labels for one example; the prompt is cut from the left if it is too long."""
    prompt = tokenizer(format_prompt(row["context"], row["question"]), add_special_tokens=False)["input_ids"]
    completion = tokenizer(format_completion(row["answer"]), add_special_tokens=False)["input_ids"]
    completion = (completion + [tokenizer.eos_token_id])[: max_length // 2]
    prompt = prompt[-(max_length - len(completion)) :]
    return {
        "input_ids": prompt + completion,
        "labels": [IGNORE_INDEX] * len(prompt) + completion,
        "n_prompt": len(prompt),
        "truncated": len(prompt) + len(completion) >= max_length,
    }


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
    pattern = re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)")
    if new_answer == answer or answer in row["question"] or not pattern.search(row["context"]):
        return None
    return {**row, "context": pattern.sub(lambda _: new_answer, row["context"]), "answer": new_answer}


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

    out = re.sub(r"\d+", digits, answer)
    out = re.sub(r"\b[A-Z][a-z]+\b", name, out)
    return re.sub(r"\b[a-z]+\b", word, out)


class QADataset(torch.utils.data.Dataset):
    """Tokenised examples; with `swap_prob` > 0, answer-swap augmentation on every access.

    Answer swap: with probability `swap_prob` an example is shown with its answer replaced, in the
    context and as the target, by a new answer of the same shape (see `novel_answer`). The answer then
    changes from epoch to epoch and is mostly a string never seen before, so it cannot be memorised:
    the only way to be right is to read it off the context (to copy). Without it a tiny model trained
    on a few hundred passages memorises the training answers and never learns to copy, so it fails on
    the held-out entities of the test set. Draws are seeded by (seed, index, access count), so a run
    is deterministic.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        rows: Sequence[Mapping[str, Any]],
        max_length: int,
        swap_prob: float = 0.0,
        seed: int = 0,
    ):
        self.tokenizer, self.rows, self.max_length = tokenizer, list(rows), max_length
        self.swap_prob, self.seed = swap_prob, seed
        self.examples = [encode_example(tokenizer, r, max_length) for r in self.rows]
        self.names, self.lower = _word_pools(self.rows)
        self.accesses = [0] * len(self.rows)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        if self.swap_prob > 0:
            rng = random.Random(f"{self.seed}:{i}:{self.accesses[i]}")
            self.accesses[i] += 1
            if rng.random() < self.swap_prob:
                row = self.rows[i]
                swapped = swap_answer(row, novel_answer(row["answer"], rng, self.names, self.lower))
                if swapped is not None:
                    ex = encode_example(self.tokenizer, swapped, self.max_length)
        return {"input_ids": ex["input_ids"], "labels": ex["labels"], "n_prompt": ex["n_prompt"]}

    @property
    def lengths(self) -> list[int]:
        return [len(ex["input_ids"]) for ex in self.examples]


def make_collator(pad_id: int):
    """Right-pad a batch; padding gets attention 0 and label IGNORE_INDEX.

    `prompt_mask` marks the prompt tokens (1) for the optional prompt loss (see `QATrainer`).
    """

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        prompt_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ex in enumerate(batch):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            labels[i, :n] = torch.tensor(ex["labels"])
            mask[i, :n] = 1
            prompt_mask[i, : ex["n_prompt"]] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "prompt_mask": prompt_mask}

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
    params: Mapping[str, Any], train_rows: Sequence[Mapping[str, Any]]
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the untrained (or pretrained) model the params ask for."""
    base_model = params["base_model"]
    # Read every key of the section up front, whichever branch uses it (a test checks this).
    vocab_size, n_layer, n_head, n_embd = (params[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd"))
    max_length = params["max_length"]
    if base_model:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(base_model)
        return tokenizer, model
    texts = [format_prompt(r["context"], r["question"]) + format_completion(r["answer"]) for r in train_rows]
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


class _LossLog(TrainerCallback):
    """Collects every logged training loss (the Trainer's own history, kept small and JSON-ready)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001
        if logs and "loss" in logs:
            entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "loss": logs["loss"]}
            if "learning_rate" in logs:
                entry["learning_rate"] = logs["learning_rate"]
            self.history.append(entry)


class QATrainer(Trainer):
    """A `Trainer` whose loss is the completion loss plus `prompt_loss_weight` x the prompt loss.

    Both terms are means over their own tokens. The completion (answer) is what the student must
    learn; weight on the prompt (language modelling of context and question) helps a model trained
    from scratch learn to copy: fictional names recur inside each context, and predicting their
    second occurrence needs the same copy circuit (induction heads) that extracting an answer needs.
    (Measured on look-alike data, 600 steps: weight 1.0 gave val answer loss 2.94, weight 0.1 gave
    4.01.) Set it to 0 for the classic answer-only loss, e.g. when fine-tuning a pretrained model.
    Evaluation (val loss) uses the completion loss alone.
    """

    def __init__(self, *args: Any, prompt_loss_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_loss_weight = prompt_loss_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        prompt_mask = inputs.pop("prompt_mask")
        labels = inputs.pop("labels")
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits[:, :-1].float()
        token_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), inputs["input_ids"][:, 1:].reshape(-1), reduction="none"
        ).view_as(labels[:, 1:])
        completion = (labels[:, 1:] != IGNORE_INDEX).float()
        loss = (token_loss * completion).sum() / completion.sum().clamp(min=1)
        if self.prompt_loss_weight > 0 and model.training:
            prompt = prompt_mask[:, 1:].float()  # predicting prompt tokens 2..n from their prefix
            loss = loss + self.prompt_loss_weight * (token_loss * prompt).sum() / prompt.sum().clamp(min=1)
        return (loss, outputs) if return_outputs else loss


def _length_grouping() -> dict[str, Any]:
    """TrainingArguments that batch examples of similar length (less padding): v5 and v4 spellings."""
    names = inspect.signature(TrainingArguments.__init__).parameters
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def train_student(
    train_rows: Sequence[Mapping[str, Any]],
    val_rows: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Train the student on `train_rows`, score it on `val_rows`, save it into `out_dir`; return the log."""
    seed = params["seed"]
    set_seed(seed)
    tokenizer, model = build_student(params, train_rows)
    max_length = min(params["max_length"], getattr(model.config, "n_positions", None) or params["max_length"])
    train_ds = QADataset(tokenizer, train_rows, max_length, params["answer_swap_prob"], seed)
    val_ds = QADataset(tokenizer, val_rows, max_length)
    n_params = sum(p.numel() for p in model.parameters())

    batch_size = params["batch_size"]
    epochs = params["epochs"]
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    print(
        f"train: {len(train_ds)} examples ({sum(e['truncated'] for e in train_ds.examples)} truncated), "
        f"val: {len(val_ds)}, model: {n_params / 1e6:.2f}M params, vocab {len(tokenizer)}, "
        f"{total_steps} steps of {batch_size}"
    )

    losses = _LossLog()
    with tempfile.TemporaryDirectory(prefix="train-scratch-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            max_steps=total_steps,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size,
            learning_rate=params["learning_rate"],
            warmup_steps=math.ceil(params["warmup_ratio"] * total_steps),
            lr_scheduler_type="cosine",
            weight_decay=0.01,
            max_grad_norm=1.0,
            logging_steps=max(1, total_steps // 50),
            logging_first_step=True,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=use_bf16,
            dataloader_num_workers=0,
            remove_unused_columns=False,  # keep prompt_mask for QATrainer.compute_loss
            dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=False,
            **_length_grouping(),
        )
        trainer = QATrainer(
            model=model,
            prompt_loss_weight=params["prompt_loss_weight"],
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds if len(val_ds) else None,
            data_collator=make_collator(tokenizer.pad_token_id),
            callbacks=[losses],
        )
        started = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - started
        val_loss = trainer.evaluate()["eval_loss"] if len(val_ds) else None

    tokens_seen = sum(train_ds.lengths) * total_steps / steps_per_epoch
    log = {
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "n_truncated": sum(e["truncated"] for e in train_ds.examples),
        "n_params": n_params,
        "vocab_size": len(tokenizer),
        "max_length": max_length,
        "steps": total_steps,
        "train_loss": result.training_loss,
        "final_logged_loss": losses.history[-1]["loss"] if losses.history else None,
        "val_loss": val_loss,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_second": round(tokens_seen / train_seconds, 1),
        "device": str(trainer.args.device),
        "bf16": use_bf16,
        "loss_history": losses.history,
    }
    if trainer.is_world_process_zero():
        out_dir = Path(out_dir)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        write_json(out_dir / "train_log.json", log)
    return log


def main() -> None:
    """CLI: `python -m dagster_project.stages.train --params P --data DEDUPED --out STUDENT`."""
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train.parquet and val.parquet")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, "train")
    train_rows = load_split(args.data, "train")
    val_rows = load_split(args.data, "val") if (Path(args.data) / "val.parquet").exists() else []
    if not train_rows:
        raise SystemExit(f"error: {args.data}/train.parquet has no usable rows (context, question, answer).")
    with atomic_output_dir(args.out) as tmp:
        log = train_student(train_rows, val_rows, params, tmp)
    summary = {
        k: log[k] for k in ("train_loss", "val_loss", "train_seconds", "tokens_per_second", "n_params")
    }
    print(f"train: wrote {args.out}: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
