"""`<pool>/near_duplicates`: semantic dedup inside the tree's leaves (pools with `dedup.enabled`).

The one owner of `<pool>__near_duplicates` (one row per item of the current fit: its leaf, its
representative, their cosine similarity, fit_version; `curation.dedup`). Downstream of the
assignments (after the tree), upstream of the subsets, which then sample representatives only.

An unpartitioned fan-in asset driven like the subsets (`assets.automation.fan_in_condition`:
it follows the assignments and the takedowns, and a drop's run holds it before the subsets).
Each run recomputes only the leaves whose membership changed since the table was written (a
per-leaf fingerprint of the items, compared from the tables' compact columns): a new drop costs
the leaves its items landed in (their vectors, read by row id, `leaves_recomputed`), not the
pool; a refit or a new threshold recomputes every leaf. Memory: `memory_bound` in the metadata
(curation.dedup.memory_bound: max(group_items, largest leaf) x 200 B + 5 x leaf_cap x d x 4 B +
256 x 2 x leaf_cap x 12 B + one scan batch + the LanceDB reader's reserve). A refresh after a
takedown removes the table's older versions (they hold the items).

Metadata: items removed (total, share, per level with the clusters that lost most), the
similarity histogram of the duplicates, threshold, leaf cap, fit_version, leaves and items
recomputed, the table version, `consumed_upstream_event`.
"""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from curation.dedup import dedup_pool, memory_bound
from curation.pools import PoolConfig
from curation.report import markdown_table, near_duplicates_rows
from resources.lancedb import LanceDBResource

from .automation import consumed_metadata, fan_in_condition, newest_upstream_event, refresh_state
from .keys import dedup_upstream, level_keys, near_duplicates_key
from .retries import retried_on_storage_errors


def build_dedup_asset(pool: PoolConfig):
    keys = level_keys(pool)
    key = near_duplicates_key(pool)
    config = pool.dedup

    @asset(
        key=key,
        deps=[keys[-1], *dedup_upstream(pool)],
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=fan_in_condition(ignore=keys),
        description=f"Near duplicates inside each leaf (cosine > {config.threshold}) collapsed "
        "to one representative; the subsets sample representatives only.",
    )
    @retried_on_storage_errors
    def near_duplicates(context: AssetExecutionContext,
                        lancedb: LanceDBResource) -> MaterializeResult:
        upstream = dedup_upstream(pool)
        consumed = consumed_metadata(context, upstream)  # read before any table
        takedowns_key = upstream[1]
        takedown_since = newest_upstream_event(context.instance, [takedowns_key]) > \
            refresh_state(context.instance, key, [takedowns_key]).consumed
        store = lancedb.store(pool.name)
        fit = store.load_fit()
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        out = dedup_pool(store, fit, config)
        forgotten = store.forget_older_versions("near_duplicates") if takedown_since else 0
        summary = {"threshold": out.threshold, "items": out.items, "removed": out.removed,
                   "removed_per_level": out.by_level(fit.hierarchy.parents),
                   "similarity_histogram": {"edges": out.bin_edges(),
                                            "counts": [int(c) for c in out.histogram]}}
        levels, bins = near_duplicates_rows(summary)
        return MaterializeResult(metadata={
            "items": out.items,
            "removed": out.removed,
            "removed_share": round(out.removed / max(out.items, 1), 4),
            "kept": out.items - out.removed,
            "removed_per_level": MetadataValue.json(summary["removed_per_level"]),
            "removed_per_level_table": MetadataValue.md(markdown_table(
                ["level", "removed", "clusters with duplicates", "largest share"], levels)),
            "similarity_histogram": MetadataValue.json(summary["similarity_histogram"]),
            "similarity_histogram_table": MetadataValue.md(markdown_table(
                ["cosine similarity", "duplicates"], bins)),
            "summary": MetadataValue.json(summary),
            "threshold": out.threshold,
            "leaf_cap": out.leaf_cap,
            "fit_version": out.fit_version,
            "leaves_recomputed": out.leaves_recomputed,
            "items_recomputed": out.items_recomputed,
            "groups": out.groups,
            "largest_leaf": out.largest_leaf,
            "memory_bound": memory_bound(config, fit.hierarchy.dim, out.largest_leaf),
            "versions_removed_after_takedown": forgotten,
            "lancedb_table": pool.table("near_duplicates"),
            "lancedb_version": out.table_version or 0,
            **consumed,
        })

    return near_duplicates
