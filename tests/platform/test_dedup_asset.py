"""`<pool>/near_duplicates` on a real platform (LanceDB, Dagster in-process): injected near
duplicates collapse to representatives, the subsets leave them out, `curate explain` names the
representative, and a new drop recomputes only the leaves it touched."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, instance_for_test
from kit import DIM, Platform, materialized, meta, small_pool

from curation.dedup import near_duplicates
from curation.explain import explain_item
from curation.report import near_duplicates_html
from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop

THRESHOLD = 0.9999  # far above any two distinct items of the 8-d mixture
COPIES = 30
NEAR = ["tiny", "near_duplicates"]
SUBSETS = [["tiny", "subsets", "even"], ["tiny", "subsets", "core"]]


def _land_with_copies(p, drop, n, seed, copies=0, sources=None):
    """`n` mixture items, then a near copy (1e-6 relative noise) of each of `copies` of them
    (or of the given (ids, vectors) `sources`)."""
    x, labels = fixed_mixture_draw(n, DIM, seed)
    ids = [f"{drop}-{i}" for i in range(n)]
    if sources is not None:
        src_ids, src_x = sources
        x, ids, labels = np.empty((0, DIM)), [], np.empty(0, np.int64)
    else:
        src_ids, src_x = ids[:copies], x[:copies]
    rng = np.random.default_rng(seed)
    copy_x = src_x * (1 + 1e-6 * rng.standard_normal(src_x.shape))
    copy_ids = [f"{drop}-copy-of-{i}" for i in src_ids]
    write_vector_drop(p.folder(drop), np.vstack([x, copy_x]), ids + copy_ids,
                      {"label": pa.array(np.r_[labels, np.zeros(len(copy_ids), np.int64)])})
    return dict(zip(copy_ids, src_ids, strict=True))


@pytest.fixture(scope="module")
def deduped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup")
    pool = small_pool(dedup={"enabled": True, "threshold": THRESHOLD, "leaf_cap": 64})
    with instance_for_test() as instance:
        p = Platform(tmp, instance, pool)
        p.copies = _land_with_copies(p, "d0", 300, seed=5, copies=COPIES)
        _land_with_copies(p, "d1", 300, seed=6)
        for d in ("d0", "d1"):
            p.ingest(d)
        p.first = p.refresh(["d0", "d1"], refit="force")
        p.dedup_run = p.run([NEAR])
        p.subsets_run = p.run(SUBSETS)
        yield p


def _table(p):
    return p.table("near_duplicates").to_arrow()


def test_the_table_holds_one_row_per_item_and_the_copies_collapse(deduped):
    p = deduped
    assert p.dedup_run.success
    rows = _table(p)
    assert rows.num_rows == p.rows("assignments") == 600 + COPIES
    rep = dict(zip(rows["item_id"].to_pylist(), rows["representative"].to_pylist(),
                   strict=True))
    sim = dict(zip(rows["item_id"].to_pylist(), rows["similarity"].to_pylist(), strict=True))
    dups = {i for i, r in rep.items() if r != i}
    assert len(dups) == COPIES
    for copy, source in p.copies.items():  # one of each pair represents the other
        assert {rep[copy], rep[source]} == {source} or {rep[copy], rep[source]} == {copy}
        assert sim[copy if rep[copy] != copy else source] > THRESHOLD
    values = meta(materialized(p.dedup_run, NEAR)[0])
    assert values["removed"] == COPIES and values["items"] == 600 + COPIES
    assert values["fit_version"] == 1 and values["threshold"] == THRESHOLD
    assert values["leaves_recomputed"] == len(set(rows["leaf"].to_pylist()))
    assert sum(values["similarity_histogram"]["counts"]) == COPIES
    levels = values["removed_per_level"]
    assert [lv["removed"] for lv in levels] == [COPIES, COPIES]
    assert values["memory_bound"] > 0 and values["lancedb_version"] == p.table(
        "near_duplicates").version
    # the report's section, from the same summary
    page = "\n".join(near_duplicates_html(values["summary"]))
    assert f"{COPIES} of {600 + COPIES} items" in page and f"<td>{COPIES}</td>" in page


def test_the_table_matches_the_core_rule_on_the_same_items(deduped):
    p = deduped
    got = _table(p).sort_by("item_id")
    assigned = p.table("assignments").to_arrow().sort_by("item_id")
    emb = p.table("embeddings").to_arrow().sort_by("item_id")
    assert got["item_id"].equals(assigned["item_id"]) and emb["item_id"].equals(
        assigned["item_id"])
    x = np.stack(emb["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    core = near_duplicates(assigned["level_1"].to_numpy(), assigned["item_key"].to_numpy(),
                           assigned["distance"].to_numpy(), x, THRESHOLD, leaf_cap=64)
    ids = assigned["item_id"].to_numpy(zero_copy_only=False)
    assert got["representative"].to_pylist() == ids[core.representative].tolist()


def test_subsets_sample_representatives_only(deduped):
    p = deduped
    dups = set(pc.filter(_table(p)["item_id"], pc.not_equal(
        _table(p)["item_id"], _table(p)["representative"])).to_pylist())
    for spec in p.pool.subsets:
        members = set(p.table(f"subset_{spec.name}").to_arrow()["item_id"].to_pylist())
        assert members and not members & dups
        values = meta(materialized(p.subsets_run, ["tiny", "subsets", spec.name])[0])
        assert values["duplicates_excluded"] == COPIES
        assert values["pool_size"] == 600
        assert values["manifest"]["table_versions"]["near_duplicates"] == p.table(
            "near_duplicates").version
    graph = p.defs.resolve_asset_graph()
    assert AssetKey(NEAR) in graph.get(AssetKey(SUBSETS[0])).parent_keys


def test_explain_names_the_representative(deduped):
    p = deduped
    rows = _table(p)
    dup = next(r for r in rows.to_pylist() if r["representative"] != r["item_id"])
    got = explain_item(p.lancedb.store("tiny"), dup["item_id"])
    assert got["near_duplicate_of"]["representative"] == dup["representative"]
    assert got["near_duplicate_of"]["similarity"] > THRESHOLD
    for entry in got["subsets"].values():
        assert entry["selected"] is False
        assert f"near duplicate of {dup['representative']}" in entry["why"]
    kept = explain_item(p.lancedb.store("tiny"), dup["representative"])
    assert kept["near_duplicate_of"] is None


def test_a_new_drop_recomputes_only_the_leaves_it_touched(deduped):
    p = deduped
    before = _table(p)
    # near copies of five d1 items: they land in those items' leaves
    emb = p.table("embeddings").to_arrow()
    emb = emb.filter(pc.is_in(emb["item_id"], value_set=pa.array(
        [f"d1-{i}" for i in range(5)]))).sort_by("item_id")
    sources = (emb["item_id"].to_pylist(),
               np.stack(emb["vector"].to_numpy(zero_copy_only=False)))
    _land_with_copies(p, "d2", 0, seed=7, sources=sources)
    p.ingest("d2")
    out = p.refresh(["d2"])
    assert out["refit"] is False  # assigned to the same tree
    run = p.run([NEAR])
    values = meta(materialized(run, NEAR)[0])
    assigned = p.table("assignments").to_arrow()
    new_leaves = set(assigned.filter(pc.equal(assigned["drop"], "d2"))["level_1"].to_pylist())
    all_leaves = set(assigned["level_1"].to_pylist())
    assert 0 < len(new_leaves) < len(all_leaves)
    assert values["leaves_recomputed"] == len(new_leaves)
    assert values["items_recomputed"] == assigned.filter(pc.is_in(
        assigned["level_1"], value_set=pa.array(sorted(new_leaves), pa.int32()))).num_rows
    assert values["removed"] == COPIES + 5
    after = _table(p)
    untouched = pc.invert(pc.is_in(after["leaf"], value_set=pa.array(sorted(new_leaves),
                                                                     pa.int32())))
    keep = pc.invert(pc.is_in(before["leaf"], value_set=pa.array(sorted(new_leaves),
                                                                  pa.int32())))
    assert after.filter(untouched).sort_by("item_id").equals(
        before.filter(keep).sort_by("item_id"))
    # nothing changed: nothing recomputed
    again = meta(materialized(p.run([NEAR]), NEAR)[0])
    assert again["leaves_recomputed"] == 0 and again["removed"] == COPIES + 5


def test_a_taken_down_representative_hands_over_to_its_duplicate(deduped):
    """Runs last in the module: it takes an item down."""
    from curation.takedowns import record_takedowns

    p = deduped
    rows = _table(p).to_pylist()
    dup = next(r for r in rows if r["representative"] != r["item_id"])
    rep_id = dup["representative"]
    record_takedowns(p.lancedb.store("tiny"), [(rep_id, "test")], by="test")
    assert p.run([["tiny", "takedowns"]]).success
    run = p.run([NEAR])
    values = meta(materialized(run, NEAR)[0])
    assert values["leaves_recomputed"] == 1  # the taken-down item's leaf alone
    assert values["versions_removed_after_takedown"] > 0
    after = {r["item_id"]: r for r in _table(p).to_pylist()}
    assert rep_id not in after
    assert after[dup["item_id"]]["representative"] == dup["item_id"]  # kept now
    table = p.table("near_duplicates")
    for version in [v["version"] for v in table.list_versions()]:
        table.checkout(version)
        assert rep_id not in set(table.to_arrow()["item_id"].to_pylist())
    subsets = p.run(SUBSETS)
    assert meta(materialized(subsets, SUBSETS[0])[0])["duplicates_excluded"] == COPIES + 4


def test_a_drop_run_dedups_only_when_it_refreshes_the_subsets():
    from assets import build_pool_assets
    from assets.keys import drop_run_keys, near_duplicates_key, subset_keys
    from curation_dags.sensors import drop_run_selections

    pool = small_pool(dedup={"enabled": True})
    near = near_duplicates_key(pool)
    runs = drop_run_selections(pool, 3, tree=True)
    assert runs[-1] == drop_run_keys(pool)
    assert runs[-1].index(near) < runs[-1].index(subset_keys(pool)[0])
    assert all(near not in r for r in runs[:-1])
    assert all(near not in r for r in drop_run_selections(pool, 2, tree=True,
                                                         refresh_subsets=False))
    # off (the default): no asset, no key anywhere
    plain = small_pool()
    assert near_duplicates_key(plain) not in drop_run_keys(plain)
    keys = {k for a in build_pool_assets(plain).assets for k in a.keys}
    assert near_duplicates_key(plain) not in keys
    assert near in {k for a in build_pool_assets(pool).assets for k in a.keys}
