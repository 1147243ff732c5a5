"""Stage kind `dedup`: curate synthetic rows - quality filters, decontamination against the evaluation
sets, exact and near-duplicate removal (MinHash-LSH, no all-pairs), an optional teacher-as-judge filter -
and split the rest into train/val by group (`split_by`, e.g. passage). Nothing is dropped without a trace.

    python -m dagster_project.stages.dedup --params params.yaml --synthesized assets/synthesized \\
        --gold data/demo_world/gold_test.jsonl [more_eval.jsonl ...] --out assets/deduped

Reads one params section (`Params`; `--section`, default `dedup`). Input: `<synthesized>/examples.parquet`
(an `id` column and the columns the params name - key_fields, filters, split_by; every column is
passed through). `--gold` takes every evaluation set the recipe declares (jsonl rows; the decontamination
fields are read from columns of the same names, lists such as SQuAD's `answers` joined). Writes into the
output folder (atomically):
    train.parquet, val.parquet  the kept examples (input columns); val passages never occur in train
    removed.parquet             every removed row: id, reason, duplicate_of (the kept row or the evaluation
                                row it duplicates), score, detail (which check, field, pattern or set),
                                text (its key fields)
    report.json                 counts per reason, largest duplicate clusters with examples, diversity
                                before/after (distinct-1/2, unique ratio); at most 24 numbers, all of
                                which Dagster shows as asset metadata
    details.json                candidate/verified pair counts, evaluation set sizes, the judge's
                                requests and its rated and unrated rows
The run facts - seconds per step and the judge engine's calls, cache hits, tokens and cost - go to
`<out's parent>/.runs/<out's name>.json` (git-ignored, not a DVC output), never into `details.json`.

The steps, in order (a row removed by one step is not seen by later ones):
1. filters: required fields, length bounds, Latin-letter ratio, refusal regexes (curation/filters.py);
2. decontamination: a word n-gram shared with an evaluation row, or a near-match of the `near_fields`
   (rapidfuzz) against one (curation/decontaminate.py);
3. exact duplicates: equal normalized key (key_fields, `normalize` steps, curation/normalize.py);
4. near duplicates: MinHash-LSH candidate pairs verified with `near_scorer` >= `near_threshold`,
   clustered by union-find (curation/minhash.py, clusters.py). With `lsh.block_by` (e.g. passage_id) only
   rows sharing that column's value are compared - useful for templated data where "What cargo does
   Imeldkor carry? timber" and the same question about Eldsko look alike but are different facts;
   In 3 and 4 one row per cluster is kept by the `keep` rule (first | longest | highest keep_column);
5. judge (optional, off by default): the teacher rates each remaining row with `judge.prompt`; rows
   below `judge.min_score` are removed, rows it could not rate are kept and counted;
6. train/val split: passages (passage_id groups) are shuffled by `seed`; the first val_fraction go to val.
"""

import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from dagster_project.curation import clusters, decontaminate, diversity, filters, minhash, normalize
from dagster_project.evaluation.gold_schema import GoldError, eval_rows
from dagster_project.params_schema import FileRef, StageParams, _check_file
from dagster_project.stages.common import (
    atomic_output_dir,
    data_facts,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_parquet,
)

Normalization = Literal["nfkc", "lowercase", "punctuation", "whitespace"]
Scorer = Literal["ratio", "token_sort_ratio", "token_set_ratio"]
REFUSALS = [
    r"\bas an ai\b",
    r"\bi(?: am|'m) (?:sorry|unable)\b",
    r"\bi can(?:no|')t (?:help|answer|assist)\b",
]


class LSHParams(StageParams):
    """MinHash-LSH candidate search: bands x rows hash functions; P(candidate) = 1 - (1 - J^rows)^bands."""

    bands: int = Field(default=20, gt=0, le=512)
    rows: int = Field(default=6, gt=0, le=64)
    shingle_words: int = Field(default=1, ge=1, le=8)  # word n-gram size of the shingles (1: bag of words)
    block_by: str | None = None  # a column: only rows sharing its value are compared (null: all rows)


