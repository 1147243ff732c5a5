"""GPU throughput of the train and evaluate stages: GPT-2 124M from config, sequence 1024, bf16; prints JSON.

    python benchmarks/train_gpu.py [--steps 150] [--warmup 30] [--batch-size 32] [--variants ours,plain]

Training, each variant on the same model (GPT-2 124M from config: 12 layers, 12 heads, 768 wide, vocabulary
50,304 = GPT-2's padded to a multiple of 64) and the same data (1,024-token examples of random token ids: a
960-token prompt and a 64-token completion; throughput does not depend on what the tokens say):
- `ours`: the train stage's path -- `StudentTrainer` with `training_arguments` (student/), the length-grouped
  sampler, the collator, the completion + prompt loss (weight 1, so every token is a target), the fused
  kernels of `fast_kernels.py` -- in bf16
  with `torch_compile: true` (model and loss compiled);
- `ours_whole_compile`: the same with the model compiled whole (as `Trainer(torch_compile=True)` does)
  instead of block by block (see `student.model.compile_blocks`);
- `ours_eager`: the same without torch.compile;
- `plain`: a plain Hugging Face `Trainer` with default settings and `bf16=True`, on `default_data_collator`
  batches with `labels = input_ids` (the model's own loss).
Tokens/s are timed between the end of optimizer step `--warmup` (compilation and warm-up excluded) and the
last step, with the GPU synchronised at both ends. MFU = FLOPs per token x tokens/s / peak, with FLOPs per
token = 6 N + 12 L H Q T (N the parameters without the position embeddings; L, H, Q, T: layers, heads,
head size, sequence: the PaLM paper's appendix B, as nanoGPT and llm.c count), against the H100 SXM's
datasheet dense bf16 peak (989.4 TFLOP/s), and against the bf16 matrix-product rate measured in this run.

Generation (the evaluate stage's `generate_answers` on the checkpoint as `evaluation.generate`
loads it:
bf16 on a GPU): the demo's gold questions, repeated to `--gen-rows`, greedy, `--max-new-tokens` new tokens,
with a randomly initialised GPT-2 124M (its answers are noise, so nearly every row runs to the token limit).
Needs a CUDA GPU; without one it prints a JSON line saying so.
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from dagster_project.evaluation import generate as evaluate  # noqa: E402
from dagster_project.student import collate  # noqa: E402
from dagster_project.student import data as student_data  # noqa: E402
from dagster_project.student import dataset as student_dataset  # noqa: E402
from dagster_project.student import model as student_model  # noqa: E402
from dagster_project.student import trainer as student_trainer  # noqa: E402
from dagster_project.student.fast_kernels import use_fused_kernels  # noqa: E402
from dagster_project.student.prompt_format import PromptFormat  # noqa: E402

SEQ, PROMPT = 1024, 960
H100_BF16_DENSE_PEAK = 989.4e12


class StepTimer(TrainerCallback):
    """Wall time between the end of optimizer step `warmup` and the end of the last step (GPU synced)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if state.global_step == self.warmup:
            torch.cuda.synchronize()
            self.start = time.perf_counter()
        elif state.global_step == state.max_steps:
            torch.cuda.synchronize()
            self.end = time.perf_counter()
            self.steps = state.global_step - self.warmup


def gpt2_124m(vocab_size: int = 50304) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=SEQ,
        n_embd=768,
        n_layer=12,
        n_head=12,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def flops_per_token(model: GPT2LMHeadModel) -> float:
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * c.n_layer * c.n_embd * SEQ


def examples(n: int, vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50257, (n, SEQ), generator=g).tolist()
    return [
        {"input_ids": row, "labels": [student_data.IGNORE_INDEX] * PROMPT + row[PROMPT:], "n_prompt": PROMPT}
        for row in ids
    ]


