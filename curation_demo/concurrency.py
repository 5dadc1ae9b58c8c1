"""The randomised concurrency checker (docs/ISSUES: issue 26, part 7): one seed's scenario on the
production instance, and the invariants checked after every published subset version.

Shared by tests/live/test_concurrency.py (one or two seeds per backend) and
benchmarks/bench_concurrency.py (more seeds, a table). One seed (`run_seed`):

- a throwaway Dagster instance as deploy/dagster.yaml ships it (PostgreSQL storage, queued
  run coordinator, per-pool run limit 4, one fit per pool at a time, run monitoring and
  retries), a real `dagster-webserver` and `dagster-daemon` over workspace.yaml, and one small
  vectors pool whose landing and LanceDB are a local folder or a bucket of an S3 server;
- two first drops, then `steps` actions at seeded random moments (`random.Random(seed)`):
  drops landed (some re-deliver ids of earlier drops, some hold rows without a vector),
  forced refits launched as from the UI (the refit schedule's run config and tags), takedown
  files landed under the pool's prefix, `curate subset export` of the latest version, and
  runs of the subset's evaluation; then a wait until the platform settled (every run ended,
  every drop in the subsets over the latest fit, every takedown applied).

A `Checker` thread polls the LanceDB tables every `POLL_S` throughout and checks:

- I1, after every published subset version (a new version of the subset table): it was drawn
  from a complete snapshot. Its manifest names the fit F and the assignments version A it read
  (and the embeddings version E when it records one; else E is the embeddings version that was
  the latest when A was committed: the refresh read A after A's commit, so every drop embedded
  at E was embedded before its inputs were read). At A, every item embedded at E (taken-down
  items excepted) must have its assignment row of fit F, and no row may be of another fit.
  Fails, naming the drops, when a version is drawn while drops are absent (the delete of a
  drop's rows committed, its append not yet) or assigned by an older fit (a half re-assigned
  pool after a refit).
- I2: no item whose takedown run succeeded is in any readable version (every version
  `list_versions()` lists) of raw, embeddings, assignments (and near_duplicates), checked at
  every poll; of the subset table at the end, once the refresh after the last takedown ran;
  nor in an export started after the takedown run succeeded.
- I3: no run failed on a storage conflict (its failure events mention a commit conflict or a
  data file "Not found"), and no export failed on one.
- I4: every delivered item is exactly once ingested (raw), a duplicate, or quarantined by raw,
  once per delivery; taken-down items excepted.

Versions are immutable, so each table version is read once, when first listed, and kept (the
columns I1 and I2 need: item_id, drop, fit_version), so a version a takedown purge removes later
is still checked. Memory: O(versions x rows of the pool) strings, a few MB for these pools.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation import naming
from curation_demo import live

POOL = "conc"
SUBSET = "even"
DIM = 8
TICK_S = 2  # sensor and automation intervals: short, so that many runs overlap
POLL_S = 0.5  # the checker's poll: well inside a takedown run, so versions are read in time
RUN_LIMIT = 4  # deploy/dagster.yaml's per-pool run limit, as shipped
SETTLE_TIMEOUT_S = 300
FIRST_TIMEOUT_S = 300
POOLS_YAML = f"""\
pools:
  - name: {POOL}
    modality: vectors
    dim: {DIM}
    hierarchy: {{n_clusters: [8, 2], resampling_steps: [1], max_iter: 10, seed: 0, device: cpu}}
    subsets:
      - {{name: {SUBSET}, target_size: 120, strategy: random, seed: 1}}
    # refits only when forced (the scenario's): the policy would add refits at random moments
    # the seed does not choose; two drops per re-assignment run: a refit is several runs
    refit: {{max_added_fraction: 1000.0, max_distance_ratio: 1000.0, warm_start: false,
             cron: null, drops_per_run: 2}}
    health: {{max_empty_fraction: 1.0, max_cluster_share: 1.0}}
    eval_random_draws: 2
    eval_sample: 500
"""
# what a scenario step does besides RACE: each seed's plan holds each action at least this
# often (at least once when above 0), the other steps drawn by the weights
ACTIONS = {"drop": (0.4, 4.0), "refit": (0.0, 0.3), "takedown": (0.1, 1.5),
           "export": (0.1, 1.0), "evaluation": (0.1, 0.5)}
# when a step acts: after a random gap, or while a run writes the assignments (a drop's, or
# one of a re-assignment backfill), purges a takedown or fits the tree
TIMINGS = ("gap", "assignments", "assignments", "backfill", "takedowns", "level_1")
# once per seed, at a random place in its plan: the windows the invariants are about. A large
# drop (its run refreshes the subsets, slowly); a refit launched as soon as that run exists, so
# the fit can commit under the refresh; a drop once the fit ended (the tree new, the pool not
# re-assigned); a takedown while the re-assignment backfill writes (purge against writers)
RACE = [("drop", "now"), ("refit", "drop run exists"), ("drop", "fit ended"),
        ("takedown", "re-assignment")]
BIG_DROP = (20_000, 30_000)  # items of the race's first drop: its run is the slow one
WAIT_FOR_RUN_S = 5
BACKFILL_WAIT_S = 90  # the backfill daemon starts a re-assignment within about a minute
REASSIGNMENT_WAIT_S = 180  # a refit's run, queued behind the drop runs
REFIT_WAIT_S = 40  # the drop sensor's tick, then the run's creation
INVARIANTS = ("I1", "I2", "I3", "I4", "settled")
# a storage conflict, as LanceDB words it: a lost commit race, or a data file removed under a
# reader or a writer (a cleanup that ran during a write)
CONFLICT = re.compile(r"retryable commit conflict|commit conflict|conflict|not found", re.I)
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}

# moto's server, with S3's atomic conditional PUT: S3 checks `If-None-Match: *` and stores the
# object as one step, moto's threaded server does the two apart, so two concurrent LanceDB
# commits of one table version could both pass there (and one be lost), never on S3.
MOTO_ATOMIC_PUT = """
import sys, threading
from moto.s3.responses import S3Response
from moto.server import main
one_put_at_a_time, put_object = threading.Lock(), S3Response.put_object
def atomic_put_object(self):
    with one_put_at_a_time:
        return put_object(self)
