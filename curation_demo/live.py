"""Drive the real platform from outside: start the Dagster daemon over workspace.yaml, land
drops, wait until the subsets reflect them, and read back what happened.

Used by `curate demo`, the platform benchmark and the end-to-end tests; it sits outside the
product packages (the code location never imports it). Nothing here moves a drop through the
graph: the drop sensor, the refit sensor and the automation sensors of the code location do,
under a real `dagster-daemon`, exactly as under `dagster dev`. This module only starts and
stops processes, writes files into the landing folder and watches the instance and the
LanceDB tables.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation import naming

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"
DEPLOY = REPO_ROOT / "deploy"
BIN = Path(sys.executable).parent


def write_instance_yaml(dagster_home: Path, template: str = "dagster.local.yaml",
                        overwrite: bool = False) -> Path:
    """$DAGSTER_HOME/dagster.yaml from deploy/<template> (kept when it exists already), with
    this environment's per-pool run limit ($CURATION_POOL_RUN_LIMIT, validated here)."""
    import yaml

    from curation_dags.settings import instance_config

    target = dagster_home / "dagster.yaml"
    if overwrite or not target.exists():
        text = (DEPLOY / template).read_text()
        shipped = yaml.safe_load(text)
        config = instance_config(yaml.safe_load(text))
        dagster_home.mkdir(parents=True, exist_ok=True)
        # as shipped (its comments kept) unless the setting changed it
        target.write_text(text if config == shipped else yaml.safe_dump(config, sort_keys=False))
    return target


class Process:
    """A subprocess leading its own process group (so its run workers and code servers stop
    with it), output in a log file."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str]):
        self.cmd, self.log_path = cmd, log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO_ROOT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # children may outlive the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def daemon(dagster_home: Path, env: dict[str, str] | None = None) -> Iterator[Process]:
    """`dagster-daemon run -w workspace.yaml` with DAGSTER_HOME=`dagster_home`."""
    # MALLOC_ARENA_MAX=2 (unless set): run workers inherit it; it keeps the re-assignment's
    # peak flat as the pool grows (docs/SCALE.md, benchmarks/bench_scale.py)
    full_env = {"MALLOC_ARENA_MAX": "2", **os.environ, **(env or {}),
                "DAGSTER_HOME": str(dagster_home)}
    proc = Process([str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
                   dagster_home / "daemon.log", full_env)
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               process: Process | None = None, poll: float = 1.0) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or raise TimeoutError
    naming `what` (with the process's log tail when it died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.cmd[0]} exited while waiting for {what}:\n"
                               f"{process.log_tail()}")
        if time.monotonic() > deadline:
            tail = process.log_tail() if process is not None else ""
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s\n{tail}")
        time.sleep(poll)


# ---- reading the instance ------------------------------------------------------------------
def latest_metadata(instance, key_path: list[str]) -> tuple[float, dict] | None:
    """(timestamp, metadata values) of an asset's latest materialisation, or None."""
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey(key_path))
    if event is None:
        return None
    materialization = event.asset_materialization
    return event.timestamp, {k: v.value for k, v in materialization.metadata.items()}


def materialization_count(instance, key_path: list[str], partition: str | None = None) -> int:
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key_path),
                           asset_partitions=[partition] if partition else None),
        limit=10_000,
    ).records
    return len(records)


def subsets_cover(instance, lancedb, pool, after: float = 0.0) -> dict | None:
    """Metadata of every subset of `pool` when each was materialised after `after` over the
    whole pool: every embedded item assigned to the latest fit, eligible or left out as a
    near duplicate of an eligible one (pools with dedup). Else None."""
    store = lancedb.store(pool.name)
    fit = store.latest_fit_summary()
    if not store.has("embeddings") or fit is None:
        return None
    n_items = store.count("embeddings")
    out = {}
    for spec in pool.subsets:
        got = latest_metadata(instance, naming.subset_path(pool.name, spec.name))
        if got is None or got[0] <= after:
            return None
        meta = got[1]
        covered = meta.get("pool_size", 0) + meta.get("duplicates_excluded", 0)
        if covered != n_items or meta.get("fit_version") != fit.fit_version:
            return None
        out[spec.name] = meta
    return out


def reports_caught_up(instance, pool) -> bool:
    """Every evaluation consumed its subset's latest materialisation and the report consumed
    the latest evaluations (assets.automation's record), with no run of them in flight."""
    from assets.automation import refresh_state
    from assets.keys import asset_key, evaluation_key, subset_key

    evaluations = [evaluation_key(pool, s.name) for s in pool.subsets]
    pairs = [(e, [subset_key(pool, s.name)])
             for e, s in zip(evaluations, pool.subsets, strict=True)]
    pairs.append((asset_key(pool, "report"), evaluations))
    for key, upstream in pairs:
        state = refresh_state(instance, key, upstream)
        if state.in_flight or state.due or not state.consumed:
            return False
    return True


