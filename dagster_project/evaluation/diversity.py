"""Diversity figures of the training texts (distinct-n, self-BLEU, entity entropy, pairwise and label-wise
cosine, MAUVE), each named with the backend that produced it."""

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster_project.metrics.diversity import (
    distinct_n,
    entity_entropy_of_texts,
    labelwise_cosine,
    mauve,
    mean_pairwise_cosine,
    resolve_embedder,
    self_bleu,
)

SELF_BLEU_MAX_N = 5  # self-BLEU-1..5, as SynthesizRR reports it


def diversity_figures(
    texts: Sequence[str],
    max_texts: int,
    embedding: str,
    embedding_model: str | None,
    reference_texts: Sequence[str] | None,
    seed: int,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Diversity of the training texts: distinct-1/2, self-BLEU-1..5 (sampled), entity entropy, mean
    pairwise cosine, label-wise cosine (only when `labels`, one per text, are given) and MAUVE against
    `reference_texts` (only when given). `backends` names what produced each figure."""
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels")
    kept = [i for i, t in enumerate(texts) if t and t.strip()]
    texts = [texts[i] for i in kept]
    labels = [labels[i] for i in kept] if labels is not None else None
    out: dict[str, Any] = {"n_texts": len(texts)}
    if len(texts) < 2:
        return out | {"note": "fewer than two texts: no diversity figures"}
    if len(texts) > max_texts:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_texts))
    else:
        keep = list(range(len(texts)))
    sample = [texts[i] for i in keep]
    embedder = resolve_embedder(embedding_model, embedding)  # type: ignore[arg-type]
    bleu = self_bleu(sample, max_n=SELF_BLEU_MAX_N, max_hypotheses=min(500, len(sample)), seed=seed)
    entities = entity_entropy_of_texts(texts)
    cosine = mean_pairwise_cosine(sample, embedder, max_texts=None, seed=seed)
    bleu_backend = f"own NLTK-equivalent BLEU (smoothing method 1), {bleu.n_hypotheses} sampled hypotheses"
    out |= {
        "n_sampled": len(sample),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        **{f"self_bleu_{n}": bleu.scores[n] for n in range(1, SELF_BLEU_MAX_N + 1)},
        "entity_entropy_bits": entities.entropy_bits,
        "n_entities_unique": entities.n_unique,
        "mean_pairwise_cosine": cosine.mean_cosine,
        "backends": {
            "distinct_n": "whole set, lowercase word tokens",
            "self_bleu": f"{bleu_backend} (seed {seed})",
            "entity_entropy": entities.backend,
            "mean_pairwise_cosine": cosine.backend,
        },
    }
    if labels is not None:
        by_label = labelwise_cosine(sample, [labels[i] for i in keep], embedder, None, seed)
        out["labelwise_cosine"] = by_label.mean
        out["labelwise_cosine_per_label"] = {
            label: {"mean_cosine": r.mean_cosine, "n_texts": r.n_texts}
            for label, r in by_label.per_label.items()
        }
        out["backends"]["labelwise_cosine"] = by_label.backend
    if reference_texts:
        result = mauve(sample, list(reference_texts), embedder, seed=seed)
        out["mauve"] = result.mauve
        out["backends"]["mauve"] = (
            f"{result.backend}, {result.num_buckets} buckets, scaling {result.scaling_factor}"
        )
    return out


def load_texts(path: str | Path) -> list[str]:
    """Texts of a JSON-lines file (field `text`, else `question`) or of a plain text file (one a line)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in lines]
        return [str(r.get("text", r.get("question", ""))) for r in rows]
    return lines


# ------------------------------------------------------------------------------------------- scoring
