"""Stage kind `critique`: the teacher as critic compares pairs of outputs, every pair asked in both orders.

    # preference data: pairs of a student's candidates for the same input
    python -m dagster_project.stages.critique --params params.yaml [--section critique] \\
        --candidates assets/candidates/r1/predictions.parquet --out assets/critiques/r1
    # a system against others, input by input (win rates)
    python -m dagster_project.stages.critique --params params.yaml --section versus \\
        --system r1=assets/answers/r1/predictions.parquet \\
        --against sft=assets/answers/sft/predictions.parquet \\
        --out assets/versus/r1

The critic prompt is multiple choice: it shows the input's columns (`input_columns`) and two options
(`option_variables`) and answers which is better (`choice_field`, one of `choice_labels`: first shown,
second shown). Every pair is sent through the teacher primitive twice, in both orders. A pair whose two
verdicts name the same text is **consistent**; one whose verdicts contradict each other (the critic
picked the same slot both times) is **inconsistent**: discarded from the preferences and counted. The
position-bias figures (`metrics.agreement.swap_consistency`): the consistency rate and the share of all
verdicts that picked the option shown first (0.5 for a critic without position bias).

`--candidates`: rows of one input (same `key_column`) with distinct, non-empty `candidate_column` texts
form pairs (at most `max_pairs_per_input` per input, drawn with `seed`). Writes `preferences.parquet`
(the input columns, `chosen`, `rejected`, `pair_id`: the critic's winner is always `chosen`).

`--system NAME=TABLE --against NAME=TABLE ...`: each input's output of the system is compared with each
opponent's output for the same `key_column` value (identical texts are a tie without a question).
Consistent wins count 1, inconsistent verdicts and identical texts 0.5 (a tie), losses 0; writes
`versus.json`: per opponent the win rate with a percentile-bootstrap interval (`confidence`,
`n_resamples`), wins, ties, losses and the position-bias figures.

Both write `verdicts.parquet` (one row per pair: both verdicts, the winner or null) and `stats.json`
(pairs, consistent, inconsistent, unanswered, position bias, the teacher engine's counters).
"""

import itertools
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, model_validator

from dagster_project.metrics.agreement import bootstrap_ci, swap_consistency
from dagster_project.params_schema import PromptFile, StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    data_facts,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
)
from dagster_project.synthesis.shots import read_table
from dagster_project.teacher.engine import TeacherEngine
from dagster_project.teacher.mapping import build_requests, map_prompt
from dagster_project.teacher.prompts import load_prompt


class Params(StageParams):
    """`critique`: the critic prompt, how a row becomes its variables, and the pairs it is asked about."""

    prompt: PromptFile
    teacher_model: str = "offline-teacher"
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int = 0
    max_attempts: int = Field(default=3, ge=1)
    key_column: str  # the input a row answers: pairs are formed within it, systems are aligned on it
    input_columns: dict[str, str] = {}  # prompt variable -> column of the input, shown with both options
    candidate_column: str  # the text being compared
    option_variables: list[str] = Field(default=["option_a", "option_b"], min_length=2, max_length=2)
    choice_field: str = "choice"  # the answer's field naming the better option
    choice_labels: list[str] = Field(default=["A", "B"], min_length=2, max_length=2)  # first, second shown
    max_pairs_per_input: int = Field(default=3, gt=0)  # --candidates only
    confidence: float = Field(default=0.95, gt=0, lt=1)  # --system only: the win rate's interval
    n_resamples: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _distinct_names(self) -> "Params":
        if len(set(self.option_variables)) != 2 or len(set(self.choice_labels)) != 2:
            raise ValueError("option_variables and choice_labels each need two different values")
        return self


