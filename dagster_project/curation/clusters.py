"""Clusters of duplicates: connected components by a vectorised union-find, and one representative per
cluster chosen by a stated rule.

Union-find here is "hook and compress" over numpy arrays: every edge hooks the larger of its two roots
under the smaller (`np.minimum.at`), then pointer jumping compresses every path; repeat until each edge
joins one root. A component is labelled by its smallest row position.
"""

import numpy as np
import polars as pl

KEEP_RULES = ("first", "longest", "highest")


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Label of each of `n` nodes: the smallest node of its component under the edges (i[k], j[k])."""
    parent = np.arange(n, dtype=np.int64)
    if i.size == 0:
        return parent
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        if (ri == rj).all():
            return parent
        low = np.minimum(ri, rj)
        np.minimum.at(parent, ri, low)
        np.minimum.at(parent, rj, low)
        while True:  # pointer jumping: every node points at its root
            nxt = parent[parent]
            if (nxt == parent).all():
                break
            parent = nxt


def representatives(labels: np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """For each node, the node kept for its component: the highest `priority`, ties (and no priority)
    to the earliest node. Priorities must be comparable numbers; nulls/NaN rank lowest."""
    n = labels.size
    frame = pl.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "label": labels,
            "prio": np.zeros(n) if priority is None else np.asarray(priority, dtype=np.float64),
        }
    ).with_columns(pl.col("prio").fill_nan(None))
    best = (
        frame.sort(["label", "prio", "row"], descending=[False, True, False], nulls_last=True)
        .group_by("label", maintain_order=True)
        .agg(pl.col("row").first().alias("rep"))
    )
    rep = frame.join(best, on="label", how="left").sort("row")["rep"].to_numpy()
    return rep


def keep_priority(
    df: pl.DataFrame, rule: str, key: pl.Series, column: str | None = None
) -> np.ndarray | None:
    """The priority the `rule` gives each row: first -> None (earliest wins), longest -> key length,
    highest -> the value of `column` (higher wins)."""
    if rule == "first":
        return None
    if rule == "longest":
        return key.str.len_chars().cast(pl.Float64).to_numpy()
    if rule == "highest":
        if not column or column not in df.columns:
            raise ValueError(f"keep rule 'highest' needs keep_column naming a column; got {column!r}")
        return df[column].cast(pl.Float64, strict=False).to_numpy()
    raise ValueError(f"unknown keep rule {rule!r}; allowed: {', '.join(KEEP_RULES)}")
