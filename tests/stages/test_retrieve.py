import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.stages import retrieve
from dagster_project.stages.common import load_stage_params

REPO = Path(__file__).resolve().parents[2]

DOCS = [
    {
        "id": "a",
        "title": "Norland",
        "text": "The capital of Norland is Eastport. Norland was founded in 1204.",
    },
    {
        "id": "b",
        "title": "Silver River",
        "text": "The Silver River flows into the Grey Sea. It runs for 300 kilometres.",
    },
    {
        "id": "c",
        "title": "Rope Guild",
        "text": "The Rope Guild is a guild devoted to rope making. It has 40 members.",
    },
    {"id": "d", "title": "empty", "text": ""},
]


def _write_params(tmp_path: Path, sources: list[dict], queries: list[str], top_k: int = 2) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["retrieve"] = {
        "sources": sources,
        "chunk_words": 8,
        "chunk_overlap_words": 2,
        "queries": "queries.txt",
        "top_k": top_k,
    }
    (tmp_path / "queries.txt").write_text("\n".join(queries) + "\n")
    for name in ("gold.jsonl",):
        (tmp_path / name).write_text("{}\n")
    params["evaluate"]["gold_test"] = "gold.jsonl"
    params["synthesize"]["prompt"] = str(REPO / "prompts" / "grounded_qa.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_chunk_text_overlap_and_short_tail():
    words = " ".join(str(i) for i in range(25))
    chunks = [c.split() for c in retrieve.chunk_text(words, 10, 2)]
    assert [(c[0], c[-1]) for c in chunks] == [("0", "9"), ("8", "17"), ("16", "24")]
    # a tail shorter than half a chunk joins the previous window
    assert [len(c.split()) for c in retrieve.chunk_text(" ".join("w" * 85), 80, 10)] == [85]
    assert retrieve.chunk_text("   ", 10, 2) == []


def test_retrieve_stage_end_to_end(tmp_path):
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    text_dir = tmp_path / "notes"
    text_dir.mkdir()
    (text_dir / "ship.txt").write_text("Velmora is a merchant ship commanded by Captain Ada Rell.")
    pl.DataFrame({"id": ["m1"], "body": ["Mount Kelvar is a mountain in the Ash Range."]}).write_parquet(
        tmp_path / "more.parquet"
    )
    sources = [
        {"path": "docs.jsonl", "format": "jsonl", "text_field": "text"},
        {"path": "notes", "format": "text_dir", "text_field": "text"},
        {"path": "more.parquet", "format": "parquet", "text_field": "body"},
    ]
    queries = [
        "capital city",
        "river sea kilometres",
        "guild members",
        "ship captain",
        "mountain range",
        "zzz",
    ]
    params_path = _write_params(tmp_path, sources, queries)

    params = load_stage_params(params_path, "retrieve")
    stats = retrieve.run(params, tmp_path, tmp_path / "corpus")
    # The stage read exactly the keys of its section.
    assert params.accessed == {f"retrieve.{k}" for k in params}

    out = tmp_path / "corpus"
    assert sorted(p.name for p in out.iterdir()) == [
        "bm25",
        "chunks.parquet",
        "grounding.parquet",
        "stats.json",
    ]
    chunks = pl.read_parquet(out / "chunks.parquet")
    assert chunks.columns == ["chunk_id", "doc_id", "source", "text"]
    assert chunks["chunk_id"].n_unique() == chunks.height
    assert set(chunks["source"]) == {"docs.jsonl", "notes", "more.parquet"}
    assert stats["n_documents"] == 5  # the empty document is skipped
    assert stats == json.loads((out / "stats.json").read_text())

    grounding = pl.read_parquet(out / "grounding.parquet")
    assert grounding.columns == ["passage_id", "query", "rank", "score", "text"]
    assert grounding["passage_id"].n_unique() == grounding.height == stats["n_grounding"]
    assert set(grounding["passage_id"]) <= set(chunks["chunk_id"])
    assert (grounding["score"] > 0).all() and grounding["rank"].min() >= 1
    assert "zzz" not in set(grounding["query"])
    hit = grounding.filter(pl.col("query") == "ship captain")
    assert hit.height >= 1 and "Captain" in hit["text"][0]
    assert (out / "bm25" / "params.index.json").exists()

    # Deterministic: a second run writes the same tables.
    retrieve.run(params, tmp_path, tmp_path / "corpus2")
    assert pl.read_parquet(tmp_path / "corpus2" / "grounding.parquet").equals(grounding)


def test_hf_dataset_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="Hugging Face dataset"):
        retrieve.load_source({"path": "no-such-org/no-such-dataset", "format": "hf_dataset"}, tmp_path)


def test_demo_world_reaches_every_entity_type(tmp_path):
    """With the recipe's own params, grounding covers a varied set of demo-world passages."""
    params = load_stage_params(REPO / "params.yaml", "retrieve")
    stats = retrieve.run(params, REPO, tmp_path / "corpus")
    assert 150 <= stats["n_grounding"] <= 300
    grounding = pl.read_parquet(tmp_path / "corpus" / "grounding.parquet")
    openers = " ".join(t.split(".")[0] for t in grounding["text"])
    for marker in ("kingdom", "city", "River", "Mount", "inventor", "Guild", "ship"):
        assert marker in openers, marker
