"""`curate backfill` against a real dagster-webserver + dagster-daemon on loopback, over the real
code location (workspace.yaml), with a temp DAGSTER_HOME, a tiny pool and a local landing folder.
The servers start once for the module (~30 s)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from servers import dagster_stack, graphql

from curation_dags.cli import main
from curation_dags.commands.backfill import parse_partitions, select_partitions

POOL = "bf"
DIM = 8
POOLS_YAML = f"""\
pools:
  - name: {POOL}
    landing_prefix: {POOL}
    modality: vectors
    dim: {DIM}
    hierarchy: {{n_clusters: [4, 2], resampling_steps: [1], sample_sizes: [2, 1], max_iter: 5}}
    subsets:
      - {{name: all, target_size: 10}}
    refit: {{cron: null}}
"""


def write_drop(landing, drop: str, n: int, seed: int, complete: bool = True) -> None:
    folder = landing / POOL / drop
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    table = pa.table(
        {
            "item_id": [f"{drop}-{i}" for i in range(n)],
            "vector": pa.array(list(vectors), type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, folder / "part-0.parquet")
    if complete:
        (folder / "_SUCCESS").touch()


def sensor_selector(url: str, name: str) -> dict:
    repos = graphql(
        url,
        "{ repositoriesOrError { ... on RepositoryConnection { "
        "nodes { name location { name } } } } }",
    )["repositoriesOrError"]["nodes"]
    (repo,) = repos
    return {
        "repositoryName": repo["name"],
        "repositoryLocationName": repo["location"]["name"],
        "sensorName": name,
    }


def stop_sensor(url: str, name: str) -> None:
    """Stop a sensor so that only the backfill launches runs in this test."""
    sensor = graphql(
        url,
        "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename "
        "... on Sensor { sensorState { id selectorId status } } } }",
        {"s": sensor_selector(url, name)},
    )["sensorOrError"]
    state = sensor["sensorState"]
    result = graphql(
        url,
        "mutation($o: String, $s: String) { stopSensor(jobOriginId: $o, jobSelectorId: $s) { "
        "__typename ... on StopSensorMutationResult { instigationState { status } } } }",
        {"o": state["id"], "s": state["selectorId"]},
    )["stopSensor"]
    assert result["instigationState"]["status"] == "STOPPED", result


def start_sensor(url: str, name: str) -> None:
    result = graphql(
        url,
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
        "... on Sensor { sensorState { status } } } }",
        {"s": sensor_selector(url, name)},
    )["startSensor"]
    assert result["sensorState"]["status"] == "RUNNING", result


def runs_for_partition(url: str, partition: str) -> list[dict]:
    return graphql(
        url,
        "query($t: [ExecutionTag!]) { runsOrError(filter: {tags: $t}) { ... on Runs { "
        "results { runId status tags { key value } } } } }",
        {"t": [{"key": "dagster/partition", "value": partition}]},
    )["runsOrError"]["results"]


def materialized_partitions(url: str, asset: str) -> set[str]:
    node = graphql(
        url,
        "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { ... on AssetNode { "
        "assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } "
        "} } }",
        {"k": {"path": [POOL, asset]}},
    )["assetNodeOrError"]
    return set(node["assetPartitionStatuses"]["materializedPartitions"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill")
    landing = root / "landing"
    (root / "pools.yaml").write_text(POOLS_YAML)
    write_drop(landing, "d1", 30, seed=1)
    write_drop(landing, "d2", 30, seed=2)
    env = {
        "CURATION_POOLS": str(root / "pools.yaml"),
        "CURATION_HOME": str(root / "curation"),
        "CURATION_LANDING": str(landing),
        "CURATION_LANCEDB_URI": str(root / "lancedb"),
    }

    def stop_sensors(url: str) -> None:
        # before the daemon starts: only the backfills launch runs here
        for sensor in (f"{POOL}_drops_sensor", f"{POOL}_automation", f"{POOL}_refit_sensor"):
            stop_sensor(url, sensor)

    with dagster_stack(root / "dagster_home", env, before_daemon=stop_sensors) as url:
        yield url, landing


def test_parse_and_select_partitions():
    existing = ["a", "b", "c", "d"]
    assert select_partitions(parse_partitions("all"), existing) == (existing, [])
    assert select_partitions(parse_partitions("b..d"), existing) == (["b", "c", "d"], [])
    assert select_partitions(parse_partitions("a, x,a"), existing) == (["a", "x"], ["x"])
    with pytest.raises(ValueError, match="registered after"):
        select_partitions(parse_partitions("d..b"), existing)
    with pytest.raises(ValueError, match="'zz' is not a registered drop"):
        select_partitions(parse_partitions("a..zz"), existing)


def test_invalid_options_name_the_field(capsys):
    rc = main(["backfill", "--url", "ftp://x", "--pool", "Bad", "--partitions", "a,.x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--url='ftp://x'" in err and "--pool='Bad'" in err
    assert "--partitions='a,.x'" in err and "'.x' starts with '.'" in err


def curate_backfill(url: str, *args: str) -> subprocess.Popen:
    """The real `curate` console script, as CI calls it."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "curate"), "backfill", "--url", url, "--pool", POOL,
         "--poll-interval", "1", "--timeout", "240", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def backfills(stack) -> dict[str, tuple[int, str, str]]:
    """A succeeding and a failing backfill, launched together: the backfill daemon works in
    30 s iterations, so running them side by side halves the wait."""
    url, landing = stack
    write_drop(landing, "d_incomplete", 5, seed=3, complete=False)  # raw refuses it
    procs = {
        "ok": curate_backfill(url, "--partitions", "d1,d2", "--add-missing"),
        "failing": curate_backfill(url, "--partitions", "d_incomplete", "--add-missing"),
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return results


@pytest.mark.slow
def test_backfill_two_drops_succeeds(stack, backfills):
    url, _ = stack
    rc, out, err = backfills["ok"]
    assert rc == 0, out + err
    assert "registered drop 'd1'" in out and "registered drop 'd2'" in out
    assert "4/4 materialized" in out  # 2 assets x 2 drops
    assert "succeeded" in out
    for asset in ("raw", "embeddings"):
        assert materialized_partitions(url, asset) == {"d1", "d2"}


@pytest.mark.slow
def test_failing_backfill_exits_non_zero(stack, backfills):
    url, _ = stack
    rc, out, err = backfills["failing"]
    assert rc == 1, out + err
    assert "registered drop 'd_incomplete'" in out
    assert "COMPLETED_FAILED" in err or "FAILED" in err
    assert "1 asset partition(s) failed" in err or "failed" in err
    assert "d_incomplete" not in materialized_partitions(url, "raw")


@pytest.mark.slow
def test_range_dry_run_resolves_registered_drops(stack, backfills, capsys):
    url, _ = stack
    registered = graphql(
        url,
        "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { ... on AssetNode { "
        "partitionKeys } } }",
        {"k": {"path": [POOL, "embeddings"]}},
    )["assetNodeOrError"]["partitionKeys"]
    # registration order; d_incomplete was added concurrently, so it may sit between d1 and d2
    expected = registered[registered.index("d1") : registered.index("d2") + 1]
    assert {"d1", "d2"} <= set(expected)
    rc = main(
        ["backfill", "--url", url, "--pool", POOL, "--partitions", "d1..d2", "--assets",
         "embeddings", "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert f"backfill bf/embeddings for {len(expected)} drop(s): {', '.join(expected)}" in out
    assert "dry run" in out


@pytest.mark.slow
def test_server_side_validation(stack, capsys):
    url, _ = stack
    assert main(["backfill", "--url", url, "--pool", "nope", "--partitions", "all"]) == 2
    assert "--pool='nope': unknown pool (served: ['bf'" in capsys.readouterr().err
    rc = main(["backfill", "--url", url, "--pool", POOL, "--partitions", "never_seen"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'never_seen'" in err and "--add-missing" in err
    rc = main(["backfill", "--url", url, "--pool", POOL, "--partitions", "all",
               "--assets", "level_1"])  # fmt: skip
    assert rc == 2
    assert "not partitioned by drop" in capsys.readouterr().err


@pytest.mark.slow
def test_live_drop_sensor_registers_and_runs_a_new_drop(stack, backfills):
    """The drop sensor in the real daemon: a new complete drop is registered and its run
    succeeds; the drops registered earlier get no new run."""
    url, landing = stack
    write_drop(landing, "d_live", 10, seed=4)
    before = {d: len(runs_for_partition(url, d)) for d in ("d1", "d2")}
    start_sensor(url, f"{POOL}_drops_sensor")
    try:
        deadline = time.monotonic() + 150
        runs = []
        while time.monotonic() < deadline:
            runs = runs_for_partition(url, "d_live")
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
    finally:
        stop_sensor(url, f"{POOL}_drops_sensor")
    assert len(runs) == 1, runs
    (run,) = runs
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/sensor_name"] == f"{POOL}_drops_sensor"
    assert run["status"] == "SUCCESS"
    assert "d_live" in materialized_partitions(url, "embeddings")
    assert {d: len(runs_for_partition(url, d)) for d in ("d1", "d2")} == before
