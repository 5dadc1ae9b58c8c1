"""One storage home per pool: every LanceDB table of a pool, its schema and its queries.

`connect` is the one place that opens LanceDB (a folder or an object-store URI with its storage
options, resolved by the caller: the Dagster resource, the CLI, the loader). A `Database` holds
the table mechanics (create if missing, once across processes; atomic replace of a scope;
insert-if-absent claims; the chunked `IN (...)` lookup); a `PoolStore` adds the pool's tables
behind named methods: raw rows and their claims, duplicates, quarantine, embeddings, the fit
record, levels, assignments and their log, subset versions, and the takedown audit. Every
table's schema is declared once, in `schema`; rows are built against it (`rows`), so two
writers cannot drift apart.

Tables (names from `naming.table(pool, kind)` = `<pool>__<kind>`): see docs/ARCHITECTURE.md,
"Who owns which table".
"""

from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from . import naming
from .config import HierarchyConfig
from .hashing import json_sha256
from .hierarchy import Hierarchy
from .sql import in_list, sql_str

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
# columns added to tables written before they existed, with '' (not null) for their old rows
EMPTY_STRING_COLUMNS = ("model_hash", "signature", "reason", "drift", "run")
# Lance's create is not atomic (lance-format/lance#4451): one process claims each table's
# creation (`claim_creation`) and the others wait this long for the table to appear
CREATE_WAIT_S = 60.0
CREATION_CLAIMS = "_creation_claims"  # beside the tables; LanceDB lists only `*.lance`


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


# --- schemas ---------------------------------------------------------------------------------


def schema(kind: str, dim: int = 0, n_levels: int = 0):
    """The pyarrow schema of a pool table kind (`subset_<name>` and `level_<l>` by prefix).
    `dim`: vector length (embeddings, levels); `n_levels`: tree depth (assignments, subsets)."""
    import pyarrow as pa

    s, i64, f32 = pa.string(), pa.int64(), pa.float32()
    if kind.startswith("subset_"):
        kind = "subset"
    elif kind.startswith("level_"):
        kind = "level"
    fields = {
        # what was delivered; `text` / `values` (a precomputed vector, not named `vector`:
        # LanceDB refuses NaN in a vector column, and raw keeps what was delivered) carry what
        # the embedder needs, so a drop's files are parsed once
        "raw": [("item_id", s), ("drop", s), ("uri", s), ("size", i64), ("source", s),
                ("row", i64), ("meta", s), ("ingested_at", s), ("text", s),
                ("values", pa.list_(f32))],
        "duplicates": [("key", s), ("item_id", s), ("drop", s), ("uri", s), ("first_drop", s)],
        "quarantine": [("key", s), ("drop", s), ("stage", s), ("item_id", s), ("uri", s),
                       ("reason", s)],
        "embeddings": [("item_id", s), ("drop", s), ("uri", s),
                       ("vector", pa.list_(f32, dim)), ("model", s), ("model_hash", s)],
        "fits": [("fit_version", i64), ("created_at", s), ("n_items", i64),
                 ("mean_distance", pa.float64()), ("drops", s), ("config", s), ("sizes", s),
                 ("report", s), ("tree", pa.large_binary()), ("model_hash", s),
                 ("signature", s), ("reason", s), ("drift", s)],
        "level": [("cluster_id", pa.int32()), ("parent", pa.int32()), ("size", i64),
                  ("n_children", pa.int32()), ("vector", pa.list_(f32, dim)),
                  ("fit_version", i64)],
        "assignments": [("item_id", s), ("drop", s), ("uri", s), ("distance", f32),
                        *((f"level_{lv + 1}", pa.int32()) for lv in range(n_levels)),
                        ("fit_version", i64), ("item_key", pa.uint64())],
        "assignment_log": [("key", s), ("drop", s), ("fit_version", i64), ("items", i64),
                           ("new_items", i64), ("new_distance_sum", pa.float64()),
                           ("mismatched_items", i64), ("other_model", s)],
        "subset": [("item_id", s), ("uri", s), ("weight", i64),
                   ("path", pa.list_(i64, n_levels)), ("leaf", i64), ("quota", i64),
                   ("rank", i64), ("leaf_size", i64), ("item_key", pa.uint64()),
                   ("fit_version", i64)],
        "takedowns": [("item_id", s), ("reason", s), ("at", s), ("by", s), ("run", s)],
        "takedown_content": [("item_id", s), ("content_key", s)],
        # semantic dedup (curation.dedup): one row per item of the current fit; a kept item
        # is its own representative (similarity 1); config_key = the fit and dedup settings
        # the row was computed under
        "near_duplicates": [("item_id", s), ("drop", s), ("leaf", pa.int32()),
                            ("item_key", pa.uint64()), ("representative", s),
                            ("representative_key", pa.uint64()), ("similarity", f32),
                            ("fit_version", i64), ("config_key", pa.uint64())],
    }
    return pa.schema(fields[kind])


