"""A similarity band: keep hits whose query-passage cosine similarity lies inside [min, max].

SynthesizRR keeps retrieved passages with cosine 0.4-0.9 to their seed: below the band a passage is
off-topic, above it a near-copy of the seed (rewriting it would only paraphrase the seed).
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """Inclusive bounds on cosine similarity."""

    min: float
    max: float

    def __post_init__(self) -> None:
        if not -1.0 <= self.min <= self.max <= 1.0:
            raise ValueError(f"a band needs -1 <= min <= max <= 1, got [{self.min}, {self.max}]")


@dataclass(frozen=True)
class BandCounts:
    """How many hits the band kept, and how many it dropped below min and above max."""

    kept: int
    below: int
    above: int


def apply_band(similarities: Sequence[float], band: Band | None) -> tuple[list[bool], BandCounts]:
    """A keep-mask over `similarities` and the counts; no band keeps everything."""
    if band is None:
        return [True] * len(similarities), BandCounts(len(similarities), 0, 0)
    below = [s < band.min for s in similarities]
    above = [s > band.max for s in similarities]
    keep = [not (b or a) for b, a in zip(below, above, strict=True)]
    return keep, BandCounts(sum(keep), sum(below), sum(above))
