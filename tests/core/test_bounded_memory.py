"""Bounded memory of a pool's fit and assignment (real LanceDB folders, no Dagster): level 1
fits on a seeded, order-free sample read by row id, the fit assigns nothing, and the
assignment streams each drop in bounded batches."""

from __future__ import annotations

import numpy as np
import pytest

from curation.config import FIT_POINTS_PER_CLUSTER, FIT_SAMPLE_CAP, HierarchyConfig
from curation.drops import assign_drops
from curation.hierarchy import fit_hierarchy
from curation.store import PoolStore, rows
from curation.tree import fit_pool
from curation_demo.synthetic import long_tailed_mixture

N, DROPS = 1200, ("d0", "d1", "d2")


@pytest.fixture(scope="module")
def items():
    x, _ = long_tailed_mixture(n=N, dim=8, n_components=20, seed=0)
    return np.array([f"item-{i:05d}" for i in range(N)]), x


def embed(store: PoolStore, items, order=DROPS, shuffle_seed=None, model_hash="m"):
    """The items as three drops of embeddings, appended in `order` (rows shuffled within a
    drop when `shuffle_seed` is given)."""
    ids, x = items
    for drop in order:
        mine = np.flatnonzero(np.arange(N) % len(DROPS) == DROPS.index(drop))
        if shuffle_seed is not None:
            mine = np.random.default_rng(shuffle_seed).permutation(mine)
        n = mine.size
        store.append(store.name("embeddings"), rows("embeddings", {
            "item_id": ids[mine].tolist(), "drop": [drop] * n, "uri": ids[mine].tolist(),
            "vector": x[mine], "model": ["precomputed"] * n, "model_hash": [model_hash] * n},
            dim=x.shape[1]))
    return store


def test_the_sample_is_seeded_order_free_and_read_by_row_id(tmp_path, items):
    ids, x = items
    first = embed(PoolStore.open_uri(str(tmp_path / "a"), "p"), items)
    other = embed(PoolStore.open_uri(str(tmp_path / "b"), "p"), items, ("d2", "d0", "d1"), 3)
    got_ids, got_x, scanned = first.sample_vectors("embeddings", 300, seed=5, batch_rows=128)
    again_ids, again_x, _ = other.sample_vectors("embeddings", 300, seed=5, batch_rows=1000)
    assert scanned == N and len(got_ids) == 300
    assert got_ids.to_pylist() == again_ids.to_pylist() == sorted(got_ids.to_pylist())
    np.testing.assert_array_equal(got_x, again_x)
    # each vector is its own item's
    np.testing.assert_array_equal(got_x, x[np.searchsorted(ids, got_ids.to_pylist())])
    reseeded = first.sample_vectors("embeddings", 300, seed=6)[0].to_pylist()
    assert reseeded != got_ids.to_pylist()
    everything, all_x, _ = first.sample_vectors("embeddings", 5000, seed=5)
    assert everything.to_pylist() == ids.tolist()
    np.testing.assert_array_equal(all_x, x)


def test_the_pool_sample_size_is_the_configured_one_or_derived_from_k():
    derived = HierarchyConfig(n_clusters=[4, 2])
    assert derived.pool_fit_sample(10**6) == FIT_POINTS_PER_CLUSTER * 4
    assert derived.pool_fit_sample(500) == 500
    assert HierarchyConfig(n_clusters=[10**5]).pool_fit_sample(10**9) == FIT_SAMPLE_CAP
    assert HierarchyConfig(n_clusters=[4], fit_sample_size=77).pool_fit_sample(10**6) == 77


def _counting_fit(seen: list):
    def fit(x, config, init_centroids=None):
        seen.append(len(x))
        return fit_hierarchy(x, config, init_centroids=init_centroids)
    return fit


def test_a_pool_fit_reads_its_sample_alone_and_assigns_nothing(tmp_path, items, monkeypatch):
    config = HierarchyConfig(n_clusters=[12, 3], resampling_steps=[1], fit_sample_size=300,
                             seed=0, device="cpu")

    def no_scan(*args, **kwargs):
        raise AssertionError("the fit streamed the table's vectors")

    seen, centroids = [], []
    for name, order in (("a", DROPS), ("b", ("d1", "d2", "d0"))):
        store = embed(PoolStore.open_uri(str(tmp_path / name), "p"), items, order, 1)
        with monkeypatch.context() as m:
            m.setattr(PoolStore, "vector_batches", no_scan)
            out = fit_pool(store, config, _counting_fit(seen), "first fit")
        centroids.append(out.record.hierarchy.centroids)
        assert store.table("assignments") is None  # the fit assigns no item
    assert seen == [300, 300]
    record = out.record
    assert record.n_items == N and record.report[0]["n_points"] == 300
    assert record.report[1]["n_points"] == 12  # level 2 clusters level 1's centroids
    # sizes: the sample's counts scaled to the pool, each level summing to it, parents
    # holding their children's items
    assert [sum(s) for s in record.sizes] == [N, N]
    np.testing.assert_array_equal(
        np.bincount(record.hierarchy.parents[0], weights=record.sizes[0], minlength=3),
        record.sizes[1])
    for a, b in zip(*centroids, strict=True):  # same items, another arrival order
        np.testing.assert_array_equal(a, b)


