"""Takedowns: the audit table, takedown files, and the purge (pure core: no Dagster).

`<pool>__takedowns` holds one audit row per (item, request): item_id, reason, at (UTC ISO
time it was recorded), by (who asked: `cli:<user>`, `file:_takedowns/<name>`), run (the
Dagster run that removed the item from the pool's tables; "" while pending). Rows are only
ever added, except that `mark_applied` fills `run` in once.

`record_takedowns` is the one function that records takedowns (the CLI and the platform's
`[pool, "takedowns"]` asset both call it). `purge_taken_down` deletes taken-down items from
raw, embeddings and assignments; only that asset calls it.

Takedown file (landed under the pool's landing prefix, `<prefix>/_takedowns/<name>`):
- `<name>.txt`: one item_id per line; a line `# reason: <text>` gives the reason of every id
  of the file (required); other lines starting with `#` and blank lines are ignored;
- `<name>.csv`: a header with `item_id` and `reason` columns (others ignored), one row per id.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from . import naming
from .sql import in_list, sql_str
from .subsets import open_table

MAX_FILE_BYTES = 64 << 20
PURGED_KINDS = ("raw", "embeddings", "assignments")
CHUNK = 2000


def read_takedowns(db, pool: str):
    """pyarrow Table of the pool's takedowns (item_id, reason, at, by[, run]), or None."""
    table = open_table(db, naming.table(pool, "takedowns"))
    return None if table is None else table.to_arrow()


def taken_down_ids(db, pool: str):
    """pyarrow string array of the distinct taken-down item ids (empty when none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = open_table(db, naming.table(pool, "takedowns"))
    if table is None:
        return pa.array([], pa.string())
    rows = table.search().select(["item_id"]).limit(None).to_arrow()
    if rows.num_rows == 0:
        return pa.array([], pa.string())
    return pc.unique(rows["item_id"].combine_chunks())


def _audit_table(db, pool: str):
    """The audit table, with the `run` column added to one written before it existed."""
    table = open_table(db, naming.table(pool, "takedowns"))
    if table is not None and "run" not in table.schema.names:
        table.add_columns({"run": "CAST('' AS STRING)"})
    return table


def record_takedowns(db, pool: str, items, by: str, run: str = "") -> dict:
    """Record takedowns: `items` is [(item_id, reason)]. One audit row per distinct pair;
    a pair already recorded by the same `by` is not added again (re-running a file is a
    no-op). `run` = "" leaves the rows pending until the takedowns asset applies them.
    Returns {"recorded": new rows, "items": distinct ids given, "version": table version}."""
    import pyarrow as pa

    pairs: dict[tuple[str, str], None] = {}
    for item_id, reason in items:
        item_id, reason = str(item_id).strip(), str(reason or "").strip()
        if not item_id:
            continue
        if not reason:
            raise ValueError(f"a takedown needs a reason (item {item_id!r} has none)")
        pairs.setdefault((item_id, reason), None)
    if not pairs:
        raise ValueError("no item ids to take down")
    if not by.strip():
        raise ValueError("a takedown needs a requester (by)")
    n_ids = len({i for i, _ in pairs})
    table = _audit_table(db, pool)
    if table is not None:
        ids = sorted({i for i, _ in pairs})
        for start in range(0, len(ids), CHUNK):
            where = (in_list("item_id", ids[start:start + CHUNK]) + " AND by = " + sql_str(by))
            done = table.search().where(where).select(["item_id", "reason"]).limit(
                None).to_arrow().to_pylist()
            for row in done:
                pairs.pop((row["item_id"], row["reason"]), None)
    if not pairs:
        return {"recorded": 0, "items": n_ids, "version": table.version}
    now = datetime.now(UTC).isoformat()
    rows = pa.table({
        "item_id": pa.array([i for i, _ in pairs], pa.string()),
        "reason": pa.array([r for _, r in pairs], pa.string()),
        "at": pa.array([now] * len(pairs), pa.string()),
        "by": pa.array([by] * len(pairs), pa.string()),
        "run": pa.array([run] * len(pairs), pa.string()),
    })
    if table is None:
        table = db.create_table(naming.table(pool, "takedowns"), rows)
    else:
        table.add(rows)
    return {"recorded": len(pairs), "items": n_ids, "version": table.version}


def pending_takedowns(db, pool: str) -> int:
    """Audit rows not applied yet (recorded by the CLI, no run removed the item yet)."""
    table = open_table(db, naming.table(pool, "takedowns"))
    if table is None:
        return 0
    if "run" not in table.schema.names:
        return table.count_rows()
    return table.count_rows("run = ''")


def mark_applied(db, pool: str, run: str) -> int:
    """Stamp the pending audit rows with the run that applied them; returns how many."""
    table = _audit_table(db, pool)
    if table is None:
        return 0
    n = table.count_rows("run = ''")
    if n:
        table.update(where="run = ''", values={"run": run})
    return n


def purge_taken_down(db, pool: str, ids: list[str], kinds=PURGED_KINDS) -> dict:
    """Delete the rows of these items from the pool's tables (the takedowns asset only).
    Returns {kind: {"deleted": rows, "version": table version or None}}. A table with none
    of them is left alone (no empty version)."""
    out = {}
    ids = sorted(set(ids))
    for kind in kinds:
        table = open_table(db, naming.table(pool, kind))
        if table is None:
            out[kind] = {"deleted": 0, "version": None}
            continue
        deleted = 0
        for start in range(0, len(ids), CHUNK):
            where = in_list("item_id", ids[start:start + CHUNK])
            n = table.count_rows(where)
            if n:
                table.delete(where)
                deleted += n
        out[kind] = {"deleted": deleted, "version": table.version}
    return out


def parse_takedown_file(name: str, data: bytes) -> list[tuple[str, str]]:
    """[(item_id, reason)] of a takedown file, or ValueError saying what is wrong with it."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    lower = name.lower()
    if lower.endswith(".txt"):
        reason, ids = "", []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                head, _, value = line[1:].partition(":")
                if head.strip().lower() == "reason" and value.strip():
                    reason = value.strip()
                continue
            if line:
                ids.append(line)
        if not reason:
            raise ValueError("no '# reason: ...' line (a takedown needs a reason)")
        rows = [(i, reason) for i in ids]
    elif lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip() for f in reader.fieldnames or []]
        if "item_id" not in fields or "reason" not in fields:
            raise ValueError(f"header needs item_id and reason columns, got {fields}")
        reader.fieldnames = fields
        rows = []
        for n, row in enumerate(reader, start=2):
            item_id = (row.get("item_id") or "").strip()
            reason = (row.get("reason") or "").strip()
            if not item_id and not reason:
                continue
            if not item_id or not reason:
                raise ValueError(f"line {n}: needs both item_id and reason")
            rows.append((item_id, reason))
    else:
        raise ValueError("not a takedown file: expected <name>.txt or <name>.csv")
    if not rows:
        raise ValueError("holds no item ids")
    return rows
