"""The live path, end to end: drops land in a folder and reach the subsets through the real
drop sensor, refit sensor, automation sensors and `dagster-daemon`, with `dagster-webserver`
answering GraphQL, on the production-shaped instance of deploy/dagster.yaml (PostgreSQL
storage on loopback, queued runs with a per-pool limit, run monitoring, run retries).

One sequence covers: the first fit; drops that do not refit; a bad drop in between; a drop
re-delivered under the same id; a refit by the drift policy; a forced refit with the refit
schedule's run config; a run whose worker is killed with SIGKILL (marked failed by run
monitoring, retried, no duplicate rows); a takedown file landed under the pool's prefix.
After each step every good drop's items are in the assignments table with the current fit
version and eligible in every subset, within a deadline, and the UI (GraphQL staleStatus)
shows the tree and the subsets fresh.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml
from servers import dagster_stack, graphql

from curation_demo.live import (
    REPO_ROOT,
    materialization_count,
    new_database,
    subsets_cover,
    wait_until,
)
from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop

pytestmark = pytest.mark.slow

POOL = "live"
DIM = 8
DEADLINE_S = 240
RACE_AUTOMATION_S = 20
SHIPPED_TICK_S = 30  # curation_dags.settings' defaults
RACE_SEED = int(os.environ.get("CURATION_RACE_SEED", "20261201"))  # rerun with others
POOLS_YAML = f"""\
pools:
  - name: {POOL}
    modality: vectors
    dim: {DIM}
    hierarchy: {{n_clusters: [12, 3], resampling_steps: [2], max_iter: 20, seed: 0,
                device: cpu}}
    subsets:
      - {{name: even, target_size: 200, strategy: random, seed: 1}}
      - {{name: core, target_size: 60, strategy: closest, seed: 0}}
    refit: {{max_added_fraction: 1.5, max_distance_ratio: 3.0, warm_start: false,
             cron: "0 3 * * 0", drops_per_run: 2}}
    health: {{max_empty_fraction: 0.5, max_cluster_share: 0.9}}
"""
STALE_QUERY = """query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) {
  assetKey { path } staleStatus staleCauses { reason } } }"""
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message }
} }"""
REPO_QUERY = """{ repositoriesOrError { ... on RepositoryConnection {
  nodes { name location { name } } } } }"""


class Live:
    def __init__(self, tmp_path: Path, url: str):
        from dagster import DagsterInstance

        from curation.pools import load_pools
        from resources.lancedb import LanceDBResource

        self.url = url
        self.landing = tmp_path / "curation" / "landing" / POOL
        self.instance = DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
        self.lancedb = LanceDBResource(uri=str(tmp_path / "curation" / "lancedb"))
        self.pool = load_pools(os.environ["CURATION_POOLS"])[0]
        self.seed = 10
        self.good: dict[str, int] = {}

    def land(self, drop: str, n: int, shift: float = 0.0) -> None:
        self.seed += 1
        x, _ = fixed_mixture_draw(n, DIM, self.seed)
        write_vector_drop(self.landing / drop, x + shift, [f"{drop}-{i}" for i in range(n)])
        self.good[drop] = n

    def settled(self, after: float, what: str, deadline: float = DEADLINE_S) -> dict:
        """Wait until every subset covers every good drop's items under the latest fit."""
        expected = sum(self.good.values())

        def covered():
            meta = subsets_cover(self.instance, self.lancedb, self.pool, after)
            return meta if meta and meta["even"]["pool_size"] == expected else None

        return wait_until(covered, deadline, what, poll=1.0)

    def fit_version(self) -> int:

        return self.lancedb.store(self.pool.name).latest_fit_summary().fit_version

    def level_fits(self) -> int:
        return materialization_count(self.instance, [POOL, "level_1"])

    def assert_everything_assigned(self) -> None:
        import pyarrow.compute as pc

        rows = self.lancedb.open(self.pool.table("assignments")).to_arrow()
        ids = rows["item_id"].to_pylist()
        assert len(ids) == len(set(ids)) == sum(self.good.values())
        assert set(pc.unique(rows["fit_version"]).to_pylist()) == {self.fit_version()}
        for drop, n in self.good.items():
            assert rows.filter(pc.equal(rows["drop"], drop)).num_rows == n, drop

    def stale(self, *paths: list[str]) -> dict[str, str]:
        data = graphql(self.url, STALE_QUERY, {"keys": [{"path": p} for p in paths]})
        return {"/".join(n["assetKey"]["path"]): n["staleStatus"] for n in data["assetNodes"]}


