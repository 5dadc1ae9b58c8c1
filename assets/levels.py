"""`<pool>/level_1` ... `<pool>/level_L`: the cluster tree, one asset per k-means level.

Why the fit lives in level_1 alone: one fit of the tree is one run of the algorithm (level l
clusters level l-1's centroids, one seeded RNG drives every level's resampling), so splitting
it across assets would need intermediate state and would not reproduce. level_1 therefore
decides whether to refit, fits every level (warm-started from the previous tree), stores the
tree in `<pool>__fits`, re-assigns every item (`<pool>__assignments`, one atomic overwrite)
and serves its own level. level_l > 1 materialise their level's table (cluster id, parent,
items beneath, centroid) and metadata from that fit record: cheap, and the UI shows every
level with its histogram and lineage raw -> embeddings -> level_1 -> ... -> level_L -> subsets.

A new drop does not refit: level_1 runs (it fans in from embeddings), measures drift on the
drops added since the fit (O(added)) and skips materialising, logging the numbers as an
observation. It refits when forced by run config, or when the pool's refit policy says so.
"""

from collections import Counter
from typing import Literal

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetObservation,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from curation.metrics import cluster_size_stats, size_histogram
from curation.pools import PoolConfig
from curation_dags.automation import FAN_IN, FOLLOW
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .tables import (
    FitRecord,
    assignment_table,
    drop_counts,
    in_list,
    load_fit,
    model_hash_counts,
    save_fit,
    stream_vectors,
    vector_array,
)

REFIT_TAG = "curation/refit"  # run tag: "force" refits (set by the periodic refit schedule)


class RefitConfig(Config):
    refit: Literal["auto", "force", "never"] = "auto"


def level_keys(pool: PoolConfig) -> list[list[str]]:
    return [[pool.name, f"level_{lv}"] for lv in range(1, pool.hierarchy.n_levels + 1)]


def refit_decision(
    pool: PoolConfig,
    fit: FitRecord | None,
    counts: dict[str, int],
    mode: str,
    new_mean: float | None,
    model_hashes: dict[str, int] | None = None,
) -> tuple[bool, str, dict]:
    """(refit?, why, drift numbers) under the pool's refit policy.

    `model_hashes` counts the embeddings' rows per model hash. While they mix models (a
    backfill after a model change is re-embedding the drops) nothing is fitted, even when
    forced: a tree over two vector spaces is meaningless. Once every row carries one hash that
    differs from the fit's, the tree is refitted ("embedding model changed", no warm start).
    """
    total = sum(counts.values())
    numbers: dict = {"pool_items": total}
    model_hashes = {h: c for h, c in (model_hashes or {}).items() if c}
    if model_hashes:
        numbers["embedding_models"] = dict(sorted(model_hashes.items()))
    if fit is not None and fit.model_hash:
        numbers["fit_model_hash"] = fit.model_hash
    if len(model_hashes) > 1:
        newest = min(c for h, c in model_hashes.items() if fit is None or h != fit.model_hash)
        return (
            False,
            f"waiting for re-embedding: embeddings mix {len(model_hashes)} models "
            f"({newest} of {total} rows on a model the tree was not fitted with)",
            numbers,
        )
    if fit is None:
        if total < pool.hierarchy.n_clusters[0]:
            return (
                False,
                f"waiting for data: {total} items < {pool.hierarchy.n_clusters[0]}",
                numbers,
            )
        return mode != "never", "first fit", numbers
    added = sum(c for d, c in counts.items() if fit.drops.get(d) != c)
    numbers.update(
        items_at_fit=fit.n_items,
        added_since_fit=added,
        added_fraction=added / max(fit.n_items, 1),
        fitted_mean_distance=fit.mean_distance,
        current_fit_version=fit.fit_version,
    )
    if new_mean is not None:
        numbers.update(
            new_mean_distance=new_mean, distance_ratio=new_mean / max(fit.mean_distance, 1e-12)
        )
    policy = pool.refit
    (current_hash,) = model_hashes or {fit.model_hash: 0}
    if fit.model_hash and current_hash != fit.model_hash and total:
        if mode == "never":
            return False, "embedding model changed, but refit disabled by run config", numbers
        return True, "embedding model changed", numbers
    if mode == "force":
        return True, "forced by run config", numbers
    if mode == "never" or total == 0:
        return False, "refit disabled by run config" if total else "empty pool", numbers
    if numbers["added_fraction"] > policy.max_added_fraction:
        return True, f"added fraction > {policy.max_added_fraction}", numbers
    if new_mean is not None and numbers["distance_ratio"] > policy.max_distance_ratio:
        return True, f"distance ratio > {policy.max_distance_ratio}", numbers
    return False, "within refit policy: assign new drops to the current tree", numbers


