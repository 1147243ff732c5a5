import numpy as np
import polars as pl
import pytest

from dagster_project.curation import clusters


def _bfs_components(n, edges):
    adj = {k: set() for k in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    label = [-1] * n
    for start in range(n):
        if label[start] >= 0:
            continue
        stack, members = [start], []
        label[start] = start
        while stack:
            x = stack.pop()
            members.append(x)
            for y in adj[x]:
                if label[y] < 0:
                    label[y] = start
                    stack.append(y)
    return label


@pytest.mark.parametrize("seed", range(5))
def test_union_find_matches_bfs(seed):
    rng = np.random.default_rng(seed)
    n = 400
    i, j = rng.integers(0, n, 300), rng.integers(0, n, 300)
    got = clusters.connected_components(n, i, j)
    assert got.tolist() == _bfs_components(n, list(zip(i.tolist(), j.tolist(), strict=True)))


def test_long_chain_joins():
    n = 10_000
    i = np.arange(n - 1)[::-1]
    assert (clusters.connected_components(n, i, i + 1) == 0).all()


def test_representatives_by_rule():
    labels = np.array([0, 0, 0, 3, 3, 5])
    assert clusters.representatives(labels).tolist() == [0, 0, 0, 3, 3, 5]
    df = pl.DataFrame({"quality": [0.1, 0.9, 0.9, None, 0.2, 1.0]})
    key = pl.Series(["a", "abc", "ab", "xyz", "x", "q"])
    longest = clusters.keep_priority(df, "longest", key)
    assert clusters.representatives(labels, longest).tolist() == [1, 1, 1, 3, 3, 5]
    highest = clusters.keep_priority(df, "highest", key, "quality")
    assert clusters.representatives(labels, highest).tolist() == [1, 1, 1, 4, 4, 5]  # tie -> first; null last
    with pytest.raises(ValueError, match="keep_column"):
        clusters.keep_priority(df, "highest", key, "nope")
