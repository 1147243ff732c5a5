"""Stage kind `calibrate_judge`: how far a teacher-as-judge agrees with human raters, as an asset.

    python -m dagster_project.stages.calibrate_judge --params params.yaml [--section calibrate] --out DIR

Inputs (named in the params section; formats checked before any teacher call, each error names the line):
- `items`: JSON lines, one judged item a row: `id` plus the columns the judge prompt reads (e.g.
  `utterance`, `reflection`).
- `labels`: the human ratings. CSV or JSON lines with one row per rating (`id`, `rater`, `label`), or
  JSON lines with one row per item (`id`, `ratings`: a list, rater r at position r). Every rated item must
  be in `items`, and every item needs a label from every rater (`raters`, default: all raters seen); a
  rating of an unknown item, a missing rater or a duplicate rating is an error naming it.
- the judge: either `judge_prompt` (the teacher judges every item now, through the teacher engine and
  its cache; `verdict_field` of its answer, mapped through `verdict_labels`, is the judge's label) or
  `judge_verdicts` (JSON lines `{"id", "label"}` from elsewhere).
- `pairwise` (optional): pairwise verdicts in both orders `{"id", "verdict_ab", "verdict_ba"}`, each
  "A" (first shown), "B" (second shown) or "tie" -- the position/order effect of a pairwise judge.

Writes `calibration.json` and `calibration.md` (with the confusion matrix as an embedded SVG), and
`judge_verdicts.jsonl` (the judge's label per item) into `--out`: Cohen's kappa of the judge vs the rater
majority with a 95% percentile-bootstrap interval, percent agreement, per-rater kappa, Fleiss' kappa among
the raters (with the same kind of interval), the confusion matrix (rows rater majority, columns judge)
and, with `pairwise`, position-swap consistency. Definitions: `dagster_project.metrics.agreement`.
A downstream report reads `calibration.json` to print kappa beside every success rate the judge gives.
"""

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dagster_project.evaluation.charts import confusion_svg, markdown_table, svg_data_uri
from dagster_project.metrics.agreement import judge_vs_majority, swap_consistency
from dagster_project.params_schema import DataFile, PromptFile, StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
)

__all__ = [
    "CalibrationInputError",
    "Params",
    "calibrate",
    "judge_items",
    "load_judge",
    "load_ratings",
    "render_markdown",
]


class Params(StageParams):
    """`calibrate_judge`: the judged items, the human labels, and the judge (a prompt, or its verdicts)."""

    items: DataFile
    labels: DataFile
    judge_prompt: PromptFile | None = None
    judge_verdicts: DataFile | None = None
    teacher_model: str = "offline-teacher"
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_attempts: int = Field(default=3, ge=1)
    variables: dict[str, str] = {}  # judge prompt variable -> items column (default: the same name)
    verdict_field: str = "acceptable"  # the field of the judge's answer that is its label
    verdict_labels: dict[str, str] = {}  # judge value (booleans as "true"/"false") -> the raters' label
    label_order: list[str] = []  # labels in order (ties break to the first); empty: sorted labels seen
    raters: list[str] = []  # the raters every item needs; empty: every rater the labels file names
    pairwise: DataFile | None = None
    tie_break: Literal["first_label", "drop"] = "first_label"
    resamples: int = Field(default=1000, ge=100)
    seed: int = 0

    @model_validator(mode="after")
    def _one_judge(self) -> "Params":
        if (self.judge_prompt is None) == (self.judge_verdicts is None):
            raise ValueError(
                "give exactly one of judge_prompt (the teacher judges the items now) or judge_verdicts (a "
                "file of verdicts from elsewhere)"
            )
        return self


class CalibrationInputError(ValueError):
    """A labels, items or verdicts file is malformed; the message names the file, the line and the fix."""


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV file (header line 1) or a JSON-lines file (blank lines skipped)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(i + 2, dict(row)) for i, row in enumerate(reader)]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationInputError(
                f"{path}:{n}: not valid JSON ({exc.msg}); one object per line"
            ) from None
        if not isinstance(row, dict):
            raise CalibrationInputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    return rows


