"""Agreement between a judge (an LLM used as classifier/critic) and human raters, and rates with intervals.

What each figure means and where its definition comes from:
- Cohen's kappa (two raters, Cohen 1960): kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement,
  p_e = sum_k p1(k) * p2(k) the agreement expected from each rater's own label frequencies. 1 is perfect
  agreement, 0 chance level. Undefined (NaN) when p_e = 1 (both raters always give one and the same label).
- Fleiss' kappa (several raters per item, Fleiss 1971): from an items x categories table of counts with
  the same number n >= 2 of ratings on every item; P_i = (sum_j n_ij^2 - n) / (n(n - 1)),
  P_bar = mean P_i, p_j = share of all ratings in category j, P_e = sum_j p_j^2,
  kappa = (P_bar - P_e) / (1 - P_e). Items with differing rating counts are rejected (ValueError), not
  silently re-weighted.
- Judge vs rater majority (the Reflections paper: GPT-4 judge vs majority of three raters, kappa 0.66):
  each item's gold is its raters' most frequent label; a tie is broken by the stated rule
  `tie_break="first_label"` (the tied label that comes first in `labels`) or the item is dropped
  (`tie_break="drop"`, counted in `n_dropped`). Reported with a confusion matrix (rows rater majority,
  columns judge), a bootstrap interval, per-rater kappa and the raters' own Fleiss kappa (with its own
  bootstrap interval over items).
- Bootstrap interval: percentile bootstrap (Efron) resampling items with replacement, `n_resamples`
  resamples from `numpy.random.default_rng(seed)`, bounds at the (1 - c)/2 and (1 + c)/2 percentiles
  (numpy's linear interpolation). Deterministic given the seed. Resamples where the statistic is
  undefined (NaN) are left out and counted.
- Success rate: share of items judged a success, with the same bootstrap interval.
- Position-swap consistency (the teacher-as-critic paper's warning about position bias): the judge sees
  each pair in both orders, (A, B) and (B, A); a pair is consistent when both verdicts pick the same
  underlying item (or both say tie). Reported: the consistent share, the share of verdicts that picked
  whichever item was shown first (0.5 = no position bias), and a per-pair resolved winner (None where
  inconsistent, so those pairs can be dropped from preference data).
"""

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from dagster_project.metrics.classification import ConfusionMatrix, confusion_matrix

__all__ = [
    "BootstrapCI",
    "JudgeAgreement",
    "SwapConsistency",
    "TieBreak",
    "bootstrap_ci",
    "cohen_kappa",
    "fleiss_kappa",
    "judge_vs_majority",
    "majority_vote",
    "ratings_to_counts",
    "success_rate",
    "swap_consistency",
]

T = TypeVar("T")
TieBreak = Literal["first_label", "drop"]


