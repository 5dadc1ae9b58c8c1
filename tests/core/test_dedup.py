"""Semantic dedup inside leaves (curation.dedup): the greedy rule, order-freedom, the cap."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from curation.config import DedupConfig
from curation.dedup import dedup_ordered_leaf, memory_bound, near_duplicates, normalised
from curation.selection import item_keys


def _pool(n=200, dim=32, seed=0, leaves=4):
    """Random directions (pairwise cosine far below 0.9 in 32-d) spread over `leaves`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    leaf = rng.integers(0, leaves, n)
    distance = rng.random(n).astype(np.float32)
    keys = item_keys([f"item-{i}" for i in range(n)])
    return x, leaf, distance, keys


def _with_copies(x, leaf, distance, keys, sources, noise, seed=1):
    """Append a copy of each row in `sources` (same leaf), `noise` x a random direction."""
    rng = np.random.default_rng(seed)
    copies = x[sources] + noise * rng.standard_normal((len(sources), x.shape[1])).astype(
        np.float32) * np.linalg.norm(x[sources], axis=1, keepdims=True) / np.sqrt(x.shape[1])
    new_keys = item_keys([f"copy-{i}" for i in range(len(sources))])
    return (np.vstack([x, copies]).astype(np.float32), np.r_[leaf, leaf[sources]],
            np.r_[distance, distance[sources] + 1e-3].astype(np.float32),
            np.r_[keys, new_keys])


def test_distinct_items_all_stay():
    x, leaf, distance, keys = _pool()
    got = near_duplicates(leaf, keys, distance, x, threshold=0.9)
    assert got.removed == 0
    assert np.array_equal(got.representative, np.arange(len(x)))
    assert np.all(got.similarity == 1.0)


def test_exact_and_near_duplicates_collapse_onto_the_original():
    x, leaf, distance, keys = _pool()
    exact = np.arange(0, 10)
    near = np.arange(10, 30)
    x2, leaf2, dist2, keys2 = _with_copies(x, leaf, distance, keys, exact, 0.0)
    x3, leaf3, dist3, keys3 = _with_copies(x2, leaf2, dist2, keys2, near, 0.05, seed=2)
    got = near_duplicates(leaf3, keys3, dist3, x3, threshold=0.95)
    n = len(x)
    assert got.removed == 30
    # each copy (slightly farther from the centroid) joins its original, nothing else merges
    assert np.array_equal(got.representative[n:n + 10], exact)
    assert np.array_equal(got.representative[n + 10:], near)
    assert np.array_equal(np.flatnonzero(got.is_duplicate), np.arange(n, n + 30))
    assert np.all(got.similarity[n:n + 10] > 0.9999)
    assert np.all((got.similarity[n + 10:] > 0.95) & (got.similarity[n + 10:] < 1.0))


def test_the_item_closest_to_the_centroid_represents_its_group():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(16).astype(np.float32)
    x = np.stack([base + 0.01 * rng.standard_normal(16) for _ in range(6)]).astype(np.float32)
    distance = np.array([0.5, 0.2, 0.9, 0.1, 0.3, 0.7], np.float32)
    keys = item_keys([f"g{i}" for i in range(6)])
    got = near_duplicates(np.zeros(6, int), keys, distance, x, threshold=0.99)
    assert np.array_equal(got.representative, np.full(6, 3))
    # different leaves never merge, however similar
    split = near_duplicates(np.array([0, 0, 0, 1, 1, 1]), keys, distance, x, threshold=0.99)
    assert set(split.representative.tolist()) == {1, 3}


def test_the_same_items_give_the_same_representatives_in_any_order():
    x, leaf, distance, keys = _pool(n=300, leaves=3)
    x, leaf, distance, keys = _with_copies(x, leaf, distance, keys, np.arange(0, 60), 0.2)
    # ties in distance: the key decides, not the row order
    distance[:20] = 0.5
    got = near_duplicates(leaf, keys, distance, x, threshold=0.9)
    assert got.removed > 20
    by_key = dict(zip(keys.tolist(), keys[got.representative].tolist(), strict=True))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(x))
        again = near_duplicates(leaf[perm], keys[perm], distance[perm], x[perm], threshold=0.9)
        assert dict(zip(keys[perm].tolist(), keys[perm][again.representative].tolist(),
                        strict=True)) == by_key
        assert np.allclose(again.similarity, got.similarity[perm])


