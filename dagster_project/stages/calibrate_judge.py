"""Judge calibration: how far a teacher-as-judge agrees with human raters (and with itself when pairs swap).

    python -m dagster_project.stages.calibrate_judge --labels human.jsonl --judge judge.jsonl \\
        [--pairwise pairs.jsonl] [--label-order yes,no] [--tie-break first_label|drop] --out DIR

Inputs (JSON lines):
- `--labels`: human ratings, either one row per item `{"id", "ratings": [label or null, ...]}` (rater r
  at position r) or one row per rating `{"id", "rater", "label"}`.
- `--judge`: the judge's verdicts `{"id", "label"}` (label null: no verdict).
- `--pairwise` (optional): pairwise verdicts in both orders `{"id", "verdict_ab", "verdict_ba"}`, each
  "A" (first shown), "B" (second shown) or "tie".

Writes `calibration.json` and `calibration.md` (with the confusion matrix as an embedded SVG) into
`--out`: Cohen's kappa of the judge vs the rater majority with a 95% percentile-bootstrap interval,
percent agreement, per-rater kappa, Fleiss' kappa among the raters (with the same kind of interval),
the confusion matrix (rows rater majority, columns judge) and, with `--pairwise`, position-swap
consistency. Definitions:
`dagster_project.metrics.agreement` (the Reflections paper reports judge vs majority of three raters,
kappa 0.66).
"""

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster_project.evaluation.charts import confusion_svg, markdown_table, svg_data_uri
from dagster_project.metrics.agreement import judge_vs_majority, swap_consistency
from dagster_project.stages.common import run_main, write_json

__all__ = ["calibrate", "load_judge", "load_ratings", "render_markdown"]


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_ratings(path: str | Path) -> tuple[dict[str, list[Any]], list[str]]:
    """({item id: ratings by rater position}, rater names) from either input layout (see module doc)."""
    rows = _read_jsonl(path)
    if all("ratings" in r for r in rows):
        n = max((len(r["ratings"]) for r in rows), default=0)
        return {str(r["id"]): list(r["ratings"]) for r in rows}, [f"rater_{i}" for i in range(n)]
    raters: list[str] = []
    for r in rows:
        if str(r["rater"]) not in raters:
            raters.append(str(r["rater"]))
    position = {name: i for i, name in enumerate(raters)}
    items: dict[str, list[Any]] = {}
    for r in rows:
        ratings = items.setdefault(str(r["id"]), [None] * len(raters))
        ratings[position[str(r["rater"])]] = r["label"]
    return items, raters


def load_judge(path: str | Path) -> dict[str, Any]:
    return {str(r["id"]): r.get("label") for r in _read_jsonl(path)}


def _clean(obj: Any) -> Any:
    """NaN -> None, recursively, so the JSON is valid for every reader."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def calibrate(
    ratings: Mapping[str, Sequence[Any]],
    judge: Mapping[str, Any],
    raters: Sequence[str],
    label_order: Sequence[Any] | None = None,
    pairwise: Sequence[Mapping[str, Any]] | None = None,
    tie_break: str = "first_label",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every calibration figure as a JSON-ready dict (items rated but not judged count as dropped)."""
    ids = sorted(ratings)
    labels = (
        list(label_order)
        if label_order
        else sorted(
            {v for r in ratings.values() for v in r if v is not None}
            | {v for v in judge.values() if v is not None},
            key=str,
        )
    )
    agreement = judge_vs_majority(
        [judge.get(i) for i in ids],
        [list(ratings[i]) for i in ids],
        labels,
        tie_break=tie_break,  # type: ignore[arg-type]
        n_resamples=n_resamples,
        seed=seed,
    )
    result = agreement.to_dict()
    result["per_rater_kappa"] = dict(zip(raters, agreement.per_rater_kappa, strict=False))
    result["n_judged_not_rated"] = len(set(judge) - set(ratings))
    if pairwise:
        swap = swap_consistency([p["verdict_ab"] for p in pairwise], [p["verdict_ba"] for p in pairwise])
        result["swap_consistency"] = swap.to_dict() | {"ids": [str(p.get("id")) for p in pairwise]}
    return _clean(result)


def _f(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _interval(ci: Mapping[str, Any] | None) -> str:
    return "n/a" if ci is None else f"[{_f(ci['low'])}, {_f(ci['high'])}]"


def render_markdown(result: Mapping[str, Any]) -> str:
    k = result["kappa"]
    interval = f"{int(k['confidence'] * 100)}% bootstrap interval"
    cm = result["confusion"]
    svg = confusion_svg("judge vs majority", cm["row_labels"], cm["col_labels"], cm["counts"])
    parts = [
        "# Judge calibration",
        f"{result['n_items']} items with a judge label and a rater majority ({result['n_dropped']} dropped; "
        f"majority ties: `{result['tie_break']}`).",
        markdown_table(
            ["figure", "value"],
            [
                ["Cohen's kappa, judge vs rater majority", _f(k["estimate"])],
                [interval, _interval(k)],
                ["percent agreement", _f(result["percent_agreement"])],
                ["Fleiss' kappa among raters", _f(result["raters_fleiss_kappa"])],
                [interval, _interval(result["raters_fleiss_ci"])],
            ]
            + [[f"kappa, judge vs {name}", _f(v)] for name, v in result["per_rater_kappa"].items()],
        ),
        "## Confusion matrix (rows: rater majority, columns: judge)",
        markdown_table(
            ["majority \\ judge", *map(str, cm["col_labels"])],
            [[str(r), *row] for r, row in zip(cm["row_labels"], cm["counts"], strict=True)],
        ),
        f"![confusion]({svg_data_uri(svg)})",
    ]
    swap = result.get("swap_consistency")
    if swap:
        parts += [
            "## Position-swap consistency (pairwise judge)",
            markdown_table(
                ["figure", "value"],
                [
                    ["pairs", swap["n_pairs"]],
                    ["consistent share", _f(swap["consistency_rate"])],
                    [
                        "share of verdicts for the first-shown item (0.5 = no bias)",
                        _f(swap["first_position_rate"]),
                    ],
                    ["inconsistent, first shown won both times", swap["n_inconsistent_first"]],
                    ["inconsistent, second shown won both times", swap["n_inconsistent_second"]],
                ],
            ),
        ]
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, help="human ratings (JSON lines)")
    parser.add_argument("--judge", required=True, help="judge verdicts (JSON lines: id, label)")
    parser.add_argument("--pairwise", help="pairwise verdicts in both orders (id, verdict_ab, verdict_ba)")
    parser.add_argument("--label-order", help="comma-separated labels (default: sorted labels seen)")
    parser.add_argument("--tie-break", default="first_label", choices=["first_label", "drop"])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for calibration.json and calibration.md")
    args = parser.parse_args(argv)
    ratings, raters = load_ratings(args.labels)
    result = calibrate(
        ratings,
        load_judge(args.judge),
        raters,
        label_order=args.label_order.split(",") if args.label_order else None,
        pairwise=_read_jsonl(args.pairwise) if args.pairwise else None,
        tie_break=args.tie_break,
        n_resamples=args.resamples,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "calibration.json", result)
    tmp = out / ".calibration.md.tmp"
    tmp.write_text(render_markdown(result), encoding="utf-8")
    tmp.replace(out / "calibration.md")
    k = result["kappa"]
    print(
        f"calibrate_judge: {result['n_items']} items; kappa {_f(k['estimate'])} "
        f"[{_f(k['low'])}, {_f(k['high'])}]; wrote {out}"
    )


if __name__ == "__main__":
    run_main(main)
