"""Validated configuration of the curation core (pydantic models, checked before any work)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Lloyd's loop options, declared once (type, default, constraint, description): every level's
# k-means of a HierarchyConfig and a lone KMeansConfig share them.
KMeansInit = Annotated[
    Literal["k-means++", "random"], Field(default="k-means++", description="k-means seeding")
]
MaxIter = Annotated[int, Field(default=50, ge=1, description="Lloyd iterations at most")]
Tol = Annotated[
    float,
    Field(default=1e-4, ge=0.0,
          description="stop when the objective improves by less than this fraction"),
]


# A pool's level 1 fits on a sample, never the whole table (docs/SCALE.md): by default a few
# hundred points per centroid, as faiss samples (max_points_per_centroid = 256), capped so the
# fit's memory stays a constant of the config: sample x d x 4 B (1M x 384-d: 1.5 GB).
FIT_POINTS_PER_CLUSTER = 256
FIT_SAMPLE_CAP = 1_000_000

# Cluster counts from a pool's size (suggest_levels; docs/METHOD.md, "Levels and clusters from
# the pool size"): about 40 items per leaf (on 4,000 long-tailed Fashion-MNIST images 20-40
# per leaf gave the best curated subsets, 200-400 lost 0.1-0.2 nats of label entropy), 10
# times fewer clusters per level up (the authors' web-image tree: 20, 10, then 5 times), from
# 2 to 4 levels, a level above the second only while it keeps MIN_TOP_CLUSTERS clusters. A
# small pool gets smaller leaves (down to MIN_ITEMS_PER_LEAF) so that its second level can
# keep MIN_TOP_CLUSTERS clusters: 281 texts of 6 topics got [7, 1] without it, a subset worse
# than random on label entropy, and [28, 10] with it (docs/METHOD.md).
ITEMS_PER_LEAF = 40
MIN_ITEMS_PER_LEAF = 10
LEVEL_RATIO = 10
MAX_LEVELS = 4
MIN_TOP_CLUSTERS = 10


def suggest_levels(n_items: int, items_per_leaf: int = ITEMS_PER_LEAF, ratio: int = LEVEL_RATIO,
                   max_levels: int = MAX_LEVELS) -> list[int]:
    """Clusters per level (level 1 first) for a pool of `n_items`: round(n / items_per_leaf)
    leaves, or for a small pool up to ratio x MIN_TOP_CLUSTERS leaves of at least
    MIN_ITEMS_PER_LEAF items (at least 2 leaves); a second level `ratio` times smaller but
    of MIN_TOP_CLUSTERS clusters where the leaves allow (at most half of them; at least 1,
    always below the leaves); then levels `ratio` times smaller again while they keep
    MIN_TOP_CLUSTERS clusters, at most `max_levels`. A valid HierarchyConfig.n_clusters."""
    if n_items < 2 or items_per_leaf < 1 or ratio < 2 or max_levels < 2:
        raise ValueError(f"suggest_levels needs n_items >= 2, items_per_leaf >= 1, ratio >= 2 "
                         f"and max_levels >= 2, got {n_items}, {items_per_leaf}, {ratio}, "
                         f"{max_levels}")
    small_pool = min(ratio * MIN_TOP_CLUSTERS, n_items // MIN_ITEMS_PER_LEAF)
    leaves = max(2, round(n_items / items_per_leaf), small_pool)
    second = max(round(leaves / ratio), min(MIN_TOP_CLUSTERS, leaves // 2))
    levels = [leaves, max(1, min(leaves - 1, second))]
    while len(levels) < max_levels and round(levels[-1] / ratio) >= MIN_TOP_CLUSTERS:
        levels.append(round(levels[-1] / ratio))
    return levels


class KMeansConfig(BaseModel):
    """One k-means (`curation.kmeans.KMeans`): k and Lloyd's loop options, validated here once;
    `KMeans` itself does not check them again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_clusters: int = Field(ge=1, description="clusters (k)")
    max_iter: MaxIter
    tol: Tol
    init: KMeansInit
    spherical: bool = Field(
        default=False, description="re-normalise the centroids every iteration (cosine k-means)"
    )
    device: Literal["cpu", "gpu"] = Field(
        default="cpu", description="where faiss searches (HierarchyConfig resolves 'auto' first)"
    )
    n_local_trials: int | None = Field(
        default=None, ge=1, description="greedy k-means++ candidates per seed (None: 2 + log k)"
    )


