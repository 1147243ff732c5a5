"""Extractive-QA metrics as the SQuAD v1.1 evaluation script defines them: exact match and token F1.

Both compare answers after `normalize_answer`: lowercase, punctuation removed, the articles
a/an/the removed, whitespace collapsed. Token F1 is the harmonic mean of token precision and recall
(tokens counted with multiplicity). Scores are in [0, 1].
"""

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD's rule)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalized prediction equals the normalized reference, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall between the normalized answers.

    Two empty answers score 1.0; one empty answer against a non-empty one scores 0.0.
    """
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def score_pairs(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-example {"exact_match", "token_f1"} for aligned predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return [
        {"exact_match": exact_match(p, r), "token_f1": token_f1(p, r)}
        for p, r in zip(predictions, references, strict=True)
    ]


def aggregate(scores: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over examples ({"exact_match": 0.0, "token_f1": 0.0} when there are none)."""
    scores = list(scores)
    keys = ("exact_match", "token_f1")
    if not scores:
        return {k: 0.0 for k in keys}
    return {k: sum(s[k] for s in scores) / len(scores) for k in keys}
