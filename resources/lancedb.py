"""LanceDBResource: every table the platform writes lives in one LanceDB database.

The database is a local folder or an object-store URI (s3://...); `endpoint_url` reaches an
S3-compatible server. The resource only resolves these settings and builds the storage home
(`curation.store`): `store(pool)` is a pool's `PoolStore`, where every table, schema and query
lives. lancedb is imported lazily so the code location loads fast; the connection is built once
per run (setup_for_execution) or on first use outside a run.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from curation.store import Database, PoolStore, connect, storage_options


class LanceDBResource(ConfigurableResource):
    uri: str = Field(description="folder or s3://bucket/prefix of the LanceDB database")
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    region: str | None = None
    allow_http: bool = False
    _database: Any = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._database = self._build()

    def _build(self) -> Database:
        options = storage_options(self.endpoint_url, self.region, self.allow_http)
        return Database(connect(self.uri, options))

    def database(self) -> Database:
        """The database (tables opened from it read their latest version)."""
        if self._database is None:
            self._database = self._build()
        return self._database

    def store(self, pool: str) -> PoolStore:
        """The storage home of one pool."""
        return self.database().pool(pool)

    def connect(self) -> Any:
        """The raw LanceDB connection (for tools and tests that list or open tables)."""
        return self.database().db

    def open(self, name: str) -> Any | None:
        """The table, or None when it does not exist yet."""
        return self.database().open(name)

    def read(self, name: str, columns: list[str], where: str | None = None) -> Any | None:
        """Selected columns (and rows) as a pyarrow Table; None when the table does not exist."""
        return self.database().read(name, columns, where)
