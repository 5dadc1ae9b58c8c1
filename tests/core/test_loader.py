"""curation.loader over a subset table built by curation.subsets.select_subsets (no Dagster),
and select_subsets itself on a real LanceDB assignments table."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from curation import naming
from curation.config import SampleConfig
from curation.store import PoolStore
from curation.subsets import read_previous, select_subsets

PARENTS = [np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1])]


def _assignments(db, n=120, start=0, seed=0, fit_version=1, keys=None):
    rng = np.random.default_rng(seed)
    leaf = rng.integers(0, 6, n)
    ids = [f"it-{i}" for i in range(start, start + n)]
    rows = pa.table({
        "item_id": ids, "drop": ["d"] * n, "uri": [f"file:///x/{i}.png" for i in ids],
        "distance": pa.array(rng.random(n).astype(np.float32)),
        "level_1": pa.array(leaf.astype(np.int32)),
        "level_2": pa.array(PARENTS[0][leaf].astype(np.int32)),
        "level_3": pa.array(PARENTS[1][PARENTS[0][leaf]].astype(np.int32)),
        "fit_version": pa.array(np.full(n, fit_version, np.int64)),
    })
    if keys is not None:
        rows = rows.append_column("item_key", pa.array(keys(ids), pa.uint64()))
    try:
        table = db.open_table("p__assignments")
        table.add(rows)
    except (ValueError, FileNotFoundError):
        table = db.create_table("p__assignments", rows)
    return table


def _materialise(db, configs, batch_rows=17):
    previous = {name: read_previous(PoolStore(db, "p"), name, 6) for name in configs}
    scan = select_subsets(db.open_table("p__assignments"), PARENTS, 6, 1, configs,
                          previous=previous, batch_rows=batch_rows)
    for name, result in scan.subsets.items():
        db.create_table(naming.subset_table("p", name), result.rows, mode="overwrite")
    return scan


@pytest.fixture
def db(tmp_path):
    return lancedb.connect(str(tmp_path / "lancedb"))


def test_select_subsets_streams_batches_and_matches_in_memory_selection(db):
    from curation.selection import item_keys, select

    _assignments(db)
    _assignments(db, n=10, start=1000, fit_version=0)  # stale rows: excluded
    configs = {"r": SampleConfig(target_size=40, seed=3),
               "c": SampleConfig(target_size=30, strategy="closest", seed=1)}
    scan = _materialise(db, configs)
    assert scan.stale_excluded == 10 and scan.eligible == 120 and scan.rows == 130
    full = db.open_table("p__assignments").to_arrow()
    fresh = full.filter(pa.compute.equal(full["fit_version"], 1))
    keys = item_keys(fresh["item_id"])
    for name, config in configs.items():
        expected = select(fresh["level_1"].to_numpy(), keys, PARENTS, 6, config,
                          distance=fresh["distance"].to_numpy())
        got = scan.subsets[name]
        assert sorted(got.rows["item_key"].to_pylist()) == sorted(expected.key.tolist())
        uri = dict(zip(fresh["item_id"].to_pylist(), fresh["uri"].to_pylist(), strict=True))
        assert all(uri[i] == u for i, u in zip(got.rows["item_id"].to_pylist(),
                                                got.rows["uri"].to_pylist(), strict=True))
    # a second materialisation of an unchanged pool changes nothing
    again = _materialise(db, configs, batch_rows=50)
    assert again.subsets["r"].churn.as_dict()["left"] == 0
    assert again.subsets["r"].manifest["sha256"] == scan.subsets["r"].manifest["sha256"]


def test_cached_item_keys_give_the_same_selection_and_bad_ones_are_caught(tmp_path):
    from curation.selection import item_keys

    configs = {"r": SampleConfig(target_size=40, seed=3)}
    plain = lancedb.connect(str(tmp_path / "a"))
    _assignments(plain)
    cached = lancedb.connect(str(tmp_path / "b"))
    _assignments(cached, keys=item_keys)
    assert (_materialise(plain, configs).subsets["r"].manifest["sha256"]
            == _materialise(cached, configs).subsets["r"].manifest["sha256"])
    wrong = lancedb.connect(str(tmp_path / "c"))
    _assignments(wrong, keys=lambda ids: item_keys(ids)[::-1])
    with pytest.raises(ValueError, match="do not match"):
        _materialise(wrong, configs)


def test_dataset_reads_a_pinned_version_and_honours_weights(db, tmp_path):
    from curation.loader import CopiesSampler, SubsetDataset, subset_loader

    _assignments(db, n=60)
    _materialise(db, {"w": SampleConfig(target_size=150, multiplier=3, seed=0)})
    v1 = db.open_table(naming.subset_table("p", "w")).version
    _assignments(db, n=30, start=500)
    _materialise(db, {"w": SampleConfig(target_size=150, multiplier=3, seed=0)})
    uri = str(tmp_path / "lancedb")

    ds = SubsetDataset("p", "w", version=v1, lancedb=uri, load=lambda u: u.upper())
    assert ds.version == v1 and len(ds) == 60
    assert ds.item_ids == sorted(ds.item_ids)
    assert int(ds.weights.sum()) == 150 and set(ds.weights.tolist()) <= {1, 2, 3}
    assert len(set(ds.weights.tolist())) > 1
    first = ds[0]
    assert first["data"] == first["uri"].upper() and first["weight"] == ds.weights[0]
    latest = SubsetDataset("p", "w", lancedb=uri)
    assert latest.version > v1 and len(latest) > 60 and int(latest.weights.sum()) == 150

    exact = ds.sampler(seed=1, exact=True)
    assert isinstance(exact, CopiesSampler)
    counts = np.bincount(list(exact), minlength=len(ds))
    assert np.array_equal(counts, ds.weights)
    assert list(exact) == list(ds.sampler(seed=1, exact=True))  # seeded
    weighted = ds.sampler(seed=0)
    assert len(list(weighted)) == 150
    heavy, light = ds.weights == 3, ds.weights == 1
    many = np.bincount([i for s in range(20) for i in ds.sampler(seed=s)], minlength=len(ds))
    assert many[heavy].mean() > 2 * many[light].mean()  # drawn in proportion to weight
    batches = list(subset_loader(ds, batch_size=32, seed=0))
    assert sum(len(b["item_id"]) for b in batches) == 150


def test_unit_weights_shuffle_without_a_sampler(db, tmp_path):
    from curation.loader import SubsetDataset, subset_loader

    _assignments(db, n=80)
    _materialise(db, {"u": SampleConfig(target_size=20, seed=0)})
    ds = SubsetDataset("p", "u", lancedb=str(tmp_path / "lancedb"))
    assert ds.sampler() is None
    seen = [i for b in subset_loader(ds, batch_size=8, seed=0) for i in b["item_id"]]
    assert sorted(seen) == ds.item_ids and seen != ds.item_ids
