"""Drop sensor, run-failure sensor and refit schedule, on a real Dagster instance (temp
DAGSTER_HOME) with a real local landing folder and a real S3 server (moto, loopback)."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.partitions import drops_partitions
from curation.config import HierarchyConfig
from curation.pools import PoolConfig, RefitPolicy, SubsetSpec
from curation_dags.definitions import build_definitions, pool_definitions
from curation_dags.sensors import (
    build_drop_sensor,
    curation_run_failure_sensor,
    describe_failure,
)

POOL = PoolConfig(
    name="tiny",
    landing_prefix="tiny_in",
    hierarchy=HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1], sample_sizes=[2, 1]),
    subsets=[SubsetSpec(name="all", target_size=4)],
)
PARTITIONS = drops_partitions(POOL.name)


@dg.asset(key=["tiny", "raw"], partitions_def=PARTITIONS)
def tiny_raw(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"drop": context.partition_key})


@dg.asset(key=["tiny", "embeddings"], partitions_def=PARTITIONS, deps=[tiny_raw])
def tiny_embeddings(context) -> dg.MaterializeResult:
    if context.partition_key.startswith("broken"):
        raise RuntimeError(f"cannot embed drop {context.partition_key}: corrupt parquet")
    return dg.MaterializeResult(metadata={"drop": context.partition_key})


@dg.asset(key=["tiny", "assignments"], partitions_def=PARTITIONS, deps=[tiny_embeddings])
def tiny_assignments(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"drop": context.partition_key})


@dg.asset(key=["tiny", "subsets", "all"], deps=[tiny_assignments])
def tiny_subset() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"refreshed": True})


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


class Ticker:
    """Runs sensor ticks the way the daemon does: the cursor carried over, and the dynamic
    partition requests applied to the instance; run requests collected."""

    def __init__(self, sensor, instance, storage):
        self.sensor, self.instance, self.storage = sensor, instance, storage
        self.cursor: str | None = None
        self.run_requests: list[dg.RunRequest] = []

    def tick(self) -> list[str]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"landing": self.storage}
        ) as context:
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        self.cursor = result.cursor
        self.run_requests.extend(result.run_requests or [])
        return [r.partition_key for r in result.run_requests or []]

    def tick_requests(self) -> list[dg.RunRequest]:
        """One tick; the run requests it made."""
        before = len(self.run_requests)
        self.tick()
        return self.run_requests[before:]

    def partitions(self) -> list[str]:
        return sorted(self.instance.get_dynamic_partitions(PARTITIONS.name))


def deliver(landing, drop: str, files: dict[str, bytes], complete: bool = True) -> None:
    for name, data in files.items():
        landing.put(f"tiny_in/{drop}/{name}", data)
    if complete:
        landing.put(f"tiny_in/{drop}/_SUCCESS")


def test_sensor_registers_complete_drops_once(landing, instance, capfd):
    ticker = Ticker(build_drop_sensor(POOL), instance, landing.storage)
    assert ticker.tick() == []  # nothing landed yet (and the prefix does not exist)

    deliver(landing, "2024-06-01", {"a.parquet": b"aaaa", "b.parquet": b"bb"})
    deliver(landing, "2024-06-02", {"c.parquet": b"cccc"}, complete=False)
    deliver(landing, "bad..drop", {"x.parquet": b"x"})
    deliver(landing, ".uploading", {"y.parquet": b"y"})

    capfd.readouterr()
    assert ticker.tick() == ["2024-06-01"]
    assert ticker.partitions() == ["2024-06-01"]
    logged = capfd.readouterr().err  # the sensor's context.log
    assert "'bad..drop' skipped: invalid drop id" in logged and "'..'" in logged
    assert "'.uploading' skipped: invalid drop id" in logged
    assert "'2024-06-02' skipped: incomplete" in logged

    # the run request targets the new key, raw + embeddings of this pool
    (request,) = ticker.run_requests
    assert request.partition_key == "2024-06-01"
    assert set(request.asset_selection) == {
        dg.AssetKey(["tiny", "raw"]),
        dg.AssetKey(["tiny", "embeddings"]),
    }

    # nothing new: no partition, no run, and the skipped names are not logged again
    assert ticker.tick() == []
    assert "bad..drop" not in capfd.readouterr().err

    # the incomplete drop becomes complete: registered at the next tick
    landing.put("tiny_in/2024-06-02/_SUCCESS")
    assert ticker.tick() == ["2024-06-02"]

    # re-delivery of the same drop id (files and marker written again): nothing new
    deliver(landing, "2024-06-01", {"a.parquet": b"aaaa", "b.parquet": b"bb"})
    assert ticker.tick() == []
    # the same content again under a new drop id, once the first was embedded: skipped
    instance.report_runless_asset_event(dg.AssetMaterialization(
        ["tiny", "embeddings"], partition="2024-06-01"))
    deliver(landing, "2024-06-01-resent", {"a.parquet": b"aaaa", "b.parquet": b"bb"})
    assert ticker.tick() == []
    assert (
        "'2024-06-01-resent' skipped: same content as drop '2024-06-01'" in capfd.readouterr().err
    )
    # a real new drop still goes through
    deliver(landing, "2024-06-03", {"a.parquet": b"AAAA", "b.parquet": b"bb"})
    assert ticker.tick() == ["2024-06-03"]

    assert ticker.partitions() == ["2024-06-01", "2024-06-02", "2024-06-03"]
    keys = [r.partition_key for r in ticker.run_requests]
    assert keys == ["2024-06-01", "2024-06-02", "2024-06-03"]
    assert len({r.run_key for r in ticker.run_requests}) == 3


def test_sensor_run_requests_materialise(local_landing, instance):
    """The requested runs are valid for the registered partitions and succeed."""
    ticker = Ticker(build_drop_sensor(POOL), instance, local_landing.storage)
    deliver(local_landing, "d1", {"a.parquet": b"a"})
    assert ticker.tick() == ["d1"]
    (request,) = ticker.run_requests
    result = dg.materialize(
        [tiny_raw, tiny_embeddings],
        instance=instance,
        partition_key=request.partition_key,
        selection=request.asset_selection,
        tags=request.tags,
    )
    assert result.success
    for key in request.asset_selection:
        assert instance.get_latest_materialization_event(key).dagster_event.partition == "d1"


def test_once_a_tree_exists_a_drop_run_refreshes_the_subsets(local_landing, instance):
    """After the first fit a drop's run holds its assignments and the subsets (one run, no
    automation tick in between); drops registered at one tick refresh them once, in the last
    run; the partitioned run with the unpartitioned subsets executes."""
    ticker = Ticker(build_drop_sensor(POOL), instance, local_landing.storage)
    deliver(local_landing, "d0", {"a.parquet": b"a"})
    ticker.tick()
    assert ticker.run_requests[0].asset_selection == [tiny_raw.key, tiny_embeddings.key]
    instance.report_runless_asset_event(dg.AssetMaterialization(  # d0's run ended
        ["tiny", "embeddings"], partition="d0"))
    for level in ("level_1", "level_2"):  # a fit run: the tree, level by level
        instance.report_runless_asset_event(dg.AssetMaterialization(["tiny", level]))
    deliver(local_landing, "d1", {"a.parquet": b"b"})
    assert tiny_subset.key not in ticker.tick_requests()[0].asset_selection  # not assigned yet
    instance.report_runless_asset_event(dg.AssetMaterialization(  # every drop assigned
        ["tiny", "assignments"], partition="d0"))
    deliver(local_landing, "d1b", {"a.parquet": b"bb"})
    deliver(local_landing, "d2", {"a.parquet": b"c"})
    assert ticker.tick() == ["d1b", "d2"]
    first, last = ticker.run_requests[2:]
    assert tiny_subset.key not in first.asset_selection
    assert last.asset_selection == [tiny_raw.key, tiny_embeddings.key, tiny_assignments.key,
                                    tiny_subset.key]
    result = dg.materialize([tiny_raw, tiny_embeddings, tiny_assignments, tiny_subset],
                            instance=instance, partition_key=last.partition_key,
                            selection=last.asset_selection, tags=last.tags)
    assert result.success
    assert instance.get_latest_materialization_event(tiny_subset.key) is not None


def test_sensor_tick_through_definitions(local_landing, instance):
    """A full tick with the Definitions (validates targets and partition keys as the daemon)."""
    sensor = build_drop_sensor(POOL)
    defs = dg.Definitions(
        assets=[tiny_raw, tiny_embeddings, tiny_assignments, tiny_subset],
        sensors=[sensor],
        resources={"landing": local_landing.storage},
    )
    deliver(local_landing, "d1", {"a.parquet": b"a"})
    instance.add_dynamic_partitions(PARTITIONS.name, ["d1"])  # as if registered earlier
    deliver(local_landing, "d2", {"a.parquet": b"b"})
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(),
        definitions=defs,
        resources={"landing": local_landing.storage},  # as the daemon passes the top-level ones
    ) as context:
        data = defs.resolve_sensor_def(sensor.name).evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == ["d2"]
    assert [list(r.partition_keys) for r in data.dynamic_partitions_requests] == [["d2"]]


def test_each_pool_brings_its_sensors_and_schedule_all_running_by_default(tmp_path):
    from resources.clustering import ClusteringResource
    from resources.lancedb import LanceDBResource
    from resources.storage import LandingStorage

    other = POOL.model_copy(update={"name": "other", "refit": RefitPolicy(cron=None)})
    kinds = {"drops_sensor", "refit_sensor", "takedowns_sensor", "stall_sensor", "automation"}
    per_pool = {p.name: pool_definitions(p) for p in (POOL, other)}
    for name, defs in per_pool.items():
        assert {s.name for s in defs.sensors} == {f"{name}_{k}" for k in kinds}
        assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)
        assert {k.path[0] for a in defs.assets for k in a.keys} == {name}  # its own assets
    (schedule,) = per_pool["tiny"].schedules
    assert not per_pool["other"].schedules  # cron None: no periodic refit
    assert schedule.name == "tiny_refit_schedule"
    assert schedule.cron_schedule == POOL.refit.cron
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.tags["curation/refit"] == "force"

    shared = {"landing": LandingStorage(url=str(tmp_path / "landing")),
              "lancedb": LanceDBResource(uri=str(tmp_path / "lancedb")),
              "clustering": ClusteringResource(device="cpu")}
    repo = build_definitions([POOL, other], shared).get_repository_def()  # merged, validated
    assert {s.name for s in repo.sensor_defs} == {
        *(f"{p}_{k}" for p in per_pool for k in kinds), "curation_run_failure_sensor"}
    assert [s.name for s in repo.schedule_defs] == ["tiny_refit_schedule"]


def test_run_failure_sensor_names_pool_drop_step_and_error(instance):
    instance.add_dynamic_partitions(PARTITIONS.name, ["broken-7"])
    result = dg.materialize(
        [tiny_raw, tiny_embeddings],
        instance=instance,
        partition_key="broken-7",
        raise_on_error=False,
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    (failure,) = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
    ).records
    context = dg.build_run_status_sensor_context(
        sensor_name=curation_run_failure_sensor.name,
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    message = describe_failure(context)
    assert "pool tiny" in message
    assert "drop partition broken-7" in message
    assert "tiny__embeddings" in message  # the failed step
    assert "cannot embed drop broken-7: corrupt parquet" in message
    curation_run_failure_sensor(context)  # logs without raising


def test_real_code_location_wires_sensors_and_a_valid_refit_run_config(tmp_path, monkeypatch):
    """The code location (curation_dags.definitions) with this module's sensors and schedules:
    the refit schedule's run config must validate against the real level_1 config schema."""
    monkeypatch.setenv("CURATION_HOME", str(tmp_path))
    from curation.pools import load_pools
    from curation_dags.definitions import build_definitions

    pools = load_pools()
    repo = build_definitions(pools).get_repository_def()
    sensor_names = {s.name for s in repo.sensor_defs}
    for pool in pools:
        assert f"{pool.name}_drops_sensor" in sensor_names
        sensor = repo.get_sensor_def(f"{pool.name}_drops_sensor")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        job = repo.get_job(sensor.job_name)
        assert set(job.asset_layer.selected_asset_keys) == {  # a drop's whole path, one run
            dg.AssetKey([pool.name, "raw"]),
            dg.AssetKey([pool.name, "embeddings"]),
            dg.AssetKey([pool.name, "assignments"]),
            *([dg.AssetKey([pool.name, "near_duplicates"])] if pool.dedup.enabled else []),
            *(dg.AssetKey([pool.name, "subsets", s.name]) for s in pool.subsets),
        }
        assert f"{pool.name}_refit_sensor" in sensor_names
        assert f"{pool.name}_automation" in sensor_names
        assert f"{pool.name}_stall_sensor" in sensor_names
    assert "curation_run_failure_sensor" in sensor_names

    pool = pools[0]
    schedule = repo.get_schedule_def(f"{pool.name}_refit_schedule")
    job = repo.get_job(schedule.job_name)
    assert set(job.asset_layer.selected_asset_keys) == {
        dg.AssetKey([pool.name, f"level_{i + 1}"]) for i in range(len(pool.hierarchy.n_clusters))
    }
    with dg.build_schedule_context() as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["curation/refit"] == "force"
    dg.validate_run_config(job, request.run_config)  # raises if level_1 has no such config
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"ops": {f"{pool.name}__level_1": {"config": {"x": 1}}}})


