"""Stage kind `compare`: one report comparing the arms of a recipe (e.g. SynthesizRR vs FewGen) side by side.

    python -m dagster_project.stages.compare --params params.yaml [--section compare] \
        --arm NAME SYNTHESIZED DEDUPED EVAL_REPORT [--arm ...] --out assets/comparison

For each arm it reads the synthesized rows (`<SYNTHESIZED>/examples.parquet` and `rejects.parquet`), the
curated split (`<DEDUPED>/report.json`) and the student's scores (`<EVAL_REPORT>/metrics.json`), and
computes the dataset figures of `metrics/datasets.py` on the synthesized texts (a seeded sample of the
smallest arm's size, so arms compare fairly): label distribution,
distinct-n, self-BLEU-1..5, entity entropy, mean pairwise and label-wise cosine, MAUVE against the gold
test texts, label preservation (a classifier trained on `gold_train`). With `label_column: null` (rows
that are no labelled texts, e.g. {input, output} examples) the label figures are left out; without
`gold_train` label preservation is. When an arm's SYNTHESIZED folder is a `teacher_filter` output its
`stats.json` adds the rows judged and the share surviving the filter. Every number of the student's
headline (exact match, token F1, final-answer accuracy, chain-of-thought length, ...) gets a row.
Writes (atomically):

    metrics.json   per arm: counts, dataset figures, filter figures, the student's figures
    table.csv      one row per (arm, figure): the side-by-side table
    report.md, report.html   the table, the label distributions, and which backend made each figure
"""

import csv
import html
import io
import json
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field

from dagster_project.metrics.datasets import LabelClassifier, dataset_figures
from dagster_project.metrics.diversity import resolve_embedder
from dagster_project.params_schema import DataFile, StageParams
from dagster_project.stages.common import load_stage_params, run_main, stage_parser, write_json
from dagster_project.synthesis.shots import read_table

# (key, label, which direction is better) of the rows of the side-by-side table
ROWS = [
    ("n_examples", "synthesized examples", ""),
    ("n_rejects", "rejects (refusals, failed checks)", ""),
    ("n_train", "training rows after dedup", ""),
    ("n_compared", "examples each figure below is computed on", "a seeded sample, equal for every arm"),
    ("label_entropy_bits", "label entropy (bits)", "higher = more balanced"),
    ("distinct_1", "distinct-1", "higher = more diverse"),
    ("distinct_2", "distinct-2", "higher = more diverse"),
    ("distinct_3", "distinct-3", "higher = more diverse"),
    *[(f"self_bleu_{n}", f"self-BLEU-{n}", "lower = more diverse") for n in range(1, 6)],
    ("entity_entropy_bits", "entity entropy (bits)", "higher = more varied entities"),
    ("mean_pairwise_cosine", "mean pairwise cosine", "lower = more diverse"),
    ("labelwise_cosine", "label-wise cosine", "lower = more diverse"),
    ("mauve_vs_gold", "MAUVE vs gold test texts", "higher = closer to gold"),
    ("label_preservation", "label preservation", "higher = labels kept"),
    ("student_accuracy", "student accuracy (gold test)", "higher"),
    ("student_macro_f1", "student macro-F1 (gold test)", "higher"),
]
# Rows shown only when some arm has them: a filter stage's stats (teacher_filter) and the student's other
# headline figures (exact match, token F1, final-answer accuracy, chain-of-thought length, ...).
OPTIONAL_ROWS = [
    ("filter_n_in", "rows the filter judged", ""),
    ("filter_kept_share", "share of rows surviving the filter", "higher = fewer bad rows"),
]


class Params(StageParams):
    """`compare`: the gold data the arms are measured against, and the figures' settings."""

    gold_test: DataFile  # JSONL with the text and label columns: MAUVE's reference texts
    # JSONL with the text and label columns: trains the label-preservation classifier (null: no such figure)
    gold_train: DataFile | None = None
    text_column: str = "text"
    label_column: str | None = "label"  # null: rows are no labelled texts (no label figures)
    embedding_model: str | None = None  # null: the bundled all-MiniLM-L6-v2
    # auto falls back to TF-IDF when the model cannot load (the report names the backend that ran);
    # sentence-transformers fails instead, so figures never silently change meaning
    embedding_backend: Literal["auto", "sentence-transformers", "tfidf"] = "auto"
    max_texts: int = Field(default=1000, gt=1)  # seeded sample for self-BLEU and cosine
    mauve_buckets: int = Field(default=30, gt=1)
    seed: int = 0


