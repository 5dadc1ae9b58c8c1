"""`PoolStore`: the tables of one pool behind named methods, one family per module."""

from __future__ import annotations

from typing import Any

from .. import naming
from .fits import FitTables
from .raw import RawTables
from .schemas import table_dim
from .snapshot import SnapshotTables
from .subsets import SubsetTables
from .tables import (
    Database,
    connect,
    find_in,
    storage_options,
)
from .takedowns import TakedownTables
from .vectors import VectorTables


class PoolStore(RawTables, VectorTables, FitTables, SubsetTables, TakedownTables,
                SnapshotTables, Database):
    """The tables of one pool, behind named methods (one family per module of the
    package)."""

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
        from ..settings import lancedb_uri, s3_endpoint_url

        endpoint = s3_endpoint_url()
        return cls.open_uri(lancedb_uri(uri), pool,
                            storage_options(endpoint, allow_http=bool(endpoint)))

    def name(self, kind: str) -> str:
        return naming.table(self.pool_name, kind)

    def table(self, kind: str, version: int | None = None) -> Any | None:
        """The pool's `kind` table (pinned at `version`), or None when it does not exist."""
        return self.open(self.name(kind), version)

    def has(self, kind: str) -> bool:
        """The pool's `kind` table exists."""
        return self.table(kind) is not None

    def version(self, kind: str) -> int:
        """The latest version of the pool's `kind` table (0 when it does not exist)."""
        table = self.table(kind)
        return 0 if table is None else int(table.version)

    def count(self, kind: str, where: str | None = None) -> int:
        """Rows of the pool's `kind` table (matching `where`; 0 when it does not exist)."""
        table = self.table(kind)
        return 0 if table is None else int(table.count_rows(where))

    def vector_dim(self, kind: str = "embeddings") -> int | None:
        """The vector length of a vector table (None when it does not exist)."""
        return table_dim(self.table(kind))

    def lookup(self, kind: str, column: str, values, columns: list[str],
               where: str | None = None):
        """`columns` of the `kind` rows whose `column` is one of `values` (None: no table)."""
        table = self.table(kind)
        if table is None:
            return None
        present = [c for c in columns if c in table.schema.names]  # older tables lack some
        return find_in(table, column, values, present, where)

    def query(self, kind: str, where: str, columns: list[str] | None = None,
              version: int | None = None) -> list[dict]:
        """Rows of `kind` (at `version` when given) matching `where` as dicts (the columns it
        has of `columns`)."""
        table = self.table(kind, version)
        if table is None:
            return []
        query = table.search().where(where).limit(None)
        if columns is not None:
            query = query.select([c for c in columns if c in table.schema.names])
        return query.to_arrow().to_pylist()