def test_content_counts_as_seen_only_once_it_was_ingested(local_landing, instance):
    """A drop registered but deleted before its embeddings ran, then delivered again under a
    new id: registered again (nothing delivered is lost)."""
    import shutil
    from pathlib import Path

    ticker = Ticker(build_drop_sensor(POOL), instance, local_landing.storage)
    deliver(local_landing, "first", {"a.parquet": b"same bytes"})
    assert ticker.tick() == ["first"]
    shutil.rmtree(Path(local_landing.storage.url) / "tiny_in" / "first")  # gone, not ingested
    deliver(local_landing, "again", {"a.parquet": b"same bytes"})
    assert ticker.tick() == ["again"]
    instance.report_runless_asset_event(dg.AssetMaterialization(
        ["tiny", "embeddings"], partition="again"))
    deliver(local_landing, "third", {"a.parquet": b"same bytes"})
    assert ticker.tick() == []  # now it was ingested: a true re-delivery


def test_empty_drops_are_not_duplicates_of_each_other(local_landing, instance):
    ticker = Ticker(build_drop_sensor(POOL), instance, local_landing.storage)
    deliver(local_landing, "e1", {})
    deliver(local_landing, "e2", {})
    assert ticker.tick() == ["e1", "e2"]  # raw reports them empty; no false "same content"


