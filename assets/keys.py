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


def near_duplicates_key(pool: PoolConfig) -> AssetKey:
    """[pool, near_duplicates]: the semantic dedup (only when the pool's dedup is enabled)."""
    return asset_key(pool, "near_duplicates")


def dedup_upstream(pool: PoolConfig) -> list[AssetKey]:
    """What the dedup consumes: the assignments and the takedowns (as the subsets do)."""
    return [asset_key(pool, kind) for kind in ("assignments", "takedowns")]


def subset_upstream(pool: PoolConfig) -> list[AssetKey]:
    """What a subset consumes: the assignments and the takedowns (not the tree: the
    re-assignment after a fit is what it waits for), and the near duplicates when the pool
    deduplicates (last: callers index the first two)."""
    return [*dedup_upstream(pool)] + ([near_duplicates_key(pool)] if pool.dedup.enabled else [])


def refresh_keys(pool: PoolConfig) -> list[AssetKey]:
    """What refreshing the subsets takes: the near duplicates (when enabled), then the
    subsets. A drop's run holds them only when it refreshes the subsets, so the dedup of a
    half re-assigned pool is left to automation, as the subsets are."""
    dedup = [near_duplicates_key(pool)] if pool.dedup.enabled else []
    return [*dedup, *subset_keys(pool)]


def drop_run_keys(pool: PoolConfig) -> list[AssetKey]:
    """What one drop's run can hold: ingestion, the assignment to the current tree, the
    dedup of the leaves it touched (when enabled) and the refresh of the subsets over it (one
    run per drop: no second run, no automation tick)."""
    return [*ingest_keys(pool), asset_key(pool, "assignments"), *refresh_keys(pool)]
