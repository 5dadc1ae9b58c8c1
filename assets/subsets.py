"""`<pool>/subsets/<name>`: balanced curated views of the pool, one LanceDB table each.

One multi-asset per pool computes every subset from ONE streaming read of the assignments
table (compact columns only, `curation.subsets.select_subsets`): water-filled leaf quotas,
then bottom-k by a keyed hash of (subset seed, item_id) inside each leaf, so a subset
changes only where its leaves' quotas or members change. Only the selected rows' item_id
and uri are fetched. Rows assigned by an older fit are excluded (`stale_excluded`), as are
taken-down items (`<pool>__takedowns`; their leaves refill from the same leaf), even before
the `[pool, "takedowns"]` asset (a dependency: its runs refresh the subsets) purged them.
`stability: sticky` subsets rank their previous version's members of a leaf first.
When the pool deduplicates (`dedup.enabled`), they depend on `[pool, "near_duplicates"]` and
sample representatives only: the near duplicates of the current fit are left out
(`duplicates_excluded`), before the leaf sizes and quotas are computed.

Metadata per subset: manifest (sha256 of the sorted ids, count, config, seed, fit version,
table versions read), churn vs the previous version (left, entered, forced and fair
minimum), balance of subset vs pool over top-level clusters, the LanceDB version written,
and `consumed_upstream_event` (what the fan-in condition compares, assets.automation). A
refresh after a takedown removes the table's older versions (they hold the items).
"""

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetObservation,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from curation import naming
from curation.pools import PoolConfig
from curation.subsets import publish_subsets
from resources.lancedb import LanceDBResource

from .automation import (
    consumed_metadata,
    newest_upstream_event,
    refresh_state,
    subsets_condition,
)
from .keys import asset_key, level_keys, subset_key, subset_upstream
from .retries import retried_on_storage_errors


def balance_check(pool_balance: dict, subset_balance: dict) -> bool:
    return (subset_balance["label_entropy"] >= pool_balance["label_entropy"] - 1e-9
            and subset_balance["top1_share"] <= pool_balance["top1_share"] + 1e-9)


def not_published(context: AssetExecutionContext, pool: PoolConfig, wanted, fit_version: int,
                  gaps: dict[str, str], versions: dict[str, int]):
    """What a refresh that found its snapshot incomplete leaves instead of a subset version:
    an observation per subset saying why (the latest version stays the published one). The
    step ends without materialising, so the condition asks again once the assignments that
    complete the snapshot land (assets.automation)."""
    shown = dict(list(gaps.items())[:20])
    reason = (f"not published: {len(gaps)} drop(s) of pool {pool.name} are not all assigned "
              f"at fit {fit_version} in the snapshot read (a re-assignment or a drop's run in "
              f"flight): {', '.join(shown)}{' ...' if len(gaps) > len(shown) else ''}")
    context.log.warning(reason)
    for spec in wanted:
        yield AssetObservation(asset_key=subset_key(pool, spec.name), metadata={
            "not_published": reason,
            "incomplete_drops": MetadataValue.json(shown),
            "incomplete_drop_count": len(gaps),
            "fit_version": fit_version,
            "table_versions": MetadataValue.json(versions),
        })


