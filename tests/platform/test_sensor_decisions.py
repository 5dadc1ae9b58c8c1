"""The sensors' decisions as plain functions: no Dagster context, no instance, no storage. Plain
inputs in (listing, registered drops, fit state, cursor), a decision out; the sensor shells that
gather those inputs are tested on a real instance in test_sensors.py and test_takedowns.py."""

from __future__ import annotations

import json

import pytest

from curation.config import HierarchyConfig
from curation.pools import PoolConfig, SubsetSpec
from curation.refit import DriftSummary, FitSummary
from curation_dags.refit import FitState, decide_refit_run
from curation_dags.sensors import (
    CHANGED_CONTENT,
    EMPTY_FINGERPRINT,
    LandedDrop,
    TakedownFile,
    decide_drops,
    decide_stall_reports,
    decide_takedowns,
)

POOL = PoolConfig(
    name="p",
    hierarchy=HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1], sample_sizes=[2, 1]),
    subsets=[SubsetSpec(name="all", target_size=4)],
    refit={"max_added_fraction": 0.5, "max_wait_for_drops_s": 100},
)


class Contents:
    """Drop contents by id; counts the (costly) fingerprint reads."""

    def __init__(self, **contents: str):
        self.contents, self.reads = contents, []

    def fingerprint(self, drop: str) -> str:
        self.reads.append(drop)
        return self.contents[drop]


def _drops(cursor, landed, registered=(), contents=None, ingested=(), **kwargs):
    contents = contents or Contents()
    return decide_drops("p", cursor, landed, set(registered), fingerprint=contents.fingerprint,
                        ingested=lambda d: d in ingested, **kwargs)


def test_complete_drops_are_registered_and_each_skip_is_logged_once():
    landed = [LandedDrop("d1", marker="m1"), LandedDrop("d2"),
              LandedDrop("bad..id", problem="invalid drop id: '..'")]
    first = _drops(None, landed, contents=Contents(d1="A"))
    assert first.new == ["d1"]
    messages = [m for _, m in first.logs]
    assert "pool p: drop 'd2' skipped: incomplete (no _SUCCESS yet); will register it once " \
           "complete" in messages
    assert "pool p: drop 'bad..id' skipped: invalid drop id: '..'" in messages
    assert ("warning", "pool p: drop 'bad..id' skipped: invalid drop id: '..'") in first.logs
    # next tick: d1 registered, nothing new, nothing logged again
    second = _drops(first.cursor, landed, registered={"d1"})
    assert second.new == [] and second.logs == []
    # the incomplete drop gets its marker
    landed[1] = LandedDrop("d2", marker="m2")
    assert _drops(second.cursor, landed, {"d1"}, Contents(d2="B")).new == ["d2"]


def test_same_content_is_a_redelivery_only_once_the_original_was_ingested():
    contents = Contents(a="X", b="X", c="X")
    first = _drops(None, [LandedDrop("a", marker="m")], contents=contents)
    assert first.new == ["a"]
    landed = [LandedDrop("a", marker="m"), LandedDrop("b", marker="m")]
    # a registered, not ingested yet (deleted before its embeddings ran, say): b goes through
    assert _drops(first.cursor, landed, {"a"}, contents).new == ["b"]
    skipped = _drops(first.cursor, landed, {"a"}, contents, ingested={"a"})
    assert skipped.new == []
    assert skipped.logs == [("warning", "pool p: drop 'b' skipped: same content as drop 'a' "
                                        "(re-delivery)")]
    # decided: not hashed again at later ticks
    contents.reads.clear()
    assert _drops(skipped.cursor, landed, {"a"}, contents, ingested={"a"}).new == []
    assert contents.reads == []
    # empty drops are never duplicates of each other
    empty = Contents(e1=EMPTY_FINGERPRINT, e2=EMPTY_FINGERPRINT)
    both = [LandedDrop("e1", marker="m"), LandedDrop("e2", marker="m")]
    assert _drops(None, both, contents=empty, ingested={"e1", "e2"}).new == ["e1", "e2"]


