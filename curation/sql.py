"""SQL literals for LanceDB `where` filters (values here are validated ids; quoting is defence
in depth)."""

from __future__ import annotations

from collections.abc import Iterable


def sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def in_list(column: str, values: Iterable[object]) -> str:
    return f"{column} IN (" + ", ".join(sql_str(v) for v in values) + ")"
