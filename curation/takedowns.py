"""Takedowns: the audit table, takedown files, and the purge (pure core: no Dagster).

`<pool>__takedowns` holds one audit row per (item, request): item_id, reason, at (UTC ISO
time it was recorded), by (who asked: `cli:<user>`, `file:_takedowns/<name>`), run (the
Dagster run that removed the item from the pool's tables; "" while pending). Rows are only
ever added, except that `mark_applied` fills `run` in once.

`record_takedowns` is the one function that records takedowns (the CLI and the platform's
`[pool, "takedowns"]` asset both call it). `purge_taken_down` deletes taken-down items from
raw, embeddings and assignments; only that asset calls it.

Takedown file (landed under the pool's landing prefix, `<prefix>/_takedowns/<name>`). Ids are
matched byte for byte: nothing is trimmed from an id, and lines end at `\n` only (a `\r`
before it is dropped); U+2028, U+0085 and the other Unicode line breaks are part of an id.
- `<name>.txt`: a header of `#` lines, then one item_id per line. A header line
  `# reason: <text>` gives the reason of every id of the file (required); other header lines
  are comments. After the first id every line is an id, `#` included; empty lines are skipped.
  An id that is empty, starts a line with `#` before any id, holds a `\n`, or ends in `\r`
  cannot be written here: use `.csv`;
- `<name>.csv`: a header with `item_id` and `reason` columns (header names trimmed; others
  ignored), one row per id, values verbatim; CSV quoting expresses any id.
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
        item_id, reason = str(item_id), str(reason or "").strip()  # ids byte for byte
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


def takedown_reasons(db, pool: str, ids) -> dict[str, str]:
    """{item_id: reason(s)} of those of `ids` that were taken down (recorded, applied or not)."""
    table = open_table(db, naming.table(pool, "takedowns"))
    ids = sorted(set(ids))
    out: dict[str, str] = {}
    for start in range(0, len(ids) if table is not None else 0, CHUNK):
        found = table.search().where(in_list("item_id", ids[start:start + CHUNK]))
        for row in found.select(["item_id", "reason"]).limit(None).to_arrow().to_pylist():
            have = out.get(row["item_id"])
            out[row["item_id"]] = row["reason"] if have is None else f"{have}; {row['reason']}"
    return out


def drop_taken_down_rows(db, pool: str, kind: str, scope: str, ids) -> list[str]:
    """After a write to `<pool>__<kind>` of the rows `scope` selects (a drop, or the drops of a
    run): delete those of `ids` taken down meanwhile (a takedown recorded, or even purged,
    while the drop was being ingested), so a takedown never loses the race with an ingest.
    One read of the audit's id column. Returns the ids deleted."""
    down = set(taken_down_ids(db, pool).to_pylist())
    late = sorted(i for i in set(ids) if i in down) if down else []
    table = open_table(db, naming.table(pool, kind)) if late else None
    for start in range(0, len(late) if table is not None else 0, CHUNK):
        table.delete(f"({scope}) AND " + in_list("item_id", late[start:start + CHUNK]))
    return late


def text_content_keys(raw_rows, read_bytes, modality: str) -> dict[str, str]:
    """{item_id: content_key} of text items, from their raw rows (item_id, uri, source): each
    source file read once and parsed by the ingestion's parser (curation.items)."""
    from .items import content_key, modality_of, parse_file

    if modality_of(modality) != "texts":
        return {}
    wanted: dict[str, dict[str, str]] = {}
    for item, uri, source in zip(raw_rows["item_id"].to_pylist(), raw_rows["uri"].to_pylist(),
                                 raw_rows["source"].to_pylist(), strict=True):
        wanted.setdefault(source, {})[uri] = item
    out = {}
    for source, refs in wanted.items():
        try:
            parsed = parse_file(modality, source, read_bytes(source))
        except OSError:  # the file is gone: the id still matches
            continue
        for parsed_item in parsed.items:
            if parsed_item.ref in refs and parsed_item.text is not None:
                out[refs[parsed_item.ref]] = content_key(parsed_item.text)
    return out


def record_content_keys(db, pool: str, keys: dict[str, str]) -> int:
    """Add (item_id, content_key) rows to `<pool>__takedown_content` for taken-down text items
    (kept beside the audit: a re-delivery of the same text under another id is refused)."""
    import pyarrow as pa

    if not keys:
        return 0
    table = open_table(db, naming.table(pool, "takedown_content"))
    known = set()
    if table is not None:
        known = set(table.search().select(["content_key"]).limit(None).to_arrow()[
            "content_key"].to_pylist())
    new = {i: k for i, k in keys.items() if k not in known}
    if not new:
        return 0
    rows = pa.table({"item_id": pa.array(list(new), pa.string()),
                     "content_key": pa.array(list(new.values()), pa.string())})
    if table is None:
        db.create_table(naming.table(pool, "takedown_content"), rows)
    else:
        table.add(rows)
    return len(new)


def taken_down_contents(db, pool: str) -> dict[str, str]:
    """{content_key: item_id} of taken-down text items."""
    table = open_table(db, naming.table(pool, "takedown_content"))
    if table is None:
        return {}
    rows = table.search().select(["item_id", "content_key"]).limit(None).to_arrow()
    return dict(zip(rows["content_key"].to_pylist(), rows["item_id"].to_pylist(), strict=True))


