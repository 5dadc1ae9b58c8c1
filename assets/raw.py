"""`<pool>/raw`, one partition per drop: what was delivered, each item once.

Every delivered item ends in exactly one place, so the counts add up:
ingested (table `<pool>__raw`) + duplicates (`<pool>__duplicates`, already ingested by this or an
earlier drop) + quarantined (`<pool>__quarantine`, stage "raw", with the reason) = delivered.
An item taken down earlier (`<pool>__takedowns`) is quarantined as "taken down: <reason>" (with
its item_id), never ingested again.
Files are parsed by `curation.items` (one parser per item kind, shared with the embedders): an
unreadable file counts as one delivered item. Item ids are content addresses (sha256 of the
bytes, of the text for a JSONL line), or the given item_id for precomputed vectors.

The write is insert-if-absent (merge_insert on item_id; only this drop's own rows may be
updated), and ingested vs duplicate is read back from the table after the commit: two drops that
share items and run at once never both ingest them, and never take over each other's rows. An
item an earlier drop delivered but whose embedding was quarantined (NaN vector, undecodable
image) is not a duplicate: a corrected re-delivery takes its raw row over and is ingested.
"""

from datetime import UTC, datetime

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from curation import naming
from curation.items import content_key, parse_file
from curation.landing import validate_drop_id
from curation.pools import PoolConfig
from curation.sql import in_list, sql_str
from curation.takedowns import drop_taken_down_rows, takedown_reasons, taken_down_contents
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .partitions import drops_partitions

CHUNK = 2000
MAX_ITEM_ID_BYTES = 1024  # longer ids are quarantined (docs/LANDING.md)


def checked_drop(context: AssetExecutionContext) -> str:
    """The partition's drop id, or a Failure of this partition only (nothing is read)."""
    try:
        return validate_drop_id(context.partition_key)
    except ValueError as exc:
        raise Failure(description=f"refusing drop: {exc}") from None


def _reclaimable(lancedb: LanceDBResource, pool: PoolConfig, held: dict[str, str]) -> set[str]:
    """Ids among `held` ({item_id: drop holding its raw row}) whose holder's embeddings step
    quarantined them and that have no embedding: a re-delivery of them is not a duplicate."""
    quarantine = lancedb.open(pool.table("quarantine"))
    if quarantine is None or not held:
        return set()
    embeddings = lancedb.open(pool.table("embeddings"))
    ids, out = sorted(held), set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found = (
            quarantine.search()
            .where(f"stage = 'embeddings' AND {in_list('item_id', chunk)}")
            .select(["item_id", "drop"])
            .limit(None)
            .to_arrow()
            .to_pylist()
        )
        bad = {r["item_id"] for r in found if held.get(r["item_id"]) == r["drop"]}
        if bad and embeddings is not None:
            embedded = embeddings.search().where(in_list("item_id", sorted(bad)))
            bad -= set(embedded.select(["item_id"]).limit(None).to_arrow()["item_id"].to_pylist())
        out |= bad
    return out


