"""Drift between two fits: match the new tree's top-level clusters to the previous tree's and
keep the ids of matched clusters, so that "cluster 17" means the same thing after a refit
(pure core, no Dagster).

Matching is a minimum-cost assignment (Hungarian, scipy.optimize.linear_sum_assignment) on the
Euclidean distance between top-level centroids (on normalised centroids for metric "cosine");
a pair farther apart than `max_distance` is not a match. A new cluster without a match takes
a fresh id (the smallest unused by a matched cluster): it appeared; an old id left unused
vanished. The level below keeps its own ids; only its parents array is rewritten.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .hierarchy import Assignment, FitResult, Hierarchy, normalize_rows
from .metrics import cluster_size_stats


def _top(h: Hierarchy) -> np.ndarray:
    c = np.asarray(h.centroids[-1], dtype=np.float64)
    return normalize_rows(c) if h.config.metric == "cosine" else c


def match_top_level(old: Hierarchy, new: Hierarchy,
                    max_distance: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new_idx, old_idx, distance) of matched top-level cluster pairs, by minimum total
    centroid distance; pairs farther than max_distance are dropped."""
    from scipy.optimize import linear_sum_assignment

    a, b = _top(old), _top(new)
    if a.shape[1] != b.shape[1]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    cost = np.sqrt(np.maximum(
        (b * b).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2.0 * b @ a.T, 0.0))
    rows, cols = linear_sum_assignment(cost)
    d = cost[rows, cols]
    keep = np.ones(rows.size, bool) if max_distance is None else d <= max_distance
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64), d[keep]


def relabel_top_level(new: Hierarchy, permutation: np.ndarray) -> Hierarchy:
    """The same tree with top-level cluster i renamed permutation[i] (a permutation of
    0..k-1): centroid rows reordered and the parents of the level below rewritten."""
    permutation = np.asarray(permutation, dtype=np.int64)
    k = new.centroids[-1].shape[0]
    if np.sort(permutation).tolist() != list(range(k)):
        raise ValueError(f"not a permutation of 0..{k - 1}")
    centroids = list(new.centroids)
    top = np.empty_like(centroids[-1])
    top[permutation] = centroids[-1]
    centroids[-1] = top
    parents = list(new.parents)
    if parents:
        parents[-1] = permutation[parents[-1]]
    return Hierarchy(config=new.config, centroids=centroids, parents=parents)


def _mass(h: Hierarchy, sizes: np.ndarray | None) -> np.ndarray:
    k = h.centroids[-1].shape[0]
    if sizes is None:
        return np.full(k, np.nan)
    return np.asarray(sizes, dtype=np.float64)


def stable_relabel(old: Hierarchy | None, new: Hierarchy, *,
                   old_sizes: np.ndarray | None = None, new_sizes: np.ndarray | None = None,
                   max_distance: float | None = None) -> tuple[Hierarchy, dict]:
    """Rename the new tree's top-level clusters so that each one matched to an old cluster
    keeps the old id. Returns (relabelled hierarchy, drift report).

    old_sizes / new_sizes (optional): items beneath each top-level cluster of old / new (in
    their own ids); with both, the report gives the mass that moved: half the L1 distance
    between the two size distributions (as shares) once new ids are mapped to old ones: the
    least share of items that must have changed top-level cluster (a lower bound: it sees
    sizes, not items). The report (JSON-ready):
    matched (pairs), appeared (ids, after relabelling, of new clusters without a match),
    vanished (old ids without a match), renamed ({old id: new id} of matches whose old id is
    past the new top level's size),
    mean_match_distance, max_match_distance, moved_share (or None), permutation (new id per
    fitted id), identity (bool).
    """
    k = new.centroids[-1].shape[0]
    if old is None or old.centroids[-1].shape[1] != new.centroids[-1].shape[1]:
        report = {"previous": old is not None, "matched": 0, "appeared": list(range(k)),
                  "vanished": [] if old is None else list(range(old.centroids[-1].shape[0])),
                  "renamed": {},
                  "mean_match_distance": None, "max_match_distance": None,
                  "moved_share": None, "permutation": list(range(k)), "identity": True}
        return new, report
    k_old = old.centroids[-1].shape[0]
    new_idx, old_idx, dist = match_top_level(old, new, max_distance)
    # A matched cluster keeps its old id when that id exists in the new tree (ids are centroid
    # rows, 0..k-1: when the top level shrank, a match to an old id >= k is renamed); the other
    # clusters take the free ids in increasing order.
    keep = old_idx < k
    permutation = np.full(k, -1, np.int64)
    permutation[new_idx[keep]] = old_idx[keep]
    unmatched = np.flatnonzero(permutation < 0)
    permutation[unmatched] = sorted(set(range(k)) - set(old_idx[keep].tolist()))
    relabelled = relabel_top_level(new, permutation)
    matched_new = set(permutation[new_idx].tolist())
    moved = None
    if old_sizes is not None and new_sizes is not None:
        a = np.zeros(max(k, k_old))
        b = np.zeros(max(k, k_old))
        a[:k_old] = _mass(old, old_sizes)
        b[permutation] = _mass(new, new_sizes)
        if a.sum() > 0 and b.sum() > 0:
            moved = float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())
    report = {
        "previous": True,
        "matched": int(new_idx.size),
        "appeared": sorted(set(range(k)) - matched_new),
        "vanished": sorted(set(range(k_old)) - set(old_idx.tolist())),
        "renamed": {str(o): int(permutation[n]) for n, o in zip(new_idx, old_idx, strict=True)
                    if not o < k},
        "mean_match_distance": float(dist.mean()) if dist.size else None,
        "max_match_distance": float(dist.max()) if dist.size else None,
        "moved_share": moved,
        "permutation": permutation.tolist(),
        "identity": bool(np.array_equal(permutation, np.arange(k))),
    }
    return relabelled, report


def stable_refit(old: Hierarchy | None, fit: FitResult, *, old_sizes: np.ndarray | None = None,
                 max_distance: float | None = None) -> tuple[FitResult, dict]:
    """stable_relabel applied to a whole FitResult (what a refit calls): the hierarchy, the
    items' top-level ids in the assignment paths and the top level's report (sizes, stats)
    all follow the new ids. old_sizes: items beneath each old top-level cluster (for the
    moved mass); the new sizes come from the fit."""
    top = fit.levels[-1]
    hierarchy, report = stable_relabel(old, fit.hierarchy, old_sizes=old_sizes,
                                       new_sizes=top.sizes, max_distance=max_distance)
    if report["identity"]:
        return fit, report
    permutation = np.asarray(report["permutation"], dtype=np.int64)
    paths = fit.assignment.paths.copy()
    paths[:, -1] = permutation[paths[:, -1]]
    sizes = np.zeros_like(top.sizes)
    sizes[permutation] = top.sizes
    levels = [*fit.levels[:-1], replace(top, sizes=sizes, stats=cluster_size_stats(sizes))]
    assignment = Assignment(leaf=fit.assignment.leaf, distance=fit.assignment.distance,
                            paths=paths)
    return FitResult(hierarchy=hierarchy, assignment=assignment, levels=levels), report
