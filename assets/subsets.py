"""`<pool>/subsets/<name>`: balanced curated views of the pool, one LanceDB table each.

Reads the assignments of every item (a few int columns and a distance per item: streaming
from LanceDB, never through the IO manager), samples top-down with water-filling, writes
item_id, uri, cluster path and weight. Metadata: manifest hash (sha256 of the sorted selected
item ids), balance of the subset vs the pool over top-level clusters.
"""

import hashlib

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation.metrics import kl_to_uniform, selection_label_stats
from curation.pools import PoolConfig, SubsetSpec
from curation.sampling import sample_balanced
from curation_dags.automation import subsets_condition
from resources.lancedb import LanceDBResource

from .levels import level_keys
from .tables import canonical_order, load_fit


def manifest_hash(item_ids) -> str:
    return hashlib.sha256("\n".join(sorted(item_ids)).encode()).hexdigest()


def current_assignments(lancedb: LanceDBResource, pool, fit):
    """(item_id, uri, paths (n, L), distance, rows excluded) of every item assigned to the
    current tree, in item-id order (the sample must not depend on storage order). Rows of an
    older fit are excluded: their partitions are being re-assigned after a refit."""
    n_levels = fit.hierarchy.n_levels
    level_cols = [f"level_{lv}" for lv in range(1, n_levels + 1)]
    table = lancedb.read(pool.table("assignments"),
                         ["item_id", "uri", "distance", *level_cols],
                         where=f"fit_version = {int(fit.fit_version)}")
    if table is None or table.num_rows == 0:
        return [], [], np.zeros((0, n_levels), np.int64), np.zeros(0, np.float32), 0
    excluded = lancedb.open(pool.table("assignments")).count_rows() - table.num_rows
    table = table.take(canonical_order(table["item_id"]))
    ids = table["item_id"].to_pylist()
    uris = table["uri"].to_pylist()
    paths = np.stack([table[c].to_numpy() for c in level_cols], axis=1).astype(np.int64)
    distance = table["distance"].to_numpy().astype(np.float32)
    return ids, uris, paths, distance, int(excluded)


def balance(paths: np.ndarray, weights: np.ndarray | None, n_top: int) -> dict:
    top = paths[:, -1]
    stats = selection_label_stats(top, weights)
    counts = np.bincount(top, weights=weights, minlength=n_top)
    stats["kl_to_uniform"] = kl_to_uniform(np.repeat(np.arange(n_top), counts.astype(np.int64)),
                                           n_top) if counts.sum() else 0.0
    return stats


def build_subset_asset(pool: PoolConfig, spec: SubsetSpec):
    key = [pool.name, "subsets", spec.name]
    keys = level_keys(pool)

    @asset(
        key=key,
        deps=[keys[-1], [pool.name, "assignments"]],
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=subsets_condition(keys),
        check_specs=[AssetCheckSpec("balance", asset=key)],
        description=f"Balanced subset {spec.name!r}: {spec.target_size} items, "
        f"{spec.strategy}, seed {spec.seed}.",
    )
    def subset(lancedb: LanceDBResource) -> MaterializeResult:
        import pyarrow as pa

        fit = load_fit(lancedb, pool)
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        ids, uris, paths, distance, stale = current_assignments(lancedb, pool, fit)
        if not ids:
            raise ValueError(f"pool {pool.name} has no assigned items yet")
        target = min(spec.target_size, len(ids) * spec.multiplier)
        selection = sample_balanced(paths, target, strategy=spec.strategy, seed=spec.seed,
                                    distances=distance, multiplier=spec.multiplier)
        idx = selection.indices
        chosen = [ids[i] for i in idx]
        rows = pa.table({
            "item_id": pa.array(chosen, pa.string()),
            "uri": pa.array([uris[i] for i in idx], pa.string()),
            "path": pa.FixedSizeListArray.from_arrays(
                pa.array(paths[idx].reshape(-1)), paths.shape[1]),
            "leaf": pa.array(paths[idx, 0]),
            "weight": pa.array(selection.weights),
        })
        table = lancedb.overwrite(pool.table(f"subset_{spec.name}"), rows)
        n_top = fit.hierarchy.centroids[-1].shape[0]
        pool_balance = balance(paths, None, n_top)
        subset_balance = balance(paths[idx], selection.weights.astype(np.float64), n_top)
        passed = (subset_balance["label_entropy"] >= pool_balance["label_entropy"] - 1e-9
                  and subset_balance["top1_share"] <= pool_balance["top1_share"] + 1e-9)
        return MaterializeResult(
            metadata={
                "manifest_sha256": manifest_hash(chosen),
                "pool_size": len(ids),
                "selected_items": len(idx),
                "selected_with_copies": int(selection.size),
                "target_size": spec.target_size,
                "strategy": spec.strategy,
                "seed": spec.seed,
                "fit_version": fit.fit_version,
                "stale_excluded": stale,
                "top_level_entropy_pool": pool_balance["label_entropy"],
                "top_level_entropy_subset": subset_balance["label_entropy"],
                "top1_share_pool": pool_balance["top1_share"],
                "top1_share_subset": subset_balance["top1_share"],
                "balance": MetadataValue.json({"pool": pool_balance, "subset": subset_balance}),
                "lancedb_table": pool.table(f"subset_{spec.name}"),
                "lancedb_version": table.version,
            },
            check_results=[AssetCheckResult(
                check_name="balance", passed=bool(passed), severity=AssetCheckSeverity.WARN,
                metadata={"entropy_pool": pool_balance["label_entropy"],
                          "entropy_subset": subset_balance["label_entropy"],
                          "top1_share_pool": pool_balance["top1_share"],
                          "top1_share_subset": subset_balance["top1_share"]},
            )],
        )

    return subset
