"""Stage kind `judge_report`: success rates of several systems under a calibrated teacher-as-judge.

    python -m dagster_project.stages.judge_report --params params.yaml [--section judge_report] \\
        --calibration assets/calibration \\
        --systems assets/judged [--students assets/students] --out assets/report
    (or name each: --system teacher assets/judged_teacher --student s assets/student_s ...)

Each `--system NAME DIR` is a judged table: a `synthesize` stage that mapped the judge prompt over the
system's outputs (`DIR/examples.parquet`: one row per judged output with the verdict column, and
`DIR/rejects.parquet`: outputs the judge gave no valid verdict for -- counted as unjudged, never guessed).
`--calibration` is the `calibrate_judge` stage's folder: its Cohen's kappa (judge vs rater majority) is
printed beside every success rate, and when it is below `kappa_threshold` every rate carries a visible
warning. `--student NAME DIR` gives a system's size (`n_params` of the student's train_log.json) for the
plot of success by student size. `--systems DIR` takes every subfolder of DIR as a system named after it
(`--students DIR` likewise), so a recipe that adds a student size changes no command. Systems without a
student (the teacher) come first, then the students from small to large.

Writes into `--out`: `metrics.json` (per system: success rate with its 95% percentile-bootstrap interval,
judged and unjudged counts, the share of each type; the judge's kappa and whether it passed),
`report.md`, `report.html` (self-contained), `examples.json` (best and worst per system: acceptable and
complex first, then acceptable, then rejected) and `plots/success_by_size.csv`.
"""

import json
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field

from dagster_project.evaluation.charts import bar_chart_svg, render_html, render_markdown, write_csv
from dagster_project.metrics.agreement import success_rate
from dagster_project.params_schema import StageParams
from dagster_project.stages.common import load_stage_params, run_main, stage_parser, write_json, write_text


class Params(StageParams):
    """`judge_report`: which columns hold the verdict, the type and the texts; the kappa threshold."""

    verdict_column: str = "acceptable"  # boolean column of the judged tables
    type_column: str | None = "type"  # e.g. simple / complex; null: no type shares
    input_column: str = "utterance"  # shown with the examples
    output_column: str = "reflection"  # the judged text, shown with the examples
    kappa_threshold: float = Field(default=0.6, ge=-1, le=1)
    n_examples: int = Field(default=3, ge=0)  # best and worst examples shown per system
    resamples: int = Field(default=1000, ge=100)
    seed: int = 0


def _pairs(values: list[list[str]] | None, what: str) -> list[tuple[str, Path]]:
    pairs = [(name, Path(folder)) for name, folder in values or []]
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: judge_report: a {what} name is given twice: {names}")
    return pairs


def _subfolders(folder: str | None) -> list[list[str]]:
    if folder is None:
        return []
    if not Path(folder).is_dir():
        raise SystemExit(f"error: judge_report: {folder} is not a folder")
    return [
        [p.name, str(p)] for p in sorted(Path(folder).iterdir()) if p.is_dir() and not p.name.startswith(".")
    ]


