"""Dagster-side settings from the environment: tick intervals and the executor.

Paths (home, landing, LanceDB) are the core's: curation.settings.
"""

from __future__ import annotations

import os


def _seconds(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} must be a whole number of seconds") from None
    if seconds < 1:
        raise ValueError(f"${name}={value!r} must be at least 1")
    return seconds


def sensor_interval_s() -> int:
    """Minimum seconds between ticks of the drop and refit sensors ($CURATION_SENSOR_INTERVAL_S,
    default 30). A demo or a test shortens it; production keeps the default."""
    return _seconds("CURATION_SENSOR_INTERVAL_S", 30)


def automation_interval_s() -> int:
    """Minimum seconds between automation ticks ($CURATION_AUTOMATION_INTERVAL_S, default 30)."""
    return _seconds("CURATION_AUTOMATION_INTERVAL_S", 30)


def executor():
    """Dagster executor of every job ($CURATION_EXECUTOR): "in_process" (default) runs a run's
    steps in its run worker, one after another, which saves a Python start and the imports
    per step (seconds each): a drop's steps are sequential anyway. "multiprocess" runs
    independent steps in parallel processes. Several machines: swap in one of Dagster's
    executors (dagster-k8s, dagster-celery, dagster-docker) here."""
    from dagster import in_process_executor, multiprocess_executor

    name = os.environ.get("CURATION_EXECUTOR") or "in_process"
    executors = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}
    if name not in executors:
        raise ValueError(f"$CURATION_EXECUTOR={name!r}: use one of {sorted(executors)}")
    return executors[name]
