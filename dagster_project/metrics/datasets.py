"""Figures of a labelled synthetic dataset, as the SynthesizRR study compares them across methods.

`dataset_figures` computes, for one set of (text, label) rows: the label distribution, distinct-1/2/3,
self-BLEU-1..5, entity entropy, mean pairwise and label-wise cosine, MAUVE against gold texts, and label
preservation (a classifier trained on gold data predicts each row's label; the share that agrees with the
intended label). Every figure that depends on a model says which one ran.

MAUVE uses the `mauve-text` package over sentence-embedding features (the paper used GPT-2-XL features;
values are comparable across arms of one report, not with the paper's). Label preservation trains a
logistic regression on the same sentence embeddings of the gold training texts.
"""

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from dagster_project.metrics.diversity import (
    Embedder,
    distinct_n,
    entity_entropy_of_texts,
    labelwise_cosine,
    mean_pairwise_cosine,
    self_bleu,
    shannon_entropy_bits,
)


class LabelClassifier:
    """A logistic-regression label classifier over sentence embeddings, trained on gold rows."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], embedder: Embedder, seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        self.embedder = embedder
        self.model = LogisticRegression(max_iter=2000, random_state=seed)
        self.model.fit(embedder.encode(list(texts)), list(labels))
        self.name = f"logistic regression on {embedder.name}, trained on {len(texts)} gold rows"

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted label of each text."""
        if not texts:
            return []
        return [str(p) for p in self.model.predict(self.embedder.encode(list(texts)))]

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> float:
        """Share of `texts` whose predicted label equals the given one (NaN for none)."""
        if not texts:
            return float("nan")
        return float(np.mean([p == str(g) for p, g in zip(self.predict(texts), labels, strict=True)]))


def mauve_score(
    generated: Sequence[str], reference: Sequence[str], embedder: Embedder, buckets: int, seed: int
) -> dict[str, Any]:
    """MAUVE (mauve-text) of generated vs reference texts over the embedder's features."""
    import mauve

    if len(generated) < 2 or len(reference) < 2:
        return {"mauve": float("nan"), "note": "too few texts"}
    features = embedder.encode([*generated, *reference])
    k = max(2, min(buckets, (len(generated) + len(reference)) // 10))
    out = mauve.compute_mauve(
        p_features=features[: len(generated)],
        q_features=features[len(generated) :],
        num_buckets=k,
        mauve_scaling_factor=1.0,
        seed=seed,
        verbose=False,
        device_id=-1,
    )
    return {
        "mauve": float(out.mauve),
        "num_buckets": k,
        "scaling_factor": 1.0,
        "featurizer": embedder.name,
        "implementation": "mauve-text",
    }


def dataset_figures(
    texts: Sequence[str],
    labels: Sequence[str] | None,
    embedder: Embedder,
    gold_texts: Sequence[str],
    classifier: LabelClassifier | None,
    max_texts: int = 1000,
    mauve_buckets: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Every dataset figure of one arm (see the module doc). Without `labels` (rows that are no labelled
    texts) the label figures are None; without `classifier` label preservation is None."""
    unlabelled = labels is None
    labels = ["all"] * len(texts) if labels is None else labels
    counts = Counter(str(label) for label in labels)
    bleu = self_bleu(list(texts), max_n=5, max_hypotheses=max_texts, seed=seed)
    entities = entity_entropy_of_texts(texts)
    pairwise = mean_pairwise_cosine(list(texts), embedder, max_texts=max_texts, seed=seed)
    labelwise = labelwise_cosine(
        list(texts), list(labels), embedder, max_texts_per_label=max_texts, seed=seed
    )
    figures: dict[str, Any] = {
        "n_texts": len(texts),
        "label_counts": dict(sorted(counts.items())),
        "label_entropy_bits": shannon_entropy_bits(counts.values()),
        **{f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)},
        **bleu.to_dict()["scores"],
        "entity_entropy_bits": entities.entropy_bits,
        "mean_pairwise_cosine": pairwise.mean_cosine,
        "labelwise_cosine": labelwise.mean,
        "mauve_vs_gold": mauve_score(texts, gold_texts, embedder, mauve_buckets, seed)["mauve"],
        "label_preservation": classifier.accuracy(texts, labels) if classifier else None,
        "backends": {
            "entity_entropy": entities.backend,
            "cosine": pairwise.backend,
            "mauve": f"mauve-text over {embedder.name} features",
            "label_preservation": classifier.name if classifier else None,
        },
    }
    if unlabelled:
        figures.update(label_counts={}, label_entropy_bits=None, labelwise_cosine=None)
    if classifier is None:
        figures["label_preservation"] = None
        figures["backends"].pop("label_preservation")
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}
