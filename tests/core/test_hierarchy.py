import numpy as np
import pytest
from pydantic import ValidationError

from curation.config import HierarchyConfig, SampleConfig
from curation.hierarchy import Hierarchy, fit_hierarchy
from curation.metrics import kl_to_uniform, selection_label_stats
from curation.selection import sample_rows
from curation_demo.synthetic import long_tailed_grid, long_tailed_mixture


@pytest.fixture(scope="module")
def pool():
    # A smaller cousin of the reference pool (docs/METHOD.md): Zipf-sized Gaussian components.
    return long_tailed_mixture(n=8000, dim=32, n_components=80, zipf=1.1, seed=0)


def config(**overrides):
    base = {
        "n_clusters": [400, 80, 20],
        "resampling_steps": [10],
        "sample_sizes": [10, 3, 2],
        "seed": 0,
    }
    base.update(overrides)
    return HierarchyConfig(**base)


@pytest.fixture(scope="module")
def fitted(pool):
    return fit_hierarchy(pool[0], config())


def draw(fit, target, seed):
    """The balanced random selection of `target` items (copies) from a fitted pool."""
    return sample_rows(fit.hierarchy, fit.assignment.leaf,
                       SampleConfig(target_size=target, seed=seed))


def mean_kl(x, labels, n_labels, cfg, target=2000, fit_seeds=range(3)):
    """KL to uniform of curated selections, averaged over fit and sampling seeds."""
    values = []
    for fit_seed in fit_seeds:
        fit = fit_hierarchy(x, cfg.model_copy(update={"seed": fit_seed}))
        for seed in range(2):
            sel = draw(fit, target, seed)
            values.append(kl_to_uniform(labels[sel.indices], n_labels))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def toy():
    # A 2-D toy like the paper's (docs/METHOD.md): 25 touching concepts with Zipf masses.
    return long_tailed_grid(n=20000, side=5, zipf=1.3, seed=0)


@pytest.mark.parametrize("levels", [([25], [50]), ([100, 25], [10, 3])])
def test_resampling_flattens_beyond_the_same_hierarchy_without_it(toy, levels):
    x, labels = toy
    ks, sizes = levels
    with_resampling = HierarchyConfig(n_clusters=ks, sample_sizes=sizes, resampling_steps=[10])
    without = with_resampling.model_copy(update={"resampling_steps": [0]})
    kl_with = mean_kl(x, labels, 25, with_resampling)
    kl_without = mean_kl(x, labels, 25, without)
    assert kl_with < 0.9 * kl_without


def test_toy_2d_kl_to_uniform_is_far_below_random(toy):
    x, labels = toy
    cfg = HierarchyConfig(n_clusters=[300, 100, 25], sample_sizes=[10, 3, 2], resampling_steps=[10])
    curated = mean_kl(x, labels, 25, cfg, fit_seeds=[0])
    rng = np.random.default_rng(0)
    uniform = np.mean(
        [kl_to_uniform(labels[rng.choice(len(x), 2000, replace=False)], 25) for _ in range(3)]
    )
    assert uniform > 0.8  # the pool really is long-tailed
    assert curated < 0.2 * uniform


def test_curated_selection_beats_random_on_label_entropy(pool, fitted):
    x, labels = pool
    sel = draw(fitted, 2000, seed=0)
    curated = selection_label_stats(labels[sel.indices])
    rng = np.random.default_rng(0)
    uniform = selection_label_stats(labels[rng.choice(len(x), 2000, replace=False)])
    assert curated["label_entropy"] > uniform["label_entropy"] + 0.5
    assert curated["labels_hit"] == 80
    assert curated["top1_share"] < 0.5 * uniform["top1_share"]


def test_centered_cosine_upper_levels_beat_l2_on_high_dimensional_concepts(pool):
    # Unrelated concepts' centroids are near-equidistant in 32-D: L2 k-means on them makes a
    # giant cluster plus singletons; clustering their directions from the mean does not.
    x, labels = pool

    def entropy(upper_metric):
        values = []
        for seed in range(2):
            fit = fit_hierarchy(x, config(seed=seed, upper_metric=upper_metric))
            sel = draw(fit, 2000, seed)
            values.append(selection_label_stats(labels[sel.indices])["label_entropy"])
        return np.mean(values)

    assert entropy("centered-cosine") > entropy("same") + 0.05


