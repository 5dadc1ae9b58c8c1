"""`<pool>/raw`, one partition per drop: what was delivered, each item once.

Every delivered item ends in exactly one place, so the counts add up:
ingested (table `<pool>__raw`) + duplicates (`<pool>__duplicates`, already ingested by this or an
earlier drop) + quarantined (`<pool>__quarantine`, stage "raw", with the reason) = delivered.
An unreadable file counts as one delivered item. Item ids are content addresses (sha256 of the
bytes), or the given item_id for precomputed vectors.
"""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import PurePosixPath

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from curation.landing import validate_drop_id
from curation.pools import PoolConfig
from curation_dags.partitions import drops_partitions
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .tables import in_list, sql_str

SUFFIXES = {
    "images": {".png", ".jpg", ".jpeg", ".webp"},
    "texts": {".txt", ".jsonl"},
    "vectors": {".parquet"},
}


def checked_drop(context: AssetExecutionContext) -> str:
    """The partition's drop id, or a Failure of this partition only (nothing is read)."""
    try:
        return validate_drop_id(context.partition_key)
    except ValueError as exc:
        raise Failure(description=f"refusing drop: {exc}") from None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_file_items(modality: str, info, data: bytes):
    """(items, quarantined) of one file; items are dicts, quarantined (uri, reason) pairs."""
    uri, suffix = info.uri, PurePosixPath(info.name).suffix.lower()
    if modality == "vectors":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception as exc:  # any decoding error quarantines the file, not the drop
            return [], [(uri, f"unreadable parquet: {type(exc).__name__}: {exc}"[:500])]
        missing = {"item_id", "vector"} - set(table.column_names)
        if missing:
            return [], [(uri, f"parquet lacks column(s) {sorted(missing)}")]
        ids = table.column("item_id").cast(pa.string()).to_pylist()
        uris = table.column("uri").to_pylist() if "uri" in table.column_names else [None] * len(ids)
        lengths = table.column("vector").combine_chunks().value_lengths().to_pylist()
        extra = [c for c in table.column_names if c not in ("item_id", "vector", "uri")]
        metas = table.select(extra).to_pylist() if extra else [None] * len(ids)
        items, bad = [], []
        for row, (item_id, given, length, meta) in enumerate(
            zip(ids, uris, lengths, metas, strict=True)
        ):
            row_uri = given or f"{uri}#row={row}"
            if not item_id or length is None:
                bad.append((row_uri, "missing item_id or vector"))
                continue
            items.append(
                {
                    "item_id": item_id,
                    "uri": row_uri,
                    "size": 4 * length,
                    "source": uri,
                    "row": row,
                    "meta": json.dumps(meta, default=str) if meta else "",
                }
            )
        return items, bad
    if suffix == ".jsonl":
        items, bad = [], []
        for line_no, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
            if not line.strip():
                continue
            row_uri = f"{uri}#L{line_no + 1}"
            try:
                record = json.loads(line)
                text = record["text"]
                assert isinstance(text, str) and text
            except Exception:
                bad.append((row_uri, "jsonl line without a non-empty 'text'"))
                continue
            raw = text.encode()
            meta = {"id": record.get("id")}
            items.append(
                {
                    "item_id": _sha(raw),
                    "uri": row_uri,
                    "size": len(raw),
                    "source": uri,
                    "row": line_no,
                    "meta": json.dumps(meta),
                }
            )
        return items, bad
    if suffix == ".txt":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return [], [(uri, "text file is not UTF-8")]
    if not data:
        return [], [(uri, "empty file")]
    return [
        {"item_id": _sha(data), "uri": uri, "size": len(data), "source": uri, "row": -1, "meta": ""}
    ], []