def takedown_csv(rows: list[tuple[str, str]]) -> bytes:
    """A `.csv` takedown file of [(item_id, reason)]: quoted as needed, ids verbatim."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["item_id", "reason"])
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def land_takedown_file(landing_url: str, prefix: str, name: str, data: bytes,
                       endpoint_url: str | None = None) -> str:
    """Write a takedown file under `<landing>/<prefix>/_takedowns/<name>` (a local folder or
    s3://), so the request lives with the data it concerns: any pool reading that folder,
    a renamed one included, applies it. Returns its uri."""
    from .landing import TAKEDOWNS_FOLDER

    if landing_url.startswith("s3://"):
        import boto3

        bucket, _, key = landing_url[len("s3://"):].partition("/")
        key = "/".join(p for p in (key.strip("/"), prefix, TAKEDOWNS_FOLDER, name) if p)
        boto3.client("s3", endpoint_url=endpoint_url).put_object(Bucket=bucket, Key=key,
                                                                Body=data)
        return f"s3://{bucket}/{key}"
    from pathlib import Path

    folder = Path(landing_url.removeprefix("file://")).expanduser() / prefix / TAKEDOWNS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"  # hidden while written: the sensor skips it
    tmp.write_bytes(data)
    tmp.replace(folder / name)
    return str(folder / name)


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
    """Delete the rows of these items from the pool's tables (the takedowns asset only), then
    forget the tables' older versions (forget_old_versions). Returns {kind: {"deleted": rows,
    "version": table version or None, "versions_removed": n}}. A table with none of them is
    left alone (no empty version)."""
    out = {}
    ids = sorted(set(ids))
    for kind in kinds:
        table = open_table(db, naming.table(pool, kind))
        if table is None:
            out[kind] = {"deleted": 0, "version": None, "versions_removed": 0}
            continue
        deleted = 0
        for start in range(0, len(ids), CHUNK):
            where = in_list("item_id", ids[start:start + CHUNK])
            n = table.count_rows(where)
            if n:
                table.delete(where)
                deleted += n
        # the deleted rows must not stay readable in older versions
        removed = forget_old_versions(table) if deleted else 0
        out[kind] = {"deleted": deleted, "version": table.version, "versions_removed": removed}
    return out


def split_lines(text: str) -> list[str]:
    """Lines of a text of ids: split at `\n` only, one `\r` before it dropped. Not
    str.splitlines, which also splits at U+2028, U+0085 and others that ids may hold."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def read_id_list(path) -> list[str]:
    """Item ids of a list file (`curate takedown --items`): a `.csv` with an `item_id` column
    (values verbatim), else one id per line (split_lines, verbatim, empty lines skipped)."""
    from pathlib import Path

    path = Path(path)
    text = path.read_bytes().decode("utf-8-sig")
    if path.name.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip() for f in reader.fieldnames or []]
        if "item_id" not in fields:
            raise ValueError(f"{path}: header needs an item_id column, got {fields}")
        reader.fieldnames = fields
        return [row["item_id"] for row in reader if row.get("item_id")]
    return [line for line in split_lines(text) if line]


def unmatched_ids(db, pool: str, ids) -> list[str]:
    """The ids that are in none of the pool's item tables (raw, embeddings): a takedown of
    them is recorded (a later delivery is refused) but removes nothing now."""
    ids = sorted(set(ids))
    found: set[str] = set()
    for kind in ("raw", "embeddings"):
        table = open_table(db, naming.table(pool, kind))
        if table is None:
            continue
        for start in range(0, len(ids), CHUNK):
            where = in_list("item_id", ids[start:start + CHUNK])
            rows = table.search().where(where).select(["item_id"]).limit(None).to_arrow()
            found.update(rows["item_id"].to_pylist())
    return [i for i in ids if i not in found]


def forget_old_versions(table) -> int:
    """Compact `table` and remove every version but the latest, so rows a takedown deleted
    live in no version anyone can open (a Lance delete only hides rows from later versions).
    Compaction rewrites the fragments that held them (small fragments always, large ones
    once enough of their rows are deleted); the removed versions' files are deleted. Returns
    how many versions were removed."""
    from datetime import timedelta

    before = len(table.list_versions())
    table.optimize(cleanup_older_than=timedelta(0))
    return max(before - len(table.list_versions()), 0)


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
        reason, ids, header = "", [], True
        for line in split_lines(text):
            if header and line.startswith("#"):
                head, _, value = line[1:].partition(":")
                if head.strip().lower() == "reason" and value.strip():
                    reason = value.strip()
                continue
            if line:
                header = False  # from the first id on, every line is an id
                ids.append(line)
        if not reason:
            raise ValueError("no '# reason: ...' line in the header (a takedown needs a "
                             "reason)")
        rows = [(i, reason) for i in ids]
    elif lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip() for f in reader.fieldnames or []]
        if "item_id" not in fields or "reason" not in fields:
            raise ValueError(f"header needs item_id and reason columns, got {fields}")
        reader.fieldnames = fields
        rows = []
        for n, row in enumerate(reader, start=2):
            item_id = row.get("item_id") or ""  # verbatim: quoting expresses any id
            reason = (row.get("reason") or "").strip()
            if not item_id.strip() and not reason:
                continue
            if not item_id or not reason:
                raise ValueError(f"line {n}: needs both item_id and reason")
            rows.append((item_id, reason))
    else:
        raise ValueError("not a takedown file: expected <name>.txt or <name>.csv")
    if not rows:
        raise ValueError("holds no item ids")
    return rows
