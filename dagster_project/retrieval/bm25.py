"""A BM25 index over passage texts (bm25s): lowercased words, English stopwords removed."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when an index is built or searched: validating params does not pay for it
    import bm25s

STOPWORDS = "en"


def build_bm25(texts: list[str]) -> "bm25s.BM25":
    """A BM25 index over `texts`."""
    import bm25s

    tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False)
    index = bm25s.BM25()
    index.index(tokens, show_progress=len(texts) >= 10_000)
    return index


def search_bm25(index: "bm25s.BM25", query: str, k: int) -> list[tuple[int, float]]:
    """The top-`k` (passage position, score) for `query`, best first; passages scoring 0 are left out."""
    import bm25s

    words = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
    words = [w for w in words if w in index.vocab_dict]
    if not words:
        return []
    k = min(k, index.scores["num_docs"])
    docs, scores = index.retrieve([words], k=k, show_progress=False, n_threads=1)
    return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
