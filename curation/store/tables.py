"""Table mechanics over one LanceDB connection, no pool knowledge: `connect` (the one place
that opens LanceDB), creation once across processes (`claim_creation`), the lookups by key
(`find_in`, `count_in`, `delete_in`: through the BTREE index where there is one,
`keep_indexed`), streamed reads (`stream`) and reads by row id, the retry of transient
storage errors (`transient`, `retried`) and the erasure of old versions
(`erase_old_versions`)."""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import numpy as np

from ..sql import in_list, sql_str
from .schemas import EMPTY_STRING_COLUMNS

IN_CHUNK = 2000  # values per `IN (...)` filter: long filters are slow to parse and plan


# More values than this and one streamed pass over the table beats the IN filters: each filter
# scans the table's column again (100,000 ids were 50 scans of a 10M-row raw table per drop).
STREAM_ABOVE = 4 * IN_CHUNK


INDEXED_IN_CHUNK = 50_000  # values per filter on an indexed column (`in_chunk`)


RETRIES = 8  # commits that conflict with a concurrent writer's are retried this often


# what LanceDB raises for a lost commit race or a missing file (`transient` tells them apart
# from the rest)
STORAGE_ERRORS = (RuntimeError, OSError, ValueError)


BATCH_ROWS = 65536  # rows per batch of a streaming read


# Memory LanceDB's reader holds beyond the rows it returns (decode buffers; its allocator
# keeps freed batches a while): measured up to ~300 MiB in a fit or a run over 100 drops of
# 384-d vectors, the same at 1M and 10M rows. Part of every stated bound (docs/SCALE.md).
READER_RESERVE = 512 * 2**20


# rows per take by row id: a take of random rows decodes whole pages, measured on 384-d
# vectors: 700 MiB above the rows' own bytes at 65,536 per take, 180 MiB at 4,096
TAKE_ROWS = 4096


# Lance's create is not atomic (lance-format/lance#4451): one process claims each table's
# creation (`claim_creation`) and the others wait this long for the table to appear
CREATE_WAIT_S = 60.0


CREATION_CLAIMS = "_creation_claims"  # beside the tables; LanceDB lists only `*.lance`


# an index is rebuilt once the rows appended since it was built exceed this share of the
# rows it covers (and INDEX_LAG_MIN_ROWS): rebuilds cost O(table) per O(table / 8) new rows
INDEX_LAG = 0.125


INDEX_LAG_MIN_ROWS = 65536


def storage_options(endpoint_url: str | None = None, region: str | None = None,
                    allow_http: bool = False) -> dict[str, str]:
    """LanceDB's object-store options for an S3-compatible endpoint ({} for AWS or a folder)."""
    options = {}
    if endpoint_url:
        options["aws_endpoint"] = endpoint_url
    if region:
        options["aws_region"] = region
    if allow_http or (endpoint_url or "").startswith("http://"):
        options["allow_http"] = "true"
    return options


def connect(uri: str, options: dict[str, str] | None = None) -> Any:
    """The LanceDB connection (the one place that opens one)."""
    import lancedb

    return lancedb.connect(uri, storage_options=options or None)


def in_chunk(table, column: str) -> int:
    """Values per `IN (...)` filter on `column`: `INDEXED_IN_CHUNK` where a BTREE index
    answers it (each filter then reads the index and the rows appended since it was built, not
    the table: 0.6 s for 100,000 ids into 8M rows, measured), else `IN_CHUNK`."""
    try:
        indexed = any(list(i.columns) == [column] for i in table.list_indices())
    except (AttributeError, *STORAGE_ERRORS):  # a table kind without indexes
        indexed = False
    return INDEXED_IN_CHUNK if indexed else IN_CHUNK


