"""Real servers on loopback for tests: moto's S3 server, dagster-webserver and dagster-daemon,
PostgreSQL, a two-node Ray cluster.

Each server runs as a subprocess in its own process group (start_new_session) and the whole group
is stopped at teardown, so no child (uvicorn workers, code servers, run workers) outlives a test.
Logs go to files in the test's temp dir and are printed when a server fails to come up.

conftest.py exposes the fixtures to every test module; `dagster_stack` and `graphql` are plain
helpers, imported where used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# moto's server with S3's atomic conditional PUT (one home: the concurrency harness, which the
# benchmarks start it from too)
from curation_demo.concurrency import MOTO_ATOMIC_PUT

__all__ = [
    "S3_CREDENTIALS",
    "dagster_stack",
    "Landing",
    "landing",
    "local_landing",
    "s3_landing",
    "ServerProcess",
    "free_port",
    "graphql",
    "postgres",
    "moto_s3",
    "RayCluster",
    "ray_cluster",
    "s3_bucket",
    "start_server",
    "wait_http",
]

VENV_BIN = Path(sys.executable).parent
RAY_OBJECT_STORE_BYTES = 100 * 1024**2  # per Ray node (Ray's floor is 75 MiB)
S3_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A subprocess leading its own process group, with its output in a log file."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict | None = None, cwd=None):
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # the group may still hold children after the leader exits
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


def wait_http(url: str, server: ServerProcess, timeout: float) -> None:
    """Poll `url` until it answers (any HTTP status), the server dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"{server.cmd[0]} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s:\n{server.log_tail()}")


def start_server(
    cmd: list[str], log_path: Path, probe_url: str, timeout: float, env=None, cwd=None
) -> ServerProcess:
    server = ServerProcess(cmd, log_path, env=env, cwd=cwd)
    try:
        wait_http(probe_url, server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[str]:
    """Endpoint URL of a moto S3 server (server mode, own process) on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **{k.upper(): v for k, v in S3_CREDENTIALS.items()}}
    server = start_server(
        [sys.executable, "-c", MOTO_ATOMIC_PUT, "-H", "127.0.0.1", "-p", str(port)],
        log,
        probe_url=f"http://127.0.0.1:{port}/moto-api/",
        timeout=60,
        env=env,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_s3, request) -> Iterator[tuple[str, object]]:
    """(bucket name, boto3 client) of a fresh bucket on the moto server."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3, **S3_CREDENTIALS)
    name = "test-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]
    name = name.rstrip("-")
    client.create_bucket(Bucket=name)
    yield name, client


# ---- landing zones: a real local folder, or a prefix in a bucket on the moto server --------
class Landing:
    """A landing zone (LandingStorage) plus `put(relative_path, bytes)` to deliver files to it."""

    def __init__(self, storage, put, kind: str):
        self.storage = storage
        self.put = put
        self.kind = kind


@pytest.fixture
def local_landing(tmp_path) -> Landing:
    from resources.storage import LandingStorage

    root = tmp_path / "landing"
    root.mkdir()

    def put(rel: str, data: bytes = b"") -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Landing(LandingStorage(url=str(root)), put, "local")


@pytest.fixture
def s3_landing(s3_bucket, moto_s3) -> Landing:
    from resources.storage import LandingStorage

    bucket, client = s3_bucket

    def put(rel: str, data: bytes = b"") -> None:
        client.put_object(Bucket=bucket, Key=f"incoming/{rel}", Body=data)

    storage = LandingStorage(url=f"s3://{bucket}/incoming", endpoint_url=moto_s3, **S3_CREDENTIALS)
    return Landing(storage, put, "s3")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def landing(request) -> Landing:
    """Both kinds of landing zone, one test each."""
    return request.getfixturevalue(f"{request.param}_landing")


# ---- Dagster webserver + daemon over the real code location --------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent
DAGSTER_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1   # SQLite: one run at a time avoids "database is locked"
telemetry:
  enabled: false
"""


WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def wait_code_location(url: str, web: ServerProcess, timeout: float) -> None:
    """Wait until every code location of the webserver is loaded; raise its load error."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            url + "/graphql",
            data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
        for entry in entries:
            error = entry.get("locationOrLoadError") or {}
            if error.get("__typename") == "PythonError":
                raise RuntimeError(f"code location {entry['name']} failed: {error['message']}")
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return
        if not web.alive():
            raise RuntimeError(f"dagster-webserver exited:\n{web.log_tail()}")
        time.sleep(0.5)
    raise TimeoutError(f"code location not loaded in {timeout:.0f} s:\n{web.log_tail()}")


@contextlib.contextmanager
def dagster_stack(
    home: Path, env: dict[str, str], before_daemon=None, timeout: float = 150,
    instance_yaml: str = DAGSTER_YAML,
) -> Iterator[str]:
    """Start `dagster-webserver` on loopback over workspace.yaml with DAGSTER_HOME=`home`
    (dagster.yaml = `instance_yaml`), call `before_daemon(url)` (e.g. to stop sensors before
    any tick), start `dagster-daemon`; yield the webserver URL; stop both process groups."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml)
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workspace = str(REPO_ROOT / "workspace.yaml")
    web = start_server(
        [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        home / "webserver.log",
        probe_url=f"{url}/server_info",
        timeout=timeout,
        env=full_env,
        cwd=REPO_ROOT,
    )
    daemon = None
    try:
        wait_code_location(url, web, timeout)
        if before_daemon is not None:
            before_daemon(url)
        daemon = ServerProcess(
            [str(VENV_BIN / "dagster-daemon"), "run", "-w", workspace],
            home / "daemon.log",
            env=full_env,
            cwd=REPO_ROOT,
        )
        yield url
    finally:
        web.stop()
        if daemon is not None:
            if not daemon.alive():
                print(f"dagster-daemon exited early:\n{daemon.log_tail()}")
            daemon.stop()


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    """POST a GraphQL query to the webserver; raise on GraphQL errors."""
    import json

    request = urllib.request.Request(
        url + "/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


# ---- PostgreSQL on loopback (Debian's postgresql package) ------------------------------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 with an empty database `dagster`;
    yields the DAGSTER_PG_* environment of deploy/dagster.yaml."""
    from curation_demo.live import PG_BIN, postgres_cluster

    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed (apt-get install postgresql-15): .ci/run "
                    "installs it")
    with postgres_cluster() as env:
        yield env


