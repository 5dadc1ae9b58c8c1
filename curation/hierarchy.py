"""Hierarchical k-means with resampling (docs/METHOD.md) and the fitted tree."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import HierarchyConfig
from .kmeans import KMeans, centroid_means, nearest_centroid, resolve_device
from .metrics import cluster_size_stats
from .selection import tree_paths

FORMAT_VERSION = 1
# Greedy k-means++ candidates per seed above level 1, where the points are only the centroids
# below and extra candidates cost little. Measured on the reference pool, 5 seeds: mean
# label entropy 4.47 with 1 candidate, 4.78 with the default 2 + log k, 4.81 with 20.
UPPER_LEVEL_TRIALS = 20


@dataclass(frozen=True)
class Assignment:
    """Where items sit in a hierarchy."""

    leaf: np.ndarray  # (n,) int64 level-1 cluster
    distance: np.ndarray  # (n,) float32 squared L2 to the leaf centroid
    paths: np.ndarray  # (n, L) int64, column 0 = level 1


@dataclass
class Hierarchy:
    """A tree of centroids: level l's clusters each have one parent at level l + 1."""

    config: HierarchyConfig
    centroids: list[np.ndarray]  # level l: (k_l, d) float32
    parents: list[np.ndarray]  # levels 1..L-1: (k_l,) int64 index of the parent at l + 1

    @property
    def n_levels(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids[0].shape[1])

    def paths(self, leaf: np.ndarray) -> np.ndarray:
        """(n, L) cluster ids at every level, from the leaf up (the one tree walk, shared with
        the streaming subset selection, which has the parent arrays but no Hierarchy)."""
        return tree_paths(self.parents, leaf)

    def assign(self, points: np.ndarray, batch_size: int = 262144) -> Assignment:
        """Nearest leaf centroid of every point, then up the tree (no refit). The only way
        points are placed in a fitted tree: drops' assignments (ClusteringResource.assign)
        and the evaluation's pool view call it."""
        x = validate_points(points, min_points=1)
        if x.shape[1] != self.dim:
            raise ValueError(f"points have dimension {x.shape[1]}, the hierarchy {self.dim}")
        if self.config.metric == "cosine":
            x = normalize_rows(x)
        device = resolve_device(self.config.device)
        leaf, distance = nearest_centroid(x, self.centroids[0], device, batch_size)
        return Assignment(leaf=leaf, distance=distance, paths=self.paths(leaf))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for level, c in enumerate(self.centroids, start=1):
            np.save(directory / f"level_{level}_centroids.npy", c)
        for level, p in enumerate(self.parents, start=1):
            np.save(directory / f"level_{level}_parents.npy", p)
        meta = {"format_version": FORMAT_VERSION, "config": self.config.model_dump()}
        (directory / "hierarchy.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Hierarchy:
        directory = Path(directory)
        meta_path = directory / "hierarchy.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory} holds no hierarchy.json: not a clustering")
        meta = json.loads(meta_path.read_text())
        config = HierarchyConfig(**meta["config"])
        centroids = [
            np.load(directory / f"level_{lv}_centroids.npy") for lv in range(1, config.n_levels + 1)
        ]
        parents = [
            np.load(directory / f"level_{lv}_parents.npy") for lv in range(1, config.n_levels)
        ]
        return cls(config=config, centroids=centroids, parents=parents)


@dataclass
class LevelReport:
    level: int  # 1-based
    n_points: int  # points clustered at this level (items at level 1, centroids above)
    sizes: np.ndarray  # items beneath each cluster
    objective: list[float]  # k-means objective after each Lloyd iteration, all runs in order
    n_empty_reseeded: int
    seconds: float
    stats: dict = field(default_factory=dict)


@dataclass
class FitResult:
    hierarchy: Hierarchy
    assignment: Assignment
    levels: list[LevelReport]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def validate_points(points: np.ndarray, min_points: int = 1) -> np.ndarray:
    """float32 C-contiguous (n, d) array, or a ValueError naming the first bad row."""
    x = np.asarray(points)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n_items, dim), got shape {x.shape}")
    if x.shape[0] < min_points:
        raise ValueError(f"need at least {min_points} embeddings, got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError("embeddings have dimension 0")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"embeddings must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{bad.size} embedding rows hold NaN or Inf (first: row {bad[0]}); drop or "
            "quarantine them before clustering"
        )
    return x


