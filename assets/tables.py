"""Shared table helpers of the per-pool assets: schemas, streaming reads, the fit record.

The fitted tree is stored in LanceDB (table `<pool>__fits`, one row per fit: centroids and
parents of every level as an .npz blob, the drops it saw, its mean leaf distance), so the
platform keeps working when LanceDB sits on S3 and nothing lives on a local disk.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from curation.config import HierarchyConfig
from curation.hashing import json_sha256
from curation.hierarchy import Hierarchy
from curation.pools import PoolConfig
from curation.selection import item_keys


def vector_array(vectors: np.ndarray):
    """(n, d) float32 -> pyarrow fixed_size_list<float32, d> (what LanceDB indexes as vectors)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def vectors_of(column) -> np.ndarray:
    """pyarrow fixed_size_list column -> (n, d) float32 without copying per row."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.list_size
    flat = np.asarray(column.flatten(), dtype=np.float32)
    return flat.reshape(len(column), dim)


def table_dim(table) -> int | None:
    """Vector dimension of a table with a fixed_size_list `vector` column."""
    if table is None:
        return None
    return table.schema.field("vector").type.list_size


def stream_vectors(table, where: str | None = None, columns=("item_id", "drop", "uri")):
    """All (or the `where`) rows: dict of pyarrow columns and one preallocated (n, d) array.

    Vectors are read in batches into one float32 array, so peak memory is about the array.
    """
    import pyarrow as pa

    n = table.count_rows(where) if where else table.count_rows()
    dim = table_dim(table)
    x = np.empty((n, dim), dtype=np.float32)
    parts: dict[str, list] = {c: [] for c in columns}
    query = table.search().select([*columns, "vector"]).limit(None)
    if where:
        query = query.where(where)
    at = 0
    for batch in query.to_batches(65536):
        m = batch.num_rows
        x[at : at + m] = vectors_of(batch.column("vector"))
        for c in columns:
            parts[c].append(batch.column(c))
        at += m
    if at != n:  # the table changed under us: keep what was read
        x = x[:at]
    cols = {c: pa.chunked_array(v, type=table.schema.field(c).type) for c, v in parts.items()}
    return cols, x


@dataclass
class FitRecord:
    fit_version: int
    hierarchy: Hierarchy
    n_items: int
    mean_distance: float
    drops: dict[str, int]  # drop -> items of it the fit saw
    sizes: list[list[int]] = field(default_factory=list)  # per level, items beneath each cluster
    report: list[dict] = field(default_factory=list)  # per level: objective, reseeded, seconds
    created_at: str = ""
    model_hash: str = ""  # identity_version of the embeddings the tree was fitted on
    signature: str = ""  # what the fit saw (drop counts, model, config): see fit_signature
    reason: str = ""  # why this fit was made (first fit, policy, forced)
    drift: dict = field(default_factory=dict)  # top-level matching to the previous fit


def save_fit(lancedb, pool: PoolConfig, record: FitRecord) -> int:
    """Append a fit to `<pool>__fits`; returns the table version."""
    import pyarrow as pa

    h = record.hierarchy
    blob = io.BytesIO()
    arrays = {f"centroids_{i}": c for i, c in enumerate(h.centroids)}
    arrays.update({f"parents_{i}": p for i, p in enumerate(h.parents)})
    np.savez(blob, **arrays)
    row = pa.table(
        {
            "fit_version": pa.array([record.fit_version], pa.int64()),
            "created_at": [datetime.now(UTC).isoformat()],
            "n_items": pa.array([record.n_items], pa.int64()),
            "mean_distance": pa.array([record.mean_distance], pa.float64()),
            "drops": [json.dumps(record.drops)],
            "config": [h.config.model_dump_json()],
            "sizes": [json.dumps(record.sizes)],
            "report": [json.dumps(record.report)],
            "tree": pa.array([blob.getvalue()], pa.large_binary()),
            "model_hash": [record.model_hash],
            "signature": [record.signature],
            "reason": [record.reason],
            "drift": [json.dumps(record.drift)],
        }
    )
    table = lancedb.open(pool.table("fits"))
    if table is None:
        table = lancedb.connect().create_table(pool.table("fits"), row)
    else:
        for column in ("model_hash", "signature", "reason", "drift"):  # tables from older versions
            if column not in table.schema.names:
                table.add_columns({column: "CAST('' AS STRING)"})
        table.add(row)
    return table.version


def fit_signature(drop_counts: dict[str, int], model_hashes: dict[str, int], config) -> str:
    """What a fit depends on: the drops (and their sizes), the embedding model, the config.

    Two fits with the same signature see the same items (item ids are content addresses and a
    drop's rows are replaced atomically), so a second fit may reuse the first: that is how a
    run that crashed after saving its fit heals without fitting again.
    """
    payload = {"drops": sorted(drop_counts.items()), "models": sorted(model_hashes),
               "config": config.model_dump(mode="json")}
    return json_sha256(payload, separators=None)[:32]  # json.dumps' default: stored signatures


def canonical_order(item_ids) -> np.ndarray:
    """Row order by item id: fits and samples must not depend on storage order (a re-run drop
    rewrites its rows at the end of the table)."""
    import pyarrow.compute as pc

    return pc.sort_indices(item_ids).to_numpy()


def load_fit(lancedb, pool: PoolConfig) -> FitRecord | None:
    """The latest fit of the pool, or None before the first fit."""
    table = lancedb.open(pool.table("fits"))
    if table is None or table.count_rows() == 0:
        return None
    versions = table.search().select(["fit_version"]).limit(None).to_arrow()
    latest = int(np.max(versions.column("fit_version").to_numpy()))
    row = table.search().where(f"fit_version = {latest}").limit(1).to_arrow().to_pylist()[0]
    config = HierarchyConfig.model_validate_json(row["config"])
    arrays = np.load(io.BytesIO(row["tree"]))
    hierarchy = Hierarchy(
        config=config,
        centroids=[arrays[f"centroids_{i}"] for i in range(config.n_levels)],
        parents=[arrays[f"parents_{i}"] for i in range(config.n_levels - 1)],
    )
    return FitRecord(
        fit_version=latest,
        hierarchy=hierarchy,
        n_items=row["n_items"],
        mean_distance=row["mean_distance"],
        drops=json.loads(row["drops"]),
        sizes=json.loads(row["sizes"]),
        report=json.loads(row["report"]),
        created_at=row["created_at"],
        model_hash=row.get("model_hash") or "",
        signature=row.get("signature") or "",
        reason=row.get("reason") or "",
        drift=json.loads(row.get("drift") or "{}"),
    )


def latest_fit_summary(lancedb, pool: PoolConfig):
    """The latest fit's scalars (no tree blob): a `curation.refit.FitSummary`, or None."""
    from curation.refit import FitSummary

    table = lancedb.open(pool.table("fits"))
    if table is None or table.count_rows() == 0:
        return None
    cols = ["fit_version", "n_items", "mean_distance", "model_hash", "config"]
    rows = table.search().select(cols).limit(None).to_arrow().to_pylist()
    row = max(rows, key=lambda r: r["fit_version"])
    return FitSummary(fit_version=int(row["fit_version"]), n_items=int(row["n_items"]),
                      mean_distance=float(row["mean_distance"]),
                      model_hash=row.get("model_hash") or "", config=row.get("config") or "")


def model_hash_counts(table) -> dict[str, int]:
    """Rows per embedding model hash of the embeddings table (reads the one column)."""
    if table is None or "model_hash" not in table.schema.names:
        return {}
    import pyarrow.compute as pc

    hashes = table.search().select(["model_hash"]).limit(None).to_arrow().column("model_hash")
    return {str(v["values"]): int(v["counts"]) for v in pc.value_counts(hashes).to_pylist()}


def drop_counts(table) -> dict[str, int]:
    """Rows per drop of a table (reads the one `drop` column)."""
    if table is None:
        return {}
    import pyarrow.compute as pc

    drops = table.search().select(["drop"]).limit(None).to_arrow().column("drop")
    counts = pc.value_counts(drops)
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def assignment_table(item_id, drop, uri, assignment, fit_version: int):
    """Rows of `<pool>__assignments`: where each item sits in the current tree."""
    import pyarrow as pa

    columns = {
        "item_id": item_id,
        "drop": drop,
        "uri": uri,
        "distance": pa.array(assignment.distance.astype(np.float32)),
    }
    for level in range(assignment.paths.shape[1]):
        columns[f"level_{level + 1}"] = pa.array(assignment.paths[:, level].astype(np.int32))
    columns["fit_version"] = pa.array(np.full(len(assignment.distance), fit_version, np.int64))
    # the 64-bit key that subsets rank by (computed once per item here, not per subset run)
    columns["item_key"] = pa.array(item_keys(item_id), pa.uint64())
    return pa.table(columns)