def test_greedy_invariants_representatives_kept_and_apart():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((8, 24)).astype(np.float32)
    x = np.repeat(centres, 12, axis=0) + 0.3 * rng.standard_normal((96, 24)).astype(np.float32)
    keys = item_keys([f"i{i}" for i in range(96)])
    distance = rng.random(96).astype(np.float32)
    got = near_duplicates(np.zeros(96, int), keys, distance, x, threshold=0.9)
    reps = np.flatnonzero(~got.is_duplicate)
    dups = np.flatnonzero(got.is_duplicate)
    assert dups.size and reps.size
    assert not got.is_duplicate[got.representative].any()  # no chains
    xn = normalised(x)
    assert np.all(np.einsum("ij,ij->i", xn[dups], xn[got.representative[dups]]) > 0.9)
    # kept items are pairwise at or below the threshold (one run: the leaf is under the cap)
    sims = xn[reps] @ xn[reps].T
    np.fill_diagonal(sims, 0)
    assert sims.max() <= 0.9 + 1e-6
    # and each duplicate chose the most similar representative before it in the order
    order = np.lexsort((keys, distance))
    position = np.empty(96, int)
    position[order] = np.arange(96)
    for d in dups:
        earlier = reps[position[reps] < position[d]]
        best = earlier[np.argmax(xn[earlier] @ xn[d])]
        assert got.representative[d] == best


def test_threshold_edges():
    rng = np.random.default_rng(7)
    a = rng.standard_normal(16).astype(np.float32)
    b = a + 0.3 * rng.standard_normal(16).astype(np.float32)
    x = np.stack([a, b])
    s = float(normalised(x)[0] @ normalised(x)[1])
    keys = item_keys(["a", "b"])
    distance = np.array([0.0, 1.0], np.float32)
    assert near_duplicates([0, 0], keys, distance, x, s - 1e-4).removed == 1
    assert near_duplicates([0, 0], keys, distance, x, s + 1e-4).removed == 0
    with pytest.raises(ValidationError):
        DedupConfig(threshold=1.0)
    with pytest.raises(ValidationError):
        DedupConfig(threshold=0.0)
    with pytest.raises(ValidationError):
        DedupConfig(leaf_cap=1)
    assert DedupConfig().enabled is False