def write_level(lancedb: LanceDBResource, pool: PoolConfig, fit: FitRecord, level: int):
    """`<pool>__level_<l>` from the fit record; returns (table, metadata)."""
    import pyarrow as pa

    h = fit.hierarchy
    k = h.centroids[level - 1].shape[0]
    parent = h.parents[level - 1] if level < h.n_levels else np.full(k, -1)
    sizes = np.asarray(fit.sizes[level - 1], dtype=np.int64)
    rows = pa.table(
        {
            "cluster_id": pa.array(np.arange(k, dtype=np.int32)),
            "parent": pa.array(parent.astype(np.int32)),
            "size": pa.array(sizes),
            "n_children": pa.array(
                np.bincount(h.parents[level - 2], minlength=k).astype(np.int32)
                if level > 1
                else np.zeros(k, np.int32)
            ),
            "vector": vector_array(h.centroids[level - 1]),
            "fit_version": pa.array(np.full(k, fit.fit_version, np.int64)),
        }
    )
    table = lancedb.overwrite(pool.table(f"level_{level}"), rows)
    report = fit.report[level - 1]
    stats = cluster_size_stats(sizes)
    metadata = {
        "fit_version": fit.fit_version,
        "n_clusters": k,
        "empty_clusters": stats["empty"],
        "entropy": stats["entropy"],
        "effective_clusters": stats["effective_clusters"],
        "largest_cluster": stats["max"],
        "size_stats": MetadataValue.json(stats),
        "size_histogram": MetadataValue.json(size_histogram(sizes)),
        "objective_final": float(report["objective"][-1]) if report["objective"] else 0.0,
        "objective_steps": len(report["objective"]),
        "empty_reseeded": report["n_empty_reseeded"],
        "fit_seconds": report["seconds"],
        "lancedb_table": pool.table(f"level_{level}"),
        "lancedb_version": table.version,
    }
    return table, metadata


