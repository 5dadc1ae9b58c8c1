"""`<pool>/embeddings`, one partition per drop: one vector per ingested item, in LanceDB.

Precomputed vectors are read from the drop's parquet files; images and texts go through the
pool's embedder resource (`embed_items(items) -> (vectors, quarantined)`, `identity()`).
Rows that cannot be used (NaN/Inf, wrong dimension, embedder failure) go to the quarantine table
with stage "embeddings"; the rest replace this drop's rows in one merge_insert commit, so a
re-run or a crash never leaves duplicates. Blocking checks: dimension, finite values, unique ids.
"""

import hashlib
import json
from collections import Counter

import numpy as np
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

from curation.pools import PoolConfig
from curation_dags.automation import PER_DROP
from curation_dags.partitions import drops_partitions
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .raw import checked_drop, write_quarantine
from .tables import in_list, sql_str, table_dim, vector_array, vectors_of

CHECKS = ("dimension", "finite", "unique_ids")


def embedder_key(pool: PoolConfig) -> str:
    return f"{pool.name}_embedder"


def _precomputed(storage: LandingStorage, raw_rows) -> tuple[list[int], list, list[str]]:
    """Vectors of the raw rows, read back from their parquet files: (row indices, vectors
    as lists or None, reasons)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sources = raw_rows["source"].to_pylist()
    rows = raw_rows["row"].to_pylist()
    vectors: list = [None] * len(rows)
    reasons = [""] * len(rows)
    for source in sorted(set(sources)):
        wanted = [i for i, s in enumerate(sources) if s == source]
        try:
            column = pq.read_table(pa.BufferReader(storage.read_bytes(source)), columns=["vector"])
            picked = column.column("vector").take(pa.array([rows[i] for i in wanted]))
            values = picked.to_pylist()
        except Exception as exc:
            for i in wanted:
                reasons[i] = f"vector unreadable: {type(exc).__name__}"
            continue
        for i, v in zip(wanted, values, strict=True):
            vectors[i] = v
    return list(range(len(rows))), vectors, reasons


def build_embeddings_asset(pool: PoolConfig):
    key = [pool.name, "embeddings"]
    resource_keys = {"landing", "lancedb"}
    if pool.modality != "vectors":
        resource_keys.add(embedder_key(pool))

    @asset(
        key=key,
        deps=[[pool.name, "raw"]],
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        required_resource_keys=resource_keys,
        automation_condition=PER_DROP,
        check_specs=[AssetCheckSpec(name, asset=key, blocking=True) for name in CHECKS],
        description=f"One vector per ingested item of pool {pool.name!r}, per drop.",
    )
    def embeddings(context: AssetExecutionContext) -> MaterializeResult:
        import pyarrow as pa

        drop = checked_drop(context)
        lancedb: LanceDBResource = context.resources.lancedb
        storage: LandingStorage = context.resources.landing.child(pool.prefix)
        scope = f"drop = {sql_str(drop)}"
        raw_rows = lancedb.read(
            pool.table("raw"), ["item_id", "uri", "source", "row"], where=scope
        )
        if raw_rows is None:
            raise Failure(description=f"no raw table for pool {pool.name}: materialise raw first")
        ids, uris = raw_rows["item_id"].to_pylist(), raw_rows["uri"].to_pylist()
        existing = lancedb.open(pool.table("embeddings"))

        if pool.modality == "vectors":
            _, values, reasons = _precomputed(storage, raw_rows)
            identity = {"model": pool.embedder.model, "source": "precomputed parquet"}
        else:
            embedder = getattr(context.resources, embedder_key(pool))
            if not hasattr(embedder, "get_embedder"):
                raise Failure(description=f"embedder for pool {pool.name} unavailable: {embedder}")
            vectors_by_uri, bad_reason, identity = _embed(embedder, storage, uris)
            reasons = [bad_reason.get(u, "" if u in vectors_by_uri else "not embedded")
                       for u in uris]
            values = [vectors_by_uri.get(u) for u in uris]

        lengths = Counter(len(v) for v, r in zip(values, reasons, strict=True) if not r)
        dim = pool.dim or table_dim(existing) or (lengths.most_common(1)[0][0] if lengths else None)
        keep: list[int] = []
        for i, v in enumerate(values):
            if reasons[i]:
                continue
            if len(v) != dim:
                reasons[i] = f"wrong dimension: {len(v)} values, the pool has {dim}"
            elif not np.isfinite(np.asarray(v, dtype=np.float64)).all():
                reasons[i] = "vector holds NaN or Inf"
            else:
                keep.append(i)
        quarantined = [(uris[i], reasons[i]) for i in range(len(ids)) if reasons[i]]
        write_quarantine(lancedb, pool, drop, "embeddings", quarantined,
                         ids=[ids[i] for i in range(len(ids)) if reasons[i]])

        model_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        x = np.asarray([values[i] for i in keep], dtype=np.float32).reshape(len(keep), dim or 0)
        rows = pa.table({
            "item_id": pa.array([ids[i] for i in keep], pa.string()),
            "drop": pa.array([drop] * len(keep), pa.string()),
            "uri": pa.array([uris[i] for i in keep], pa.string()),
            "vector": vector_array(x) if dim else pa.array([], pa.list_(pa.float32(), 1)),
            "model": pa.array([identity.get("model", "")] * len(keep), pa.string()),
            "model_hash": pa.array([model_hash[:16]] * len(keep), pa.string()),
        })
        table = existing
        if dim:
            table = lancedb.replace_rows(pool.table("embeddings"), rows, "item_id", scope)
        checks = _checks(table, drop, dim, key)
        return MaterializeResult(
            metadata={
                "raw_items": len(ids),
                "embedded": len(keep),
                "quarantined": len(quarantined),
                "quarantine_reasons": MetadataValue.json(
                    dict(Counter(r.split(":")[0] for _, r in quarantined))
                ),
                "dim": dim or 0,
                "model_identity": MetadataValue.json(identity),
                "model_hash": model_hash[:16],
                "lancedb_table": pool.table("embeddings"),
                "lancedb_version": table.version if table is not None else 0,
                "pool_items": table.count_rows() if table is not None else 0,
            },
            check_results=checks,
        )

    return embeddings


def _embed(embedder, storage: LandingStorage, uris: list[str]):
    """Embed raw items through the pool's embedder: ({uri: vector}, {uri: reason}, identity)."""
    from curation.embedding.base import Item

    items = [Item(ref=u, data=_load_item(storage, u)) for u in uris]
    result = embedder.get_embedder().embed(items)
    vectors = {ref: v for ref, v in zip(result.refs, np.asarray(result.vectors), strict=True)}
    return vectors, dict(result.quarantined), result.identity


