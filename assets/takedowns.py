"""`<pool>/takedowns`: records takedown files and removes taken-down items from the pool.

Owner of `<pool>__takedowns` (audit rows: item_id, reason, at, by, run; see
`curation.takedowns`). The CLI records rows too (pending, run = ""), through the same core
function. Each run:

1. records the takedown files named in its config (`<prefix>/_takedowns/<name>`, found by
   the pool's takedowns sensor), by = `file:_takedowns/<name>`, run = this run;
2. stamps the pending rows with this run;
3. deletes every taken-down item from `<pool>__raw`, `<pool>__embeddings` and
   `<pool>__assignments`.

Besides their owners (raw, embeddings, assignments), this asset is the only writer of those
tables, and it only deletes. The subsets depend on it: automation refreshes them after each
run, refilling every affected leaf from the same leaf. A re-delivered taken-down item is
quarantined by raw ("taken down: ..."), so it never comes back.
"""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from curation import naming
from curation.landing import TAKEDOWNS_FOLDER
from curation.pools import PoolConfig
from curation.takedowns import (
    mark_applied,
    parse_takedown_file,
    purge_taken_down,
    record_takedowns,
    taken_down_ids,
)
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage


class TakedownsConfig(Config):
    files: list[str] = []  # names under <prefix>/_takedowns/ to record first


def build_takedowns_asset(pool: PoolConfig):
    @asset(
        key=naming.asset_path(pool.name, "takedowns"),
        group_name=pool.name,
        kinds={"lancedb"},
        description=f"Takedowns of pool {pool.name!r}: audit table, and the items removed "
        "from raw, embeddings and assignments.",
    )
    def takedowns(context: AssetExecutionContext, config: TakedownsConfig,
                  landing: LandingStorage, lancedb: LanceDBResource) -> MaterializeResult:
        db = lancedb.connect()
        storage = landing.child(pool.prefix)
        recorded = 0
        for name in config.files:
            uri = storage.takedown_file_uri(name)
            try:
                rows = parse_takedown_file(name, storage.read_bytes(uri))
            except (OSError, ValueError) as exc:
                raise Failure(description=f"takedown file {name!r}: {exc}") from None
            done = record_takedowns(db, pool.name, rows, by=f"file:{TAKEDOWNS_FOLDER}/{name}",
                                    run=context.run.run_id)
            recorded += done["recorded"]
            context.log.info(f"takedown file {name}: {done['recorded']} new audit rows "
                             f"({done['items']} items)")
        applied = mark_applied(db, pool.name, context.run.run_id)
        ids = taken_down_ids(db, pool.name).to_pylist()
        purged = purge_taken_down(db, pool.name, ids)
        context.log.info(f"pool {pool.name}: {len(ids)} items taken down; deleted "
                         + ", ".join(f"{k} {v['deleted']}" for k, v in purged.items()))
        audit = lancedb.open(pool.table("takedowns"))
        return MaterializeResult(metadata={
            "files": MetadataValue.json(list(config.files)),
            "recorded_from_files": recorded,
            "pending_applied": applied,
            "taken_down_items": len(ids),
            **{f"deleted_{k}": v["deleted"] for k, v in purged.items()},
            "table_versions": MetadataValue.json(
                {pool.table(k): v["version"] for k, v in purged.items()}),
            "lancedb_table": pool.table("takedowns"),
            "lancedb_version": audit.version if audit is not None else 0,
        })

    return takedowns