def test_run_launcher_health_check_speaks_the_monitoring_daemons_types(instance):
    """The launcher reads its result types from Dagster's public launcher; the run monitoring
    daemon compares with its own: a worker gone must read FAILED there, a live one RUNNING."""
    import subprocess
    import sys

    from dagster._core.events import EngineEventData
    from dagster._core.launcher import WorkerStatus  # what the daemon compares with

    from curation_dags.launcher import LocalRunLauncher

    instance.add_dynamic_partitions(PARTITIONS.name, ["d1"])
    run = instance.get_run_by_id(
        dg.materialize([tiny_raw], instance=instance, partition_key="d1").run_id)
    launcher = LocalRunLauncher()
    launcher.register_instance(instance)
    assert launcher.check_run_worker_health(run).status is WorkerStatus.RUNNING  # no pid yet

    def started(pid: int) -> None:
        instance.report_engine_event("Started process for run", run,
                                     EngineEventData(metadata={"pid": dg.MetadataValue.int(pid)}))

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    started(gone.pid)
    health = launcher.check_run_worker_health(run)
    assert health.status is WorkerStatus.FAILED and str(gone.pid) in health.msg
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dagster"])
    try:
        started(alive.pid)
        assert launcher.check_run_worker_health(run).status is WorkerStatus.RUNNING
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("cron, valid", [("@yearly", True), ("0 3 * * 7", True),
                                         ("0 3 31 2 *", False), ("*/0 * * * *", False)])
def test_refit_cron_is_judged_by_the_schedule_that_reads_it(cron, valid):
    """One validator, Dagster's: what it accepts is scheduled, what it rejects fails this
    pool's schedule at every tick with the reason (the location still loads)."""
    from curation_dags.sensors import build_refit_schedule

    schedule = build_refit_schedule(POOL.model_copy(update={"refit": RefitPolicy(cron=cron)}))
    assert schedule.name == "tiny_refit_schedule"
    assert (schedule.cron_schedule == cron) is valid
    assert ("INVALID" in schedule.description) is not valid
    if not valid:
        assert f"refit.cron {cron!r} is not a valid cron expression" in schedule.description