def test_centered_cosine_keeps_upper_centroids_in_data_space(pool):
    x, _ = pool
    fit = fit_hierarchy(x, config(upper_metric="centered-cosine", resampling_steps=[1]))
    h = fit.hierarchy
    for level in (1, 2):  # every upper centroid is the mean of its children
        children = h.centroids[level - 1]
        for c in np.unique(h.parents[level - 1])[:5]:
            members = children[h.parents[level - 1] == c]
            np.testing.assert_allclose(h.centroids[level][c], members.mean(0), rtol=1e-4, atol=1e-4)
    # Level 1 is untouched by the option: same leaves as the plain fit with the same seed.
    plain = fit_hierarchy(x, config(resampling_steps=[1]))
    assert np.array_equal(plain.assignment.leaf, fit.assignment.leaf)


def test_same_seed_bit_identical_another_seed_differs(pool, fitted):
    x, _ = pool
    again = fit_hierarchy(x, config())
    for a, b in zip(fitted.hierarchy.centroids, again.hierarchy.centroids, strict=True):
        assert a.tobytes() == b.tobytes()
    assert np.array_equal(fitted.assignment.paths, again.assignment.paths)
    other = fit_hierarchy(x, config(seed=1))
    assert fitted.hierarchy.centroids[0].tobytes() != other.hierarchy.centroids[0].tobytes()


def test_tree_is_consistent(fitted):
    h, a = fitted.hierarchy, fitted.assignment
    assert [c.shape[0] for c in h.centroids] == [400, 80, 20]
    assert [p.shape[0] for p in h.parents] == [400, 80]
    for level in range(2):
        assert np.array_equal(a.paths[:, level + 1], h.parents[level][a.paths[:, level]])
    for report in fitted.levels:
        assert report.sizes.sum() == a.leaf.size
        assert report.stats["n_clusters"] == h.centroids[report.level - 1].shape[0]
        assert report.objective


def test_assign_reproduces_the_fit_and_save_load_roundtrips(pool, fitted, tmp_path):
    x, _ = pool
    fitted.hierarchy.save(tmp_path)
    loaded = Hierarchy.load(tmp_path)
    again = loaded.assign(x)
    assert (again.leaf == fitted.assignment.leaf).mean() > 0.999
    assert np.array_equal(again.paths, loaded.paths(again.leaf))


def test_warm_start_refit_keeps_structure(pool, fitted):
    x, _ = pool
    warm = fit_hierarchy(x, config(resampling_steps=[0]), fitted.hierarchy.centroids)
    assert warm.levels[0].objective[-1] <= fitted.levels[0].objective[-1] * 1.01


def test_cosine_mode_normalises(pool):
    x, _ = pool
    fit = fit_hierarchy(x * 10, config(metric="cosine", resampling_steps=[1]))
    norms = np.linalg.norm(fit.hierarchy.centroids[0], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    assert fit.assignment.distance.max() <= 4.0 + 1e-4


def test_level1_split_and_fit_sample(pool):
    x, _ = pool
    split = fit_hierarchy(x, config(level1_split=4, resampling_steps=[1]))
    assert split.hierarchy.centroids[0].shape == (400, 32)
    sampled = fit_hierarchy(x, config(fit_sample_size=3000, resampling_steps=[1]))
    assert sampled.assignment.leaf.size == len(x)
    assert sampled.levels[0].sizes.sum() == len(x)


@pytest.mark.parametrize(
    ("points", "cfg", "message"),
    [
        (np.full((100, 4), np.nan, dtype=np.float32), {}, "NaN or Inf"),
        (np.zeros((0, 4), dtype=np.float32), {}, "at least 1"),
        (np.zeros((50, 4), dtype=np.float32), {}, "exceeds the 50 points"),
        (np.zeros(10, dtype=np.float32), {}, "2-D"),
    ],
)
def test_bad_inputs_fail_before_any_clustering(points, cfg, message):
    with pytest.raises(ValueError, match=message):
        fit_hierarchy(points, config(**cfg))


def test_inf_row_is_named():
    x = np.zeros((500, 4), dtype=np.float32)
    x[123, 2] = np.inf
    with pytest.raises(ValueError, match="row 123"):
        fit_hierarchy(x, config())


def test_assign_refuses_mismatched_dimension(fitted):
    with pytest.raises(ValueError, match="dimension 31"):
        fitted.hierarchy.assign(np.zeros((5, 31), dtype=np.float32))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_clusters": [10, 20]}, "strictly decrease"),
        ({"sample_sizes": [1, 2]}, "sample_sizes"),
        ({"max_iter": 0}, "max_iter"),
        ({"metric": "dot"}, "metric"),
        ({"level1_split": 3}, "divide"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValidationError, match=field):
        config(**overrides)
