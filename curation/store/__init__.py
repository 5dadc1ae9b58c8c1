"""One storage home per pool: every LanceDB table of a pool, its schema, queries, versions and
snapshots.

Modules, one concept each:
- `tables`: table mechanics over one connection, no pool knowledge (`connect`, creation once
  across processes, lookups by key through the BTREE indexes, streamed reads and reads by row
  id, retries of transient storage errors, the erasure of old versions);
- `schemas`: every table's schema and every migration of a table an older version wrote;
- `pool`: `PoolStore`, the tables of one pool behind named methods, one family per module:
  `raw` (raw rows and their claims, duplicates, quarantine), `vectors` (embeddings,
  assignments and their log, near duplicates), `fits` (the fit record, levels), `subsets`,
  `takedowns` (the audit and the purge) and `snapshot` (pinned version sets and their
  completeness).

Callers import from `curation.store`; the methods return arrays, row tables and outcomes.
Tables (names from `naming.table(pool, kind)` = `<pool>__<kind>`): see docs/ARCHITECTURE.md,
"Who owns which table".
"""

from .fits import FitRecord, fit_signature
from .pool import PoolStore
from .schemas import (
    EMPTY_STRING_COLUMNS,
    INDEXED_COLUMNS,
    LIST_VALUES_MAX,
    canonical_order,
    list_array,
    rows,
    schema,
    table_dim,
    vector_array,
    vectors_of,
)
from .subsets import SubsetVersion
from .tables import (
    BATCH_ROWS,
    IN_CHUNK,
    INDEXED_IN_CHUNK,
    READER_RESERVE,
    RETRIES,
    STORAGE_ERRORS,
    STREAM_ABOVE,
    TAKE_ROWS,
    Database,
    TakedownIncomplete,
    claim_creation,
    connect,
    count_in,
    delete_in,
    erase_old_versions,
    fetch_row_batches,
    fetch_rows,
    find_in,
    find_streamed,
    in_chunk,
    keep_indexed,
    retried,
    storage_options,
    stream,
    transient,
)

__all__ = [
    "BATCH_ROWS", "EMPTY_STRING_COLUMNS", "INDEXED_COLUMNS", "INDEXED_IN_CHUNK", "IN_CHUNK",
    "LIST_VALUES_MAX", "READER_RESERVE", "RETRIES", "STORAGE_ERRORS", "STREAM_ABOVE",
    "TAKE_ROWS", "Database", "FitRecord", "PoolStore", "SubsetVersion", "TakedownIncomplete",
    "canonical_order", "claim_creation", "connect", "count_in", "delete_in",
    "erase_old_versions", "fetch_row_batches", "fetch_rows", "find_in", "find_streamed",
    "fit_signature", "in_chunk", "keep_indexed", "list_array", "retried", "rows", "schema",
    "storage_options", "stream", "table_dim", "transient", "vector_array", "vectors_of",
]
