"""The code location: one `Definitions` per pool, merged.

Each pool's Definitions holds everything of that pool: its assets and asset checks, its drop,
refit, takedowns and stall sensors, its refit schedule, its automation sensor and its embedder
resource. `Definitions.merge` joins them with the location's own (the shared resources, the
executor, the run failure sensor); merge refuses two pools that bring different resources under
one key, so pools cannot shadow each other.

Pools come from $CURATION_POOLS (default: the demo pools, curation/pools.yaml); storage from
$CURATION_HOME, $CURATION_LANDING, $CURATION_LANCEDB_URI (see curation.settings); tick
intervals and the executor from curation_dags.settings.
"""

from __future__ import annotations

import warnings

from dagster import (
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
from curation_dags.settings import (
    automation_interval_s,
    executor,
    gpu_op_tags,
    sensor_interval_s,
)
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


def pool_resources(pool: PoolConfig) -> dict:
    """The pool's own resources: its embedder (none for precomputed vectors)."""
    if pool.modality == "vectors":
        return {}
    try:
        embedder = EmbedderResource(**pool.embedder_fields())
    except ValueError as exc:  # config rejected (pydantic): fail the asset, not the load
        embedder = UnavailableEmbedder(reason=f"{type(exc).__name__}: {exc}")
    return {naming.embedder_resource(pool.name): embedder}


def shared_resources() -> dict:
    """Resources every pool uses, from the environment (curation.settings)."""
    return {
        "landing": LandingStorage(
            url=settings.landing_url(), endpoint_url=settings.s3_endpoint_url()
        ),
        "lancedb": LanceDBResource(
            uri=settings.lancedb_uri(), endpoint_url=settings.s3_endpoint_url()
        ),
        "clustering": ClusteringResource(),
    }


def automation_sensor(pool: PoolConfig) -> AutomationConditionSensorDefinition:
    """The pool's own automation sensor: its runs carry the pool's tag, so the instance's
    per-pool concurrency limit (deploy/dagster.yaml) covers them too. It is evaluated in the
    code server: the fan-in condition is Python (assets.automation)."""
    with warnings.catch_warnings():  # use_user_code_server: beta in Dagster 1.13
        warnings.simplefilter("ignore", BetaWarning)
        return AutomationConditionSensorDefinition(
            naming.automation_sensor(pool.name),
            target=AssetSelection.groups(pool.name),
            run_tags={POOL_TAG: pool.name},
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=automation_interval_s(),
            use_user_code_server=True,
        )


def pool_sensors(pool: PoolConfig) -> list:
    """The drop, refit, takedowns and stall sensors and the automation sensor of one pool."""
    return [
        automation_sensor(pool),
        build_drop_sensor(pool),
        build_refit_sensor(pool, sensor_interval_s()),
        build_takedowns_sensor(pool),
        build_stall_sensor(pool, automation_interval_s()),
    ]


def pool_definitions(pool: PoolConfig, with_sensors: bool = True) -> Definitions:
    """Everything of one pool (`with_sensors` false: its assets, checks and resources only,
    for tests that run steps in process)."""
    built = build_pool_assets(pool, automation_interval_s(), gpu_op_tags())
    schedule = build_refit_schedule(pool) if with_sensors else None
    return Definitions(
        assets=built.assets,
        asset_checks=built.checks,
        sensors=pool_sensors(pool) if with_sensors else [],
        schedules=[schedule] if schedule is not None else [],
        resources=pool_resources(pool),
    )


def build_definitions(
    pools: list[PoolConfig] | None = None, resources: dict | None = None, with_sensors: bool = True
) -> Definitions:
    """The code location: the pools' Definitions merged with the location's own. `resources`:
    the shared ones (landing, lancedb, clustering; default: from the environment); each pool
    brings its embedder."""
    pools = pools if pools is not None else load_pools()
    location = Definitions(
        executor=executor(),
        resources=resources if resources is not None else shared_resources(),
        sensors=[curation_run_failure_sensor] if with_sensors else [],
    )
    return Definitions.merge(location, *(pool_definitions(p, with_sensors) for p in pools))


defs = build_definitions()
