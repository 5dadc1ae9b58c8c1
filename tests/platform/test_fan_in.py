"""Fan-in refresh by state (assets.automation) and the subsets' stall check (assets.freshness),
on a real Dagster instance, real LanceDB tables and the pool's real assets. The daemon-level
race (drops landing while the subsets refresh) is tests/live/test_live.py's."""

from __future__ import annotations

import time

import dagster as dg
import pytest
from kit import Platform, small_pool

from assets.automation import CONSUMED_KEY, RefreshState, refresh_state
from assets.keys import drop_run_keys, ingest_keys, subset_keys
from curation_dags.sensors import drop_run_selections, evaluate_stalls

SUBSETS = [["tiny", "subsets", "even"], ["tiny", "subsets", "core"]]
UPSTREAM = [dg.AssetKey(["tiny", "assignments"]), dg.AssetKey(["tiny", "takedowns"])]


@pytest.fixture
def fitted(tmp_path):
    """Two drops, a tree, both subsets refreshed; stall check after 1 tick of 1 s."""
    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool(stall_after_ticks=1))
        drops = [p.land("d0"), p.land("d1")]
        for d in drops:
            p.ingest(d)
        p.refresh(drops, refit="force")
        yield p


def _assign_new_drop(p: Platform, drop: str) -> None:
    """A new drop's run without the subsets: ingested and assigned to the current tree."""
    p.ingest(p.land(drop, 50))
    assert p.run([["tiny", "assignments"]], partition_key=drop).success


def _state(p: Platform, path=SUBSETS[0]) -> RefreshState:
    return refresh_state(p.instance, dg.AssetKey(path), UPSTREAM)


def _run_as_the_daemon_does(p: Platform, paths) -> bool:
    """Create the run with its execution plan (so Dagster logs the planned materialisations,
    as for every run the daemon launches), then execute it in this process."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run

    keys = {dg.AssetKey(path) for path in paths}
    job = p.defs.resolve_implicit_job_def_def_for_assets(list(keys)).get_subset(
        asset_selection=keys)
    run = p.instance.create_run_for_job(job_def=job, execution_plan=create_execution_plan(job),
                                        asset_selection=frozenset(keys))
    return execute_run(InMemoryJob(job), run, p.instance).success


def _requested(p: Platform) -> set[str]:
    """Subsets the pool's automation condition asks for at one evaluation."""
    result = dg.evaluate_automation_conditions(
        defs=p.defs, instance=p.instance,
        asset_selection=dg.AssetSelection.assets(*[dg.AssetKey(s) for s in SUBSETS]))
    return {r.key.path[-1] for r in result.results if r.true_subset.size}


def test_consumed_event_is_recorded_and_nothing_is_due_after_a_refresh(fitted):
    p = fitted
    event = p.instance.get_latest_materialization_event(dg.AssetKey(SUBSETS[0]))
    consumed = event.asset_materialization.metadata[CONSUMED_KEY].value
    (record,) = p.instance.get_asset_records([UPSTREAM[0]])
    assert consumed >= record.asset_entry.last_materialization_storage_id > 0
    assert not _state(p).due
    assert _requested(p) == set()


def test_a_drop_assigned_after_the_refresh_keeps_the_subsets_due_until_consumed(fitted):
    p = fitted
    _assign_new_drop(p, "d2")
    assert _state(p).due and _state(p, SUBSETS[1]).due
    # the state holds at every later evaluation until a refresh consumed it (no one-tick event)
    assert _requested(p) == {"even", "core"}
    assert _requested(p) == {"even", "core"}
    p.run(SUBSETS)
    assert not _state(p).due
    assert _requested(p) == set()


def test_a_failed_refresh_is_not_asked_for_again_until_new_data(fitted):
    p = fitted
    _assign_new_drop(p, "d2")
    fits = p.table("fits")
    saved = fits.to_arrow()
    fits.delete("true")  # the subsets now fail: no fitted tree
    assert not _run_as_the_daemon_does(p, SUBSETS)
    state = _state(p)
    assert state.attempted > state.consumed and not state.due  # no request at every tick
    fits.add(saved)
    _assign_new_drop(p, "d3")
    assert _state(p).due
    p.run(SUBSETS)
    meta = p.instance.get_latest_materialization_event(dg.AssetKey(SUBSETS[0]))
    assert meta.asset_materialization.metadata["pool_size"].value == p.rows("embeddings")