def _resample(
    labels: np.ndarray, dist: np.ndarray, k: int, r: int, how: str, rng: np.random.Generator
) -> np.ndarray:
    """Indices of r points per cluster: the closest to its centroid, or r random members."""
    key = dist if how == "closest" else rng.random(labels.size)
    order = np.lexsort((np.arange(labels.size), key, labels))
    counts = np.bincount(labels, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(labels.size) - np.repeat(starts, counts)
    return np.sort(order[rank < r])


def _fit_level(
    x: np.ndarray,
    k: int,
    steps: int,
    r: int,
    config: HierarchyConfig,
    rng: np.random.Generator,
    device: str,
    init: np.ndarray | None,
    split: int = 1,
    n_local_trials: int | None = None,
    spherical: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float], int]:
    """One level: k-means, then `steps` rounds of k-means on a per-cluster resample."""

    def kmeans(points: np.ndarray, n_clusters: int, start: np.ndarray | None) -> KMeans:
        options = config.kmeans(n_clusters, spherical=spherical, device=device,
                                n_local_trials=n_local_trials)
        return KMeans(options, random_state=rng, init_centroids=start).fit(points)

    objective: list[float] = []
    reseeded = 0
    if split > 1 and init is None:
        coarse = kmeans(x, k // split, None)
        objective += coarse.objective_
        reseeded += coarse.n_reseeded_
        parts = []
        for c in range(k // split):
            members = x[coarse.labels_ == c]
            sub = kmeans(members, min(split, members.shape[0]), None)
            parts.append(sub.centroids_)
        centroids = np.concatenate(parts)
        if centroids.shape[0] < k:  # tiny coarse clusters: top up with the worst-served points
            _, d = nearest_centroid(x, centroids, device)
            extra = x[np.argsort(-d, kind="stable")[: k - centroids.shape[0]]]
            centroids = np.concatenate([centroids, extra])
        first = kmeans(x, k, centroids)
    else:
        first = kmeans(x, k, init)
    objective += first.objective_
    reseeded += first.n_reseeded_
    centroids, labels, dist = first.centroids_, first.labels_, first.distances_
    for _ in range(steps):
        picked = _resample(labels, dist, k, r, config.resampling, rng)
        if picked.size == k and np.unique(x[picked], axis=0).shape[0] == k:
            # k distinct points in k clusters (r = 1): k-means' only optimum is every point
            # its own centroid, so skip the O(k^2) seeding (the 5-level 200k run: 40 s).
            centroids = x[picked].copy()
        else:
            # Fresh k-means++ on the resample: measured better than warm-starting from the
            # current centroids (2-D toy KL 0.11 vs 0.13), which keeps them in dense regions.
            resampled = kmeans(x[picked], k, None)
            reseeded += resampled.n_reseeded_
            centroids = resampled.centroids_
        labels, dist = nearest_centroid(x, centroids, device)
        objective.append(float(dist.sum(dtype=np.float64)))
    return centroids, labels, dist, objective, reseeded


def _member_means(
    points: np.ndarray, labels: np.ndarray, fitted: np.ndarray, fitted_space: np.ndarray
) -> np.ndarray:
    """Mean of each cluster's members; an empty cluster takes the point nearest its centroid."""
    means, counts = centroid_means(points, labels, fitted.shape[0])
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        nearest, _ = nearest_centroid(fitted[empty], fitted_space)
        means[empty] = points[nearest]
    return means


def fit_hierarchy(
    points: np.ndarray,
    config: HierarchyConfig,
    init_centroids: list[np.ndarray] | None = None,
) -> FitResult:
    """Fit the tree on all points; level l > 1 clusters level l - 1's centroids (unweighted).

    init_centroids (from a previous Hierarchy, same levels and dimension) warm-starts a refit:
    every level starts its first k-means from them instead of k-means++.
    """
    x = validate_points(points, min_points=1)
    n = x.shape[0]
    fit_n = min(n, config.fit_sample_size or n)
    if fit_n < config.n_clusters[0]:
        raise ValueError(
            f"n_clusters[0]={config.n_clusters[0]} exceeds the {fit_n} points available "
            "to fit level 1"
        )
    if init_centroids is not None:
        shapes = [c.shape for c in init_centroids]
        wanted = [(k, x.shape[1]) for k in config.n_clusters]
        if shapes != wanted:
            raise ValueError(f"init_centroids have shapes {shapes}, the config needs {wanted}")
    device = resolve_device(config.device)
    if config.metric == "cosine":
        x = normalize_rows(x)
    rng = np.random.default_rng(config.seed)

    centroids: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    reports: list[LevelReport] = []
    level_points = x
    if fit_n < n:
        level_points = x[np.sort(rng.choice(n, size=fit_n, replace=False))]
    leaf = dist = None
    for level, k in enumerate(config.n_clusters):
        started = time.perf_counter()
        by_direction = level > 0 and config.upper_metric == "centered-cosine"
        points, init = level_points, None if init_centroids is None else init_centroids[level]
        if by_direction:
            # Centroids of unrelated concepts are near-equidistant in high dimension, where L2
            # k-means collapses into one giant cluster plus singletons; their directions from
            # the common mean do not.
            mean = level_points.mean(axis=0)
            points = normalize_rows(level_points - mean)
            init = None if init is None else normalize_rows(init - mean)
        c, labels, d, objective, reseeded = _fit_level(
            points,
            k,
            config.steps_at(level),
            config.sample_size_at(level, level_points.shape[0]),
            config,
            rng,
            device,
            init,
            split=config.level1_split if level == 0 else 1,
            n_local_trials=None if level == 0 else UPPER_LEVEL_TRIALS,
            spherical=config.metric == "cosine" or by_direction,
        )
        if by_direction:  # keep the tree's centroids in the data's space
            c = _member_means(level_points, labels, c, points)
        if level == 0:
            if fit_n < n:
                labels, d = nearest_centroid(x, c, device)
            leaf, dist = labels, d
        else:
            parents.append(labels.astype(np.int64))
        centroids.append(c)
        reports.append(
            LevelReport(
                level=level + 1,
                n_points=int(level_points.shape[0] if level else n),
                sizes=np.empty(0, dtype=np.int64),
                objective=objective,
                n_empty_reseeded=reseeded,
                seconds=time.perf_counter() - started,
            )
        )
        level_points = c

    hierarchy = Hierarchy(config=config, centroids=centroids, parents=parents)
    paths = hierarchy.paths(leaf)
    for level, report in enumerate(reports):
        report.sizes = np.bincount(paths[:, level], minlength=config.n_clusters[level])
        report.stats = cluster_size_stats(report.sizes)
    return FitResult(
        hierarchy=hierarchy,
        assignment=Assignment(leaf=leaf, distance=dist, paths=paths),
        levels=reports,
    )