def test_a_leaf_over_the_cap_is_read_in_bounded_runs():
    """Runs of `leaf_cap` items in the canonical order; a pair across a run boundary is
    still found through the previous run's representatives."""
    rng = np.random.default_rng(11)
    n, cap = 50, 8
    x = rng.standard_normal((n, 32)).astype(np.float32)
    x[8] = x[7] + 1e-3  # positions 7 and 8 straddle the first boundary
    x[30] = x[29]
    requested = []

    def vectors_at(positions):
        requested.append(positions.size)
        return x[positions]

    rep, sim = dedup_ordered_leaf(vectors_at, n, threshold=0.95, leaf_cap=cap)
    assert max(requested) <= cap and len(requested) == -(-n // cap)
    assert rep[8] == 7 and rep[30] == 29
    assert np.count_nonzero(rep != np.arange(n)) == 2
    whole, _ = dedup_ordered_leaf(lambda p: x[p], n, threshold=0.95, leaf_cap=n)
    assert np.array_equal(rep, whole)
    # the bound is a formula of the config: it grows with the cap, not with a pool
    small, large = DedupConfig(leaf_cap=1024), DedupConfig(leaf_cap=4096)
    assert memory_bound(large, 384) > memory_bound(small, 384)
    assert memory_bound(large, 384) - memory_bound(small, 384) == (
        5 * 3072 * 384 * 4 + 256 * 2 * 3072 * 12)


# --- the pool's table, on a real LanceDB store (no Dagster) ----------------------------------


def _write_drop(store, drop, ids, x, leaf, distance):
    from curation.store import rows

    n = len(ids)
    common = {"item_id": ids, "drop": [drop] * n, "uri": ids}
    per_kind = {
        "embeddings": rows("embeddings", {**common, "vector": x, "model": ["precomputed"] * n,
                                          "model_hash": ["m"] * n}, dim=x.shape[1]),
        "assignments": rows("assignments", {**common, "distance": distance,
                                            "level_1": leaf.astype(np.int32),
                                            "fit_version": np.ones(n, np.int64),
                                            "item_key": item_keys(ids)}, n_levels=1),
    }
    for kind, data in per_kind.items():
        store.rewrite_drop(kind, drop, data)


def _fit(n_leaves):
    from types import SimpleNamespace

    return SimpleNamespace(fit_version=1, hierarchy=SimpleNamespace(
        centroids=[np.zeros((n_leaves, 8), np.float32)], parents=[], dim=8))


def _drops(seed=0, n=120, leaves=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x[n // 2:n // 2 + 20] = x[:20] * 1.001  # copies in the second half
    leaf = rng.integers(0, leaves, n)
    leaf[n // 2:n // 2 + 20] = leaf[:20]
    distance = rng.random(n).astype(np.float32)
    ids = [f"it-{i:04d}" for i in range(n)]
    half = n // 2
    return [("a", ids[:half], x[:half], leaf[:half], distance[:half]),
            ("b", ids[half:], x[half:], leaf[half:], distance[half:])]


def _table(store):
    return store.table("near_duplicates").to_arrow().sort_by("item_id").select(
        ["item_id", "leaf", "representative", "similarity"])


def test_the_pool_table_is_the_same_whatever_order_the_drops_arrived_in(tmp_path):
    from curation.dedup import dedup_pool
    from curation.store import PoolStore

    config = DedupConfig(enabled=True, threshold=0.99)
    tables = []
    for name, drops in (("forward", _drops()), ("backward", _drops()[::-1])):
        store = PoolStore.open_uri(str(tmp_path / name), "p")
        _write_drop(store, *drops[0])
        dedup_pool(store, _fit(6), config)  # the first drop alone, then both
        _write_drop(store, *drops[1])
        out = dedup_pool(store, _fit(6), config)
        assert out.removed == 20
        tables.append(_table(store))
    assert tables[0].equals(tables[1])


def test_only_changed_leaves_are_recomputed_and_a_lost_leaf_heals(tmp_path):
    from curation.dedup import dedup_pool
    from curation.store import PoolStore, delete_in

    store = PoolStore.open_uri(str(tmp_path / "db"), "p")
    config = DedupConfig(enabled=True, threshold=0.99)
    for drop in _drops():
        _write_drop(store, *drop)
    first = dedup_pool(store, _fit(6), config)
    assert first.leaves_recomputed == 6 and first.items_recomputed == 120
    assert dedup_pool(store, _fit(6), config).leaves_recomputed == 0
    # a drop of two items in leaf 3
    rng = np.random.default_rng(9)
    _write_drop(store, "c", ["new-0", "new-1"], rng.standard_normal((2, 8)).astype(np.float32),
                np.array([3, 3]), np.array([0.1, 0.2], np.float32))
    after = dedup_pool(store, _fit(6), config)
    assert after.leaves_recomputed == 1 and after.items_recomputed == after.items_per_leaf[3]
    # a crash between a leaf's delete and its append: the next run redoes that leaf alone
    before = _table(store)
    delete_in(store.table("near_duplicates"), "leaf", [2])
    healed = dedup_pool(store, _fit(6), config)
    assert healed.leaves_recomputed == 1 and _table(store).equals(before)
    # a new threshold recomputes every leaf
    assert dedup_pool(store, _fit(6), config.model_copy(
        update={"threshold": 0.999})).leaves_recomputed == 6
