"""Asset keys that sensors and schedules target, built from curation.naming."""

from __future__ import annotations

from dagster import AssetKey

from curation import naming
from curation.pools import PoolConfig


def ingest_keys(pool: PoolConfig) -> list[AssetKey]:
    return [AssetKey(naming.asset_path(pool.name, kind)) for kind in ("raw", "embeddings")]


def subset_key(pool: PoolConfig, name: str) -> AssetKey:
    return AssetKey(naming.subset_path(pool.name, name))


def subset_keys(pool: PoolConfig) -> list[AssetKey]:
    return [subset_key(pool, spec.name) for spec in pool.subsets]


def subset_upstream(pool: PoolConfig) -> list[AssetKey]:
    """What a subset consumes: the assignments and the takedowns (not the tree: the
    re-assignment after a fit is what it waits for)."""
    return [AssetKey(naming.asset_path(pool.name, kind)) for kind in ("assignments", "takedowns")]


def drop_run_keys(pool: PoolConfig) -> list[AssetKey]:
    """What one drop's run can hold: ingestion, the assignment to the current tree, and the
    refresh of the subsets over it (one run per drop: no second run, no automation tick)."""
    return [*ingest_keys(pool), AssetKey(naming.asset_path(pool.name, "assignments")),
            *subset_keys(pool)]


def hierarchy_keys(pool: PoolConfig) -> list[AssetKey]:
    return [AssetKey(p) for p in naming.level_paths(pool.name, pool.hierarchy.n_levels)]


def takedowns_key(pool: PoolConfig) -> AssetKey:
    return AssetKey(naming.asset_path(pool.name, "takedowns"))