def _require(path: Path, n: int, row: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if row.get(k) in (None, "")]
    if missing:
        raise CalibrationInputError(
            f"{path}:{n}: missing {', '.join(missing)}; every row needs {', '.join(keys)} (see the format "
            "in docs/recipes.md, 'Judge calibration')"
        )


def load_ratings(
    path: str | Path, item_ids: Sequence[str] | None = None, raters: Sequence[str] | None = None
) -> tuple[dict[str, list[Any]], list[str]]:
    """({item id: ratings by rater position}, rater names) from either layout (see module doc).

    With `item_ids`, a rating of an item not among them is an error, and so is an item with no rating;
    every item must have a label from every rater (`raters`, default: every rater the file names).
    """
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise CalibrationInputError(f"{path}: no ratings")
    items: dict[str, dict[str, Any]] = {}
    if all("ratings" in r for _, r in rows):  # one row per item, raters by position
        width = max(len(r["ratings"]) for _, r in rows)
        names = list(raters) if raters else [f"rater_{i}" for i in range(width)]
        for n, row in rows:
            _require(path, n, row, ["id"])
            if not isinstance(row["ratings"], list):
                raise CalibrationInputError(f"{path}:{n}: 'ratings' must be a list (rater r at position r)")
            items[str(row["id"])] = {
                names[i]: v for i, v in enumerate(row["ratings"]) if i < len(names) and v is not None
            }
    else:  # one row per rating
        seen: list[str] = []
        for n, row in rows:
            _require(path, n, row, ["id", "rater", "label"])
            item, rater = str(row["id"]), str(row["rater"])
            if rater not in seen:
                seen.append(rater)
            if rater in items.setdefault(item, {}):
                raise CalibrationInputError(f"{path}:{n}: a second label from {rater!r} for item {item!r}")
            items[item][rater] = row["label"]
        names = list(raters) if raters else seen
    if item_ids is not None:
        known = {str(i) for i in item_ids}
        unknown = sorted(set(items) - known)
        if unknown:
            line = next(n for n, r in rows if str(r.get("id")) == unknown[0])
            raise CalibrationInputError(
                f"{path}:{line}: item {unknown[0]!r} is not in the judged items ({len(unknown)} unknown "
                "id(s)); rate only items of the items file, or add the item there"
            )
        unrated = sorted(known - set(items))
        if unrated:
            raise CalibrationInputError(
                f"{path}: item {unrated[0]!r} of the items file has no ratings ({len(unrated)} unrated); "
                "rate it or remove it from the items file"
            )
    for item, by_rater in items.items():
        absent = [r for r in names if r not in by_rater]
        if absent:
            raise CalibrationInputError(
                f"{path}: item {item!r} has no label from rater {absent[0]!r} (every item needs a label from "
                f"each of the {len(names)} raters: {', '.join(names)})"
            )
        extra = sorted(set(by_rater) - set(names))
        if extra:
            raise CalibrationInputError(f"{path}: item {item!r} is rated by {extra[0]!r}, not one of {names}")
    return {item: [by_rater[r] for r in names] for item, by_rater in items.items()}, names


def load_judge(path: str | Path) -> dict[str, Any]:
    """{item id: the judge's label} from JSON lines or CSV with `id` and `label` (label empty: no verdict)."""
    path = Path(path)
    verdicts = {}
    for n, row in read_rows(path):
        _require(path, n, row, ["id"])
        verdicts[str(row["id"])] = row.get("label") if row.get("label") != "" else None
    return verdicts


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


