"""The messy-pool generator of benchmarks/bench_quality.py (curation_demo.data): long tail plus
near copies in the head classes, seeded, content unique."""

import numpy as np
import pytest

from curation_demo.data import (
    NEAR_DUPLICATE_MAX_COPIES,
    messy_fashion_mnist,
    messy_texts,
    near_duplicate_sources,
    perturb_image,
)


def test_copies_come_from_the_largest_classes_in_the_stated_share():
    labels = np.repeat(np.arange(8), [300, 200, 150, 100, 60, 30, 20, 10])
    sources = near_duplicate_sources(labels, np.random.default_rng(1), classes=3, share=0.5)
    assert set(labels[sources]) == {0, 1, 2}
    for cls, size in ((0, 300), (1, 200), (2, 150)):
        picked, copies = np.unique(sources[labels[sources] == cls], return_counts=True)
        assert picked.size == size // 2
        assert copies.min() >= 1 and copies.max() <= NEAR_DUPLICATE_MAX_COPIES
    again = near_duplicate_sources(labels, np.random.default_rng(1), classes=3, share=0.5)
    assert np.array_equal(sources, again)


def test_a_perturbed_image_stays_close_but_differs():
    from curation_demo.data import load_fashion_mnist

    images, _ = load_fashion_mnist("train")
    for pixels in images[:20]:
        copy = perturb_image(pixels, np.random.default_rng(3))
        assert copy.dtype == np.uint8 and copy.shape == pixels.shape
        assert not np.array_equal(copy, pixels)
        assert np.corrcoef(copy.ravel(), pixels.ravel())[0, 1] > 0.95


def test_messy_texts_are_unique_seeded_and_point_at_their_originals():
    texts, labels, source = messy_texts(600, seed=0)
    assert len(set(texts)) == len(texts)
    copies = np.flatnonzero(source >= 0)
    assert copies.size > 0 and (source[source >= 0] < copies.min()).all()  # originals first
    assert (labels[copies] == labels[source[copies]]).all()
    for row in copies[:20]:
        assert texts[row] != texts[source[row]]
        assert texts[row].lower().strip(' ."!') == texts[source[row]].lower().strip(' ."!') \
            or texts[row].replace("  ", " ") == texts[source[row]]
    again = messy_texts(600, seed=0)
    assert again[0] == texts and np.array_equal(again[2], source)
    assert messy_texts(600, seed=1)[0] != texts


def test_messy_fashion_copies_are_near_their_originals():
    pytest.importorskip("PIL")
    from io import BytesIO

    from PIL import Image

    pngs, labels, source = messy_fashion_mnist(300, seed=0)
    assert len(set(pngs)) == len(pngs)
    copies = np.flatnonzero(source >= 0)
    assert copies.size > 0
    counts = np.bincount(labels, minlength=10)
    assert counts.max() > 5 * max(counts.min(), 1)  # long-tailed

    def pixels(b):
        return np.asarray(Image.open(BytesIO(b)), dtype=np.float32).ravel()

    originals = np.flatnonzero(source < 0)
    for row in copies[:10]:
        own = np.corrcoef(pixels(pngs[row]), pixels(pngs[source[row]]))[0, 1]
        same_class = [o for o in originals if labels[o] == labels[row] and o != source[row]]
        others = [np.corrcoef(pixels(pngs[row]), pixels(pngs[o]))[0, 1] for o in same_class[:30]]
        assert own > 0.95 and own > max(others)  # nearer its original than any other item
