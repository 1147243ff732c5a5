"""Stage `evaluate`: the student vs a trivial baseline (and optionally the teacher) on a held-out gold set.

Reads the `evaluate` section of params.yaml, the checkpoint in `--student` (with its prompt_format.json,
the format it was trained in, and its train_log.json for the loss curve), the training split in
`--data` (baseline and diversity figures) and the gold test set (`evaluate.gold_test`, JSON lines;
fields per task kind in `eval_tasks`). `evaluate.task` picks the task kind: qa (offline default) |
multi_turn_qa | classification | free_text (teacher-as-judge).
Writes into `--out`, each file atomically:

- `metrics.json` (DVC metrics, the headline only, so `dvc metrics show/diff` stay readable): {"task",
  "n_test", "student": {...}, "baseline": {...}, ["teacher"], "diversity", ...}; for qa
  `student.exact_match` / `student.token_f1`
- `breakdown.json` (not a DVC metric): {"task", "n_test", "per_category": {category: {"n", system: {...}}},
  ["details": {system: {...}}]} -- the per-category means and the task's details (classification:
  per-class figures and the confusion matrix)
- `report.md` and `report.html` (self-contained, inline SVG charts): headline, per category, confusion
  matrix (classification), training loss, diversity of the training data, the 10 best and worst answers
- `predictions.parquet`: id, turn, category, question, answer, prediction, baseline_prediction,
  [teacher_prediction], score and the task's per-item figures
- `plots/*.csv`: DVC plot data (headline, per_category, confusion, train_loss)

The student answers by greedy decoding (batched, left-padded, KV cache) in the prompt format it was
trained in (`prompt_format.json` in its folder, written by the train stage; the default format for a
checkpoint without one), stopping at end-of-text or a newline. The baseline answers every item with the
most frequent answer of the training split. With `evaluate.teacher_reference` the teacher answers the
same items through the teacher engine (cached) with `evaluate.reference_prompt`.
"""

import json
import math
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dagster_project.metrics.diversity import (
    distinct_n,
    entity_entropy_of_texts,
    labelwise_cosine,
    mauve,
    mean_pairwise_cosine,
    resolve_embedder,
    self_bleu,
)
from dagster_project.stages.common import load_stage_params, stage_parser, write_json
from dagster_project.stages.eval_tasks import expand_items, summarize
from dagster_project.stages.prompt_format import PromptFormat
from dagster_project.stages.report import (
    bar_chart_svg,
    confusion_svg,
    line_chart_svg,
    render_html,
    render_markdown,
    write_csv,
)

SELF_BLEU_MAX_N = 5  # self-BLEU-1..5, as SynthesizRR reports it
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
    prompt_format: PromptFormat | None = None,
) -> list[str]:
    """Greedy answers for each row's context and question, asked in `prompt_format` (the student's; the
    default format when None), in the order of `rows`."""
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


# ------------------------------------------------------------------------------------------ the teacher


def teacher_answers(
    items: Sequence[Mapping[str, Any]], prompt_path: str, model: str, seed: int, teacher: Any = None
) -> tuple[list[str], dict[str, Any]]:
    """Reference answers of the teacher (through the teacher engine and its cache) for every item.

    An item the teacher could not answer (every sample rejected, e.g. by the offline teacher, which only
    speaks the synthesis prompt) gets "" and is counted in `n_unanswered`.
    """
    # The teacher stack (openai, jsonschema...) is imported only when a teacher is asked for.
    from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(prompt_path)
    requests = [
        TeacherRequest.from_prompt(
            prompt, model=model, seed=seed, context=it["context"], question=it["question"]
        )
        for it in items
    ]
    engine = TeacherEngine(max_attempts=1, teacher=teacher)
    try:
        results = engine.run(requests)
    finally:
        engine.cache.close()
    answers = [str((r.value or {}).get("answer", "")).strip() if r.ok else "" for r in results]
    info = {"model": model, "backend": engine.backend_kind, "prompt": prompt_path}
    return answers, info | {"n_unanswered": sum(not r.ok for r in results)}


