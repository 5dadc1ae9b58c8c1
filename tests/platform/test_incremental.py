"""The incremental path, asset by asset (in-process, the real sensor functions): a new drop is
assigned to the current tree without a fit; the refit sensor asks for a fit only when the
policy says so; a fit re-assigns every drop; the same items give the same tree and subsets
whatever order the drops arrived in. The same path under the real daemon: test_live.py."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from dagster import DagsterRunStatus, SensorResult, build_sensor_context
from kit import Platform, materialized, meta, small_pool

from curation_dags.refit import evaluate_refit


def _tick(p):
    return evaluate_refit(build_sensor_context(instance=p.instance), p.pool, p.lancedb)


def _subset_meta(result, name="even") -> dict:
    return meta(materialized(result["results"][-1], ["tiny", "subsets", name])[0])


def test_new_drop_is_assigned_to_the_tree_without_a_fit(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(3)]
    for d in drops:
        p.ingest(d)
    first = p.refresh(drops)
    assert first["refit"] is True
    level_versions = [p.table(f"level_{lv}").version for lv in (1, 2)]
    old_rows = p.table("assignments").to_arrow().sort_by("item_id")

    new = p.land("d3", n=200)
    p.ingest(new)
    second = p.refresh([new])
    assert second["refit"] is False
    tick = second["tick"]
    assert not tick.run_requests and "within refit policy" in tick.skip_reason.skip_message
    assert [p.table(f"level_{lv}").version for lv in (1, 2)] == level_versions
    assert p.lancedb.store(p.pool.name).load_fit().fit_version == 1

    assigned = meta(materialized(second["assignments"][0], ["tiny", "assignments"])[0])
    assert assigned["items"] == 200 and assigned["new_since_fit"] == 200
    log = p.table("assignment_log").to_arrow()
    row = log.filter(pc.equal(log["drop"], "d3")).to_pylist()[0]
    assert row["new_items"] == 200 and row["new_distance_sum"] > 0 and row["fit_version"] == 1
    rows = p.table("assignments").to_arrow()
    assert rows.num_rows == 1100
    unchanged = rows.filter(pc.not_equal(rows["drop"], "d3")).sort_by("item_id")
    assert unchanged.equals(old_rows)  # earlier drops' assignments untouched

    after = _subset_meta(second)
    assert after["pool_size"] == 1100 and _subset_meta(first)["pool_size"] == 900
    subset = p.table("subset_even").to_arrow()
    assert any(i.startswith("d3-") for i in subset["item_id"].to_pylist())


def test_refit_sensor_asks_for_a_fit_when_new_data_lies_far(platform):
    p = platform
    assert not _tick(p).run_requests  # no data: nothing to fit
    drops = [p.land(f"d{i}") for i in range(3)]
    for d in drops:
        p.ingest(d)
    first = _tick(p)
    assert isinstance(first, SensorResult)
    assert first.run_requests[0].tags["curation/refit_reason"] == "first fit"
    p.refresh(drops)
    far = p.land("far", n=150, shift=25.0)
    p.ingest(far)
    # assigned to the old tree first (its drop run): that is how the drift is measured
    result = p.refresh([far])
    assert result["refit"] is True
    (request,) = result["tick"].run_requests
    assert "distance ratio" in request.tags["curation/refit_reason"]
    assert {k.path[-1] for k in request.asset_selection} == {"level_1", "level_2"}
    fit = p.lancedb.store(p.pool.name).load_fit()
    assert fit.fit_version == 2 and fit.drops["far"] == 150
    assert "distance ratio" in fit.reason
    versions = set(p.table("assignments").to_arrow()["fit_version"].to_pylist())
    assert versions == {2}  # every drop re-assigned to the new tree, in one run
    assert _subset_meta(result)["fit_version"] == 2


def test_refit_sensor_waits_while_drops_are_in_flight_but_not_forever(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    from dagster._core.test_utils import create_run_for_test

    create_run_for_test(p.instance, job_name="x", status=DagsterRunStatus.STARTED,
                        tags={"curation/pool": "tiny", "curation/drop": "d9"})
    limit = p.pool.refit.max_wait_for_drops_s
    t0 = 1_000_000.0
    tick = evaluate_refit(build_sensor_context(instance=p.instance), p.pool, p.lancedb, now=t0)
    assert not tick.run_requests and "drop run(s) in flight" in tick.skip_reason.skip_message
    assert float(tick.cursor) == t0  # when the fit was first found due
    # still waiting just inside the limit: the first due time is kept, not reset
    ctx = build_sensor_context(instance=p.instance, cursor=tick.cursor)
    tick = evaluate_refit(ctx, p.pool, p.lancedb, now=t0 + limit - 1)
    assert not tick.run_requests and float(tick.cursor) == t0
    # a steady stream of drops must not starve the fit: past the limit it is asked for
    ctx = build_sensor_context(instance=p.instance, cursor=tick.cursor)
    tick = evaluate_refit(ctx, p.pool, p.lancedb, now=t0 + limit + 1)
    (request,) = tick.run_requests
    assert request.tags["curation/refit_reason"] == "first fit" and tick.cursor == ""


def test_forced_refit_fits_anew_and_reassigns_everything(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    p.refresh(drops)
    forced = p.refresh([], refit="force")
    assert forced["refit"] is True
    level_meta = meta(materialized(forced["fit"], ["tiny", "level_1"])[0])
    assert level_meta["fit_version"] == 2 and level_meta["reused_saved_fit"] is False
    # same items, same seed, cold fit: the same tree, matched to itself cluster for cluster
    assert level_meta["drift"]["identity"] is True and level_meta["drift"]["appeared"] == []
    assert materialized(forced["fit"], ["tiny", "level_2"])
    assert set(p.table("assignments").to_arrow()["fit_version"].to_pylist()) == {2}


def test_a_fit_saved_before_a_crash_is_reused_not_refitted(platform):
    """The level run died after saving its fit (simulated: the fit is saved, nothing else):
    the retry sees the same drops and config, publishes that fit and fits nothing."""
    from curation.store import fit_signature
    from curation.tree import fit_record
    from resources.clustering import ClusteringResource

    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    store = p.lancedb.store(p.pool.name)
    counts, hashes = store.drop_counts("embeddings"), store.model_hash_counts()
    saved = fit_record(store, p.pool.hierarchy, ClusteringResource(device="cpu").fit, None,
                       next(iter(hashes)), counts,
                       fit_signature(counts, hashes, p.pool.hierarchy), "first fit")
    store.save_fit(saved)
    assert p.table("level_1") is None
    retry = p.run([["tiny", "level_1"], ["tiny", "level_2"]])
    level_meta = meta(materialized(retry, ["tiny", "level_1"])[0])
    assert level_meta["reused_saved_fit"] is True and level_meta["fit_version"] == 1
    assert p.table("fits").count_rows() == 1
    stored = p.table("level_1").to_arrow()["vector"].to_pylist()
    assert np.allclose(np.asarray(stored), saved.hierarchy.centroids[0])


def test_same_items_give_the_same_tree_and_subsets_whatever_the_order(tmp_path):
    from dagster import instance_for_test

    manifests, centroids = [], []
    for run, order in enumerate([["a", "b", "c"], ["c", "a", "b"]]):
        with instance_for_test() as instance:
            p = Platform(tmp_path / f"run{run}", instance, small_pool())
            for drop in ["a", "b", "c"]:
                p.next_seed = 100 + ord(drop)
                p.land(drop)
            for drop in order:
                p.ingest(drop)
            p.ingest(order[0])  # a re-run rewrites that drop's rows at the end of the table
            result = p.refresh(order)
            manifests.append(_subset_meta(result)["manifest_sha256"])
            centroids.append(p.lancedb.store(p.pool.name).load_fit().hierarchy.centroids[0])
    assert manifests[0] == manifests[1]
    assert np.array_equal(centroids[0], centroids[1])
