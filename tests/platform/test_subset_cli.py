"""Subsets on the platform (one read for all subsets, churn, manifest, stale rows, takedowns)
and the `curate subset export|diff`, `curate explain`, `curate takedown` commands, on real
LanceDB tables and an in-process Dagster instance."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey
from kit import Platform, materialized, meta, small_pool

from curation.cli import main
from curation.subsets import table_manifest

SUBSET_COLUMNS = ["item_id", "uri", "weight", "path", "leaf", "quota", "rank", "leaf_size",
                  "item_key", "fit_version"]


@pytest.fixture(scope="module")
def pf(tmp_path_factory):
    from dagster import instance_for_test

    tmp = tmp_path_factory.mktemp("subsets")
    with instance_for_test() as instance:
        p = Platform(tmp, instance, small_pool())
        p.tmp = tmp
        drops = [p.land(f"d{i}") for i in range(3)]
        for d in drops:
            p.ingest(d)
        p.first = p.refresh(drops)
        yield p


def _curate(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _subset_meta(result, name="even") -> dict:
    return meta(materialized(result["results"][-1], ["tiny", "subsets", name])[0])


def test_one_run_materialises_every_subset_with_provenance_and_manifest(pf):
    run = pf.first["results"][-1]
    keys = {e.event_specific_data.materialization.asset_key
            for e in run.get_asset_materialization_events()}
    assert keys == {AssetKey(["tiny", "subsets", "even"]), AssetKey(["tiny", "subsets", "core"])}
    for spec in pf.pool.subsets:
        table = pf.table(f"subset_{spec.name}")
        rows = table.to_arrow()
        assert rows.column_names == SUBSET_COLUMNS
        assert sum(rows["weight"].to_pylist()) == spec.target_size
        leaf = rows["leaf"].to_numpy()
        counts = np.bincount(leaf)
        quota = dict(zip(leaf.tolist(), rows["quota"].to_pylist(), strict=True))
        size = dict(zip(leaf.tolist(), rows["leaf_size"].to_pylist(), strict=True))
        for lf in np.unique(leaf):
            assert counts[lf] == min(quota[lf], size[lf])
            ranks = sorted(r for r, x in zip(rows["rank"].to_pylist(), leaf, strict=True)
                           if x == lf)
            assert ranks == list(range(counts[lf]))
        paths = np.array(rows["path"].to_pylist())
        assert np.array_equal(paths[:, 0], leaf)
        values = _subset_meta(pf.first, spec.name)
        digest = hashlib.sha256("\n".join(sorted(rows["item_id"].to_pylist())).encode())
        assert values["manifest_sha256"] == digest.hexdigest()
        manifest = values["manifest"]
        assert manifest["count"] == rows.num_rows and manifest["seed"] == spec.seed
        assert manifest["config"]["strategy"] == spec.strategy
        assert manifest["table_versions"]["assignments"] == values["assignments_version"]
        assert manifest["table_versions"][f"tiny__subset_{spec.name}"] == table.version
        assert table_manifest(table)["sha256"] == digest.hexdigest()
        assert values["stale_excluded"] == 0 and values["pool_size"] == 900
        # items come with their own uri, from the assignments table
        uris = dict(zip(pf.table("assignments").to_arrow()["item_id"].to_pylist(),
                        pf.table("assignments").to_arrow()["uri"].to_pylist(), strict=True))
        assert all(uris[i] == u for i, u in zip(rows["item_id"].to_pylist(),
                                                 rows["uri"].to_pylist(), strict=True))


def test_export_is_byte_identical_and_pinned_diff_and_churn_after_a_new_drop(pf, capsys, tmp_path):
    db = str(pf.tmp / "lancedb")
    v1 = pf.table("subset_even").version
    files = {}
    for fmt in ("parquet", "jsonl", "csv"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        out = _curate(capsys, "subset", "export", "--pool", "tiny", "--subset", "even",
                      "--format", fmt, "--out", str(a), "--lancedb", db)
        _curate(capsys, "subset", "export", "--pool", "tiny", "--subset", "even",
                "--version", str(v1), "--format", fmt, "--out", str(b), "--lancedb", db)
        assert out["version"] == v1 and a.read_bytes() == b.read_bytes()
        assert out["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
        files[fmt] = a.read_bytes()
    exported = pq.read_table(tmp_path / "a.parquet")
    assert exported.column_names == ["item_id", "uri", "weight", "path"]
    ids = exported["item_id"].to_pylist()
    assert ids == sorted(ids) and len(ids) == pf.table("subset_even").count_rows()
    first_json = json.loads(files["jsonl"].decode().splitlines()[0])
    assert first_json["item_id"] == ids[0] and len(first_json["path"]) == 2
    assert files["csv"].decode().splitlines()[0] == "item_id,uri,weight,path"

    pf.ingest(pf.land("d3", n=30))  # a 3% drop, no refit
    second = pf.refresh(["d3"])
    assert second["refit"] is False
    after = _subset_meta(second)
    assert after["previous_version"] == v1 and after["lancedb_version"] > v1
    churn = after["churn"]
    assert churn["comparable"] is True
    assert churn["left"] == after["churn_left"] and churn["entered"] == after["churn_entered"]
    assert churn["forced_minimum"] <= churn["left"] < 0.25 * after["selected_items"]
    # the old version still exports the same bytes
    again = tmp_path / "again.parquet"
    _curate(capsys, "subset", "export", "--pool", "tiny", "--subset", "even", "--version",
            str(v1), "--out", str(again), "--lancedb", db)
    assert again.read_bytes() == files["parquet"]

    diff = _curate(capsys, "subset", "diff", "--pool", "tiny", "--subset", "even", "--from",
                   str(v1), "--to", str(after["lancedb_version"]), "--ids", "--lancedb", db)
    assert (diff["entered"], diff["left"]) == (churn["entered"], churn["left"])
    per = diff["per_top_cluster"]
    assert sum(c["entered"] for c in per.values()) == diff["entered"]
    new_ids = set(pf.table("subset_even").to_arrow()["item_id"].to_pylist())
    entered = {i for c in per.values() for i in c["entered_ids"]}
    assert entered == new_ids - set(ids)
    assert any(i.startswith("d3-") for i in entered)


def test_explain_takedown_refills_leaves_and_never_brings_items_back(pf, capsys, tmp_path):
    db = str(pf.tmp / "lancedb")
    rows = pf.table("subset_even").to_arrow()
    chosen = rows["item_id"].to_pylist()
    inside = _curate(capsys, "explain", "--pool", "tiny", "--item", chosen[0], "--lancedb", db)
    even = inside["subsets"]["even"]
    assert even["selected"] is True and even["rank"] < even["quota"]
    assert inside["assignment"]["leaf"] == even["leaf"]

    all_ids = set(pf.table("assignments").to_arrow()["item_id"].to_pylist())
    outside_id = sorted(all_ids - set(chosen))[0]
    outside = _curate(capsys, "explain", "--pool", "tiny", "--item", outside_id,
                      "--lancedb", db)["subsets"]["even"]
    assert outside["selected"] is False
    assert outside["rank"] >= outside["taken"] and "below the cut" in outside["why"]

    victims = chosen[:3]
    before_counts = np.bincount(rows["leaf"].to_numpy(), minlength=12)
    items = tmp_path / "ids.txt"
    items.write_text("\n".join(victims) + "\n")
    out = _curate(capsys, "takedown", "--pool", "tiny", "--items", str(items), "--reason",
                  "legal request 42", "--by", "tester", "--lancedb", db)
    assert out["taken_down"] == 3
    audit = pf.table("takedowns").to_arrow()
    assert sorted(audit["item_id"].to_pylist()) == sorted(victims)
    assert set(audit["reason"].to_pylist()) == {"legal request 42"}
    assert set(audit["by"].to_pylist()) == {"tester"}

    result = pf.refresh([])
    values = _subset_meta(result)
    assert values["taken_down_excluded"] == 3
    after = pf.table("subset_even").to_arrow()
    assert not set(victims) & set(after["item_id"].to_pylist())
    assert sum(after["weight"].to_pylist()) == 200
    after_counts = np.bincount(after["leaf"].to_numpy(), minlength=12)
    quota_before = dict(zip(rows["leaf"].to_pylist(), rows["quota"].to_pylist(), strict=True))
    quota_after = dict(zip(after["leaf"].to_pylist(), after["quota"].to_pylist(), strict=True))
    for lf, q in quota_before.items():
        if quota_after.get(lf) == q:
            assert after_counts[lf] == before_counts[lf]  # refilled from the same leaf
    why = _curate(capsys, "explain", "--pool", "tiny", "--item", victims[0], "--lancedb", db)
    assert why["taken_down"][0]["reason"] == "legal request 42"
    assert why["subsets"]["even"]["why"].startswith("taken down")

    # re-delivered under a new drop: still excluded
    pf.ingest(pf.land("again", n=5, ids=[victims[0], "fresh-1", "fresh-2", "fresh-3",
                                          "fresh-4"]))
    pf.refresh(["again"])
    assert victims[0] not in set(pf.table("subset_even").to_arrow()["item_id"].to_pylist())


def test_rows_of_another_fit_hold_the_subsets_back_and_are_named(pf):
    """A drop whose rows are of another fit than the tree's (a re-assignment not done yet)
    makes the snapshot incomplete: no subset version is written, the observation names the
    drop; once it is placed in the tree again the refresh publishes without it missing."""
    table = pf.table("assignments")
    n = table.count_rows("drop = 'd0'")
    before = pf.table("subset_even").version
    table.update(where="drop = 'd0'", values={"fit_version": 99})
    result = pf.refresh([])
    assert not materialized(result["results"][-1], ["tiny", "subsets", "even"])
    assert pf.table("subset_even").version == before
    seen = pf.instance.fetch_observations(AssetKey(["tiny", "subsets", "even"]), limit=1)
    told = seen.records[0].asset_observation.metadata
    (missing,) = told["incomplete_drops"].value.items()  # d0: none of its items at the fit
    fit = pf.lancedb.store("tiny").load_fit().fit_version
    assert missing[0] == "d0" and missing[1].startswith("0 of ")
    assert missing[1].endswith(f"embedded items assigned at fit {fit}")
    assert int(missing[1].split()[2]) >= n - 5  # less the items an earlier test took down
    result = pf.refresh(["d0"])  # d0's run places it in the tree again
    values = _subset_meta(result)
    assert values["stale_excluded"] == 0
    ids = pf.table("subset_even").to_arrow()["item_id"].to_pylist()
    assert any(i.startswith("d0-") for i in ids)
    assert sum(pf.table("subset_even").to_arrow()["weight"].to_pylist()) == 200


def test_single_subset_can_be_materialised_alone(pf):
    from dagster import materialize

    before = pf.table("subset_core").version
    result = materialize(list(pf.defs.resolve_asset_graph().assets_defs), instance=pf.instance,
                         selection=[AssetKey(["tiny", "subsets", "even"])])
    assert result.success
    assert materialized(result, ["tiny", "subsets", "even"])
    assert not materialized(result, ["tiny", "subsets", "core"])
    assert pf.table("subset_core").version == before


def test_export_of_a_missing_version_or_subset_is_a_clean_error(pf, capsys, tmp_path):
    db = str(pf.tmp / "lancedb")
    out = str(tmp_path / "x.csv")
    assert main(["subset", "export", "--pool", "tiny", "--subset", "even", "--version", "999",
                 "--format", "csv", "--out", out, "--lancedb", db]) == 2
    assert "no version 999" in capsys.readouterr().err
    assert main(["subset", "export", "--pool", "tiny", "--subset", "nope", "--out", out,
                 "--lancedb", db]) == 2


def test_explain_ranks_match_the_selection_for_both_strategies(pf):
    from curation.explain import leaf_rank
    from curation.store import PoolStore
    from curation.subsets import table_manifest

    store = PoolStore.open_uri(str(pf.tmp / "lancedb"), "tiny")
    down = set()
    takedowns = pf.table("takedowns")
    if takedowns is not None:
        down = set(takedowns.to_arrow()["item_id"].to_pylist())
    for name in ("even", "core"):
        table = pf.table(f"subset_{name}")
        manifest = table_manifest(table)
        rows = table.to_arrow().to_pylist()
        for r in rows[:: max(1, len(rows) // 15)]:
            rank, members = leaf_rank(store, r["item_id"], r["leaf"], r["fit_version"],
                                      manifest["config"], down)
            assert (rank, members) == (r["rank"], r["leaf_size"])