def find_in(table, column: str, values, columns: list[str], where: str | None = None,
            row_id: bool = False):
    """`columns` of the rows of `table` whose `column` is one of `values` (any number of
    them: `IN_CHUNK` per filter, or one streamed pass over the table above `STREAM_ABOVE`),
    and `where`; a pyarrow Table (with `_rowid` if asked)."""
    import pyarrow as pa

    values = list(values)
    chunk = in_chunk(table, column)
    if len(values) > STREAM_ABOVE and chunk == IN_CHUNK:
        return find_streamed(table, column, values, columns, where, row_id)
    parts = []
    for start in range(0, len(values), chunk):
        filter_ = in_list(column, values[start:start + chunk])
        query = table.search().where(f"{filter_} AND ({where})" if where else filter_)
        query = query.select(list(columns)).limit(None)
        parts.append((query.with_row_id(True) if row_id else query).to_arrow())
    if not parts:
        names = [*columns, *(["_rowid"] if row_id else [])]
        types = {f.name: f.type for f in table.schema}
        return pa.table({c: pa.array([], types.get(c, pa.uint64())) for c in names})
    return pa.concat_tables(parts)


def stream(table, columns: list[str], where: str | None = None, batch_rows: int = BATCH_ROWS,
           row_id: bool = False):
    """Non-empty pyarrow RecordBatches of `columns` of the rows matching `where`, `batch_rows`
    at a time (with `_rowid` if asked). Memory: one batch, whatever the table holds."""
    query = table.search().select(list(columns)).limit(None)
    if where:
        query = query.where(where)
    if row_id:
        query = query.with_row_id(True)
    for batch in query.to_batches(batch_rows):
        if batch.num_rows:
            yield batch


def find_streamed(table, column: str, values, columns: list[str], where: str | None = None,
                  row_id: bool = False, batch_rows: int = BATCH_ROWS):
    """What `find_in` returns, from one streamed pass over `columns` of the table (`batch_rows`
    rows at a time, kept where `column` is one of `values`): for many values, one scan instead
    of one per `IN_CHUNK`. Memory: one batch plus the values and the rows found."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(list(values), pa.string())
    keep = [*columns, *(["_rowid"] if row_id else [])]
    parts = [pa.Table.from_batches([batch.filter(pc.is_in(batch.column(column),
                                                           value_set=wanted)).select(keep)])
             for batch in stream(table, list(dict.fromkeys([column, *columns])), where,
                                 batch_rows, row_id)]
    parts = [t for t in parts if t.num_rows]
    if not parts:
        types = {f.name: f.type for f in table.schema}
        return pa.table({c: pa.array([], types.get(c, pa.uint64())) for c in keep})
    return pa.concat_tables(parts)


def _signed(rows, key: str, compare: tuple[str, ...]):
    """`rows`' key and one string of its `compare` columns per row (nulls spelled out, so that
    two null values compare equal, as in SQL's IS NOT DISTINCT FROM)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [pc.fill_null(pc.cast(rows.column(c), pa.string()), "\x00") for c in compare]
    signature = (pc.binary_join_element_wise(*parts, "\x1f") if parts
                 else pa.array([""] * rows.num_rows))
    return pa.table({key: rows.column(key), "_signature": signature})


def count_in(table, column: str, values, where: str | None = None) -> int:
    """Rows of `table` whose `column` is one of `values` (and `where`): `IN_CHUNK` per filter,
    or `find_streamed`'s one pass above `STREAM_ABOVE` (each filter scans the table: the
    embeddings' check of a 100k drop took 6.8 s at 2M rows with 50 of them, 1.7 s in one)."""
    values = list(values)
    chunk = in_chunk(table, column)
    if len(values) > STREAM_ABOVE and chunk == IN_CHUNK:
        return find_streamed(table, column, values, [column], where).num_rows
    total = 0
    for start in range(0, len(values), chunk):
        filter_ = in_list(column, values[start:start + chunk])
        total += table.count_rows(f"{filter_} AND ({where})" if where else filter_)
    return total


