"""Stage `dedup`: remove exact and near-duplicate examples, drop examples that leak the gold test set,
and split the rest into train/val by passage.

    python -m dagster_project.stages.dedup --params params.yaml --synthesized assets/synthesized \\
        --gold data/demo_world/gold_test.jsonl --out assets/deduped

Reads only the `dedup` section of params.yaml. Input: `<synthesized>/examples.parquet` (id, passage_id,
context, question, answer, ...; every column is passed through). Writes into the output folder (atomically):
    train.parquet, val.parquet  the kept examples (input columns); val passages never occur in train
    removed.parquet             id, reason (exact_duplicate|near_duplicate|contaminated), duplicate_of, score
    report.json                 n_in, n_train, n_val, removed counts per reason

The steps, in order (a row removed by one step is not seen by later ones):
1. normalize the concatenation of `key_fields` (the `normalize` steps, in the order listed);
2. exact duplicates: same hash of the normalized key; the first row seen is kept;
3. near duplicates: rapidfuzz `near_scorer` >= `near_threshold` against an earlier kept row of the same
   passage_id (the block) - blocking keeps this far from all-pairs. Blocking by passage also avoids the
   typical false positive of templated data: "What cargo does Imeldkor carry? timber" vs the same question
   about Eldsko scores ~95 although it is another fact. Across passages only exact duplicates are caught;
   MinHash-LSH over all rows is the planned deepening;
4. decontamination: the normalized question equals or near-matches a gold question, or the question+answer
   shares a 13-word n-gram with a gold question+answer;
5. train/val split: passages (passage_id groups) are shuffled by `seed`; the first val_fraction go to val.
"""

import hashlib
import json
import random
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
from rapidfuzz import fuzz, process
from tqdm import tqdm

from dagster_project.stages.common import atomic_output_dir, load_stage_params, stage_parser, write_json

NGRAM = 13
SCORERS = {
    "ratio": fuzz.ratio,
    "token_sort_ratio": fuzz.token_sort_ratio,
    "token_set_ratio": fuzz.token_set_ratio,
}
REMOVED_SCHEMA = {"id": pl.String, "reason": pl.String, "duplicate_of": pl.String, "score": pl.Float64}
_SPACES = re.compile(r"\s+")

# ---------------------------------------------------------------------------------------------------
# Normalization


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


NORMALIZERS = {
    "nfkc": lambda t: unicodedata.normalize("NFKC", t),
    "lowercase": str.lower,
    "punctuation": _strip_punctuation,
    "whitespace": lambda t: _SPACES.sub(" ", t).strip(),
}


def normalize_text(text: str, steps: list[str]) -> str:
    """Apply the normalization `steps` (nfkc, lowercase, punctuation, whitespace) in the order given."""
    for step in steps:
        text = NORMALIZERS[step](text)
    return text


def normalized_keys(df: pl.DataFrame, key_fields: list[str], steps: list[str]) -> list[str]:
    """The dedup key of every row: its key fields, each normalized, joined by ' | '."""
    columns = [df[f].cast(pl.String).fill_null("").to_list() for f in key_fields]
    return [" | ".join(normalize_text(v, steps) for v in values) for values in zip(*columns, strict=True)]


# ---------------------------------------------------------------------------------------------------
# Duplicates


def find_exact_duplicates(ids: list[str], keys: list[str]) -> list[dict[str, Any]]:
    """Rows whose key hash equals an earlier row's: {id, reason, duplicate_of, score=100}."""
    first: dict[str, str] = {}
    removed = []
    for row_id, key in zip(ids, keys, strict=True):
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in first:
            removed.append(
                {"id": row_id, "reason": "exact_duplicate", "duplicate_of": first[digest], "score": 100.0}
            )
        else:
            first[digest] = row_id
    return removed


def find_near_duplicates(
    ids: list[str], keys: list[str], blocks: list[list[str]], threshold: float, scorer: str
) -> list[dict[str, Any]]:
    """Rows scoring >= `threshold` against an earlier kept row that shares one of their block keys.

    `blocks[i]` lists row i's block keys (the stage uses its passage_id); only rows sharing a block
    are compared. The first row of a group is kept; `duplicate_of` names the best-matching kept row.
    """
    score_fn = SCORERS[scorer]
    kept_in_block: dict[str, list[int]] = defaultdict(list)
    removed = []
    for i in tqdm(range(len(ids)), desc="near-dedup", unit="row", disable=len(ids) < 5000):
        candidates = sorted({j for b in blocks[i] for j in kept_in_block[b]})
        best = None
        if candidates:
            best = process.extractOne(
                keys[i], [keys[j] for j in candidates], scorer=score_fn, score_cutoff=threshold
            )
        if best is not None:
            _, score, pos = best
            removed.append(
                {
                    "id": ids[i],
                    "reason": "near_duplicate",
                    "duplicate_of": ids[candidates[pos]],
                    "score": float(score),
                }
            )
            continue
        for b in blocks[i]:
            kept_in_block[b].append(i)
    return removed