class HierarchyConfig(BaseModel):
    """Hierarchical k-means with resampling (docs/METHOD.md).

    Level 1 clusters the data points; level l > 1 clusters the centroids of level l - 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_clusters: list[int] = Field(
        min_length=1, description="clusters per level, level 1 first, strictly decreasing "
        "(e.g. 1000,200,50)"
    )
    resampling_steps: list[int] = Field(
        default=[10], description="resampling steps T per level (one value: every level)"
    )
    sample_sizes: list[int] = Field(
        default=[],
        description="r per level (points taken from each cluster when resampling); "
        "empty = about half the average cluster size",
    )
    resampling: Literal["closest", "random"] = Field(
        default="closest",
        description="which r points of each cluster a resampling step keeps: the closest to "
        "the centroid, or random ones",
    )
    metric: Literal["l2", "cosine"] = Field(
        default="l2", description="distance between items (cosine: rows L2-normalised first). "
        "In a pool, unset follows the embedder's space (EmbedderSpec.metric: cosine for images "
        "and texts, l2 for precomputed vectors; curation.pools.PoolConfig resolves it)"
    )
    upper_metric: Literal["same", "centered-cosine"] = Field(
        default="same",
        description="levels above 1: 'same' clusters centroids with the data's metric (the "
        "paper); 'centered-cosine' by their direction from the centroids' mean, which keeps "
        "high-dimensional, unrelated concepts from collapsing into one giant cluster",
    )
    init: KMeansInit
    max_iter: MaxIter
    tol: Tol
    level1_split: int = Field(
        default=1,
        ge=1,
        description="s: fit level 1 as n_clusters[0] // s clusters, each then "
        "split into s by its own k-means (the authors' two-step fit for very large pools)",
    )
    fit_sample_size: int | None = Field(
        default=None, ge=1, description="fit level 1 on this many points. A pool's fit reads "
        "only these (a seeded, order-free sample); unset: FIT_POINTS_PER_CLUSTER per level-1 "
        "cluster, at most FIT_SAMPLE_CAP. fit_hierarchy on an array: unset = every point",
    )
    seed: int = Field(default=0, description="random seed (same seed, same tree)")
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto", description="auto: a GPU when faiss sees one, else the CPU"
    )

    @field_validator("n_clusters")
    @classmethod
    def _strictly_decreasing(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError(f"every level needs at least 1 cluster, got {ks}")
        if any(a <= b for a, b in zip(ks, ks[1:], strict=False)):
            raise ValueError(f"clusters per level must strictly decrease, got {ks}")
        return ks

    @field_validator("resampling_steps", "sample_sizes")
    @classmethod
    def _non_negative(cls, values: list[int]) -> list[int]:
        if any(v < 0 for v in values):
            raise ValueError(f"values must be >= 0, got {values}")
        return values

    @model_validator(mode="after")
    def _per_level_lengths(self) -> HierarchyConfig:
        n = len(self.n_clusters)
        for name in ("resampling_steps", "sample_sizes"):
            values = getattr(self, name)
            if len(values) not in (0, 1, n):
                raise ValueError(f"{name} needs 1 or {n} values (one per level), got {values}")
        if self.sample_sizes and min(self.sample_sizes) < 1:
            raise ValueError(f"sample_sizes must be >= 1, got {self.sample_sizes}")
        if self.n_clusters[0] % self.level1_split:
            raise ValueError(
                f"level1_split={self.level1_split} must divide n_clusters[0]={self.n_clusters[0]}"
            )
        return self

    @property
    def n_levels(self) -> int:
        return len(self.n_clusters)

    def steps_at(self, level: int) -> int:
        """Resampling steps T at a 0-based level."""
        values = self.resampling_steps or [0]
        return values[level] if len(values) > 1 else values[0]

    def kmeans(self, n_clusters: int, **options) -> KMeansConfig:
        """The config of one k-means of this fit: its Lloyd options, plus `options`
        (spherical, device, n_local_trials)."""
        return KMeansConfig(n_clusters=n_clusters, max_iter=self.max_iter, tol=self.tol,
                            init=self.init, **options)

    def pool_fit_sample(self, n_items: int) -> int:
        """Points a pool's level-1 fit reads out of `n_items`: `fit_sample_size`, or
        FIT_POINTS_PER_CLUSTER per level-1 cluster, at most FIT_SAMPLE_CAP (never below k)."""
        k = self.n_clusters[0]
        derived = max(k, min(FIT_POINTS_PER_CLUSTER * k, FIT_SAMPLE_CAP))
        return min(n_items, self.fit_sample_size or derived)

    def sample_size_at(self, level: int, n_points: int) -> int:
        """Sample size r at a 0-based level; default half the average cluster size."""
        if not self.sample_sizes:
            return max(1, n_points // self.n_clusters[level] // 2)
        return self.sample_sizes[level] if len(self.sample_sizes) > 1 else self.sample_sizes[0]


class SampleConfig(BaseModel):
    """Balanced hierarchical sampling (docs/METHOD.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_size: int = Field(ge=1, description="items to select, counting copies")
    strategy: Literal["random", "closest"] = Field(
        default="random", description="which items of a leaf cluster: random, or the closest "
        "to its centroid"
    )
    seed: int = Field(default=0, description="random seed (same seed, same selection)")
    multiplier: int = Field(default=1, ge=1, description="copies allowed per item (as weights)")
    stability: Literal["fair", "sticky"] = Field(
        default="fair",
        description="'fair': inside a leaf only the keyed hash ranks items (order-free, "
        "newcomers as likely as old items); 'sticky': the previous version's members of a "
        "leaf rank first, so an item leaves only when its leaf's quota shrinks, it is taken "
        "down or it moves (depends on the version history; subsets only)",
    )


# Default similarity above which two items of one leaf are near duplicates: chosen from the
# curve measured on the bundled pools (benchmarks/bench_dedup.py, docs/METHOD.md).
DEDUP_THRESHOLD = 0.95


class DedupConfig(BaseModel):
    """Semantic dedup inside the tree's leaves (`curation.dedup`, docs/METHOD.md).

    Off by default: with it off nothing is read or written and the subsets are what they were.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="collapse near duplicates before the "
                          "subsets sample (they sample representatives only)")
    threshold: float = Field(
        default=DEDUP_THRESHOLD, gt=0.0, lt=1.0,
        description="cosine similarity above which an item joins a representative")
    leaf_cap: int = Field(
        default=4096, ge=2, le=65536,
        description="items compared at once: a larger leaf is cut into runs of this many "
        "(in the canonical order), each run also compared with the previous run's "
        "representatives; bounds the cost per leaf")
    group_items: int = Field(
        default=131072, ge=1,
        description="items of the leaves recomputed together: their compact columns are held "
        "at once (about 200 B each); larger groups mean fewer scans of the id columns")
