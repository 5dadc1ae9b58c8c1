"""`<pool>/level_1` ... `<pool>/level_L`: the cluster tree, one asset per k-means level.

Why the fit lives in level_1 alone: one fit of the tree is one run of the algorithm (level l
clusters level l-1's centroids, one seeded RNG drives every level's resampling), so splitting
it across assets would need intermediate state and would not reproduce. level_1 fits every
level, stores the tree in `<pool>__fits` and serves its own level; level_l > 1 materialise
their level's table (cluster id, parent, items beneath, centroid) from that fit record.

The tree is refitted only when it is asked for: by the pool's refit sensor when the refit
policy says so (curation.refit), by the refit schedule, or by a user in the UI. A drop that
does not need a refit never runs these assets, so they are materialised once per fit and
their history in the UI is the history of the fits.

Lineage: level_1 is drawn downstream of `embeddings`, but through a partition mapping to no
drop partition: each new drop would otherwise mark the tree "unsynced" although the policy
decided it still serves (the drop is assigned to it). Freshness of the tree follows the refit
policy; the fit's metadata says which drops it saw.

Bounded memory: level 1 fits on a sample read by row id (the pool's `fit_sample_size`, or a
few hundred points per centroid, capped), never the whole table, and assigns no item (the
assignments asset does, once); the levels above cluster centroids. The run's memory bound, a
formula of the config, is in level_1's metadata (`memory_bound`, docs/SCALE.md); the level
tables' sizes are the sample's counts scaled to the pool (exact when the sample is the pool).

Reproducible and order-free: the sample is picked by a keyed hash of item ids and read in
item-id order, so the same items give the same tree whatever order the drops arrived in and
however often one was re-run. A
fit whose inputs (drops, model, config) equal the latest saved fit's reuses it, so a run that
crashed after saving its fit heals on the retry without fitting again. The fit and the level
rows are the core's (`curation.tree`); these assets are wiring plus metadata.
"""

from typing import Literal

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    SpecificPartitionsPartitionMapping,
    asset,
    asset_check,
)

from curation.metrics import cluster_size_stats, size_histogram
from curation.naming import REASON_TAG, REFIT_TAG
from curation.pools import PoolConfig
from curation.store import FitRecord, PoolStore
from curation.tree import FitRefused, fit_memory_bound, fit_pool, level_rows, memory_metadata
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .automation import FOLLOW
from .keys import asset_key, level_keys
from .retries import retried_on_storage_errors


class RefitConfig(Config):
    refit: Literal["auto", "force"] = "auto"


def write_level(store: PoolStore, fit: FitRecord, level: int):
    """`<pool>__level_<l>` from the fit record; returns (table, metadata)."""
    table = store.write_level(level, level_rows(fit, level))
    sizes = np.asarray(fit.sizes[level - 1], dtype=np.int64)
    report = fit.report[level - 1]
    stats = cluster_size_stats(sizes)
    metadata = {
        "fit_version": fit.fit_version,
        "n_clusters": fit.hierarchy.centroids[level - 1].shape[0],
        "empty_clusters": stats["empty"],
        "entropy": stats["entropy"],
        "effective_clusters": stats["effective_clusters"],
        "largest_cluster": stats["max"],
        "size_stats": MetadataValue.json(stats),
        "size_histogram": MetadataValue.json(size_histogram(sizes)),
        # level 1: the items of the fit's sample; above: the centroids of the level below
        **({"points_clustered": report["n_points"]} if "n_points" in report else {}),
        "objective_final": float(report["objective"][-1]) if report["objective"] else 0.0,
        "objective_steps": len(report["objective"]),
        "empty_reseeded": report["n_empty_reseeded"],
        "fit_seconds": report["seconds"],
        "lancedb_table": store.name(f"level_{level}"),
        "lancedb_version": table.version,
    }
    return table, metadata


def build_level_assets(pool: PoolConfig, gpu_op_tags: dict[str, str] | None = None) -> list:
    """`gpu_op_tags` go on level_1, the fit (faiss on a GPU where there is one)."""
    keys = level_keys(pool)

    @asset(
        key=keys[0],
        deps=[AssetDep(asset_key(pool, "embeddings"),
                       partition_mapping=SpecificPartitionsPartitionMapping([]))],
        group_name=pool.name,
        kinds={"lancedb"},
        op_tags=gpu_op_tags or {},
        description="Fits the whole tree on a sample of the embedded items (asked for by the "
        "refit sensor, the refit schedule or a user); serves level 1.",
    )
    @retried_on_storage_errors
    def level_1(
        context: AssetExecutionContext,
        config: RefitConfig,
        lancedb: LanceDBResource,
        clustering: ClusteringResource,
    ) -> MaterializeResult:
        force = config.refit == "force" or context.run.tags.get(REFIT_TAG) == "force"
        reason = context.run.tags.get(REASON_TAG) or ("forced" if force else "asked for")
        store = lancedb.store(pool.name)
        try:
            out = fit_pool(store, pool.hierarchy, clustering.fit, reason, force,
                           pool.refit.warm_start)
        except FitRefused as exc:
            raise Failure(description=str(exc)) from None
        record, reused, fits_version = out.record, out.reused, out.fits_version
        if reused:
            context.log.info(f"pool {pool.name}: fit {record.fit_version} already covers these "
                             "drops with this config: reusing it")
        _, metadata = write_level(store, record, 1)
        return MaterializeResult(
            metadata={
                **metadata,
                "reason": record.reason,
                "reused_saved_fit": reused,
                "model_hash": record.model_hash,
                "pool_items": out.pool_items,
                "drops_in_fit": len(record.drops),
                "mean_distance": record.mean_distance,
                **memory_metadata(fit_memory_bound(pool.hierarchy, record.hierarchy.dim,
                                                    out.pool_items)),
                **({"drift": MetadataValue.json(record.drift)} if record.drift else {}),
                **({"fits_table_version": fits_version} if fits_version else {}),
            },
            data_version=DataVersion(f"fit-{record.fit_version}"),
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
    @retried_on_storage_errors
    def upper_level(lancedb: LanceDBResource) -> MaterializeResult:
        store = lancedb.store(pool.name)
        fit = store.load_fit()
        if fit is None:
            raise Failure(description=f"pool {pool.name} has no fitted tree: materialise "
                          "level_1 first")
        _, metadata = write_level(store, fit, level)
        return MaterializeResult(metadata=metadata,
                                 data_version=DataVersion(f"fit-{fit.fit_version}"))

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
        table = lancedb.store(pool.name).read(pool.table(f"level_{level}"), ["size"])
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