def build_subsets_asset(pool: PoolConfig):
    """One multi-asset for all subsets of the pool (keys [pool, 'subsets', name])."""
    keys = level_keys(pool)
    specs = [
        AssetSpec(
            key=subset_key(pool, spec.name),
            deps=[keys[-1], *subset_upstream(pool)],
            group_name=pool.name,
            kinds={"lancedb"},
            automation_condition=subsets_condition(keys, asset_key(pool, "embeddings"),
                                                   asset_key(pool, "assignments")),
            skippable=True,
            description=f"Balanced subset {spec.name!r}: {spec.target_size} items, "
            f"{spec.strategy}, seed {spec.seed}.",
        )
        for spec in pool.subsets
    ]
    checks = [AssetCheckSpec("balance", asset=subset_key(pool, s.name)) for s in pool.subsets]

    @multi_asset(specs=specs, check_specs=checks, can_subset=True,
                 name=naming.subsets_op(pool.name))
    @retried_on_storage_errors
    def subsets(context: AssetExecutionContext, lancedb: LanceDBResource):
        # what this refresh consumes, read before any table (assets.automation)
        upstream = subset_upstream(pool)
        consumed = consumed_metadata(context, upstream)
        # a takedown applied since the previous refresh: older subset versions hold its items
        takedowns_key = upstream[1]
        newest_takedown = newest_upstream_event(context.instance, [takedowns_key])
        takedown_since = {s.name: newest_takedown > refresh_state(
            context.instance, subset_key(pool, s.name), [takedowns_key]).consumed
            for s in pool.subsets}
        selected = context.selected_asset_keys
        wanted = [s for s in pool.subsets if subset_key(pool, s.name) in selected]
        done = publish_subsets(lancedb.store(pool.name), {s.name: s for s in wanted},
                               dedup=pool.dedup.enabled, forget_older=takedown_since)
        if done.gaps:  # an incomplete snapshot: nothing published
            yield from not_published(context, pool, wanted, done.fit_version, done.gaps,
                                     done.versions)
            return
        scan, pool_balance = done.scan, done.pool_balance
        for spec in wanted:
            published = done.published[spec.name]
            result, subset_balance = published.result, published.balance
            sel = result.selection
            passed = balance_check(pool_balance, subset_balance)
            manifest = published.manifest
            change = result.churn.as_dict() if result.churn else None
            metadata = {
                "manifest_sha256": manifest["sha256"],
                "manifest": MetadataValue.json(manifest),
                "pool_size": scan.eligible,
                "assignment_rows": scan.rows,
                "selected_items": len(sel),
                "selected_with_copies": sel.size,
                "target_size": spec.target_size,
                "strategy": spec.strategy,
                "seed": spec.seed,
                "stability": spec.stability,
                "sticky_base_version": result.sticky_base or 0,
                "fit_version": done.fit_version,
                "stale_excluded": scan.stale_excluded,
                "taken_down_excluded": scan.taken_down_excluded,
                "versions_removed_after_takedown": published.versions_removed,
                "churn": MetadataValue.json(change),
                "churn_left": change["left"] if change else 0,
                "churn_entered": change["entered"] if change else len(sel),
                "churn_forced_minimum": change["forced_minimum"] if change else 0,
                "churn_fair_minimum": change["fair_minimum"] if change else 0,
                "previous_version": result.previous_version or 0,
                "top_level_entropy_pool": pool_balance["label_entropy"],
                "top_level_entropy_subset": subset_balance["label_entropy"],
                "top1_share_pool": pool_balance["top1_share"],
                "top1_share_subset": subset_balance["top1_share"],
                "balance": MetadataValue.json({"pool": pool_balance, "subset": subset_balance}),
                "lancedb_table": pool.table(f"subset_{spec.name}"),
                "lancedb_version": published.table_version,
                "assignments_version": scan.assignments_version,
                **({"duplicates_excluded": scan.duplicates_excluded,
                    "near_duplicates_version": done.near_duplicates_version}
                   if pool.dedup.enabled else {}),
                **consumed,
            }
            check_key = AssetCheckKey(subset_key(pool, spec.name), "balance")
            yield MaterializeResult(
                asset_key=subset_key(pool, spec.name),
                metadata=metadata,
                check_results=[] if check_key not in context.selected_asset_check_keys else [
                    AssetCheckResult(
                    asset_key=subset_key(pool, spec.name),
                    check_name="balance", passed=bool(passed),
                    severity=AssetCheckSeverity.WARN,
                    metadata={"entropy_pool": pool_balance["label_entropy"],
                              "entropy_subset": subset_balance["label_entropy"],
                              "top1_share_pool": pool_balance["top1_share"],
                              "top1_share_subset": subset_balance["top1_share"]},
                    )],
            )

    return subsets
