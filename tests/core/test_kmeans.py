import faiss
import numpy as np
import pytest

from curation import kmeans as kmeans_module
from curation.config import HierarchyConfig, KMeansConfig
from curation.kmeans import CentroidIndex, KMeans, centroid_means, kmeans_plusplus, nearest_centroid
from curation_demo.synthetic import long_tailed_mixture


@pytest.fixture(scope="module")
def blobs():
    return long_tailed_mixture(n=3000, dim=16, n_components=30, seed=2)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(blobs):
    x, _ = blobs
    a = KMeans.from_params(40, random_state=7).fit(x)
    b = KMeans.from_params(40, random_state=7).fit(x)
    c = KMeans.from_params(40, random_state=8).fit(x)
    assert a.centroids_.tobytes() == b.centroids_.tobytes()
    assert np.array_equal(a.labels_, b.labels_)
    assert a.centroids_.tobytes() != c.centroids_.tobytes()


def test_lloyd_lowers_the_objective_and_stops_on_tolerance(blobs):
    x, _ = blobs
    km = KMeans.from_params(40, max_iter=200, tol=1e-3, random_state=0).fit(x)
    assert km.n_iter_ < 200
    assert all(b <= a + 1e-6 * a for a, b in zip(km.objective_, km.objective_[1:], strict=False))
    tight = KMeans.from_params(40, max_iter=200, tol=0.0, random_state=0).fit(x)
    assert tight.n_iter_ >= km.n_iter_
    assert tight.objective_[-1] <= km.objective_[-1] * (1 + 1e-6)


def test_distances_are_squared_l2_to_the_assigned_centroid(blobs):
    x, _ = blobs
    km = KMeans.from_params(10, random_state=0).fit(x)
    expected = ((x - km.centroids_[km.labels_]) ** 2).sum(axis=1)
    np.testing.assert_allclose(km.distances_, expected, rtol=1e-3, atol=1e-3)
    brute = ((x[:, None, :] - km.centroids_[None]) ** 2).sum(-1).argmin(1)
    assert (brute == km.labels_).mean() > 0.999


def test_empty_clusters_are_reseeded_and_counted():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(50, 1, (5, 2))]).astype(np.float32)
    # Three starting centroids far from every point: all but one start empty.
    init = np.array([[0, 0], [1000, 1000], [-1000, 1000]], dtype=np.float32)
    km = KMeans.from_params(3, init=init, random_state=0).fit(x)
    assert km.n_reseeded_ >= 2
    assert (np.bincount(km.labels_, minlength=3) > 0).all()