def judge_items(params: "Params", items: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teacher judges every item with `params.judge_prompt`: ({item id: label or None}, run info).

    An item whose every answer was rejected (malformed, wrong schema) has no verdict (None): it is counted
    as dropped by the calibration, never guessed."""
    # The teacher stack (openai, jsonschema...) is imported only when the judge runs.
    from dagster_project.teacher.engine import TeacherEngine
    from dagster_project.teacher.mapping import build_requests, map_prompt
    from dagster_project.teacher.prompts import load_prompt

    prompt = load_prompt(params.judge_prompt)
    variables = {v: params.variables.get(v, v) for v in prompt.variables}
    missing = sorted({c for c in variables.values() if any(c not in it for it in items)})
    if missing:
        raise CalibrationInputError(
            f"{params.items}: the judge prompt {params.judge_prompt} reads column(s) {missing} that some "
            "items lack; add them to the items file or map the prompt's variables (variables: {var: column})"
        )
    rows = [{**it, "_item": str(it["id"])} for it in items]
    requests = build_requests(
        prompt,
        rows,
        model=params.teacher_model,
        variables=variables,
        temperature=params.temperature,
        seed=params.seed,
    )
    with TeacherEngine(max_attempts=params.max_attempts) as engine:
        result = map_prompt(engine, prompt, requests, carry={"_item": "_item"})
    verdicts: dict[str, Any] = {str(it["id"]): None for it in items}
    for row in result.rows:
        value = row.get(params.verdict_field)
        key = str(value).lower() if isinstance(value, bool) else str(value)
        verdicts[row["_item"]] = params.verdict_labels.get(key, key)
    info = {
        "prompt": str(params.judge_prompt),
        "model": params.teacher_model,
        "n_requests": result.n_requests,
        "n_rejected": len(result.rejects),
        "reject_reasons": result.reject_reasons,
    }
    return verdicts, info


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0], kind="calibrate_judge")
    parser.add_argument(
        "--out", required=True, help="folder for calibration.json, calibration.md and verdicts"
    )
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)
    try:
        items = [row for _, row in read_rows(params.items)]
        ids = [str(it.get("id")) for it in items]
        if any(i in ("None", "") for i in ids) or len(set(ids)) != len(ids):
            raise CalibrationInputError(f"{params.items}: every item needs a unique 'id'")
        ratings, raters = load_ratings(params.labels, ids, params.raters or None)
        bad = sorted({str(v) for r in ratings.values() for v in r} - set(params.label_order))
        if params.label_order and bad:
            raise CalibrationInputError(
                f"{params.labels}: label {bad[0]!r} is not one of label_order {params.label_order}; fix the "
                "label or add it to label_order"
            )
        pairwise = [row for _, row in read_rows(params.pairwise)] if params.pairwise else None
        if params.judge_verdicts:
            verdicts, info = load_judge(params.judge_verdicts), {"verdicts_file": str(params.judge_verdicts)}
        else:
            verdicts, info = judge_items(params, items)
    except CalibrationInputError as exc:
        raise SystemExit(f"error: {args.section}: {exc}") from None
    result = calibrate(
        ratings,
        verdicts,
        raters,
        label_order=params.label_order or None,
        pairwise=pairwise,
        tie_break=params.tie_break,
        n_resamples=params.resamples,
        seed=params.seed,
    )
    result["judge"] = info
    with atomic_output_dir(args.out) as tmp:
        write_json(tmp / "calibration.json", result)
        (tmp / "calibration.md").write_text(render_markdown(result), encoding="utf-8")
        (tmp / "judge_verdicts.jsonl").write_text(
            "".join(json.dumps({"id": i, "label": verdicts.get(i)}) + "\n" for i in sorted(verdicts)),
            encoding="utf-8",
        )
    k = result["kappa"]
    print(
        f"calibrate_judge: {result['n_items']} items; kappa {_f(k['estimate'])} "
        f"[{_f(k['low'])}, {_f(k['high'])}]; wrote {args.out}"
    )


if __name__ == "__main__":
    run_main(main)