def read_jsonl(path: Path, columns: list[str]) -> pl.DataFrame:
    """The given columns of a JSONL file; a missing column is an error naming the file."""
    df = read_table(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SystemExit(f"error: compare: {path} has no column(s) {missing}; its columns: {df.columns}")
    return df.select(columns)


def student_scores(eval_dir: Path) -> dict[str, Any]:
    """The student's figures from an evaluate stage's metrics.json as `student_<figure>`: accuracy and
    macro-F1 (None where absent) and every other number of its headline."""
    path = eval_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    student = metrics.get("student", {})
    numbers = {
        f"student_{k}": v
        for k, v in student.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return {
        "student_accuracy": student.get("accuracy"),
        "student_macro_f1": student.get("macro_f1"),
        **numbers,
    }


def filter_figures(synthesized: Path) -> dict[str, Any]:
    """What a filter stage (teacher_filter) kept, when the arm's rows come from one (else nothing)."""
    path = synthesized / "stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {}
    if "kept_share" not in stats:
        return {}
    return {"filter_n_in": stats.get("n_in"), "filter_kept_share": stats["kept_share"]}


def read_examples(synthesized: Path, params: Params, name: str) -> pl.DataFrame:
    """An arm's synthesized examples; the text and label columns must be there."""
    examples = pl.read_parquet(synthesized / "examples.parquet")
    columns = [params.text_column, *([params.label_column] if params.label_column else [])]
    missing = [c for c in columns if c not in examples.columns]
    if missing:
        raise SystemExit(f"error: compare: arm {name}: examples have no column(s) {missing}")
    return examples


def arm_figures(
    name: str,
    dirs: list[str],
    n_compared: int,
    params: Params,
    gold: pl.DataFrame,
    embedder: Any,
    classifier: Any,
) -> dict[str, Any]:
    """Counts, dataset figures and student scores of one arm.

    The size-dependent figures (distinct-n, self-BLEU, entities, cosines, MAUVE, label preservation) are
    computed on a seeded sample of `n_compared` examples, the size of the smallest arm, so arms of
    different sizes compare fairly; the label counts are of every example.
    """
    synthesized, deduped, eval_dir = (Path(d) for d in dirs)
    examples = read_examples(synthesized, params, name)
    sample = (
        examples.sample(n=min(n_compared, examples.height), seed=params.seed) if examples.height else examples
    )
    rejects = pl.read_parquet(synthesized / "rejects.parquet")
    report = json.loads((deduped / "report.json").read_text())
    label = params.label_column
    figures = dataset_figures(
        sample[params.text_column].to_list(),
        [str(v) for v in sample[label].to_list()] if label else None,
        embedder,
        gold[params.text_column].to_list(),
        classifier,
        max_texts=params.max_texts,
        mauve_buckets=params.mauve_buckets,
        seed=params.seed,
    )
    if label:
        figures["label_counts"] = dict(examples[label].cast(pl.String).value_counts().sort(label).iter_rows())
    return {
        "n_examples": examples.height,
        "n_compared": sample.height,
        "n_rejects": rejects.height,
        "reject_reasons": dict(rejects.group_by("reason").len().sort("reason").iter_rows()),
        "n_train": report.get("n_train"),
        **figures,
        **filter_figures(synthesized),
        **student_scores(eval_dir),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render(arms: dict[str, dict[str, Any]], meta: dict[str, Any]) -> tuple[str, str, list[list[str]]]:
    """report.md, report.html and the table rows."""
    names = list(arms)
    table = [["figure", *names, "reading"]]
    shown = {k for k, _, _ in ROWS}
    student = sorted({k for a in arms.values() for k in a if k.startswith("student_") and k not in shown})
    optional = [r for r in OPTIONAL_ROWS if any(arms[n].get(r[0]) is not None for n in names)]
    optional += [(k, f"student {k.removeprefix('student_')} (gold test)", "") for k in student]
    for key, label, better in ROWS + optional:
        if key in (
            "label_entropy_bits",
            "labelwise_cosine",
            "label_preservation",
            "student_accuracy",
            "student_macro_f1",
        ) and all(arms[n].get(key) is None for n in names):
            continue  # a figure no arm has (unlabelled rows, another task's student)
        table.append([label, *(_fmt(arms[n].get(key)) for n in names), better])
    labels = sorted({lab for a in arms.values() for lab in a.get("label_counts", {})})
    dist = [["label", *names]] + [
        [lab, *(str(arms[n].get("label_counts", {}).get(lab, 0)) for n in names)] for lab in labels
    ]
    backends = arms[names[0]]["backends"] if names else {}

    def md(rows: list[list[str]]) -> str:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])

    notes = [f"- {k}: {v}" for k, v in backends.items() if v is not None]
    notes.append(f"- gold test texts: {meta['gold_test']} ({meta['n_gold_test']} rows)")
    if meta.get("classifier_gold_acc") is not None:
        acc = _fmt(meta["classifier_gold_acc"])
        notes.append(f"- label-preservation classifier accuracy on the gold test set: {acc}")
    dist_md = f"## Label distribution of the synthesized examples\n\n{md(dist)}\n\n" if labels else ""
    text_md = (
        "# Comparison of the recipe's arms\n\n"
        "Dataset figures are computed on each arm's synthesized examples; student scores on the gold "
        "test set.\n\n"
        f"{md(table)}\n\n{dist_md}"
        "## What made each figure\n\n" + "\n".join(notes) + "\n"
    )

    def html_table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    text_html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}</style></head><body><h1>Comparison of the recipe's arms</h1>"
        f"{html_table(table)}"
        + (f"<h2>Label distribution of the synthesized examples</h2>{html_table(dist)}" if labels else "")
        + "<h2>What made each figure</h2><ul>"
        + "".join(f"<li>{html.escape(n[2:])}</li>" for n in notes)
        + "</ul></body></html>\n"
    )
    return text_md, text_html, table