def _live_stack(tmp_path, postgres, monkeypatch, sensor_s: int, automation_s: int):  # noqa: F811
    pools = tmp_path / "pools.yaml"
    pools.write_text(POOLS_YAML)
    env = {
        # a database of its own: the cluster is shared by the session's live tests
        **new_database(postgres, f"dagster_{uuid.uuid4().hex[:12]}"),
        "CURATION_HOME": str(tmp_path / "curation"),
        "CURATION_POOLS": str(pools),
        "CURATION_SENSOR_INTERVAL_S": str(sensor_s),
        "CURATION_AUTOMATION_INTERVAL_S": str(automation_s),
    }
    for key, value in {**env, "DAGSTER_HOME": str(tmp_path / "dagster")}.items():
        monkeypatch.setenv(key, value)
    # deploy/dagster.yaml as shipped, with the monitoring poll shortened for the test
    config = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 3
    with dagster_stack(tmp_path / "dagster", env, instance_yaml=yaml.safe_dump(config)) as url:
        yield Live(tmp_path, url)


@pytest.fixture
def live(tmp_path, postgres, monkeypatch):  # noqa: F811 - fixture
    yield from _live_stack(tmp_path, postgres, monkeypatch, sensor_s=2, automation_s=2)


@pytest.fixture
def live_wide_ticks(tmp_path, postgres, monkeypatch):  # noqa: F811 - fixture
    """Automation ticks five times the drop sensor's: a subsets refresh and the next drop's
    assignments often fall into one automation window, the timing users hit at 30 s ticks."""
    yield from _live_stack(tmp_path, postgres, monkeypatch, sensor_s=2,
                           automation_s=RACE_AUTOMATION_S)


