"""Stage `retrieve`: load passages from the sources, chunk them, index them with BM25, and retrieve the
grounding passages the teacher will write questions about.

    python -m dagster_project.stages.retrieve --params params.yaml --out assets/corpus

Reads only the `retrieve` section of params.yaml. Writes into the output folder (atomically):
    chunks.parquet     chunk_id, doc_id, source, text        every chunk of every source document
    bm25/              the saved bm25s index over the chunks
    grounding.parquet  passage_id, query, rank, score, text  unique chunks retrieved, each with its best hit
    stats.json         n_documents, n_chunks, n_queries, n_grounding
"""

import json
from pathlib import Path
from typing import Any

import bm25s
import polars as pl
from tqdm import tqdm

from dagster_project.stages.common import atomic_output_dir, load_stage_params, stage_parser, write_json

STOPWORDS = "en"

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
# Index and retrieval


def build_index(texts: list[str]) -> bm25s.BM25:
    """A BM25 index over `texts` (lowercased words, English stopwords removed)."""
    tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False)
    index = bm25s.BM25()
    index.index(tokens, show_progress=len(texts) >= 10_000)
    return index


def search(index: bm25s.BM25, query: str, k: int) -> list[tuple[int, float]]:
    """The top-`k` (chunk position, score) for `query`, best first; chunks scoring 0 are left out."""
    words = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
    words = [w for w in words if w in index.vocab_dict]
    if not words:
        return []
    k = min(k, index.scores["num_docs"])
    docs, scores = index.retrieve([words], k=k, show_progress=False, n_threads=1)
    return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


def retrieve_grounding(
    index: bm25s.BM25, chunks: pl.DataFrame, queries: list[str], top_k: int
) -> pl.DataFrame:
    """The unique chunks retrieved for any query, each with its best (highest-scoring) query, rank and score.

    Ties on score go to the better rank, then the earlier query. Rows are sorted by chunk position.
    """
    best: dict[int, tuple[float, int, int]] = {}  # chunk position -> (score, rank, query index)
    for qi, query in enumerate(tqdm(queries, desc="retrieve", unit="query", disable=len(queries) < 200)):
        for rank, (pos, score) in enumerate(search(index, query, top_k), start=1):
            current = best.get(pos)
            if current is None or (-score, rank, qi) < (-current[0], current[1], current[2]):
                best[pos] = (score, rank, qi)
    ids, texts = chunks["chunk_id"].to_list(), chunks["text"].to_list()
    rows = [
        {"passage_id": ids[pos], "query": queries[qi], "rank": rank, "score": score, "text": texts[pos]}
        for pos, (score, rank, qi) in sorted(best.items())
    ]
    schema = {
        "passage_id": pl.String,
        "query": pl.String,
        "rank": pl.Int64,
        "score": pl.Float64,
        "text": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def read_queries(path: Path) -> list[str]:
    """Non-empty, stripped lines of the queries file (lines starting with '#' are comments)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


# ---------------------------------------------------------------------------------------------------
# The stage


def run(params: Any, root: Path, out: Path) -> dict[str, int]:
    """Run the whole stage with a `retrieve` params mapping; paths in params are relative to `root`."""
    sources = params["sources"]
    chunk_words = int(params["chunk_words"])
    overlap = int(params["chunk_overlap_words"])
    queries = read_queries(root / params["queries"])
    top_k = int(params["top_k"])

    docs = [doc for source in sources for doc in load_source(dict(source), root)]
    if not docs:
        raise SystemExit("error: retrieve: the sources hold no documents with text")
    chunks = chunk_documents(docs, chunk_words, overlap)
    index = build_index(chunks["text"].to_list())
    grounding = retrieve_grounding(index, chunks, queries, top_k)

    stats = {
        "n_documents": len(docs),
        "n_chunks": chunks.height,
        "n_queries": len(queries),
        "n_grounding": grounding.height,
    }
    with atomic_output_dir(out) as tmp:
        chunks.write_parquet(tmp / "chunks.parquet")
        index.save(str(tmp / "bm25"), show_progress=False)
        grounding.write_parquet(tmp / "grounding.parquet")
        write_json(tmp / "stats.json", stats)
    return stats


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/corpus", help="output folder")
    args = parser.parse_args()
    params = load_stage_params(args.params, "retrieve")
    stats = run(params, Path(args.params).parent, Path(args.out))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
