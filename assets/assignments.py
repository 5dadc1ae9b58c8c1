"""`<pool>/assignments`, one partition per drop: the drop's items placed in the current tree.

The one owner of `<pool>__assignments` (item_id, drop, uri, distance, level_1..L, fit_version)
and of `<pool>__assignment_log` (one row per drop and fit: items, items new since the fit and
their summed distance, items embedded with another model than the tree's). The refit sensor
decides from that log alone, in O(drops since the fit).

Nearest leaf centroid, then up the tree; no refit. A new drop costs O(drop): it reads only its
vectors, in bounded batches, and replaces only its rows (a delete and an append per drop).
After a refit every drop is requested again (the tree changed, and each drop assigned before
the tree is stale: `assets.automation.assignments_condition`), as a backfill of runs of at most
`refit.drops_per_run` drops (multi-run backfill policy) that go in parallel up to the pool's
run limit; each streams drop after drop: its memory is one batch of vectors plus one drop's
rows, never the pool (`memory_bound` in the metadata, docs/SCALE.md). A fit that commits while
a run assigns is followed by the whole run (`assign_drops` re-reads the fit version after each
drop's commit). Rows from an older fit only live until the re-assignment ends; readers tell
them by `fit_version`. The work is the core's `curation.drops.assign_drops`; this asset is
wiring plus metadata.
"""

import warnings

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation.drops import DropRefused, assign_drops, assign_memory_bound
from curation.landing import validate_drop_id
from curation.pools import PoolConfig
from curation.tree import memory_metadata
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .automation import assignments_condition
from .keys import asset_key, level_keys
from .partitions import drops_partitions
from .retries import retried_on_storage_errors


def build_assignments_asset(pool: PoolConfig):
    keys = level_keys(pool)
    with warnings.catch_warnings():  # backfill policies: beta in Dagster 1.13
        warnings.simplefilter("ignore", BetaWarning)
        return _build(pool, keys)


def _build(pool: PoolConfig, keys):
    @asset(
        key=asset_key(pool, "assignments"),
        deps=[asset_key(pool, "embeddings"), keys[-1]],
        partitions_def=drops_partitions(pool.name),
        backfill_policy=BackfillPolicy.multi_run(pool.refit.drops_per_run),
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=assignments_condition(keys[0]),
        description="Each item of the drop assigned to the current tree (leaf, then up).",
    )
    @retried_on_storage_errors
    def assignments(
        context: AssetExecutionContext, lancedb: LanceDBResource, clustering: ClusteringResource
    ) -> MaterializeResult:
        try:
            drops = sorted(validate_drop_id(k) for k in context.partition_keys)
        except ValueError as exc:
            raise Failure(description=f"refusing drop: {exc}") from None
        try:
            out = assign_drops(lancedb.store(pool.name), drops, clustering.assign)
        except DropRefused as exc:
            raise Failure(description=str(exc)) from None
        return MaterializeResult(metadata={
            "drops": len(drops),
            "items": out.items,
            "new_since_fit": out.new_since_fit,
            "other_model_items": out.other_model_items,
            "taken_down_during_ingest": out.taken_down_during_ingest,
            "fit_version": out.fit.fit_version,
            "mean_distance": out.mean_distance,
            "distance_ratio_to_fit": out.distance_ratio_to_fit,
            "per_drop": MetadataValue.json(out.per_drop) if len(drops) <= 50 else
            MetadataValue.text(f"{len(drops)} drops"),
            **memory_metadata(assign_memory_bound(
                out.fit.hierarchy.centroids[0].shape[0], out.fit.hierarchy.dim,
                max((d["items"] for d in out.per_drop.values()), default=0))),
            "lancedb_table": pool.table("assignments"),
            "lancedb_version": out.table_version,
        })

    return assignments
