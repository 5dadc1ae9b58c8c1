"""k-means: a thin class over faiss's exact nearest-centroid search.

faiss does the heavy kernel (assignment: an sgemm plus argmin, on the GPU when faiss sees
one); numpy does the cheap rest. Unlike the authors' fixed 50 iterations, Lloyd stops on a
relative-objective tolerance, and empty clusters are re-seeded at the worst-served points and
counted, never left at a stale centroid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .config import KMeansConfig


@functools.cache
def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def resolve_device(device: str) -> str:
    if device == "gpu" and not gpu_available():
        raise ValueError("device='gpu' asked for, but faiss sees no GPU")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    return device


class CentroidIndex:
    """An exact L2 index over a set of centroids that can be refilled in place.

    Lloyd's loop keeps one per fit (as faiss.Kmeans does): the flat index (and, on the GPU,
    its device copy) is built once, and every iteration only resets and re-adds the centroids.
    """

    def __init__(self, dim: int, device: str = "cpu") -> None:
        import faiss

        self.dim = dim
        self.index = faiss.IndexFlatL2(dim)
        if device == "gpu":  # one host-to-device copy per fit, not per iteration
            self.index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, self.index)

    def set(self, centroids: np.ndarray) -> CentroidIndex:
        """Replace the indexed vectors by `centroids` (the old ones must not linger)."""
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != self.dim:
            raise ValueError(f"centroids must have shape (k, {self.dim}), got {centroids.shape}")
        self.index.reset()
        self.index.add(centroids)
        return self

    def search(
        self, points: np.ndarray, batch_size: int = 262144
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index of and squared L2 distance to the nearest indexed centroid of every point."""
        n = points.shape[0]
        labels = np.empty(n, dtype=np.int64)
        distances = np.empty(n, dtype=np.float32)
        for lo in range(0, n, batch_size):  # bounded memory on very large pools
            chunk = np.ascontiguousarray(points[lo : lo + batch_size], dtype=np.float32)
            d, i = self.index.search(chunk, 1)
            labels[lo : lo + len(chunk)] = i[:, 0]
            distances[lo : lo + len(chunk)] = np.maximum(d[:, 0], 0.0)
        return labels, distances


def nearest_centroid(
    points: np.ndarray, centroids: np.ndarray, device: str = "cpu", batch_size: int = 262144
) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared L2 distance to the nearest centroid of every point (faiss)."""
    index = CentroidIndex(np.shape(centroids)[1], device).set(centroids)
    return index.search(points, batch_size)


@functools.cache
def _gpu_resources():  # pragma: no cover - needs a GPU
    import faiss

    return faiss.StandardGpuResources()


def kmeans_plusplus(
    points: np.ndarray, k: int, rng: np.random.Generator, n_local_trials: int | None = None
) -> np.ndarray:
    """Row indices of k seeds chosen by greedy k-means++ (Arthur & Vassilvitskii 2007).

    Each step draws a few candidates with probability proportional to D(x)^2 and keeps the one
    that lowers the potential most. One (trials x n) matrix product per step.
    """
    n = points.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    x = points.astype(np.float32, copy=False)
    x_sq = np.einsum("ij,ij->i", x, x)
    xt = np.ascontiguousarray(x.T)
    seeds = np.empty(k, dtype=np.int64)
    seeds[0] = rng.integers(n)
    closest = np.maximum(x_sq - 2 * x @ x[seeds[0]] + x_sq[seeds[0]], 0)
    potential = closest.sum(dtype=np.float64)
    for c in range(1, k):
        if potential <= 0:  # fewer distinct points than k: fill with unused rows
            unused = np.setdiff1d(np.arange(n), seeds[:c], assume_unique=False)
            seeds[c:] = unused[: k - c] if unused.size >= k - c else rng.integers(n, size=k - c)
            break
        draws = rng.random(n_local_trials) * potential
        candidates = np.searchsorted(np.cumsum(closest, dtype=np.float64), draws)
        candidates = np.minimum(candidates, n - 1)
        # ||x||^2 - 2 x.c + ||c||^2, in place: this loop is the seeding's whole cost.
        dist = x[candidates] @ xt
        dist *= -2
        dist += x_sq
        dist += x_sq[candidates, None]
        np.maximum(dist, 0, out=dist)
        np.minimum(dist, closest, out=dist)
        potentials = dist.sum(axis=1, dtype=np.float64)
        best = int(np.argmin(potentials))
        seeds[c] = candidates[best]
        closest = dist[best]
        potential = potentials[best]
    return seeds


def centroid_means(points: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster means (float32) and counts, by one sort and a segmented sum."""
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    nonempty = counts > 0
    sums = np.zeros((k, points.shape[1]), dtype=np.float64)
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(
            points[order].astype(np.float64, copy=False), starts[nonempty], axis=0
        )
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    return means, counts


