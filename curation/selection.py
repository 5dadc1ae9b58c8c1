"""Subset selection at scale: water-filled leaf quotas, then bottom-k by a keyed hash per leaf.

Works on compact columns only (per item: a 64-bit key, its leaf id, its distance) plus the
tree's parent arrays, fed in batches: memory is O(#clusters + selected), never O(pool).

- **Item key** (`item_keys`): BLAKE2b of the item_id's UTF-8 bytes with digest_size=8, read
  as a little-endian uint64: identical on every machine, process and version.
- **Rank hash** (`rank_hash`): ``splitmix64(key XOR splitmix64(seed))``: a keyed, uniform
  pseudo-random score per (subset seed, item).
- **Quotas** (`leaf_quotas`): the target is split top-down by water-filling over the tree
  (`curation.sampling.grouped_water_fill`, one seeded RNG per level; its remainder tie-break
  draws one number per cluster in cluster-id order, so it depends on the seed and the tree,
  never on the items' storage order).
- **Inside a leaf** (`LeafSelector`): items are ranked by (rank hash, key) for "random", by
  (distance, rank hash, key) for "closest"; the leaf's min(quota, size) first are taken
  (bottom-k). With quota q over s items each taken item gets q // s copies, +1 for the first
  q % s of them (the multiplier). Only a leaf's membership decides its selection: an item
  leaves only when its leaf's quota shrinks or a newcomer outranks it. (Two distinct ids
  with the same 64-bit key, p ~ n^2 / 2^65, would tie; the earlier-fed one wins.)
- **Sticky** (`stability="sticky"`, opt-in): the caller passes tier 0 for the previous
  version's members of the leaf, 1 for the others; tier ranks before the score, so an old
  member leaves only when the leaf's quota shrinks (or it left the leaf / the pool).

This is the one sampler: the platform's subsets stream it over the assignments table
(`curation.subsets.select_subsets`), `curate sample` and Python callers run it in memory
(`sample_rows`); the same tree, item ids, config and seed give the same subset either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .config import SampleConfig
from .hashing import blake2b_u64, sorted_ids_sha256
from .sampling import group_starts, grouped_water_fill, water_fill

if TYPE_CHECKING:  # hierarchy imports this module (tree_paths)
    from .hierarchy import Hierarchy

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def item_keys(item_ids) -> np.ndarray:
    """(n,) uint64 key of each item_id (a list of str or a pyarrow string array): the
    BLAKE2b digest with digest_size=8 of its UTF-8 bytes, read little-endian."""
    import pyarrow as pa

    if isinstance(item_ids, pa.Array | pa.ChunkedArray):
        if item_ids.null_count:
            raise ValueError("item ids must not be null")
        raw = item_ids.cast(pa.binary()).to_pylist()
    else:
        raw = [i.encode() for i in item_ids]
    return blake2b_u64(raw)


def rank_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """Keyed score of each item for one subset seed (uniform over uint64)."""
    s = splitmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF))
    return splitmix64(np.asarray(keys, np.uint64) ^ s)


def tree_paths(parents: list[np.ndarray], leaf: np.ndarray) -> np.ndarray:
    """(n, L) cluster ids per level (column 0 = leaf) from leaf ids and the parent arrays
    (parents[l] maps level l+1 cluster ids to level l+2's, 0-based l)."""
    leaf = np.asarray(leaf, np.int64)
    paths = np.empty((leaf.size, len(parents) + 1), np.int64)
    paths[:, 0] = leaf
    for level, parent in enumerate(parents):
        paths[:, level + 1] = np.asarray(parent, np.int64)[paths[:, level]]
    return paths


def level_sizes(leaf_sizes: np.ndarray, parents: list[np.ndarray],
                n_clusters: list[int] | None = None) -> list[np.ndarray]:
    """Items (or copies) beneath every cluster of every level, from the leaf sizes
    (O(#clusters)). Without `n_clusters` a level ends at its highest cluster with children;
    with it (clusters per level, leaves first) every level has at least that many entries."""
    sizes = [np.asarray(leaf_sizes, np.int64)]
    for level, parent in enumerate(parents, start=1):
        parent = np.asarray(parent, np.int64)
        n_up = int(parent.max(initial=-1)) + 1
        if n_clusters is not None:
            n_up = max(n_up, int(n_clusters[level]))
        sizes.append(np.bincount(parent, weights=sizes[-1], minlength=n_up).astype(np.int64))
    return sizes


def leaf_quotas(
    leaf_sizes: np.ndarray, parents: list[np.ndarray], config: SampleConfig
) -> list[np.ndarray]:
    """Quota of every cluster of every level (index 0 = leaves), water-filled top-down.

    Capacity of a cluster = items beneath it x multiplier; raises when the target exceeds
    the whole pool's capacity.
    """
    sizes = level_sizes(leaf_sizes, parents)
    capacity = [s * config.multiplier for s in sizes]
    total = int(capacity[-1].sum())
    if config.target_size > total:
        raise ValueError(
            f"target_size={config.target_size} exceeds what the pool can give: "
            f"{int(sizes[-1].sum())} items x multiplier {config.multiplier} = {total}"
        )
    rngs = [np.random.default_rng(s)
            for s in np.random.SeedSequence(config.seed).spawn(len(sizes))]
    quotas = [np.zeros(0, np.int64)] * len(sizes)
    quotas[-1] = water_fill(capacity[-1], config.target_size, rngs[-1])
    for level in range(len(sizes) - 2, -1, -1):
        quotas[level] = grouped_water_fill(
            np.asarray(parents[level], np.int64), capacity[level], quotas[level + 1], rngs[level]
        )
    return quotas


@dataclass
class SubsetSelection:
    """Selected rows sorted by (leaf, rank): each with its key, payload (a row handle the
    caller passed in, e.g. a LanceDB _rowid), leaf, rank in leaf, the leaf's quota, weight."""

    key: np.ndarray  # uint64
    payload: np.ndarray  # uint64
    leaf: np.ndarray  # int64
    rank: np.ndarray  # int64, 0 = first in the leaf
    quota: np.ndarray  # int64, the leaf's quota (copies)
    weight: np.ndarray  # int64 copies of this item, >= 1
    leaf_quota: np.ndarray  # (n_leaves,) int64
    leaf_size: np.ndarray  # (n_leaves,) int64 eligible items per leaf
    leaf_taken: np.ndarray  # (n_leaves,) int64 distinct items taken per leaf

    @property
    def size(self) -> int:
        return int(self.weight.sum())

    def __len__(self) -> int:
        return int(self.key.size)


class LeafSelector:
    """Bottom-k per leaf over batches: feed (leaf, key[, distance], payload) with `add`,
    then `result()`. Keeps at most about 2x the selected rows (candidates are compacted
    to each leaf's best k, and later rows are pre-filtered by the leaf's current k-th score).
    """

    def __init__(self, leaf_quota: np.ndarray, leaf_size: np.ndarray, config: SampleConfig,
                 min_buffer: int = 1 << 20):
        self.config = config
        self.quota = np.asarray(leaf_quota, np.int64)
        self.size = np.asarray(leaf_size, np.int64)
        self.k = np.minimum(self.quota, self.size)
        self.closest = config.strategy == "closest"
        self.threshold = (np.full(self.k.size, np.inf) if self.closest
                          else np.full(self.k.size, np.iinfo(np.uint64).max, np.uint64))
        # tier ranks before the score: 0 = kept from the previous version (sticky), else 1
        self.threshold_tier = np.ones(self.k.size, np.uint8)
        self.min_buffer = min_buffer
        self._parts: list[tuple] = []
        self._buffered = 0
        self._kept = 0

    def add(self, leaf, key, payload, distance=None, tier=None) -> None:
        """`tier` (uint8, optional): 0 ranks an item ahead of every tier-1 item of its leaf
        (sticky: a previous member); None = all 0 (only the score ranks)."""
        leaf = np.asarray(leaf, np.int64)
        key = np.asarray(key, np.uint64)
        tier = (np.zeros(leaf.size, np.uint8) if tier is None
                else np.asarray(tier, np.uint8))
        h = rank_hash(key, self.config.seed)
        if self.closest:
            if distance is None:
                raise ValueError("strategy 'closest' needs the distances")
            primary = np.asarray(distance, np.float64)
            if not np.all(np.isfinite(primary)):
                raise ValueError("distances contain NaN or Inf")
        else:
            primary = h
        t = self.threshold_tier[leaf]
        keep = (self.k[leaf] > 0) & ((tier < t) | ((tier == t)
                                                   & (primary <= self.threshold[leaf])))
        if not keep.all():
            idx = np.flatnonzero(keep)
            leaf, key, h, primary, tier = leaf[idx], key[idx], h[idx], primary[idx], tier[idx]
            payload = np.asarray(payload, np.uint64)[idx]
        self._parts.append((leaf, primary, h, key, np.asarray(payload, np.uint64), tier))
        self._buffered += leaf.size
        if self._buffered > max(2 * self._kept, self.min_buffer):
            self._compact()

    def _compact(self) -> tuple:
        if not self._parts:
            empty = np.zeros(0, np.int64)
            return empty, empty.astype(np.float64), empty.astype(np.uint64), \
                empty.astype(np.uint64), empty.astype(np.uint64), empty.astype(np.uint8)
        leaf, primary, h, key, payload, tier = (np.concatenate(c) for c in zip(
            *self._parts, strict=True))
        keys = (key, h, primary, tier, leaf) if self.closest else (key, h, tier, leaf)
        order = np.lexsort(keys)
        leaf, primary, h, key, payload, tier = (a[order] for a in (leaf, primary, h, key,
                                                                    payload, tier))
        rank = np.arange(leaf.size) - group_starts(leaf)
        keep = rank < self.k[leaf]
        leaf, primary, h, key, payload, tier = (a[keep] for a in (leaf, primary, h, key,
                                                                   payload, tier))
        rank = rank[keep]
        full = np.flatnonzero(rank == self.k[leaf] - 1)  # the k-th of a leaf holding k
        self.threshold[leaf[full]] = primary[full]
        self.threshold_tier[leaf[full]] = tier[full]
        self._parts = [(leaf, primary, h, key, payload, tier)]
        self._buffered = self._kept = leaf.size
        return leaf, primary, h, key, payload, tier

    def result(self) -> SubsetSelection:
        leaf, _, _, key, payload, _ = self._compact()
        n_leaves = self.k.size
        rank = np.arange(leaf.size) - group_starts(leaf)
        taken = np.bincount(leaf, minlength=n_leaves).astype(np.int64)
        if np.any(taken != self.k):
            bad = int(np.flatnonzero(taken != self.k)[0])
            raise ValueError(f"leaf {bad}: fed {taken[bad]} eligible items, expected "
                             f"{self.k[bad]} (the leaf sizes do not match the rows fed)")
        q, s = self.quota[leaf], np.maximum(self.size[leaf], 1)
        weight = q // s + (rank < q % s)
        return SubsetSelection(key=key, payload=payload, leaf=leaf, rank=rank, quota=q,
                               weight=weight.astype(np.int64), leaf_quota=self.quota,
                               leaf_size=self.size, leaf_taken=taken)


def select(
    leaf: np.ndarray,
    key: np.ndarray,
    parents: list[np.ndarray],
    n_leaves: int,
    config: SampleConfig,
    distance: np.ndarray | None = None,
    payload: np.ndarray | None = None,
    tier: np.ndarray | None = None,
) -> SubsetSelection:
    """In-memory convenience: quotas from the leaf sizes, then one LeafSelector pass.
    `payload` defaults to the row index; `tier` as in `LeafSelector.add`."""
    leaf = np.asarray(leaf, np.int64)
    sizes = np.bincount(leaf, minlength=n_leaves).astype(np.int64)
    quotas = leaf_quotas(sizes, parents, config)
    selector = LeafSelector(quotas[0], sizes, config)
    if payload is None:
        payload = np.arange(leaf.size, dtype=np.uint64)
    selector.add(leaf, key, payload, distance, tier)
    return selector.result()


@dataclass(frozen=True)
class RowSelection:
    """An in-memory selection by row: the rows taken and how many copies of each a training
    loader should draw."""

    indices: np.ndarray  # unique int64 row indices, sorted
    weights: np.ndarray  # int64 copies per index, >= 1

    @property
    def size(self) -> int:
        return int(self.weights.sum())


def row_ids(n: int) -> list[str]:
    """Ids of items known only by their row (no item_id): the row numbers "0", "1", ..."""
    return [str(row) for row in range(n)]


def sample_rows(hierarchy: Hierarchy, leaf: np.ndarray, config: SampleConfig, item_ids=None,
                distance: np.ndarray | None = None) -> RowSelection:
    """The platform's subset of items placed in `hierarchy` (their `leaf` ids), in memory:
    the same tree, item ids, config and seed give the rows of the items the pool's subset
    holds. `item_ids` (list of str or pyarrow strings, one per row) key the items; without
    them the row numbers do (`row_ids`). `distance` to the leaf centroid: for "closest"."""
    leaf = np.asarray(leaf, np.int64)
    n_leaves = int(hierarchy.centroids[0].shape[0])
    if leaf.size and (leaf.min() < 0 or leaf.max() >= n_leaves):
        raise ValueError(f"leaf ids must lie in 0..{n_leaves - 1} (the tree's leaves), got "
                         f"{leaf.min()}..{leaf.max()}")
    keys = item_keys(row_ids(leaf.size) if item_ids is None else item_ids)
    if keys.size != leaf.size:
        raise ValueError(f"{keys.size} item ids for {leaf.size} items: give one id per row")
    chosen = select(leaf, keys, hierarchy.parents, n_leaves, config, distance=distance)
    order = np.argsort(chosen.payload)
    return RowSelection(indices=chosen.payload[order].astype(np.int64),
                        weights=chosen.weight[order])


# --- churn ----------------------------------------------------------------------------


@dataclass
class Churn:
    entered: int
    left: int
    forced_minimum: int  # had to leave: shrunk leaf quotas + items no longer eligible
    fair_minimum: int  # forced_minimum + the newcomers' expected share of their leaves
    comparable: bool = True  # False when the two selections come from different trees

    def as_dict(self) -> dict:
        return {"entered": self.entered, "left": self.left,
                "forced_minimum": self.forced_minimum, "fair_minimum": self.fair_minimum,
                "comparable": self.comparable}


def entered_left(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in current not previous, in previous not current) of two id/key arrays."""
    previous, current = np.asarray(previous), np.asarray(current)
    return np.setdiff1d(current, previous), np.setdiff1d(previous, current)


def churn(
    previous_keys: np.ndarray,
    previous_leaf: np.ndarray,
    current: SubsetSelection,
    previous_leaf_size: np.ndarray | None = None,
    gone_from_pool: int = 0,
    comparable: bool = True,
) -> Churn:
    """Churn of `current` vs a previous selection (its keys and their leaves).

    forced_minimum: what any selection under the new quotas had to drop: the sum over
    leaves of max(0, previously taken - now taken), plus previous items no longer eligible
    (`gone_from_pool`: removed, taken down). fair_minimum adds what an unbiased sampler must
    give newcomers: per leaf, its growth (now - before, from `previous_leaf_size`) x now
    taken / now size, i.e. the expected number of newcomers in an unbiased draw, each of
    which displaces an old item unless the quota grew by as much. Both are capped by `left`
    when the trees differ (`comparable=False`: every leaf id changed meaning).
    """
    entered, left = entered_left(previous_keys, current.key)
    if not comparable:
        return Churn(int(entered.size), int(left.size), int(left.size), int(left.size), False)
    n = current.leaf_taken.size
    prev_leaf = np.asarray(previous_leaf, np.int64)
    prev_taken = np.bincount(prev_leaf[prev_leaf < n], minlength=n)[:n]
    now = current.leaf_taken
    shrink = np.maximum(prev_taken - now, 0)
    forced = int(shrink.sum()) + int(gone_from_pool)
    fair = forced
    if previous_leaf_size is not None:
        before = np.zeros(n, np.int64)
        m = min(n, len(previous_leaf_size))
        before[:m] = np.asarray(previous_leaf_size, np.int64)[:m]
        growth = np.maximum(current.leaf_size - before, 0)
        share = growth * now / np.maximum(current.leaf_size, 1)
        grown_quota = np.maximum(now - prev_taken, 0)
        fair += int(np.rint(np.maximum(share - grown_quota, 0).sum()))
    return Churn(entered=int(entered.size), left=int(left.size), forced_minimum=forced,
                 fair_minimum=fair, comparable=True)


# --- manifest ---------------------------------------------------------------------------


@dataclass
class Manifest:
    sha256: str
    count: int
    copies: int
    config: dict
    seed: int
    fit_version: int
    table_versions: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sha256": self.sha256, "count": self.count, "copies": self.copies,
                "config": self.config, "seed": self.seed, "fit_version": self.fit_version,
                "table_versions": self.table_versions}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def manifest(item_ids, weights, config: SampleConfig, fit_version: int,
             table_versions: dict | None = None) -> Manifest:
    return Manifest(sha256=sorted_ids_sha256(item_ids), count=len(item_ids),
                    copies=int(np.asarray(weights).sum()), config=config.model_dump(),
                    seed=config.seed, fit_version=int(fit_version),
                    table_versions=dict(table_versions or {}))
