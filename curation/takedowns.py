"""Takedowns: the audit table, takedown files, and the purge (pure core: no Dagster).

`<pool>__takedowns` holds one audit row per (item, request): item_id, reason, at (UTC ISO
time it was recorded), by (who asked: `cli:<user>`, `file:_takedowns/<name>`), run (the
Dagster run that removed the item from the pool's tables; "" while pending). Rows are only
ever added, except that `mark_applied` fills `run` in once.

`record_takedowns` is the one function that records takedowns (the CLI and the platform's
`[pool, "takedowns"]` asset both call it). The audit table itself, the lookups and the purge
(deleting taken-down items from raw, embeddings and assignments; only that asset does) live in
the pool's storage home (`curation.store.PoolStore`).

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
from dataclasses import dataclass

from .store import PoolStore

MAX_FILE_BYTES = 64 << 20
PURGED_KINDS = ("raw", "embeddings", "assignments")


def record_takedowns(store: PoolStore, items, by: str, run: str = "") -> dict:
    """Record takedowns: `items` is [(item_id, reason)]. One audit row per distinct pair;
    a pair already recorded by the same `by` is not added again (re-running a file is a
    no-op). `run` = "" leaves the rows pending until the takedowns asset applies them.
    Returns {"recorded": new rows, "items": distinct ids given, "version": table version}."""
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
    for pair in store.recorded_pairs({i for i, _ in pairs}, by):
        pairs.pop(pair, None)
    if not pairs:
        return {"recorded": 0, "items": n_ids, "version": store.audit_version()}
    version = store.append_takedowns(list(pairs), by, run)
    return {"recorded": len(pairs), "items": n_ids, "version": version}


def text_content_keys(raw_rows, read_bytes, modality: str) -> dict[str, str]:
    """{item_id: content_key} of text items, from their raw rows (item_id, uri, source and,
    when raw kept it, text): the text raw stored, else each source file read once and parsed
    by the ingestion's parser (curation.items)."""
    from .items import content_key, modality_of, parse_file

    if modality_of(modality) != "texts":
        return {}
    texts = (raw_rows["text"].to_pylist() if "text" in raw_rows.column_names
             else [None] * raw_rows.num_rows)
    out, wanted = {}, {}
    for item, uri, source, text in zip(raw_rows["item_id"].to_pylist(),
                                       raw_rows["uri"].to_pylist(),
                                       raw_rows["source"].to_pylist(), texts, strict=True):
        if text is not None:
            out[item] = content_key(text)
        else:  # a row ingested before raw kept the text
            wanted.setdefault(source, {})[uri] = item
    for source, refs in wanted.items():
        try:
            parsed = parse_file(modality, source, read_bytes(source))
        except OSError:  # the file is gone: the id still matches
            continue
        for parsed_item in parsed.items:
            if parsed_item.ref in refs and parsed_item.text is not None:
                out[refs[parsed_item.ref]] = content_key(parsed_item.text)
    return out


@dataclass
class PurgeOutcome:
    taken_down_items: int
    content_keys_recorded: int
    retired: list[str]  # table kinds of subsets no longer configured, purged directly
    purged: dict  # {kind: {"deleted", "version", "versions_removed"}} (PoolStore.purge)
    applied: int  # pending audit rows stamped with the run
    audit_version: int | None


def purge_and_apply(store: PoolStore, run: str, configured_subsets: list[str], read_bytes,
                    modality: str) -> PurgeOutcome:
    """Remove every taken-down item from raw, embeddings, assignments and the tables of
    subsets no longer configured (their older versions too), then stamp the pending audit
    rows with `run`: a run killed before the end leaves them pending, and the next one
    deletes again (idempotent) and stamps them. Only the rows pending when it started are
    stamped: one recorded meanwhile (`curate takedown`, another file's run) names an item it
    may not have removed, and waits for the next run."""
    pending = store.pending_takedown_ids()  # before the ids: each of them is among those
    ids = store.taken_down_ids().to_pylist()
    # the texts' content keys, read before their rows go: a re-delivery of the same text
    # in another container (another id) is refused by raw too
    raw_rows = store.lookup("raw", "item_id", ids, ["item_id", "uri", "source", "text"])
    contents = store.record_content_keys(text_content_keys(
        raw_rows, read_bytes, modality)) if raw_rows is not None else 0
    retired = store.retired_subset_kinds(configured_subsets)
    purged = store.purge(ids, kinds=(*PURGED_KINDS, *retired))
    applied = store.mark_applied(run, pending)  # after the purge only
    return PurgeOutcome(len(ids), contents, retired, purged, applied, store.audit_version())


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
