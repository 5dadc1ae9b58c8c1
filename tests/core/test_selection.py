"""curation.selection: quotas, bottom-k by keyed hash, order-freedom, stability, churn."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.config import SampleConfig
from curation.hashing import sorted_ids_sha256
from curation.selection import (
    LeafSelector,
    churn,
    item_keys,
    leaf_quotas,
    manifest,
    rank_hash,
    select,
    tree_paths,
)


def _tree(rng, n_leaves=40, n_mid=8, n_top=3):
    mid = np.concatenate([np.arange(n_mid), rng.integers(0, n_mid, n_leaves - n_mid)])
    top = np.concatenate([np.arange(n_top), rng.integers(0, n_top, n_mid - n_top)])
    return [mid, top]


def _pool(seed, n=5000, n_leaves=40, skew=True):
    rng = np.random.default_rng(seed)
    parents = _tree(rng, n_leaves)
    p = np.arange(1, n_leaves + 1, dtype=float) ** (-1.2 if skew else 0.0)
    leaf = rng.choice(n_leaves, size=n, p=p / p.sum())
    ids = [f"s{seed}-{i}" for i in range(n)]
    return ids, item_keys(ids), leaf, parents, rng.random(n).astype(np.float32)


def _as_map(sel):
    return dict(zip(sel.key.tolist(), zip(sel.weight.tolist(), sel.rank.tolist(),
                                          strict=True), strict=True))


def test_item_key_is_blake2b_8_little_endian_for_lists_and_arrow():
    ids = ["a", "", "é-日本", "item-42"]
    expected = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                for i in ids]
    assert item_keys(ids).tolist() == expected
    assert item_keys(pa.array(ids)).tolist() == expected
    assert item_keys(pa.chunked_array([ids[:2], ids[2:]])).tolist() == expected
    with pytest.raises(ValueError, match="null"):
        item_keys(pa.array(["a", None]))


def test_rank_hash_depends_on_seed_and_key_only():
    keys = item_keys([f"x{i}" for i in range(1000)])
    assert np.array_equal(rank_hash(keys, 7), rank_hash(keys.copy(), 7))
    assert np.array_equal(rank_hash(keys[::-1], 7), rank_hash(keys, 7)[::-1])
    assert np.mean(rank_hash(keys, 7) == rank_hash(keys, 8)) < 0.01
    # roughly uniform: the top bit is set for about half the keys
    assert 0.4 < np.mean(rank_hash(keys, 7) >> np.uint64(63)) < 0.6


def test_quotas_sum_to_target_balance_top_level_and_fit_capacity():
    ids, keys, leaf, parents, _ = _pool(0)
    sizes = np.bincount(leaf, minlength=40)
    quotas = leaf_quotas(sizes, parents, SampleConfig(target_size=900, seed=1))
    assert [int(q.sum()) for q in quotas] == [900, 900, 900]
    assert quotas[-1].max() - quotas[-1].min() <= 1  # equal top-level shares
    assert np.all(quotas[0] <= sizes)
    sel = select(leaf, keys, parents, 40, SampleConfig(target_size=900, seed=1))
    assert sel.size == len(sel) == 900
    assert np.array_equal(np.bincount(sel.leaf, minlength=40), quotas[0])
    paths = tree_paths(parents, sel.leaf)
    assert np.array_equal(np.bincount(paths[:, -1], minlength=3), quotas[-1])
    with pytest.raises(ValueError, match="exceeds"):
        leaf_quotas(sizes, parents, SampleConfig(target_size=5001))


def test_bottom_k_takes_the_lowest_hashes_and_closest_the_lowest_distances():
    ids, keys, leaf, parents, dist = _pool(1)
    config = SampleConfig(target_size=700, seed=5)
    sel = select(leaf, keys, parents, 40, config)
    h = rank_hash(keys, 5)
    for lf in np.unique(sel.leaf):
        members = np.flatnonzero(leaf == lf)
        k = int(np.sum(sel.leaf == lf))
        best = members[np.argsort(h[members], kind="stable")[:k]]
        assert set(keys[best].tolist()) == set(sel.key[sel.leaf == lf].tolist())
    close = select(leaf, keys, parents, 40, config.model_copy(update={"strategy": "closest"}),
                   distance=dist)
    for lf in np.unique(close.leaf):
        members = np.flatnonzero(leaf == lf)
        taken = close.payload[close.leaf == lf].astype(np.int64)
        rest = np.setdiff1d(members, taken)
        if rest.size:
            assert dist[taken].max() <= dist[rest].min()
        assert np.all(np.diff(dist[taken]) >= 0)  # rank 0 is the closest


def test_multiplier_gives_weights_not_rows():
    ids, keys, leaf, parents, _ = _pool(2, n=600)
    sel = select(leaf, keys, parents, 40, SampleConfig(target_size=1500, multiplier=3, seed=0))
    assert sel.size == 1500 and len(sel) == len(np.unique(sel.key))
    assert sel.weight.min() >= 1 and sel.weight.max() <= 3
    # inside a leaf, weights never increase with rank
    for lf in np.unique(sel.leaf):
        w = sel.weight[sel.leaf == lf]
        assert np.all(np.diff(w) <= 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 2000), st.sampled_from(["random", "closest"]),
       st.integers(1, 7), st.integers(0, 1000))
def test_selection_is_independent_of_row_order_and_batching(perm_seed, target, strategy,
                                                            batch, seed):
    ids, keys, leaf, parents, dist = _pool(3, n=2000)
    config = SampleConfig(target_size=target, strategy=strategy, seed=seed)
    base = select(leaf, keys, parents, 40, config, distance=dist)
    perm = np.random.default_rng(perm_seed).permutation(leaf.size)
    sizes = np.bincount(leaf, minlength=40)
    selector = LeafSelector(base.leaf_quota, sizes, config, min_buffer=64)
    step = max(1, leaf.size // batch)
    for i in range(0, leaf.size, step):
        rows = perm[i:i + step]
        selector.add(leaf[rows], keys[rows], rows.astype(np.uint64), dist[rows])
    shuffled = selector.result()
    assert _as_map(shuffled) == _as_map(base)
    assert np.array_equal(np.sort(shuffled.payload), np.sort(base.payload))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 39), st.integers(1, 300), st.integers(0, 100))
def test_growing_one_leaf_changes_only_what_the_quotas_and_newcomers_force(target_leaf, added,
                                                                           seed):
    ids, keys, leaf, parents, _ = _pool(4, n=3000)
    config = SampleConfig(target_size=600, seed=seed)
    before = select(leaf, keys, parents, 40, config)
    new_keys = item_keys([f"new-{seed}-{i}" for i in range(added)])
    after = select(np.concatenate([leaf, np.full(added, target_leaf)]),
                   np.concatenate([keys, new_keys]), parents, 40, config)
    changed_quota = set(np.flatnonzero(before.leaf_quota != after.leaf_quota).tolist())
    for lf in range(40):
        old = set(before.key[before.leaf == lf].tolist())
        new = set(after.key[after.leaf == lf].tolist())
        if lf not in changed_quota and lf != target_leaf:
            assert old == new  # untouched leaves keep exactly their items
        if lf == target_leaf:
            if after.leaf_taken[lf] <= before.leaf_taken[lf]:
                assert new - old <= set(new_keys.tolist())  # only newcomers enter
            if after.leaf_quota[lf] >= before.leaf_quota[lf]:
                assert len(old - new) == len(new - old) - (
                    after.leaf_taken[lf] - before.leaf_taken[lf])  # ...each displacing one
        elif after.leaf_taken[lf] <= before.leaf_taken[lf]:
            assert new <= old  # a shrinking leaf only loses items (its lowest-ranked)
        else:
            assert old <= new
    c = churn(before.key, before.leaf, after, previous_leaf_size=before.leaf_size)
    assert c.left >= c.forced_minimum
    assert c.left <= c.fair_minimum + 1 + 2 * np.sqrt(max(c.fair_minimum, 1)) + added


def test_churn_after_adding_one_percent_is_within_twice_the_fair_minimum():
    ids, keys, leaf, parents, _ = _pool(5, n=20000, skew=True)
    config = SampleConfig(target_size=2000, seed=3)
    before = select(leaf, keys, parents, 40, config)
    rng = np.random.default_rng(9)
    new_leaf = rng.choice(leaf, size=200)  # a 1% drop distributed like the pool
    new_keys = item_keys([f"drop2-{i}" for i in range(200)])
    after = select(np.concatenate([leaf, new_leaf]), np.concatenate([keys, new_keys]), parents,
                   40, config)
    c = churn(before.key, before.leaf, after, previous_leaf_size=before.leaf_size)
    assert c.left == c.entered and c.left > 0
    assert c.forced_minimum <= c.left <= 2 * c.fair_minimum
    assert c.left < 0.05 * len(after)  # a redraw would replace most of the subset
    same = churn(before.key, before.leaf, before, previous_leaf_size=before.leaf_size)
    assert (same.left, same.entered, same.forced_minimum) == (0, 0, 0)


def test_manifest_hash_of_sorted_ids_is_order_free_and_matches_newline_join():
    ids = [f"id-{i}" for i in range(70000)]
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    assert sorted_ids_sha256(ids[::-1]) == digest
    assert sorted_ids_sha256(pa.array(ids)) == digest
    m = manifest(ids, np.ones(len(ids)), SampleConfig(target_size=5, seed=2), 3, {"a": 4})
    assert m.as_dict()["sha256"] == digest and m.count == 70000 and m.seed == 2
    assert '"table_versions": {"a": 4}' in m.to_json()
