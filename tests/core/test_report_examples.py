"""The report's example members (curation.report.ClusterExamples): the largest, median and
smallest top-level clusters and a seeded sample of each, from one pass in batches."""

from __future__ import annotations

import numpy as np

from curation.report import ClusterExamples
from curation.selection import item_keys


def _pool(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.zipf(1.6, 40)  # a long tail of 40 top-level clusters (some empty below)
    top = rng.choice(40, n, p=sizes / sizes.sum())
    return item_keys([f"i{r}" for r in range(n)]), top


def test_examples_are_the_same_in_any_batches_and_order_and_stay_bounded():
    keys, top = _pool()
    whole = ClusterExamples(n_members=5, seed=3)
    whole.add(keys, top, np.arange(keys.size))
    expected = whole.result()
    sizes = np.bincount(top)
    present = np.flatnonzero(sizes)
    assert expected["largest"]["size"] == sizes.max()
    assert expected["smallest"]["size"] == sizes[present].min()
    for what, info in expected.items():
        assert (top[info["rows"]] == info["cluster"]).all(), what  # members of that cluster
        assert info["rows"].size == min(5, info["size"])
    rng = np.random.default_rng(1)
    streamed = ClusterExamples(n_members=5, seed=3)
    order = rng.permutation(keys.size)
    for part in np.array_split(order, 13):
        streamed.add(keys[part], top[part], part)
        assert streamed._kept[0].size <= 5 * present.size  # clusters x members, not the pool
    got = streamed.result()
    assert {w: (i["cluster"], i["size"], i["rows"].tolist()) for w, i in got.items()} == \
        {w: (i["cluster"], i["size"], i["rows"].tolist()) for w, i in expected.items()}
    other_seed = ClusterExamples(n_members=5, seed=4)
    other_seed.add(keys, top, np.arange(keys.size))
    assert other_seed.result()["largest"]["rows"].tolist() != expected["largest"]["rows"].tolist()


def test_an_empty_pool_has_no_examples():
    assert ClusterExamples().result() == {}
