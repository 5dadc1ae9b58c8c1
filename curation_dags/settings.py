"""Dagster-side settings from the environment: tick intervals, the per-pool run limit and the
executor.

Paths (home, landing, LanceDB) are the core's: curation.settings.
"""

from __future__ import annotations

import json
import math
import os

from curation.naming import POOL_TAG


def _positive(name: str, default: int, unit: str = "seconds") -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} must be a whole number of {unit}") from None
    if number < 1:
        raise ValueError(f"${name}={value!r} must be at least 1")
    return number


def sensor_interval_s() -> int:
    """Minimum seconds between ticks of the drop and refit sensors ($CURATION_SENSOR_INTERVAL_S,
    default 30). A demo or a test shortens it; production keeps the default."""
    return _positive("CURATION_SENSOR_INTERVAL_S", 30)


def automation_interval_s() -> int:
    """Minimum seconds between automation ticks ($CURATION_AUTOMATION_INTERVAL_S, default 30)."""
    return _positive("CURATION_AUTOMATION_INTERVAL_S", 30)


def pool_run_limit(default: int) -> int:
    """Runs of one pool at once ($CURATION_POOL_RUN_LIMIT; default: the instance template's,
    4 in deploy/dagster.yaml, 1 in the SQLite deploy/dagster.local.yaml as shipped)."""
    return _positive("CURATION_POOL_RUN_LIMIT", default, "runs")


def instance_config(config: dict) -> dict:
    """An instance yaml (deploy/dagster*.yaml, loaded) with the per-pool run limit of this
    environment applied: the `curation/pool` tag concurrency limit, per pool. A SQLite instance
    (no `storage:` section) keeps one run at a time: SQLite answers "database is locked" under
    concurrent runs. The fit's own limit (`curation/fit`, one per pool) is never changed."""
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    per_pool = next(limit for limit in limits if limit["key"] == POOL_TAG)
    wanted = pool_run_limit(per_pool["limit"])
    if wanted > 1 and "storage" not in config:
        raise ValueError(f"$CURATION_POOL_RUN_LIMIT={wanted}: a SQLite instance runs one run "
                         "at a time; use deploy/dagster.yaml (PostgreSQL) for more")
    per_pool["limit"] = wanted
    return config


def gpus_per_step() -> float:
    """GPUs the steps that use one ask for ($CURATION_GPUS, default 0: none asked): a model's
    embeddings (image and text pools) and the fit (level_1). Read where the cluster has GPU
    workers (deploy/ray.yaml's gpu group, a Kubernetes node pool with GPUs)."""
    value = os.environ.get("CURATION_GPUS")
    if not value:
        return 0.0
    try:
        gpus = float(value)
    except ValueError:
        raise ValueError(f"$CURATION_GPUS={value!r} must be a number of GPUs") from None
    if not 0 <= gpus <= 64 or math.isnan(gpus):
        raise ValueError(f"$CURATION_GPUS={value!r} must be between 0 and 64")
    return gpus


def gpu_op_tags() -> dict[str, str]:
    """Op tags of a step that uses a GPU: dagster-ray's executor gives its Ray job that many
    GPUs (`dagster-ray/config`, read per step); none when $CURATION_GPUS is unset."""
    gpus = gpus_per_step()
    return {"dagster-ray/config": json.dumps({"num_gpus": gpus})} if gpus else {}


def gpu_run_tags() -> dict[str, str]:
    """Run tags of a run that holds such a step (a fit, a drop of an image or text pool):
    Dagster's Kubernetes launcher gives its pod that many whole GPUs (`dagster-k8s/config`);
    none when $CURATION_GPUS is unset."""
    gpus = gpus_per_step()
    if not gpus:
        return {}
    limits = {"nvidia.com/gpu": str(math.ceil(gpus))}
    return {"dagster-k8s/config": json.dumps(
        {"container_config": {"resources": {"limits": limits}}})}


# Names of the variables a step needs where it runs, handed by the run worker to each Ray job
# (values read in the run worker; unset ones are left out): the instance (its yaml reads the
# DAGSTER_PG_* ones), where the pool's data lives and the object store's credentials.
RAY_STEP_ENV = (
    "DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB", "CURATION_HOME", "CURATION_POOLS", "CURATION_LANDING",
    "CURATION_LANCEDB_URI", "CURATION_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
)


def executor():
    """Dagster executor of every job ($CURATION_EXECUTOR): "in_process" (default) runs a run's
    steps in its run worker, one after another, which saves a Python start and the imports
    per step (seconds each): a drop's steps are sequential anyway. "multiprocess" runs
    independent steps in parallel processes. "ray" (the `ray` extra) submits each step as a
    job to the Ray cluster at $CURATION_RAY_ADDRESS (its job server, http://HEAD:8265), one
    CPU per step unless the asset's `dagster-ray/config` tag asks for more (GPUs):
    dagster-ray's executor (docs/DEPLOY.md)."""
    from dagster import in_process_executor, multiprocess_executor

    name = os.environ.get("CURATION_EXECUTOR") or "in_process"
    if name == "ray":
        return _ray_executor()
    executors = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}
    if name not in executors:
        raise ValueError(f"$CURATION_EXECUTOR={name!r}: use one of {sorted([*executors, 'ray'])}")
    return executors[name]


def _ray_executor():
    address = os.environ.get("CURATION_RAY_ADDRESS")
    if not address:
        raise ValueError("$CURATION_EXECUTOR=ray needs $CURATION_RAY_ADDRESS, the Ray job "
                         "server (http://HEAD:8265)")
    from dagster_ray import ray_executor

    return ray_executor.configured(
        {"ray": {"address": address, "env_vars": list(RAY_STEP_ENV), "num_cpus": 1}})