def candidate_pairs(df: pl.DataFrame, params: Params) -> list[dict[str, Any]]:
    """Unordered pairs of distinct, non-empty candidates of one input, at most `max_pairs_per_input`
    per input (seeded); each pair carries the input's columns, `pair_id`, `first` and `second`."""
    rng = random.Random(params.seed)
    inputs = sorted(set(params.input_columns.values()) | {params.key_column})
    pairs = []
    for key, group in df.group_by(params.key_column, maintain_order=True):
        texts = sorted({t.strip() for t in group[params.candidate_column].to_list() if t and t.strip()})
        combos = list(itertools.combinations(texts, 2))
        if len(combos) > params.max_pairs_per_input:
            combos = rng.sample(combos, params.max_pairs_per_input)
        row = {c: group[c][0] for c in inputs}
        for a, b in combos:
            if rng.random() < 0.5:  # which of the two is shown first in the first asking: no sort order bias
                a, b = b, a
            pairs.append({**row, "pair_id": f"{key[0]}\x1f{a}\x1f{b}", "first": a, "second": b})
    return pairs


def ask_both_orders(
    pairs: list[dict[str, Any]], params: Params, root: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ask the critic about every pair in both orders; return one verdict row per pair and the stats.

    Each verdict row holds `verdict_ab` (the slot chosen with `first` shown first) and `verdict_ba` (with
    `second` shown first), each "A" (the slot shown first), "B" or None (no valid answer), and `winner`:
    the winning text of a consistent pair, None otherwise.
    """
    prompt = load_prompt(root / params.prompt)
    first_label, second_label = params.choice_labels
    var_a, var_b = params.option_variables
    asked = []
    for i, pair in enumerate(pairs):
        for order, (shown_a, shown_b) in (("ab", ("first", "second")), ("ba", ("second", "first"))):
            asked.append({**pair, "_pair": i, "_order": order, var_a: pair[shown_a], var_b: pair[shown_b]})
    variables = {**params.input_columns, var_a: var_a, var_b: var_b}
    requests = build_requests(
        prompt, asked, model=params.teacher_model, variables=variables, temperature=params.temperature,
        seed=params.seed,
    )  # fmt: skip
    with TeacherEngine(max_attempts=params.max_attempts) as engine:
        result = map_prompt(engine, prompt, requests, carry={"_pair": "_pair", "_order": "_order"})
    slot = {first_label: "A", second_label: "B"}
    answers: dict[tuple[int, str], str | None] = {}
    for row in result.rows:
        answers[(row["_pair"], row["_order"])] = slot.get(str(row.get(params.choice_field)))
    verdicts = []
    for i, pair in enumerate(pairs):
        ab, ba = answers.get((i, "ab")), answers.get((i, "ba"))
        winner = None
        if ab is not None and ba is not None and ab != ba:  # "A" then "B": the same text won both times
            winner = pair["first"] if ab == "A" else pair["second"]
        verdicts.append({**pair, "verdict_ab": ab, "verdict_ba": ba, "winner": winner})
    stats = {
        **position_bias(verdicts),
        "n_requests": len(requests),
        "n_rejects": len(result.rejects),
        "rejects_by_reason": result.reject_reasons,
        "json_repairs": result.json_repairs,
        "teacher": {**engine.counters.as_dict(), "backend": engine.backend_kind},
    }
    return verdicts, stats


def position_bias(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs, consistent and inconsistent ones, unanswered ones, and the critic's position bias: the
    consistency rate and the share of verdicts that picked the option shown first (over answered pairs)."""
    answered = [v for v in verdicts if v["verdict_ab"] is not None and v["verdict_ba"] is not None]
    figures: dict[str, Any] = {
        "n_pairs": len(verdicts),
        "n_unanswered": len(verdicts) - len(answered),
        "n_consistent": 0,
        "n_inconsistent": 0,
        "consistency_rate": None,
        "first_position_rate": None,
        "n_inconsistent_first": 0,
        "n_inconsistent_second": 0,
    }
    if answered:
        swap = swap_consistency([v["verdict_ab"] for v in answered], [v["verdict_ba"] for v in answered])
        figures.update(
            n_consistent=swap.n_consistent,
            n_inconsistent=swap.n_pairs - swap.n_consistent,
            consistency_rate=swap.consistency_rate,
            first_position_rate=swap.first_position_rate,
            n_inconsistent_first=swap.n_inconsistent_first,
            n_inconsistent_second=swap.n_inconsistent_second,
        )
    return figures


def _verdict_frame(verdicts: list[dict[str, Any]]) -> pl.DataFrame:
    rows = [{k: v for k, v in d.items() if not k.startswith("_")} for d in verdicts]
    return pl.DataFrame(rows, infer_schema_length=None)


def preferences(verdicts: list[dict[str, Any]], params: Params) -> pl.DataFrame:
    """The consistent pairs as DPO rows: the input's columns, `chosen` (the critic's winner), `rejected`."""
    inputs = sorted(set(params.input_columns.values()) | {params.key_column})
    rows = []
    for v in verdicts:
        if v["winner"] is None:
            continue
        loser = v["second"] if v["winner"] == v["first"] else v["first"]
        rows.append(
            {**{c: v[c] for c in inputs}, "pair_id": v["pair_id"], "chosen": v["winner"], "rejected": loser}
        )
    schema = {c: pl.String for c in inputs} | {
        "pair_id": pl.String,
        "chosen": pl.String,
        "rejected": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def _named_table(spec: str, flag: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(
            f"error: critique: {flag} {spec!r}: expected NAME=TABLE (e.g. sft=assets/answers/sft/x.parquet)"
        )
    return name, Path(path)


def _read(path: Path, params: Params, what: str) -> pl.DataFrame:
    df = read_table(path)
    needed = {params.key_column, params.candidate_column, *params.input_columns.values()}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise SystemExit(
            f"error: critique: {what} {path} has no column(s) {missing}; its columns: {df.columns}. Fix the "
            "section's key_column/candidate_column/input_columns."
        )
    if df.height == 0:
        raise SystemExit(f"error: critique: {what} {path} has no rows.")
    return df.with_columns(pl.col(params.candidate_column).fill_null(""))


def versus_pairs(
    system: pl.DataFrame, opponent: pl.DataFrame, name: str, params: Params
) -> tuple[list[dict[str, Any]], int, int]:
    """(pairs to ask, identical outputs, inputs the opponent lacks): the system's first output per input
    against the opponent's; `first` is always the system's (both orders are asked)."""
    theirs = {}
    for row in opponent.iter_rows(named=True):
        theirs.setdefault(row[params.key_column], row[params.candidate_column])
    inputs = sorted(set(params.input_columns.values()) | {params.key_column})
    pairs, identical, missing, seen = [], 0, 0, set()
    for row in system.iter_rows(named=True):
        key = row[params.key_column]
        if key in seen:
            continue
        seen.add(key)
        if key not in theirs:
            missing += 1
            continue
        ours, other = row[params.candidate_column].strip(), theirs[key].strip()
        if ours == other:
            identical += 1
            continue
        pairs.append(
            {**{c: row[c] for c in inputs}, "pair_id": f"{name}\x1f{key}", "first": ours, "second": other}
        )
    return pairs, identical, missing


def win_rate(verdicts: list[dict[str, Any]], identical: int, params: Params) -> dict[str, Any]:
    """Wins (1), ties (0.5: inconsistent or unanswered verdicts, identical outputs) and losses (0) of the
    system (always `first`), and the win rate with a bootstrap interval."""
    outcomes = [0.5] * identical
    wins = losses = 0
    for v in verdicts:
        if v["winner"] is None:
            outcomes.append(0.5)
        elif v["winner"] == v["first"]:
            wins += 1
            outcomes.append(1.0)
        else:
            losses += 1
            outcomes.append(0.0)
    ci = bootstrap_ci(
        outcomes, lambda xs: sum(xs) / len(xs), params.n_resamples, params.confidence, params.seed
    )
    return {
        "n": len(outcomes),
        "wins": wins,
        "losses": losses,
        "ties": len(outcomes) - wins - losses,
        "identical": identical,
        "win_rate": ci.estimate,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "confidence": params.confidence,
        "decisive_win_rate": wins / (wins + losses) if wins + losses else None,
    }


def main() -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="critique")
    parser.add_argument("--candidates", help="a table with several candidates per input: preference pairs")
    parser.add_argument("--system", help="NAME=TABLE: the system whose outputs are compared")
    parser.add_argument("--against", action="append", default=[], help="NAME=TABLE: an opponent (repeat)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    if bool(args.candidates) == bool(args.system) or (args.system and not args.against):
        raise SystemExit(
            "error: critique: give either --candidates TABLE, or --system NAME=TABLE with --against"
        )
    params: Params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent

    if args.candidates:
        pairs = candidate_pairs(_read(Path(args.candidates), params, "--candidates"), params)
        if not pairs:
            raise SystemExit(
                f"error: critique: {args.candidates} has no input with two distinct non-empty candidates; "
                "sample more candidates (generate.num_candidates) or at a higher temperature."
            )
        verdicts, stats = ask_both_orders(pairs, params, root)
        prefs = preferences(verdicts, params)
        if prefs.height == 0:
            raise SystemExit(
                f"error: critique: none of {len(pairs)} pairs got a consistent verdict (stats: "
                f"{json.dumps({k: stats[k] for k in ('n_inconsistent', 'n_unanswered')})}); "
                "nothing to prefer."
            )
        stats["n_preferences"] = prefs.height
        with atomic_output_dir(args.out) as tmp:
            _verdict_frame(verdicts).write_parquet(tmp / "verdicts.parquet")
            prefs.write_parquet(tmp / "preferences.parquet")
            write_json(tmp / "stats.json", data_facts(stats, args.out, "stats.json"))
        print(
            f"{args.section}: {len(pairs)} pairs asked in both orders -> {prefs.height} preferences, "
            f"{stats['n_inconsistent']} inconsistent verdicts discarded (consistency "
            f"{stats['consistency_rate']:.2f}, first slot chosen {stats['first_position_rate']:.2f})"
        )
        return

    name, path = _named_table(args.system, "--system")
    system = _read(path, params, "--system")
    all_verdicts, results, bias = [], {}, Counter()
    for spec in args.against:
        opponent_name, opponent_path = _named_table(spec, "--against")
        pairs, identical, missing = versus_pairs(
            system, _read(opponent_path, params, "--against"), opponent_name, params
        )
        verdicts, stats = ask_both_orders(pairs, params, root) if pairs else ([], position_bias([]))
        results[opponent_name] = {
            **win_rate(verdicts, identical, params),
            "missing": missing,
            "critic": stats,
        }
        all_verdicts += [{**v, "opponent": opponent_name} for v in verdicts]
        for key in ("n_pairs", "n_consistent", "n_inconsistent", "n_unanswered"):
            bias[key] += stats[key]
    answered = [v for v in all_verdicts if v["verdict_ab"] is not None and v["verdict_ba"] is not None]
    overall = position_bias(answered)
    with atomic_output_dir(args.out) as tmp:
        if all_verdicts:
            _verdict_frame(all_verdicts).write_parquet(tmp / "verdicts.parquet")
        write_json(tmp / "versus.json", {"system": name, "against": results})
        write_json(
            tmp / "stats.json",
            data_facts({**overall, "n_unanswered": bias["n_unanswered"]}, args.out, "stats.json"),
        )
    summary = ", ".join(
        f"vs {o}: {r['win_rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for o, r in results.items()
    )
    print(f"{args.section}: {name} {summary}")


if __name__ == "__main__":
    run_main(main)