def rows(kind: str, columns: dict, dim: int = 0, n_levels: int = 0):
    """A pyarrow Table of `kind`'s schema from {column: values} (lists, numpy or arrow)."""
    import pyarrow as pa

    target = schema(kind, dim, n_levels)
    return pa.table({f.name: _as_array(columns[f.name], f.type) for f in target}, schema=target)


def _as_array(values, type_):
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.cast(type_) if values.type != type_ else values
    if isinstance(values, np.ndarray) and pa.types.is_fixed_size_list(type_):
        return vector_array(values)
    return pa.array(values, type_)


LIST_VALUES_MAX = 2**31 - 1  # values one list<float32> array can hold (int32 offsets)


def list_array(vectors: list) -> Any:
    """Float32 arrays of any lengths (None for none) -> pyarrow list<float32>: one
    concatenation of the values and their offsets, not a conversion row by row; chunked past
    `LIST_VALUES_MAX` values (a drop of 5.6M x 384)."""
    import pyarrow as pa

    sizes = np.fromiter((0 if v is None else len(v) for v in vectors), np.int64, len(vectors))
    offsets = np.zeros(len(vectors) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] > LIST_VALUES_MAX and len(vectors) > 1:  # int32 offsets: chunks
        half = len(vectors) // 2
        parts = [list_array(vectors[:half]), list_array(vectors[half:])]
        return pa.chunked_array([c for part in parts for c in
                                 (part.chunks if isinstance(part, pa.ChunkedArray) else [part])])
    present = [v for v in vectors if v is not None]
    flat = (np.concatenate(present).astype(np.float32, copy=False) if present
            else np.zeros(0, np.float32))
    missing = np.fromiter((v is None for v in vectors), bool, len(vectors))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat),
                                    mask=pa.array(missing) if missing.any() else None)


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


def canonical_order(item_ids) -> np.ndarray:
    """Row order by item id: fits and samples must not depend on storage order (a re-run drop
    rewrites its rows at the end of the table)."""
    import pyarrow.compute as pc

    return pc.sort_indices(item_ids).to_numpy()


# --- chunked lookups -------------------------------------------------------------------------


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
                table.optimize(cleanup_older_than=timedelta(0), delete_unverified=False)
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


# Scalar (BTREE) indexes of the per-drop tables: the key a drop's rows are upserted on and
# looked up by, and the column its scope filter reads, so that a drop's write and lookups
# read the index and the rows appended since, not the whole table
INDEXED_COLUMNS = {"raw": ("item_id", "drop"), "embeddings": ("item_id", "drop"),
                   "assignments": ("item_id", "drop"), "near_duplicates": ("item_id", "leaf")}
# an index is rebuilt once the rows appended since it was built exceed this share of the
# rows it covers (and INDEX_LAG_MIN_ROWS): rebuilds cost O(table) per O(table / 8) new rows
INDEX_LAG = 0.125
INDEX_LAG_MIN_ROWS = 65536


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


# --- the database ----------------------------------------------------------------------------


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

    def pool(self, name: str) -> PoolStore:
        return PoolStore(self.db, name)


# --- the fit record --------------------------------------------------------------------------


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


def fit_signature(drop_counts: dict[str, int], model_hashes: dict[str, int], config) -> str:
    """What a fit depends on: the drops (and their sizes), the embedding model, the config.

    Two fits with the same signature see the same items (item ids are content addresses and a
    drop's rows are replaced atomically), so a second fit may reuse the first: that is how a
    run that crashed after saving its fit heals without fitting again.
    """
    payload = {"drops": sorted(drop_counts.items()), "models": sorted(model_hashes),
               "config": config.model_dump(mode="json")}
    return json_sha256(payload, separators=None)[:32]  # json.dumps' default: stored signatures


@dataclass(frozen=True)
class SubsetVersion:
    version: int
    rows: object  # pyarrow Table sorted by item_id, taken-down items left out
    taken_down_excluded: int


# --- one pool --------------------------------------------------------------------------------