def _load_item(storage: LandingStorage, uri: str) -> bytes:
    """Bytes of one item: a whole file, or one line of a .jsonl file (uri ends in #L<n>)."""
    path, _, line = uri.partition("#L")
    if not line:
        return storage.read_bytes(uri)
    text = storage.read_bytes(path).decode("utf-8", errors="replace").splitlines()[int(line) - 1]
    return json.loads(text)["text"].encode()


def _checks(table, drop: str, dim: int | None, key) -> list[AssetCheckResult]:
    """Read back this drop's stored rows and check them (what downstream will read)."""
    if table is None or not dim:
        return [AssetCheckResult(check_name=c, passed=True, metadata={"rows": 0}) for c in CHECKS]
    stored = table.search().where(f"drop = {sql_str(drop)}").select(["item_id", "vector"])
    stored = stored.limit(None).to_arrow()
    x = vectors_of(stored["vector"]) if stored.num_rows else np.zeros((0, dim), np.float32)
    ids = stored["item_id"].to_pylist()
    elsewhere = 0
    for start in range(0, len(ids), 2000):
        where = f"{in_list('item_id', ids[start:start + 2000])} AND drop != {sql_str(drop)}"
        elsewhere += table.count_rows(where)
    n_bad = int((~np.isfinite(x).all(axis=1)).sum())
    dups = len(ids) - len(set(ids)) + elsewhere
    error = AssetCheckSeverity.ERROR
    return [
        AssetCheckResult(check_name="dimension", passed=x.shape[1] == dim == table_dim(table),
                         severity=error, metadata={"dim": int(x.shape[1]), "expected": dim}),
        AssetCheckResult(check_name="finite", passed=n_bad == 0, severity=error,
                         metadata={"non_finite_rows": n_bad}),
        AssetCheckResult(check_name="unique_ids", passed=dups == 0, severity=error,
                         metadata={"duplicate_ids": dups, "in_other_drops": elsewhere}),
    ]
