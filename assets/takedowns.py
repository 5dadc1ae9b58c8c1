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

Besides their owners (raw, embeddings, assignments), this asset is the only writer of those
tables, and it only deletes. The subsets depend on it: automation refreshes them after each
run, refilling every affected leaf from the same leaf. A re-delivered taken-down item is
quarantined by raw ("taken down: ..."), so it never comes back.
"""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from curation import naming
from curation.landing import TAKEDOWNS_FOLDER
from curation.pools import PoolConfig
from curation.sql import in_list
from curation.subsets import stored_tables
from curation.takedowns import (
    CHUNK,
    PURGED_KINDS,
    mark_applied,
    parse_takedown_file,
    purge_taken_down,
    record_content_keys,
    record_takedowns,
    taken_down_ids,
    text_content_keys,
)
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage


class TakedownsConfig(Config):
    files: list[str] = []  # names under <prefix>/_takedowns/ to record first


def retired_subset_kinds(db, pool: PoolConfig) -> list[str]:
    """Table kinds (`subset_<name>`) of subsets this pool stored but no longer configures:
    nothing refreshes them, so a takedown purges them directly."""
    prefix = naming.table(pool.name, "subset_")
    configured = {naming.table(pool.name, f"subset_{s.name}") for s in pool.subsets}
    return sorted(name[len(naming.table(pool.name, "")):] for name in stored_tables(db)
                  if name.startswith(prefix) and name not in configured)


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
            done = record_takedowns(db, pool.name, rows, by=f"file:{TAKEDOWNS_FOLDER}/{name}")
            recorded += done["recorded"]
            context.log.info(f"takedown file {name}: {done['recorded']} new audit rows "
                             f"({done['items']} items)")
        ids = taken_down_ids(db, pool.name).to_pylist()
        # the texts' content keys, read before their rows go: a re-delivery of the same text
        # in another container (another id) is refused by raw too
        contents = 0
        for start in range(0, len(ids), CHUNK):
            raw_rows = lancedb.read(pool.table("raw"), ["item_id", "uri", "source"],
                                    where=in_list("item_id", ids[start:start + CHUNK]))
            if raw_rows is not None and raw_rows.num_rows:
                contents += record_content_keys(db, pool.name, text_content_keys(
                    raw_rows, storage.read_bytes, pool.modality))
        retired = retired_subset_kinds(db, pool)
        purged = purge_taken_down(db, pool.name, ids, kinds=(*PURGED_KINDS, *retired))
        applied = mark_applied(db, pool.name, context.run.run_id)  # after the purge only
        context.log.info(f"pool {pool.name}: {len(ids)} items taken down; deleted "
                         + ", ".join(f"{k} {v['deleted']}" for k, v in purged.items()))
        audit = lancedb.open(pool.table("takedowns"))
        return MaterializeResult(metadata={
            "files": MetadataValue.json(list(config.files)),
            "recorded_from_files": recorded,
            "pending_applied": applied,
            "taken_down_items": len(ids),
            "content_keys_recorded": contents,
            "retired_subsets_purged": MetadataValue.json(sorted(retired)),
            **{f"deleted_{k}": v["deleted"] for k, v in purged.items()},
            "table_versions": MetadataValue.json(
                {pool.table(k): v["version"] for k, v in purged.items()}),
            "versions_removed": MetadataValue.json(
                {pool.table(k): v["versions_removed"] for k, v in purged.items()}),
            "lancedb_table": pool.table("takedowns"),
            "lancedb_version": audit.version if audit is not None else 0,
        })

    return takedowns