def test_reassignment_streams_bounded_batches_with_the_one_pass_result(tmp_path, items):
    store = embed(PoolStore.open_uri(str(tmp_path / "db"), "p"), items)
    config = HierarchyConfig(n_clusters=[12, 3], resampling_steps=[1], seed=0, device="cpu")
    record = fit_pool(store, config, fit_hierarchy, "first fit").record  # sample = pool
    batches = []

    def assign(tree, x):
        batches.append(len(x))
        return tree.assign(x)

    def table():
        got = store.table("assignments").to_arrow().sort_by("item_id")
        return {c: got[c].to_pylist() for c in ("item_id", "level_1", "level_2")}, \
            got["distance"].to_numpy()

    whole = assign_drops(store, list(DROPS), assign, batch_rows=10_000)
    assert batches == [N // 3] * 3  # one batch per drop
    one_pass, one_pass_distance = table()
    batches.clear()
    streamed = assign_drops(store, list(DROPS), assign, batch_rows=50)
    assert max(batches) == 50 and sum(batches) == N
    again, distance = table()
    assert again == one_pass
    np.testing.assert_allclose(distance, one_pass_distance, rtol=1e-5)
    assert streamed.items == whole.items == N
    assert streamed.mean_distance == pytest.approx(whole.mean_distance)
    assert streamed.per_drop == {d: {"items": N // 3, "new": False} for d in DROPS}
    # the sample was the whole pool: the fit's sizes are the assignments' exact counts
    assert np.bincount(one_pass["level_1"], minlength=12).tolist() == record.sizes[0]
    log = store.assignment_log(["drop", "items", "new_items"]).to_pylist()
    assert sorted((r["drop"], r["items"], r["new_items"]) for r in log) == \
        [(d, N // 3, 0) for d in DROPS]


def test_vectors_of_another_model_are_counted_not_assigned_batch_by_batch(tmp_path, items):
    store = embed(PoolStore.open_uri(str(tmp_path / "db"), "p"), items)
    config = HierarchyConfig(n_clusters=[6, 2], resampling_steps=[0], seed=0, device="cpu")
    fit_pool(store, config, fit_hierarchy, "first fit")
    ids, x = items
    store.rewrite_drop("embeddings", "d1", rows("embeddings", {
        "item_id": ids[1::3].tolist(), "drop": ["d1"] * (N // 3), "uri": ids[1::3].tolist(),
        "vector": x[1::3], "model": ["other"] * (N // 3), "model_hash": ["x"] * (N // 3)},
        dim=x.shape[1]))
    out = assign_drops(store, list(DROPS), lambda tree, v: tree.assign(v), batch_rows=64)
    assert (out.items, out.other_model_items) == (2 * N // 3, N // 3)
    assert store.table("assignments").count_rows("drop = 'd1'") == 0
    log = {r["drop"]: r for r in store.assignment_log(["drop", "mismatched_items",
                                                       "other_model"]).to_pylist()}
    assert (log["d1"]["mismatched_items"], log["d1"]["other_model"]) == (N // 3, "x")


def _fit_committed_during(store: PoolStore, config: HierarchyConfig, at_calls: set[int]):
    """An `assign` that commits a new fit of the pool (a real second writer, forced) just
    before the calls numbered in `at_calls`: a refit landing while a run assigns drops."""
    calls = []

    def assign(tree, x):
        calls.append(tree)
        if len(calls) in at_calls:
            fit_pool(store, config, fit_hierarchy, "refit during the assignment", force=True)
        return tree.assign(x)
    return assign, calls


def test_a_fit_committed_during_an_assignment_run_is_followed_by_every_drop(tmp_path, items):
    store = embed(PoolStore.open_uri(str(tmp_path / "db"), "p"), items)
    first = HierarchyConfig(n_clusters=[12, 3], resampling_steps=[1], seed=0, device="cpu")
    fit_pool(store, first, fit_hierarchy, "first fit")
    refit = first.model_copy(update={"n_clusters": [9, 3], "seed": 1})
    # the new tree commits while the second drop is placed, after the first drop's commit
    assign, calls = _fit_committed_during(store, refit, {2})
    out = assign_drops(store, list(DROPS), assign, batch_rows=10_000)
    assert out.fit.fit_version == store.latest_fit_version() == 2
    assert [t.centroids[0].shape[0] for t in calls] == [12, 12, 9, 9, 9]
    got = store.table("assignments").to_arrow()
    assert got.num_rows == N and set(got["fit_version"].to_pylist()) == {2}
    assert int(np.max(got["level_1"].to_numpy())) < 9  # placed in the 9-leaf tree
    log = store.assignment_log(["drop", "fit_version"]).to_pylist()
    assert sorted((r["drop"], r["fit_version"]) for r in log) == [(d, 2) for d in DROPS]
    # the same rows as a run that only ever saw the new tree
    placed = {r["item_id"]: r["level_1"] for r in got.select(["item_id", "level_1"]).to_pylist()}
    assign_drops(store, list(DROPS), lambda tree, v: tree.assign(v))
    again = store.table("assignments").to_arrow().select(["item_id", "level_1"]).to_pylist()
    assert {r["item_id"]: r["level_1"] for r in again} == placed


def test_a_tree_that_keeps_changing_refuses_the_run(tmp_path, items):
    from curation.drops import MAX_TREE_CHANGES, DropRefused

    store = embed(PoolStore.open_uri(str(tmp_path / "db"), "p"), items)
    config = HierarchyConfig(n_clusters=[6, 2], resampling_steps=[0], seed=0, device="cpu")
    fit_pool(store, config, fit_hierarchy, "first fit")
    # a new tree before every drop's placement: never a whole run on one tree
    assign, _ = _fit_committed_during(store, config, set(range(1, 100)))
    with pytest.raises(DropRefused, match=f"changed {MAX_TREE_CHANGES + 1} times"):
        assign_drops(store, list(DROPS), assign)
