"""`<pool>/embeddings`, one partition per drop: one vector per ingested item, in LanceDB.

Precomputed vectors are read from the drop's parquet files. Images and texts: raw's rows of
the drop (item id + ref, read again through the same parser, curation.items) stream through the
pool's EmbedderResource (`embed_batches(...)`), so memory is bounded by the batch, not by the
drop's bytes, and duplicates of earlier drops are never embedded; only the output vectors are
gathered, for one atomic write per drop. Progress (items done, items/s) goes to the Dagster log.

Every row carries the model name and `model_hash` (the embedder's identity_version); the full
identity is in the materialisation metadata. The asset's `code_version` is the pool's embedder
config version (model, weights sha256, options that change vectors, pipeline version), so a
model change in the pools config marks every drop stale; level_1 refits once every row carries
the new model hash.

Rows that cannot be used (NaN/Inf, wrong dimension, embedder failure) go to the quarantine table
with stage "embeddings"; the rest replace this drop's rows in one merge_insert commit, so a
re-run or a crash never leaves duplicates. Blocking checks: dimension, finite values, unique ids.
"""

import time
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

from curation import naming
from curation.embedding.base import Item, identity_version
from curation.items import parse_jsonl
from curation.pools import PoolConfig
from curation.sql import in_list, sql_str
from curation.takedowns import drop_taken_down_rows
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .partitions import drops_partitions
from .raw import checked_drop, write_quarantine
from .tables import table_dim, vector_array, vectors_of

CHECKS = ("dimension", "finite", "unique_ids")
PROGRESS_EVERY_S = 5.0


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


# Largest vector norm ingested: squared distances between two such vectors stay below
# (2e15)^2 = 4e30, far inside float32 (3.4e38), in faiss's and the k-means' arithmetic.
MAX_VECTOR_NORM = 1e15


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
    key = naming.asset_path(pool.name, "embeddings")
    resource_keys = {"landing", "lancedb"}
    if pool.modality != "vectors":
        resource_keys.add(embedder_key(pool))

    code_version = embeddings_code_version(pool)

    @asset(
        key=key,
        deps=[naming.asset_path(pool.name, "raw")],
        code_version=code_version,
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        required_resource_keys=resource_keys,
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
            pool.table("raw"), ["item_id", "uri", "source", "row", "meta"], where=scope
        )
        if raw_rows is None:
            raise Failure(description=f"no raw table for pool {pool.name}: materialise raw first")
        ids, uris = raw_rows["item_id"].to_pylist(), raw_rows["uri"].to_pylist()
        existing = lancedb.open(pool.table("embeddings"))

        stored_dim = table_dim(existing)
        if pool.dim and stored_dim and pool.dim != stored_dim:
            raise Failure(description=(
                f"drop {drop!r}: the pool's dim is {pool.dim} but its embeddings table holds "
                f"{stored_dim}-d vectors. A new dimension is a new embedding space, which "
                "this pool's tree and subsets cannot mix with the old one: set dim back to "
                f"{stored_dim}, or deliver the new vectors to a new pool (docs/LANDING.md)"))
        if pool.modality == "vectors":
            _, values, reasons = _precomputed(storage, raw_rows)
            identity = vectors_identity(pool)
            lengths = Counter(len(v) for v, r in zip(values, reasons, strict=True) if not r)
            dim = pool.dim or table_dim(existing) or (
                lengths.most_common(1)[0][0] if lengths else None)
            for i, v in enumerate(values):
                if not reasons[i] and len(v) != dim:
                    reasons[i] = f"wrong dimension: {len(v)} values, the pool has {dim}"
            got = [i for i in range(len(ids)) if not reasons[i]]
            x = np.asarray([values[i] for i in got], dtype=np.float32).reshape(len(got), dim or 0)
            del values
            rate = None
        else:
            resource = getattr(context.resources, embedder_key(pool))
            if not hasattr(resource, "get_embedder"):
                raise Failure(description=f"embedder for pool {pool.name} unavailable: {resource}")
            got, x, reasons, identity, rate = _embed_stream(context, resource, storage, raw_rows)
            dim = pool.dim or table_dim(existing) or (x.shape[1] if len(got) else None)
            if len(got) and x.shape[1] != dim:
                for i in got:
                    reasons[i] = (f"wrong dimension: the model gives {x.shape[1]}, "
                                  f"the pool has {dim}")
                got, x = [], x[:0]

        finite = np.isfinite(x).all(axis=1) if len(got) else np.ones(0, bool)
        for i in np.asarray(got, dtype=np.int64)[~finite]:
            reasons[i] = "vector holds NaN or Inf"
        norms = np.sqrt(np.square(x, dtype=np.float64).sum(axis=1)) if len(got) else \
            np.zeros(0)
        huge = finite & (norms > MAX_VECTOR_NORM)
        for i, n in zip(np.asarray(got, dtype=np.int64)[huge], norms[huge], strict=True):
            reasons[i] = (f"vector norm {n:.3g} exceeds {MAX_VECTOR_NORM:.0e}: squared "
                          "distances would overflow float32 in the k-means")
        finite &= ~huge
        keep = [i for i, ok in zip(got, finite, strict=True) if ok]
        x = x[finite]
        quarantined = [(uris[i], reasons[i]) for i in range(len(ids)) if reasons[i]]
        write_quarantine(lancedb, pool, drop, "embeddings", quarantined,
                         ids=[ids[i] for i in range(len(ids)) if reasons[i]])

        model_hash = identity_version(identity)
        rows = pa.table({
            "item_id": pa.array([ids[i] for i in keep], pa.string()),
            "drop": pa.array([drop] * len(keep), pa.string()),
            "uri": pa.array([uris[i] for i in keep], pa.string()),
            "vector": vector_array(x) if dim else pa.array([], pa.list_(pa.float32(), 1)),
            "model": pa.array([identity.get("name") or identity.get("model", "")] * len(keep),
                              pa.string()),
            "model_hash": pa.array([model_hash] * len(keep), pa.string()),
        })
        table = existing
        late: list[str] = []
        if dim:
            table = lancedb.replace_rows(pool.table("embeddings"), rows, "item_id", scope)
            # taken down while this drop was embedded: its rows go again
            late = drop_taken_down_rows(lancedb.connect(), pool.name, "embeddings", scope,
                                        [ids[i] for i in keep])
        checks = _checks(table, drop, dim, key)
        return MaterializeResult(
            metadata={
                "raw_items": len(ids),
                "embedded": len(keep) - len(late),
                "taken_down_during_ingest": len(late),
                "quarantined": len(quarantined),
                "quarantine_reasons": MetadataValue.json(
                    dict(Counter(r.split(":")[0] for _, r in quarantined))
                ),
                "dim": dim or 0,
                "model_identity": MetadataValue.json(identity),
                "model_hash": model_hash,
                "code_version": code_version,
                **({"items_per_s": round(rate, 1)} if rate is not None else {}),
                "lancedb_table": pool.table("embeddings"),
                "lancedb_version": table.version if table is not None else 0,
                "pool_items": table.count_rows() if table is not None else 0,
            },
            check_results=checks,
        )

    return embeddings