def teacher_judge(prompt_path: str, model: str, seed: int, teacher: Any = None):
    """A judge callable for `free_text`: the teacher labels each answer a success (True) or not (False).

    The judge prompt gets `context`, `question`, `answer` (the system's) and `reference` (gold, may be
    empty) and must return {"success": bool, ...}; an answer with no valid verdict is None (unjudged).
    """
    from dagster_project.teacher.engine import TeacherEngine, TeacherRequest
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(prompt_path)

    def judge(items: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> list[bool | None]:
        requests = [
            TeacherRequest.from_prompt(
                prompt,
                model=model,
                seed=seed,
                context=it["context"],
                question=it["question"],
                answer=pred,
                reference=str(it.get("reference") or ""),
            )
            for it, pred in zip(items, predictions, strict=True)
        ]
        engine = TeacherEngine(max_attempts=1, teacher=teacher)
        try:
            results = engine.run(requests)
        finally:
            engine.cache.close()
        return [bool(r.value.get("success")) if r.ok and isinstance(r.value, dict) else None for r in results]

    return judge


# ------------------------------------------------------------------------------------------- diversity


def diversity_figures(
    texts: Sequence[str],
    max_texts: int,
    embedding: str,
    embedding_model: str | None,
    reference_texts: Sequence[str] | None,
    seed: int,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Diversity of the training texts: distinct-1/2, self-BLEU-1..5 (sampled), entity entropy, mean
    pairwise cosine, label-wise cosine (only when `labels`, one per text, are given) and MAUVE against
    `reference_texts` (only when given). `backends` names what produced each figure."""
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels")
    kept = [i for i, t in enumerate(texts) if t and t.strip()]
    texts = [texts[i] for i in kept]
    labels = [labels[i] for i in kept] if labels is not None else None
    out: dict[str, Any] = {"n_texts": len(texts)}
    if len(texts) < 2:
        return out | {"note": "fewer than two texts: no diversity figures"}
    if len(texts) > max_texts:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_texts))
    else:
        keep = list(range(len(texts)))
    sample = [texts[i] for i in keep]
    embedder = resolve_embedder(embedding_model, embedding)  # type: ignore[arg-type]
    bleu = self_bleu(sample, max_n=SELF_BLEU_MAX_N, max_hypotheses=min(500, len(sample)), seed=seed)
    entities = entity_entropy_of_texts(texts)
    cosine = mean_pairwise_cosine(sample, embedder, max_texts=None, seed=seed)
    bleu_backend = f"own NLTK-equivalent BLEU (smoothing method 1), {bleu.n_hypotheses} sampled hypotheses"
    out |= {
        "n_sampled": len(sample),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        **{f"self_bleu_{n}": bleu.scores[n] for n in range(1, SELF_BLEU_MAX_N + 1)},
        "entity_entropy_bits": entities.entropy_bits,
        "n_entities_unique": entities.n_unique,
        "mean_pairwise_cosine": cosine.mean_cosine,
        "backends": {
            "distinct_n": "whole set, lowercase word tokens",
            "self_bleu": f"{bleu_backend} (seed {seed})",
            "entity_entropy": entities.backend,
            "mean_pairwise_cosine": cosine.backend,
        },
    }
    if labels is not None:
        by_label = labelwise_cosine(sample, [labels[i] for i in keep], embedder, None, seed)
        out["labelwise_cosine"] = by_label.mean
        out["labelwise_cosine_per_label"] = {
            label: {"mean_cosine": r.mean_cosine, "n_texts": r.n_texts}
            for label, r in by_label.per_label.items()
        }
        out["backends"]["labelwise_cosine"] = by_label.backend
    if reference_texts:
        result = mauve(sample, list(reference_texts), embedder, seed=seed)
        out["mauve"] = result.mauve
        out["backends"]["mauve"] = (
            f"{result.backend}, {result.num_buckets} buckets, scaling {result.scaling_factor}"
        )
    return out


def load_texts(path: str | Path) -> list[str]:
    """Texts of a JSON-lines file (field `text`, else `question`) or of a plain text file (one a line)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in lines]
        return [str(r.get("text", r.get("question", ""))) for r in rows]
    return lines


# ------------------------------------------------------------------------------------------- scoring


def per_category(
    items: Sequence[Mapping[str, Any]], scores: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Mean of every numeric per-item figure (but `score`) per category and system, with the count n.
    NaN figures (an answer the judge left unlabelled) are left out of the mean (NaN when all are)."""
    out: dict[str, Any] = {}
    for category in sorted({it["category"] for it in items}):
        idx = [i for i, it in enumerate(items) if it["category"] == category]
        entry: dict[str, Any] = {"n": len(idx)}
        for system, per_item in scores.items():
            keys = [k for k, v in per_item[idx[0]].items() if k != "score" and isinstance(v, int | float)]
            entry[system] = {k: _finite_mean([per_item[i][k] for i in idx]) for k in keys}
        out[category] = entry
    return out


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def score_systems(
    task: str,
    items: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Sequence[str]],
    labels: Sequence[str] = (),
    judge: Any = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Headline figures, per-category means and the predictions table for each system's answers."""
    metrics: dict[str, Any] = {"task": task, "n_test": len(items)}
    scores: dict[str, list[dict[str, Any]]] = {}
    details: dict[str, Any] = {}
    for system, preds in predictions.items():
        headline, per_item = summarize(task, preds, items, labels, judge, n_resamples, seed)
        if "_details" in headline:
            details[system] = headline.pop("_details")
        metrics[system] = headline
        scores[system] = per_item
    metrics["per_category"] = per_category(items, scores)
    if details:
        metrics["details"] = details
    student = scores["student"]
    columns: dict[str, Any] = {
        "id": [it["id"] for it in items],
        "turn": [int(it["turn"]) for it in items],
        "category": [it["category"] for it in items],
        "question": [it["question"] for it in items],
        "answer": [_as_text(it["reference"]) for it in items],
    }
    for system, preds in predictions.items():
        columns["prediction" if system == "student" else f"{system}_prediction"] = list(preds)
    columns["score"] = [float(s["score"]) for s in student]
    for key in student[0] if student else []:
        if key != "score":
            columns[key] = [s[key] for s in student]
    return metrics, pl.DataFrame(columns)


def _as_text(reference: Any) -> str:
    return reference if isinstance(reference, str) else " | ".join(str(r) for r in reference)


# -------------------------------------------------------------------------------------------- report

HEADLINE_KEYS = {
    "qa": ["exact_match", "token_f1"],
    "multi_turn_qa": ["exact_match", "token_f1"],
    "classification": ["accuracy", "macro_f1"],
    "free_text": ["success_rate"],
}
# The per-item figure shown per category (macro-F1 is a set-level figure, so classification shows accuracy).
CATEGORY_KEY = {
    "qa": "token_f1",
    "multi_turn_qa": "token_f1",
    "classification": "accuracy",
    "free_text": "success_rate",
}
METRIC_NOTES = {
    "qa": "SQuAD-style exact match and token F1 after normalization (lowercase, no punctuation, no articles "
    "a/an/the, collapsed whitespace), max over the gold answers.",
    "multi_turn_qa": "CoQA/QuAC-style per-turn token F1 and exact match with the gold history in the "
    "prompt; means over all turns.",
    "classification": "the student's generated words mapped onto the label list (first label mentioned; "
    "none: <invalid>, counted wrong); accuracy, macro-F1 over the labels, confusion matrix.",
    "free_text": "the teacher as judge labels each answer a success or not; success rate with a 95% "
    "percentile-bootstrap interval (unjudged answers counted separately).",
}


def systems_of(metrics: Mapping[str, Any]) -> list[str]:
    return [s for s in ("student", "baseline", "teacher") if s in metrics]


def report_sections(
    metrics: Mapping[str, Any], table: pl.DataFrame, student_path: str, loss_history: Sequence[Mapping]
) -> list[dict[str, Any]]:
    """The report as sections of paragraphs, tables and SVG charts (rendered to report.md and .html)."""
    task = metrics["task"]
    systems = systems_of(metrics)
    keys = HEADLINE_KEYS[task]
    intro = [
        (
            "p",
            f"Student `{student_path}` on {metrics['n_test']} held-out gold items "
            f"(`{metrics['gold_test']}`), "
            f"task `{task}`. Metrics: {METRIC_NOTES[task]}",
        ),
        ("p", f'Baseline: {metrics["baseline_definition"]} (here: "{metrics["baseline_answer"]}").'),
    ]
    if "teacher_reference" in metrics:
        t = metrics["teacher_reference"]
        intro.append(
            (
                "p",
                f"Teacher reference: `{t['model']}` ({t['backend']}, prompt `{t['prompt']}`) answered "
                f"the same "
                f"items; {t['n_unanswered']} got no valid answer (scored as empty).",
            )
        )
    headline_rows = [[s] + [metrics[s].get(k, float("nan")) for k in keys] for s in systems]
    if task == "free_text":
        headline_rows = [
            [
                s,
                metrics[s]["success_rate"],
                f"[{metrics[s]['success_ci_low']:.3f}, {metrics[s]['success_ci_high']:.3f}]",
            ]
            for s in systems
        ]
    sections: list[dict[str, Any]] = [
        {"title": "Setup", "blocks": intro},
        {
            "title": "Headline",
            "blocks": [
                (
                    "table",
                    ["system", *keys] if task != "free_text" else ["system", "success_rate", "95% CI"],
                    headline_rows,
                ),
                (
                    "svg",
                    bar_chart_svg(
                        "Student vs baseline" + (" vs teacher" if "teacher" in systems else ""),
                        keys,
                        {s: [metrics[s].get(k, float("nan")) for k in keys] for s in systems},
                    ),
                    "headline",
                ),
            ],
        },
    ]
    cats = metrics["per_category"]
    main_key = CATEGORY_KEY[task]
    cat_keys = [k for k in keys if k in next(iter(cats.values()))["student"]]  # per-item figures only
    cat_rows = [
        [c, m["n"]] + [m[s].get(k, float("nan")) for s in systems for k in cat_keys]
        for c, m in sorted(cats.items())
    ]
    sections.append(
        {
            "title": "Per category",
            "blocks": [
                ("table", ["category", "n"] + [f"{s} {k}" for s in systems for k in cat_keys], cat_rows),
                (
                    "svg",
                    bar_chart_svg(
                        f"{main_key} per category",
                        sorted(cats),
                        {s: [cats[c][s].get(main_key, float("nan")) for c in sorted(cats)] for s in systems},
                        width=max(560, 90 * len(cats)),
                    ),
                    "per category",
                ),
            ],
        }
    )
    for system, detail in (metrics.get("details") or {}).items():
        cm = detail["confusion"]
        sections.append(
            {
                "title": f"Confusion matrix ({system})",
                "blocks": [
                    (
                        "table",
                        ["gold \\ predicted", *cm["col_labels"]],
                        [[r, *row] for r, row in zip(cm["row_labels"], cm["counts"], strict=True)],
                    ),
                    (
                        "svg",
                        confusion_svg(
                            f"{system}: gold vs predicted", cm["row_labels"], cm["col_labels"], cm["counts"]
                        ),
                        "confusion",
                    ),
                ],
            }
        )
    if loss_history:
        sections.append(
            {
                "title": "Training loss",
                "blocks": [
                    ("p", "From assets/student/train_log.json (loss_history), one point per logged step."),
                    (
                        "svg",
                        line_chart_svg(
                            "training loss",
                            [h["step"] for h in loss_history],
                            [h["loss"] for h in loss_history],
                        ),
                        "training loss",
                    ),
                ],
            }
        )
    div = metrics.get("diversity")
    if div and "distinct_1" in div:
        rows = [
            ["distinct-1", div["distinct_1"], div["backends"]["distinct_n"]],
            ["distinct-2", div["distinct_2"], div["backends"]["distinct_n"]],
            *[
                [f"self-BLEU-{n} (lower = more diverse)", div[f"self_bleu_{n}"], div["backends"]["self_bleu"]]
                for n in range(1, SELF_BLEU_MAX_N + 1)
            ],
            ["entity entropy (bits)", div["entity_entropy_bits"], div["backends"]["entity_entropy"]],
            [
                "mean pairwise cosine (lower = more diverse)",
                div["mean_pairwise_cosine"],
                div["backends"]["mean_pairwise_cosine"],
            ],
        ]
        if "labelwise_cosine" in div:
            rows.append(
                [
                    "label-wise cosine (mean over labels)",
                    div["labelwise_cosine"],
                    div["backends"]["labelwise_cosine"],
                ]
            )
        if "mauve" in div:
            rows.append(["MAUVE vs reference", div["mauve"], div["backends"]["mauve"]])
        sections.append(
            {
                "title": "Diversity of the training data",
                "blocks": [
                    (
                        "p",
                        f"Over the {div['n_texts']} training questions ({div['n_sampled']} sampled "
                        "for self-BLEU "
                        "and cosine). Figures from different backends are not comparable."
                        + ("" if "mauve" in div else " MAUVE: no reference set configured."),
                    ),
                    ("table", ["figure", "value", "backend"], rows),
                ],
            }
        )
    columns = [
        c for c in ["id", "category", "question", "answer", "prediction", "score"] if c in table.columns
    ]
    ranked = table.with_row_index("_i").filter(~pl.col("score").is_nan())  # unjudged answers are not ranked
    best = ranked.sort(["score", "_i"], descending=[True, False]).head(10)
    worst = ranked.sort(["score", "_i"], descending=[False, False]).head(10)
    for title, frame in (("10 best student answers", best), ("10 worst student answers", worst)):
        sections.append({"title": title, "blocks": [("table", columns, frame.select(columns).rows())]})
    return sections


def render_report(
    metrics: Mapping[str, Any], table: pl.DataFrame, student_path: str, loss_history: Sequence[Mapping] = ()
) -> tuple[str, str]:
    """(report.md, report.html) of the evaluation."""
    sections = report_sections(metrics, table, student_path, loss_history)
    return render_markdown("Evaluation report", sections), render_html("Evaluation report", sections)


def plot_files(
    metrics: Mapping[str, Any], table: pl.DataFrame, loss_history: Sequence[Mapping]
) -> dict[str, str]:
    """The DVC plot data files (CSV): headline bars, per-category bars, confusion rows, training loss.

    `confusion.csv` holds one row per item (actual, predicted): the gold and predicted label for
    classification, otherwise the category and the outcome (exact / partial / wrong, or success / fail).
    """
    task = metrics["task"]
    systems = systems_of(metrics)
    keys = HEADLINE_KEYS[task]
    headline = [
        {"metric": f"{s} {k}", "system": s, "value": metrics[s].get(k)} for s in systems for k in keys
    ]
    per_cat = [
        {"category": c, "system": s, "value": m[s].get(CATEGORY_KEY[task])}
        for c, m in sorted(metrics["per_category"].items())
        for s in systems
    ]
    if task == "classification":
        confusion = [
            {"actual": a, "predicted": p} for a, p in zip(table["answer"], table["label"], strict=True)
        ]
    elif task == "free_text":
        confusion = [
            {"actual": c, "predicted": "unjudged" if math.isnan(s) else ("success" if s >= 1.0 else "fail")}
            for c, s in zip(table["category"], table["score"], strict=True)
        ]
    else:
        confusion = [
            {"actual": c, "predicted": "exact" if e >= 1.0 else ("partial" if f > 0 else "wrong")}
            for c, e, f in zip(table["category"], table["exact_match"], table["token_f1"], strict=True)
        ]
    loss = [{"step": h["step"], "loss": h["loss"]} for h in loss_history]
    return {
        "headline.csv": write_csv(headline, ["metric", "system", "value"]),
        "per_category.csv": write_csv(per_cat, ["category", "system", "value"]),
        "confusion.csv": write_csv(confusion, ["actual", "predicted"]),
        "train_loss.csv": write_csv(loss, ["step", "loss"]),
    }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# Keys of the evaluation that go to breakdown.json, not to metrics.json (they would flood `dvc metrics`).
BREAKDOWN_KEYS = ("per_category", "details")


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json, breakdown.json) of the evaluation: the headline, and the per-category means and the
    task's details (with `task` and `n_test`, so the breakdown reads on its own)."""
    headline = {k: v for k, v in metrics.items() if k not in BREAKDOWN_KEYS}
    breakdown = {k: metrics[k] for k in ("task", "n_test", *BREAKDOWN_KEYS) if k in metrics}
    return headline, breakdown


def write_outputs(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    table: pl.DataFrame,
    report_md: str,
    report_html: str,
    plots: Mapping[str, str],
) -> None:
    """Write metrics.json, breakdown.json, report.md/.html, predictions.parquet and plots/*.csv, each by
    temp + rename."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    headline, breakdown = split_metrics(metrics)
    write_json(out_dir / "metrics.json", headline)
    write_json(out_dir / "breakdown.json", breakdown)
    _write_text(out_dir / "report.md", report_md)
    _write_text(out_dir / "report.html", report_html)
    for name, text in plots.items():
        _write_text(out_dir / "plots" / name, text)
    tmp = out_dir / f".predictions.parquet.tmp-{os.getpid()}"
    table.write_parquet(tmp)
    tmp.replace(out_dir / "predictions.parquet")


def load_student(student_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    if torch.cuda.is_available():  # bf16 where the GPU has it: generation is memory-bound
        model = model.to("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    return model, tokenizer


def main() -> None:
    """`python -m dagster_project.stages.evaluate --params params.yaml --student ... --data ... --out ...`."""
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="checkpoint folder (from_pretrained-loadable)")
    parser.add_argument("--data", required=True, help="folder with train.parquet (baseline and diversity)")
    parser.add_argument("--out", required=True, help="report folder to write")
    args = parser.parse_args()
    params = load_stage_params(args.params, "evaluate")
    # Every key is read up front, also the ones this task does not use (a stage reads what it declares).
    gold_path, task, labels = params["gold_test"], params["task"], list(params["labels"])
    max_new_tokens, batch_size = params["max_new_tokens"], params["batch_size"]
    teacher_reference, teacher_model = params["teacher_reference"], params["teacher_model"]
    reference_prompt, judge_prompt = params["reference_prompt"], params["judge_prompt"]
    n_resamples, seed = params["bootstrap_resamples"], params["seed"]
    div = params["diversity"]
    div_max, div_embedding = div["max_texts"], div["embedding"]
    div_model, div_reference = div["embedding_model"], div["reference_texts"]
    div_label_column = div["label_column"]

    gold_rows = load_gold(gold_path)
    if not gold_rows:
        raise SystemExit(f"error: {gold_path} has no rows.")
    items = expand_items(gold_rows, task)
    train = pl.read_parquet(Path(args.data) / "train.parquet")
    baseline_answer = most_frequent_answer(train["answer"].to_list() if "answer" in train.columns else [])
    text_column = next((c for c in ("question", "text") if c in train.columns), None)
    texts = train[text_column].to_list() if text_column else []
    div_labels = None  # checked before the model loads: a typo fails fast
    if div_label_column is not None and text_column is not None:
        if div_label_column not in train.columns:
            raise SystemExit(
                f"error: evaluate.diversity.label_column is {div_label_column!r}, but "
                f"{Path(args.data) / 'train.parquet'} has no such column "
                f"(it has: {', '.join(train.columns)})."
            )
        div_labels = [str(v) for v in train[div_label_column].to_list()]

    model, tokenizer = load_student(args.student)
    prompt_format = PromptFormat.load(args.student)  # the format the student was trained in
    predictions = {
        "student": generate_answers(model, tokenizer, items, max_new_tokens, batch_size, prompt_format),
        "baseline": [baseline_answer] * len(items),
    }
    teacher_info = None
    if teacher_reference:
        predictions["teacher"], teacher_info = teacher_answers(items, reference_prompt, teacher_model, seed)
    judge = teacher_judge(judge_prompt, teacher_model, seed) if task == "free_text" else None
    metrics, table = score_systems(task, items, predictions, labels, judge, n_resamples, seed)
    metrics |= {
        "gold_test": gold_path,
        "baseline_definition": BASELINE_DEFINITION,
        "baseline_answer": baseline_answer,
    }
    if teacher_info:
        metrics["teacher_reference"] = teacher_info
    reference_texts = load_texts(div_reference) if div_reference else None
    metrics["diversity"] = diversity_figures(
        texts, div_max, div_embedding, div_model, reference_texts, seed, div_labels
    )

    log_path = Path(args.student) / "train_log.json"
    loss_history = json.loads(log_path.read_text()).get("loss_history", []) if log_path.exists() else []
    report_md, report_html = render_report(metrics, table, args.student, loss_history)
    write_outputs(args.out, metrics, table, report_md, report_html, plot_files(metrics, table, loss_history))
    heads = "; ".join(
        f"{s} " + " ".join(f"{k} {metrics[s][k]:.3f}" for k in HEADLINE_KEYS[task])
        for s in systems_of(metrics)
    )
    print(f"evaluate: {metrics['n_test']} items ({task}); {heads}; wrote {args.out}")


if __name__ == "__main__":
    main()
