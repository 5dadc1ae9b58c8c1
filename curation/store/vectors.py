"""Embeddings, assignments (and their log) and near duplicates of one pool."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from ..sql import in_list, sql_str
from .schemas import (
    INDEXED_COLUMNS,
    canonical_order,
    schema,
    table_dim,
    vectors_of,
)
from .tables import (
    BATCH_ROWS,
    RETRIES,
    STORAGE_ERRORS,
    TAKE_ROWS,
    count_in,
    delete_in,
    fetch_row_batches,
    fetch_rows,
    keep_indexed,
    retried,
    stream,
    transient,
)


class VectorTables:
    """The pool's `embeddings`, `assignments`, `assignment_log` and
    `near_duplicates` tables: a drop's (or a leaf group's) rows replaced with no version
    lacking them (`_replace_scope`)."""

    def drop_counts(self, kind: str = "embeddings") -> dict[str, int]:
        """Rows per drop of a table (reads the one `drop` column)."""
        return self._value_counts(kind, "drop")

    def model_hash_counts(self) -> dict[str, int]:
        """Rows per embedding model hash of the embeddings table (reads the one column)."""
        return self._value_counts("embeddings", "model_hash")

    def _value_counts(self, kind: str, column: str) -> dict[str, int]:
        """Rows per value of one column, counted batch by batch (memory: one batch)."""
        return dict(self._counts_of(self.table(kind), column, None))

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

        from ..selection import item_keys, rank_hash

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

    def drop_vectors(self, kind: str, drop: str) -> tuple[list[str], np.ndarray]:
        """(item ids, (n, d) float32 vectors) of the drop's stored rows of a vector table, as
        stored (memory: the drop's rows)."""
        table = self.table(kind)
        if table is None:
            return [], np.zeros((0, 0), np.float32)
        got = table.search().where(f"drop = {sql_str(drop)}").select(
            ["item_id", "vector"]).limit(None).to_arrow()
        x = (vectors_of(got["vector"]) if got.num_rows
             else np.zeros((0, table_dim(table)), np.float32))
        return got["item_id"].to_pylist(), x

    def held_by_other_drops(self, kind: str, ids, drop: str) -> int:
        """Rows of `kind` holding one of `ids` in another drop than `drop` (index lookups)."""
        table = self.table(kind)
        return 0 if table is None else count_in(table, "item_id", ids,
                                                f"drop != {sql_str(drop)}")

    def delete_drop(self, kind: str, drop: str) -> None:
        """Delete every row of the drop from `kind` (one commit; retried on a lost race)."""
        table = self.table(kind)
        if table is not None:
            retried(table, lambda: table.delete(f"drop = {sql_str(drop)}"))

    def write_assignment_log(self, fit_version: int, drops: list[str], data) -> Any:
        scope = f"fit_version = {int(fit_version)} AND {in_list('drop', drops)}"
        return self.replace_rows(self.name("assignment_log"), data, "key", scope)

    def assignment_log(self, columns: list[str], where: str | None = None):
        return self.read(self.name("assignment_log"), columns, where)

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
