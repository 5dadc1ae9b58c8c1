"""`<pool>/raw`, one partition per drop: what was delivered, each item once.

Wiring around `curation.drops.ingest_drop`: every delivered item ends in exactly one place,
ingested (`<pool>__raw`) + duplicates (`<pool>__duplicates`) + quarantined
(`<pool>__quarantine`, stage "raw", with the reason; taken-down items as "taken down: ...")
= delivered. The drop's files are read and parsed once, here (`curation.items`); the raw rows
keep what the embedder needs, so `<pool>/embeddings` reads raw's rows, not the files again.

The write is insert-if-absent and ingested vs duplicate is read back after the commit
(`curation.store.PoolStore.claim_raw`): two drops sharing items never both ingest them. An
item an earlier drop delivered but whose embedding was quarantined is not a duplicate: a
corrected re-delivery takes its raw row over and is ingested.
"""

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from curation.drops import DropRefused, ingest_drop, reason_counts
from curation.landing import validate_drop_id
from curation.pools import PoolConfig
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .keys import asset_key
from .partitions import drops_partitions
from .retries import retried_on_storage_errors


def checked_drop(context: AssetExecutionContext) -> str:
    """The partition's drop id, or a Failure of this partition only (nothing is read)."""
    try:
        return validate_drop_id(context.partition_key)
    except ValueError as exc:
        raise Failure(description=f"refusing drop: {exc}") from None


def build_raw_asset(pool: PoolConfig):
    @asset(
        key=asset_key(pool, "raw"),
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        description=f"Items delivered to pool {pool.name!r}, one partition per drop.",
    )
    @retried_on_storage_errors
    def raw(
        context: AssetExecutionContext, landing: LandingStorage, lancedb: LanceDBResource
    ) -> MaterializeResult:
        drop = checked_drop(context)
        try:
            out = ingest_drop(lancedb.store(pool.name), landing.child(pool.prefix), drop,
                              pool.modality)
        except DropRefused as exc:
            raise Failure(description=str(exc)) from None
        context.log.info(out.summary(drop))
        return MaterializeResult(
            metadata={
                "delivered": out.delivered,
                "ingested": out.ingested,
                "duplicates": out.duplicates,
                "quarantined": len(out.quarantined),
                "retaken": out.retaken,
                "taken_down": out.taken_down,
                "files": out.files,
                "quarantine_reasons": MetadataValue.json(reason_counts(out.quarantined)),
                "lancedb_table": pool.table("raw"),
                "lancedb_version": out.table_version,
                "pool_items": out.pool_items,
            }
        )

    return raw