def build_level_assets(pool: PoolConfig) -> list:
    keys = level_keys(pool)

    @asset(
        key=keys[0],
        deps=[[pool.name, "embeddings"]],
        group_name=pool.name,
        kinds={"lancedb"},
        output_required=False,
        automation_condition=FAN_IN,
        description="Fits (or warm-refits) the whole tree when the refit policy says so, "
        "re-assigns every item; serves level 1.",
    )
    def level_1(
        context: AssetExecutionContext,
        config: RefitConfig,
        lancedb: LanceDBResource,
        clustering: ClusteringResource,
    ):
        fit = load_fit(lancedb, pool)
        embeddings = lancedb.open(pool.table("embeddings"))
        counts = drop_counts(embeddings)
        hashes = model_hash_counts(embeddings)
        same_model = fit is not None and (not fit.model_hash or set(hashes) == {fit.model_hash})
        new_mean = None
        if same_model and embeddings is not None:
            new = [d for d, c in counts.items() if fit.drops.get(d) != c]
            if new:
                _, x = stream_vectors(embeddings, in_list("drop", new), columns=("item_id",))
                if len(x):
                    new_mean = float(clustering.assign(fit.hierarchy, x).distance.mean())
        mode = config.refit
        if mode == "auto":  # the refit schedule asks with a run tag
            mode = context.run.tags.get(REFIT_TAG, "auto")
        refit, why, numbers = refit_decision(pool, fit, counts, mode, new_mean, hashes)
        context.log.info(f"pool {pool.name}: refit={refit} ({why}) {numbers}")
        if not refit:
            context.log_event(
                AssetObservation(
                    asset_key=context.asset_key,
                    metadata={"refit": False, "reason": why, **numbers},
                )
            )
            return
        cols, x = stream_vectors(embeddings)
        init = None
        if fit is not None and pool.refit.warm_start and same_model:
            shapes = [(k, x.shape[1]) for k in pool.hierarchy.n_clusters]
            if [c.shape for c in fit.hierarchy.centroids] == shapes:
                init = fit.hierarchy.centroids
        result = clustering.fit(x, pool.hierarchy, init_centroids=init)
        del x
        record = FitRecord(
            fit_version=(fit.fit_version + 1) if fit else 1,
            hierarchy=result.hierarchy,
            n_items=len(result.assignment.leaf),
            mean_distance=float(result.assignment.distance.mean()),
            drops=dict(Counter(cols["drop"].to_pylist())),
            sizes=[r.sizes.tolist() for r in result.levels],
            report=[
                {
                    "objective": r.objective,
                    "n_empty_reseeded": r.n_empty_reseeded,
                    "seconds": r.seconds,
                }
                for r in result.levels
            ],
            model_hash=next(iter(hashes), ""),
        )
        fits_version = save_fit(lancedb, pool, record)
        rows = assignment_table(
            cols["item_id"], cols["drop"], cols["uri"], result.assignment, record.fit_version
        )
        assigned = lancedb.overwrite(pool.table("assignments"), rows)
        _, metadata = write_level(lancedb, pool, record, 1)
        yield MaterializeResult(
            metadata={
                **metadata,
                "refit": True,
                "reason": why,
                "warm_start": init is not None,
                "model_hash": record.model_hash,
                "fits_table_version": fits_version,
                "assignments_version": assigned.version,
                "items_assigned": rows.num_rows,
                **numbers,
            }
        )

    return [level_1, *(_build_upper_level(pool, keys, lv) for lv in range(2, len(keys) + 1))]


def _build_upper_level(pool: PoolConfig, keys, level: int):
    @asset(
        key=keys[level - 1],
        deps=[keys[level - 2]],
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=FOLLOW,
        description=f"Level {level} of the tree: clusters of level {level - 1}'s centroids.",
    )
    def upper_level(lancedb: LanceDBResource) -> MaterializeResult:
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        _, metadata = write_level(lancedb, pool, fit, level)
        return MaterializeResult(metadata=metadata)

    return upper_level


def build_level_checks(pool: PoolConfig) -> list:
    checks = []
    for level, key in enumerate(level_keys(pool), start=1):
        checks.append(_health_check(pool, key, level))
    return checks


def _health_check(pool: PoolConfig, key, level: int):
    @asset_check(
        asset=key,
        name="cluster_health",
        blocking=True,
        description="Empty clusters and giant clusters within the pool's health policy.",
    )
    def cluster_health(lancedb: LanceDBResource) -> AssetCheckResult:
        table = lancedb.read(pool.table(f"level_{level}"), ["size"])
        sizes = table["size"].to_numpy() if table is not None else np.zeros(0, np.int64)
        total = max(int(sizes.sum()), 1)
        empty_fraction = float((sizes == 0).mean()) if sizes.size else 1.0
        largest_share = float(sizes.max(initial=0) / total)
        policy = pool.health
        return AssetCheckResult(
            passed=bool(
                sizes.size
                and empty_fraction <= policy.max_empty_fraction
                and largest_share <= policy.max_cluster_share
            ),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "empty_fraction": empty_fraction,
                "largest_cluster_share": largest_share,
                "max_empty_fraction": policy.max_empty_fraction,
                "max_cluster_share": policy.max_cluster_share,
            },
        )

    return cluster_health