def cohen_kappa(rater1: Sequence[Hashable], rater2: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels on the same items (NaN when p_e = 1).

    Raises ValueError on misaligned or empty inputs.
    """
    if len(rater1) != len(rater2):
        raise ValueError(f"{len(rater1)} labels from rater 1 for {len(rater2)} from rater 2")
    n = len(rater1)
    if n == 0:
        raise ValueError("Cohen's kappa needs at least one item")
    p_o = sum(a == b for a, b in zip(rater1, rater2, strict=True)) / n
    c1, c2 = Counter(rater1), Counter(rater2)
    p_e = sum(c1[k] * c2[k] for k in c1) / (n * n)
    if p_e == 1.0:
        return float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def ratings_to_counts(
    ratings: Sequence[Sequence[Hashable | None]], labels: Sequence[Hashable] | None = None
) -> tuple[list[Hashable], list[list[int]]]:
    """Turn per-item rating lists into (labels, items x labels count table) for `fleiss_kappa`.

    `None` entries are missing ratings and are skipped. `labels` fixes the column order; by default the
    labels seen, sorted by `str`. A rating outside a given `labels` raises ValueError.
    """
    seen = [r for item in ratings for r in item if r is not None]
    cols = list(labels) if labels is not None else sorted(set(seen), key=str)
    index = {label: j for j, label in enumerate(cols)}
    table = []
    for item in ratings:
        row = [0] * len(cols)
        for r in item:
            if r is None:
                continue
            if r not in index:
                raise ValueError(f"rating {r!r} is not one of {cols!r}")
            row[index[r]] += 1
        table.append(row)
    return cols, table


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an items x categories table of rating counts (NaN when P_e = 1).

    Every item must carry the same number n >= 2 of ratings; otherwise ValueError (this function does not
    guess how to weight items with fewer ratings — drop or complete them first).
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError("Fleiss' kappa needs a non-empty items x categories table")
    if (table < 0).any():
        raise ValueError("rating counts must be non-negative")
    per_item = table.sum(axis=1)
    n = per_item[0]
    if not np.all(per_item == n):
        raise ValueError(
            f"Fleiss' kappa needs the same number of ratings on every item; got counts "
            f"{sorted(set(per_item.astype(int).tolist()))}"
        )
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two ratings per item")
    n_items = table.shape[0]
    p_i = (np.square(table).sum(axis=1) - n) / (n * (n - 1))
    p_bar = p_i.mean()
    p_j = table.sum(axis=0) / (n_items * n)
    p_e = float(np.square(p_j).sum())
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def majority_vote(
    ratings: Sequence[Hashable | None], labels: Sequence[Hashable], tie_break: TieBreak = "first_label"
) -> Hashable | None:
    """The most frequent label among one item's ratings (`None` entries are missing and skipped).

    Ties: `tie_break="first_label"` returns the tied label that comes first in `labels`;
    `tie_break="drop"` returns None. No ratings at all also return None.
    """
    if tie_break not in ("first_label", "drop"):
        raise ValueError(f"unknown tie_break {tie_break!r}")
    order = {label: i for i, label in enumerate(labels)}
    counts = Counter(r for r in ratings if r is not None)
    if not counts:
        return None
    for r in counts:
        if r not in order:
            raise ValueError(f"rating {r!r} is not one of {list(labels)!r}")
    top = max(counts.values())
    tied = sorted((label for label, c in counts.items() if c == top), key=order.__getitem__)
    if len(tied) > 1 and tie_break == "drop":
        return None
    return tied[0]


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with a percentile-bootstrap interval [low, high] at `confidence`.

    `n_undefined` counts resamples where the statistic was NaN (left out of the percentiles).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int
    n_undefined: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n == 0:
        raise ValueError("bootstrap needs at least one item")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _interval(estimate: float, values: np.ndarray, confidence: float, seed: int) -> BootstrapCI:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    defined = values[~np.isnan(values)]
    alpha = (1.0 - confidence) / 2.0
    if defined.size:
        low, high = np.percentile(defined, [100 * alpha, 100 * (1 - alpha)])
    else:
        low = high = float("nan")
    return BootstrapCI(
        estimate=float(estimate),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=int(values.size),
        seed=seed,
        n_undefined=int(values.size - defined.size),
    )


def bootstrap_ci(
    items: Sequence[T],
    statistic: Callable[[list[T]], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval of `statistic` over `items`, resampling items with replacement.

    `estimate` is `statistic(items)` on the full sample. The same seed gives the same interval.
    """
    items = list(items)
    idx = _resample_indices(len(items), n_resamples, seed)
    values = np.array([statistic([items[i] for i in row]) for row in idx], dtype=float)
    return _interval(statistic(items), values, confidence, seed)


def success_rate(
    outcomes: Sequence[bool], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BootstrapCI:
    """Share of successes with a percentile-bootstrap interval (same resampling as `bootstrap_ci`)."""
    arr = np.asarray(outcomes, dtype=float)
    idx = _resample_indices(arr.size, n_resamples, seed)
    return _interval(float(arr.mean()), arr[idx].mean(axis=1), confidence, seed)


@dataclass(frozen=True)
class JudgeAgreement:
    """Judge vs rater-majority agreement on the items that have both (see the module docstring).

    `confusion` has rows = rater majority, columns = judge. `per_rater_kappa[r]` is the judge vs rater r
    on the items both labelled. `raters_fleiss_kappa` (and its bootstrap interval over items,
    `raters_fleiss_ci`) is None when items carry differing rating counts.
    """

    labels: list[Any]
    n_items: int
    n_dropped: int
    tie_break: str
    kappa: BootstrapCI
    percent_agreement: float
    confusion: ConfusionMatrix
    per_rater_kappa: list[float]
    raters_fleiss_kappa: float | None
    raters_fleiss_ci: BootstrapCI | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_vs_majority(
    judge: Sequence[Hashable | None],
    ratings: Sequence[Sequence[Hashable | None]],
    labels: Sequence[Hashable],
    tie_break: TieBreak = "first_label",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> JudgeAgreement:
    """Cohen's kappa of the judge against each item's rater majority, with interval and breakdowns.

    `judge[i]` is the judge's label of item i (None: no verdict); `ratings[i]` the raters' labels of item
    i, rater r always at position r (None: rater r skipped the item). Items without a judge label or
    without a majority (no ratings, or a tie under `tie_break="drop"`) are dropped and counted.
    """
    if len(judge) != len(ratings):
        raise ValueError(f"{len(judge)} judge labels for {len(ratings)} rated items")
    pairs: list[tuple[Hashable, Hashable]] = []  # (majority, judge)
    for j, item in zip(judge, ratings, strict=True):
        m = majority_vote(item, labels, tie_break)
        if j is None or m is None:
            continue
        pairs.append((m, j))
    if not pairs:
        raise ValueError("no item has both a judge label and a rater majority")
    majority, verdicts = [m for m, _ in pairs], [j for _, j in pairs]

    def kappa_of(sample: list[tuple[Hashable, Hashable]]) -> float:
        return cohen_kappa([m for m, _ in sample], [j for _, j in sample])

    n_raters = max((len(item) for item in ratings), default=0)
    per_rater = []
    for r in range(n_raters):
        both = [
            (item[r], j)
            for j, item in zip(judge, ratings, strict=True)
            if r < len(item) and item[r] is not None and j is not None
        ]
        per_rater.append(cohen_kappa([a for a, _ in both], [b for _, b in both]) if both else float("nan"))
    try:
        counts = ratings_to_counts(ratings, labels)[1]
        fleiss: BootstrapCI | None = bootstrap_ci(counts, fleiss_kappa, n_resamples, confidence, seed)
    except ValueError:
        fleiss = None
    return JudgeAgreement(
        labels=list(labels),
        n_items=len(pairs),
        n_dropped=len(judge) - len(pairs),
        tie_break=tie_break,
        kappa=bootstrap_ci(pairs, kappa_of, n_resamples, confidence, seed),
        percent_agreement=sum(m == j for m, j in pairs) / len(pairs),
        confusion=confusion_matrix(majority, verdicts, labels, with_invalid=False),
        per_rater_kappa=per_rater,
        raters_fleiss_kappa=None if fleiss is None else fleiss.estimate,
        raters_fleiss_ci=fleiss,
    )


@dataclass(frozen=True)
class SwapConsistency:
    """Position-swap consistency of pairwise verdicts (see the module docstring).

    `winners[i]` is "A", "B" or "tie" for a consistent pair i (in the original (A, B) naming) and None
    for an inconsistent one. `first_position_rate` is the share of non-tie verdicts (both orders) that
    picked the item shown first; `n_inconsistent_first` / `n_inconsistent_second` count inconsistent
    pairs where the judge picked the first / second shown item both times (position bias).
    """

    n_pairs: int
    n_consistent: int
    consistency_rate: float
    first_position_rate: float
    n_inconsistent_first: int
    n_inconsistent_second: int
    winners: list[str | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def swap_consistency(verdicts_ab: Sequence[str], verdicts_ba: Sequence[str]) -> SwapConsistency:
    """Compare verdicts on (A, B) with verdicts on the swapped (B, A) presentation of the same pairs.

    Each verdict names the position the judge preferred in the order it was shown: "A" (the first shown),
    "B" (the second shown) or "tie". So on the swapped pair, "A" means the original B won.
    """
    if len(verdicts_ab) != len(verdicts_ba):
        raise ValueError(f"{len(verdicts_ab)} (A, B) verdicts for {len(verdicts_ba)} (B, A) verdicts")
    allowed = {"A", "B", "tie"}
    for v in (*verdicts_ab, *verdicts_ba):
        if v not in allowed:
            raise ValueError(f"verdict {v!r} is not one of {sorted(allowed)}")
    swap = {"A": "B", "B": "A", "tie": "tie"}
    winners: list[str | None] = []
    first_only = second_only = 0
    for ab, ba in zip(verdicts_ab, verdicts_ba, strict=True):
        if ab == swap[ba]:
            winners.append(ab)
        else:
            winners.append(None)
            if ab == ba == "A":
                first_only += 1
            elif ab == ba == "B":
                second_only += 1
    n = len(winners)
    decided = [v for v in (*verdicts_ab, *verdicts_ba) if v != "tie"]
    n_consistent = sum(w is not None for w in winners)
    return SwapConsistency(
        n_pairs=n,
        n_consistent=n_consistent,
        consistency_rate=n_consistent / n if n else float("nan"),
        first_position_rate=sum(v == "A" for v in decided) / len(decided) if decided else float("nan"),
        n_inconsistent_first=first_only,
        n_inconsistent_second=second_only,
        winners=winners,
    )
