import json
from pathlib import Path

import polars as pl
import yaml

from dagster_project.stages import dedup
from dagster_project.stages.common import load_stage_params

REPO = Path(__file__).resolve().parents[2]
STEPS = ["nfkc", "lowercase", "punctuation", "whitespace"]

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
    params["dedup"] = {
        "key_fields": ["question", "answer"],
        "normalize": STEPS,
        "near_threshold": 90.0,
        "near_scorer": "token_sort_ratio",
        "val_fraction": 0.25,
        "seed": 0,
        **overrides,
    }
    for name in ("queries.txt", "passages.jsonl"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GOLD))
    params["retrieve"]["queries"] = "queries.txt"
    params["retrieve"]["sources"] = [{"path": "passages.jsonl", "format": "jsonl", "text_field": "text"}]
    params["evaluate"]["gold_test"] = "gold.jsonl"
    params["synthesize"]["prompt"] = str(REPO / "prompts" / "grounded_qa.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_normalize_text():
    assert dedup.normalize_text("  Ｗhat's  the\tCAPITAL?! ", STEPS) == "whats the capital"
    assert dedup.normalize_text("A.B", ["punctuation"]) == "AB"


def test_dedup_removes_planted_rows(tmp_path):
    params = load_stage_params(_params(tmp_path), "dedup")
    df = pl.DataFrame(EXAMPLES)
    gold = dedup.load_gold(tmp_path / "gold.jsonl", STEPS)
    train, val, removed, report = dedup.dedup(df, gold, params)
    assert params.accessed == {f"dedup.{k}" for k in params}

    got = {r["id"]: (r["reason"], r["duplicate_of"]) for r in removed.iter_rows(named=True)}
    assert got == {
        "e2": ("exact_duplicate", "e1"),
        "e3": ("near_duplicate", "e1"),
        "e5": ("contaminated", "g1"),
        "e6": ("contaminated", "g1"),
        "e7": ("contaminated", "g2"),
    }
    assert removed.columns == ["id", "reason", "duplicate_of", "score"]
    assert removed.filter(pl.col("id") == "e3")["score"][0] >= 90
    assert report["removed"] == {"exact_duplicate": 1, "near_duplicate": 1, "contaminated": 3}
    assert report["n_in"] == 12 and report["n_train"] + report["n_val"] == 7

    # Same columns as the input; val passages never occur in train.
    assert train.columns == val.columns == df.columns
    assert val.height > 0 and not set(train["passage_id"]) & set(val["passage_id"])
    # Deterministic split.
    train2, val2, _, _ = dedup.dedup(df, gold, params)
    assert train2.equals(train) and val2.equals(val)


def test_near_duplicates_are_blocked_by_passage():
    ids = ["a", "b", "c"]
    keys = ["what cargo does imeldkor carry | timber", "what cargo does imeldkor carry | timbre", "x"]
    removed = dedup.find_near_duplicates(ids, keys, [["p1"], ["p2"], ["p1"]], 90, "ratio")
    assert removed == []
    removed = dedup.find_near_duplicates(ids, keys, [["p1"], ["p1"], ["p1"]], 90, "ratio")
    assert [(r["id"], r["duplicate_of"]) for r in removed] == [("b", "a")]


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
    out = tmp_path / "deduped"
    argv = [
        "dedup",
        "--params",
        str(params_path),
        "--synthesized",
        str(synth),
        "--gold",
        str(tmp_path / "gold.jsonl"),
        "--out",
        str(out),
    ]
    monkeypatch.setattr("sys.argv", argv)
    dedup.main()
    assert sorted(p.name for p in out.iterdir()) == [
        "removed.parquet",
        "report.json",
        "train.parquet",
        "val.parquet",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["n_train"] == pl.read_parquet(out / "train.parquet").height
