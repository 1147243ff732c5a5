"""The ReBase demo data is deterministic and the committed copy equals a fresh generation."""

import polars as pl
from helpers import REPO_ROOT

from dagster_project.world.rebase_data import generate

DATA = REPO_ROOT / "examples" / "rebase" / "data"


def test_committed_data_equals_a_fresh_generation(tmp_path):
    counts = generate(tmp_path, seed=0)
    assert counts["sources/harbor_trivia"] == 81 and counts["gold/qa_test.jsonl"] == 60
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    hand_written = DATA / "README.md"
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file() and p != hand_written)
    assert fresh == committed
    for rel in fresh:
        if rel.suffix == ".parquet":  # the bytes carry the writer's version; the content must match
            assert pl.read_parquet(tmp_path / rel).equals(pl.read_parquet(DATA / rel)), rel
        else:
            assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel


def test_the_planted_gold_copy_and_the_benchmark(tmp_path):
    generate(tmp_path, seed=0)
    gold = pl.read_ndjson(tmp_path / "gold/qa_test.jsonl")
    trivia = pl.read_parquet(tmp_path / "sources/harbor_trivia/train.parquet")
    planted = trivia.row(17, named=True)
    assert f"Context: {planted['context']} Question: {planted['question']}" == gold["input"][4]
    assert gold["id"][4] == "qa-004" and gold["category"][4] == "founder"
    bench = pl.read_ndjson(tmp_path / "sources/harborqa/test.jsonl")
    assert bench["question"].to_list() == gold["question"].to_list()  # the target benchmark itself