def test_a_registered_drop_rewritten_with_other_files_is_reported_once_not_reingested():
    contents = Contents(d="A")
    first = _drops(None, [LandedDrop("d", marker="m1")], contents=contents)
    contents.reads.clear()
    same_marker = _drops(first.cursor, [LandedDrop("d", marker="m1")], {"d"}, contents)
    assert contents.reads == [] and same_marker.logs == []  # marker unchanged: not hashed
    contents.contents["d"] = "B"
    changed = _drops(first.cursor, [LandedDrop("d", marker="m2")], {"d"}, contents)
    assert changed.new == [] and changed.logs == [
        ("error", f"pool p: drop 'd' {CHANGED_CONTENT}")]
    again = _drops(changed.cursor, [LandedDrop("d", marker="m3")], {"d"}, contents)
    assert again.logs == []  # reported once
    # the same files written again (a new marker): nothing to report
    contents.contents["d"] = "A"
    assert _drops(first.cursor, [LandedDrop("d", marker="m4")], {"d"}, contents).logs == []


def test_one_tick_handles_at_most_max_new_drops_and_stops_hashing_past_its_budget():
    landed = [LandedDrop(f"d{i}", marker="m") for i in range(5)]
    contents = Contents(**{f"d{i}": str(i) for i in range(5)})
    capped = _drops(None, landed, contents=contents, max_new=2)
    assert capped.new == ["d0", "d1"]
    assert ("info", "pool p: more new drops than one tick handles; next tick") in capped.logs
    assert _drops(capped.cursor, landed, {"d0", "d1"}, contents).new == ["d2", "d3", "d4"]

    slow = Contents(**contents.contents)  # each hash takes 30 s of a 20 s budget
    late = _drops(None, landed, contents=slow, clock=lambda: 30.0 * len(slow.reads),
                  fingerprint_budget_s=20.0)
    assert late.new == ["d0"] and slow.reads == ["d0"]  # the others wait for the next tick


def test_takedown_files_are_handled_once_per_content_and_pending_rows_once_per_version():
    def parse(file: TakedownFile) -> list:
        if file.name == "bad.txt":
            raise ValueError("no '# reason: ...' line")
        return [("x", "court order")]

    good = TakedownFile("legal.txt", "uri/legal.txt", 10, "t1")
    bad = TakedownFile("bad.txt", "uri/bad.txt", 3, "t2")
    refused = TakedownFile("link.txt", "uri/link.txt", 0, "refused: symlink out of landing")
    first = decide_takedowns("p", None, [good, bad, refused], [".part"], parse=parse,
                             pending_audit=7)
    assert [f for f, _ in first.files] == ["legal.txt"]
    assert first.pending_run is None  # the file's run applies the pending rows too
    levels = dict((m.split("'")[1], lvl) for lvl, m in first.logs)
    assert levels == {"legal.txt": "info", "bad.txt": "warning", "link.txt": "warning",
                      ".part": "warning"}
    assert any("no '# reason: ...' line" in m for _, m in first.logs)

    again = decide_takedowns("p", first.cursor, [good, bad, refused], [".part"], parse=parse,
                             pending_audit=7)
    assert again.files == [] and again.pending_run is None and again.logs == []
    # a later audit version (rows recorded by `curate takedown`): one run for it
    pending = decide_takedowns("p", again.cursor, [good], [], parse=parse, pending_audit=8)
    assert pending.files == [] and pending.pending_run == 8
    assert decide_takedowns("p", pending.cursor, [good], [], parse=parse,
                            pending_audit=8).pending_run is None
    # the bad file fixed (new content tag) is handled again
    fixed = bad._replace(tag="t3")
    refixed = decide_takedowns("p", pending.cursor, [good, fixed], [], parse=lambda f: [],
                               pending_audit=None)
    assert [f for f, _ in refixed.files] == ["bad.txt"]


def test_pending_rows_wait_while_a_takedowns_run_is_in_flight():
    # a file's run records its rows pending, then purges, then stamps them: a tick in between
    # sees them pending with no new file, and must leave them to that run
    good = TakedownFile("legal.txt", "uri/legal.txt", 10, "t1")
    asked = decide_takedowns("p", None, [good], [], parse=lambda f: [], pending_audit=None)
    assert [f for f, _ in asked.files] == ["legal.txt"]
    during = decide_takedowns("p", asked.cursor, [good], [], parse=lambda f: [],
                              pending_audit=4, run_in_flight=True)
    assert during.files == [] and during.pending_run is None
    # the run ended and stamped them: nothing pending, nothing asked
    done = decide_takedowns("p", during.cursor, [good], [], parse=lambda f: [],
                            pending_audit=None)
    assert done.pending_run is None
    # the run was killed before stamping: the same version gets its run once it is over
    killed = decide_takedowns("p", during.cursor, [good], [], parse=lambda f: [],
                              pending_audit=4)
    assert killed.pending_run == 4