def _write(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; see the module docstring."""
    parser = stage_parser(__doc__.splitlines()[0], kind="compare")
    parser.add_argument(
        "--arm", nargs=4, action="append", required=True, metavar=("NAME", "SYNTHESIZED", "DEDUPED", "EVAL"),
        help="one arm: its name and its synthesized, deduped and eval report folders",
    )  # fmt: skip
    parser.add_argument("--out", default="assets/comparison", help="output folder")
    args = parser.parse_args(argv)
    params: Params = load_stage_params(args.params, args.section, Params)
    root = Path(args.params).parent

    columns = [params.text_column, *([params.label_column] if params.label_column else [])]
    gold_test = read_jsonl(root / params.gold_test, columns)
    embedder = resolve_embedder(params.embedding_model, params.embedding_backend)
    classifier = None
    if params.gold_train is not None and params.label_column:
        gold_train = read_jsonl(root / params.gold_train, columns)
        classifier = LabelClassifier(
            gold_train[params.text_column].to_list(),
            gold_train[params.label_column].to_list(),
            embedder,
            params.seed,
        )
    n_compared = min(read_examples(Path(arm[1]), params, arm[0]).height for arm in args.arm)
    arms = {
        name: arm_figures(name, dirs, n_compared, params, gold_test, embedder, classifier)
        for name, *dirs in args.arm
    }
    meta = {
        "gold_test": params.gold_test,
        "n_gold_test": gold_test.height,
        "classifier_gold_acc": classifier.accuracy(
            gold_test[params.text_column].to_list(), gold_test[params.label_column].to_list()
        )
        if classifier is not None and params.label_column
        else None,
    }
    text_md, text_html, table = render(arms, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # file by file: the folder also holds DVC's .gitignore
    write_json(out / "metrics.json", {"arms": arms, **meta})
    _write(out / "report.md", text_md)
    _write(out / "report.html", text_html)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    _write(out / "table.csv", buffer.getvalue())
    print(text_md)


if __name__ == "__main__":
    run_main(main)
