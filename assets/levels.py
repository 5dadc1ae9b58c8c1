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

Reproducible and order-free: the fit reads the vectors in item-id order, so the same items
give the same tree whatever order the drops arrived in and however often one was re-run. A
fit whose inputs (drops, model, config) equal the latest saved fit's reuses it, so a run that
crashed after saving its fit heals on the retry without fitting again.
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

from curation import naming
from curation.metrics import cluster_size_stats, size_histogram
from curation.naming import REASON_TAG, REFIT_TAG
from curation.pools import PoolConfig
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .automation import FOLLOW
from .tables import (
    FitRecord,
    canonical_order,
    drop_counts,
    fit_signature,
    load_fit,
    model_hash_counts,
    save_fit,
    stream_vectors,
    vector_array,
)


class RefitConfig(Config):
    refit: Literal["auto", "force"] = "auto"


def level_keys(pool: PoolConfig) -> list[list[str]]:
    return naming.level_paths(pool.name, pool.hierarchy.n_levels)


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
        deps=[AssetDep(naming.asset_path(pool.name, "embeddings"),
                       partition_mapping=SpecificPartitionsPartitionMapping([]))],
        group_name=pool.name,
        kinds={"lancedb"},
        description="Fits the whole tree over every embedded item (asked for by the refit "
        "sensor, the refit schedule or a user); serves level 1.",
    )
    def level_1(
        context: AssetExecutionContext,
        config: RefitConfig,
        lancedb: LanceDBResource,
        clustering: ClusteringResource,
    ) -> MaterializeResult:
        embeddings = lancedb.open(pool.table("embeddings"))
        counts = drop_counts(embeddings)
        hashes = model_hash_counts(embeddings)
        total = sum(counts.values())
        if len(hashes) > 1:
            raise Failure(description=(
                f"pool {pool.name}: embeddings mix {len(hashes)} models ({hashes}); re-embed "
                "every drop with one model before fitting"))
        if total < pool.hierarchy.n_clusters[0]:
            raise Failure(description=(
                f"pool {pool.name}: {total} embedded items, a fit needs at least "
                f"{pool.hierarchy.n_clusters[0]} (the level-1 cluster count)"))
        force = config.refit == "force" or context.run.tags.get(REFIT_TAG) == "force"
        reason = context.run.tags.get(REASON_TAG) or ("forced" if force else "asked for")
        signature = fit_signature(counts, hashes, pool.hierarchy)
        previous = load_fit(lancedb, pool)
        reused = previous is not None and previous.signature == signature and not force
        if reused:
            record = previous
            context.log.info(f"pool {pool.name}: fit {record.fit_version} already covers these "
                             "drops with this config: reusing it")
        else:
            record = _fit(pool, embeddings, clustering, previous, hashes, counts, signature,
                          reason)
        fits_version = save_fit(lancedb, pool, record) if not reused else None
        _, metadata = write_level(lancedb, pool, record, 1)
        return MaterializeResult(
            metadata={
                **metadata,
                "reason": record.reason,
                "reused_saved_fit": reused,
                "model_hash": record.model_hash,
                "pool_items": total,
                "drops_in_fit": len(record.drops),
                "mean_distance": record.mean_distance,
                **({"drift": MetadataValue.json(record.drift)} if record.drift else {}),
                **({"fits_table_version": fits_version} if fits_version else {}),
            },
            data_version=DataVersion(f"fit-{record.fit_version}"),
        )

    return [level_1, *(_build_upper_level(pool, keys, lv) for lv in range(2, len(keys) + 1))]


def _fit(pool, embeddings, clustering, previous, hashes, counts, signature, reason) -> FitRecord:
    cols, x = stream_vectors(embeddings, columns=("item_id",))
    order = canonical_order(cols["item_id"])
    x = x[order]
    model_hash = next(iter(hashes), "")
    init = None
    if (previous is not None and pool.refit.warm_start
            and (not previous.model_hash or previous.model_hash == model_hash)):
        shapes = [(k, x.shape[1]) for k in pool.hierarchy.n_clusters]
        if [c.shape for c in previous.hierarchy.centroids] == shapes:
            init = previous.hierarchy.centroids
    result = clustering.fit(x, pool.hierarchy, init_centroids=init)
    del x
    # Top-level clusters keep their ids across refits where a match exists (Hungarian matching
    # on centroids), so "cluster 17" means the same before and after; the drift is recorded.
    from curation.drift import stable_refit

    if previous is not None and previous.hierarchy.centroids[-1].shape[1] == \
            result.hierarchy.centroids[-1].shape[1]:
        result, drift = stable_refit(previous.hierarchy, result,
                                     old_sizes=np.asarray(previous.sizes[-1]))
    else:
        drift = {}
    return FitRecord(
        fit_version=(previous.fit_version + 1) if previous else 1,
        hierarchy=result.hierarchy,
        n_items=len(result.assignment.leaf),
        mean_distance=float(result.assignment.distance.mean()),
        drops=dict(counts),
        sizes=[r.sizes.tolist() for r in result.levels],
        report=[
            {"objective": r.objective, "n_empty_reseeded": r.n_empty_reseeded,
             "seconds": r.seconds, "warm_start": init is not None}
            for r in result.levels
        ],
        drift=drift,
        model_hash=model_hash,
        signature=signature,
        reason=reason,
    )


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
            raise Failure(description=f"pool {pool.name} has no fitted tree: materialise "
                          "level_1 first")
        _, metadata = write_level(lancedb, pool, fit, level)
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