S3Response.put_object = atomic_put_object
main(sys.argv[1:])
"""


@dataclass(frozen=True)
class Violation:
    invariant: str  # one of INVARIANTS
    where: str  # the subset version, table version, run or export
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.where}: {self.detail}"


@dataclass
class SeedResult:
    seed: int
    backend: str
    steps: int
    actions: Counter
    subset_versions_checked: int
    unverifiable: list[str]  # subset versions whose inputs were gone before they were read
    violations: list[Violation]
    notes: list[str]  # what the invariants do not cover but a reader wants to know
    wall_s: float
    runs: int = 0  # runs of the seed's instance
    failed_runs: int = 0

    def counts(self) -> dict[str, int]:
        got = Counter(v.invariant for v in self.violations)
        return {name: got.get(name, 0) for name in INVARIANTS}

    def failure(self, limit: int = 12) -> str | None:
        """The assertion message: every invariant violated, named, with the first `limit`
        violations of each (None when none)."""
        if not self.violations:
            return None
        by: dict[str, list[Violation]] = defaultdict(list)
        for v in self.violations:
            by[v.invariant].append(v)
        lines = [f"seed {self.seed} on {self.backend}: "
                 + ", ".join(f"{k} violated {len(v)}x" for k, v in by.items())
                 + f" ({self.subset_versions_checked} subset versions checked, "
                 f"{self.steps} steps {dict(self.actions)})"]
        for name in INVARIANTS:
            lines.extend(f"  {v}" for v in by.get(name, [])[:limit])
            if len(by.get(name, [])) > limit:
                lines.append(f"  ... {len(by[name]) - limit} more {name}")
        return "\n".join(lines)


# ---- where the pool lives: a local folder, or a bucket of an S3 server ------------------------
@dataclass
class Backend:
    kind: str  # "local" | "s3"
    lancedb_uri: str
    endpoint_url: str | None
    env: dict[str, str]  # what the daemon, its runs and `curate` read
    put: Callable[[str, bytes], None]  # a file under the landing root, by relative path


def local_backend(root: Path) -> Backend:
    landing, lancedb = root / "landing", root / "lancedb"
    landing.mkdir(parents=True, exist_ok=True)

    def put(rel: str, data: bytes) -> None:
        path = landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # a sensor never lists half a file
        partial.write_bytes(data)
        partial.rename(path)

    return Backend("local", str(lancedb), None,
                   {"CURATION_LANDING": str(landing), "CURATION_LANCEDB_URI": str(lancedb)}, put)


def s3_backend(endpoint_url: str, bucket: str | None = None) -> Backend:
    """A fresh bucket on the server at `endpoint_url`: the landing under landing/, LanceDB
    under lancedb/ (as tests/live/test_s3_pipeline.py)."""
    import boto3

    bucket = bucket or f"conc-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint_url,
                          aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                          region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])
    client.create_bucket(Bucket=bucket)

    def put(rel: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"landing/{rel}", Body=data)

    env = {**S3_CREDENTIALS, "CURATION_LANDING": f"s3://{bucket}/landing",
           "CURATION_LANCEDB_URI": f"s3://{bucket}/lancedb",
           "CURATION_S3_ENDPOINT_URL": endpoint_url}
    return Backend("s3", f"s3://{bucket}/lancedb", endpoint_url, env, put)


def _wait_http(url: str, proc: live.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            if not proc.alive():
                raise RuntimeError(f"{proc.cmd[0]} exited:\n{proc.log_tail()}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no answer in {timeout:.0f} s\n{proc.log_tail()}"
                                   ) from None
            time.sleep(0.3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """moto's S3 server (its own process, loopback, atomic conditional PUT); its URL."""
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = live.Process([sys.executable, "-c", MOTO_ATOMIC_PUT, "-H", "127.0.0.1", "-p",
                         str(port)], log_dir / "moto.log", {**os.environ, **S3_CREDENTIALS})
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


# ---- the production stack: webserver + daemon over workspace.yaml ----------------------------
WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
REPO_QUERY = """{ repositoriesOrError { ... on RepositoryConnection {
  nodes { name location { name } } } } }"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message }
} }"""