def test_every_drop_reaches_the_subsets_under_the_daemon(live):
    p = live
    levels = [[POOL, "level_1"], [POOL, "level_2"]]

    # 1. first fit: two drops landed together are fitted together
    t = time.time()
    p.land("d0", 300)
    p.land("d1", 300)
    p.settled(t, "first fit and subsets over d0, d1")
    assert p.fit_version() == 1 and p.level_fits() == 1
    p.assert_everything_assigned()

    # 2. drops within the refit policy: assigned to the tree, the levels never run again
    for drop in ("d2", "d3"):
        t = time.time()
        p.land(drop, 150)
        meta = p.settled(t, f"{drop} in the subsets without a refit")
        assert meta["even"]["pool_size"] == sum(p.good.values())
    assert p.fit_version() == 1 and p.level_fits() == 1
    p.assert_everything_assigned()
    status = p.stale(*levels, [POOL, "subsets", "even"], [POOL, "subsets", "core"])
    assert set(status.values()) == {"FRESH"}, status

    # 3. a bad drop (unreadable parquet) fails alone; the next good drop still gets through
    bad = p.landing / "bad"
    bad.mkdir(parents=True)
    (bad / "part-0.parquet").write_bytes(b"not a parquet file")
    (bad / "_SUCCESS").touch()
    t = time.time()
    p.land("d4", 100)
    p.settled(t, "d4 in the subsets after a bad drop")
    assert p.lancedb.open(p.pool.table("quarantine")).count_rows("drop = 'bad'") == 1
    assert p.fit_version() == 1

    # 4. the same drop id delivered again: nothing runs twice, no duplicate rows
    (p.landing / "d2" / "_SUCCESS").unlink()
    (p.landing / "d2" / "_SUCCESS").touch()
    p.land("d5", 100)
    p.settled(time.time() - 1, "d5 after re-delivered d2")
    assert materialization_count(p.instance, [POOL, "raw"], "d2") == 1
    p.assert_everything_assigned()

    # 5. refit by policy: a drop far from the tree (distance ratio > 3)
    t = time.time()
    p.land("far", 150, shift=25.0)
    wait_until(lambda: p.fit_version() == 2, DEADLINE_S, "refit by the distance policy")
    p.settled(t, "subsets over the refitted tree")
    p.assert_everything_assigned()
    assert p.level_fits() == 2
    reason = p.instance.get_latest_materialization_event(
        __import__("dagster").AssetKey([POOL, "level_1"])).asset_materialization.metadata
    assert "distance ratio" in reason["reason"].value
    _assert_parallel_reassignment(p, t)

    # 6. forced refit with the refit schedule's run config, launched over GraphQL
    t = time.time()
    _launch_forced_refit(p)
    wait_until(lambda: p.fit_version() == 3, DEADLINE_S, "forced refit")
    p.settled(t, "subsets over the forced refit")
    p.assert_everything_assigned()
    assert p.level_fits() == 3

    # 7. kill -9 the worker of a drop's run: monitoring fails it, run retries finish the drop
    t = time.time()
    p.land("dk", 200)
    killed = wait_until(lambda: _kill_drop_worker(p.instance, "dk"), DEADLINE_S,
                        "a started run of drop dk to kill", poll=0.1)
    p.settled(t, "dk in the subsets after its worker was killed")
    p.assert_everything_assigned()
    run = p.instance.get_run_by_id(killed)
    assert run.status.value == "FAILURE"
    from dagster import RunsFilter

    retries = p.instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": killed}))
    assert retries
    # the retry refreshes the subsets itself, then runs their checks: wait for its end
    wait_until(lambda: p.instance.get_run_by_id(retries[0].run_id).is_finished, DEADLINE_S,
               "the retry of dk's run to end")
    assert p.instance.get_run_by_id(retries[0].run_id).status.value == "SUCCESS"
    raw_ids = p.lancedb.open(p.pool.table("raw")).to_arrow()["item_id"].to_pylist()
    assert len(raw_ids) == len(set(raw_ids))

    # 8. a takedown file landed under the pool's prefix: the items leave raw, embeddings,
    # assignments and every subset (applied by a run of the takedowns asset), the subsets keep
    # their size, and the audit rows name that run
    even = p.lancedb.open(p.pool.table("subset_even")).to_arrow()["item_id"].to_pylist()
    gone = sorted(even)[:2]
    for item in gone:
        p.good[item.rsplit("-", 1)[0]] -= 1
    takedowns = p.landing / "_takedowns"
    takedowns.mkdir()
    t = time.time()
    (takedowns / "t1.txt").write_text("# reason: privacy request\n" + "\n".join(gone) + "\n")
    p.settled(t, "subsets without the taken-down items")
    p.assert_everything_assigned()
    for kind in ("raw", "embeddings", "assignments", "subset_even", "subset_core"):
        ids = set(p.lancedb.open(p.pool.table(kind)).to_arrow()["item_id"].to_pylist())
        assert not ids & set(gone), kind
    assert p.lancedb.open(p.pool.table("subset_even")).count_rows() == 200
    assert p.lancedb.open(p.pool.table("subset_core")).count_rows() == 60
    audit = p.lancedb.open(p.pool.table("takedowns")).to_arrow().to_pylist()
    assert sorted(r["item_id"] for r in audit) == gone
    assert all(r["reason"] == "privacy request" and r["run"] for r in audit)
    assert materialization_count(p.instance, [POOL, "takedowns"]) == 1

    # per-drop partitions once per drop; the levels only at a fit
    for drop in p.good:
        assert materialization_count(p.instance, [POOL, "embeddings"], drop) == 1, drop
    assert p.level_fits() == 3
    status = p.stale(*levels, [POOL, "subsets", "even"], [POOL, "subsets", "core"])
    assert set(status.values()) == {"FRESH"}, status


