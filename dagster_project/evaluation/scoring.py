"""Every system's answers scored by the task: headline figures, per-category means and the predictions
table (one row per item)."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from dagster_project.evaluation.tasks import Task, reference_text


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
    task: Task, items: Sequence[Mapping[str, Any]], predictions: Mapping[str, Sequence[str]]
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Headline figures, per-category means and the predictions table for each system's answers."""
    metrics: dict[str, Any] = {"task": task.name, "n_test": len(items)}
    scores: dict[str, list[dict[str, Any]]] = {}
    details: dict[str, Any] = {}
    for system, preds in predictions.items():
        headline, per_item = task.score(preds, items)
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
        **{name: [str(it[field]) for it in items] for name, field in task.input_columns.items()},
        "answer": [reference_text(it["reference"]) for it in items],
    }
    for system, preds in predictions.items():
        columns["prediction" if system == "student" else f"{system}_prediction"] = list(preds)
    columns["score"] = [float(s["score"]) for s in student]
    for key in student[0] if student else []:
        if key != "score":
            columns[key] = [s[key] for s in student]
    return metrics, pl.DataFrame(columns)
