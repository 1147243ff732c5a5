"""Training throughput: our train stage vs a plain Hugging Face `Trainer` with default settings, same run.

    python benchmarks/train.py [--data assets/deduped] [--steps 200] [--repeats 3] [--quick]

Both train the offline default student (params.yaml's `train` section: the tiny GPT-2 from config and
the BPE tokenizer trained on the data) on the same examples for the same number of optimizer steps of
the same batch size. Throughput counts real (non-padding) tokens per second of `trainer.train()`:
- `plain_trainer`: `Trainer` defaults -- random batches padded to their longest example,
  `DataCollatorForLanguageModeling(mlm=False)`, no checkpoints;
- `ours`: `train.train_student` as the stage runs it, checkpoints off: length-grouped batches without an
  attention mask (right padding: the causal mask suffices), completion loss + prompt loss, answer-swap
  augmentation (re-tokenizing most examples of every batch: work the plain Trainer does not do), the
  fused kernels of `fast_kernels.py` (the one-op tanh GELU; on CPU the output projection fused with the
  loss); once without and once with `packing`.
The configurations run interleaved (plain, ours, packed, plain, ...) `--repeats` times. Each throughput
figure is the median over the rounds; each ratio is the median of the per-round ratios (a round's runs
follow each other within seconds, so a load spike from other jobs, common on shared 2-core machines, hits
the runs of one round alike). The ratio of the best runs is given too. Prints JSON. Without `--data`, or
when it has no train.parquet, the rows come from the gold test set (the same shape of data; only
throughput is measured here, never quality).
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed

from dagster_project.stages import train
from dagster_project.student.data import load_rows as load_split
from dagster_project.student.model import build_student
from dagster_project.student.prompt_format import PromptFormat

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_rows(data: str | None) -> tuple[list[dict], str]:
    if data and (Path(data) / "train.parquet").exists():
        return load_split(data, "train", PromptFormat()), f"{data}/train.parquet"
    gold = REPO_ROOT / "data/demo_world/gold_test.jsonl"
    rows = [json.loads(line) for line in gold.read_text().splitlines() if line.strip()]
    return rows, f"{gold.relative_to(REPO_ROOT)} (no train.parquet given)"


def plain_trainer(rows: list[dict], params: train.Params, steps: int, out: Path) -> dict:
    """A plain `Trainer` with default settings on the same model, tokenizer and texts."""
    set_seed(params.seed)
    prompt_format = PromptFormat.from_params(params.prompt_format)
    tokenizer, model = build_student(params, rows, prompt_format)
    texts = [
        prompt_format.prompt(r, tokenizer) + prompt_format.completion(r) + tokenizer.eos_token for r in rows
    ]
    encoded = [tokenizer(t, truncation=True, max_length=params.max_length) for t in texts]
    n_tokens: list[int] = []

    def collate(batch: list[dict]) -> dict:
        n_tokens.append(sum(len(ex["input_ids"]) for ex in batch))
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)(batch)

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=params.seed,
    )
    trainer = Trainer(model=model, args=args, train_dataset=encoded, data_collator=collate)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"tokens_per_second": round(sum(n_tokens) / seconds, 1), "seconds": round(seconds, 2)}


def ours(rows: list[dict], params: train.Params, steps: int, out: Path, packing: bool) -> dict:
    steps_per_epoch = -(-len(rows) // params.batch_size)
    run = params.model_copy(update={"epochs": steps / steps_per_epoch, "save_steps": 0, "packing": packing})
    log = train.train_student(rows, [], run, out, checkpoint_root=out.parent / "ckpt")
    assert log["steps"] == steps, (log["steps"], steps)
    return {"tokens_per_second": log["tokens_per_second"], "seconds": log["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="assets/deduped", help="folder with train.parquet")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        help="optimizer steps per configuration (the stage logs 50 times a run)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--quick", action="store_true", help="20 steps, 1 round (a smoke run; noisier)")
    args = parser.parse_args()
    steps, repeats = (20, 1) if args.quick else (args.steps, args.repeats)
    params = yaml.safe_load(Path(args.params).read_text())["train"]
    params = train.Params.model_validate({**params, "base_model": None})
    rows, source = load_rows(args.data)

    runs: dict[str, list[dict]] = {"plain_trainer": [], "ours": [], "ours_packed": []}
    # The Trainer prints its logs on stdout: keep stdout for the JSON alone.
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp, contextlib.redirect_stdout(sys.stderr):
        for i in range(repeats):
            runs["plain_trainer"].append(plain_trainer(rows, params, steps, Path(tmp) / f"plain{i}"))
            runs["ours"].append(ours(rows, params, steps, Path(tmp) / f"ours{i}", packing=False))
            runs["ours_packed"].append(ours(rows, params, steps, Path(tmp) / f"packed{i}", packing=True))
    results = {
        name: {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "tokens_per_second_each": [r["tokens_per_second"] for r in rs],
        }
        for name, rs in runs.items()
    }
    per_round = {
        name: [
            r["tokens_per_second"] / b["tokens_per_second"]
            for r, b in zip(runs[name], runs["plain_trainer"], strict=True)
        ]
        for name in ("ours", "ours_packed")
    }
    best = {name: max(r["tokens_per_second"] for r in rs) for name, rs in runs.items()}
    report = {
        "benchmark": "train throughput (real tokens/s of trainer.train())",
        "data": source,
        "n_examples": len(rows),
        "steps": steps,
        "repeats": repeats,
        "batch_size": params["batch_size"],
        "model": {k: params[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size", "max_length")},
        "results": results,
        "ratio_ours_vs_plain": round(statistics.median(per_round["ours"]), 2),
        "ratio_ours_packed_vs_plain": round(statistics.median(per_round["ours_packed"]), 2),
        "ratio_of_best_runs": {n: round(best[n] / best["plain_trainer"], 2) for n in per_round},
        "ratio_per_round": {n: [round(x, 2) for x in ratios] for n, ratios in per_round.items()},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": (
            "CPU only: no GPU was available, GPU figures (bf16, torch.compile, DDP) not measured. "
            if not torch.cuda.is_available()
            else ""
        )
        + "The machine may be shared with other jobs: figures are noisy; compare ratios within one run.",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