def build_raw_asset(pool: PoolConfig):
    @asset(
        key=naming.asset_path(pool.name, "raw"),
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
        problem = storage.drop_problem(drop)
        if problem is not None:
            raise Failure(description=f"drop {drop!r} {problem}: nothing was read")
        if not storage.is_complete(drop):
            raise Failure(description=f"drop {drop!r} has no _SUCCESS marker: not complete yet")
        files = storage.list_files(drop)
        if not files:
            raise Failure(description=f"drop {drop!r} is empty: it holds no data files")
        items = []
        quarantined: list[tuple[str, str]] = []
        for info in files:
            if info.problem is not None:
                quarantined.append((info.uri, info.problem))
                continue
            try:
                data = storage.read_bytes(info.uri)
            except OSError as exc:
                quarantined.append((info.uri, f"unreadable: {exc}"))
                continue
            parsed = parse_file(pool.modality, info.uri, data)
            items += parsed.items
            quarantined += parsed.quarantined
        delivered = len(items) + len(quarantined)
        # An id is a key in every table and every query: a cap keeps one item from bloating
        # them (content-addressed ids are 64 characters).
        too_long = [i for i in items if len(i.item_id.encode("utf-8")) > MAX_ITEM_ID_BYTES]
        if too_long:
            items = [i for i in items if len(i.item_id.encode("utf-8")) <= MAX_ITEM_ID_BYTES]
            quarantined += [(i.ref, f"item id of {len(i.item_id.encode('utf-8'))} bytes "
                             f"exceeds the {MAX_ITEM_ID_BYTES}-byte cap") for i in too_long]

        # Taken down earlier: never ingested again, quarantined with the takedown's reason.
        gone = takedown_reasons(lancedb.connect(), pool.name, {i.item_id for i in items})
        # ... or the same text under another id (another container: a .txt for a JSONL line)
        contents = taken_down_contents(lancedb.connect(), pool.name)
        keys = {i.item_id: content_key(i.text) for i in items
                if contents and i.text is not None and i.item_id not in gone}
        same_text = {item: contents[key] for item, key in keys.items() if key in contents}
        if same_text:
            reasons = takedown_reasons(lancedb.connect(), pool.name, same_text.values())
            gone.update({item: f"{reasons.get(orig, 'taken down')} (same text as {orig})"
                         for item, orig in same_text.items()})
        down = [i for i in items if i.item_id in gone]
        items = [i for i in items if i.item_id not in gone]
        down_rows = [(i.ref, f"taken down: {gone[i.item_id]}") for i in down]

        # Repeated inside this drop: the first wins, the others are duplicates of this drop.
        first: dict[str, object] = {}
        repeated = []
        for item in items:
            if item.item_id in first:
                repeated.append(item)
            else:
                first[item.item_id] = item
        fresh = list(first.values())

        # Held by another drop whose embedding of it was quarantined: this drop takes it over.
        table = lancedb.open(pool.table("raw"))
        held: dict[str, str] = {}
        ids = sorted(first)
        for start in range(0, len(ids) if table is not None else 0, CHUNK):
            where = f"{in_list('item_id', ids[start : start + CHUNK])} AND drop != {sql_str(drop)}"
            found = table.search().where(where).select(["item_id", "drop"]).limit(None).to_arrow()
            held.update(zip(found["item_id"].to_pylist(), found["drop"].to_pylist(), strict=True))
        retaken = sorted(_reclaimable(lancedb, pool, held))
        for start in range(0, len(retaken), CHUNK):
            chunk = retaken[start : start + CHUNK]
            table.delete(
                " OR ".join(
                    f"(item_id = {sql_str(i)} AND drop = {sql_str(held[i])})" for i in chunk
                )
            )

        now = datetime.now(UTC).isoformat()
        raw_rows = pa.table(
            {
                "item_id": pa.array([i.item_id for i in fresh], pa.string()),
                "drop": pa.array([drop] * len(fresh), pa.string()),
                "uri": pa.array([i.ref for i in fresh], pa.string()),
                "size": pa.array([i.size for i in fresh], pa.int64()),
                "source": pa.array([i.source for i in fresh], pa.string()),
                "row": pa.array([i.row for i in fresh], pa.int64()),
                "meta": pa.array([i.meta for i in fresh], pa.string()),
                "ingested_at": pa.array([now] * len(fresh), pa.string()),
            }
        )
        raw_table, holders = lancedb.claim_rows(
            pool.table("raw"),
            raw_rows,
            "item_id",
            "drop",
            compare=("uri", "size", "source", "row", "meta"),
        )
        if not fresh:  # nothing of this drop may stay in the table
            raw_table.delete(f"drop = {sql_str(drop)}")
        ingested = [i for i in fresh if holders.get(i.item_id) == drop]
        # Taken down while this drop was read (after the check above): out again, quarantined.
        late = set(drop_taken_down_rows(lancedb.connect(), pool.name, "raw",
                                        f"drop = {sql_str(drop)}", [i.item_id for i in ingested]))
        if late:
            reasons = takedown_reasons(lancedb.connect(), pool.name, late)
            down += [i for i in ingested if i.item_id in late]
            down_rows += [(i.ref, f"taken down: {reasons[i.item_id]}") for i in ingested
                          if i.item_id in late]
            ingested = [i for i in ingested if i.item_id not in late]
        duplicates = [(i, drop) for i in repeated]
        duplicates += [
            (i, holders.get(i.item_id, "")) for i in fresh if holders.get(i.item_id) != drop
        ]

        scope = f"drop = {sql_str(drop)}"
        dup_rows = pa.table(
            {
                "key": pa.array(
                    [f"{drop}|{n}|{d.ref}" for n, (d, _) in enumerate(duplicates)], pa.string()
                ),
                "item_id": pa.array([d.item_id for d, _ in duplicates], pa.string()),
                "drop": pa.array([drop] * len(duplicates), pa.string()),
                "uri": pa.array([d.ref for d, _ in duplicates], pa.string()),
                "first_drop": pa.array([f for _, f in duplicates], pa.string()),
            }
        )
        lancedb.replace_rows(pool.table("duplicates"), dup_rows, "key", scope)
        write_quarantine(lancedb, pool, drop, "raw", quarantined + down_rows,
                         ids=[""] * len(quarantined) + [i.item_id for i in down])
        quarantined += down_rows
        reasons: dict[str, int] = {}
        for _, reason in quarantined:
            reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        assert len(ingested) + len(duplicates) + len(quarantined) == delivered
        context.log.info(
            f"drop {drop}: delivered {delivered} = ingested {len(ingested)} + duplicates "
            f"{len(duplicates)} + quarantined {len(quarantined)}"
            + (f" ({len(retaken)} taken over from quarantined embeddings)" if retaken else "")
        )
        return MaterializeResult(
            metadata={
                "delivered": delivered,
                "ingested": len(ingested),
                "duplicates": len(duplicates),
                "quarantined": len(quarantined),
                "retaken": len(retaken),
                "taken_down": len(down),
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
