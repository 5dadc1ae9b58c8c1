"""Long-tailed demo drops built from the real Fashion-MNIST files."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
from PIL import Image

from curation.landing import SUCCESS_MARKER, validate_drop_id
from curation_demo.data import (
    build_fashion_mnist_drops,
    build_text_drops,
    load_fashion_mnist,
    read_idx,
    zipf_sizes,
)


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fashion_mnist_reader():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10


def test_zipf_sizes_are_long_tailed_and_exact():
    sizes = zipf_sizes(1000, 10, 1.2, np.random.default_rng(0))
    assert sizes.sum() == 1000 and sizes.min() >= 1
    ranked = np.sort(sizes)[::-1]
    assert ranked[0] / ranked[-1] > 10
    weights = 1 / np.arange(1, 11) ** 1.2
    expected = 1 + 990 * weights / weights.sum()  # one item per class, the rest by Zipf
    np.testing.assert_allclose(ranked, expected, atol=1)


def test_image_drops(tmp_path):
    drops = build_fashion_mnist_drops(tmp_path / "a", n_drops=3, n_items=300, seed=7)
    assert drops == ["fmnist-0000", "fmnist-0001", "fmnist-0002"]
    labels = rows(tmp_path / "a" / "labels.csv")
    assert len(labels) == 300
    pngs = sorted((tmp_path / "a").glob("*/*.png"))
    assert len(pngs) == 300
    for d in drops:
        validate_drop_id(d)
        assert (tmp_path / "a" / d / SUCCESS_MARKER).is_file()
        assert 99 <= len(list((tmp_path / "a" / d).glob("*.png"))) <= 101
    counts = np.bincount([int(r["label"]) for r in labels], minlength=10)
    assert counts.max() / counts.min() > 10  # long tail
    # the labels file names real 28x28 images, identified by the sha256 of their bytes
    by_name = {r["file"]: r for r in labels}
    images, train_labels = load_fashion_mnist("train")
    for p in pngs[:20]:
        row = by_name[p.name]
        data = p.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["item_id"]
        pixels = np.asarray(Image.open(io.BytesIO(data)))
        assert pixels.shape == (28, 28)
        match = np.flatnonzero((images == pixels).all(axis=(1, 2)))
        assert int(row["label"]) in train_labels[match].tolist()
    # seeded: same seed, same bytes; another seed, other images
    again = build_fashion_mnist_drops(tmp_path / "b", n_drops=3, n_items=300, seed=7)
    assert again == drops
    assert [p.read_bytes() for p in sorted((tmp_path / "b").glob("*/*.png"))] == [
        p.read_bytes() for p in pngs
    ]
    build_fashion_mnist_drops(tmp_path / "c", n_drops=3, n_items=300, seed=8)
    assert rows(tmp_path / "c" / "labels.csv") != labels


def test_text_drops(tmp_path):
    drops = build_text_drops(tmp_path, n_drops=2, n_items=200, seed=0)
    assert len(drops) == 2
    lines = []
    for d in drops:
        assert (tmp_path / d / SUCCESS_MARKER).is_file()
        lines += (tmp_path / d / "texts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 200 and len({r["id"] for r in records}) == 200
    labels = rows(tmp_path / "labels.csv")
    counts = np.bincount([int(r["label"]) for r in labels])
    assert counts.sum() == 200 and counts.max() / counts.min() > 5


def test_read_idx_rejects_other_files(tmp_path):
    import pytest

    bad = tmp_path / "x.idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)


def test_synthetic_vector_drops_with_and_without_labels(tmp_path):
    """The `demo` pool's drops (labels=False) hold item_id and vector only, as a web-scale
    SSL pool's do; labels=True adds the mixture component as a `label` column, the points
    unchanged."""
    import pyarrow.parquet as pq

    from curation_demo.synthetic import build_synthetic_drops

    def drop_table(labels: bool):
        (drop,) = build_synthetic_drops(tmp_path / str(labels), "demo", 1, 50, 8, seed=3,
                                        labels=labels)
        assert (tmp_path / str(labels) / "demo" / drop / SUCCESS_MARKER).exists()
        return pq.read_table(tmp_path / str(labels) / "demo" / drop / "part-0.parquet")

    bare, labelled = drop_table(False), drop_table(True)
    assert bare.column_names == ["item_id", "vector"]
    assert labelled.column_names == ["item_id", "vector", "label"]
    assert labelled["label"].null_count == 0 and len(set(labelled["label"].to_pylist())) > 1
    assert bare["vector"].to_pylist() == labelled["vector"].to_pylist()
    assert bare["item_id"].to_pylist() == labelled["item_id"].to_pylist()
