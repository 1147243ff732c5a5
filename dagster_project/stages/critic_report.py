"""Stage kind `critic_report`: what each critic round bought, judged by the critic with swapped positions.

    python -m dagster_project.stages.critic_report --params params.yaml [--section report] \\
        --versus assets/versus --critiques assets/critiques --students assets/students --out assets/report

Reads, per round, the `critique` kind's `versus.json` (`--versus/<round>/`: the round's student against the
SFT student and the teacher, both orders), its preference critique's `stats.json` (`--critiques/<round>/`)
and the `dpo` kind's `margins.json` and `dpo_log.json` (`--students/<round>/`); `--versus/teacher/` holds
the teacher against the SFT student. Rounds are ordered by their lineage (each DPO log names the student
it started from: sft -> r1 -> r2 ...). Writes into `--out`:

- `metrics.json`: per round the win rate against the SFT student and against the teacher (with their
  intervals), the share of the SFT-to-teacher gap closed, the critique's pairs, preferences and position
  bias, the DPO reward margins (training, held-out) and the held-out log-probability margin before and
  after; the teacher's win rate against SFT; the critic's position bias pooled over every comparison.
- `report.md` / `report.html`: the same as tables and a chart; `plots/win_rates.csv` for `dvc plots`.

Gap closed: with w(x) the critic's win rate of x against the SFT student (0.5 for the SFT student itself),
round k closed (w(k) - 0.5) / (w(teacher) - 0.5) of the gap; undefined when the teacher does not beat SFT.
"""

import json
from pathlib import Path
from typing import Any

from dagster_project.evaluation.charts import bar_chart_svg, render_html, render_markdown, write_csv
from dagster_project.params_schema import StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_text,
)


class Params(StageParams):
    """`critic_report`: names only (the figures come from the upstream stages)."""

    sft_name: str = "sft"  # the SFT-only student's name (the `--against` name in versus and its folder)
    teacher_name: str = "teacher"


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"error: critic_report: {path} is missing ({what}); build the stage that writes it.")
    return json.loads(path.read_text())


def round_order(students: Path, rounds: list[str], sft: str) -> list[str]:
    """The rounds in lineage order: start from the one whose DPO log says it started from `sft`."""
    start = {
        r: Path(_read(students / r / "dpo_log.json", "a dpo round")["student_from"]).name for r in rounds
    }
    order, current = [], sft
    while True:
        nxt = sorted(r for r, s in start.items() if s == current and r not in order)
        if not nxt:
            break
        order.append(nxt[0])
        current = nxt[0]
    return order + sorted(set(rounds) - set(order))  # rounds off the chain: after it, by name


def gap_closed(w_round: float, w_teacher: float) -> float | None:
    """(w_round - 0.5) / (w_teacher - 0.5), None when the teacher does not beat the SFT student."""
    return (w_round - 0.5) / (w_teacher - 0.5) if w_teacher > 0.5 else None