def system_figures(name: str, folder: Path, params: Params) -> tuple[dict[str, Any], pl.DataFrame]:
    """One system's figures from its judged table, and the table itself."""
    path = folder / "examples.parquet"
    if not path.exists():
        raise SystemExit(f"error: judge_report: {path} is missing; --system {name} must name a judged folder")
    df = pl.read_parquet(path)
    for column in [params.verdict_column, params.output_column, params.type_column]:
        if column and column not in df.columns:
            raise SystemExit(
                f"error: judge_report: {path} has no column {column!r} (its columns: {df.columns}); fix the "
                "section's verdict_column/type_column/output_column"
            )
    rejects = folder / "rejects.parquet"
    n_unjudged = pl.read_parquet(rejects).height if rejects.exists() else 0
    verdicts = [bool(v) for v in df[params.verdict_column].to_list() if v is not None]
    figures: dict[str, Any] = {"n_judged": len(verdicts), "n_unjudged": n_unjudged}
    if verdicts:
        ci = success_rate(verdicts, n_resamples=params.resamples, seed=params.seed)
        figures |= {"success_rate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
    else:
        figures |= {"success_rate": None, "ci_low": None, "ci_high": None}
    if params.type_column:
        counts = df[params.type_column].value_counts()
        total = max(1, df.height)
        figures["type_share"] = {
            str(t): c / total for t, c in zip(counts[params.type_column], counts["count"], strict=True)
        }
    return figures, df


def examples(df: pl.DataFrame, params: Params) -> dict[str, list[dict[str, Any]]]:
    """Best and worst outputs: acceptable and (if typed) complex first; rejected ones with the reason."""
    keep = [
        c
        for c in [params.input_column, params.output_column, params.type_column, "reason"]
        if c in df.columns
    ]
    rows = df.select([params.verdict_column, *keep]).to_dicts()

    def rank(row: dict[str, Any]) -> tuple:
        return (bool(row[params.verdict_column]), row.get(params.type_column or "") == "complex")

    ordered = sorted(rows, key=rank, reverse=True)
    n = params.n_examples
    return {"best": ordered[:n], "worst": [r for r in reversed(ordered) if not r[params.verdict_column]][:n]}


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0], kind="judge_report")
    parser.add_argument("--calibration", required=True, help="the calibrate_judge stage's folder")
    parser.add_argument("--system", nargs=2, action="append", metavar=("NAME", "DIR"), default=[])
    parser.add_argument("--student", nargs=2, action="append", metavar=("NAME", "DIR"), default=[])
    parser.add_argument("--systems", help="a folder whose every subfolder is a judged system")
    parser.add_argument("--students", help="a folder whose every subfolder is a trained student")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)

    calibration_path = Path(args.calibration) / "calibration.json"
    if not calibration_path.exists():
        raise SystemExit(
            f"error: judge_report: {calibration_path} is missing; run the calibrate_judge stage first"
        )
    calibration = json.loads(calibration_path.read_text())
    kappa = calibration["kappa"]
    kappa_ok = kappa["estimate"] is not None and kappa["estimate"] >= params.kappa_threshold
    systems = _pairs(args.system + _subfolders(args.systems), "--system")
    if not systems:
        raise SystemExit("error: judge_report: no systems; give --system NAME DIR or --systems DIR")
    sizes = {}
    for name, folder in _pairs(args.student + _subfolders(args.students), "--student"):
        log = folder / "train_log.json"
        if not log.exists():
            raise SystemExit(
                f"error: judge_report: {log} is missing; --student {name} must name a trained student"
            )
        sizes[name] = json.loads(log.read_text())["n_params"]

    # Systems without a size (the teacher, ...) first by name, then the students from small to large.
    systems.sort(key=lambda pair: (pair[0] in sizes, sizes.get(pair[0], 0), pair[0]))
    figures, tables = {}, {}
    for name, folder in systems:
        figures[name], tables[name] = system_figures(name, folder, params)
    warning = (
        ""
        if kappa_ok
        else f" (WARNING: judge kappa {kappa['estimate']} < {params.kappa_threshold}: not a trusted judge)"
    )

    def kappa_cell() -> str:
        return (
            f"{kappa['estimate']:.2f} [{kappa['low']:.2f}, {kappa['high']:.2f}]{'' if kappa_ok else ' LOW'}"
        )

    header = [
        "system",
        "student size (params)",
        "success rate",
        "95% CI",
        "judge kappa [95% CI]",
        "judged",
        "unjudged",
    ]
    types = sorted({t for f in figures.values() for t in f.get("type_share", {})})
    header += [f"share {t}" for t in types]
    rows = []
    for name, _ in systems:
        f = figures[name]
        ci = "n/a" if f["success_rate"] is None else f"[{f['ci_low']:.3f}, {f['ci_high']:.3f}]"
        rows.append(
            [name, sizes.get(name, "-"), f["success_rate"] if f["success_rate"] is not None else "n/a", ci]
            + [kappa_cell(), f["n_judged"], f["n_unjudged"]]
            + [f.get("type_share", {}).get(t, 0.0) for t in types]
        )
    judge_line = (
        f"Judge: Cohen's kappa vs the rater majority {kappa['estimate']:.3f} (95% bootstrap interval "
        f"[{kappa['low']:.3f}, {kappa['high']:.3f}], {calibration['n_items']} items; threshold "
        f"{params.kappa_threshold})."
    )
    blocks: list[tuple] = [("p", judge_line)]
    if not kappa_ok:
        blocks.append(
            ("p", f"WARNING: the judge's kappa is below {params.kappa_threshold}: {warning.strip(' ()')}.")
        )
    blocks.append(("table", header, rows))
    sections = [{"title": "Success rate by system (judged by the calibrated teacher)", "blocks": blocks}]
    by_size = sorted((sizes[n], n) for n, _ in systems if n in sizes)
    plot_rows = [{"system": n, "n_params": s, "success_rate": figures[n]["success_rate"]} for s, n in by_size]
    if by_size:
        rates = [figures[n]["success_rate"] or 0.0 for _, n in by_size]
        labels = [f"{n} ({s / 1e6:.2f}M)" for s, n in by_size]
        svg = bar_chart_svg("success rate by student size", labels, {"success rate": rates})
        sections.append({"title": "Success by student size", "blocks": [("svg", svg, "success by size")]})
    picked = {name: examples(tables[name], params) for name, _ in systems}
    for name, ex in picked.items():
        table_rows = [
            [
                kind,
                r.get(params.input_column, ""),
                r.get(params.output_column, ""),
                r.get(params.type_column or "", ""),
            ]
            + [r.get("reason", "")]
            for kind in ("best", "worst")
            for r in ex[kind]
        ]
        sections.append(
            {
                "title": f"Examples: {name}",
                "blocks": [
                    (
                        "table",
                        ["", params.input_column, params.output_column, "type", "judge's reason"],
                        table_rows,
                    )
                ],
            }
        )
    metrics = {
        "judge": {
            "kappa": kappa["estimate"],
            "kappa_low": kappa["low"],
            "kappa_high": kappa["high"],
            "kappa_threshold": params.kappa_threshold,
            "trusted": kappa_ok,
        },
        "systems": figures,
        "order": [name for name, _ in systems],  # JSON keys are sorted: this is the report's order
    }
    title = "Judged success rates"
    # File by file (each atomically): the recipe declares metrics.json as DVC metrics beside the other outs.
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(out / "examples.json", picked)
    write_text(out / "report.md", render_markdown(title, sections))
    write_text(out / "report.html", render_html(title, sections))
    write_text(
        out / "plots" / "success_by_size.csv", write_csv(plot_rows, ["system", "n_params", "success_rate"])
    )
    summary = ", ".join(f"{n} {figures[n]['success_rate']}" for n, _ in systems)
    print(f"judge_report: kappa {kappa['estimate']:.3f}{warning}; success: {summary} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
