"""One dynamic partition per delivered drop, per pool (keys live in the Dagster instance)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition


def drops_partitions(pool_name: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{pool_name}_drops")
