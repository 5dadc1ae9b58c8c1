"""Dagster's DefaultRunLauncher, plus the worker health check that run monitoring needs.

Dagster's default launcher starts each run as a subprocess of the code server but cannot tell
the monitoring daemon whether that process still lives, so a run whose worker was killed
(OOM killer, kill -9, a reboot) stays STARTED forever, and run retries never see it fail.
This class adds only `check_run_worker_health`: it finds the worker's pid in the run's own
"Started process for run" engine event and checks the process is alive. Everything else is
Dagster's launcher.

It needs the daemon and the code server on one host (`dagster dev`, a single-VM
deployment). On several machines use Dagster's container launchers (Docker, Kubernetes, ECS),
which have health checks of their own.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from dagster import DagsterEventType, DefaultRunLauncher

# Dagster exports neither the result of a worker health check nor its status enum; both are
# read from the public launcher's own signature, the contract an override has to meet (no
# import from dagster._core). Should Dagster rename them, this fails at import, not silently.
CheckRunHealthResult = inspect.signature(
    DefaultRunLauncher.check_run_worker_health).return_annotation
WorkerStatus = CheckRunHealthResult.__annotations__["status"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: guard against a recycled pid (run workers are spawned by
        try:  # the code server's multiprocessing, or `dagster api execute_run`)
            text = cmdline.read_bytes()
        except OSError:
            return False
        return b"dagster" in text or b"multiprocessing" in text
    return True


def run_worker_pid(instance, run_id: str) -> int | None:
    """The pid in the run worker's "Started process for run" engine event (its retry or
    resumption reports a new one: the latest wins)."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=100, ascending=False
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None and "Started process for run" in (event.message or ""):
            return int(pid.value)
    return None


class LocalRunLauncher(DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = run_worker_pid(self._instance, run.run_id)
        if pid is None:  # cannot tell: never fail a run on a guess
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid reported yet")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)",
            run_worker_id=str(pid),
        )