def _raw_items(raw_rows, storage: LandingStorage):
    """The embedder's Items of raw's rows, refs as raw recorded them: a whole-file item is read
    lazily by its uri; a JSONL file is parsed again by the same parser (curation.items) and only
    the lines raw ingested in this drop are kept."""
    uris, sources = raw_rows["uri"].to_pylist(), raw_rows["source"].to_pylist()
    lines: dict[str, set[str]] = {}
    for uri, source in zip(uris, sources, strict=True):
        if uri != source:
            lines.setdefault(source, set()).add(uri)
    for source in dict.fromkeys(sources):  # each file once, in raw order
        if source not in lines:
            yield Item(ref=source, reader=storage.read_bytes)
            continue
        try:
            parsed = parse_jsonl(source, storage.read_bytes(source))
        except OSError as exc:
            for ref in sorted(lines[source]):
                yield Item(ref=ref, error=f"unreadable: {type(exc).__name__}: {exc}")
            continue
        for item in parsed.items:
            if item.ref in lines[source]:
                yield Item(ref=item.ref, text=item.text)


def _embed_stream(context, resource, storage: LandingStorage, raw_rows):
    """Stream this drop's raw items through the embedder, one batch in memory at a time.

    Returns (raw row indices embedded, their (n, d) vectors, a reason per raw row ("" when
    embedded), the embedder's identity, items/s). The embedder reads exactly raw's rows (item
    id + ref, through the same parser), so its refs are raw's uris; an item whose bytes no
    longer hash to raw's item id (the file changed since raw) is quarantined.
    """
    ids = raw_rows["item_id"].to_pylist()
    uris = raw_rows["uri"].to_pylist()
    by_ref = {uri: i for i, uri in enumerate(uris)}
    total = len(ids)
    last_log = [0.0]

    def progress(p) -> None:
        if p.elapsed_s - last_log[0] >= PROGRESS_EVERY_S or p.done >= total:
            last_log[0] = p.elapsed_s
            context.log.info(
                f"embedded {p.embedded} + quarantined {p.quarantined} of ~{total} items "
                f"in {p.elapsed_s:.1f} s ({p.items_per_s:.0f} items/s)"
            )

    embedder = resource.get_embedder()
    identity = embedder.identity()  # loads the model once, before the stream
    reasons = [""] * total
    done = [False] * total
    got: list[int] = []
    parts: list[np.ndarray] = []
    started = time.perf_counter()
    handled = 0
    for batch in embedder.embed_batches(_raw_items(raw_rows, storage), progress=progress):
        handled += len(batch.item_ids) + len(batch.quarantined)
        for ref, reason in batch.quarantined:
            i = by_ref.get(ref)
            if i is not None and not done[i]:
                reasons[i], done[i] = reason, True
        rows = []
        for k, (ref, item_id) in enumerate(zip(batch.refs, batch.item_ids, strict=True)):
            i = by_ref.get(ref)
            if i is None or done[i]:
                continue
            done[i] = True
            if item_id != ids[i]:
                reasons[i] = "changed since raw: its bytes no longer match the item id"
                continue
            got.append(i)
            rows.append(k)
        if rows:
            parts.append(np.asarray(batch.vectors, dtype=np.float32)[rows])
    seconds = time.perf_counter() - started
    for i in range(total):
        if not done[i]:
            reasons[i] = "not embedded: the embedder returned no vector for this item"
    x = np.concatenate(parts) if parts else np.zeros((0, int(identity.get("dim") or 0)), np.float32)
    order = np.argsort(np.asarray(got, dtype=np.int64), kind="stable")
    return [got[j] for j in order], x[order], reasons, identity, handled / max(seconds, 1e-9)


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
