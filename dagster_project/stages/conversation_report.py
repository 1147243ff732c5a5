"""Stage kind `conversation_report`: students trained on different data, scored on one multi-turn gold
set CoQA-style, side by side, with the conversation graph's coverage and the data's diversity.

    python -m dagster_project.stages.conversation_report --params params.yaml [--section report] \
        --out assets/report

Reads its params section: the graph `spec` (its refusal answer, its nodes and edges), the `gold` set (CoQA
or QuAC format, `evaluation/conversations.py`), the synthesized `conversations` folder (the CoDi arm's
`conversations.parquet`) and `arms`: per arm, the evaluate stage's output folder (`predictions.parquet`:
the student's answer per gold turn, asked with the gold history) and its training table (the rows the
student learned: one row per answer, a `question` column). For each arm it scores every gold turn with
CoQA's F1 (`metrics/conversation.py`, against all gold answers of the turn) and writes:

- `metrics.json`: per arm the mean turn F1, unanswerable precision / recall / F1, F1 by turn depth and by
  turn type, training answers and the diversity of its questions (`evaluation/diversity.py`); the graph
  coverage of the conversations (nodes, edges, distinct paths visited vs possible), the turn-type and
  phenomenon distributions
- `report.md`: the same as tables, the arms side by side
- `plots/f1_by_depth.csv`, `plots/f1_by_type.csv`: DVC plot data (arm, depth or type, f1)
"""

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from dagster_project.params_schema import DataFile, StageParams
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_text,
)


class ArmParams(StageParams):
    eval: str  # the evaluate stage's output folder of this arm (predictions.parquet)
    data: str  # the table the student trained on (parquet; one row per answer, a `question` column)


class Params(StageParams):
    """`conversation_report`: the spec, the gold set, the conversations and the arms to compare."""

    spec: DataFile
    gold: DataFile
    conversations: str = "assets/conversations"  # the converse stage's output folder
    arms: dict[str, ArmParams] = Field(min_length=1)
    diversity_max_texts: int = Field(default=1000, gt=1)
    embedding: str = "tfidf"  # tfidf | sentence-transformers | auto (the diversity figures' cosine)
    seed: int = 0


