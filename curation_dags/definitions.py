"""The code location: every pool's assets, resources, sensors and schedules.

Pools come from $CURATION_POOLS (default: curation_dags/pools.yaml); storage from
$CURATION_HOME, $CURATION_LANDING, $CURATION_LANCEDB_URI (see curation_dags.settings).
"""

from __future__ import annotations

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    AutomationConditionSensorDefinition,
    ConfigurableResource,
    DefaultSensorStatus,
    Definitions,
)

from assets import build_pool_assets
from curation.pools import PoolConfig, load_pools
from curation_dags import settings
from curation_dags.sensors import build_schedules, build_sensors
from curation_dags.tags import POOL_TAG
from resources.clustering import ClusteringResource
from resources.embedders import EmbedderResource
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage


class UnavailableEmbedder(ConfigurableResource):
    """Stands in for an embedder whose config is invalid: that pool's assets fail and say why,
    the other pools still load."""

    reason: str

    def identity(self) -> dict:
        raise RuntimeError(f"no embedder available: {self.reason}")


def embedder_resources(pools: list[PoolConfig]) -> dict:
    out = {}
    for pool in pools:
        if pool.modality == "vectors":
            continue
        try:
            out[f"{pool.name}_embedder"] = EmbedderResource(**pool.embedder_fields())
        except ValueError as exc:  # config rejected (pydantic): fail the asset, not the load
            out[f"{pool.name}_embedder"] = UnavailableEmbedder(
                reason=f"{type(exc).__name__}: {exc}"
            )
    return out


def default_resources(pools: list[PoolConfig]) -> dict:
    return {
        "landing": LandingStorage(
            url=settings.landing_url(), endpoint_url=settings.s3_endpoint_url()
        ),
        "lancedb": LanceDBResource(
            uri=settings.lancedb_uri(), endpoint_url=settings.s3_endpoint_url()
        ),
        "clustering": ClusteringResource(),
        **embedder_resources(pools),
    }


def build_definitions(
    pools: list[PoolConfig] | None = None, resources: dict | None = None, with_sensors: bool = True
) -> Definitions:
    pools = pools if pools is not None else load_pools()
    defs = [d for pool in pools for d in build_pool_assets(pool)]
    sensors = build_sensors(pools) if with_sensors else []
    schedules = build_schedules(pools) if with_sensors else []
    # One automation sensor per pool: its runs carry the pool's tag, so the instance's
    # per-pool concurrency limit (deploy/dagster.yaml) covers them too.
    automation = [
        AutomationConditionSensorDefinition(
            f"{pool.name}_automation",
            target=AssetSelection.groups(pool.name),
            run_tags={POOL_TAG: pool.name},
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=settings.automation_interval_s(),
        )
        for pool in pools
    ]
    return Definitions(
        executor=settings.executor(),
        assets=[d for d in defs if not isinstance(d, AssetChecksDefinition)],
        asset_checks=[d for d in defs if isinstance(d, AssetChecksDefinition)],
        resources=resources if resources is not None else default_resources(pools),
        sensors=[*automation, *sensors],
        schedules=schedules,
    )


defs = build_definitions()