def _launch_forced_refit(p: Live) -> None:
    """A forced refit as a user launches it from the UI: the levels, with the refit
    schedule's run config and tags, over GraphQL."""
    from curation.naming import FIT_TAG, POOL_TAG, REFIT_TAG
    from curation_dags.sensors import refit_run_config

    repo = graphql(p.url, REPO_QUERY)["repositoriesOrError"]["nodes"][0]
    launched = graphql(p.url, LAUNCH, {"params": {
        "selector": {"repositoryLocationName": repo["location"]["name"],
                     "repositoryName": repo["name"], "jobName": "__ASSET_JOB",
                     "assetSelection": [{"path": [POOL, f"level_{lv}"]} for lv in (1, 2)]},
        "runConfigData": refit_run_config(p.pool),
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in
                                       {REFIT_TAG: "force", POOL_TAG: POOL,
                                        FIT_TAG: POOL}.items()]},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched


def _assert_parallel_reassignment(p: Live, after: float) -> None:
    """The re-assignment after the refit: one backfill whose runs hold at most
    `refit.drops_per_run` drops each, carry the pool's tag (so the per-pool limit covers
    them) and ran in parallel (two of them overlapped in time)."""
    from dagster import AssetKey, RunsFilter

    from curation.naming import POOL_TAG

    order = p.instance.get_dynamic_partitions(f"{POOL}_drops")
    runs = [r for r in p.instance.get_run_records(RunsFilter(tags={POOL_TAG: POOL}))
            if r.create_timestamp.timestamp() > after and "dagster/backfill" in r.dagster_run.tags
            and AssetKey([POOL, "assignments"]) in (r.dagster_run.asset_selection or ())]
    assert len({r.dagster_run.tags["dagster/backfill"] for r in runs}) == 1, runs
    covered = [order[order.index(r.dagster_run.tags["dagster/asset_partition_range_start"]):
                     order.index(r.dagster_run.tags["dagster/asset_partition_range_end"]) + 1]
               for r in runs]
    assert max(len(c) for c in covered) <= p.pool.refit.drops_per_run, covered
    # every drop assigned before, once (`bad` too: its drop has no items, and is assigned)
    assigned = p.instance.get_materialized_partitions(AssetKey([POOL, "assignments"]))
    assert sorted(d for c in covered for d in c) == sorted(assigned), covered
    times = sorted((r.start_time, r.end_time) for r in runs)
    assert all(start and end for start, end in times), times
    overlaps = [later[0] < earlier[1] for earlier, later in zip(times, times[1:], strict=False)]
    assert any(overlaps), times


def _kill_drop_worker(instance, drop: str) -> str | None:
    """SIGKILL the run worker of the drop's run once it reported its pid; its run id."""
    from dagster import RunsFilter

    from curation.naming import DROP_TAG
    from curation_dags.launcher import run_worker_pid

    for run in instance.get_runs(RunsFilter(tags={DROP_TAG: drop})):
        pid = run_worker_pid(instance, run.run_id)
        if pid:
            os.kill(pid, signal.SIGKILL)
            return run.run_id
    return None


def test_changing_nothing_refits_nothing():
    """The fit signature changes with the drops, the model and the config, and only then."""
    from curation.config import HierarchyConfig
    from curation.store import fit_signature

    config = HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1])
    base = fit_signature({"a": 3, "b": 2}, {"m": 5}, config)
    assert fit_signature({"b": 2, "a": 3}, {"m": 5}, config) == base
    assert fit_signature({"a": 3, "b": 3}, {"m": 5}, config) != base
    assert fit_signature({"a": 3, "b": 2}, {"n": 5}, config) != base
    other = HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1], seed=1)
    assert fit_signature({"a": 3, "b": 2}, {"m": 5}, other) != base


# ---- the race: drops landing whatever the timing of the subsets' own runs ----------------------
def _subsets_runs(instance, statuses) -> list:
    """Runs of the pool whose selection holds a subset, with one of `statuses`."""
    from dagster import RunsFilter

    from curation.naming import POOL_TAG

    runs = instance.get_run_records(RunsFilter(statuses=statuses or [], tags={POOL_TAG: POOL}),
                                    limit=1000)
    return [r for r in runs if any(k.path[1:2] == ["subsets"]
                                   for k in (r.dagster_run.asset_selection or []))]