@dataclass
class DropTimeline:
    """Where the time went between landing a drop and refreshed subsets (seconds)."""

    sensor_wait_s: float  # _SUCCESS written -> the drop's run created by the sensor
    queue_s: float  # run created -> run started (queue, run launch)
    launch_s: float  # run started -> its first step started (process, imports, resources)
    steps_s: dict[str, float]  # the drop run's steps (raw, embeddings, assignments, subsets...)
    drop_run_s: float  # run started -> ended
    after_run_s: float  # drop run ended -> subsets refreshed (0: refreshed in the drop run)
    total_s: float
    runs: int  # runs created for this drop until the subsets held it (including any fit)
    subsets_in_drop_run: bool


def step_seconds(instance, run_id: str) -> tuple[float | None, dict[str, float]]:
    """(when the run's first step started, seconds per step keyed by the asset kind: the step
    key without its "<pool>__" prefix)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
             DagsterEventType.STEP_FAILURE}
    records = instance.get_records_for_run(run_id, of_type=kinds, limit=10_000).records
    started: dict[str, float] = {}
    out: dict[str, float] = {}
    for r in records:
        event = r.event_log_entry.dagster_event
        step = event.step_key.split("__", 1)[-1]
        if event.event_type == DagsterEventType.STEP_START:
            started[step] = r.timestamp
        elif step in started:
            out[step] = round(r.timestamp - started[step], 2)
    return (min(started.values()) if started else None), out


def drop_timeline(instance, pool_name: str, drop: str, landed_at: float,
                  refreshed_at: float) -> DropTimeline:
    """Break a drop's landing -> refreshed subsets time down from the run records and the
    steps' events."""
    from dagster import RunsFilter

    from curation.naming import DROP_TAG, POOL_TAG

    drop_runs = instance.get_run_records(RunsFilter(tags={POOL_TAG: pool_name, DROP_TAG: drop}))
    if not drop_runs:
        raise ValueError(f"no run for drop {drop!r} of pool {pool_name!r}")
    drop_run = min(drop_runs, key=lambda r: r.create_timestamp.timestamp())
    created = drop_run.create_timestamp.timestamp()
    started = drop_run.start_time or created
    ended = drop_run.end_time or refreshed_at
    first_step, steps = step_seconds(instance, drop_run.dagster_run.run_id)
    later = [r for r in instance.get_run_records(RunsFilter(tags={POOL_TAG: pool_name}))
             if created <= r.create_timestamp.timestamp() <= refreshed_at]
    in_drop_run = any(k.path[1:2] == ["subsets"]
                      for k in drop_run.dagster_run.asset_selection or [])
    return DropTimeline(
        sensor_wait_s=round(created - landed_at, 2),
        queue_s=round(started - created, 2),
        launch_s=round((first_step or started) - started, 2),
        steps_s=steps,
        drop_run_s=round(ended - started, 2),
        after_run_s=round(max(refreshed_at - ended, 0.0), 2) if not in_drop_run else 0.0,
        total_s=round(refreshed_at - landed_at, 2),
        runs=len(later),
        subsets_in_drop_run=in_drop_run,
    )


# ---- PostgreSQL on loopback (the production instance's storage) --------------------------------
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def new_database(env: dict[str, str], name: str) -> dict[str, str]:
    """An empty database `name` in the cluster of `env` (postgres_cluster's); its environment.
    One Dagster instance per database: instances sharing one share their run keys, asset
    history and sensor cursors."""
    subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", env["DAGSTER_PG_HOST"], "-p",
                                 env["DAGSTER_PG_PORT"], "-U", env["DAGSTER_PG_USER"], name]),
                   check=True, capture_output=True, timeout=120)
    return {**env, "DAGSTER_PG_DB": name}


@contextlib.contextmanager
def postgres_cluster() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 with an empty database `dagster` (Debian's
    postgresql-15); yields the DAGSTER_PG_* environment of deploy/dagster.yaml."""
    import shutil
    import socket
    import tempfile

    if not (PG_BIN / "initdb").exists():
        raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="curation-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd: str) -> None:
        subprocess.run(_as_postgres(list(cmd)), check=True, capture_output=True, timeout=120)

    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "--no-sync")
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start")
        yield new_database({"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port),
                            "DAGSTER_PG_USER": "postgres",
                            "DAGSTER_PG_PASSWORD": "unused-trust-auth"}, "dagster")
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                                     "immediate", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# ---- drop runs whose steps go to a Ray cluster (tests/live/test_ray.py, bench_ray_backfill) --
def drop_job():
    """The drop job of the code location built from the environment ($CURATION_POOLS, the
    first pool): raw and embeddings of one drop, what a drop run holds before the first fit.
    Module level: each step's Ray job rebuilds it from here (`reconstructable_drop_job`)."""
    import dagster as dg

    from assets.keys import asset_key
    from curation.pools import load_pools
    from curation_dags.definitions import build_definitions

    pool = load_pools()[0]
    job = dg.define_asset_job(
        "drop", selection=[asset_key(pool, "raw"), asset_key(pool, "embeddings")])
    defs = dg.Definitions.merge(build_definitions(with_sensors=False), dg.Definitions(jobs=[job]))
    return defs.resolve_job_def("drop")


def reconstructable_drop_job():
    import dagster as dg

    return dg.build_reconstructable_job("curation_demo.live", "drop_job",
                                        reconstructor_working_directory=str(REPO_ROOT))
