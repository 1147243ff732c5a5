"""Stage `evaluate`: the student against a trivial baseline on the held-out gold QA set.

Reads the `evaluate` section of params.yaml, the checkpoint in `--student`, the training split in
`--data` (for the baseline) and the gold test set (`evaluate.gold_test`, JSON lines with id, context,
question, answer, category). Writes three files into `--out`, each atomically:

- `metrics.json`: {"student": {"exact_match", "token_f1"}, "baseline": {...}, "n_test", "per_category"}
- `report.md`: headline table, per-category breakdown, the 10 best and 10 worst student answers
- `predictions.parquet`: id, question, answer, prediction, baseline_prediction, em, f1, category

The student answers by greedy decoding (batched, left-padded, KV cache) from the same prompt format
the train stage used, stopping at end-of-text or a newline. The baseline answers every question with
the most frequent answer of the training split.
"""

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dagster_project.metrics import aggregate, score_pairs
from dagster_project.stages.common import load_stage_params, stage_parser, write_json
from dagster_project.stages.train import format_prompt

BASELINE_DEFINITION = (
    "most frequent answer: the answer string that occurs most often in the training split "
    "(assets/deduped/train.parquet), predicted for every test question"
)


def load_gold(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the gold test set (JSON lines); `category` defaults to "all"."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row.setdefault("category", "all")
            row["category"] = str(row["category"] or "all")
            rows.append(row)
    return rows


def most_frequent_answer(train_answers: Sequence[str]) -> str:
    """The most common answer string (ties: the one seen first); "" for no answers."""
    counts = Counter(a.strip() for a in train_answers if a and a.strip())
    return counts.most_common(1)[0][0] if counts else ""


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy answers for each row's context and question, in the order of `rows`."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # a too-long prompt loses the start of its context, never the question
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    n_positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    max_prompt = max(8, (n_positions or 2048) - max_new_tokens)
    prompts = [format_prompt(r["context"], r["question"]) for r in rows]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths, less padding
    answers: list[str] = [""] * len(prompts)
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc="evaluate", unit="batch"):
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
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            answers[i] = text.split("\n")[0].strip()
    return answers


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats shown with 3 decimals, pipes and newlines escaped."""

    def cell(v: Any) -> str:
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(metrics: Mapping[str, Any], predictions: pl.DataFrame, student_path: str) -> str:
    """report.md: headline, per-category breakdown, the 10 best and 10 worst student answers."""
    s, b = metrics["student"], metrics["baseline"]
    parts = [
        "# Evaluation report",
        f"Student `{student_path}` on {metrics['n_test']} held-out gold questions "
        f"(`{metrics['gold_test']}`). Metrics: SQuAD-style exact match and token F1 after normalization "
        "(lowercase, no punctuation, no articles a/an/the, collapsed whitespace).",
        f'Baseline: {metrics["baseline_definition"]} (here: "{metrics["baseline_answer"]}").',
        "## Headline",
        _table(
            ["system", "exact match", "token F1"],
            [["student", s["exact_match"], s["token_f1"]], ["baseline", b["exact_match"], b["token_f1"]]],
        ),
        "## Per category",
        _table(
            ["category", "n", "student EM", "student F1", "baseline EM", "baseline F1"],
            [
                [c, m["n"], m["student"]["exact_match"], m["student"]["token_f1"]]
                + [m["baseline"]["exact_match"], m["baseline"]["token_f1"]]
                for c, m in sorted(metrics["per_category"].items())
            ],
        ),
    ]
    columns = ["id", "category", "question", "answer", "prediction", "f1"]
    ranked = predictions.with_row_index("_i")
    best = ranked.sort(["f1", "em", "_i"], descending=[True, True, False]).head(10)
    worst = ranked.sort(["f1", "em", "_i"], descending=[False, False, False]).head(10)
    for title, frame in (("10 best student answers", best), ("10 worst student answers", worst)):
        parts += [f"## {title}", _table(columns, frame.select(columns).rows())]
    return "\n\n".join(parts) + "\n"


def evaluate_student(
    student_dir: str | Path,
    gold_rows: Sequence[Mapping[str, Any]],
    train_answers: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Score the student and the baseline on `gold_rows`; return (metrics, predictions table)."""
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    if torch.cuda.is_available():
        model = model.to("cuda")
    predictions = generate_answers(model, tokenizer, gold_rows, max_new_tokens, batch_size)
    baseline_answer = most_frequent_answer(train_answers)
    references = [r["answer"] for r in gold_rows]
    student_scores = score_pairs(predictions, references)
    baseline_scores = score_pairs([baseline_answer] * len(gold_rows), references)

    per_category: dict[str, Any] = {}
    for category in sorted({r["category"] for r in gold_rows}):
        idx = [i for i, r in enumerate(gold_rows) if r["category"] == category]
        per_category[category] = {
            "n": len(idx),
            "student": aggregate(student_scores[i] for i in idx),
            "baseline": aggregate(baseline_scores[i] for i in idx),
        }
    metrics = {
        "student": aggregate(student_scores),
        "baseline": aggregate(baseline_scores),
        "n_test": len(gold_rows),
        "per_category": per_category,
        "baseline_definition": BASELINE_DEFINITION,
        "baseline_answer": baseline_answer,
    }
    table = pl.DataFrame(
        {
            "id": [str(r["id"]) for r in gold_rows],
            "question": [r["question"] for r in gold_rows],
            "answer": references,
            "prediction": predictions,
            "baseline_prediction": [baseline_answer] * len(gold_rows),
            "em": [s["exact_match"] for s in student_scores],
            "f1": [s["token_f1"] for s in student_scores],
            "category": [r["category"] for r in gold_rows],
        },
        schema_overrides={"em": pl.Float64, "f1": pl.Float64},
    )
    return metrics, table


def write_outputs(out_dir: str | Path, metrics: Mapping[str, Any], table: pl.DataFrame, report: str) -> None:
    """Write metrics.json, report.md and predictions.parquet into `out_dir`, each by temp file + rename."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    tmp = out_dir / f".report.md.tmp-{os.getpid()}"
    tmp.write_text(report, encoding="utf-8")
    tmp.replace(out_dir / "report.md")
    tmp = out_dir / f".predictions.parquet.tmp-{os.getpid()}"
    table.write_parquet(tmp)
    tmp.replace(out_dir / "predictions.parquet")


def main() -> None:
    """`python -m dagster_project.stages.evaluate --params params.yaml --student ... --data ... --out ...`."""
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="checkpoint folder (from_pretrained-loadable)")
    parser.add_argument("--data", required=True, help="folder with train.parquet (for the baseline)")
    parser.add_argument("--out", required=True, help="report folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, "evaluate")
    gold_path = params["gold_test"]
    max_new_tokens = params["max_new_tokens"]
    batch_size = params["batch_size"]

    gold_rows = load_gold(gold_path)
    if not gold_rows:
        raise SystemExit(f"error: {gold_path} has no rows.")
    train_answers = pl.read_parquet(Path(args.data) / "train.parquet", columns=["answer"])["answer"].to_list()
    metrics, table = evaluate_student(args.student, gold_rows, train_answers, max_new_tokens, batch_size)
    metrics = {**metrics, "gold_test": gold_path}
    write_outputs(args.out, metrics, table, render_report(metrics, table, args.student))
    s, b = metrics["student"], metrics["baseline"]
    print(
        f"evaluate: {metrics['n_test']} questions; student EM {s['exact_match']:.3f} F1 {s['token_f1']:.3f}; "
        f"baseline EM {b['exact_match']:.3f} F1 {b['token_f1']:.3f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
