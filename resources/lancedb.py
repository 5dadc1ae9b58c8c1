"""LanceDBResource: every table the platform writes lives in one LanceDB database.

The database is a local folder or an object-store URI (s3://...); `endpoint_url` reaches an
S3-compatible server. lancedb is imported lazily so the code location loads fast; the
connection is built once per run (setup_for_execution) or on first use outside a run.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from curation.sql import sql_str

RETRIES = 5  # commits that conflict with a concurrent writer's are retried this often


class LanceDBResource(ConfigurableResource):
    uri: str = Field(description="folder or s3://bucket/prefix of the LanceDB database")
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    region: str | None = None
    allow_http: bool = False
    _db: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._db = self._connect()

    def storage_options(self) -> dict[str, str]:
        options = {}
        if self.endpoint_url:
            options["aws_endpoint"] = self.endpoint_url
        if self.region:
            options["aws_region"] = self.region
        if self.allow_http or (self.endpoint_url or "").startswith("http://"):
            options["allow_http"] = "true"
        return options

    def connect(self) -> Any:
        """The database connection (tables opened from it read their latest version)."""
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> Any:
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options() or None)

    def open(self, name: str) -> Any | None:
        """The table, or None when it does not exist yet."""
        db = self.connect()
        try:
            return db.open_table(name)
        except (ValueError, FileNotFoundError):
            return None

    def table_for(self, name: str, schema: Any) -> Any:
        """The table, created empty with `schema` when missing. Data is never written by the
        create itself: LanceDB resolves two racing creates as an overwrite, which would drop
        rows written in between; concurrent empty creates are harmless."""
        table = self.open(name)
        if table is None:
            db = self.connect()
            try:
                table = db.create_table(name, schema=schema, exist_ok=True)
            except (ValueError, OSError, RuntimeError):  # created meanwhile: open it
                table = db.open_table(name)
        return table

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
            except RuntimeError as exc:
                if not _conflict(exc) or attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def claim_rows(
        self, name: str, data: Any, key: str, owner: str, compare: tuple[str, ...] = ()
    ) -> tuple[Any, dict[str, str]]:
        """Insert the rows of `data` (a pyarrow Table, unique `key`s, one value in column `owner`)
        whose key no other owner holds; returns (table, {key: owner that holds it}).

        Rows the same owner already holds are updated when a `compare` column changed; rows of
        another owner are never touched; this owner's rows whose key is not in `data` are
        deleted. The outcome is read back from the table after the commit, so two writers that
        race on the same keys never both win one: LanceDB commits concurrent inserts of one key
        side by side, and the row stored first (lowest row address: fragments are numbered in
        commit order) wins; a writer that finds its own row behind another deletes it.
        """
        me = data.column(owner)[0].as_py() if data.num_rows else None
        for attempt in range(RETRIES):
            table = self.table_for(name, data.schema)
            if data.num_rows == 0:
                return table, {}
            changed = " OR ".join(f"target.{c} <> source.{c}" for c in compare) or "false"
            try:
                (
                    table.merge_insert(key)
                    .when_matched_update_all(
                        where=f"target.{owner} = source.{owner} AND ({changed})"
                    )
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(f"{owner} = {sql_str(me)}")
                    .execute(data)
                )
            except RuntimeError as exc:
                if not _conflict(exc) or attempt == RETRIES - 1:
                    raise
                continue
            holders = self._resolve(table, data, key, owner, me)
            if len(holders) == data.num_rows or attempt == RETRIES - 1:
                return table, holders
            # keys held by nobody: a concurrent table creation overwrote our commit; again
        raise AssertionError("unreachable")

    def _resolve(self, table: Any, data: Any, key: str, owner: str, me: Any) -> dict[str, str]:
        """{key: owner} of the row that holds each key of `data`; this owner's rows behind
        another row of the same key are deleted."""
        import pyarrow.compute as pc

        keys = data.column(key).to_pylist()
        holders: dict[str, tuple[int, str]] = {}
        mine_behind: list[int] = []
        for start in range(0, len(keys), 2000):
            chunk = ", ".join(sql_str(k) for k in keys[start : start + 2000])
            found = (
                table.search()
                .where(f"{key} IN ({chunk})")
                .select([key, owner])
                .with_row_id(True)
                .limit(None)
                .to_arrow()
            )
            order = pc.sort_indices(found["_rowid"]).to_pylist()
            rows = found.take(order).to_pylist()
            for row in rows:
                if row[key] not in holders:
                    holders[row[key]] = (row["_rowid"], row[owner])
                elif row[owner] == me:
                    mine_behind.append(row["_rowid"])
        if mine_behind:
            for start in range(0, len(mine_behind), 2000):
                ids = ", ".join(str(r) for r in mine_behind[start : start + 2000])
                table.delete(f"_rowid IN ({ids}) AND {owner} = {sql_str(me)}")
        return {k: holder for k, (_, holder) in holders.items()}

    def overwrite(self, name: str, data: Any) -> Any:
        """Replace the whole table in one new version (readers see old or new, never a mix)."""
        return self.connect().create_table(name, data, mode="overwrite")

    def read(self, name: str, columns: list[str], where: str | None = None) -> Any:
        """Selected columns (and rows) as a pyarrow Table; empty table when it does not exist."""
        table = self.open(name)
        if table is None:
            return None
        query = table.search().select(columns).limit(None)
        if where:
            query = query.where(where)
        return query.to_arrow()




def _conflict(exc: BaseException) -> bool:
    """A LanceDB commit that lost a race with a concurrent commit (safe to retry)."""
    text = str(exc).lower()
    return "incompatible transaction" in text or "conflict" in text
