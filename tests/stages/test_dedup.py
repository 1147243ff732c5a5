import json
from pathlib import Path

import polars as pl
import yaml

from dagster_project.curation import synthetic
from dagster_project.stages import dedup
from dagster_project.stages.common import load_stage_params, read_run_facts

REPO = Path(__file__).resolve().parents[2]

GOLD = [
    {
        "id": "g1",
        "context": "...",
        "question": "Who rules the kingdom of Zarvenia?",
        "answer": "Ola Brant",
        "category": "ruler",
    },
    {
        "id": "g2",
        "context": "...",
        "question": "Name the river that flows through the old harbour town of Kessel?",
        "answer": "Mirrow",
        "category": "river",
    },
]


def _row(i: str, passage: str, question: str, answer: str, **extra) -> dict:
    return {
        "id": i,
        "passage_id": passage,
        "context": f"context of {passage}",
        "question": question,
        "answer": answer,
        "teacher_model": "offline-teacher",
        "request_id": f"r-{i}",
        **extra,
    }


EXAMPLES = [
    _row("e1", "p1", "What is the capital of Norland?", "Eastport"),
    _row(
        "e2", "p1", "what is the CAPITAL of Norland", "Eastport!"
    ),  # exact duplicate of e1 after normalizing
    _row("e3", "p1", "What is the capital city of Norland?", "Eastport"),  # near duplicate of e1
    _row("e4", "p2", "Which is the capital city of Norland?", "Eastport"),  # other passage: not compared
    _row("e5", "p3", "Who rules the kingdom of Zarvenia?", "Ola Brant"),  # the gold question itself
    _row("e6", "p9", "Who rules the kingdom of Zarvenia ?", "Brant"),  # near-matches a gold question
    _row(
        "e7", "p4", "Tell me: name the river that flows through the old harbour town of Kessel", "Mirrow"
    ),  # 13-gram
    _row("e8", "p4", "When was Norland founded?", "1204"),
    _row("e9", "p5", "Who founded the Rope Guild?", "Ada Rell"),
    _row("e10", "p6", "How long is the Silver River?", "300 kilometres"),
    _row("e11", "p7", "How many members does the Rope Guild have?", "40"),
    _row("e12", "p8", "Where is the Rope Guild based?", "Eastport"),
]


