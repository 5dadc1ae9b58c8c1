"""One dynamic partition per delivered drop, per pool (keys live in the Dagster instance)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

from curation import naming


def drops_partitions(pool_name: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=naming.drops_partitions(pool_name))