class PoolStore(Database):
    """The tables of one pool, behind named methods."""

    def __init__(self, db: Any, pool: str):
        super().__init__(db)
        self.pool_name = pool

    @classmethod
    def open_uri(cls, uri: str, pool: str, options: dict[str, str] | None = None) -> PoolStore:
        return cls(connect(uri, options), pool)

    @classmethod
    def from_settings(cls, pool: str, uri: str | None = None) -> PoolStore:
        """For the edges outside Dagster (CLI, loader): `uri`, else the settings' LanceDB uri,
        with the settings' S3 endpoint."""
        from .settings import lancedb_uri, s3_endpoint_url

        endpoint = s3_endpoint_url()
        return cls.open_uri(lancedb_uri(uri), pool,
                            storage_options(endpoint, allow_http=bool(endpoint)))

    def name(self, kind: str) -> str:
        return naming.table(self.pool_name, kind)

    def table(self, kind: str, version: int | None = None) -> Any | None:
        """The pool's `kind` table (pinned at `version`), or None when it does not exist."""
        return self.open(self.name(kind), version)

    def lookup(self, kind: str, column: str, values, columns: list[str],
               where: str | None = None):
        """`columns` of the `kind` rows whose `column` is one of `values` (None: no table)."""
        table = self.table(kind)
        if table is None:
            return None
        present = [c for c in columns if c in table.schema.names]  # older tables lack some
        return find_in(table, column, values, present, where)

    def query(self, kind: str, where: str, columns: list[str] | None = None) -> list[dict]:
        """Rows of `kind` matching `where` as dicts (the columns it has of `columns`)."""
        table = self.table(kind)
        if table is None:
            return []
        query = table.search().where(where).limit(None)
        if columns is not None:
            query = query.select([c for c in columns if c in table.schema.names])
        return query.to_arrow().to_pylist()

    def drop_counts(self, kind: str = "embeddings") -> dict[str, int]:
        """Rows per drop of a table (reads the one `drop` column)."""
        return self._value_counts(kind, "drop")

    def model_hash_counts(self) -> dict[str, int]:
        """Rows per embedding model hash of the embeddings table (reads the one column)."""
        return self._value_counts("embeddings", "model_hash")

    def _value_counts(self, kind: str, column: str) -> dict[str, int]:
        """Rows per value of one column, counted batch by batch (memory: one batch)."""
        return dict(self._counts_of(self.table(kind), column, None))

    def snapshot(self, kinds) -> dict[str, Any | None]:
        """The pool's `kinds` tables, each pinned at its version now (None: no such table):
        a reader that reads them all, and checks `assignment_gaps` on them, reads one
        consistent state whatever is committed meanwhile."""
        pinned = {}
        for kind in kinds:
            table = self.table(kind)
            if table is not None:
                table.checkout(table.version)
            pinned[kind] = table
        return pinned

    def assignment_gaps(self, fit, embeddings: Any, assignments: Any) -> dict[str, str]:
        """{drop: what is missing} for every drop whose embeddings (of the tree's model) are
        not all assigned at `fit` in these (pinned) tables: empty when the snapshot is
        complete. A subset, an evaluation or a report is only drawn from a complete one: a
        drop being re-assigned after a refit, or between its embeddings and its assignment,
        would be missing from it. One streamed pass over two columns of each table (memory:
        one batch plus a count per drop)."""
        where = f"model_hash = {sql_str(fit.model_hash)}" if fit.model_hash else None
        embedded = self._counts_of(embeddings, "drop", where)
        placed = self._counts_of(assignments, "drop", f"fit_version = {int(fit.fit_version)}")
        gaps = {}
        for drop, n in sorted(embedded.items()):
            have = placed.get(drop, 0)
            if have != n:
                gaps[drop] = (f"{have} of {n} embedded items assigned at fit "
                              f"{fit.fit_version}")
        return gaps

    @staticmethod
    def _counts_of(table: Any, column: str, where: str | None) -> Counter:
        """Rows per value of one column of a (pinned) table, batch by batch."""
        import pyarrow.compute as pc

        counts: Counter = Counter()
        if table is None or column not in table.schema.names:
            return counts
        for batch in stream(table, [column], where):
            for v in pc.value_counts(batch.column(column)).to_pylist():
                counts[str(v["values"])] += int(v["counts"])
        return counts

    def vector_batches(self, kind: str, where: str | None = None,
                       columns=("item_id", "drop", "uri"), batch_rows: int = BATCH_ROWS):
        """The (`where`) rows of a vector table, `batch_rows` at a time: (dict of pyarrow
        columns, (m, d) float32 array) per batch. Memory: one batch (batch_rows x d x 4 B),
        whatever the table holds."""
        table = self.table(kind)
        if table is None:
            return
        for batch in stream(table, [*columns, "vector"], where, batch_rows):
            yield ({c: batch.column(c) for c in columns}, vectors_of(batch.column("vector")))

    def sample_vectors(self, kind: str, size: int, seed: int, batch_rows: int = BATCH_ROWS):
        """A seeded, order-free sample of `size` rows of a vector table (every row when it
        holds fewer): the rows whose keyed hash of item_id (`selection.rank_hash` of
        `item_keys`, keyed by `seed`) ranks lowest, so the same items and seed give the same
        sample whatever order they arrived in. One pass over the item_id column keeps only the
        best `size` (hash, row id) pairs; the vectors are then read by row id from the same
        pinned version. Returns (item ids in item-id order, (size, d) float32 in that order,
        rows the table held), or None when the table does not exist. Memory: the sample
        (size x d x 4 B) plus one batch; never the table."""
        import pyarrow as pa

        from .selection import item_keys, rank_hash

        table = self.table(kind)
        if table is None:
            return None
        table.checkout(table.version)  # one version: row ids are addresses within it
        best_keys, best_rows = np.empty(0, np.uint64), np.empty(0, np.uint64)
        scanned = 0
        query = table.search().select(["item_id"]).with_row_id(True).limit(None)
        for batch in query.to_batches(batch_rows):
            scanned += batch.num_rows
            best_keys = np.concatenate([best_keys,
                                        rank_hash(item_keys(batch.column("item_id")), seed)])
            best_rows = np.concatenate([best_rows,
                                        batch.column("_rowid").to_numpy().astype(np.uint64)])
            if best_keys.size > size:
                keep = np.argpartition(best_keys, size - 1)[:size]
                best_keys, best_rows = best_keys[keep], best_rows[keep]
        # item-id order, as a fit over every item reads them (the fit must not see row order)
        best_rows.sort()
        ids = fetch_rows(table, best_rows, ("item_id",))["item_id"]
        order = canonical_order(ids)
        ordered_rows = best_rows[order]
        x = np.empty((ordered_rows.size, table_dim(table)), np.float32)
        at = 0
        for part in fetch_row_batches(table, ordered_rows, ("vector",), TAKE_ROWS):
            x[at:at + part.num_rows] = vectors_of(part.column("vector"))
            at += part.num_rows
        return ids.take(pa.array(order)), x, scanned

    # -- raw, duplicates, quarantine --

    def raw_holders(self, ids, drop: str) -> dict[str, str]:
        """{item_id: drop} of those of `ids` whose raw row another drop holds."""
        found = self.lookup("raw", "item_id", sorted(ids), ["item_id", "drop"],
                            f"drop != {sql_str(drop)}")
        if found is None:
            return {}
        return dict(zip(found["item_id"].to_pylist(), found["drop"].to_pylist(), strict=True))

    def reclaimable(self, held: dict[str, str]) -> set[str]:
        """Ids among `held` ({item_id: drop holding its raw row}) whose holder's embeddings
        step quarantined them and that have no embedding: a re-delivery is not a duplicate."""
        if not held:
            return set()
        found = self.lookup("quarantine", "item_id", sorted(held), ["item_id", "drop"],
                            "stage = 'embeddings'")
        if found is None:
            return set()
        bad = {i for i, d in zip(found["item_id"].to_pylist(), found["drop"].to_pylist(),
                                 strict=True) if held.get(i) == d}
        embedded = self.lookup("embeddings", "item_id", sorted(bad), ["item_id"])
        return bad - set(embedded["item_id"].to_pylist() if embedded is not None else [])

    def release_raw(self, held: dict[str, str]) -> None:
        """Delete the raw rows {item_id: drop} (another drop takes them over)."""
        table = self.table("raw")
        ids = sorted(held)
        for start in range(0, len(ids) if table is not None else 0, IN_CHUNK):
            table.delete(" OR ".join(f"(item_id = {sql_str(i)} AND drop = {sql_str(held[i])})"
                                     for i in ids[start:start + IN_CHUNK]))

    def claim_raw(self, drop: str, data) -> tuple[Any, dict[str, str]]:
        """Insert-if-absent of the drop's raw rows: (table, {item_id: drop holding it})."""
        table, holders = self.claim_rows(self.name("raw"), data, "item_id", "drop",
                                         compare=("uri", "size", "source", "row", "meta"))
        if data.num_rows == 0:  # nothing of this drop may stay in the table
            table.delete(f"drop = {sql_str(drop)}")
        return table, holders

    def raw_rows(self, drop: str, columns: list[str]):
        """The drop's raw rows (`columns` it has), or None before the first ingest."""
        table = self.table("raw")
        if table is None:
            return None
        present = [c for c in columns if c in table.schema.names]
        return table.search().where(f"drop = {sql_str(drop)}").select(present).limit(
            None).to_arrow()

    def write_duplicates(self, drop: str, duplicates: list[tuple[str, str, str]]) -> Any:
        """Replace the drop's duplicate rows with [(item_id, uri, first_drop)]."""
        data = rows("duplicates", {
            "key": [f"{drop}|{n}|{uri}" for n, (_, uri, _) in enumerate(duplicates)],
            "item_id": [i for i, _, _ in duplicates],
            "drop": [drop] * len(duplicates),
            "uri": [u for _, u, _ in duplicates],
            "first_drop": [f for _, _, f in duplicates],
        })
        return self.replace_rows(self.name("duplicates"), data, "key",
                                 f"drop = {sql_str(drop)}")

    def write_quarantine(self, drop: str, stage: str, quarantined: list[tuple[str, str]],
                         ids: list[str] | None = None) -> Any:
        """Replace this drop's quarantine rows of one stage with [(uri, reason)] (item ids
        aligned, "" when unknown). Each stage writes only its own rows of its own drop."""
        data = rows("quarantine", {
            "key": [f"{stage}|{drop}|{n}|{u}" for n, (u, _) in enumerate(quarantined)],
            "drop": [drop] * len(quarantined),
            "stage": [stage] * len(quarantined),
            "item_id": ids or [""] * len(quarantined),
            "uri": [u for u, _ in quarantined],
            "reason": [r for _, r in quarantined],
        })
        scope = f"drop = {sql_str(drop)} AND stage = {sql_str(stage)}"
        return self.replace_rows(self.name("quarantine"), data, "key", scope)

    # -- embeddings, levels, assignments --

    def rewrite_drop(self, kind: str, drop: str, data) -> Any:
        """Make the drop's rows of `kind` equal to `data` (none when empty), with no moment in
        which a reader sees the drop without its rows (`_replace_scope`)."""
        table = self.table_for(self.name(kind), data.schema)
        return self._replace_scope(table, kind, f"drop = {sql_str(drop)}", data)

    @staticmethod
    def _replace_scope(table: Any, kind: str, scope: str, data, key: str = "item_id") -> Any:
        """Make the rows matching the SQL filter `scope` equal to `data` (rows inside it,
        unique `key`s): one commit deletes the scope's rows whose key leaves it (none on a
        re-run or a first write), one upsert commit (`merge_insert` on `key`) writes the
        rest. Every version a reader can open holds the scope's old rows, its old rows less
        those leaving, or its new rows: never the scope without its rows.

        Why not one `merge_insert ... when_not_matched_by_source_delete(scope)`: its join reads
        the whole table (3.6 GiB and 7.5 s for a 100k-row drop into 8M x 64-d rows, measured;
        0.46 s and 0.44 GiB for the upsert alone, the same as into 2M). The upsert finds the
        keys through the BTREE index on `key` (`keep_indexed`) and the index-less tail
        appended since it was built, so it costs the drop, not the table.

        Each commit is retried on the latest version when it loses a race (`transient`); the
        write is redone when the latest version does not hold exactly `data`'s rows in the
        scope (an Overwrite by a create that went unguarded: a claimer outwaited after a
        crash, a store without create-if-absent)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for attempt in range(RETRIES):
            try:
                table.checkout_latest()
                keep_indexed(table, INDEXED_COLUMNS.get(kind, (key,)))
                held = table.search().where(scope).select([key]).limit(None).to_arrow()
                leaving = pc.filter(held[key], pc.invert(pc.is_in(
                    held[key], value_set=data[key] if data.num_rows else pa.array(
                        [], held.schema.field(key).type))))
                if len(leaving):
                    delete_in(table, key, pc.unique(leaving).to_pylist(), scope)
                if data.num_rows:
                    (table.merge_insert(key).when_matched_update_all()
                     .when_not_matched_insert_all().execute(data))
                table.checkout_latest()
                if table.count_rows(scope) == data.num_rows:
                    return table
                if attempt == RETRIES - 1:
                    raise RuntimeError(f"{table.name}: the rows of {scope[:80]} did not "
                                       f"stay after {RETRIES} writes (concurrent overwrites)")
            except STORAGE_ERRORS as exc:
                if attempt == RETRIES - 1 or not transient(exc, attempt):
                    raise
        raise AssertionError("unreachable")

    def write_level(self, level: int, data) -> Any:
        return self.overwrite(self.name(f"level_{level}"), data)

    def write_assignment_log(self, fit_version: int, drops: list[str], data) -> Any:
        scope = f"fit_version = {int(fit_version)} AND {in_list('drop', drops)}"
        return self.replace_rows(self.name("assignment_log"), data, "key", scope)

    def assignment_log(self, columns: list[str], where: str | None = None):
        return self.read(self.name("assignment_log"), columns, where)

    # -- the fit record --

    def save_fit(self, record: FitRecord) -> int:
        """Append a fit to `<pool>__fits`; returns the table version."""
        h = record.hierarchy
        blob = io.BytesIO()
        arrays = {f"centroids_{i}": c for i, c in enumerate(h.centroids)}
        arrays.update({f"parents_{i}": p for i, p in enumerate(h.parents)})
        np.savez(blob, **arrays)
        row = rows("fits", {
            "fit_version": [record.fit_version],
            "created_at": [datetime.now(UTC).isoformat()],
            "n_items": [record.n_items],
            "mean_distance": [record.mean_distance],
            "drops": [json.dumps(record.drops)],
            "config": [h.config.model_dump_json()],
            "sizes": [json.dumps(record.sizes)],
            "report": [json.dumps(record.report)],
            "tree": [blob.getvalue()],
            "model_hash": [record.model_hash],
            "signature": [record.signature],
            "reason": [record.reason],
            "drift": [json.dumps(record.drift)],
        })
        return self.append(self.name("fits"), row).version

    def _latest_fit_row(self, columns: list[str] | None) -> dict | None:
        latest = self.latest_fit_version()
        if latest is None:
            return None
        table = self.table("fits")
        query = table.search().where(f"fit_version = {latest}").limit(1)
        if columns is not None:
            query = query.select([c for c in columns if c in table.schema.names])
        return query.to_arrow().to_pylist()[0]

    def latest_fit_version(self) -> int | None:
        """The latest fit's version (one column read), None before the first fit."""
        table = self.table("fits")
        if table is None:
            return None
        versions = table.search().select(["fit_version"]).limit(None).to_arrow()
        return int(np.max(versions.column("fit_version").to_numpy())) if versions.num_rows \
            else None

    def load_fit(self) -> FitRecord | None:
        """The latest fit of the pool, or None before the first fit."""
        row = self._latest_fit_row(None)
        if row is None:
            return None
        config = HierarchyConfig.model_validate_json(row["config"])
        arrays = np.load(io.BytesIO(row["tree"]))
        hierarchy = Hierarchy(
            config=config,
            centroids=[arrays[f"centroids_{i}"] for i in range(config.n_levels)],
            parents=[arrays[f"parents_{i}"] for i in range(config.n_levels - 1)],
        )
        return FitRecord(
            fit_version=int(row["fit_version"]),
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

    def latest_fit_summary(self):
        """The latest fit's scalars (no tree blob): a `curation.refit.FitSummary`, or None."""
        from .refit import FitSummary

        row = self._latest_fit_row(["fit_version", "n_items", "mean_distance", "model_hash",
                                    "config"])
        if row is None:
            return None
        return FitSummary(fit_version=int(row["fit_version"]), n_items=int(row["n_items"]),
                          mean_distance=float(row["mean_distance"]),
                          model_hash=row.get("model_hash") or "", config=row.get("config") or "")

    # -- subsets --

    def subset_names(self) -> list[str]:
        prefix = self.name("subset_")
        return sorted(n[len(prefix):] for n in self.names() if n.startswith(prefix))

    def write_subset(self, subset: str, data) -> Any:
        """One new version of the subset's table (the whole table)."""
        return self.overwrite(naming.subset_table(self.pool_name, subset), data)

    def subset_table(self, subset: str, version: int | None = None) -> Any | None:
        return self.open(naming.subset_table(self.pool_name, subset), version)

    def subset_version(self, subset: str, version: int | None = None,
                       columns=("item_id", "uri", "weight", "path")) -> SubsetVersion:
        """One subset table version (the latest when `version` is None), rows sorted by
        item_id, without the items taken down since: whatever version a reader opens,
        exports and the training loader never serve a taken-down item."""
        import pyarrow.compute as pc

        table = self.subset_table(subset, version)
        if table is None:
            raise ValueError(f"no subset table {naming.subset_table(self.pool_name, subset)} "
                             "(materialise the subset first)")
        got = table.to_arrow().select(list(dict.fromkeys([*columns, "item_id"])))
        down = self.taken_down_ids()
        n = got.num_rows
        if len(down):
            got = got.filter(pc.invert(pc.is_in(got["item_id"], value_set=down)))
        got = got.select(list(columns))
        got = got.take(pc.sort_indices(got, sort_keys=[("item_id", "ascending")]))
        return SubsetVersion(table.version, got, n - got.num_rows)

    def retired_subset_kinds(self, configured: list[str]) -> list[str]:
        """Table kinds (`subset_<name>`) of subsets stored but not in `configured`."""
        return [f"subset_{s}" for s in self.subset_names() if s not in set(configured)]

    # -- near duplicates (curation.dedup) --

    def scan(self, kind: str, columns: list[str], where: str | None = None,
             batch_rows: int = BATCH_ROWS, row_id: bool = False, table: Any = None):
        """pyarrow RecordBatches of `columns` (those the table has) of the `kind` rows matching
        `where` (of `table` when given: a pinned version), `batch_rows` at a time; nothing
        when the table does not exist. Memory: one batch."""
        table = table if table is not None else self.table(kind)
        if table is None:
            return
        yield from stream(table, [c for c in columns if c in table.schema.names], where,
                          batch_rows, row_id)

    @staticmethod
    def vectors_by_row(table: Any, row_ids: np.ndarray) -> np.ndarray:
        """(n, d) float32 vectors of a pinned vector table's rows, in the order given, read
        `TAKE_ROWS` at a time (memory: the result plus one take)."""
        x = np.empty((len(row_ids), table_dim(table)), np.float32)
        at = 0
        for part in fetch_row_batches(table, row_ids, ("vector",), TAKE_ROWS):
            x[at:at + part.num_rows] = vectors_of(part.column("vector"))
            at += part.num_rows
        return x

    def write_near_duplicates(self, leaves, data) -> Any:
        """Make the near-duplicate rows of these leaves (any fit) equal to `data`, with no
        version in which the leaves lack their rows (`_replace_scope`; an item moved to one
        of these leaves by a refit has its row of the older fit replaced)."""
        table = self.table_for(self.name("near_duplicates"), schema("near_duplicates"))
        leaves = sorted({int(v) for v in leaves})
        return self._replace_scope(table, "near_duplicates", in_list("leaf", leaves), data)

    def near_duplicate_keys(self, fit_version: int, table: Any = None) -> np.ndarray:
        """Sorted uint64 item keys of the items that are near duplicates of another item in
        the given fit (what the subsets leave out), of `table` when given (a pinned version).
        Memory: 8 B per duplicate plus one batch."""
        parts = [np.empty(0, np.uint64)]
        for batch in self.scan("near_duplicates", ["item_key", "representative_key"],
                               f"fit_version = {int(fit_version)}", table=table):
            key = batch.column("item_key").to_numpy().astype(np.uint64)
            parts.append(key[key != batch.column("representative_key").to_numpy()])
        return np.sort(np.concatenate(parts))

    def near_duplicate_of(self, item_id: str) -> dict | None:
        """The item's near-duplicate row (representative, similarity, leaf, fit), or None."""
        got = self.query("near_duplicates", f"item_id = {sql_str(item_id)}",
                         ["item_id", "leaf", "representative", "similarity", "fit_version"])
        return got[0] if got else None

    # -- takedowns --

    def _audit(self) -> Any | None:
        """The audit table, with the `run` column added to one written before it existed."""
        table = self.table("takedowns")
        return None if table is None else self.table_for(table.name, schema("takedowns"))

    def takedown_audit(self):
        """pyarrow Table of the takedowns (item_id, reason, at, by[, run]), or None."""
        table = self.table("takedowns")
        return None if table is None else table.to_arrow()

    def taken_down_ids(self):
        """pyarrow string array of the distinct taken-down item ids (empty when none)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.table("takedowns")
        if table is None:
            return pa.array([], pa.string())
        got = table.search().select(["item_id"]).limit(None).to_arrow()
        return pc.unique(got["item_id"].combine_chunks()) if got.num_rows else pa.array(
            [], pa.string())

    def recorded_pairs(self, ids, by: str) -> list[tuple[str, str]]:
        """(item_id, reason) already recorded by `by` for these ids."""
        table = self._audit()
        if table is None:
            return []
        found = find_in(table, "item_id", sorted(set(ids)), ["item_id", "reason"],
                        f"by = {sql_str(by)}")
        return list(zip(found["item_id"].to_pylist(), found["reason"].to_pylist(), strict=True))

    def append_takedowns(self, pairs: list[tuple[str, str]], by: str, run: str = "") -> int:
        """Add one audit row per (item_id, reason); returns the table version."""
        now = datetime.now(UTC).isoformat()
        data = rows("takedowns", {"item_id": [i for i, _ in pairs],
                                  "reason": [r for _, r in pairs], "at": [now] * len(pairs),
                                  "by": [by] * len(pairs), "run": [run] * len(pairs)})
        return self.append(self.name("takedowns"), data).version

    def audit_version(self) -> int | None:
        table = self.table("takedowns")
        return None if table is None else table.version

    def takedown_reasons(self, ids) -> dict[str, str]:
        """{item_id: reason(s)} of those of `ids` taken down (recorded, applied or not)."""
        found = self.lookup("takedowns", "item_id", sorted(set(ids)), ["item_id", "reason"])
        out: dict[str, str] = {}
        for item, reason in zip(*(found[c].to_pylist() for c in ("item_id", "reason")),
                                strict=True) if found is not None else ():
            out[item] = reason if item not in out else f"{out[item]}; {reason}"
        return out

    def drop_taken_down_rows(self, kind: str, scope: str, ids) -> list[str]:
        """After a write to `kind` of the rows `scope` selects (a drop, or the drops of a
        run): delete those of `ids` taken down meanwhile (recorded, or even purged, while
        the drop was being ingested), so a takedown never loses the race with an ingest.
        One read of the audit's id column. Returns the ids deleted."""
        down = set(self.taken_down_ids().to_pylist())
        late = sorted(i for i in set(ids) if i in down) if down else []
        table = self.table(kind) if late else None
        if table is not None:
            retried(table, lambda: delete_in(table, "item_id", late, scope))
        return late

    def record_content_keys(self, keys: dict[str, str]) -> int:
        """Add (item_id, content_key) rows for taken-down text items (a re-delivery of the
        same text under another id is refused); returns how many were new."""
        if not keys:
            return 0
        known = set(self.taken_down_contents())
        new = {i: k for i, k in keys.items() if k not in known}
        if new:
            self.append(self.name("takedown_content"), rows("takedown_content", {
                "item_id": list(new), "content_key": list(new.values())}))
        return len(new)

    def taken_down_contents(self) -> dict[str, str]:
        """{content_key: item_id} of taken-down text items."""
        got = self.read(self.name("takedown_content"), ["item_id", "content_key"])
        if got is None:
            return {}
        return dict(zip(got["content_key"].to_pylist(), got["item_id"].to_pylist(), strict=True))

    def pending_takedowns(self) -> int:
        """Audit rows not applied yet (recorded by the CLI, no run removed the item yet)."""
        table = self.table("takedowns")
        if table is None:
            return 0
        return table.count_rows("run = ''") if "run" in table.schema.names else table.count_rows()

    def pending_takedown_ids(self) -> list[str]:
        """Distinct item ids of the audit rows not applied yet (bounded by the takedowns
        waiting, not by the pool)."""
        import pyarrow.compute as pc

        table = self._audit()
        if table is None:
            return []
        got = table.search().where("run = ''").select(["item_id"]).limit(None).to_arrow()
        return pc.unique(got["item_id"].combine_chunks()).to_pylist() if got.num_rows else []

    def mark_applied(self, run: str, ids) -> int:
        """Stamp the pending audit rows of these items with the run that applied them;
        returns how many. Rows recorded after the run read its ids stay pending: their
        items may not have been removed."""
        table = self._audit()
        ids = sorted(set(ids))
        stamped = 0
        for start in range(0, len(ids) if table is not None else 0, IN_CHUNK):
            where = f"run = '' AND {in_list('item_id', ids[start:start + IN_CHUNK])}"
            if table.count_rows(where):
                stamped += table.update(where=where, values={"run": run}).rows_updated
        return stamped

    def purge(self, ids, kinds) -> dict:
        """Delete the rows of these items from the pool's `kinds` tables, then remove the
        tables' older versions, checking that no version left holds one of them
        (`erase_old_versions`; safe beside the pool's writers). Returns {kind: {"deleted":
        rows, "version": table version or None, "versions_removed": n}}. A table with none of
        them is left alone; raises `TakedownIncomplete` rather than return while a readable
        version holds one."""
        out = {}
        ids = sorted(set(ids))
        for kind in kinds:
            table = self.table(kind)
            if table is None:
                out[kind] = {"deleted": 0, "version": None, "versions_removed": 0}
                continue
            deleted = retried(table, lambda t=table: delete_in(t, "item_id", ids))
            removed = erase_old_versions(table, ids) if deleted else 0
            out[kind] = {"deleted": deleted, "version": table.version, "versions_removed": removed}
        return out

    def unmatched_ids(self, ids) -> list[str]:
        """The ids in none of the pool's item tables (raw, embeddings)."""
        ids = sorted(set(ids))
        found: set[str] = set()
        for kind in ("raw", "embeddings"):
            got = self.lookup(kind, "item_id", ids, ["item_id"])
            found.update(got["item_id"].to_pylist() if got is not None else [])
        return [i for i in ids if i not in found]
