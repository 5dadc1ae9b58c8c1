"""The pool's cluster tree (pure core: no Dagster): one fit on a sample of the embedded items,
or the latest saved fit reused, and the rows of each level's table.

One fit of the tree is one run of the algorithm (level l clusters level l-1's centroids, one
seeded RNG drives every level), so `fit_pool` fits every level at once and saves the record in
`<pool>__fits`; `level_rows` serves any level from that record. Level 1 fits on a sample read
by row id (`PoolStore.sample_vectors`: `fit_sample_size`, or a few hundred points per
centroid), never the whole table, and the fit assigns no item (the assignments asset does,
once): its memory is a function of the config (`fit_memory_bound`, docs/SCALE.md).
Reproducible and order-free: the sample is picked by a keyed hash of item ids and read in
item-id order. A fit whose inputs (drops, model, config) equal the
latest saved fit's reuses it, so a run that crashed after saving its fit heals on the retry.
Top-level clusters keep their ids across refits where a match exists (curation.drift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import HierarchyConfig
from .hierarchy import Hierarchy
from .store import READER_RESERVE, TAKE_ROWS, FitRecord, PoolStore, fit_signature, rows

# Copies of the sample a fit holds at its peak: the sample, its sorted copy and the float64
# sums of `kmeans.centroid_means`, the seeding's transposed copy (measured: docs/SCALE.md).
FIT_COPIES = 4


class FitRefused(ValueError):
    """The pool's embeddings cannot be fitted as they are (nothing was written)."""


@dataclass
class FitOutcome:
    record: FitRecord
    reused: bool  # the latest saved fit covered these inputs: nothing was fitted
    fits_version: int | None  # version of `<pool>__fits` written (None when reused)
    pool_items: int


def fit_pool(store: PoolStore, config: HierarchyConfig, fit: Callable, reason: str,
             force: bool = False, warm_start: bool = True) -> FitOutcome:
    """Fit the tree on the pool's level-1 sample (`fit(x, config, init_centroids)` ->
    FitResult) and save it, unless the latest fit has the same signature and `force` is off."""
    counts = store.drop_counts("embeddings")
    hashes = store.model_hash_counts()
    total = sum(counts.values())
    if len(hashes) > 1:
        raise FitRefused(f"pool {store.pool_name}: embeddings mix {len(hashes)} models "
                         f"({hashes}); re-embed every drop with one model before fitting")
    if total < config.n_clusters[0]:
        raise FitRefused(f"pool {store.pool_name}: {total} embedded items, a fit needs at least "
                         f"{config.n_clusters[0]} (the level-1 cluster count)")
    signature = fit_signature(counts, hashes, config)
    previous = store.load_fit()
    if previous is not None and previous.signature == signature and not force:
        return FitOutcome(previous, True, None, total)
    record = fit_record(store, config, fit, previous, next(iter(hashes), ""), counts,
                        signature, reason, warm_start)
    return FitOutcome(record, False, store.save_fit(record), total)


def fit_record(store: PoolStore, config: HierarchyConfig, fit: Callable,
               previous: FitRecord | None, model_hash: str, counts: dict[str, int],
               signature: str, reason: str, warm_start: bool = True) -> FitRecord:
    """A new fit on the pool's level-1 sample (`HierarchyConfig.pool_fit_sample`: a seeded,
    order-free sample read by row id, in item-id order), not saved. No item is assigned
    here: the assignments asset places every item once. Memory: `fit_memory_bound`."""
    from .drift import stable_refit

    sample = config.pool_fit_sample(sum(counts.values()))
    _, x, n_items = store.sample_vectors("embeddings", sample, config.seed)
    init = None
    if (previous is not None and warm_start
            and (not previous.model_hash or previous.model_hash == model_hash)):
        shapes = [(k, x.shape[1]) for k in config.n_clusters]
        if [c.shape for c in previous.hierarchy.centroids] == shapes:
            init = previous.hierarchy.centroids
    result = fit(x, config, init_centroids=init)
    del x
    drift = {}
    if previous is not None and previous.hierarchy.centroids[-1].shape[1] == \
            result.hierarchy.centroids[-1].shape[1]:
        result, drift = stable_refit(previous.hierarchy, result,
                                     old_sizes=np.asarray(previous.sizes[-1]))
    return FitRecord(
        fit_version=(previous.fit_version + 1) if previous else 1,
        hierarchy=result.hierarchy,
        n_items=n_items,
        mean_distance=float(result.assignment.distance.mean()),  # over the sample
        drops=dict(counts),
        sizes=pool_sizes(result.hierarchy, result.levels[0].sizes, n_items),
        report=[{"objective": r.objective, "n_empty_reseeded": r.n_empty_reseeded,
                 "seconds": r.seconds, "warm_start": init is not None, "n_points": r.n_points}
                for r in result.levels],
        drift=drift,
        model_hash=model_hash,
        signature=signature,
        reason=reason,
    )


