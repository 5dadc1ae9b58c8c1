"""Takedowns end to end on real LanceDB tables and a real Dagster instance: a takedown file
picked up by the pool's takedowns sensor, `curate takedown` (pending rows applied by the next
run), the purge from raw / embeddings / assignments, subsets refilled from the same leaves,
and a re-delivered item quarantined by raw."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest
from kit import Platform, materialized, meta, small_pool

from curation.cli import main
from curation.takedowns import parse_takedown_file
from curation_dags.sensors import build_takedowns_sensor, evaluate_drops

SUBSETS = [["tiny", "subsets", "even"], ["tiny", "subsets", "core"]]


@pytest.fixture(scope="module")
def pf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("takedowns")
    with dg.instance_for_test() as instance:
        p = Platform(tmp, instance, small_pool())
        p.tmp = tmp
        drops = [p.land(f"d{i}") for i in range(3)]
        for d in drops:
            p.ingest(d)
        p.refresh(drops)
        p.sensor = build_takedowns_sensor(p.pool, minimum_interval_seconds=30)
        p.cursor = None
        yield p


def tick(p) -> list[dg.RunRequest]:
    """One takedowns sensor tick, the cursor carried over as the daemon does."""
    with dg.build_sensor_context(instance=p.instance, cursor=p.cursor, resources={
            "landing": p.resources["landing"], "lancedb": p.lancedb}) as context:
        result = p.sensor(context)
    assert isinstance(result, dg.SensorResult)
    p.cursor = result.cursor
    return list(result.run_requests or [])


def run_request(p, request: dg.RunRequest):
    result = p.run([list(k.path) for k in request.asset_selection],
                   run_config=request.run_config or {}, tags=request.tags)
    assert result.success
    return result


def ids_of(p, kind: str) -> set[str]:
    table = p.table(kind)
    return set(table.to_arrow()["item_id"].to_pylist()) if table is not None else set()


def leaf_counts(p, name: str) -> tuple[np.ndarray, dict]:
    rows = p.table(f"subset_{name}").to_arrow()
    quota = dict(zip(rows["leaf"].to_pylist(), rows["quota"].to_pylist(), strict=True))
    return np.bincount(rows["leaf"].to_numpy(), minlength=12), quota


def assert_gone_and_refilled(p, victims: set[str], before: dict) -> None:
    for kind in ("raw", "embeddings", "assignments", "subset_even", "subset_core"):
        assert not victims & ids_of(p, kind), kind
    for name, (counts, quota) in before.items():
        now_counts, now_quota = leaf_counts(p, name)
        assert sum(p.table(f"subset_{name}").to_arrow()["weight"].to_pylist()) == \
            {"even": 200, "core": 60}[name]
        same = [lf for lf, q in quota.items() if now_quota.get(lf) == q]
        assert same and all(now_counts[lf] == counts[lf] for lf in same)  # same-leaf refill


def test_parse_takedown_files():
    assert parse_takedown_file("a.txt", b"# reason: court order 7\n# note\nx1\n\nx2\n") == [
        ("x1", "court order 7"), ("x2", "court order 7")]
    assert parse_takedown_file("a.csv", b"item_id,reason,extra\nx1,dmca,\nx2,privacy,1\n") == [
        ("x1", "dmca"), ("x2", "privacy")]
    for name, data, why in [("a.txt", b"x1\n", "reason"), ("a.csv", b"id,reason\nx,y\n", "header"),
                            ("a.csv", b"item_id,reason\nx,\n", "line 2"),
                            ("a.json", b"[]", "expected"), ("a.txt", b"\xff\xfe\x00", "UTF-8"),
                            ("a.txt", b"# reason: r\n", "no item ids")]:
        with pytest.raises(ValueError, match=why):
            parse_takedown_file(name, data)


def test_takedown_file_is_picked_up_once_purged_and_refilled(pf, capfd):
    chosen = pf.table("subset_even").to_arrow()["item_id"].to_pylist()
    victims = set(chosen[:3]) | set(pf.table("subset_core").to_arrow()["item_id"].to_pylist()[:2])
    before = {n: leaf_counts(pf, n) for n in ("even", "core")}
    folder = pf.landing / pf.pool.prefix / "_takedowns"
    folder.mkdir(parents=True)
    (folder / "legal-1.txt").write_text("# reason: legal request 42\n" + "\n".join(victims))
    (folder / "bad.txt").write_text("no-reason-here\n")

    # the drop sensor never takes the folder for a drop
    with dg.build_sensor_context(instance=pf.instance) as context:
        drops = evaluate_drops(context, pf.pool, pf.resources["landing"])
    assert not drops.run_requests and "_takedowns" not in (drops.cursor or "")

    capfd.readouterr()
    (request,) = tick(pf)
    logged = capfd.readouterr().err
    assert "takedown file 'bad.txt' skipped: no '# reason: ...' line" in logged  # no crash
    assert request.run_config["ops"]["tiny__takedowns"]["config"]["files"] == ["legal-1.txt"]
    assert tick(pf) == []  # each file once
    result = run_request(pf, request)
    values = meta(materialized(result, ["tiny", "takedowns"])[0])
    assert values["recorded_from_files"] == len(victims) == values["taken_down_items"]
    assert values["deleted_raw"] == values["deleted_embeddings"] == len(victims)
    assert values["deleted_assignments"] == len(victims)

    audit = pf.table("takedowns").to_arrow().to_pylist()
    assert {r["item_id"] for r in audit} == victims
    assert {(r["reason"], r["by"], r["run"]) for r in audit} == {
        ("legal request 42", "file:_takedowns/legal-1.txt", result.run_id)}
    assert all(r["at"] for r in audit)

    subsets = pf.run(SUBSETS)  # what automation runs after the takedowns asset
    assert subsets.success
    assert_gone_and_refilled(pf, victims, before)
    # the fixed bad file is new content: handled at the next tick
    (folder / "bad.txt").write_text("# reason: typo fixed\n" + chosen[5] + "\n")
    (again,) = tick(pf)
    assert again.run_config["ops"]["tiny__takedowns"]["config"]["files"] == ["bad.txt"]
    run_request(pf, again)
    assert chosen[5] not in ids_of(pf, "assignments")


def test_cli_takedown_is_applied_by_the_next_run(pf, capsys, tmp_path):
    db = str(pf.tmp / "lancedb")
    before = {n: leaf_counts(pf, n) for n in ("even", "core")}
    victims = set(pf.table("subset_even").to_arrow()["item_id"].to_pylist()[10:14])
    items = tmp_path / "ids.txt"
    items.write_text("\n".join(victims) + "\n")
    capsys.readouterr()
    assert main(["takedown", "--pool", "tiny", "--items", str(items), "--reason", "privacy",
                 "--by", "tester", "--lancedb", db]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["taken_down"] == out["recorded"] == out["pending"] == 4

    (request,) = tick(pf)  # pending rows: one run
    assert tick(pf) == []
    result = run_request(pf, request)
    values = meta(materialized(result, ["tiny", "takedowns"])[0])
    assert values["pending_applied"] == 4 and values["deleted_assignments"] == 4
    audit = [r for r in pf.table("takedowns").to_arrow().to_pylist() if r["item_id"] in victims]
    assert {(r["reason"], r["by"], r["run"]) for r in audit} == {
        ("privacy", "tester", result.run_id)}
    assert tick(pf) == []  # applied: nothing pending
    assert pf.run(SUBSETS).success
    assert_gone_and_refilled(pf, victims, before)

    why = main(["explain", "--pool", "tiny", "--item", sorted(victims)[0], "--lancedb", db])
    assert why == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["subsets"]["even"]["why"] == "taken down: privacy"
    assert explained["taken_down"][0]["run"] == result.run_id


def test_redelivered_item_is_quarantined_not_ingested(pf, capsys):
    victim = sorted(pf.table("takedowns").to_arrow()["item_id"].to_pylist())[0]
    drop = pf.land("again", n=4, ids=[victim, "fresh-1", "fresh-2", victim])
    result = pf.ingest(drop)
    assert result.success
    values = meta(materialized(result, ["tiny", "raw"])[0])
    assert values["delivered"] == 4 and values["taken_down"] == 2
    assert values["delivered"] == values["ingested"] + values["duplicates"] + \
        values["quarantined"]
    assert values["ingested"] == 2 and values["quarantined"] == 2
    rows = pf.table("quarantine").search().where(f"item_id = '{victim}'").to_arrow().to_pylist()
    assert len(rows) == 2 and all(r["reason"].startswith("taken down: ") for r in rows)
    for kind in ("raw", "embeddings"):
        assert victim not in ids_of(pf, kind)
    pf.refresh([drop])
    assert victim not in ids_of(pf, "subset_even") and victim not in ids_of(pf, "assignments")
    capsys.readouterr()
    assert main(["explain", "--pool", "tiny", "--item", victim, "--lancedb",
                 str(pf.tmp / "lancedb")]) == 0
    explained = json.loads(capsys.readouterr().out)
    assert explained["subsets"]["even"]["why"].startswith("taken down")
    assert any(q["reason"].startswith("taken down") for q in explained["quarantined"])
