"""The code location: every pool's assets, resources, sensors and schedules.

Pools come from $CURATION_POOLS (default: the demo pools, curation/pools.yaml); storage from
$CURATION_HOME, $CURATION_LANDING, $CURATION_LANCEDB_URI (see curation.settings); tick
intervals and the executor from curation_dags.settings.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    AutomationConditionSensorDefinition,
    BetaWarning,
    ConfigurableResource,
    DefaultSensorStatus,
    Definitions,
)

from assets import build_pool_assets
from curation import naming, settings
from curation.naming import POOL_TAG
from curation.pools import PoolConfig, load_pools
from curation_dags.refit import build_refit_sensor
from curation_dags.sensors import (
    build_drop_sensor,
    build_refit_schedule,
    build_stall_sensor,
    build_takedowns_sensor,
    curation_run_failure_sensor,
)
from curation_dags.settings import automation_interval_s, executor, sensor_interval_s
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
            out[naming.embedder_resource(pool.name)] = EmbedderResource(**pool.embedder_fields())
        except ValueError as exc:  # config rejected (pydantic): fail the asset, not the load
            out[naming.embedder_resource(pool.name)] = UnavailableEmbedder(
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


def build_sensors(pools: list[PoolConfig]) -> list:
    """Per pool: the drop, refit, takedowns and stall sensors; and the run failure sensor."""
    interval = sensor_interval_s()
    return [
        *(build_drop_sensor(p) for p in pools),
        *(build_refit_sensor(p, interval) for p in pools),
        *(build_takedowns_sensor(p) for p in pools),
        *(build_stall_sensor(p, automation_interval_s()) for p in pools),
        curation_run_failure_sensor,
    ]


def build_schedules(pools: list[PoolConfig]) -> list:
    """Per pool with a refit cron: the periodic refit."""
    return [s for s in (build_refit_schedule(p) for p in pools) if s is not None]


def build_definitions(
    pools: list[PoolConfig] | None = None, resources: dict | None = None, with_sensors: bool = True
) -> Definitions:
    pools = pools if pools is not None else load_pools()
    defs = [d for pool in pools for d in build_pool_assets(pool, automation_interval_s())]
    sensors = build_sensors(pools) if with_sensors else []
    schedules = build_schedules(pools) if with_sensors else []
    # One automation sensor per pool: its runs carry the pool's tag, so the instance's
    # per-pool concurrency limit (deploy/dagster.yaml) covers them too. It is evaluated in the
    # code server: the fan-in condition is Python (assets.automation).
    with warnings.catch_warnings():  # use_user_code_server: beta in Dagster 1.13
        warnings.simplefilter("ignore", BetaWarning)
        automation = [
            AutomationConditionSensorDefinition(
                naming.automation_sensor(pool.name),
                target=AssetSelection.groups(pool.name),
                run_tags={POOL_TAG: pool.name},
                default_status=DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=automation_interval_s(),
                use_user_code_server=True,
            )
            for pool in pools
        ]
    return Definitions(
        executor=executor(),
        assets=[d for d in defs if not isinstance(d, AssetChecksDefinition)],
        asset_checks=[d for d in defs if isinstance(d, AssetChecksDefinition)],
        resources=resources if resources is not None else default_resources(pools),
        sensors=[*automation, *sensors],
        schedules=schedules,
    )


defs = build_definitions()
