"""SQL literals for LanceDB `where` filters (values here are validated ids; quoting is defence
in depth)."""

from __future__ import annotations

from collections.abc import Iterable


def sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def sql_value(value: object) -> str:
    """An integer as a number (row ids, versions), anything else as a quoted string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return sql_str(value)


def in_list(column: str, values: Iterable[object]) -> str:
    return f"{column} IN (" + ", ".join(sql_value(v) for v in values) + ")"