def test_takedown_listing_failure_forgets_nothing():
    good = TakedownFile("legal.txt", "uri", 10, "t1")
    first = decide_takedowns("p", None, [good], [".x"], parse=lambda f: [], pending_audit=None)
    failed = decide_takedowns("p", first.cursor, None, [], parse=lambda f: [], pending_audit=None)
    assert failed.files == [] and failed.logs == []
    assert json.loads(failed.cursor)["done"] == json.loads(first.cursor)["done"]
    assert json.loads(failed.cursor)["hidden"] == [".x"]  # not reported again afterwards
    gone = decide_takedowns("p", failed.cursor, [], [], parse=lambda f: [], pending_audit=None)
    assert json.loads(gone.cursor)["done"] == {}


def _outcome(passed: bool, stalled: list[str]) -> dict:
    return {"passed": passed, "description": f"stalled: {stalled}",
            "metadata": {"stalled": stalled}}


def test_stall_outcomes_are_reported_on_change_and_red_ones_logged():
    first = decide_stall_reports("p", None, {"a": _outcome(True, []), "b": _outcome(True, [])})
    assert len(first.reports) == 2 and first.logs == []
    same = decide_stall_reports("p", first.cursor, {"a": _outcome(True, []),
                                                   "b": _outcome(True, [])})
    assert same.reports == []
    red = decide_stall_reports("p", same.cursor, {"a": _outcome(False, ["drop 'd9'"]),
                                                 "b": _outcome(True, [])})
    assert [r["passed"] for r in red.reports] == [False]
    assert red.logs == [("error", "pool p: stalled: [\"drop 'd9'\"]")]


FIT = FitSummary(fit_version=3, n_items=100, mean_distance=1.0,
                 config=POOL.hierarchy.model_dump_json())


def _refit(state, fitting=False, ingesting=0, cursor=None, now=1000.0):
    return decide_refit_run(POOL, fitting=fitting, ingesting=ingesting, state=state,
                            cursor=cursor, now=now)


def test_refit_decision_skips_while_a_fit_runs_and_within_the_policy():
    busy = _refit(None, fitting=True)
    assert busy.run_key is None and busy.cursor is None  # cursor left as it is
    assert "a fit is queued or running" in busy.reason
    calm = _refit(FitState(FIT, DriftSummary(drops=1, items=10, new_items=10,
                                             new_distance_sum=10.0)))
    assert calm.run_key is None and calm.cursor == ""
    assert "within refit policy" in calm.reason
    waiting = _refit(FitState(None, DriftSummary(), pool_items=2))
    assert waiting.run_key is None and "waiting for data" in waiting.reason


@pytest.mark.parametrize("ingesting", [0, 2])
def test_a_due_fit_waits_for_drop_runs_at_most_max_wait(ingesting):
    due = FitState(FIT, DriftSummary(drops=2, items=80, new_items=80, new_distance_sum=80.0))
    first = _refit(due, ingesting=ingesting, now=1000.0)
    if ingesting:
        assert first.run_key is None and first.cursor == repr(1000.0)
        assert "2 drop run(s) in flight (waited 0 s of at most 100 s)" in first.reason
        later = _refit(due, ingesting=ingesting, cursor=first.cursor, now=1101.0)
    else:
        later = first
    assert later.run_key == "p:after-fit-3:80" and later.cursor == ""
    assert later.reason == "added fraction > 0.5"
    assert later.log.startswith("pool p: asking for a fit: added fraction > 0.5")


def test_first_fit_and_config_change_get_their_own_run_keys():
    first = _refit(FitState(None, DriftSummary(), pool_items=50))
    assert first.run_key == "p:after-fit-0:50" and first.reason == "first fit"
    other = FitSummary(3, 100, 1.0, config=POOL.hierarchy.model_copy(
        update={"n_clusters": [5, 2]}).model_dump_json())
    changed = _refit(FitState(other, DriftSummary()))
    assert changed.run_key.startswith("p:after-fit-3:0:config-")
