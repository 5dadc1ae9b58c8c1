"""`<pool>/takedowns`: records takedown files and removes taken-down items from the pool.

Owner of `<pool>__takedowns` (audit rows: item_id, reason, at, by, run; see
`curation.takedowns`). The CLI records rows too (pending, run = ""), through the same core
function. Each run:

1. records the takedown files named in its config (`<prefix>/_takedowns/<name>`, found by
   the pool's takedowns sensor), by = `file:_takedowns/<name>`, pending;
2. deletes every taken-down item from `<pool>__raw`, `<pool>__embeddings`,
   `<pool>__assignments`, and from the tables of subsets no longer in the pool's config
   (the configured subsets are refreshed after this run);
3. only then stamps the pending rows with this run. A run killed before the end leaves its
   rows pending: the takedowns sensor asks for another run (pending rows), which deletes
   again (idempotent) and stamps them, so the audit names the run that finished the purge.
   Steps 2 and 3 are the core's `curation.takedowns.purge_and_apply`.

Besides their owners (raw, embeddings, assignments), this asset is the only writer of those
tables, and it only deletes. The subsets depend on it: automation refreshes them after each
run, refilling every affected leaf from the same leaf. A re-delivered taken-down item is
quarantined by raw ("taken down: ..."), so it never comes back.
"""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from curation.landing import TAKEDOWNS_FOLDER
from curation.pools import PoolConfig
from curation.takedowns import parse_takedown_file, purge_and_apply, record_takedowns
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .keys import asset_key
from .retries import retried_on_storage_errors


class TakedownsConfig(Config):
    files: list[str] = []  # names under <prefix>/_takedowns/ to record first


def build_takedowns_asset(pool: PoolConfig):
    @asset(
        key=asset_key(pool, "takedowns"),
        group_name=pool.name,
        kinds={"lancedb"},
        description=f"Takedowns of pool {pool.name!r}: audit table, and the items removed "
        "from raw, embeddings and assignments.",
    )
    @retried_on_storage_errors
    def takedowns(context: AssetExecutionContext, config: TakedownsConfig,
                  landing: LandingStorage, lancedb: LanceDBResource) -> MaterializeResult:
        store = lancedb.store(pool.name)
        storage = landing.child(pool.prefix)
        recorded = 0
        for name in config.files:
            uri = storage.takedown_file_uri(name)
            try:
                rows = parse_takedown_file(name, storage.read_bytes(uri))
            except (OSError, ValueError) as exc:
                raise Failure(description=f"takedown file {name!r}: {exc}") from None
            done = record_takedowns(store, rows, by=f"file:{TAKEDOWNS_FOLDER}/{name}")
            recorded += done["recorded"]
            context.log.info(f"takedown file {name}: {done['recorded']} new audit rows "
                             f"({done['items']} items)")
        out = purge_and_apply(store, context.run.run_id, [s.name for s in pool.subsets],
                              storage.read_bytes, pool.modality)
        purged = out.purged
        context.log.info(f"pool {pool.name}: {out.taken_down_items} items taken down; deleted "
                         + ", ".join(f"{k} {v['deleted']}" for k, v in purged.items()))
        return MaterializeResult(metadata={
            "files": MetadataValue.json(list(config.files)),
            "recorded_from_files": recorded,
            "pending_applied": out.applied,
            "taken_down_items": out.taken_down_items,
            "content_keys_recorded": out.content_keys_recorded,
            "retired_subsets_purged": MetadataValue.json(sorted(out.retired)),
            **{f"deleted_{k}": v["deleted"] for k, v in purged.items()},
            "table_versions": MetadataValue.json(
                {pool.table(k): v["version"] for k, v in purged.items()}),
            "versions_removed": MetadataValue.json(
                {pool.table(k): v["versions_removed"] for k, v in purged.items()}),
            "lancedb_table": pool.table("takedowns"),
            "lancedb_version": out.audit_version or 0,
        })

    return takedowns
