"""Training throughput: our train stage vs a plain Hugging Face `Trainer` with default settings, same run.

    python benchmarks/train.py [--student tiny|smollm2|both] [--data assets/deduped] [--steps N] [--repeats 3]
                               [--quick]

Two students, each trained by both on the same examples for the same number of optimizer steps of the
same batch size:
- `tiny`: the from-config student (params.yaml's `train` section with `base_model: null`: a tiny GPT-2
  and the BPE tokenizer trained on the data; default 200 steps);
- `smollm2`: the root recipe's default, SmolLM2-135M-Instruct (Llama architecture) from
  `assets/base_model` (`dvc repro -s base_model` makes it), in the recipe's chat format, answer-only
  loss (default 8 steps: ~3-5 s a step on 2 idle cores).
Every run is its own process, so each reports its peak memory (max resident set on CPU, max allocated
on a GPU), model and data loading included.
Throughput counts real (non-padding) tokens per second of `trainer.train()`:
- `plain_trainer`: `Trainer` defaults -- random batches padded to their longest example,
  `DataCollatorForLanguageModeling(mlm=False)`, no checkpoints;
- `ours`: `train.train_student` as the stage runs it, checkpoints off: length-grouped batches without an
  attention mask (right padding: the causal mask suffices), completion loss + prompt loss, answer-swap
  augmentation (re-tokenizing most examples of every batch: work the plain Trainer does not do), the
  fused kernels of `fast_kernels.py` (the one-op tanh GELU; on CPU the output projection fused with the
  loss); for `tiny` also with `packing`.
The configurations run interleaved (plain, ours, packed, plain, ...) `--repeats` times. Each throughput
figure is the median over the rounds; each ratio is the median of the per-round ratios (a round's runs
follow each other within seconds, so a load spike from other jobs, common on shared 2-core machines, hits
the runs of one round alike). Prints JSON. Without `--data`, or
when it has no train.parquet, the rows come from the gold test set (the same shape of data; only
throughput is measured here, never quality).
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
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


STUDENTS = {"tiny": 200, "smollm2": 8}  # default optimizer steps per run


def student_params(student: str, params_path: str) -> train.Params:
    """The `train` params of one student: the recipe's section, with base_model null for `tiny` (and its
    plain prompt format: the from-config tokenizer has no chat template)."""
    section = yaml.safe_load(Path(params_path).read_text())["train"]
    if student == "tiny":
        section = {**section, "base_model": None, "prompt_format": {}, "prompt_loss_weight": 1.0}
        section |= {"max_length": 160, "learning_rate": 0.005}
    elif not section.get("base_model"):
        raise SystemExit("error: the smollm2 student needs train.base_model set in the params file")
    elif not Path(section["base_model"]).exists() and section["base_model"].startswith("assets/"):
        raise SystemExit(f"error: {section['base_model']} is missing: run `dvc repro -s base_model` first")
    return train.Params.model_validate(section)


def peak_memory_mb() -> float:
    """This process's peak memory so far: max allocated on the GPU, else max resident set size."""
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def one_run(student: str, config: str, params_path: str, data: str, steps: int) -> dict:
    """One configuration in this process; prints its JSON line."""
    params = student_params(student, params_path)
    rows, _ = load_rows(data)
    from dagster_project.student.threads import set_threads

    threads = set_threads("bench")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp, contextlib.redirect_stdout(sys.stderr):
        if config == "plain_trainer":
            result = plain_trainer(rows, params, steps, Path(tmp) / "plain")
        else:
            result = ours(rows, params, steps, Path(tmp) / "ours", packing=config == "ours_packed")
    return result | {"peak_memory_mb": peak_memory_mb(), "threads": threads}


def _child(student: str, config: str, args: argparse.Namespace, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--run", config, "--student", student, "--params", args.params]
    cmd += ["--data", args.data, "--steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{student} {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_student(student: str, args: argparse.Namespace) -> dict:
    steps = args.steps or STUDENTS[student]
    repeats = args.repeats
    if args.quick:
        steps, repeats = max(2, steps // 10), 1
    configs = ["plain_trainer", "ours"] + (["ours_packed"] if student == "tiny" else [])
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    loads = []
    for _ in range(repeats):  # interleaved: a load spike hits the runs of one round alike
        for config in configs:
            loads.append(round(os.getloadavg()[0], 2))
            runs[config].append(_child(student, config, args, steps))
    params = student_params(student, args.params)
    results = {
        name: {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in rs),
            "tokens_per_second_each": [r["tokens_per_second"] for r in rs],
            "threads_each": [r["threads"] for r in rs],
        }
        for name, rs in runs.items()
    }
    per_round = {
        name: [
            r["tokens_per_second"] / b["tokens_per_second"]
            for r, b in zip(runs[name], runs["plain_trainer"], strict=True)
        ]
        for name in configs[1:]
    }
    return {
        "student": student,
        "model": (
            {k: getattr(params, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size")}
            if student == "tiny"
            else {"base_model": params.base_model}
        )
        | {"max_length": params.max_length, "prompt_format": params.prompt_format.style},
        "steps": steps,
        "repeats": repeats,
        "batch_size": params.batch_size,
        "results": results,
        **{f"ratio_{n}_vs_plain": round(statistics.median(r), 2) for n, r in per_round.items()},
        "ratio_per_round": {n: [round(x, 2) for x in r] for n, r in per_round.items()},
        "load_average_at_each_run_start": loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", choices=["tiny", "smollm2", "both"], default="both")
    parser.add_argument("--data", default="assets/deduped", help="folder with train.parquet")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per run (0: the student's)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps, 1 round (a smoke run)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one configuration in this process
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.student, args.run, args.params, args.data, args.steps)))
        return
    students = ["tiny", "smollm2"] if args.student == "both" else [args.student]
    _, source = load_rows(args.data)
    report = {
        "benchmark": "train throughput (real tokens/s of trainer.train()) and peak memory, ours vs plain",
        "data": source,
        "students": [bench_student(s, args) for s in students],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": "The machine may be shared with other jobs: figures are noisy; compare ratios within one "
        "round (load_average_at_each_run_start says how busy it was). Threads: the CPUs free at the "
        "start of each run (dagster_project/student/threads.py).",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