def train_variant(name: str, steps: int, warmup: int, batch: int, out: Path) -> dict:
    model = gpt2_124m()
    rows = examples(steps * batch, model.config.vocab_size)
    timer = StepTimer(warmup)
    if name == "plain":
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=steps,
            per_device_train_batch_size=batch,
            bf16=torch.cuda.is_available(),
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        data = [{"input_ids": r["input_ids"], "labels": r["input_ids"]} for r in rows]
        trainer = Trainer(
            model=model, args=args, train_dataset=data, data_collator=default_data_collator, callbacks=[timer]
        )
    else:
        args = student_trainer.training_arguments(
            out,
            total_steps=steps,
            batch_size=batch,
            accumulation=1,
            learning_rate=6e-4,
            warmup_steps=warmup,
            scheduler="cosine",
            save_steps=0,
            eval_steps=0,
            seed=0,
            precision_flags=student_model.precision_flags("bf16"),
        )
        use_fused_kernels(model)  # as the stage does
        if name == "ours":
            student_model.compile_blocks(model)
        elif name == "ours_whole_compile":  # the model compiled whole, as Trainer's torch_compile does
            model.compile()
        args.disable_tqdm = True
        trainer = student_trainer.StudentTrainer(
            model=model,
            prompt_loss_weight=1.0,
            compile_loss=name != "ours_eager",
            args=args,
            train_dataset=student_dataset.StudentDataset.from_examples(rows),
            data_collator=collate.make_collator(pad_id=0, packing=False, max_length=SEQ),
            callbacks=[timer],
        )
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    seconds = timer.end - timer.start
    tokens = timer.steps * batch * SEQ
    tps = tokens / seconds
    fpt = flops_per_token(model)
    return {
        "tokens_per_second": round(tps),
        "mfu_vs_datasheet_peak": round(fpt * tps / H100_BF16_DENSE_PEAK, 4),
        "achieved_tflops": round(fpt * tps / 1e12, 1),
        "timed_steps": timer.steps,
        "step_ms": round(1000 * seconds / timer.steps, 2),
        "wall_s_incl_warmup_and_compile": round(total, 1),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 1),
        "attn_implementation": model.config._attn_implementation,
        "flops_per_token": fpt,
    }


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n**3 / statistics.median(times) / 1e12


def generation(rows_wanted: int, max_new_tokens: int, batch_sizes: list[int], out: Path) -> dict:
    gold = [
        json.loads(x) for x in (REPO_ROOT / "data/demo_world/gold_test.jsonl").read_text().splitlines() if x
    ]
    rows = [gold[i % len(gold)] for i in range(rows_wanted)]
    fmt = PromptFormat()
    texts = [fmt.prompt(r) + fmt.completion(r) for r in gold]
    tokenizer = student_model.train_tokenizer(texts, vocab_size=1000)
    gpt2_124m(vocab_size=len(tokenizer)).save_pretrained(out / "student")
    tokenizer.save_pretrained(out / "student")
    fmt.save(out / "student")
    model, tokenizer = evaluate.load_student(out / "student")
    fmt = PromptFormat.load(out / "student")
    prompt_tokens = sum(len(tokenizer(fmt.prompt(r))["input_ids"]) for r in rows)
    result = {
        "rows": len(rows),
        "mean_prompt_tokens": round(prompt_tokens / len(rows), 1),
        "dtype": str(model.dtype),
    }
    for bs in batch_sizes:
        evaluate.generate_answers(model, tokenizer, rows[: 2 * bs], max_new_tokens, bs, fmt)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        evaluate.generate_answers(model, tokenizer, rows, max_new_tokens, bs, fmt)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        result[f"batch_{bs}"] = {
            "seconds": round(seconds, 2),
            "rows_per_second": round(len(rows) / seconds, 1),
            "new_token_slots_per_second": round(len(rows) * max_new_tokens / seconds),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default="ours,ours_whole_compile,ours_eager,plain")
    parser.add_argument("--gen-rows", type=int, default=2048)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--gen-batch-sizes", default="32,256")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "train_gpu", "error": "no CUDA GPU available: nothing measured"}))
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    report: dict = {
        "benchmark": "GPU train and generation throughput (GPT-2 124M from config, sequence 1024, bf16)",
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps_excluded": args.warmup,
        "matmul_bf16_tflops_measured": round(matmul_tflops(), 1),
        "train": {},
    }
    # The Trainer prints its logs on stdout: keep stdout for the JSON alone.
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp, contextlib.redirect_stdout(sys.stderr):
        for name in [v for v in args.variants.split(",") if v]:
            try:
                report["train"][name] = train_variant(
                    name, args.steps, args.warmup, args.batch_size, Path(tmp) / name
                )
            except Exception as exc:  # one variant failing (e.g. out of memory) must not lose the others
                report["train"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            torch.cuda.empty_cache()
            print(json.dumps({name: report["train"][name]}), file=sys.stderr, flush=True)
        for r in report["train"].values():
            if "tokens_per_second" in r:
                r["mfu_vs_measured_matmul"] = round(
                    r["achieved_tflops"] / report["matmul_bf16_tflops_measured"], 4
                )
        plain = report["train"].get("plain", {}).get("tokens_per_second")
        if plain:
            report["ratio_vs_plain"] = {
                n: round(r["tokens_per_second"] / plain, 2)
                for n, r in report["train"].items()
                if "tokens_per_second" in r
            }
        sizes = [int(x) for x in args.gen_batch_sizes.split(",") if x]
        try:
            if not sizes:
                raise RuntimeError("not measured (--gen-batch-sizes '')")
            report["generation"] = generation(args.gen_rows, args.max_new_tokens, sizes, Path(tmp))
        except Exception as exc:
            report["generation"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
