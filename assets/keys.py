"""Every asset key of a pool, the one place that turns curation.naming's paths into AssetKeys.

Assets, checks, sensors, schedules and the demo all take their keys from here, so a key and
the sensor or condition that targets it cannot drift apart.
"""

from __future__ import annotations

from dagster import AssetKey

from curation import naming
from curation.pools import PoolConfig


def asset_key(pool: PoolConfig, kind: str) -> AssetKey:
    """[pool, kind]: raw, embeddings, assignments, takedowns, report."""
    return AssetKey(naming.asset_path(pool.name, kind))


def ingest_keys(pool: PoolConfig) -> list[AssetKey]:
    return [asset_key(pool, kind) for kind in ("raw", "embeddings")]


def level_keys(pool: PoolConfig) -> list[AssetKey]:
    """level_1 .. level_L: the tree, top level first."""
    return [AssetKey(p) for p in naming.level_paths(pool.name, pool.hierarchy.n_levels)]


def takedowns_key(pool: PoolConfig) -> AssetKey:
    return asset_key(pool, "takedowns")


def subset_key(pool: PoolConfig, name: str) -> AssetKey:
    return AssetKey(naming.subset_path(pool.name, name))


def subset_keys(pool: PoolConfig) -> list[AssetKey]:
    return [subset_key(pool, spec.name) for spec in pool.subsets]


def evaluation_key(pool: PoolConfig, subset: str) -> AssetKey:
    return AssetKey(naming.evaluation_path(pool.name, subset))


def subset_upstream(pool: PoolConfig) -> list[AssetKey]:
    """What a subset consumes: the assignments and the takedowns (not the tree: the
    re-assignment after a fit is what it waits for)."""
    return [asset_key(pool, kind) for kind in ("assignments", "takedowns")]


def drop_run_keys(pool: PoolConfig) -> list[AssetKey]:
    """What one drop's run can hold: ingestion, the assignment to the current tree, and the
    refresh of the subsets over it (one run per drop: no second run, no automation tick)."""
    return [*ingest_keys(pool), asset_key(pool, "assignments"), *subset_keys(pool)]
