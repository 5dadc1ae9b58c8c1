"""Per-pool asset factories: raw -> embeddings -> level_1..L -> assignments
-> near_duplicates (when the pool's dedup is enabled) -> subsets."""

from __future__ import annotations

from typing import NamedTuple

from curation.pools import PoolConfig


class PoolAssets(NamedTuple):
    """What one pool contributes to its Definitions: asset definitions and asset checks."""

    assets: list
    checks: list


def build_pool_assets(pool: PoolConfig, tick_s: int = 30,
                      gpu_op_tags: dict[str, str] | None = None) -> PoolAssets:
    """Every asset and asset check of one pool, keys prefixed with the pool name. `tick_s`:
    the automation interval, the unit of the subsets' stall check. `gpu_op_tags`: the op tags
    of the steps that use a GPU where there is one (a model's embeddings, the fit)."""
    from .assignments import build_assignments_asset
    from .dedup import build_dedup_asset
    from .embeddings import build_embeddings_asset
    from .evaluation import build_evaluation_asset
    from .freshness import build_stall_checks
    from .levels import build_level_assets, build_level_checks
    from .raw import build_raw_asset
    from .report import build_report_asset
    from .subsets import build_subsets_asset
    from .takedowns import build_takedowns_asset

    return PoolAssets(
        assets=[
            build_raw_asset(pool),
            build_embeddings_asset(pool, gpu_op_tags),
            *build_level_assets(pool, gpu_op_tags),
            build_assignments_asset(pool),
            *([build_dedup_asset(pool)] if pool.dedup.enabled else []),
            build_takedowns_asset(pool),
            build_subsets_asset(pool),
            *[build_evaluation_asset(pool, spec) for spec in pool.subsets],
            build_report_asset(pool),
        ],
        checks=[*build_level_checks(pool), build_stall_checks(pool, tick_s)],
    )
