"""Balanced hierarchical sampling by water-filling (docs/METHOD.md).

Everything is vectorised over clusters: one grouped water-fill per level, so the cost is
O(items + clusters) whatever the tree's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SampleConfig


@dataclass(frozen=True)
class Selection:
    """Selected rows and how many copies of each a training loader should draw."""

    indices: np.ndarray  # unique int64 row indices, sorted
    weights: np.ndarray  # int64 copies per index, >= 1

    @property
    def size(self) -> int:
        return int(self.weights.sum())


def _group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    """For each position of a sorted group array, the position where its group starts."""
    n = sorted_groups.size
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return np.maximum.accumulate(np.where(is_start, np.arange(n), 0))


def grouped_water_fill(
    groups: np.ndarray, capacities: np.ndarray, group_quotas: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split each group's quota among its members by water-filling.

    For each group g with quota q (<= the group's total capacity): the largest integer cap c
    with sum_i min(c, cap_i) <= q; member i gets min(c, cap_i), and the remainder goes +1 to
    members chosen at random among those with room (cap_i > c).
    groups: (m,) group id of each member, 0..G-1; capacities: (m,); group_quotas: (G,).
    """
    groups = np.asarray(groups, dtype=np.int64)
    capacities = np.asarray(capacities, dtype=np.int64)
    group_quotas = np.asarray(group_quotas, dtype=np.int64)
    m = groups.size
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    totals = np.bincount(groups, weights=capacities, minlength=group_quotas.size).astype(np.int64)
    if np.any(group_quotas > totals):
        bad = int(np.argmax(group_quotas > totals))
        raise ValueError(f"group {bad} asks for {group_quotas[bad]} but holds only {totals[bad]}")
    # Members sorted by (group, capacity): f(c) = sum_i min(c, cap_i) is piecewise linear.
    order = np.lexsort((capacities, groups))
    g, cap = groups[order], capacities[order]
    start = _group_starts(g)
    csum = np.cumsum(cap)
    before = csum - cap - np.where(start > 0, csum[start - 1], 0)  # sum of smaller members
    rank = np.arange(m) - start
    group_size = np.bincount(g, minlength=group_quotas.size)
    remaining = group_size[g] - rank  # members from this one to the group's end
    q = group_quotas[g]
    # Member j is saturated iff f(cap_j) = before_j + remaining_j * cap_j <= q.
    saturated = before + remaining * cap <= q
    n_saturated = np.bincount(g, weights=saturated, minlength=group_quotas.size).astype(np.int64)
    sat_sum = np.bincount(g, weights=np.where(saturated, cap, 0), minlength=group_quotas.size)
    sat_sum = sat_sum.astype(np.int64)
    open_members = group_size - n_saturated
    level = np.where(open_members > 0, (group_quotas - sat_sum) // np.maximum(open_members, 1), 0)
    quota_sorted = np.where(saturated, cap, level[g])
    remainder = group_quotas - np.bincount(g, weights=quota_sorted, minlength=group_quotas.size)
    remainder = np.rint(remainder).astype(np.int64)
    # +1 to `remainder` members of each group picked at random among those with room.
    has_room = ~saturated  # open members all have cap > level
    key = rng.random(m)
    key[~has_room] = 2.0  # rooms-less members sort last
    order2 = np.lexsort((key, g))
    rank2 = np.arange(m) - _group_starts(g[order2])
    bump = np.zeros(m, dtype=np.int64)
    bump[order2] = (rank2 < remainder[g[order2]]) & has_room[order2]
    quota_sorted = quota_sorted + bump
    quotas = np.empty(m, dtype=np.int64)
    quotas[order] = quota_sorted
    return quotas


def water_fill(capacities: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Split one quota among clusters of the given capacities (one group)."""
    capacities = np.asarray(capacities, dtype=np.int64)
    return grouped_water_fill(
        np.zeros(capacities.size, dtype=np.int64), capacities, np.array([quota]), rng
    )


def _dense_ids(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, dense id of each key): np.unique's result, without its O(n log n)
    sort when the keys are small integers (cluster ids), which they are."""
    top = int(key.max(initial=0)) + 1
    if top > 4 * key.size + (1 << 20):
        distinct, inverse = np.unique(key, return_inverse=True)
        return distinct, inverse.reshape(-1)
    present = np.zeros(top, dtype=bool)
    present[key] = True
    distinct = np.flatnonzero(present)
    dense = np.cumsum(present) - 1
    return distinct, dense[key]


def _validate_paths(paths: np.ndarray) -> np.ndarray:
    paths = np.asarray(paths)
    if paths.ndim == 1:
        paths = paths[:, None]
    if paths.ndim != 2 or paths.shape[1] < 1:
        raise ValueError(f"paths must be (n_items, n_levels), got shape {paths.shape}")
    if paths.shape[0] == 0:
        raise ValueError("cannot sample from an empty pool (0 items)")
    if not np.issubdtype(paths.dtype, np.integer) or paths.min() < 0:
        raise ValueError("paths must hold non-negative integer cluster ids")
    return paths.astype(np.int64, copy=False)


def sample_balanced(
    paths: np.ndarray,
    target_size: int,
    strategy: str = "random",
    seed: int = 0,
    distances: np.ndarray | None = None,
    multiplier: int = 1,
) -> Selection:
    """Select `target_size` items so that every top-level cluster gets an equal share.

    paths: (n, L) cluster id of each item at each level, column 0 = level 1 (leaves), the last
    column = the top level. distances: (n,) distance of each item to its leaf centroid, needed
    for strategy "closest". With multiplier m an item may count up to m times; the copies come
    back as weights, never as duplicate rows.
    """
    config = SampleConfig(
        target_size=target_size, strategy=strategy, seed=seed, multiplier=multiplier
    )
    paths = _validate_paths(paths)
    n, n_levels = paths.shape
    if config.target_size > n * config.multiplier:
        raise ValueError(
            f"target_size={config.target_size} exceeds what the pool can give: {n} items x "
            f"multiplier {config.multiplier} = {n * config.multiplier}; lower the target or "
            "raise the multiplier"
        )
    if config.strategy == "closest":
        if distances is None:
            raise ValueError("strategy 'closest' needs the distances of items to their centroid")
        distances = np.asarray(distances, dtype=np.float64)
        if distances.shape != (n,):
            raise ValueError(f"distances must have shape ({n},), got {distances.shape}")
        if not np.all(np.isfinite(distances)):
            raise ValueError("distances contain NaN or Inf")
    level_rngs = [
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(n_levels + 1)
    ]

    # Walk the tree top-down. `node` holds, per item, a dense id of its cluster at the
    # current level (unique per path prefix, so a repeated child id under two parents is safe).
    _, node = _dense_ids(paths[:, -1])
    capacity = np.bincount(node) * config.multiplier
    quota = water_fill(capacity, config.target_size, level_rngs[-1])
    for level in range(n_levels - 2, -1, -1):
        n_children = int(paths[:, level].max()) + 1
        child_keys, child = _dense_ids(node * n_children + paths[:, level])
        capacity = np.bincount(child) * config.multiplier
        quota = grouped_water_fill(child_keys // n_children, capacity, quota, level_rngs[level])
        node = child

    # Inside each leaf: quota // size copies for everyone, +1 for the first quota % size items
    # in random or closest-first order.
    leaf_size = np.bincount(node)
    if config.strategy == "random":
        key = level_rngs[-1].permutation(n).astype(np.float64)  # tie-free random order
    else:
        key = distances
    order = np.lexsort((np.arange(n), key, node))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - _group_starts(node[order])
    base = quota[node] // leaf_size[node]
    extra = quota[node] % leaf_size[node]
    weights = base + (rank < extra)
    indices = np.flatnonzero(weights)
    return Selection(indices=indices.astype(np.int64), weights=weights[indices].astype(np.int64))