def _land_bursts(p: Live, tick: int, rng: random.Random, bursts: int, first: int) -> int:
    """Bursts of 2-3 drops landed with seeded, randomised timing relative to the subsets' own
    refreshes: each drop after a random gap of 0 to 2 automation ticks, while a run refreshing
    the subsets is in flight, or right after such a run ended. Every burst must reach every
    subset within 3 ticks + 60 s, so each burst's last drop (the one nothing re-arms) is judged
    on its own. Returns the number of drops landed."""
    from dagster import DagsterRunStatus

    seen = {r.dagster_run.run_id for r in _subsets_runs(p.instance, None)}

    def next_subsets_run(timeout: float) -> str | None:
        """A run refreshing the subsets that started after the last landing, once started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in _subsets_runs(p.instance, [DagsterRunStatus.STARTED]):
                if r.dagster_run.run_id not in seen:
                    seen.add(r.dagster_run.run_id)
                    return r.dagster_run.run_id
            time.sleep(0.05)
        return None

    k, modes = first, []
    for _burst in range(bursts):
        time.sleep(rng.uniform(0, 2 * tick))
        for j in range(rng.randint(2, 3)):
            mode = "gap" if j == 0 else rng.choice(["gap", "during", "after"])
            if mode == "gap" and j:
                time.sleep(rng.uniform(0, 2 * tick))
            elif mode != "gap":
                running = next_subsets_run(3 * tick + 30)
                if running is not None and mode == "during":
                    time.sleep(rng.uniform(0, 1.0))
                while mode == "after" and running is not None:
                    if p.instance.get_run_by_id(running).is_finished:
                        break
                    time.sleep(0.05)
            drop = f"r{k:02d}"
            k += 1
            p.land(drop, rng.randint(10, 60))
            modes.append(f"{drop}:{mode}")
        p.settled(time.time(), f"burst ending with {drop} in every subset ({', '.join(modes)})",
                  deadline=3 * tick + 60)
    return k - first


def test_every_drop_reaches_the_subsets_whatever_the_timing(live_wide_ticks):
    """The race at automation ticks of RACE_AUTOMATION_S: five bursts, at least 10 drops
    (seed in RACE_SEED). On eager() conditions a burst's last drop stayed out for good."""
    p = live_wide_ticks
    rng = random.Random(RACE_SEED)
    t = time.time()
    p.land("r00", 300)
    p.land("r01", 300)
    p.settled(t, "first fit and subsets over r00, r01")
    assert _land_bursts(p, RACE_AUTOMATION_S, rng, bursts=5, first=2) >= 10
    p.assert_everything_assigned()
    assert p.fit_version() == 1 and p.level_fits() == 1  # no refit hid the race


@pytest.fixture
def live_shipped_ticks(tmp_path, postgres, monkeypatch):  # noqa: F811 - fixture
    """The tick intervals as shipped (curation_dags.settings: 30 s for both)."""
    yield from _live_stack(tmp_path, postgres, monkeypatch, sensor_s=SHIPPED_TICK_S,
                           automation_s=SHIPPED_TICK_S)


def test_drops_at_random_moments_reach_the_subsets_at_the_shipped_ticks(live_shipped_ticks):
    """The path users run, at the ticks they run it with: the first fit, then bursts of drops
    that do not refit, landed at random moments around the subsets' runs, then a refit with a
    drop landed at a random moment during the re-assignment: every drop in every subset within
    the deadline. (The refit by the distance policy is test_every_drop_reaches_the_subsets_
    under_the_daemon's, at short ticks.)"""
    from curation_dags.settings import automation_interval_s, sensor_interval_s

    assert sensor_interval_s() == automation_interval_s() == SHIPPED_TICK_S
    p = live_shipped_ticks
    rng = random.Random(RACE_SEED + 1)
    t = time.time()
    p.land("r00", 300)
    p.land("r01", 300)
    p.settled(t, "first fit and subsets over r00, r01")
    assert _land_bursts(p, SHIPPED_TICK_S, rng, bursts=3, first=2) >= 6
    p.assert_everything_assigned()
    assert p.fit_version() == 1 and p.level_fits() == 1
    # a refit (forced, as from the UI), and a drop landed at a random moment while the tree is
    # new and the re-assignment backfill is in flight: every drop in every subset, on the new
    # tree
    t = time.time()
    _launch_forced_refit(p)
    wait_until(lambda: p.fit_version() == 2, DEADLINE_S, "forced refit at the shipped ticks")
    time.sleep(rng.uniform(0, SHIPPED_TICK_S))
    p.land("late", rng.randint(10, 60))
    p.settled(t, "every drop, the late one included, over the refitted tree",
              deadline=DEADLINE_S + 3 * SHIPPED_TICK_S)
    p.assert_everything_assigned()
    assert p.fit_version() == 2
