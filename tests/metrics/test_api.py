"""The metrics package's public surface: every name in `__all__` exists, and results serialise to JSON."""

import importlib
import json

import pytest

from dagster_project.metrics import agreement, classification, diversity, qa


@pytest.mark.parametrize("module", ["qa", "classification", "agreement", "diversity"])
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(f"dagster_project.metrics.{module}")
    assert mod.__doc__ and len(mod.__doc__) > 200  # each module says what its figures mean
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_results_serialise_to_json() -> None:
    texts = ["the cat sat", "the cat ran", "a dog ran", "Alice met Bob"]
    tfidf = diversity.TfidfEmbedder()
    results = [
        qa.multi_turn_f1(["a"], [["a", "b"]]),
        classification.classification_report(["x", "y"], ["x", classification.INVALID], ["x", "y"]),
        agreement.success_rate([True, False, True], n_resamples=20),
        agreement.judge_vs_majority(
            [True, False], [[True, True, False], [False, False, True]], [False, True], n_resamples=20
        ),
        agreement.swap_consistency(["A"], ["B"]),
        diversity.self_bleu(texts),
        diversity.entity_entropy_of_texts(texts),
        diversity.mean_pairwise_cosine(texts, tfidf),
        diversity.labelwise_cosine(texts, ["a", "a", "b", "b"], tfidf),
        diversity.mauve(texts, texts[::-1], tfidf, num_buckets=2),
    ]
    for r in results:
        json.loads(json.dumps(r.to_dict()))
