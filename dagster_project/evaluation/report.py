"""The evaluation report and output files: report.md and a self-contained report.html (sections of
paragraphs, tables and inline SVG charts, charts.py), the DVC plot data files, metrics.json (the headline)
and breakdown.json (per category and the task's details), and predictions.parquet."""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from dagster_project.evaluation.charts import (
    bar_chart_svg,
    line_chart_svg,
    render_html,
    render_markdown,
    write_csv,
)
from dagster_project.evaluation.diversity import SELF_BLEU_MAX_N
from dagster_project.evaluation.tasks import task_class
from dagster_project.stages.common import write_parquet


def systems_of(metrics: Mapping[str, Any]) -> list[str]:
    return [s for s in ("student", "baseline", "zero_shot", "teacher") if s in metrics]


SYSTEMS3 = ("zero_shot", "student", "teacher")


def three_numbers(metrics: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The line a distiller reads first: `key` of the base model zero-shot, of the distilled student and
    of the teacher on the same items, and student / teacher (None where a system is missing)."""
    value = {s: metrics[s].get(key) if isinstance(metrics.get(s), dict) else None for s in SYSTEMS3}
    student, teacher = value["student"], value["teacher"]
    ratio = round(student / teacher, 4) if student is not None and teacher else None
    return {"metric": key, **value, "student_vs_teacher": ratio}


def headline_line(headline: Mapping[str, Any]) -> str:
    """'exact_match: zero-shot 0.000 -> student 0.940 / teacher 1.000 (student/teacher 0.94)'."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    ratio = headline.get("student_vs_teacher")
    return (
        f"{headline['metric']}: zero-shot {fmt(headline.get('zero_shot'))} -> "
        f"student {fmt(headline.get('student'))} / teacher {fmt(headline.get('teacher'))} "
        f"(student/teacher {'n/a' if ratio is None else f'{ratio:.2f}'})"
    )


def report_sections(
    metrics: Mapping[str, Any], table: pl.DataFrame, student_path: str, loss_history: Sequence[Mapping]
) -> list[dict[str, Any]]:
    """The report as sections of paragraphs, tables and SVG charts (rendered to report.md and .html)."""
    task = task_class(metrics["task"])()
    systems = systems_of(metrics)
    keys = task.headline_keys
    intro = [
        (
            "p",
            f"Student `{student_path}` on {metrics['n_test']} held-out gold items "
            f"(`{metrics['gold_test']}`), "
            f"task `{task.name}`. Metrics: {task.metric_note}",
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
    if "zero_shot_model" in metrics:
        intro.append(
            (
                "p",
                f"Zero-shot: the base model `{metrics['zero_shot_model']}` before fine-tuning, asked in the "
                "student's format.",
            )
        )
    if "headline" in metrics:
        intro.insert(
            0, ("p", f"Zero-shot -> distilled student / teacher, {headline_line(metrics['headline'])}")
        )
    header, headline_rows = task.headline_table(metrics, systems)
    sections: list[dict[str, Any]] = [
        {"title": "Setup", "blocks": intro},
        {
            "title": "Headline",
            "blocks": [
                ("table", header, headline_rows),
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
    main_key = task.category_key
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
    sections += task.sections(metrics)
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
        c
        for c in ["id", "category", "question", "text", "answer", "prediction", "score"]
        if c in table.columns
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
    task = task_class(metrics["task"])()
    systems = systems_of(metrics)
    keys = task.headline_keys
    headline = [
        {"metric": f"{s} {k}", "system": s, "value": metrics[s].get(k)} for s in systems for k in keys
    ]
    per_cat = [
        {"category": c, "system": s, "value": m[s].get(task.category_key)}
        for c, m in sorted(metrics["per_category"].items())
        for s in systems
    ]
    loss = [{"step": h["step"], "loss": h["loss"]} for h in loss_history]
    return {
        "headline.csv": write_csv(headline, ["metric", "system", "value"]),
        "per_category.csv": write_csv(per_cat, ["category", "system", "value"]),
        "confusion.csv": write_csv(task.confusion_rows(table), ["actual", "predicted"]),
        "train_loss.csv": write_csv(loss, ["step", "loss"]),
    }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


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
    _write_json(out_dir / "metrics.json", headline)
    _write_json(out_dir / "breakdown.json", breakdown)
    _write_text(out_dir / "report.md", report_md)
    _write_text(out_dir / "report.html", report_html)
    for name, text in plots.items():
        _write_text(out_dir / "plots" / name, text)
    tmp = out_dir / f".predictions.parquet.tmp-{os.getpid()}"
    write_parquet(table, tmp)
    tmp.replace(out_dir / "predictions.parquet")