def pooled_bias(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Consistency and first-slot share over several critiques, each weighted by its answered pairs."""
    answered = [s for s in stats if s.get("consistency_rate") is not None]
    n = sum(s["n_consistent"] + s["n_inconsistent"] for s in answered)
    if not n:
        return {"n_pairs": 0, "consistency_rate": None, "first_position_rate": None}
    weight = [(s["n_consistent"] + s["n_inconsistent"]) / n for s in answered]
    return {
        "n_pairs": n,
        "n_inconsistent": sum(s["n_inconsistent"] for s in answered),
        "consistency_rate": sum(w * s["consistency_rate"] for w, s in zip(weight, answered, strict=True)),
        "first_position_rate": sum(
            w * s["first_position_rate"] for w, s in zip(weight, answered, strict=True)
        ),
    }


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _rate(r: dict[str, Any]) -> str:
    return f"{r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def main() -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="critic_report")
    parser.add_argument(
        "--versus", required=True, help="folder of the versus critiques (one per round, teacher)"
    )
    parser.add_argument("--critiques", required=True, help="folder of the rounds' preference critiques")
    parser.add_argument("--students", required=True, help="folder of the students (sft and every round)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params: Params = load_stage_params(args.params, args.section, Params)
    versus, critiques, students = Path(args.versus), Path(args.critiques), Path(args.students)

    teacher = _read(versus / params.teacher_name / "versus.json", "the teacher against the SFT student")
    teacher_vs_sft = teacher["against"][params.sft_name]
    rounds = sorted(p.name for p in critiques.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not rounds:
        raise SystemExit(f"error: critic_report: {critiques} holds no round; declare rounds in params.yaml.")
    order = round_order(students, rounds, params.sft_name)
    per_round: dict[str, Any] = {}
    all_bias = [_read(versus / params.teacher_name / "stats.json", "the teacher's versus stats")]
    for name in order:
        vs = _read(versus / name / "versus.json", f"round {name} against the others")["against"]
        critique = _read(critiques / name / "stats.json", f"round {name}'s critique")
        margins = _read(students / name / "margins.json", f"round {name}'s DPO margins")
        log = _read(students / name / "dpo_log.json", f"round {name}'s DPO log")
        all_bias += [critique, _read(versus / name / "stats.json", f"round {name}'s versus stats")]
        per_round[name] = {
            "start": Path(log["student_from"]).name,
            "vs_sft": vs[params.sft_name],
            "vs_teacher": vs[params.teacher_name],
            "gap_closed": gap_closed(vs[params.sft_name]["win_rate"], teacher_vs_sft["win_rate"]),
            "critique": {
                k: critique.get(k)
                for k in ("n_pairs", "n_consistent", "n_inconsistent", "n_unanswered", "n_preferences")
            }
            | {
                "consistency_rate": critique["consistency_rate"],
                "first_position_rate": critique["first_position_rate"],
            },
            "dpo": {
                "n_train_pairs": log["n_train_pairs"],
                "steps": log["steps"],
                "train_reward_margin": (log.get("final_train") or {}).get("rewards/margins"),
                "train_reward_accuracy": (log.get("final_train") or {}).get("rewards/accuracies"),
                "eval_reward_margin": (log.get("final_eval") or {}).get("eval_rewards/margins"),
                "eval_reward_accuracy": (log.get("final_eval") or {}).get("eval_rewards/accuracies"),
                "heldout_margin_before": margins["mean_margin_before"],
                "heldout_margin_after": margins["mean_margin_after"],
                "heldout_pairs": margins["n_pairs"],
            },
        }
    bias = pooled_bias(all_bias)
    metrics = {
        "rounds": order,
        "teacher_vs_sft": teacher_vs_sft,
        "per_round": per_round,
        "critic_position_bias": bias,
    }

    win_header = ["round", "from", "win rate vs SFT [95% CI]", "win rate vs teacher [95% CI]", "gap closed"]
    win_rows = [["sft", "-", "0.500 (itself)", "-", "0.000"]]
    win_rows += [
        [n, r["start"], _rate(r["vs_sft"]), _rate(r["vs_teacher"]), _f(r["gap_closed"])]
        for n, r in per_round.items()
    ]
    win_rows.append([params.teacher_name, "-", _rate(teacher_vs_sft), "-", "1.000"])
    margin_header = [
        "round",
        "pairs (train)",
        "train reward margin",
        "train reward accuracy",
        "held-out reward margin",
        "held-out log p margin before -> after",
    ]
    margin_rows = [
        [
            n,
            r["dpo"]["n_train_pairs"],
            _f(r["dpo"]["train_reward_margin"]),
            _f(r["dpo"]["train_reward_accuracy"]),
            _f(r["dpo"]["eval_reward_margin"]),
            f"{_f(r['dpo']['heldout_margin_before'])} -> {_f(r['dpo']['heldout_margin_after'])}",
        ]
        for n, r in per_round.items()
    ]
    bias_header = [
        "critique",
        "pairs",
        "consistent",
        "inconsistent (discarded)",
        "consistency",
        "first slot chosen",
    ]
    bias_rows = [
        [
            f"{n} candidates",
            r["critique"]["n_pairs"],
            r["critique"]["n_consistent"],
            r["critique"]["n_inconsistent"],
            _f(r["critique"]["consistency_rate"]),
            _f(r["critique"]["first_position_rate"]),
        ]
        for n, r in per_round.items()
    ]
    bias_rows.append(
        ["all comparisons", bias["n_pairs"], "", bias.get("n_inconsistent", 0), _f(bias["consistency_rate"]),
         _f(bias["first_position_rate"])]
    )  # fmt: skip
    svg = bar_chart_svg(
        "win rate vs the SFT student (critic, both orders)",
        [*order, params.teacher_name],
        {"win rate": [per_round[n]["vs_sft"]["win_rate"] for n in order] + [teacher_vs_sft["win_rate"]]},
    )
    sections = [
        {
            "title": "Win rates (the critic, every pair asked in both orders)",
            "blocks": [
                ("p", "A consistent win counts 1, a loss 0, an inconsistent verdict or identical texts 0.5; "
                      "intervals are percentile bootstraps over the held-out inputs. Gap closed: (win rate "
                      "vs SFT - 0.5) / (teacher's win rate vs SFT - 0.5)."),
                ("table", win_header, win_rows),
                ("svg", svg, "win rate vs SFT"),
            ],
        },
        {"title": "The critic's position bias", "blocks": [
            ("p", "Share of verdicts that picked the option shown first (0.5: no position bias) and the "
                  "share of pairs whose two verdicts agree; inconsistent pairs are discarded from the "
                  "preferences."),
            ("table", bias_header, bias_rows)]},
        {"title": "DPO reward margins", "blocks": [
            ("p", "Reward margin: beta x the log-ratio margin of chosen over rejected (TRL's "
                  "rewards/margins), last logged training step and last evaluation on the held-out pairs; "
                  "the held-out log p "
                  "margin is log p(chosen) - log p(rejected) of the starting and the trained student."),
            ("table", margin_header, margin_rows)]},
    ]  # fmt: skip
    plot_rows = [
        {
            "round": n,
            "win_rate_vs_sft": r["vs_sft"]["win_rate"],
            "win_rate_vs_teacher": r["vs_teacher"]["win_rate"],
        }
        for n, r in per_round.items()
    ]
    with atomic_output_dir(args.out) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.md", render_markdown("Teacher as critic: rounds of DPO", sections))
        write_text(tmp / "report.html", render_html("Teacher as critic: rounds of DPO", sections))
        write_text(
            tmp / "plots" / "win_rates.csv",
            write_csv(plot_rows, ["round", "win_rate_vs_sft", "win_rate_vs_teacher"]),
        )
    table = "\n".join(" | ".join(str(c) for c in row) for row in win_rows)
    print(f"critic_report -> {args.out}\n{table}")


if __name__ == "__main__":
    run_main(main)