def pool_sizes(hierarchy: Hierarchy, sample_sizes: np.ndarray, n_items: int) -> list[list[int]]:
    """Items beneath each cluster of every level, estimated from the level-1 sample's counts
    scaled to the pool (exact when the sample is the whole pool): largest remainders, so each
    level sums to `n_items`; a parent holds the sum of its children. The exact counts are the
    assignments' (`<pool>__assignments`), once they ran."""
    sample_sizes = np.asarray(sample_sizes, np.int64)
    total = max(int(sample_sizes.sum()), 1)
    scaled = sample_sizes * (n_items / total)
    leaf = np.floor(scaled).astype(np.int64)
    short = n_items - int(leaf.sum()) if sample_sizes.sum() else 0
    leaf[np.argsort(-(scaled - leaf), kind="stable")[:short]] += 1
    sizes = [leaf]
    for parents, k in zip(hierarchy.parents, hierarchy.config.n_clusters[1:], strict=True):
        sizes.append(np.bincount(parents, weights=sizes[-1], minlength=k).astype(np.int64))
    return [s.tolist() for s in sizes]


def fit_memory_bound(config: HierarchyConfig, dim: int, n_items: int) -> dict:
    """The fit run's memory bound, a function of the config alone (the pool's size enters
    only while the pool is smaller than the sample): see docs/SCALE.md."""
    sample = config.pool_fit_sample(n_items)
    vectors = sample * dim * 4
    centroids = sum(config.n_clusters) * dim * 4
    return {
        "formula": f"{FIT_COPIES} x sample x d x 4 B + take x d x 4 B + sum(k) x d x 4 B "
                   f"+ reader reserve",
        "sample": sample, "take": TAKE_ROWS, "dim": dim, "reader_reserve_mib": READER_RESERVE >> 20,
        "bytes": FIT_COPIES * vectors + TAKE_ROWS * dim * 4 + centroids + READER_RESERVE,
    }


def level_rows(fit: FitRecord, level: int):
    """Rows of `<pool>__level_<l>`: one per cluster (id, parent, items beneath, children,
    centroid) of the fit's level l."""
    h = fit.hierarchy
    k = h.centroids[level - 1].shape[0]
    parent = h.parents[level - 1] if level < h.n_levels else np.full(k, -1)
    children = (np.bincount(h.parents[level - 2], minlength=k) if level > 1
                else np.zeros(k, np.int32))
    return rows("level", {
        "cluster_id": np.arange(k, dtype=np.int32),
        "parent": parent.astype(np.int32),
        "size": np.asarray(fit.sizes[level - 1], dtype=np.int64),
        "n_children": children.astype(np.int32),
        "vector": h.centroids[level - 1],
        "fit_version": np.full(k, fit.fit_version, np.int64),
    }, dim=h.centroids[level - 1].shape[1])


def memory_metadata(bound: dict) -> dict:
    """A run's memory bound as metadata: its formula of the config, the values, MiB."""
    values = ", ".join(f"{k} = {v}" for k, v in bound.items() if k not in ("formula", "bytes"))
    return {"memory_bound": f"{bound['formula']} ({values})",
            "memory_bound_mib": round(bound["bytes"] / 2**20, 1)}
