"""`<pool>/embeddings`, one partition per drop: one vector per ingested item, in LanceDB.

Wiring around `curation.drops.embed_drop`, which reads raw's rows of the drop (not the files
again: raw kept each text item's text and each precomputed vector's values; an image is read
at its uri by the embedder). Texts and images stream through the pool's EmbedderResource
(`embed_batches(...)`), so memory is bounded by the batch, and duplicates of earlier drops are
never embedded; only the output vectors are gathered, for one atomic write per drop. Progress
(items done, items/s) goes to the Dagster log.

Every row carries the model name and `model_hash` (the embedder's identity_version); the full
identity is in the materialisation metadata. The asset's `code_version` is the pool's embedder
config version (model, weights sha256, options that change vectors, pipeline version), so a
model change in the pools config marks every drop stale; level_1 refits once every row carries
the new model hash.

Rows that cannot be used (NaN/Inf, wrong dimension, embedder failure) go to the quarantine table
with stage "embeddings"; the rest replace this drop's rows in one merge_insert commit, so a
re-run or a crash never leaves duplicates. Blocking checks: dimension, finite values, unique ids.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation import naming
from curation.drops import DropRefused, check_stored_embeddings, embed_drop, reason_counts
from curation.embedding.base import identity_version
from curation.pools import PoolConfig
from curation.store import table_dim
from resources.storage import LandingStorage

from .keys import asset_key
from .partitions import drops_partitions
from .raw import checked_drop
from .retries import retried_on_storage_errors

CHECKS = ("dimension", "finite", "unique_ids")


def embedder_key(pool: PoolConfig) -> str:
    return naming.embedder_resource(pool.name)


def vectors_identity(pool: PoolConfig) -> dict:
    """Identity of a precomputed-vectors pool: its producer config (no model runs here)."""
    return {
        "kind": "vectors",
        "model": pool.embedder.model,
        "options": dict(pool.embedder.options),
        "dim": pool.dim,
        "source": "precomputed parquet",
    }


def embeddings_code_version(pool: PoolConfig) -> str:
    """The embeddings asset's Dagster code_version: 16 hex digits that change whenever the
    vectors would (model, weights bytes, image size, normalisation, ...); no model is loaded."""
    if pool.modality == "vectors":
        return identity_version(vectors_identity(pool))
    try:
        from curation.embedding.factory import EmbedderSpec, config_identity

        return identity_version(config_identity(EmbedderSpec(**pool.embedder_fields())))
    except Exception as exc:  # weights missing or bad options: the run fails and says why
        return "unresolved-" + identity_version(
            {"fields": pool.embedder_fields(), "error": type(exc).__name__}
        )[:8]


def build_embeddings_asset(pool: PoolConfig, gpu_op_tags: dict[str, str] | None = None):
    """`gpu_op_tags` go on a model's embeddings (image and text pools), not on precomputed
    vectors, which need no GPU."""
    key = asset_key(pool, "embeddings")
    resource_keys = {"landing", "lancedb"}
    if pool.modality != "vectors":
        resource_keys.add(embedder_key(pool))

    code_version = embeddings_code_version(pool)

    @asset(
        key=key,
        deps=[asset_key(pool, "raw")],
        code_version=code_version,
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        required_resource_keys=resource_keys,
        check_specs=[AssetCheckSpec(name, asset=key, blocking=True) for name in CHECKS],
        op_tags=(gpu_op_tags or {}) if pool.modality != "vectors" else {},
        description=f"One vector per ingested item of pool {pool.name!r}, per drop.",
    )
    @retried_on_storage_errors
    def embeddings(context: AssetExecutionContext) -> MaterializeResult:
        drop = checked_drop(context)
        embedder = None
        if pool.modality != "vectors":
            resource = getattr(context.resources, embedder_key(pool))
            if not hasattr(resource, "get_embedder"):
                raise Failure(description=f"embedder for pool {pool.name} unavailable: {resource}")
            embedder = resource.get_embedder()
        storage: LandingStorage = context.resources.landing.child(pool.prefix)
        try:
            out = embed_drop(context.resources.lancedb.store(pool.name), drop, pool.modality,
                             pool.dim, vectors_identity(pool), embedder, storage.read_bytes,
                             log=context.log.info)
        except DropRefused as exc:
            raise Failure(description=str(exc)) from None
        table = out.table
        return MaterializeResult(
            metadata={
                "raw_items": out.raw_items,
                "embedded": out.embedded,
                "taken_down_during_ingest": out.taken_down_during_ingest,
                "quarantined": len(out.quarantined),
                "quarantine_reasons": MetadataValue.json(reason_counts(out.quarantined)),
                "dim": out.dim,
                "model_identity": MetadataValue.json(out.identity),
                "model_hash": out.model_hash,
                "code_version": code_version,
                **({"items_per_s": round(out.items_per_s, 1)}
                   if out.items_per_s is not None else {}),
                "lancedb_table": pool.table("embeddings"),
                "lancedb_version": table.version if table is not None else 0,
                "pool_items": table.count_rows() if table is not None else 0,
            },
            check_results=_checks(table, drop, out.dim),
        )

    return embeddings


def _checks(table, drop: str, dim: int) -> list[AssetCheckResult]:
    """Read back this drop's stored rows and check them (what downstream will read)."""
    if table is None or not dim:
        return [AssetCheckResult(check_name=c, passed=True, metadata={"rows": 0}) for c in CHECKS]
    got = check_stored_embeddings(table, drop)
    error = AssetCheckSeverity.ERROR
    return [
        AssetCheckResult(check_name="dimension", passed=got.dim == dim == table_dim(table),
                         severity=error, metadata={"dim": got.dim, "expected": dim}),
        AssetCheckResult(check_name="finite", passed=got.non_finite_rows == 0, severity=error,
                         metadata={"non_finite_rows": got.non_finite_rows}),
        AssetCheckResult(check_name="unique_ids", passed=got.duplicate_ids == 0,
                         severity=error, metadata={"duplicate_ids": got.duplicate_ids,
                                                   "in_other_drops": got.in_other_drops}),
    ]
