"""The re-assignment after a refit: which drops the assignments' automation condition asks
for (assets.automation.assignments_condition) on a real Dagster instance with the pool's real
assets and LanceDB tables. Under the daemon (a refit's re-assignment as a backfill of parallel
runs of `refit.drops_per_run` drops): tests/live/test_live.py."""

from __future__ import annotations

import dagster as dg
import pytest
from kit import Platform, small_pool

ASSIGNMENTS = dg.AssetKey(["tiny", "assignments"])
LEVELS = [["tiny", "level_1"], ["tiny", "level_2"]]


class Ticks:
    """Evaluations of the assignments' condition, each from the previous one's cursor (what
    the automation sensor does tick after tick)."""

    def __init__(self, p: Platform):
        self.p, self.cursor = p, None

    def requested(self) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.p.defs, instance=self.p.instance, cursor=self.cursor,
            asset_selection=dg.AssetSelection.assets(ASSIGNMENTS))
        self.cursor = result.cursor
        return {key for r in result.results if r.key == ASSIGNMENTS
                for key in r.true_subset.expensively_compute_partition_keys()}


@pytest.fixture
def fitted(tmp_path):
    """Three drops, a tree, every drop assigned to it."""
    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool())
        drops = [p.land(d) for d in ("d0", "d1", "d2")]
        for d in drops:
            p.ingest(d)
        p.refresh(drops, refit="force")
        yield p


def _fit_versions(p: Platform) -> dict[str, set[int]]:
    rows = p.table("assignments").to_arrow().select(["drop", "fit_version"]).to_pylist()
    out: dict[str, set[int]] = {}
    for r in rows:
        out.setdefault(r["drop"], set()).add(r["fit_version"])
    return out


def test_a_drop_assigned_in_the_same_tick_window_as_the_new_tree_is_assigned_again(fitted):
    p = fitted
    ticks = Ticks(p)
    assert ticks.requested() == set()  # every drop on the current tree
    # between two ticks: d1's run ends on the old tree, then a refit lands. Eager sees d1
    # "updated" and its parent "updated" in one window, and the reset wins: the event alone
    # would leave d1 on the old tree for good.
    assert p.run([["tiny", "assignments"]], partition_key="d1").success
    assert p.run(LEVELS, tags={"curation/refit": "force"}).success
    assert _fit_versions(p) == {d: {1} for d in ("d0", "d1", "d2")}
    assert ticks.requested() == {"d0", "d1", "d2"}
    for d in ("d0", "d2"):  # part of the re-assignment ran
        assert p.run([["tiny", "assignments"]], partition_key=d).success
    assert ticks.requested() == {"d1"}  # a state: asked for again until it is done
    assert p.run([["tiny", "assignments"]], partition_key="d1").success
    assert _fit_versions(p) == {d: {2} for d in ("d0", "d1", "d2")}
    assert ticks.requested() == set()


def test_a_failed_reassignment_is_not_asked_for_at_every_tick(fitted):
    p = fitted
    ticks = Ticks(p)
    ticks.requested()
    assert p.run(LEVELS, tags={"curation/refit": "force"}).success
    assert ticks.requested() == {"d0", "d1", "d2"}
    p.table("embeddings").delete("drop = 'd2'")  # d2's re-assignment now fails
    p.table("fits").delete("true")
    assert not p.run([["tiny", "assignments"]], partition_key="d2").success
    assert "d2" not in ticks.requested()