@dataclass
class Stack:
    url: str
    instance: Any  # DagsterInstance of the stack's DAGSTER_HOME (this process's own)
    gql: Any  # curation_dags.commands.backfill.GraphQLClient
    daemon: live.Process
    repository: dict[str, str]

    def launch(self, asset_paths: list[list[str]], tags: dict[str, str],
               run_config: dict | None = None) -> str:
        """A run of these assets, as a user launches it from the UI; its run id."""
        got = self.gql(LAUNCH, {"params": {
            "selector": {**self.repository, "jobName": "__ASSET_JOB",
                         "assetSelection": [{"path": p} for p in asset_paths]},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }})["launchRun"]
        if got["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launch of {asset_paths} refused: {got}")
        return got["run"]["runId"]


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ with `env` applied (this process reads the instance and the tables with it),
    restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def production_stack(home: Path, env: dict[str, str], timeout: float = 180) -> Iterator[Stack]:
    """deploy/dagster.yaml as shipped (the per-pool limit from $CURATION_POOL_RUN_LIMIT, which
    `env` sets) in `home`, `dagster-webserver` on loopback (code location loaded), then
    `dagster-daemon`; both stopped with their process groups. `env` must be in os.environ."""
    import yaml
    from dagster import DagsterInstance

    from curation_dags.commands.backfill import BackfillError, GraphQLClient

    config = yaml.safe_load(live.write_instance_yaml(home, "dagster.yaml", overwrite=True)
                            .read_text())
    limits = {lim["key"]: lim["limit"]
              for lim in config["concurrency"]["runs"]["tag_concurrency_limits"]}
    if limits.get(naming.POOL_TAG) != int(env["CURATION_POOL_RUN_LIMIT"]):
        raise RuntimeError(f"instance per-pool limit {limits} is not the one asked for")
    full_env = {"MALLOC_ARENA_MAX": "2", **os.environ, **env, "DAGSTER_HOME": str(home)}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    web = live.Process([str(live.BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                        "-w", str(live.WORKSPACE)], home / "webserver.log", full_env)
    instance = None
    try:
        _wait_http(f"{url}/server_info", web, timeout)
        gql = GraphQLClient(url, timeout=60)
        deadline = time.monotonic() + timeout
        while True:
            try:
                entries = gql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            except BackfillError:
                entries = []
            for entry in entries:
                error = entry.get("locationOrLoadError") or {}
                if error.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location {entry['name']}: {error['message']}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                break
            if time.monotonic() > deadline or not web.alive():
                raise TimeoutError(f"code location not loaded:\n{web.log_tail()}")
            time.sleep(0.5)
        repo = gql(REPO_QUERY)["repositoriesOrError"]["nodes"][0]
        repository = {"repositoryLocationName": repo["location"]["name"],
                      "repositoryName": repo["name"]}
        instance = DagsterInstance.from_config(str(home))
        with live.daemon(home, env) as daemon:
            yield Stack(url, instance, gql, daemon, repository)
    finally:
        web.stop()
        if instance is not None:
            instance.dispose()


# ---- reading the tables ---------------------------------------------------------------------
def open_db(backend: Backend):
    from curation.store import connect, storage_options

    return connect(backend.lancedb_uri, storage_options(backend.endpoint_url))


def _open(db, name: str):
    try:
        return db.open_table(name)
    except (ValueError, FileNotFoundError, RuntimeError, OSError):
        return None  # not created yet


def _read(table, version: int | None, columns: list[str]):
    """`columns` of the table at `version` (the latest when None), or None when that version
    is gone (a cleanup removed it) or does not hold those columns."""
    try:
        if version is not None:
            table.checkout(version)
        present = [c for c in columns if c in table.schema.names]
        if len(present) != len(columns):
            return None
        return table.search().select(present).limit(None).to_arrow()
    except (ValueError, OSError, RuntimeError):
        return None
    finally:
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            table.checkout_latest()


def _versions(table) -> dict[int, float]:
    """{version: commit time (epoch seconds)} of every version the table lists now."""
    try:
        return {int(v["version"]): v["timestamp"].timestamp() for v in table.list_versions()}
    except (ValueError, OSError, RuntimeError):
        return {}


def _recorded_version(versions: dict, pool: str, kind: str) -> int | None:
    """The version of `kind` a manifest's table_versions records (by kind or by table name)."""
    for key in (kind, naming.table(pool, kind)):
        if key in versions and versions[key] is not None:
            return int(versions[key])
    return None


def failure_text(instance, run_id: str) -> str:
    """Every failure message of a run (step and run failures, errors with their causes)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE,
             DagsterEventType.ENGINE_EVENT}
    parts = []
    for record in instance.get_records_for_run(run_id, of_type=kinds, limit=1000).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        data = getattr(event, "event_specific_data", None)
        error = getattr(data, "error", None)
        if event.event_type == DagsterEventType.ENGINE_EVENT and error is None:
            continue
        parts.append(entry.user_message or "")
        if error is not None:
            parts.append(error.to_string())
    return "\n".join(p for p in parts if p)


def _held(rows, items: list[str]) -> list[str]:
    """The `items` among the rows' item_id (sorted)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not items:
        return []
    ids = rows["item_id"]
    return sorted(ids.filter(pc.is_in(ids, value_set=pa.array(items, pa.string()))).to_pylist())


def _first_match(text: str) -> str:
    for line in text.splitlines():
        if CONFLICT.search(line):
            return line.strip()[:300]
    return ""


class Checker:
    """Polls the pool's tables in a thread of its own (its own LanceDB connection and Dagster
    instance) and records violations of I1 and I2; `finish` adds the end-of-run checks (I2 on
    the subset table and exports, I3, I4)."""

    def __init__(self, backend: Backend, dagster_home: Path, pool: str = POOL,
                 subset: str = SUBSET):
        self.backend, self.home, self.pool, self.subset = backend, dagster_home, pool, subset
        self.violations: list[Violation] = []
        self.unverifiable: list[str] = []
        self.errors: list[str] = []
        self.checked = 0
        # version -> columns, for the tables I1 and I2 read (read once: versions never change)
        self.cache: dict[str, dict[int, Any]] = {k: {} for k in self.item_kinds}
        self.commit_time: dict[str, dict[int, float]] = {k: {} for k in self.item_kinds}
        self.gone: dict[str, set[int]] = {k: set() for k in self.item_kinds}
        self.subset_seen: set[int] = set()
        self.published: set[tuple] = set()  # (fit, assignments version, manifest sha)
        self.erased: dict[str, str] = {}  # item -> its takedown run (run succeeded)
        self.erased_at: dict[str, float] = {}  # item -> when this checker saw the success
        self.i2_checked: dict[tuple[str, int], int] = {}  # (kind, version) -> items checked
        self._reported: set[tuple] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="checker", daemon=True)

    item_kinds = ("raw", "embeddings", "assignments", "near_duplicates")
    columns = {"raw": ["item_id", "drop"], "embeddings": ["item_id", "drop"],
               "assignments": ["item_id", "drop", "fit_version"],
               "near_duplicates": ["item_id", "drop"]}

    def table_name(self, kind: str) -> str:
        return naming.table(self.pool, kind)

    def start(self) -> None:
        from dagster import DagsterInstance

        self.db = open_db(self.backend)
        self.instance = DagsterInstance.from_config(str(self.home))
        self._thread.start()

    def stop(self) -> None:
        """Stop the poll thread (`finish` and `close` come after)."""
        self._stop.set()
        self._thread.join(timeout=120)

    def close(self) -> None:
        self.instance.dispose()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # a poll that broke is reported, the next one tries again
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(POLL_S)

    def _violation(self, key: tuple, invariant: str, where: str, detail: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            with self._lock:
                self.violations.append(Violation(invariant, where, detail))

    # -- one poll ---------------------------------------------------------------------------
    def poll(self) -> None:
        listed = {}
        for kind in self.item_kinds:
            listed[kind] = self._remember(kind)
        self._check_subset_versions()
        self._note_takedowns()
        for kind in self.item_kinds:
            self._check_erased(kind, listed[kind])

    def _remember(self, kind: str) -> dict[int, float]:
        """Read every version of `kind` not read yet; the versions listed now."""
        table = _open(self.db, self.table_name(kind))
        if table is None:
            return {}
        listed = _versions(table)
        self.commit_time[kind].update(listed)
        for version in sorted(listed):
            if version in self.cache[kind] or version in self.gone[kind]:
                continue
            got = _read(table, version, self.columns[kind])
            if got is None:
                self.gone[kind].add(version)
            else:
                self.cache[kind][version] = got
        return listed

    def _check_subset_versions(self) -> None:
        from curation.subsets import table_manifest

        table = _open(self.db, naming.subset_table(self.pool, self.subset))
        if table is None:
            return
        for version in sorted(_versions(table)):
            if version in self.subset_seen:
                continue
            self.subset_seen.add(version)
            try:
                table.checkout(version)
                manifest = table_manifest(table)
            except (ValueError, OSError, RuntimeError):
                self.unverifiable.append(f"subset {self.subset} v{version}: gone before read")
                continue
            finally:
                with contextlib.suppress(ValueError, OSError, RuntimeError):
                    table.checkout_latest()
            if manifest:
                self.check_snapshot(version, manifest)

    def _embeddings_version_at(self, when: float) -> int | None:
        """The latest embeddings version committed at or before `when`."""
        times = self.commit_time["embeddings"]
        before = [v for v, t in times.items() if t <= when]
        return max(before) if before else None

    def check_snapshot(self, version: int, manifest: dict) -> None:
        """I1 for one published subset version."""
        import pyarrow.compute as pc

        fit = int(manifest["fit_version"])
        recorded = manifest.get("table_versions") or {}
        a_version = _recorded_version(recorded, self.pool, "assignments")
        key = (fit, a_version, manifest.get("sha256"))
        if key in self.published:  # the same publication again (a compaction's version)
            return
        self.published.add(key)
        where = f"subset {self.subset} v{version}"
        if a_version is None:
            self._violation(("I1", version), "I1", where,
                            f"its manifest records no assignments version: {recorded}")
            return
        # an I1 check needs the assignments version read: read it now if this poll did not
        self._remember("assignments")
        self._remember("embeddings")
        assignments = self.cache["assignments"].get(a_version)
        e_version = _recorded_version(recorded, self.pool, "embeddings")
        how = "recorded"
        if e_version is None:
            when = self.commit_time["assignments"].get(a_version)
            e_version = None if when is None else self._embeddings_version_at(when)
            how = "latest at the assignments commit"
        embeddings = self.cache["embeddings"].get(e_version) if e_version else None
        if assignments is None or (e_version is not None and embeddings is None):
            self.unverifiable.append(f"{where}: assignments v{a_version} / embeddings "
                                     f"v{e_version} gone before read")
            return
        self.checked += 1
        down = set(self.taken_down_ids())
        fits = dict(zip(assignments["item_id"].to_pylist(),
                        assignments["fit_version"].to_pylist(), strict=True))
        other_fit = Counter(f for i, f in fits.items() if f != fit and i not in down)
        per_drop: dict[str, Counter] = defaultdict(Counter)
        if embeddings is not None:
            for item, drop in zip(embeddings["item_id"].to_pylist(),
                                  embeddings["drop"].to_pylist(), strict=True):
                if item in down:
                    continue
                got = fits.get(item)
                per_drop[drop]["embedded"] += 1
                per_drop[drop]["ok" if got == fit else
                               "no row" if got is None else f"fit {got}"] += 1
        bad = {d: c for d, c in per_drop.items() if c["ok"] != c["embedded"]}
        if not bad and not other_fit:
            return
        missing = sum(c["embedded"] - c["ok"] for c in bad.values())
        embedded = sum(c["embedded"] for c in per_drop.values())
        drops = "; ".join(
            f"{d} ({c['embedded']} embedded: "
            + ", ".join(f"{n} {k}" for k, n in sorted(c.items()) if k not in ("embedded",))
            + ")" for d, c in sorted(bad.items()))
        absent = sorted(d for d, c in bad.items() if c["ok"] == 0)
        stale = sum(other_fit.values())
        detail = (f"drawn from an incomplete snapshot (fit {fit}, assignments v{a_version}, "
                  f"embeddings v{e_version} {how}): {missing} of {embedded} embedded items "
                  f"not assigned at fit {fit}; drops absent: {absent or 'none'}; "
                  f"incomplete drops: {drops or 'none'}; {stale} assignment rows of another "
                  f"fit {dict(other_fit)} (stale_excluded)")
        rows = assignments.num_rows
        if rows and pc.count_distinct(assignments["item_id"]).as_py() != rows:
            detail += "; duplicate item ids in the assignments"
        self._violation(("I1", version), "I1", where, detail)

    def taken_down_ids(self) -> list[str]:
        """Every item the audit table records (pending or applied)."""
        audit = _open(self.db, self.table_name("takedowns"))
        got = None if audit is None else _read(audit, None, ["item_id"])
        return [] if got is None else got["item_id"].to_pylist()

    def _note_takedowns(self) -> None:
        """Items whose takedown run succeeded (the audit stamps the run that purged them)."""
        audit = _open(self.db, self.table_name("takedowns"))
        got = None if audit is None else _read(audit, None, ["item_id", "run"])
        if got is None:
            return
        for item, run in zip(got["item_id"].to_pylist(), got["run"].to_pylist(), strict=True):
            if not run or item in self.erased:
                continue
            record = self.instance.get_run_by_id(run)
            if record is not None and record.status.value == "SUCCESS":
                self.erased[item] = run
                self.erased_at[item] = time.time()

    def _check_erased(self, kind: str, listed: dict[int, float]) -> None:
        """I2 for the versions of `kind` listed now (readable) and the items erased so far."""
        items = sorted(self.erased)
        for version in listed:
            if self.i2_checked.get((kind, version), 0) == len(items):
                continue
            got = self.cache[kind].get(version)
            if got is None:
                continue
            self.i2_checked[(kind, version)] = len(items)
            held = _held(got, items)
            if held:
                self._violation(
                    ("I2", kind, version), "I2", f"{self.table_name(kind)} v{version}",
                    f"readable version holds {len(held)} item(s) whose takedown run "
                    f"succeeded: " + ", ".join(f"{i} (run {self.erased[i][:8]})"
                                               for i in held[:10]))

    # -- the end ----------------------------------------------------------------------------
    def finish(self, deliveries: list[tuple[str, int, str]], exports: list[dict]) -> list[str]:
        """The end-of-run checks (the platform settled, the poll thread stopped): a last poll,
        I2 on the subset table and the exports, I3, I4. Returns notes (failed runs that were
        not storage conflicts)."""
        self.poll()
        self._check_subset_erased()
        for export in exports:
            self._check_export(export)
        notes = self._check_runs()
        self._check_deliveries(deliveries)
        return notes

    def _check_subset_erased(self) -> None:
        name = naming.subset_table(self.pool, self.subset)
        table = _open(self.db, name)
        if table is None or not self.erased:
            return
        for version in sorted(_versions(table)):
            got = _read(table, version, ["item_id"])
            if got is None:
                continue
            held = _held(got, sorted(self.erased))
            if held:
                self._violation(("I2", name, version), "I2", f"{name} v{version}",
                                f"readable at the end, holds {len(held)} item(s) whose "
                                f"takedown run succeeded: {held[:10]}")

    def _check_export(self, export: dict) -> None:
        where = f"export #{export['n']} (subset {self.subset})"
        if export["rc"] != 0:
            text = export["stderr"]
            if CONFLICT.search(text):
                self._violation(("I3", where), "I3", where,
                                f"failed on a storage conflict: {_first_match(text)}")
            else:
                self._violation(("I3", where), "I3", where,
                                f"failed (exit {export['rc']}): {text.strip()[-300:]}")
            return
        erased_before = {i for i, t in self.erased_at.items() if t < export["started"]}
        held = sorted(set(export["ids"]) & erased_before)
        if held:
            self._violation(("I2", where), "I2", where,
                            f"version {export['version']} exported {len(held)} item(s) "
                            f"whose takedown run succeeded before the export: {held[:10]}")

    def _check_runs(self) -> list[str]:
        """I3: every failed run of the pool, by its failure events. Other failures are notes."""
        from dagster import DagsterRunStatus, RunsFilter

        notes = []
        runs = self.instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]),
                                             limit=10_000)
        for record in runs:
            run = record.dagster_run
            text = failure_text(self.instance, run.run_id)
            selection = ",".join("/".join(k.path[1:]) for k in (run.asset_selection or []))
            where = (f"run {run.run_id[:8]} [{selection}]"
                     + (f" drop {run.tags[naming.DROP_TAG]}" if naming.DROP_TAG in run.tags
                        else ""))
            match = _first_match(text)
            if match:
                self._violation(("I3", run.run_id), "I3", where,
                                f"failed on a storage conflict: {match}")
            else:
                last = text.strip().splitlines()[-1] if text.strip() else "no failure event"
                notes.append(f"{where} failed: {last[:300]}")
        return notes

    def _check_deliveries(self, deliveries: list[tuple[str, int, str]]) -> None:
        """I4 over the latest raw, duplicates and quarantine tables."""
        delivered = Counter(item for _, _, item in deliveries)
        at = {(drop, row): item for drop, row, item in deliveries}
        seen: dict[str, Counter] = defaultdict(Counter)
        for kind, cols in (("raw", ["item_id"]), ("duplicates", ["item_id"])):
            table = _open(self.db, self.table_name(kind))
            got = None if table is None else _read(table, None, cols)
            for item in [] if got is None else got["item_id"].to_pylist():
                seen[item][kind] += 1
        table = _open(self.db, self.table_name("quarantine"))
        got = None if table is None else _read(table, None, ["drop", "stage", "item_id", "uri"])
        for row in [] if got is None else got.to_pylist():
            if row["stage"] != "raw":
                continue
            item = row["item_id"]
            if not item:  # a row raw could not read: named by its file and row
                found = re.search(r"#row=(\d+)$", row["uri"] or "")
                item = at.get((row["drop"], int(found.group(1)))) if found else None
            seen[item or f"? {row['uri']}"]["quarantine"] += 1
        down = set(self.taken_down_ids())
        wrong = []
        for item in sorted(set(delivered) | set(seen)):
            if item in down:
                continue
            got = seen.get(item, Counter())
            if sum(got.values()) != delivered.get(item, 0):
                wrong.append(f"{item} delivered {delivered.get(item, 0)}x: ingested "
                             f"{got['raw']}, duplicate {got['duplicates']}, quarantined "
                             f"{got['quarantine']}")
        if wrong:
            self._violation(("I4",), "I4", "raw + duplicates + quarantine",
                            f"{len(wrong)} item(s) not exactly once ingested, duplicate or "
                            f"quarantined per delivery: " + "; ".join(wrong[:10]))