# ---------------------------------------------------------------------------------------------------
# Decontamination


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """The word n-grams of `text` (none when it has fewer than n words)."""
    words = text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def decontaminate(
    ids: list[str],
    questions: list[str],
    qa_texts: list[str],
    gold: list[dict[str, str]],
    threshold: float,
    scorer: str,
) -> list[dict[str, Any]]:
    """Rows that leak the gold set: {id, reason="contaminated", duplicate_of=<gold id>, score}.

    `questions`/`qa_texts` and the gold rows' "question"/"qa" are already normalized. A row leaks when its
    question equals or near-matches a gold question, or its question+answer shares a 13-gram with a gold
    question+answer.
    """
    score_fn = SCORERS[scorer]
    gold_questions = [g["question"] for g in gold]
    exact = {}
    for g in gold:
        exact.setdefault(g["question"], g["id"])
    gram_owner: dict[tuple[str, ...], str] = {}
    for g in gold:
        for gram in ngrams(g["qa"]):
            gram_owner.setdefault(gram, g["id"])
    removed = []
    for row_id, question, qa in tqdm(
        zip(ids, questions, qa_texts, strict=True),
        desc="decontaminate",
        unit="row",
        total=len(ids),
        disable=len(ids) < 5000,
    ):
        if question in exact:
            removed.append(
                {"id": row_id, "reason": "contaminated", "duplicate_of": exact[question], "score": 100.0}
            )
            continue
        match = process.extractOne(question, gold_questions, scorer=score_fn, score_cutoff=threshold)
        if match is not None:
            removed.append(
                {
                    "id": row_id,
                    "reason": "contaminated",
                    "duplicate_of": gold[match[2]]["id"],
                    "score": float(match[1]),
                }
            )
            continue
        shared = next((gram_owner[g] for g in sorted(ngrams(qa)) if g in gram_owner), None)
        if shared is not None:
            removed.append({"id": row_id, "reason": "contaminated", "duplicate_of": shared, "score": 100.0})
    return removed


def load_gold(path: Path, steps: list[str]) -> list[dict[str, str]]:
    """Gold rows {id, question, qa} with the question and question+answer normalized."""
    gold = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            q, a = str(row["question"]), str(row.get("answer", ""))
            gold.append(
                {
                    "id": str(row.get("id", i)),
                    "question": normalize_text(q, steps),
                    "qa": normalize_text(f"{q} {a}", steps),
                }
            )
    return gold


# ---------------------------------------------------------------------------------------------------
# Split


def split_train_val(df: pl.DataFrame, val_fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split by passage: the passages are sorted, shuffled with `seed`, and the first
    round(n * val_fraction) (at least 1 when there are 2 or more) hold the val rows."""
    passages = sorted(df["passage_id"].cast(pl.String).unique().to_list())
    random.Random(seed).shuffle(passages)
    n_val = round(len(passages) * val_fraction)
    if len(passages) >= 2:
        n_val = min(max(n_val, 1), len(passages) - 1)
    val_passages = set(passages[:n_val])
    in_val = df["passage_id"].cast(pl.String).is_in(list(val_passages))
    return df.filter(~in_val), df.filter(in_val)


# ---------------------------------------------------------------------------------------------------
# The stage


def dedup(
    df: pl.DataFrame, gold: list[dict[str, str]], params: Any
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Run steps 1-5 on the examples `df`; return (train, val, removed, report)."""
    key_fields = list(params["key_fields"])
    steps = list(params["normalize"])
    threshold = float(params["near_threshold"])
    scorer = str(params["near_scorer"])
    val_fraction = float(params["val_fraction"])
    seed = int(params["seed"])

    df = df.with_columns(pl.col("id").cast(pl.String))
    removed: list[dict[str, Any]] = []

    def drop(frame: pl.DataFrame, rows: list[dict[str, Any]]) -> pl.DataFrame:
        removed.extend(rows)
        return frame.filter(~pl.col("id").is_in([r["id"] for r in rows]))

    kept = drop(df, find_exact_duplicates(df["id"].to_list(), normalized_keys(df, key_fields, steps)))

    blocks = [[f"passage:{p}"] for p in kept["passage_id"].cast(pl.String).to_list()]
    keys = normalized_keys(kept, key_fields, steps)
    kept = drop(kept, find_near_duplicates(kept["id"].to_list(), keys, blocks, threshold, scorer))

    questions = [normalize_text(str(q or ""), steps) for q in kept["question"].to_list()]
    qa_texts = [
        normalize_text(f"{q or ''} {a or ''}", steps)
        for q, a in zip(kept["question"].to_list(), kept["answer"].to_list(), strict=True)
    ]
    kept = drop(kept, decontaminate(kept["id"].to_list(), questions, qa_texts, gold, threshold, scorer))

    train, val = split_train_val(kept, val_fraction, seed)
    removed_df = pl.DataFrame(removed, schema=REMOVED_SCHEMA)
    counts = {reason: 0 for reason in ("exact_duplicate", "near_duplicate", "contaminated")}
    for row in removed:
        counts[row["reason"]] += 1
    report = {
        "n_in": df.height,
        "n_train": train.height,
        "n_val": val.height,
        "removed": counts,
        "n_val_passages": val["passage_id"].n_unique(),
        "n_train_passages": train["passage_id"].n_unique(),
    }
    return train, val, removed_df, report


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--synthesized", default="assets/synthesized", help="folder holding examples.parquet")
    parser.add_argument("--gold", default="data/demo_world/gold_test.jsonl", help="the gold test set (jsonl)")
    parser.add_argument("--out", default="assets/deduped", help="output folder")
    args = parser.parse_args()
    params = load_stage_params(args.params, "dedup")

    examples = pl.read_parquet(Path(args.synthesized) / "examples.parquet")
    gold = load_gold(Path(args.gold), list(params["normalize"]))
    train, val, removed, report = dedup(examples, gold, params)
    with atomic_output_dir(args.out) as tmp:
        train.write_parquet(tmp / "train.parquet")
        val.write_parquet(tmp / "val.parquet")
        removed.write_parquet(tmp / "removed.parquet")
        write_json(tmp / "report.json", report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