# ---- a two-node Ray cluster on loopback ------------------------------------------------------
@dataclass(frozen=True)
class RayCluster:
    jobs_url: str  # the head's job server (dashboard), what dagster-ray submits steps to
    node_ids: list[str]  # the head's and the worker's
    temp_dirs: dict[str, Path]  # node id -> that node's own temp dir (sessions, logs)


@contextlib.contextmanager
def ray_cluster(root: Path, timeout: float = 180, nodes: int = 2) -> Iterator[RayCluster]:
    """A head and, with `nodes=2`, one worker node (`ray start --block`, one CPU each, each its
    own temp dir under `root`) on 127.0.0.1; stopped by their process groups at the end. Ray
    also binds the host's non-loopback address: start it in a network namespace of its own
    (test_ray.py, benchmarks/bench_scale.py's `ray` step)."""
    if nodes not in (1, 2):
        raise ValueError(f"nodes={nodes}: a head alone (1) or a head and a worker (2)")
    from ray.util.state import list_nodes

    root.mkdir(parents=True, exist_ok=True)
    ray, port, dashboard = str(VENV_BIN / "ray"), free_port(), free_port()
    url = f"http://127.0.0.1:{dashboard}"
    # a step's entrypoint is `dagster api execute_step`: this venv's, as a node's image has it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    node = ["--block", "--num-cpus=1", f"--object-store-memory={RAY_OBJECT_STORE_BYTES}",
            "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    started = []
    try:
        started.append(ServerProcess(
            [ray, "start", "--head", f"--port={port}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--temp-dir={root / 'head'}", *node], root / "head.log", env=env))
        wait_http(f"{url}/api/version", started[0], timeout)
        if nodes == 2:
            started.append(ServerProcess(
                [ray, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={root / 'worker'}",
                 *node], root / "worker.log", env=env))
        deadline = time.monotonic() + timeout
        while True:
            alive = [n for n in list_nodes(address=url) if n.state == "ALIVE"]
            if len(alive) == nodes:
                break
            if time.monotonic() > deadline or not started[-1].alive():
                raise TimeoutError(f"the Ray worker node did not join:\n{started[-1].log_tail()}")
            time.sleep(0.5)
        dirs = {n.node_id: root / ("head" if n.is_head_node else "worker") for n in alive}
        yield RayCluster(url, sorted(dirs), dirs)
    finally:
        for server in reversed(started):
            server.stop()