def delete_in(table, column: str, values, where: str | None = None) -> int:
    """Delete the rows whose `column` is one of `values` (and `where`); returns how many. A
    filter that matches nothing writes no version (rows are counted first, except by
    `_rowid`, which LanceDB cannot count by)."""
    values = list(values)
    deleted = 0
    chunk = in_chunk(table, column)
    for start in range(0, len(values), chunk):
        filter_ = in_list(column, values[start:start + chunk])
        filter_ = f"{filter_} AND ({where})" if where else filter_
        if column == "_rowid" or table.count_rows(filter_):
            deleted += table.delete(filter_).num_deleted_rows
    return deleted


def fetch_rows(table, row_ids: np.ndarray, columns=("item_id", "uri"), chunk: int = 1 << 18):
    """`columns` of the rows with these LanceDB row ids, in the given order (pyarrow Table)."""
    import pyarrow as pa

    parts = list(fetch_row_batches(table, row_ids, columns, chunk))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts)


def fetch_row_batches(table, row_ids: np.ndarray, columns, chunk: int):
    """`columns` of the rows with these row ids, in the given order, `chunk` rows per pyarrow
    Table (a pinned `table`: row ids are addresses within one version)."""
    import pyarrow as pa

    row_ids = np.asarray(row_ids, np.uint64)
    for start in range(0, row_ids.size, chunk):
        want = row_ids[start:start + chunk]
        got = table.take_row_ids(want.tolist()).with_row_id().select(list(columns)).to_arrow()
        have = got["_rowid"].to_numpy()
        order = np.argsort(have)
        at = np.minimum(np.searchsorted(have, want, sorter=order), max(have.size - 1, 0))
        pos = order[at] if have.size else at
        if have.size != want.size or not np.array_equal(have[pos], want):
            raise ValueError(f"rows vanished from the pinned table {table.name}")
        yield got.select(list(columns)).take(pa.array(pos))


def erase_old_versions(table, ids=(), column: str = "item_id") -> int:
    """Remove every version of `table` but the latest, so rows a takedown deleted live in no
    version anyone can open (a Lance delete only hides rows from later versions). Returns how
    many versions were removed.

    Safe beside concurrent writers of the same table: `optimize`'s compaction, which can lose
    a race with a writer's commit, is retried on the latest version; its cleanup never
    deletes files no manifest references yet (`delete_unverified` stays off: they belong to a
    write in progress). A writer or reader still working on a removed version meets a
    missing file, which `transient` names and the store's writes retry on the latest version.
    With `ids`, every version left is read back and the cleanup redone while one of them
    still holds one of the ids (a writer that committed meanwhile): when this returns, no
    readable version holds them."""
    before = len(table.list_versions())
    for attempt in range(RETRIES):
        try:
            table.checkout_latest()
            with warnings.catch_warnings():  # its warning is the hazard the docstring handles
                warnings.simplefilter("ignore", UserWarning)
                # twice: its index step commits a version after its cleanup (scalar indexes
                # gain the compacted fragments), which the second cleanup then leaves alone
                for _ in range(2):
                    table.optimize(cleanup_older_than=timedelta(0), delete_unverified=False)
                    table.checkout_latest()
                    if len(table.list_versions()) == 1:
                        break
            held = _versions_holding(table, ids, column) if len(ids) else []
        except STORAGE_ERRORS as exc:
            if attempt == RETRIES - 1 or not transient(exc, attempt):
                raise
            continue
        if not held:
            return max(before - len(table.list_versions()), 0)
        delete_in(table, column, ids)  # a writer that read before the takedown put them back
    raise TakedownIncomplete(f"{table.name}: versions {held} still hold taken-down items "
                             f"after {RETRIES} cleanups")


def _versions_holding(table, ids, column: str) -> list[int]:
    """The versions of `table` in which one of `ids` is readable (each version checked out
    in turn, then the latest again)."""
    held = []
    for version in [v["version"] for v in table.list_versions()]:
        table.checkout(int(version))
        if count_in(table, column, ids):
            held.append(int(version))
    table.checkout_latest()
    return held