def score_arm(predictions: list[dict[str, Any]], gold: list[dict[str, Any]], refusal: str) -> dict[str, Any]:
    """CoQA F1 per gold turn (joined on id and turn), unanswerable P/R, F1 by depth and by type."""
    from dagster_project.metrics.conversation import by_key, coqa_f1, is_refusal, unanswerable_scores

    answers = {(str(g["id"]), t): turn for g in gold for t, turn in enumerate(g["turns"])}
    rows = []
    for p in predictions:
        turn = answers.get((str(p["id"]), int(p["turn"])))
        if turn is None:
            raise SystemExit(
                f"error: prediction for {p['id']} turn {p['turn']} has no gold turn: another gold set?"
            )
        golds = turn["answers"]
        rows.append(
            {
                "depth": int(p["turn"]) + 1,
                "turn_type": turn["turn_type"] or "untyped",
                "f1": coqa_f1(str(p["prediction"]), golds),
                "refused": is_refusal(str(p["prediction"]), refusal),
                "unanswerable": any(is_refusal(g, refusal) for g in golds[:1]),
            }
        )
    n = len(rows)
    return {
        "n_turns": n,
        "f1": sum(r["f1"] for r in rows) / n if n else 0.0,
        "f1_answerable": _mean([r["f1"] for r in rows if not r["unanswerable"]]),
        "unanswerable": unanswerable_scores([r["refused"] for r in rows], [r["unanswerable"] for r in rows]),
        "by_depth": by_key(rows, "depth"),
        "by_type": by_key(rows, "turn_type"),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _table(header: list[str], rows: list[list[Any]]) -> str:
    fmt = [lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt[0](v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render(metrics: dict[str, Any]) -> str:
    """report.md: headline, by depth, by type, unanswerable, coverage, distributions, diversity."""
    arms = list(metrics["arms"])
    a = metrics["arms"]
    out = ["# Multi-turn report (CoQA-style turn F1 on the gold conversations)", ""]
    out += [
        f"Gold set: {metrics['gold']} ({metrics['n_gold_conversations']} conversations, "
        f"{metrics['n_gold_turns']} turns); refusal answer: `{metrics['refusal']}`.",
        "",
    ]
    out += ["## Headline", ""]
    out.append(
        _table(
            ["figure", *arms],
            [
                ["training answers (turns)", *[a[x]["n_train_answers"] for x in arms]],
                ["turn F1 (all turns)", *[a[x]["f1"] for x in arms]],
                ["turn F1 (answerable turns)", *[a[x]["f1_answerable"] for x in arms]],
                ["unanswerable precision", *[a[x]["unanswerable"]["precision"] for x in arms]],
                ["unanswerable recall", *[a[x]["unanswerable"]["recall"] for x in arms]],
                ["distinct-2 of questions", *[a[x]["diversity"].get("distinct_2", 0.0) for x in arms]],
                [
                    "self-BLEU-4 of questions",
                    *[a[x]["diversity"].get("self_bleu_4", 0.0) for x in arms],
                ],
                [
                    "entity entropy of questions (bits)",
                    *[a[x]["diversity"].get("entity_entropy_bits", 0.0) for x in arms],
                ],
                [
                    "mean pairwise cosine (TF-IDF)",
                    *[a[x]["diversity"].get("mean_pairwise_cosine", 0.0) for x in arms],
                ],
            ],
        )
    )
    for key, title in (("by_depth", "F1 by turn depth"), ("by_type", "F1 by turn type")):
        values = sorted(
            {k for x in arms for k in a[x][key]},
            key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else k),
        )
        rows = [
            [
                v,
                int(a[arms[0]][key].get(v, {}).get("n", 0)),
                *[a[x][key].get(v, {}).get("f1", 0.0) for x in arms],
            ]
            for v in values
        ]
        out += ["", f"## {title}", "", _table([key.split("_")[1], "turns", *arms], rows)]
    cov = metrics["coverage"]
    out += ["", "## Graph coverage of the CoDi conversations", ""]
    out.append(
        _table(
            ["", "visited", "possible"],
            [
                ["nodes (turn types)", cov["nodes_visited"], cov["nodes"]],
                ["edges (incl. to end)", cov["edges_visited"], cov["edges"]],
                ["distinct paths", cov["distinct_paths"], cov["possible_paths"]],
            ],
        )
    )
    out += ["", f"{metrics['n_conversations']} conversations, {metrics['n_conversation_turns']} turns.", ""]
    out += ["## Turn types and phenomena of the CoDi conversations", ""]
    out.append(
        _table(
            ["turn type", "turns", "share"],
            [[k, v, v / max(1, metrics["n_conversation_turns"])] for k, v in metrics["turn_types"].items()],
        )
    )
    out += [""]
    out.append(
        _table(
            ["phenomenon", "turns", "share"],
            [[k, v, v / max(1, metrics["n_conversation_turns"])] for k, v in metrics["phenomena"].items()],
        )
    )
    out += ["", "Diversity figures of each arm's training questions (backends: see metrics.json).", ""]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    import polars as pl

    from dagster_project.evaluation.conversations import load_conversations
    from dagster_project.evaluation.diversity import diversity_figures
    from dagster_project.evaluation.gold_schema import GoldError
    from dagster_project.synthesis.conversation_graph import SpecError, coverage, load_spec

    parser = stage_parser(__doc__.splitlines()[0], kind="conversation_report")
    parser.add_argument("--out", default="assets/report", help="output folder")
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent
    try:
        spec = load_spec(root / params.spec, root)
        gold = load_conversations(root / params.gold, spec.refusal)
    except (SpecError, GoldError) as exc:
        raise SystemExit(f"error: {args.section}: {exc}") from None
    conv_path = root / params.conversations / "conversations.parquet"
    if not conv_path.is_file():
        raise SystemExit(
            f"error: {args.section}.conversations: {conv_path} not found (the converse stage's output)"
        )
    conversations = pl.read_parquet(conv_path).to_dicts()

    arms: dict[str, Any] = {}
    for name, arm in params.arms.items():
        pred_path, data_path = root / arm.eval / "predictions.parquet", root / arm.data
        for path, key in ((pred_path, "eval"), (data_path, "data")):
            if not path.is_file():
                raise SystemExit(f"error: {args.section}.arms.{name}.{key}: {path} not found")
        scored = score_arm(pl.read_parquet(pred_path).to_dicts(), gold, spec.refusal)
        train = pl.read_parquet(data_path)
        questions = train["question"].to_list() if "question" in train.columns else []
        scored["n_train_answers"] = train.height
        scored["diversity"] = diversity_figures(
            questions, params.diversity_max_texts, params.embedding, None, None, params.seed
        )
        arms[name] = scored

    paths = [c["turn_types"] for c in conversations]
    phenomena = Counter(p for c in conversations for t in c["turns"] for p in t["phenomena"])
    metrics = {
        "gold": params.gold,
        "refusal": spec.refusal,
        "n_gold_conversations": len(gold),
        "n_gold_turns": sum(len(g["turns"]) for g in gold),
        "arms": arms,
        "coverage": coverage(spec, paths),
        "n_conversations": len(conversations),
        "n_conversation_turns": sum(len(p) for p in paths),
        "turn_types": dict(sorted(Counter(t for p in paths for t in p).items())),
        "phenomena": dict(sorted(phenomena.items())),
        "sampled_vs_realised_turns": {
            "sampled": sum(len(c["path"]) for c in conversations),
            "realised": sum(len(p) for p in paths),
        },
    }
    depth_rows = [
        {"arm": n, "depth": int(d), "f1": v["f1"]} for n, s in arms.items() for d, v in s["by_depth"].items()
    ]
    type_rows = [
        {"arm": n, "turn_type": t, "f1": v["f1"]} for n, s in arms.items() for t, v in s["by_type"].items()
    ]
    with atomic_output_dir(args.out) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.md", render(metrics))
        (tmp / "plots").mkdir()
        pl.DataFrame(depth_rows).write_csv(tmp / "plots" / "f1_by_depth.csv")
        pl.DataFrame(type_rows).write_csv(tmp / "plots" / "f1_by_type.csv")
    heads = "; ".join(
        f"{n} F1 {s['f1']:.3f} (unanswerable recall {s['unanswerable']['recall']:.3f})"
        for n, s in arms.items()
    )
    print(f"{args.section}: {heads}; wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
