"""Settings that fit the embedder: each embedder declares the metric its space is made for, a
pool follows it unless its hierarchy sets one, and cluster counts have a rule from the pool
size (curation.config.suggest_levels)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.config import HierarchyConfig, suggest_levels
from curation.embedding import SPACE_METRICS, EmbedderSpec, make_embedder
from curation.pools import PoolConfig, SubsetSpec, load_pools

SUBSETS = [SubsetSpec(name="even", target_size=10)]


def pool(modality: str, hierarchy) -> PoolConfig:
    return PoolConfig(name="p", modality=modality, dim=8 if modality == "vectors" else None,
                      hierarchy=hierarchy, subsets=SUBSETS)


def test_each_embedder_declares_the_metric_of_its_space():
    assert EmbedderSpec(kind="text").metric == "cosine"  # MiniLM: normalised embeddings
    assert EmbedderSpec(kind="image").metric == "cosine"  # measured, docs/EMBEDDERS.md
    assert EmbedderSpec(kind="vectors", dim=8).metric == "l2"  # unknown producer
    assert SPACE_METRICS == {"image": "cosine", "text": "cosine", "vectors": "l2"}
    # the built embedders say it too (nothing is loaded to build them)
    assert make_embedder(EmbedderSpec(kind="text")).metric == "cosine"
    assert make_embedder(EmbedderSpec(kind="image", image_size=64)).metric == "cosine"
    assert make_embedder(EmbedderSpec(kind="vectors", dim=8)).metric == "l2"


@pytest.mark.parametrize("modality, expected", [("texts", "cosine"), ("images", "cosine"),
                                                ("vectors", "l2")])
def test_a_pool_without_a_metric_follows_its_embedder(modality, expected):
    from_yaml = pool(modality, {"n_clusters": [4, 2]})
    from_model = pool(modality, HierarchyConfig(n_clusters=[4, 2]))
    null = pool(modality, {"n_clusters": [4, 2], "metric": None})
    assert from_yaml.hierarchy.metric == from_model.hierarchy.metric == expected
    assert null.hierarchy.metric == expected
    # resolved once: a dump read back is the same config (and the same refit signature)
    again = PoolConfig.model_validate(from_yaml.model_dump())
    assert again.hierarchy == from_yaml.hierarchy
    assert f'"metric":"{expected}"' in from_yaml.hierarchy.model_dump_json()


@pytest.mark.parametrize("modality", ["texts", "images", "vectors"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_a_metric_the_pool_sets_is_kept(modality, metric):
    assert pool(modality, {"n_clusters": [4, 2], "metric": metric}).hierarchy.metric == metric
    explicit = HierarchyConfig(n_clusters=[4, 2], metric=metric)
    assert pool(modality, explicit).hierarchy == explicit


def test_bundled_pools_text_and_images_become_cosine_vectors_stay_l2():
    metrics = {p.name: p.hierarchy.metric for p in load_pools()}
    assert metrics == {"demo": "l2", "fashion": "cosine", "texts": "cosine"}


def test_a_followed_cosine_metric_fits_a_spherical_tree():
    """The resolved metric reaches the fit: cosine normalises the rows and the centroids."""
    from curation.hierarchy import fit_hierarchy

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 8)) * rng.uniform(1, 20, size=(400, 1))).astype(np.float32)
    config = pool("texts", {"n_clusters": [8, 2], "resampling_steps": [1], "seed": 0,
                            "device": "cpu"}).hierarchy
    fit = fit_hierarchy(x, config)
    norms = np.linalg.norm(fit.hierarchy.centroids[0], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    plain = fit_hierarchy(x, pool("vectors", {"n_clusters": [8, 2], "resampling_steps": [1],
                                              "seed": 0, "device": "cpu"}).hierarchy)
    assert not np.allclose(np.linalg.norm(plain.hierarchy.centroids[0], axis=1), 1.0,
                           atol=1e-2)


# ---- cluster counts from the pool size ----------------------------------------------------------

def test_suggest_levels_follows_the_documented_rule():
    from curation.config import (
        ITEMS_PER_LEAF,
        LEVEL_RATIO,
        MAX_LEVELS,
        MIN_ITEMS_PER_LEAF,
        MIN_TOP_CLUSTERS,
    )

    for n in (2, 10, 100, 281, 600, 4_000, 8_000, 100_000, 1_000_000, 10_000_000, 10**9):
        levels = suggest_levels(n)
        HierarchyConfig(n_clusters=levels)  # strictly decreasing, >= 1: a valid tree
        assert 2 <= len(levels) <= MAX_LEVELS and levels[0] <= max(2, n // 2)
        # about ITEMS_PER_LEAF per leaf; smaller leaves (>= MIN_ITEMS_PER_LEAF) in small pools
        assert levels[0] >= round(n / ITEMS_PER_LEAF)
        if levels[0] > max(2, round(n / ITEMS_PER_LEAF)):
            assert n / levels[0] >= MIN_ITEMS_PER_LEAF
        for below, above in zip(levels[1:], levels[2:], strict=False):
            assert above == round(below / LEVEL_RATIO) and above >= MIN_TOP_CLUSTERS
    assert suggest_levels(10**6) == [25_000, 2_500, 250, 25]
    assert suggest_levels(8_000) == [200, 20]  # the fashion demo's 8,000 images
    assert suggest_levels(600) == [60, 10]  # the texts demo's 600 texts
    assert suggest_levels(281) == [28, 10]  # ... 281 once duplicates are dropped
    assert suggest_levels(100) == [10, 5]
    assert suggest_levels(2) == [2, 1]
    assert suggest_levels(50_000, items_per_leaf=100, ratio=5) == [500, 100, 20]


@pytest.mark.parametrize("bad", [dict(n_items=1), dict(n_items=10, items_per_leaf=0),
                                 dict(n_items=10, ratio=1), dict(n_items=10, max_levels=1)])
def test_suggest_levels_rejects_bad_inputs(bad):
    with pytest.raises(ValueError):
        suggest_levels(**bad)