def test_kmeans_plusplus_covers_small_far_blobs():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 1, (5000, 8))
    smalls = [rng.normal(30 * (i + 1), 1, (5, 8)) for i in range(5)]
    x = np.concatenate([big, *smalls]).astype(np.float32)
    seeds = kmeans_plusplus(x, 6, np.random.default_rng(0))
    assert len({int(s >= 5000) * (1 + (s - 5000) // 5) for s in seeds}) == 6


def test_centroid_means_match_a_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    labels = rng.integers(0, 7, 100)
    labels[labels == 3] = 4  # cluster 3 empty
    means, counts = centroid_means(x, labels, 7)
    for c in range(7):
        if counts[c]:
            np.testing.assert_allclose(means[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-6)
    assert counts[3] == 0


def test_nearest_centroid_batches_agree(blobs):
    x, _ = blobs
    c = x[:17]
    one = nearest_centroid(x, c, batch_size=1 << 20)
    small = nearest_centroid(x, c, batch_size=100)
    assert np.array_equal(one[0], small[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"n_clusters": 2, "tol": -1}, "tol"),
        ({"n_clusters": 2, "init": "bogus"}, "init"),
    ],
)
def test_bad_parameters_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KMeans.from_params(**kwargs)


def test_kmeans_takes_the_validated_config(blobs):
    """The checks live in KMeansConfig (shared with HierarchyConfig): from_params builds it,
    the constructor takes it as is, and sklearn's positional k is pointed at from_params."""
    x, _ = blobs
    config = KMeansConfig(n_clusters=12, max_iter=20, init="random")
    direct = KMeans(config, random_state=4).fit(x)
    built = KMeans.from_params(12, max_iter=20, init="random", random_state=4).fit(x)
    assert built.config == config
    assert direct.centroids_.tobytes() == built.centroids_.tobytes()
    level = HierarchyConfig(n_clusters=[12, 3], max_iter=20, init="random").kmeans(12)
    assert level == config
    with pytest.raises(TypeError, match="from_params"):
        KMeans(12)


def test_more_clusters_than_points_is_refused():
    with pytest.raises(ValueError, match="cannot make 5 clusters from 3 points"):
        KMeans.from_params(5).fit(np.zeros((3, 2), dtype=np.float32))


class FreshIndexEveryTime(CentroidIndex):
    """The pre-reuse behaviour: a brand-new flat index at every refill."""

    def set(self, centroids):
        self.index = faiss.IndexFlatL2(self.dim)
        self.index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return self


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_clusters": 40, "random_state": 3},
        {"n_clusters": 40, "random_state": 3, "spherical": True, "init": "random"},
        {"n_clusters": 25, "random_state": 5, "max_iter": 200, "tol": 0.0},
    ],
)
def test_one_index_per_fit_gives_the_bytes_of_a_fresh_index_per_iteration(
    blobs, monkeypatch, kwargs
):
    x, _ = blobs
    reused = KMeans.from_params(**kwargs).fit(x)
    with monkeypatch.context() as m:
        m.setattr(kmeans_module, "CentroidIndex", FreshIndexEveryTime)
        fresh = KMeans.from_params(**kwargs).fit(x)
    assert reused.n_iter_ == fresh.n_iter_ > 1
    assert reused.centroids_.tobytes() == fresh.centroids_.tobytes()
    assert reused.labels_.tobytes() == fresh.labels_.tobytes()
    assert reused.distances_.tobytes() == fresh.distances_.tobytes()
    assert reused.objective_ == fresh.objective_


def test_refilling_the_index_drops_the_old_centroids(blobs):
    x, _ = blobs
    index = CentroidIndex(x.shape[1])
    index.set(x[:10])
    labels, dist = index.set(x[100:107]).search(x)
    assert index.index.ntotal == 7  # a stale index would hold 17 and label some rows >= 7
    assert labels.max() < 7
    expected = nearest_centroid(x, x[100:107])
    assert np.array_equal(labels, expected[0]) and np.array_equal(dist, expected[1])
    with pytest.raises(ValueError, match="shape"):
        index.set(x[:3, :4])


def test_gpu_fit_copies_the_index_to_the_device_once(blobs, monkeypatch):
    """The GPU path, with faiss's host-to-device copy faked (no GPU here): one copy per fit."""
    x, _ = blobs
    copies = []

    def fake_cpu_to_gpu(resources, device, index):
        copies.append(index.ntotal)
        return index

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake_cpu_to_gpu, raising=False)
    monkeypatch.setattr(kmeans_module, "_gpu_resources", lambda: None)
    on_gpu = KMeans.from_params(30, random_state=1, device="gpu").fit(x)
    on_cpu = KMeans.from_params(30, random_state=1).fit(x)
    assert copies == [0]  # the empty flat index, before any centroids
    assert on_gpu.n_iter_ > 1
    assert on_gpu.centroids_.tobytes() == on_cpu.centroids_.tobytes()
    assert np.array_equal(on_gpu.labels_, on_cpu.labels_)


def test_predict_is_guarded_by_a_fitted_check():
    km = KMeans.from_params(n_clusters=3, random_state=0)
    with pytest.raises(ValueError, match="not fitted"):
        km.predict(np.zeros((2, 4), np.float32))
    x, _ = long_tailed_mixture(n=300, dim=4, n_components=5, seed=0)
    km.fit(x)
    assert np.array_equal(km.predict(x), km.labels_)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        km.predict(np.zeros((2, 3), np.float32))