class TakedownIncomplete(RuntimeError):
    """A readable version still holds a taken-down item: the takedown did not happen."""


def transient(exc: BaseException, attempt: int | None = None) -> bool:
    """A storage failure that a retry on the latest version heals: a commit that lost a race
    with a concurrent commit, or a file of an older version that a takedown's cleanup
    removed while this process still read that version. With `attempt`, first waits a
    random moment, up to 50 ms x 2^attempt: writers that retry at once on a slow object
    store (moto's S3 server) lost every retry together."""
    text = str(exc).lower()
    lost = ("incompatible transaction" in text or "conflict" in text
            or ("not found" in text and (".lance" in text or "/data/" in text)))
    if lost and attempt is not None:
        import random
        import time

        time.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 6)))
    return lost


def retried(table, operation):
    """`operation()` on the latest version of `table`, again (up to RETRIES times) while it
    fails on a transient storage error (`transient`)."""
    for attempt in range(RETRIES):
        try:
            table.checkout_latest()
            return operation()
        except STORAGE_ERRORS as exc:
            if attempt == RETRIES - 1 or not transient(exc, attempt):
                raise
    raise AssertionError("unreachable")


def keep_indexed(table, columns) -> None:
    """BTREE indexes on `columns` of `table`, created when missing and rebuilt when too many
    rows came since (`INDEX_LAG`). An index build reads one column of the table and rewrites
    no data (row addresses stay what claims compare). Best effort: a build that loses a race
    with a concurrent commit is tried again at the next write."""
    try:
        built = {i.columns[0]: i for i in table.list_indices() if len(i.columns) == 1}
        stale = [c for c in columns if c not in built or built[c].num_unindexed_rows > max(
            INDEX_LAG_MIN_ROWS, INDEX_LAG * built[c].num_indexed_rows)]
        if not stale or not table.count_rows():
            return
        with warnings.catch_warnings():  # create_scalar_index: deprecated alias, same call
            warnings.simplefilter("ignore")
            for column in stale:
                table.create_scalar_index(column, index_type="BTREE", replace=True)
    except STORAGE_ERRORS as exc:
        if not transient(exc):
            raise