@dataclass
class KMeans:
    """Lloyd's k-means with k-means++ seeding, a convergence tolerance and empty-cluster repair.

    `config` (`curation.config.KMeansConfig`: n_clusters, max_iter, tol, init, spherical,
    device, n_local_trials) is validated where it is built, not here again. From Python,
    scikit-learn style: `KMeans.from_params(40, max_iter=100, random_state=0)`.
    `init_centroids` (k, d) starts Lloyd from these instead of seeding.
    After fit: centroids_ (k, d) float32, labels_, distances_ (squared L2 to the centroid),
    objective_ (sum of squared distances after each iteration), n_iter_, n_reseeded_.
    """

    config: KMeansConfig
    random_state: int | np.random.Generator | None = 0
    init_centroids: np.ndarray | None = field(default=None, repr=False)
    centroids_: np.ndarray = field(init=False, repr=False)
    labels_: np.ndarray = field(init=False, repr=False)
    distances_: np.ndarray = field(init=False, repr=False)
    objective_: list[float] = field(init=False, repr=False)
    n_iter_: int = field(init=False, default=0)
    n_reseeded_: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.config, KMeansConfig):  # e.g. KMeans(40): sklearn's signature
            raise TypeError("KMeans takes a KMeansConfig; for parameters use "
                            "KMeans.from_params(n_clusters, ...)")

    @classmethod
    def from_params(cls, n_clusters: int, *, random_state: int | np.random.Generator | None = 0,
                    init: str | np.ndarray | None = None, **params) -> KMeans:
        """scikit-learn-style construction: the parameters (KMeansConfig's fields) are validated
        by KMeansConfig; `init` is "k-means++", "random" or a (k, d) array of starting
        centroids."""
        start = init if isinstance(init, np.ndarray) else None
        if init is not None and start is None:
            params["init"] = init
        return cls(KMeansConfig(n_clusters=n_clusters, **params), random_state, start)

    def _initial_centroids(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = self.config.n_clusters
        if self.init_centroids is not None:
            if self.init_centroids.shape != (k, x.shape[1]):
                raise ValueError(f"init centroids must have shape ({k}, {x.shape[1]}), got "
                                 f"{self.init_centroids.shape}")
            return self.init_centroids.astype(np.float32, copy=True)
        if self.config.init == "random":
            return x[rng.choice(x.shape[0], size=k, replace=False)].copy()
        return x[kmeans_plusplus(x, k, rng, self.config.n_local_trials)].copy()

    def fit(self, points: np.ndarray) -> KMeans:
        x = np.ascontiguousarray(points, dtype=np.float32)
        n = x.shape[0]
        k = self.config.n_clusters
        if n < k:
            raise ValueError(f"cannot make {k} clusters from {n} points")
        rng = np.random.default_rng(self.random_state)
        centroids = self._initial_centroids(x, rng)
        self.objective_, self.n_reseeded_ = [], 0
        index = CentroidIndex(x.shape[1], self.config.device)
        labels, dist = index.set(centroids).search(x)
        for it in range(self.config.max_iter):
            centroids, counts = centroid_means(x, labels, k)
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                # Re-seed at the points worst served by their centroid; the donors are
                # distinct points, so the new clusters are not empty again.
                donors = np.argsort(-dist, kind="stable")[: empty.size]
                centroids[empty] = x[donors]
                self.n_reseeded_ += int(empty.size)
            if self.config.spherical:
                centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
            new_labels, dist = index.set(centroids).search(x)
            objective = float(dist.sum(dtype=np.float64))
            self.objective_.append(objective)
            self.n_iter_ = it + 1
            unchanged = np.array_equal(new_labels, labels) and not empty.size
            labels = new_labels
            if unchanged:
                break
            if len(self.objective_) > 1:
                previous = self.objective_[-2]
                if previous - objective <= self.config.tol * max(previous, 1e-30):
                    break
        self.centroids_, self.labels_, self.distances_ = centroids, labels, dist
        return self

    def predict(self, points: np.ndarray) -> np.ndarray:
        """Index of the nearest fitted centroid of each point."""
        if not hasattr(self, "centroids_"):
            raise ValueError("this KMeans is not fitted yet: call fit(points) first")
        x = np.ascontiguousarray(points, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.centroids_.shape[1]:
            raise ValueError(f"points must have shape (n, {self.centroids_.shape[1]}) like the "
                             f"fitted centroids, got {x.shape}")
        return nearest_centroid(x, self.centroids_, self.config.device)[0]