def test_the_stall_check_names_the_drop_then_clears(fitted):
    p = fitted
    ticks = []

    def tick():
        with dg.build_sensor_context(instance=p.instance,
                                     cursor=ticks[-1].cursor if ticks else None) as context:
            ticks.append(evaluate_stalls(context, p.pool, tick_s=1))
        return ticks[-1].asset_events or []

    first = tick()
    assert [e.passed for e in first] == [True, True]
    assert tick() == []  # reported on change only
    _assign_new_drop(p, "late")
    time.sleep(1.2)
    stalled = tick()
    assert [e.passed for e in stalled] == [False, False]
    assert "drop 'late'" in stalled[0].description
    assert stalled[0].severity == dg.AssetCheckSeverity.ERROR
    assert stalled[0].metadata["stalled"].value == ["drop 'late'"]
    p.run(SUBSETS)
    cleared = tick()
    assert [e.passed for e in cleared] == [True, True]
    # the same check, run as a check (with a subsets run, or from the UI)
    result = p.run(SUBSETS)
    checks = {e.asset_key.path[-1]: e.passed for e in result.get_asset_check_evaluations()
              if e.check_name == "includes_every_drop"}
    assert checks == {"even": True, "core": True}


def test_drops_registered_together_refresh_the_subsets_once():
    pool = small_pool()
    runs = drop_run_selections(pool, 3, tree=True)
    assert runs[-1] == drop_run_keys(pool)
    assert all(not set(subset_keys(pool)) & set(r) for r in runs[:-1])
    assert drop_run_selections(pool, 2, tree=False) == [ingest_keys(pool)] * 2
    assert drop_run_selections(pool, 0, tree=True) == []
    # a fit or the re-assignment after it pending: the subsets follow by automation
    waiting = drop_run_selections(pool, 2, tree=True, refresh_subsets=False)
    assert waiting == [[k for k in drop_run_keys(pool) if k not in subset_keys(pool)]] * 2


def test_a_drop_run_refreshes_the_subsets_only_over_a_settled_tree(fitted):
    from curation.naming import FIT_TAG
    from curation_dags.sensors import tree_settled

    p = fitted
    assert tree_settled(p.instance, p.pool)  # the fit, then every drop assigned to it
    p.run([["tiny", "level_1"], ["tiny", "level_2"]], tags={"curation/refit": "force"})
    assert not tree_settled(p.instance, p.pool)  # the re-assignment is pending
    p.run([["tiny", "assignments"]], tags={"dagster/asset_partition_range_start": "d0",
                                           "dagster/asset_partition_range_end": "d1"})
    assert tree_settled(p.instance, p.pool)
    queued = p.instance.create_run_for_job(  # a fit asked for, not started yet
        p.defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey(["tiny", "level_1"])]),
        tags={FIT_TAG: "tiny", "curation/pool": "tiny"})
    assert not tree_settled(p.instance, p.pool)
    p.instance.report_run_canceled(queued)
    assert tree_settled(p.instance, p.pool)


def test_a_refresh_over_a_half_reassigned_pool_publishes_nothing(fitted):
    """After a refit with one drop of two re-assigned, a subsets refresh finds the snapshot
    incomplete: no new subset version, no materialisation, an observation naming the drop
    left; once the last drop is placed the refresh publishes, with nothing stale excluded
    (before: a version drawn from d0 alone, d1's rows counted `stale_excluded`)."""
    p = fitted
    store = p.lancedb.store("tiny")
    key = dg.AssetKey(SUBSETS[0])
    def published():
        return p.instance.get_asset_records([key])[0].asset_entry.last_materialization_storage_id

    before = published()
    version = store.subset_table("even").version
    assert p.run([["tiny", "level_1"], ["tiny", "level_2"]],
                 tags={"curation/refit": "force"}).success
    assert p.run([["tiny", "assignments"]], partition_key="d0").success
    assert p.run(SUBSETS).success  # the step ends well: it refused, it did not fail
    assert published() == before
    assert store.subset_table("even").version == version
    seen = p.instance.fetch_observations(key, limit=1).records[0]
    told = seen.asset_observation.metadata
    assert "not published" in told["not_published"].value
    assert list(told["incomplete_drops"].value) == ["d1"]
    assert not _state(p).due  # not asked for again until the snapshot can be complete...
    assert p.run([["tiny", "assignments"]], partition_key="d1").success
    assert _state(p).due  # ...which the last drop's assignment makes it
    result = p.run(SUBSETS)
    got = [e for e in result.get_asset_materialization_events()
           if e.asset_key == key][0].materialization.metadata
    assert got["stale_excluded"].value == 0
    assert got["pool_size"].value == 600
    assert store.subset_table("even").version > version
