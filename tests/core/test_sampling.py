import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.config import HierarchyConfig, SampleConfig
from curation.hierarchy import Hierarchy
from curation.sampling import grouped_water_fill, water_fill
from curation.selection import sample_rows, tree_paths


@st.composite
def groups_and_quotas(draw):
    n_groups = draw(st.integers(1, 6))
    caps = draw(st.lists(st.integers(0, 40), min_size=n_groups, max_size=40))
    groups = [draw(st.integers(0, n_groups - 1)) for _ in caps]
    totals = np.bincount(groups, weights=caps, minlength=n_groups).astype(int)
    quotas = [draw(st.integers(0, int(t))) for t in totals]
    return np.array(groups), np.array(caps), np.array(quotas), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=300, deadline=None)
@given(groups_and_quotas())
def test_grouped_water_fill_invariants(case):
    groups, caps, quotas, seed = case
    got = grouped_water_fill(groups, caps, quotas, np.random.default_rng(seed))
    assert (got >= 0).all() and (got <= caps).all()
    for g, quota in enumerate(quotas):
        members = got[groups == g]
        assert members.sum() == quota
        uncapped = members[members < caps[groups == g]]
        if uncapped.size:
            assert uncapped.max() - uncapped.min() <= 1
            # Nobody, capped or not, gets more than the water level + 1.
            assert (members <= uncapped.min() + 1).all()


def test_water_fill_examples():
    rng = np.random.default_rng(0)
    assert water_fill([1, 5, 10, 100], 50, rng).tolist() == [1, 5, 10, 34]
    assert water_fill([3, 3, 3], 9, rng).tolist() == [3, 3, 3]
    assert sorted(water_fill([3, 3, 3], 7, rng).tolist()) == [2, 2, 3]
    assert water_fill([0, 4, 2], 5, rng).tolist() == [0, 3, 2]
    with pytest.raises(ValueError, match="holds only"):
        water_fill([1, 2], 4, rng)


def tree(parents: list, n_clusters: list[int]) -> Hierarchy:
    """A fitted tree's shape (the sampler reads only parents and cluster counts)."""
    centroids = [np.zeros((k, 1), np.float32) for k in n_clusters]
    return Hierarchy(HierarchyConfig(n_clusters=n_clusters), centroids,
                     [np.asarray(p, np.int64) for p in parents])


def flat(n_leaves: int) -> Hierarchy:
    return tree([], [n_leaves])


@st.composite
def random_trees(draw):
    n = draw(st.integers(1, 400))
    k1 = draw(st.integers(2, 30))
    k2 = draw(st.integers(1, k1 - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    leaf = rng.integers(0, k1, n)
    parent = rng.integers(0, k2, k1)
    multiplier = draw(st.integers(1, 3))
    target = draw(st.integers(1, n * multiplier))
    return tree([parent], [k1, k2]), leaf, target, multiplier, seed


@settings(max_examples=200, deadline=None)
@given(random_trees(), st.sampled_from(["random", "closest"]))
def test_sample_rows_invariants(case, strategy):
    hierarchy, leaf, target, multiplier, seed = case
    distances = np.random.default_rng(seed).random(leaf.size)
    config = SampleConfig(target_size=target, strategy=strategy, seed=seed,
                          multiplier=multiplier)
    sel = sample_rows(hierarchy, leaf, config, distance=distances)
    assert sel.size == target
    assert np.array_equal(sel.indices, np.unique(sel.indices))
    assert (sel.weights >= 1).all() and (sel.weights <= multiplier).all()
    # Top level: equal shares, except clusters too small to fill theirs.
    top = tree_paths(hierarchy.parents, leaf)[:, -1]
    got = np.bincount(top[sel.indices], weights=sel.weights, minlength=top.max() + 1)
    capacity = np.bincount(top, minlength=top.max() + 1) * multiplier
    present = capacity > 0
    uncapped = got[present & (got < capacity)]
    if uncapped.size:
        assert uncapped.max() - uncapped.min() <= 1
        assert got[present].max() <= uncapped.min() + 1


def test_closest_strategy_takes_the_items_nearest_the_centroid():
    distances = np.array([5, 1, 9, 0, 7, 3, 8, 2, 6, 4], dtype=float)
    config = SampleConfig(target_size=3, strategy="closest")
    sel = sample_rows(flat(1), np.zeros(10, np.int64), config, distance=distances)
    assert sel.indices.tolist() == [1, 3, 7]


def test_multiplier_returns_weights_not_duplicate_rows():
    sel = sample_rows(flat(2), np.array([0, 0, 1]), SampleConfig(target_size=6, multiplier=3))
    assert sel.indices.tolist() == [0, 1, 2]
    # Two clusters share 6: cluster 1 (one item) takes 3 copies, cluster 0 the other 3.
    assert sel.weights[2] == 3 and sel.weights[:2].sum() == 3


def test_seed_decides_the_selection_and_is_reproducible():
    leaf = np.random.default_rng(1).integers(0, 50, 5000)
    hierarchy = tree([np.arange(50) // 10], [50, 5])
    a, b, c = (sample_rows(hierarchy, leaf, SampleConfig(target_size=500, seed=seed))
               for seed in (3, 3, 4))
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_item_ids_key_the_draw_and_default_to_row_numbers():
    leaf = np.random.default_rng(2).integers(0, 20, 2000)
    hierarchy = tree([np.arange(20) // 5], [20, 4])
    config = SampleConfig(target_size=300, seed=9)
    default = sample_rows(hierarchy, leaf, config)
    by_row = sample_rows(hierarchy, leaf, config, [str(i) for i in range(leaf.size)])
    named = sample_rows(hierarchy, leaf, config, [f"item-{i}" for i in range(leaf.size)])
    assert np.array_equal(default.indices, by_row.indices)
    assert not np.array_equal(default.indices, named.indices)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_size": 11}, "exceeds what the pool can give"),
        ({"target_size": 5, "strategy": "closest"}, "needs the distances"),
        ({"target_size": 5, "item_ids": ["a", "b"]}, "2 item ids for 10 items"),
        ({"target_size": 5, "leaf": np.full(10, 7)}, "leaf ids must lie in 0..1"),
    ],
)
def test_bad_sampling_requests_fail_clearly(kwargs, message):
    leaf = kwargs.pop("leaf", np.zeros(10, np.int64))
    item_ids = kwargs.pop("item_ids", None)
    with pytest.raises(ValueError, match=message):
        sample_rows(flat(2), leaf, SampleConfig(**kwargs), item_ids)


def test_empty_pool_is_refused():
    with pytest.raises(ValueError, match="exceeds what the pool can give: 0 items"):
        sample_rows(flat(2), np.zeros(0, np.int64), SampleConfig(target_size=1))