def _reads_only(run) -> bool:
    """A run of evaluations and the report only (it writes no table a subset reads)."""
    kinds = {k.path[1] for k in run.asset_selection or ()}
    return bool(kinds) and kinds <= {"evaluation", "report"}


# ---- one seed's scenario --------------------------------------------------------------------
def drop_parquet(ids: list[str], vectors, labels, bad_rows: set[int]) -> bytes:
    """One Parquet file of a vectors drop: item_id, vector (null in `bad_rows`: raw
    quarantines those), label."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [None if r in bad_rows else [float(x) for x in v] for r, v in enumerate(vectors)]
    table = pa.table({"item_id": pa.array(ids, pa.string()),
                      "vector": pa.array(values, pa.list_(pa.float32())),
                      "label": pa.array([int(x) for x in labels], pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class Scenario:
    """One seed's actions against the stack, at seeded random moments."""

    def __init__(self, seed: int, steps: int, backend: Backend, stack: Stack, pool,
                 work: Path, log: Callable[[str], None], max_gap_s: float = 6.0):
        from resources.lancedb import LanceDBResource

        self.rng = random.Random(seed)
        self.seed, self.steps, self.backend, self.stack = seed, steps, backend, stack
        self.pool, self.work, self.log, self.max_gap_s = pool, work, log, max_gap_s
        self.lancedb = LanceDBResource(uri=backend.lancedb_uri,
                                       endpoint_url=backend.endpoint_url)
        self.deliveries: list[tuple[str, int, str]] = []  # (drop, row, item_id)
        self.good_ids: list[str] = []  # delivered with a vector
        self.drops: list[str] = []
        self.takedown_files: list[str] = []
        self.exports: list[dict] = []
        self._export_procs: list[tuple[dict, subprocess.Popen, Path]] = []
        self.actions: Counter = Counter()
        self._seen_runs: set[str] = set()
        self._refit_run: str | None = None

    # -- actions ----------------------------------------------------------------------------
    def land(self, n: int | None = None) -> str:
        from curation_demo.synthetic import fixed_mixture_draw

        rng = self.rng
        drop = f"d{len(self.drops):03d}"
        n = n or rng.randint(20, 70)
        x, labels = fixed_mixture_draw(n, DIM, self.seed * 1_000 + len(self.drops))
        ids = [f"{drop}-{i}" for i in range(n)]
        if self.good_ids and rng.random() < 0.3:  # re-deliver ids of earlier drops
            for r in range(min(rng.randint(1, 5), n)):
                ids[r] = rng.choice(self.good_ids)
            ids = list(dict.fromkeys(ids)) + [f"{drop}-x{i}" for i in range(n - len(set(ids)))]
        bad = set(rng.sample(range(n), rng.randint(1, 2))) if rng.random() < 0.25 else set()
        self.backend.put(f"{self.pool.prefix}/{drop}/part-0.parquet",
                         drop_parquet(ids, x, labels, bad))
        self.backend.put(f"{self.pool.prefix}/{drop}/_SUCCESS", b"")
        self.deliveries += [(drop, r, i) for r, i in enumerate(ids)]
        self.good_ids += [i for r, i in enumerate(ids) if r not in bad]
        self.drops.append(drop)
        return f"{drop} ({n} items, {len(bad)} without a vector)"

    def refit(self) -> str:
        from curation_dags.sensors import refit_run_config

        tags = {naming.REFIT_TAG: "force", naming.POOL_TAG: self.pool.name,
                naming.FIT_TAG: self.pool.name}
        paths = naming.level_paths(self.pool.name, self.pool.hierarchy.n_levels)
        run = self.stack.launch(paths, tags, refit_run_config(self.pool))
        self._refit_run = run
        return f"forced refit run {run[:8]}"

    def takedown(self) -> str:
        from curation.landing import TAKEDOWNS_FOLDER

        items = self.rng.sample(sorted(set(self.good_ids)), self.rng.randint(1, 3))
        name = f"t{len(self.takedown_files):02d}.txt"
        body = f"# reason: concurrency check seed {self.seed}\n" + "\n".join(items) + "\n"
        self.backend.put(f"{self.pool.prefix}/{TAKEDOWNS_FOLDER}/{name}", body.encode())
        self.takedown_files.append(name)
        return f"takedown {name}: {items}"

    def export(self) -> str:
        n = len(self.exports) + len(self._export_procs)
        out = self.work / "exports" / f"{n:03d}.parquet"
        cmd = [str(live.BIN / "curate"), "subset", "export", "--pool", self.pool.name,
               "--subset", SUBSET, "--format", "parquet", "--out", str(out),
               "--lancedb", self.backend.lancedb_uri]
        record = {"n": n, "started": time.time()}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=live.REPO_ROOT, env=dict(os.environ), text=True)
        self._export_procs.append((record, proc, out))
        return f"export #{n}"

    def evaluation(self) -> str:
        run = self.stack.launch([naming.evaluation_path(self.pool.name, SUBSET)],
                                {naming.POOL_TAG: self.pool.name})
        return f"evaluation run {run[:8]}"

    def collect_exports(self, timeout: float = 120) -> None:
        import pyarrow.parquet as pq

        for record, proc, out in self._export_procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            record.update(rc=proc.returncode, stderr=stderr, ids=[], version=None)
            if proc.returncode == 0:
                record["version"] = json.loads(stdout.strip().splitlines()[-1])["version"]
                record["ids"] = pq.read_table(out, columns=["item_id"])["item_id"].to_pylist()
            self.exports.append(record)
        self._export_procs = []

    # -- waits ------------------------------------------------------------------------------
    def first_subsets(self) -> None:
        live.wait_until(lambda: live.latest_metadata(
            self.stack.instance, naming.subset_path(self.pool.name, SUBSET)),
            FIRST_TIMEOUT_S, "the first subsets", self.stack.daemon, poll=0.5)

    def unsettled(self) -> str | None:
        """Why the platform has not settled yet (None: settled): a landed drop not ingested,
        a run or backfill in flight, a takedown not applied, subsets not over every item of
        the latest fit."""
        from dagster import AssetKey, DagsterRunStatus, RunsFilter

        instance = self.stack.instance
        raw = instance.get_materialized_partitions(AssetKey(naming.asset_path(POOL, "raw")))
        waiting = [d for d in self.drops if d not in raw]
        if waiting:
            return f"drops not ingested: {waiting}"
        # readers (evaluations, the report) in flight are not waited for: with every writer
        # done, nothing can conflict with them
        runs = [r for r in instance.get_run_records(RunsFilter(
            statuses=[DagsterRunStatus(s) for s in IN_FLIGHT]), limit=100)
            if not _reads_only(r.dagster_run)]
        if runs:
            return f"{len(runs)} run(s) in flight"
        if any(b.status.value == "REQUESTED" for b in instance.get_backfills(limit=100)):
            return "a backfill in flight"
        audit = self.lancedb.read(self.pool.table("takedowns"), ["by", "run"])
        if self.takedown_files:
            rows = audit.to_pylist() if audit is not None else []
            pending = [r for r in rows if not r["run"]]
            recorded = {r["by"].rsplit("/", 1)[-1] for r in rows}
            missing = [f for f in self.takedown_files if f not in recorded]
            if pending or missing:
                return f"takedowns pending: {len(pending)} rows, files not recorded {missing}"
        if live.subsets_cover(instance, self.lancedb, self.pool) is None:
            return "the latest subsets do not cover every item of the latest fit"
        return None

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> str | None:
        """Wait until `unsettled` is None at three polls in a row (automation ticks between
        them); None, or why not within `timeout`."""
        deadline, calm, why = time.monotonic() + timeout, 0, None
        while time.monotonic() < deadline:
            why = self.unsettled()
            calm = calm + 1 if why is None else 0
            if calm >= 3:
                return None
            if not self.stack.daemon.alive():
                return f"dagster-daemon exited:\n{self.stack.daemon.log_tail()}"
            time.sleep(TICK_S)
        return why or "not settled"

    def wait_for_run(self, kind: str, timeout: float = WAIT_FOR_RUN_S,
                     backfill: bool = False) -> str:
        """Until a run writing `kind` (assignments, takedowns, level_1, subsets) is running
        (one this wait has not seen first, else any; with `backfill`, a run of a backfill:
        the re-assignment after a refit), at most `timeout`; what happened."""
        from dagster import DagsterRunStatus, RunsFilter

        deadline = time.monotonic() + timeout
        while True:
            running = [r.dagster_run for r in self.stack.instance.get_run_records(
                RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=50)
                if [kind] in [k.path[1:2] for k in r.dagster_run.asset_selection or []]
                and (not backfill or "dagster/backfill" in r.dagster_run.tags)]
            fresh = [r for r in running if r.run_id not in self._seen_runs]
            if fresh or running:
                run = (fresh or running)[0]
                self._seen_runs.add(run.run_id)
                time.sleep(self.rng.uniform(0, 1.5))
                return f"during run {run.run_id[:8]} ({kind}{' backfill' * backfill})"
            if time.monotonic() > deadline:
                return f"no {kind} run in {timeout:.0f} s"
            time.sleep(0.2)

    def after_the_fit(self) -> str:
        """Until the refit's run ended (at most REASSIGNMENT_WAIT_S), then a random moment
        of up to `max_gap_s`: the tree is new, its re-assignment not done."""
        run_id = self._refit_run
        live.wait_until(lambda: self.stack.instance.get_run_by_id(run_id).is_finished,
                        REASSIGNMENT_WAIT_S, f"the refit run {run_id}", self.stack.daemon,
                        poll=0.2)
        time.sleep(self.rng.uniform(0, self.max_gap_s))
        return f"after the fit run {run_id[:8]} ended"

    def once_the_drop_run_exists(self) -> str:
        """Until the drop sensor created the run of the latest drop (at most REFIT_WAIT_S),
        then up to a second: a fit launched now runs beside that drop's run."""
        from dagster import RunsFilter

        drop = self.drops[-1]
        live.wait_until(lambda: self.stack.instance.get_run_records(
            RunsFilter(tags={naming.DROP_TAG: drop}), limit=1), REFIT_WAIT_S,
            f"the run of drop {drop}", self.stack.daemon, poll=0.2)
        time.sleep(self.rng.uniform(0, 1.0))
        return f"once the run of {drop} exists"

    def plan(self) -> list[tuple[str, str]]:
        """The seed's steps, (action, timing), in a seeded random order: RACE once, after a
        drop, and the rest drawn (each action at least its share of ACTIONS), each at a
        timing drawn from TIMINGS."""
        rest = max(self.steps - len(RACE), 0)
        plan = [a for a, (share, _) in ACTIONS.items() if share
                for _ in range(max(1, int(share * rest)))][:rest]
        names, weights = list(ACTIONS), [w for _, w in ACTIONS.values()]
        plan += self.rng.choices(names, weights, k=rest - len(plan))
        self.rng.shuffle(plan)
        steps = [(a, self.rng.choice(TIMINGS)) for a in plan]
        if self.steps >= len(RACE):
            first_drop = plan.index("drop") + 1 if "drop" in plan else 0
            at = self.rng.randint(first_drop, len(steps))
            steps[at:at] = RACE
        return steps

    def run(self) -> None:
        first = [self.land(self.rng.randint(30, 50)) for _ in range(2)]
        self.log(f"seed {self.seed}: {', '.join(first)}")
        # the steps start once the pool has a tree and a subset: before, a drop's run does
        # not refresh the subsets, nothing is re-assigned and readers have nothing to read
        self.first_subsets()
        self.log(f"seed {self.seed}: first subsets")
        for step, (action, timing) in enumerate(self.plan()):
            if timing == "gap":
                time.sleep(self.rng.uniform(0, self.max_gap_s))
                when = "gap"
            elif timing == "now":
                when = "now"
            elif timing == "drop run exists":
                when = self.once_the_drop_run_exists()
            elif timing == "fit ended":
                when = self.after_the_fit()
            elif timing in ("backfill", "re-assignment"):
                when = self.wait_for_run("assignments", BACKFILL_WAIT_S if timing ==
                                         "re-assignment" else WAIT_FOR_RUN_S, backfill=True)
            else:
                when = self.wait_for_run(timing)
            self.actions[action] += 1
            if action == "drop":
                done = self.land(self.rng.randint(*BIG_DROP) if timing == "now" else None)
            else:
                done = getattr(self, action)()
            self.log(f"seed {self.seed} step {step + 1}/{self.steps} ({when}): {done}")