class DecontaminateParams(StageParams):
    """Against every evaluation set given with --gold (columns of the same names in the gold rows)."""

    ngram: int = Field(default=13, ge=1)  # word n-gram shared with an evaluation text = contaminated
    ngram_fields: list[str] = Field(default=["question", "answer"], min_length=1)
    near_fields: list[str] = Field(default=["question"], min_length=1)
    near_threshold: float = Field(default=95.0, ge=0, le=100)
    near_scorer: Scorer = "token_sort_ratio"


class FilterParams(StageParams):
    required: list[str] = ["question", "answer"]  # columns that must be non-blank
    min_chars: dict[str, int] = {}
    max_chars: dict[str, int] = {}
    min_latin_ratio: float = Field(
        default=0.5, ge=0, le=1
    )  # share of Latin letters in the key fields; 0: off
    refusal_patterns: list[str] = REFUSALS  # regexes (case-insensitive) over the key fields

    @field_validator("refusal_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                pl.Series([""]).str.contains(pattern)
            except Exception as exc:  # polars raises its own ComputeError
                raise ValueError(f"refusal pattern {pattern!r} is not a valid regex: {exc}") from None
        return patterns


class JudgeParams(StageParams):
    enabled: bool = False
    prompt: str = "prompts/judge_quality.yaml"  # checked only when enabled (check_files)
    teacher_model: str = "offline-teacher"
    min_score: float = 3  # rows the judge scores below this are removed
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_attempts: int = Field(default=2, ge=1)

    def check_files(self, root: Path, section: str) -> list[str]:
        if not self.enabled:
            return []
        if not (root / self.prompt).exists():
            return [
                f"{section}.prompt: file '{self.prompt}' does not exist; create it or switch the judge off "
                f"({section}.enabled: false)."
            ]
        return _check_file(FileRef("prompt"), self.prompt, root, f"{section}.prompt", self)


class Params(StageParams):
    """`dedup`: filters, decontamination, exact and near dedup, the judge filter and the split."""

    key_fields: list[str] = Field(min_length=1)  # the columns that make a row's dedup key
    normalize: list[Normalization] = ["nfkc", "lowercase", "punctuation", "whitespace"]
    keep: Literal["first", "longest", "highest"] = "first"  # which row of a duplicate cluster stays
    keep_column: str | None = None  # the column `keep: highest` ranks by
    near_threshold: float = Field(default=95.0, ge=0, le=100)
    near_scorer: Scorer = "token_sort_ratio"
    lsh: LSHParams = LSHParams()
    decontaminate: DecontaminateParams = DecontaminateParams()
    filters: FilterParams = FilterParams()
    judge: JudgeParams = JudgeParams()
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    split_by: str | None = (
        "passage_id"  # rows sharing this column's value land in the same split (null: rows)
    )
    seed: int = 0

    @model_validator(mode="after")
    def _keep_column_when_highest(self) -> "Params":
        if self.keep == "highest" and not self.keep_column:
            raise ValueError("keep: highest needs keep_column (the column to rank by)")
        return self


FILTER_REASONS = ("empty_field", "too_short", "too_long", "charset", "refusal")
REASONS = (*FILTER_REASONS, "contaminated", "exact_duplicate", "near_duplicate", "judge_low_score")
REMOVED_SCHEMA = {
    "id": pl.String,
    "reason": pl.String,
    "duplicate_of": pl.String,
    "score": pl.Float64,
    "detail": pl.String,
    "text": pl.String,
}
EVAL_FIELDS = ("question", "answer", "context")
DETAIL_KEYS = ("near_pairs", "eval_sets", "judge", "seconds")  # written to details.json, not report.json
LARGEST_CLUSTERS = 10
CLUSTER_EXAMPLES = 5

# ---------------------------------------------------------------------------------------------------
# Inputs


def _text(value: Any) -> str:
    """An evaluation field as text: a list (e.g. SQuAD's `answers`) is joined, a missing one empty."""
    if isinstance(value, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
        value = value.get("text", "")
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def load_eval_sets(paths: list[Path], fields: list[str] | None = None) -> pl.DataFrame:
    """All evaluation rows: eval_set (file name), id, and the `fields` (missing ones empty)."""
    fields = list(dict.fromkeys(fields or EVAL_FIELDS))
    frames = []
    for path in paths:
        try:
            rows = list(eval_rows(path))  # SQuAD `answers` as `answer`, a conversation turn by turn
        except GoldError as exc:
            raise SystemExit(f"error: dedup --gold: {exc}") from None
        frames.append(
            pl.DataFrame(
                {
                    "eval_set": [Path(path).name] * len(rows),
                    "id": [str(r.get("id", i)) for i, r in enumerate(rows)],
                    **{f: [_text(r.get(f)) for r in rows] for f in fields},
                },
                schema={"eval_set": pl.String, "id": pl.String, **{f: pl.String for f in fields}},
            )
        )
    if not frames:
        return pl.DataFrame(schema={"eval_set": pl.String, "id": pl.String, **{f: pl.String for f in fields}})
    return pl.concat(frames)


def _removed(
    df: pl.DataFrame,
    mask: np.ndarray,
    reason: str | pl.Series,
    duplicate_of: pl.Series | None = None,
    score: np.ndarray | float | None = None,
    detail: str | pl.Series | None = None,
) -> pl.DataFrame:
    """The removed-table rows for the rows of `df` where `mask` holds (all other arguments are per row
    of `df`, or one value for all)."""

    def col(value: Any, dtype: Any) -> pl.Series:
        if isinstance(value, pl.Series):
            return value.cast(dtype)
        if isinstance(value, np.ndarray):
            return pl.Series(value).cast(dtype)
        return pl.Series([value] * df.height, dtype=dtype)

    out = pl.DataFrame(
        {
            "id": df["id"],
            "reason": col(reason, pl.String),
            "duplicate_of": col(duplicate_of, pl.String),
            "score": col(score, pl.Float64),
            "detail": col(detail, pl.String),
            "text": df["_text"],
            "_row": df["_row"],
        }
    )
    return out.filter(pl.Series(mask))


# ---------------------------------------------------------------------------------------------------
# The steps; each takes the rows still kept and returns the removed-table rows


def step_filters(df: pl.DataFrame, params: Any, key_fields: list[str]) -> pl.DataFrame:
    f = params.filters
    cfg = filters.FilterConfig(
        required=list(f.required),
        min_chars=dict(f.min_chars),
        max_chars=dict(f.max_chars),
        min_latin_ratio=f.min_latin_ratio,
        refusal_patterns=list(f.refusal_patterns),
        text_fields=key_fields,
    )
    found = filters.filter_reasons(df, cfg)
    return _removed(df, found["reason"].is_not_null().to_numpy(), found["reason"], detail=found["detail"])


def step_decontaminate(df: pl.DataFrame, evals: pl.DataFrame, params: Any, steps: list[str]) -> pl.DataFrame:
    d = params.decontaminate
    if evals.height == 0 or df.height == 0:
        return _removed(df, np.zeros(df.height, bool), "contaminated")
    ngram_fields, near_fields = list(d.ngram_fields), list(d.near_fields)

    def texts(frame: pl.DataFrame, fields: list[str]) -> pl.Series:
        return frame.select(normalize.key_expr(fields, steps, separator=" "))[fields[0]]

    by_gram = decontaminate.ngram_overlap(texts(df, ngram_fields), texts(evals, ngram_fields), d.ngram)
    by_near, near_score = decontaminate.near_matches(
        texts(df, near_fields), texts(evals, near_fields), d.near_scorer, d.near_threshold
    )
    gold = np.where(by_near >= 0, by_near, by_gram)
    hit = gold >= 0
    idx = np.maximum(gold, 0)
    how = np.where(
        by_near >= 0,
        np.char.add(f"{'+'.join(near_fields)} {d.near_scorer} ", near_score.round(1).astype(str)),
        f"{d.ngram}-gram of {'+'.join(ngram_fields)}",
    )
    sets = evals["eval_set"].to_numpy()[idx]
    detail = pl.Series(np.char.add(np.char.add(sets.astype(str), ": "), how))
    score = np.where(by_near >= 0, near_score, 100.0)
    return _removed(df, hit, "contaminated", evals["id"].gather(idx), score, detail)


def step_exact(df: pl.DataFrame, priority: np.ndarray | None) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows whose normalized key equals another's; returns (removed rows, representative per row)."""
    rows = df.select("_key").with_row_index("_row")
    labels = rows.select(pl.col("_row").min().over("_key")).to_series().to_numpy().astype(np.int64)
    rep = clusters.representatives(labels, priority)
    dup = rep != np.arange(df.height)
    return _removed(df, dup, "exact_duplicate", df["id"].gather(rep), 100.0, "normalized key equal"), rep


def step_near(
    df: pl.DataFrame, params: Any, priority: np.ndarray | None, seed: int
) -> tuple[pl.DataFrame, np.ndarray, dict[str, int]]:
    """Near-duplicate clusters; returns (removed rows, representative per row, pair counts)."""
    lsh = params.lsh
    threshold, scorer = params.near_threshold, params.near_scorer
    block_by = lsh.block_by
    if block_by is not None and block_by not in df.columns:
        raise SystemExit(f"error: dedup.lsh.block_by: the examples have no column {block_by!r}")
    cfg = minhash.LSHConfig(
        num_perm=lsh.bands * lsh.rows,
        bands=lsh.bands,
        rows=lsh.rows,
        ngram=lsh.shingle_words,
        seed=seed,
    )
    keys = df["_key"]
    pairs = minhash.near_duplicate_pairs(keys, threshold, scorer, cfg, df[block_by] if block_by else None)
    labels = clusters.connected_components(df.height, pairs.i, pairs.j)
    rep = clusters.representatives(labels, priority)
    rows = np.arange(df.height)
    dup = rep != rows
    score = np.zeros(df.height)
    score[dup] = minhash.verify(keys, rows[dup], rep[dup], scorer, 0.0)
    detail = f"{scorer} >= {threshold:g} (cluster by union-find)"
    removed = _removed(df, dup, "near_duplicate", df["id"].gather(rep), score, detail)
    counts = {"candidate_pairs": pairs.n_candidates, "verified_pairs": int(pairs.i.size)}
    return removed, rep, counts


def step_judge(
    df: pl.DataFrame, params: Any, engine: Any = None, root: Path = Path(".")
) -> tuple[pl.DataFrame, dict[str, Any]]:
    from dagster_project.curation.judge import judge_scores  # the teacher stack only when switched on

    j = params.judge
    scores, counters = judge_scores(
        df,
        str(root / j.prompt),
        j.teacher_model,
        temperature=j.temperature,
        engine=engine,
        max_attempts=j.max_attempts,
    )
    low = ~np.isnan(scores) & (scores < j.min_score)
    removed = _removed(df, low, "judge_low_score", score=scores, detail=f"judge score < {j.min_score:g}")
    return removed, {
        **counters,
        "unrated": int(np.isnan(scores).sum()),
        "rated": int((~np.isnan(scores)).sum()),
    }


# ---------------------------------------------------------------------------------------------------
# Split and report


def split_train_val(
    df: pl.DataFrame, val_fraction: float, seed: int, split_by: str | None = "passage_id"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split by group (`split_by`, e.g. passage_id; null: by row id): the groups are sorted, shuffled with
    `seed`, and the first round(n * val_fraction) (at least 1 when there are 2 or more) hold the val rows."""
    column = split_by or "id"
    groups = sorted(df[column].cast(pl.String).unique().to_list())
    random.Random(seed).shuffle(groups)
    n_val = round(len(groups) * val_fraction)
    if len(groups) >= 2:
        n_val = min(max(n_val, 1), len(groups) - 1)
    in_val = df[column].cast(pl.String).is_in(groups[:n_val])
    return df.filter(~in_val), df.filter(in_val)


def largest_clusters(removed: pl.DataFrame, texts: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    """Duplicate clusters (a kept row and every row removed as its exact or near duplicate, chains
    resolved), the number of them and the largest with a few examples each."""
    dups = removed.filter(pl.col("reason").is_in(["exact_duplicate", "near_duplicate"]))
    if dups.height == 0:
        return 0, []
    parent = dict(zip(dups["id"].to_list(), dups["duplicate_of"].to_list(), strict=True))

    def root(x: str) -> str:
        seen = 0
        while x in parent and seen < 64:
            x, seen = parent[x], seen + 1
        return x

    roots = pl.Series([root(x) for x in parent])  # one lookup per removed duplicate, not per input row
    frame = dups.select("id", "reason", "score", "text").with_columns(root=roots)
    sizes = (
        frame.group_by("root")
        .agg(pl.len().alias("removed"))
        .sort(["removed", "root"], descending=[True, False])
    )
    out = []
    for kept, n_removed in sizes.head(LARGEST_CLUSTERS).iter_rows():
        members = frame.filter(pl.col("root") == kept).head(CLUSTER_EXAMPLES)
        out.append(
            {
                "kept_id": kept,
                "kept_text": texts.get(kept, ""),
                "size": n_removed + 1,
                "examples": members.select("id", "reason", "score", "text").to_dicts(),
            }
        )
    return sizes.height, out


# ---------------------------------------------------------------------------------------------------
# The stage


def dedup(
    df: pl.DataFrame, evals: pl.DataFrame, params: Params, judge_engine: Any = None, root: Path = Path(".")
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Run steps 1-6 on the examples `df` against the evaluation rows `evals` (see `load_eval_sets`);
    return (train, val, removed, report). Paths in params are relative to `root`."""
    key_fields, steps, seed = list(params.key_fields), list(params.normalize), params.seed
    keep, keep_column, judge_on = params.keep, params.keep_column, params.judge.enabled
    f, d = params.filters, params.decontaminate
    needed = {*key_fields, *f.required, *f.min_chars, *f.max_chars, *d.ngram_fields, *d.near_fields}
    needed |= {params.split_by} if params.split_by else set()
    missing = sorted(needed - set(df.columns))
    if missing:
        raise SystemExit(
            f"error: dedup: the examples have no column(s) {missing} (named by key_fields, filters, "
            f"decontaminate or split_by); their columns: {df.columns}"
        )

    columns = df.columns
    work = (
        df.with_columns(pl.col("id").cast(pl.String))
        .with_columns(_key=normalize.key_expr(key_fields, steps), _text=normalize.raw_text_expr(key_fields))
        .with_row_index("_row")  # rows are tracked by position: ids need not be unique
    )
    timings: dict[str, float] = {}
    removed: list[pl.DataFrame] = []
    alive = work
    names = ["filters", "decontaminate", "exact", "near"] + (["judge"] if judge_on else [])
    bar = tqdm(total=len(names), desc="dedup", unit="step", disable=df.height < 20_000, file=sys.stderr)

    def drop(step: str, rows: pl.DataFrame, t0: float) -> None:
        nonlocal alive
        removed.append(rows)
        if rows.height:
            alive = alive.filter(~pl.col("_row").is_in(rows["_row"].implode()))
        timings[step] = round(time.perf_counter() - t0, 3)
        bar.set_postfix_str(f"{step}: -{rows.height}")
        bar.update(1)

    t0 = time.perf_counter()
    drop("filters", step_filters(alive, params, key_fields), t0)
    t0 = time.perf_counter()
    drop("decontaminate", step_decontaminate(alive, evals, params, steps), t0)
    t0 = time.perf_counter()
    exact_removed, _ = step_exact(alive, clusters.keep_priority(alive, keep, alive["_text"], keep_column))
    drop("exact", exact_removed, t0)
    t0 = time.perf_counter()
    near_removed, _, pair_counts = step_near(
        alive, params, clusters.keep_priority(alive, keep, alive["_text"], keep_column), seed
    )
    drop("near", near_removed, t0)
    judge_report: dict[str, Any] = {"enabled": judge_on}
    if judge_on:
        t0 = time.perf_counter()
        judge_removed, counters = step_judge(alive, params, judge_engine, root)
        judge_report.update(counters)
        drop("judge", judge_removed, t0)
    bar.close()

    removed_df = (
        pl.concat(removed).select(list(REMOVED_SCHEMA)) if removed else pl.DataFrame(schema=REMOVED_SCHEMA)
    )
    kept = alive.select(columns)
    kept_mask = work["_row"].is_in(alive["_row"].implode()).to_numpy()
    train, val = split_train_val(kept, params.val_fraction, seed, params.split_by)
    counts = {r: 0 for r in REASONS}
    counts.update(dict(removed_df.group_by("reason").len().iter_rows()))
    n_clusters, largest = largest_clusters(
        removed_df, dict(zip(work["id"].to_list(), work["_text"].to_list(), strict=True))
    )
    report = {
        "n_in": df.height,
        "n_kept": kept.height,
        "n_train": train.height,
        "n_val": val.height,
        "n_removed": removed_df.height,
        "removed": counts,
        "n_val_groups": val[params.split_by or "id"].n_unique(),
        "n_train_groups": train[params.split_by or "id"].n_unique(),
        "diversity": diversity.diversity_before_after(work["_key"], kept_mask),
        "clusters": {"n_duplicate_clusters": n_clusters, "largest": largest},
        "near_pairs": pair_counts,
        "eval_sets": dict(evals.group_by("eval_set").len().sort("eval_set").iter_rows()),
        "judge": judge_report,
        "keep_rule": keep if keep != "highest" else f"highest {keep_column}",
        "seconds": timings,
    }
    return train, val, removed_df, report


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0], kind="dedup")
    parser.add_argument(
        "--synthesized",
        nargs="+",
        default=["assets/synthesized"],
        help="folder(s) holding examples.parquet; several (synthesis shards) are merged in the order given",
    )
    parser.add_argument(
        "--gold",
        nargs="+",
        default=["data/demo_world/gold_test.jsonl"],
        help="every evaluation set to decontaminate against (jsonl: id, question, answer[, context])",
    )
    parser.add_argument("--out", default="assets/deduped", help="output folder")
    args = parser.parse_args()
    params: Params = load_stage_params(args.params, args.section, Params)

    examples = pl.concat([pl.read_parquet(Path(f) / "examples.parquet") for f in args.synthesized])
    d = params.decontaminate
    evals = load_eval_sets([Path(p) for p in args.gold], [*d.ngram_fields, *d.near_fields])
    train, val, removed, report = dedup(examples, evals, params, root=Path(args.params).parent)
    with atomic_output_dir(args.out) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(val, tmp / "val.parquet")
        write_parquet(removed, tmp / "removed.parquet")
        write_json(tmp / "report.json", {k: v for k, v in report.items() if k not in DETAIL_KEYS})
        write_json(
            tmp / "details.json", data_facts({k: report[k] for k in DETAIL_KEYS}, args.out, "details.json")
        )
    summary = {k: report[k] for k in ("n_in", "n_train", "n_val", "n_removed")}
    print(json.dumps({**summary, "removed": {k: v for k, v in report["removed"].items() if v}}))


if __name__ == "__main__":
    run_main(main)