def _params(tmp_path: Path, **overrides) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dedup"]["lsh"]["block_by"] = None  # the general default (the demo recipe blocks by passage)
    params["dedup"].update({"near_threshold": 90.0, "val_fraction": 0.25, **overrides})
    for name in ("queries.txt", "passages.jsonl"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    params["dedup"]["judge"]["prompt"] = str(REPO / "prompts" / "judge_quality.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"dedup": params["dedup"]}))
    return path


def _run(tmp_path, rows=EXAMPLES, judge_engine=None, **overrides):
    params = load_stage_params(_params(tmp_path, **overrides), "dedup", dedup.Params)
    evals = dedup.load_eval_sets([tmp_path / "gold.jsonl"])
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)
    train, val, removed, report = dedup.dedup(df, evals, params, judge_engine, root=tmp_path)
    return params, train, val, removed, report


def _check_removed_table(df: pl.DataFrame, train, val, removed, gold_ids) -> None:
    """Nothing lost without trace: every input row is kept or removed with a reason, and every duplicate
    points at the row it duplicated (following the chain ends at a kept row)."""
    kept = set(train["id"]) | set(val["id"])
    assert removed.columns == ["id", "reason", "duplicate_of", "score", "detail", "text"]
    assert not kept & set(removed["id"]) and len(kept) + removed.height == df.height
    assert removed["id"].n_unique() == removed.height
    assert set(removed["reason"]) <= set(dedup.REASONS)
    assert removed["detail"].null_count() == 0
    parent = dict(zip(removed["id"], removed["duplicate_of"], strict=True))
    for row in removed.iter_rows(named=True):
        if row["reason"] in ("exact_duplicate", "near_duplicate"):
            x = row["duplicate_of"]
            assert x != row["id"] and x in set(df["id"].cast(pl.String))
            while x in parent:
                x = parent[x]
            assert x in kept
        elif row["reason"] == "contaminated":
            assert row["duplicate_of"] in gold_ids


def test_dedup_removes_planted_rows(tmp_path):
    params, train, val, removed, report = _run(tmp_path)

    got = {r["id"]: (r["reason"], r["duplicate_of"]) for r in removed.iter_rows(named=True)}
    assert got == {
        "e2": ("exact_duplicate", "e1"),
        "e3": ("near_duplicate", "e1"),
        "e4": ("near_duplicate", "e1"),  # another passage: found across the whole set (no blocking)
        "e5": ("contaminated", "g1"),
        "e6": ("contaminated", "g1"),
        "e7": ("contaminated", "g2"),
    }
    df = pl.DataFrame(EXAMPLES)
    _check_removed_table(df, train, val, removed, {"g1", "g2"})
    assert removed.filter(pl.col("id") == "e3")["score"][0] >= 90
    assert "13-gram" in removed.filter(pl.col("id") == "e7")["detail"][0]
    assert report["removed"]["exact_duplicate"] == 1 and report["removed"]["near_duplicate"] == 2
    assert report["removed"]["contaminated"] == 3 and sum(report["removed"].values()) == 6
    assert report["n_in"] == 12 and report["n_train"] + report["n_val"] == 6
    biggest = report["clusters"]["largest"][0]
    assert biggest["kept_id"] == "e1" and biggest["size"] == 4 and len(biggest["examples"]) == 3
    assert report["diversity"]["before"]["unique_ratio"] < 1.0 == report["diversity"]["after"]["unique_ratio"]

    # Same columns as the input; val passages never occur in train.
    assert train.columns == val.columns == df.columns
    assert val.height > 0 and not set(train["passage_id"]) & set(val["passage_id"])
    # Deterministic.
    _, train2, val2, removed2, _ = _run(tmp_path)
    assert train2.equals(train) and val2.equals(val) and removed2.equals(removed)


def test_empty_input_and_repeated_ids(tmp_path):
    _, train, val, removed, report = _run(tmp_path, pl.DataFrame(EXAMPLES).head(0))
    assert train.height == val.height == removed.height == 0 and report["n_in"] == 0
    rows = [_row("same", "p1", "What is the capital of Norland?", "Eastport")] * 2
    _, train, val, removed, _ = _run(tmp_path, rows)
    assert train.height + val.height == 1 and removed["reason"].to_list() == ["exact_duplicate"]


def test_block_by_passage_keeps_lookalikes_of_other_passages(tmp_path):
    lsh = yaml.safe_load((REPO / "params.yaml").read_text())["dedup"]["lsh"] | {"block_by": "passage_id"}
    _, _, _, removed, _ = _run(tmp_path, lsh=lsh)
    assert "e4" not in set(removed["id"]) and "e3" in set(removed["id"])


def test_keep_rules(tmp_path):
    rows = [
        _row("a", "p1", "What is the capital of Norland?", "Eastport", quality=0.2),
        _row("b", "p2", "What is the capital of Norlands??", "Eastport", quality=0.1),
        _row("c", "p3", "what is the capital of norland", "Eastport", quality=0.9),
        _row("d", "p4", "When was Norland founded?", "1204", quality=0.5),
    ]
    kept = {}
    for keep, column in (("first", None), ("longest", None), ("highest", "quality")):
        _, train, val, removed, _ = _run(tmp_path, rows, keep=keep, keep_column=column, near_threshold=95.0)
        kept[keep] = sorted(set(train["id"]) | set(val["id"]))
        assert removed.height == 2 and kept[keep][0] in set(removed["duplicate_of"])
    assert kept == {"first": ["a", "d"], "longest": ["b", "d"], "highest": ["c", "d"]}


def test_filters_remove_and_record_reasons(tmp_path):
    rows = [
        *EXAMPLES[7:],
        _row("f1", "p1", "What is the capital of Norland?", "   "),
        _row("f2", "p2", "Why?", "because"),
        _row("f3", "p3", "Где находится столица Норланда?", "Истпорт"),
        _row("f4", "p4", "What is the tallest tower in Eastport?", "I'm sorry, I cannot answer that."),
    ]
    _, train, val, removed, report = _run(tmp_path, rows)
    got = {r["id"]: r["reason"] for r in removed.iter_rows(named=True)}
    assert got == {"f1": "empty_field", "f2": "too_short", "f3": "charset", "f4": "refusal"}
    _check_removed_table(pl.DataFrame(rows), train, val, removed, set())
    assert report["removed"]["refusal"] == 1


class _Judge:
    """Rates an example 1 when its question is about the Rope Guild, else 4."""

    def chat(self, messages, *, model="m", temperature=0.0, seed=None, max_tokens=None):
        score = 1 if "Rope Guild" in messages[-1]["content"] else 4
        return {"content": json.dumps({"score": score}), "finish_reason": "stop", "usage": {}}


def test_judge_filter_through_the_teacher_engine(tmp_path):
    from dagster_project.teacher.cache import ResponseCache
    from dagster_project.teacher.engine import TeacherEngine

    judge = yaml.safe_load((REPO / "params.yaml").read_text())["dedup"]["judge"] | {"enabled": True}
    engine = TeacherEngine(
        teacher=_Judge(), cache=ResponseCache(tmp_path / "c", mode="off"), env={}, progress=False
    )
    _, train, val, removed, report = _run(tmp_path, judge_engine=engine, judge=judge)
    low = removed.filter(pl.col("reason") == "judge_low_score")
    assert sorted(low["id"]) == ["e11", "e12", "e9"] and (low["score"] == 1).all()
    assert report["judge"]["rated"] == 6 and report["judge"]["unrated"] == 0
    assert report["removed"]["judge_low_score"] == 3


def test_planted_set_through_the_stage(tmp_path):
    df = synthetic.planted_texts(1500, seed=2)
    rows = df.select(
        "id",
        pl.col("text").alias("question"),
        pl.lit("x").alias("answer"),
        (pl.int_range(pl.len()) % 50).cast(pl.String).alias("passage_id"),
        pl.lit("c").alias("context"),
    )
    _, train, val, removed, report = _run(
        tmp_path, rows.to_dicts(), key_fields=["question"], near_threshold=95.0
    )
    _check_removed_table(rows, train, val, removed, set())
    planted = df.filter(pl.col("kind").is_in(["exact", "near", "reorder"]))
    dup_reasons = removed.filter(pl.col("reason").str.ends_with("duplicate"))
    # each planted copy or its original is gone (one of each pair stays)
    gone = set(dup_reasons["id"])
    ids = df["id"].to_list()
    hits = [r["id"] in gone or ids[r["source"]] in gone for r in planted.iter_rows(named=True)]
    assert sum(hits) / len(hits) >= 0.99
    lookalikes = set(df.filter(pl.col("kind") == "lookalike")["id"])
    assert len(lookalikes & gone) <= 0.01 * len(lookalikes)
    assert report["clusters"]["n_duplicate_clusters"] > 0
    assert report["near_pairs"]["verified_pairs"] <= report["near_pairs"]["candidate_pairs"]


def test_split_by_passage_groups():
    df = pl.DataFrame({"id": [str(i) for i in range(40)], "passage_id": [f"p{i // 4}" for i in range(40)]})
    train, val = dedup.split_train_val(df, 0.2, seed=3)
    assert val["passage_id"].n_unique() == 2 and train["passage_id"].n_unique() == 8
    assert dedup.split_train_val(df, 0.2, seed=3)[1].equals(val)
    assert not dedup.split_train_val(df, 0.2, seed=4)[1].equals(val)


def test_main_writes_outputs(tmp_path, monkeypatch):
    params_path = _params(tmp_path)
    synth = tmp_path / "synthesized"
    synth.mkdir()
    pl.DataFrame(EXAMPLES).write_parquet(synth / "examples.parquet")
    (tmp_path / "other.jsonl").write_text(
        json.dumps({"id": "o1", "question": "When was Norland founded?"}) + "\n"
    )
    out = tmp_path / "deduped"
    argv = [
        "dedup",
        "--params",
        str(params_path),
        "--synthesized",
        str(synth),
        "--gold",
        str(tmp_path / "gold.jsonl"),
        str(tmp_path / "other.jsonl"),
        "--out",
        str(out),
    ]
    monkeypatch.setattr("sys.argv", argv)
    dedup.main()
    assert sorted(p.name for p in out.iterdir()) == [
        "details.json",
        "removed.parquet",
        "report.json",
        "train.parquet",
        "val.parquet",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["n_train"] == pl.read_parquet(out / "train.parquet").height
    details = json.loads((out / "details.json").read_text())
    assert details["eval_sets"] == {"gold.jsonl": 2, "other.jsonl": 1}
    # the step timings are a run fact: recorded beside the output folder, not in it
    assert set(details) == set(dedup.DETAIL_KEYS) - {"seconds"} and not set(report) & set(details)
    assert set(read_run_facts(out)["details.json"]["seconds"]) >= {"filters", "exact", "near"}
    # Dagster shows at most 24 numbers of report.json: every count per reason must be among them.
    from dagster_project.dvc_integration.metadata import MAX_NUMBERS, _flatten

    numbers = _flatten(report)
    assert len(numbers) <= MAX_NUMBERS and all(f"removed.{r}" in numbers for r in dedup.REASONS)
    removed = pl.read_parquet(out / "removed.parquet")
    e8 = removed.filter(pl.col("id") == "e8").row(0, named=True)
    assert (
        e8["reason"] == "contaminated"
        and e8["duplicate_of"] == "o1"
        and e8["detail"].startswith("other.jsonl")
    )


def test_a_column_the_params_name_but_the_rows_lack_is_named(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match=r"no column\(s\) \['title'\]"):
        _run(tmp_path, filters={**yaml.safe_load((REPO / "params.yaml").read_text())["dedup"]["filters"],
                                "min_chars": {"title": 3}})  # fmt: skip