def run_seed(seed: int, backend: Backend, pg_env: dict[str, str], work: Path, steps: int,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
             run_limit: int = RUN_LIMIT) -> SeedResult:
    """One seed's scenario on a fresh instance (a database of its own in `pg_env`'s cluster),
    checked throughout; its result."""
    started = time.monotonic()
    say = log
    log = lambda line: say(f"[{time.monotonic() - started:6.1f} s] {line}")  # noqa: E731
    work.mkdir(parents=True, exist_ok=True)
    pools = work / "pools.yaml"
    pools.write_text(POOLS_YAML)
    home = work / "dagster"
    env = {**live.new_database(pg_env, f"conc_{uuid.uuid4().hex[:12]}"), **backend.env,
           "CURATION_HOME": str(work / "curation"), "CURATION_POOLS": str(pools),
           "CURATION_SENSOR_INTERVAL_S": str(TICK_S),
           "CURATION_AUTOMATION_INTERVAL_S": str(TICK_S),
           "CURATION_POOL_RUN_LIMIT": str(run_limit), "DAGSTER_HOME": str(home)}
    from curation.pools import load_pools

    pool = load_pools(pools)[0]
    with _environ(env), production_stack(home, env) as stack:
        checker = Checker(backend, home)
        checker.start()
        scenario = Scenario(seed, steps, backend, stack, pool, work, log)
        why = None
        try:
            scenario.run()
            log(f"seed {seed}: {steps} steps done, waiting for the platform to settle")
            why = scenario.settle()
            scenario.collect_exports()
        finally:
            checker.stop()
        if why is not None:
            checker.violations.append(Violation(
                "settled", f"after {SETTLE_TIMEOUT_S} s", f"the platform did not settle: {why}"))
        try:
            notes = checker.finish(scenario.deliveries, scenario.exports)
        finally:
            checker.close()
        notes += [f"checker poll error: {e}" for e in dict.fromkeys(checker.errors)]
        runs = write_timeline(stack.instance, work / "runs.json")
    return SeedResult(seed, backend.kind, steps, scenario.actions, checker.checked,
                      checker.unverifiable, checker.violations, notes,
                      round(time.monotonic() - started, 1), len(runs),
                      sum(r["status"] == "FAILURE" for r in runs))


def write_timeline(instance, path: Path) -> list[dict]:
    """Every run of the instance (assets, drop, status, created/started/ended, epoch s) as
    JSON at `path`, for reading a seed's interleaving afterwards; the rows."""
    rows = []
    for record in instance.get_run_records(limit=10_000):
        run = record.dagster_run
        rows.append({"run": run.run_id, "status": run.status.value,
                     "assets": ["/".join(k.path[1:]) for k in run.asset_selection or []],
                     "drop": run.tags.get(naming.DROP_TAG),
                     "backfill": run.tags.get("dagster/backfill"),
                     "created": record.create_timestamp.timestamp(),
                     "started": record.start_time, "ended": record.end_time})
    rows.sort(key=lambda r: r["created"])
    path.write_text(json.dumps(rows, indent=1))
    return rows


def temp_work(prefix: str = "conc-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
