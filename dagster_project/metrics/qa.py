"""Extractive-QA metrics as the SQuAD v1.1 evaluation script defines them: exact match and token F1.

Both compare answers after `normalize_answer`: lowercase, punctuation removed, the articles
a/an/the removed, whitespace collapsed. Token F1 is the harmonic mean of token precision and recall
(tokens counted with multiplicity). Scores are in [0, 1].

Several gold answers: the score is the maximum over them (SQuAD's `metric_max_over_ground_truths`).
Multi-turn (CoQA/QuAC-style, used for CoDi conversations): each turn is scored on its own against its
gold answer(s); a conversation reports per-turn F1/EM and their mean, and `aggregate_conversations`
averages over all turns of all conversations. (CoQA's official script additionally averages over
leave-one-out subsets of its four human answers; with synthetic gold answers we take the plain maximum.)
"""

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "MultiTurnScore",
    "aggregate",
    "aggregate_conversations",
    "exact_match",
    "exact_match_multi",
    "max_over_references",
    "multi_turn_f1",
    "normalize_answer",
    "score_pairs",
    "token_f1",
    "token_f1_multi",
]

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


def max_over_references(
    prediction: str, references: str | Sequence[str], metric: Callable[[str, str], float] = token_f1
) -> float:
    """Best score of `prediction` against any of several gold answers (SQuAD: max over ground truths).

    A single string counts as one reference. Blank references are ignored, and none left raises
    ValueError: an empty reference would count an empty prediction as an exact match.
    """
    refs = [references] if isinstance(references, str) else list(references)
    refs = [r for r in refs if r.strip()]
    if not refs:
        raise ValueError("no non-empty reference answer to score against")
    return max(metric(prediction, r) for r in refs)


def exact_match_multi(prediction: str, references: str | Sequence[str]) -> float:
    """Exact match against the best-matching of several gold answers."""
    return max_over_references(prediction, references, exact_match)


def token_f1_multi(prediction: str, references: str | Sequence[str]) -> float:
    """Token F1 against the best-matching of several gold answers."""
    return max_over_references(prediction, references, token_f1)


@dataclass(frozen=True)
class MultiTurnScore:
    """Per-turn scores of one conversation and their means (CoQA/QuAC-style turn-level evaluation).

    `per_turn_f1[i]` / `per_turn_em[i]` score turn i against its best-matching gold answer;
    `mean_f1` / `mean_em` are the unweighted means over turns (0.0 for a conversation with no turns).
    """

    per_turn_f1: list[float]
    per_turn_em: list[float]
    mean_f1: float
    mean_em: float
    n_turns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def multi_turn_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> MultiTurnScore:
    """Score a conversation turn by turn: one prediction per turn, one gold answer (or several) per turn.

    Each turn is scored independently with `token_f1_multi` / `exact_match_multi` (max over that turn's
    gold answers), as CoQA and QuAC report turn-level F1. Misaligned turn counts raise ValueError.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted turns for {len(references)} reference turns")
    f1 = [token_f1_multi(p, r) for p, r in zip(predictions, references, strict=True)]
    em = [exact_match_multi(p, r) for p, r in zip(predictions, references, strict=True)]
    n = len(f1)
    return MultiTurnScore(
        per_turn_f1=f1,
        per_turn_em=em,
        mean_f1=sum(f1) / n if n else 0.0,
        mean_em=sum(em) / n if n else 0.0,
        n_turns=n,
    )


def aggregate_conversations(scores: Iterable[MultiTurnScore]) -> dict[str, float]:
    """Turn-weighted means over many conversations: {"token_f1", "exact_match", "n_turns", "n_conversations"}.

    Every turn counts once (a long conversation weighs more), matching CoQA's overall in-domain F1,
    which averages over all questions. 0.0 means when there are no turns.
    """
    scores = list(scores)
    n_turns = sum(s.n_turns for s in scores)
    f1_sum = sum(sum(s.per_turn_f1) for s in scores)
    em_sum = sum(sum(s.per_turn_em) for s in scores)
    return {
        "token_f1": f1_sum / n_turns if n_turns else 0.0,
        "exact_match": em_sum / n_turns if n_turns else 0.0,
        "n_turns": float(n_turns),
        "n_conversations": float(len(scores)),
    }
