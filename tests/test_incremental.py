"""A new drop costs O(drop): its raw + embeddings partitions, assignment to the current tree
(no refit), refreshed subsets. Refits: forced (warm start) and by the drift policy."""

from __future__ import annotations

import pyarrow.compute as pc
from conftest import materialized, meta
from dagster import AssetKey, evaluate_automation_conditions

from assets.tables import load_fit


def _subset_meta(result) -> dict:
    return meta(materialized(result["results"][-1], ["tiny", "subsets", "even"])[0])


def test_new_drop_runs_only_its_partitions_and_does_not_refit(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(3)]
    for d in drops:
        p.ingest(d)
    first = p.refresh(drops)
    before = _subset_meta(first)
    level_versions = [p.table(f"level_{lv}").version for lv in (1, 2)]
    old_rows = p.table("assignments").to_arrow().sort_by("item_id")

    new = p.land("d3", n=200)
    ingest = p.ingest(new)
    done = {(m.asset_key.to_user_string(), m.partition)
            for e in ingest.get_asset_materialization_events()
            for m in [e.event_specific_data.materialization]}
    assert done == {("tiny/raw", "d3"), ("tiny/embeddings", "d3")}
    assert meta(materialized(ingest, ["tiny", "embeddings"])[0])["embedded"] == 200

    second = p.refresh([new])
    assert second["refit"] is False
    level_run = second["results"][0]
    assert not materialized(level_run, ["tiny", "level_1"])
    assert not materialized(level_run, ["tiny", "level_2"])
    observed = [e.event_specific_data.asset_observation for e in level_run.all_events
                if e.event_type_value == "ASSET_OBSERVATION"]
    numbers = meta(observed[0])
    assert numbers["refit"] is False and numbers["added_since_fit"] == 200
    assert 0 < numbers["distance_ratio"] < 3.0
    assert [p.table(f"level_{lv}").version for lv in (1, 2)] == level_versions
    assert load_fit(p.lancedb, p.pool).fit_version == 1

    assigned = meta(materialized(second["results"][1], ["tiny", "assignments"])[0])
    assert assigned["items"] == 200 and assigned["fit_version"] == 1
    rows = p.table("assignments").to_arrow()
    assert rows.num_rows == 1100
    unchanged = rows.filter(pc.not_equal(rows["drop"], "d3")).sort_by("item_id")
    assert unchanged.equals(old_rows)  # earlier drops' assignments untouched

    after = _subset_meta(second)
    assert after["pool_size"] == 1100 and before["pool_size"] == 900
    assert after["manifest_sha256"] != before["manifest_sha256"]
    subset = p.table("subset_even").to_arrow()
    assert any(i.startswith("d3-") for i in subset["item_id"].to_pylist())


def test_forced_refit_warm_starts_and_reassigns_everything(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    p.refresh(drops)
    old = load_fit(p.lancedb, p.pool)
    forced = p.refresh([], refit="force")
    assert forced["refit"] is True
    level_meta = meta(materialized(forced["results"][0], ["tiny", "level_1"])[0])
    assert level_meta["warm_start"] is True and level_meta["fit_version"] == 2
    assert materialized(forced["results"][0], ["tiny", "level_2"])
    fit = load_fit(p.lancedb, p.pool)
    assert fit.fit_version == 2 and fit.n_items == old.n_items == 600
    versions = set(p.table("assignments").to_arrow()["fit_version"].to_pylist())
    assert versions == {2}
    assert _subset_meta(forced)["fit_version"] == 2


def test_drift_policy_refits_when_new_data_lies_far_from_the_tree(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(3)]
    for d in drops:
        p.ingest(d)
    p.refresh(drops)
    far = p.land("far", n=150, shift=25.0)
    p.ingest(far)
    result = p.refresh([far])
    assert result["refit"] is True
    level_meta = meta(materialized(result["results"][0], ["tiny", "level_1"])[0])
    assert level_meta["distance_ratio"] > 3.0 and "distance ratio" in level_meta["reason"]
    assert load_fit(p.lancedb, p.pool).drops["far"] == 150


def test_automation_requests_only_the_new_drop_downstream(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    p.refresh(drops)
    first = evaluate_automation_conditions(defs=p.defs, instance=p.instance)
    new = p.land("d9", n=100)
    p.instance.add_dynamic_partitions("tiny_drops", [new])
    from dagster import materialize

    materialize(list(p.defs.resolve_asset_graph().assets_defs), instance=p.instance,
                selection=[AssetKey(["tiny", "raw"])], partition_key=new)
    tick = evaluate_automation_conditions(defs=p.defs, instance=p.instance, cursor=first.cursor)
    assert tick.get_requested_partitions(AssetKey(["tiny", "embeddings"])) == {new}
    # planned into the same run, after the embeddings of the drop: only the new partition
    assert tick.get_requested_partitions(AssetKey(["tiny", "assignments"])) == {new}
    assert not tick.get_requested_partitions(AssetKey(["tiny", "level_2"]))