def claim_creation(db: Any, name: str) -> bool | None:
    """Claim the creation of table `name` of connection `db`, atomically across processes
    and machines: True for the one caller that gets it, False for every other, None where the
    database's storage offers no create-if-absent (the caller then creates unguarded). The
    claim is an empty object `<uri>/_creation_claims/<name>`, written with O_EXCL on a folder
    and with S3's conditional put (If-None-Match: *) on s3://; it is never removed."""
    uri = str(db.uri)
    if uri.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        options = dict(getattr(db, "storage_options", None) or {})
        client = boto3.client("s3", endpoint_url=options.get("aws_endpoint"),
                              region_name=options.get("aws_region"))
        key = "/".join(part for part in (prefix.strip("/"), CREATION_CLAIMS, name) if part)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            # 412: the object exists; 409: a concurrent conditional put of the same key won
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if code == "NotImplemented":  # an S3-compatible store without conditional puts
                return None
            raise
        return True
    if "://" in uri and not uri.startswith("file://"):
        return None  # gs://, az://, memory://: no claim; creates race as in LanceDB itself
    import os
    from pathlib import Path

    folder = Path(uri.removeprefix("file://")) / CREATION_CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class Database:
    """Table mechanics over one LanceDB connection; no pool knowledge."""

    def __init__(self, db: Any):
        self.db = db

    def names(self) -> list[str]:
        """Names of every table of the database (all pages of the listing)."""
        names, token = [], None
        while True:
            page = self.db.list_tables(page_token=token, limit=1000)
            names += list(page.tables)
            token = page.page_token
            if not token:
                return names

    def open(self, name: str, version: int | None = None) -> Any | None:
        """The table (pinned at `version` when given), or None when it does not exist."""
        try:
            table = self.db.open_table(name)
        except (ValueError, FileNotFoundError):
            return None
        if version is not None:
            known = [v["version"] for v in table.list_versions()]
            if int(version) not in known:
                raise ValueError(f"table {name} has no version {version} (versions: {known}; "
                                 "a takedown removes every older version of the tables it "
                                 "touched, docs/SUBSETS.md)")
            table.checkout(int(version))
        return table

    def table_for(self, name: str, schema: Any) -> Any:
        """The table, created empty with `schema` when missing; columns of `schema` that a
        table written by an older version lacks are added. Data is never written by the
        create itself. Safe when many processes need a missing table at once (`_create`)."""
        table = self.open(name)
        if table is None:
            table = self._create(name, schema)
        missing = [f for f in schema if f.name not in table.schema.names]
        for f in missing:
            if f.name in EMPTY_STRING_COLUMNS:
                table.add_columns({f.name: "CAST('' AS STRING)"})
            else:
                table.add_columns(f.with_nullable(True))
        return table

    def _create(self, name: str, schema: Any) -> Any:
        """Create a missing table once, whoever else needs it at the same moment. Racing
        LanceDB creates are not harmless: on S3 the loser's empty create commits as an
        Overwrite on top of the winner's, dropping rows appended in between (measured in
        issue 17; lance-format/lance#4451). So one process claims the creation
        (`claim_creation`) and creates; the others wait until the table opens. A claimer
        that died before creating is outwaited after CREATE_WAIT_S: the waiter creates it."""
        import time

        claimed = claim_creation(self.db, name)
        if claimed is False:
            deadline = time.monotonic() + CREATE_WAIT_S
            while time.monotonic() < deadline:
                table = self.open(name)
                if table is not None:
                    return table
                time.sleep(0.1)
        try:
            return self.db.create_table(name, schema=schema, exist_ok=True)
        except (ValueError, OSError, RuntimeError):  # created meanwhile: open it
            return self.db.open_table(name)

    def read(self, name: str, columns: list[str], where: str | None = None) -> Any | None:
        """Selected columns (and rows) as a pyarrow Table; None when the table does not exist."""
        table = self.open(name)
        if table is None:
            return None
        query = table.search().select(columns).limit(None)
        if where:
            query = query.where(where)
        return query.to_arrow()

    def append(self, name: str, data: Any) -> Any:
        """Add the rows of `data` (created empty first when missing); returns the table."""
        table = self.table_for(name, data.schema)
        table.add(data)
        return table

    def overwrite(self, name: str, data: Any) -> Any:
        """Replace the whole table in one new version (readers see old or new, never a mix)."""
        return self.db.create_table(name, data, mode="overwrite")

    def replace_rows(self, name: str, data: Any, key: str, scope: str) -> Any:
        """Make the rows matching SQL filter `scope` equal to `data` (a pyarrow Table), atomically.

        One merge_insert commit: rows of `data` are upserted on `key`, rows in `scope` that are
        not in `data` are deleted. Re-running with the same data changes nothing; a crash leaves
        either the old or the new version, never both (no duplicate keys). A commit that
        conflicts with a concurrent writer's is retried.
        """
        for attempt in range(RETRIES):
            table = self.table_for(name, data.schema)
            try:
                if data.num_rows == 0:
                    table.delete(scope)
                    return table
                (
                    table.merge_insert(key)
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(scope)
                    .execute(data)
                )
                return table
            except STORAGE_ERRORS as exc:
                if attempt == RETRIES - 1 or not transient(exc, attempt):
                    raise
        raise AssertionError("unreachable")

    def claim_rows(
        self, name: str, data: Any, key: str, owner: str, compare: tuple[str, ...] = ()
    ) -> tuple[Any, dict[str, str]]:
        """Insert the rows of `data` (a pyarrow Table, unique `key`s, one value in column `owner`)
        whose key no other owner holds; returns (table, {key: owner that holds it}).

        Rows the same owner already holds are replaced when a `compare` column changed; rows of
        another owner are never touched; this owner's rows whose key is not in `data` are
        deleted. The outcome is read back from the table after the commit, so two writers that
        race on the same keys never both win one: LanceDB may commit concurrent inserts of one
        key side by side, and the row stored first (lowest row address: fragments are numbered
        in commit order) wins; a writer that finds its own row behind another deletes it.

        Memory: this owner's rows and `data`, never the table: the writes are a delete of the
        leaving keys and an upsert found through the key's index, and who holds each key is
        read back by key (a `merge_insert` without the index, or with a by-source delete,
        reads the whole table through its join: 3.7 GiB into a 2M-row raw table of 384-d
        values, measured).
        Time: the key and owner columns are BTREE-indexed (`keep_indexed`), so the owner's rows
        and the read-back are index lookups plus the rows appended since the index was built.
        """
        import pyarrow.compute as pc

        me = data.column(owner)[0].as_py() if data.num_rows else None
        for attempt in range(RETRIES):
            table = self.table_for(name, data.schema)
            if data.num_rows == 0:
                return table, {}
            try:
                keep_indexed(table, (key, owner))
                mine = table.search().where(f"{owner} = {sql_str(me)}").select(
                    [key, *compare]).limit(None).to_arrow()
                # this owner's rows that left the delivery go (one commit); unchanged ones
                # stay; changed and new ones are one upsert commit, which updates only this
                # owner's rows and inserts keys nobody holds: no version lacks a row that
                # stays. Keys inserted by two owners at once are resolved after the commit
                unchanged = _signed(mine, key, compare).join(
                    _signed(data, key, compare), keys=[key, "_signature"], join_type="inner")
                gone = pc.filter(mine.column(key), pc.invert(pc.is_in(
                    mine.column(key), value_set=data.column(key)))).to_pylist()
                delete_in(table, key, gone, f"{owner} = {sql_str(me)}")
                fresh = data.filter(pc.invert(pc.is_in(data.column(key),
                                                       value_set=unchanged.column(key))))
                if fresh.num_rows:
                    (table.merge_insert(key)
                     .when_matched_update_all(where=f"target.{owner} = source.{owner}")
                     .when_not_matched_insert_all().execute(fresh))
            except STORAGE_ERRORS as exc:
                if attempt == RETRIES - 1 or not transient(exc, attempt):
                    raise
                continue
            holders = retried(table, lambda t=table: self._resolve(t, data, key, owner, me))
            if len(holders) == data.num_rows or attempt == RETRIES - 1:
                return table, holders
            # keys held by nobody: a concurrent table creation overwrote our commit; again
        raise AssertionError("unreachable")

    @staticmethod
    def _resolve(table: Any, data: Any, key: str, owner: str, me: Any) -> dict[str, str]:
        """{key: owner} of the row that holds each key of `data`; this owner's rows behind
        another row of the same key are deleted."""
        import pyarrow.compute as pc

        found = find_in(table, key, data.column(key).to_pylist(), [key, owner], row_id=True)
        ordered = found.take(pc.sort_indices(found["_rowid"])).to_pylist()
        holders: dict[str, str] = {}
        mine_behind: list[int] = []
        for row in ordered:
            if row[key] not in holders:
                holders[row[key]] = row[owner]
            elif row[owner] == me:
                mine_behind.append(row["_rowid"])
        delete_in(table, "_rowid", mine_behind, f"{owner} = {sql_str(me)}")
        return holders

    def pool(self, name: str):
        """The `PoolStore` of pool `name` over this connection."""
        from .pool import PoolStore

        return PoolStore(self.db, name)