def build_raw_asset(pool: PoolConfig):
    @asset(
        key=[pool.name, "raw"],
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        description=f"Items delivered to pool {pool.name!r}, one partition per drop.",
    )
    def raw(
        context: AssetExecutionContext, landing: LandingStorage, lancedb: LanceDBResource
    ) -> MaterializeResult:
        import pyarrow as pa

        drop = checked_drop(context)
        storage = landing.child(pool.prefix)
        if not storage.is_complete(drop):
            raise Failure(description=f"drop {drop!r} has no _SUCCESS marker: not complete yet")
        files = storage.list_files(drop)
        if not files:
            raise Failure(description=f"drop {drop!r} is empty: it holds no data files")
        items: list[dict] = []
        quarantined: list[tuple[str, str]] = []
        for info in files:
            if PurePosixPath(info.name).suffix.lower() not in SUFFIXES[pool.modality]:
                quarantined.append((info.uri, f"unsupported file type for {pool.modality}"))
                continue
            try:
                data = storage.read_bytes(info.uri)
            except OSError as exc:
                quarantined.append((info.uri, f"unreadable: {exc}"))
                continue
            got, bad = read_file_items(pool.modality, info, data)
            items += got
            quarantined += bad
        delivered = len(items) + len(quarantined)

        # Duplicates: repeated inside this drop (first wins), or ingested by another drop.
        seen: set[str] = set()
        fresh, duplicates = [], []
        for item in items:
            (duplicates if item["item_id"] in seen else fresh).append(item)
            seen.add(item["item_id"])
        earlier: dict[str, str] = {}
        table = lancedb.open(pool.table("raw"))
        ids = sorted(seen)
        for start in range(0, len(ids) if table is not None else 0, 2000):
            where = f"{in_list('item_id', ids[start : start + 2000])} AND drop != {sql_str(drop)}"
            found = table.search().where(where).select(["item_id", "drop"]).limit(None).to_arrow()
            earlier.update(
                zip(found["item_id"].to_pylist(), found["drop"].to_pylist(), strict=True)
            )
        duplicates = [dict(d, first_drop=drop) for d in duplicates]
        duplicates += [
            dict(i, first_drop=earlier[i["item_id"]]) for i in fresh if i["item_id"] in earlier
        ]
        ingested = [i for i in fresh if i["item_id"] not in earlier]

        now = datetime.now(UTC).isoformat()
        scope = f"drop = {sql_str(drop)}"
        raw_rows = pa.table(
            {
                "item_id": pa.array([i["item_id"] for i in ingested], pa.string()),
                "drop": pa.array([drop] * len(ingested), pa.string()),
                "uri": pa.array([i["uri"] for i in ingested], pa.string()),
                "size": pa.array([i["size"] for i in ingested], pa.int64()),
                "source": pa.array([i["source"] for i in ingested], pa.string()),
                "row": pa.array([i["row"] for i in ingested], pa.int64()),
                "meta": pa.array([i["meta"] for i in ingested], pa.string()),
                "ingested_at": pa.array([now] * len(ingested), pa.string()),
            }
        )
        raw_table = lancedb.replace_rows(pool.table("raw"), raw_rows, "item_id", scope)
        dup_rows = pa.table(
            {
                "key": pa.array(
                    [f"{drop}|{n}|{d['uri']}" for n, d in enumerate(duplicates)], pa.string()
                ),
                "item_id": pa.array([d["item_id"] for d in duplicates], pa.string()),
                "drop": pa.array([drop] * len(duplicates), pa.string()),
                "uri": pa.array([d["uri"] for d in duplicates], pa.string()),
                "first_drop": pa.array([d["first_drop"] for d in duplicates], pa.string()),
            }
        )
        lancedb.replace_rows(pool.table("duplicates"), dup_rows, "key", scope)
        write_quarantine(lancedb, pool, drop, "raw", quarantined)
        reasons: dict[str, int] = {}
        for _, reason in quarantined:
            reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        context.log.info(
            f"drop {drop}: delivered {delivered} = ingested {len(ingested)} + duplicates "
            f"{len(duplicates)} + quarantined {len(quarantined)}"
        )
        return MaterializeResult(
            metadata={
                "delivered": delivered,
                "ingested": len(ingested),
                "duplicates": len(duplicates),
                "quarantined": len(quarantined),
                "files": len(files),
                "quarantine_reasons": MetadataValue.json(reasons),
                "lancedb_table": pool.table("raw"),
                "lancedb_version": raw_table.version,
                "pool_items": raw_table.count_rows(),
            }
        )

    return raw


def write_quarantine(lancedb, pool: PoolConfig, drop: str, stage: str, rows, ids=None) -> None:
    """Replace this drop's quarantine rows of one stage with `rows` [(uri, reason)]."""
    import pyarrow as pa

    ids = ids or [""] * len(rows)
    table = pa.table(
        {
            "key": pa.array(
                [f"{stage}|{drop}|{n}|{u}" for n, (u, _) in enumerate(rows)], pa.string()
            ),
            "drop": pa.array([drop] * len(rows), pa.string()),
            "stage": pa.array([stage] * len(rows), pa.string()),
            "item_id": pa.array(ids, pa.string()),
            "uri": pa.array([u for u, _ in rows], pa.string()),
            "reason": pa.array([r for _, r in rows], pa.string()),
        }
    )
    scope = f"drop = {sql_str(drop)} AND stage = {sql_str(stage)}"
    lancedb.replace_rows(pool.table("quarantine"), table, "key", scope)
