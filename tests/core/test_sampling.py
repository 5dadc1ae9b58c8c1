import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.sampling import grouped_water_fill, sample_balanced, water_fill


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


@st.composite
def random_trees(draw):
    n = draw(st.integers(1, 400))
    k1 = draw(st.integers(1, 30))
    k2 = draw(st.integers(1, k1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    leaf = rng.integers(0, k1, n)
    parent = rng.integers(0, k2, k1)
    multiplier = draw(st.integers(1, 3))
    target = draw(st.integers(1, n * multiplier))
    return np.stack([leaf, parent[leaf]], axis=1), target, multiplier, seed


@settings(max_examples=200, deadline=None)
@given(random_trees(), st.sampled_from(["random", "closest"]))
def test_sample_balanced_invariants(tree, strategy):
    paths, target, multiplier, seed = tree
    distances = np.random.default_rng(seed).random(paths.shape[0])
    sel = sample_balanced(paths, target, strategy, seed, distances, multiplier)
    assert sel.size == target
    assert np.array_equal(sel.indices, np.unique(sel.indices))
    assert (sel.weights >= 1).all() and (sel.weights <= multiplier).all()
    # Top level: equal shares, except clusters too small to fill theirs.
    top = paths[:, -1]
    got = np.bincount(top[sel.indices], weights=sel.weights, minlength=top.max() + 1)
    capacity = np.bincount(top, minlength=top.max() + 1) * multiplier
    present = capacity > 0
    uncapped = got[present & (got < capacity)]
    if uncapped.size:
        assert uncapped.max() - uncapped.min() <= 1
        assert got[present].max() <= uncapped.min() + 1


def test_closest_strategy_takes_the_items_nearest_the_centroid():
    paths = np.zeros((10, 1), dtype=np.int64)
    distances = np.array([5, 1, 9, 0, 7, 3, 8, 2, 6, 4], dtype=float)
    sel = sample_balanced(paths, 3, "closest", seed=0, distances=distances)
    assert sel.indices.tolist() == [1, 3, 7]


def test_multiplier_returns_weights_not_duplicate_rows():
    paths = np.array([[0], [0], [1]])
    sel = sample_balanced(paths, 6, seed=0, multiplier=3)
    assert sel.indices.tolist() == [0, 1, 2]
    # Two top clusters share 6: cluster 1 (one item) takes 3 copies, cluster 0 the other 3.
    assert sel.weights[2] == 3 and sel.weights[:2].sum() == 3


def test_seed_decides_the_selection_and_is_reproducible():
    rng = np.random.default_rng(1)
    paths = np.stack([rng.integers(0, 50, 5000)], axis=1)
    paths = np.concatenate([paths, paths // 10], axis=1)
    a = sample_balanced(paths, 500, seed=3)
    b = sample_balanced(paths, 500, seed=3)
    c = sample_balanced(paths, 500, seed=4)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_repeated_child_ids_under_different_parents_stay_apart():
    # Children numbered per parent (0 under both parents) must not be merged.
    paths = np.array([[0, 0]] * 8 + [[0, 1]] * 2)
    sel = sample_balanced(paths, 4, seed=0)
    assert np.bincount(paths[sel.indices, 1]).tolist() == [2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_size": 11}, "exceeds what the pool can give"),
        ({"target_size": 0}, "target_size"),
        ({"target_size": 5, "strategy": "closest"}, "needs the distances"),
        ({"target_size": 5, "strategy": "farthest"}, "strategy"),
        ({"target_size": 5, "multiplier": 0}, "multiplier"),
    ],
)
def test_bad_sampling_requests_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_balanced(np.zeros((10, 2), dtype=np.int64), **kwargs)


def test_empty_pool_is_refused():
    with pytest.raises(ValueError, match="empty pool"):
        sample_balanced(np.zeros((0, 2), dtype=np.int64), 1)
