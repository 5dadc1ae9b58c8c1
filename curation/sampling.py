"""Water-filling, the quota split of balanced hierarchical sampling (docs/METHOD.md).

`curation.selection` splits a subset's target top-down with it (one grouped water-fill per
level, vectorised over clusters: O(clusters) whatever the tree's width) and then picks the
items of each leaf; that module is the one sampler, for `curate sample` and the platform.
"""

from __future__ import annotations

import numpy as np


def group_starts(sorted_groups: np.ndarray) -> np.ndarray:
    """For each position of a sorted group array, the position where its group starts."""
    n = sorted_groups.size
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return np.maximum.accumulate(np.where(is_start, np.arange(n), 0))


def rank_in_group(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each element's rank (0 = lowest score) among the elements of its group."""
    order = np.lexsort((scores, groups))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size) - group_starts(np.asarray(groups)[order])
    return rank


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
    start = group_starts(g)
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
    rank2 = np.arange(m) - group_starts(g[order2])
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
