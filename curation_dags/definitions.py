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
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage


class UnavailableEmbedder(ConfigurableResource):
    """Stands in when resources.embedders cannot be imported; says why when used."""

    reason: str

    def identity(self) -> dict:
        raise RuntimeError(f"no embedder available: {self.reason}")


def embedder_resources(pools: list[PoolConfig]) -> dict:
    out = {}
    for pool in pools:
        if pool.modality == "vectors":
            continue
        try:
            from resources.embedders import EmbedderResource

            out[f"{pool.name}_embedder"] = EmbedderResource(**pool.embedder_fields())
        except Exception as exc:  # module missing or config rejected: fail the asset, not load
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


def _sensors_and_schedules(pools: list[PoolConfig]) -> tuple[list, list]:
    try:
        from curation_dags import sensors
    except ModuleNotFoundError as exc:
        if exc.name != "curation_dags.sensors":
            raise
        return [], []
    return list(sensors.build_sensors(pools)), list(sensors.build_schedules(pools))


def build_definitions(
    pools: list[PoolConfig] | None = None, resources: dict | None = None, with_sensors: bool = True
) -> Definitions:
    pools = pools if pools is not None else load_pools()
    defs = [d for pool in pools for d in build_pool_assets(pool)]
    sensors, schedules = _sensors_and_schedules(pools) if with_sensors else ([], [])
    automation = AutomationConditionSensorDefinition(
        "curation_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
    return Definitions(
        assets=[d for d in defs if not isinstance(d, AssetChecksDefinition)],
        asset_checks=[d for d in defs if isinstance(d, AssetChecksDefinition)],
        resources=resources if resources is not None else default_resources(pools),
        sensors=[automation, *sensors],
        schedules=schedules,
    )


defs = build_definitions()
