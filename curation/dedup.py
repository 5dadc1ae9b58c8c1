"""Semantic dedup inside the tree's leaves (SemDeDup-style; pure core, no Dagster).

Near duplicates (web copies, re-encodings, tiny edits) form tight clusters that a balanced
sampler then over-represents. Inside each leaf of the tree, items whose cosine similarity is
above a threshold collapse to one representative; the subsets sample representatives only.

**The rule** (deterministic, arrival-order-free). The items of a leaf are put in a canonical
order: by their stored distance to the leaf centroid (`<pool>__assignments.distance`), ties by
their 64-bit item key (`curation.selection.item_keys`). Walking that order greedily, an item
joins the most similar representative kept before it whose cosine similarity is strictly above
the threshold (ties: the earlier one), and otherwise becomes a representative itself. So the
item closest to the centroid is always kept, a duplicate is always within the threshold of its
representative (no chains), and the same items give the same representatives whatever order
their drops arrived in: only the leaf's membership decides.

**Bounded cost per leaf.** Vectors are L2-normalised float32 and compared with faiss
(`IndexFlatIP.range_search`). A leaf of more than `leaf_cap` items is cut into consecutive runs
of `leaf_cap` items in the canonical order; each run is compared with itself and with the
representatives kept in the run before it. A pair is missed only when more than `leaf_cap`
items lie between its two items in that order, which a pair above the threshold rarely has:
their similarities to the centroid differ by at most sqrt(2 (1 - threshold)) for normalised
vectors, so they sit close in the order. Range searches go `QUERY_ROWS` queries at a time, so
their results hold at most QUERY_ROWS x 2 x leaf_cap pairs. Memory of one run:
5 x leaf_cap x d x 4 B (the run as read and normalised, the previous run's representatives,
faiss' copies) + QUERY_ROWS x 2 x leaf_cap x 12 B (`memory_bound`). Only the items that have an
earlier neighbour above the threshold are resolved one by one (the greedy order matters for
them); the others are decided by array operations.

**Incremental, from state** (`dedup_pool`). The table `<pool>__near_duplicates` holds one row
per item of the current fit (schema in `curation.store.schema`): its leaf, representative,
similarity and a `config_key` (hash of the fit version, threshold and leaf cap). A run compares,
per leaf, a fingerprint of the pool now (count and wrapping sum of a hash of each eligible
item's key salted with the current config key, from one scan of the assignments' compact
columns) with the same fingerprint of the table's rows (salted with their own config key). Only
the leaves whose fingerprints differ are recomputed: a new drop costs the leaves it touched
(their items' vectors, read by row id), not the pool; a takedown costs the leaves of the items
taken down; a refit or a changed threshold changes every config key, so every leaf is
recomputed. A crash between a leaf's delete and append leaves a mismatch that the next run
repairs. Being order-free, a recomputed leaf may get new representatives (a newcomer closer to
the centroid is kept first): the price of a result that does not depend on history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import DedupConfig
from .hashing import blake2b_u64
from .selection import item_keys, level_sizes, splitmix64
from .store import BATCH_ROWS, READER_RESERVE, PoolStore, rows

QUERY_ROWS = 256  # range-search queries at a time: bounds the pairs held (x 2 x leaf_cap)
SIM_BINS = 10  # histogram of the duplicates' similarity, threshold .. 1
COMPACT_ROW_BYTES = 200  # one item's compact columns (ids, drop, leaf, distance, key, row id)


# --- one leaf ---------------------------------------------------------------------------------


def normalised(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows (a zero row stays zero: similar to nothing)."""
    x = np.ascontiguousarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, np.finfo(np.float32).tiny), np.float32)


def dedup_ordered_leaf(vectors_at: Callable[[np.ndarray], np.ndarray], n: int, threshold: float,
                       leaf_cap: int, query_rows: int = QUERY_ROWS):
    """The greedy rule over the `n` items of one leaf already in canonical order (position 0
    first). `vectors_at(positions)` returns their vectors (any scale). Returns (representative
    position of each item, int64; its similarity, float32: 1 for a representative)."""
    import faiss

    representative = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, np.float32)
    prev_pos = np.empty(0, np.int64)
    prev_x = None
    for start in range(0, n, leaf_cap):
        pos = np.arange(start, min(start + leaf_cap, n), dtype=np.int64)
        x = normalised(vectors_at(pos))
        index = faiss.IndexFlatIP(x.shape[1])
        if prev_x is not None and len(prev_x):
            index.add(prev_x)
        index.add(x)
        n_prev = prev_pos.size
        candidates = np.concatenate([prev_pos, pos])  # index row -> leaf position
        kept = np.ones(pos.size, bool)
        for q in range(0, pos.size, query_rows):
            lims, sims, found = index.range_search(x[q:q + query_rows], float(threshold))
            lims, found = lims.astype(np.int64), found.astype(np.int64)
            query = np.repeat(np.arange(q, q + len(lims) - 1), np.diff(lims))
            # only items before the query in the order: the previous run's representatives,
            # then the run's earlier positions
            earlier = (found < n_prev) | (found - n_prev < query)
            query, found, sims = query[earlier], found[earlier], sims[earlier]
            if query.size == 0:
                continue
            # per query: most similar first, ties to the earlier item
            order = np.lexsort((found, -sims, query))
            query, found, sims = query[order], found[order], sims[order]
            bounds = np.flatnonzero(np.r_[True, query[1:] != query[:-1], True])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                i = query[a]
                for c in range(a, b):  # the first candidate still kept wins
                    j = found[c]
                    if j < n_prev or kept[j - n_prev]:
                        kept[i] = False
                        representative[pos[i]] = candidates[j]
                        similarity[pos[i]] = min(float(sims[c]), 1.0)
                        break
        prev_pos, prev_x = pos[kept], x[kept]
    return representative, similarity


def canonical_order(leaf: np.ndarray, distance: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rows by (leaf, distance to its centroid, item key): the order the rule walks."""
    return np.lexsort((np.asarray(key, np.uint64), np.asarray(distance, np.float64),
                       np.asarray(leaf, np.int64)))


@dataclass
class NearDuplicates:
    """Per input row: the row of its representative (itself when kept) and their similarity."""

    representative: np.ndarray  # int64 row index
    similarity: np.ndarray  # float32

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.representative != np.arange(self.representative.size)

    @property
    def removed(self) -> int:
        return int(self.is_duplicate.sum())


def near_duplicates(leaf, key, distance, vectors: np.ndarray, threshold: float,
                    leaf_cap: int = 4096, query_rows: int = QUERY_ROWS) -> NearDuplicates:
    """The rule in memory over rows given in any order: `leaf` ids, 64-bit item `key`s
    (`selection.item_keys`), `distance` to the leaf centroid, (n, d) `vectors`."""
    leaf = np.asarray(leaf, np.int64)
    order = canonical_order(leaf, distance, key)
    representative = np.arange(leaf.size, dtype=np.int64)
    similarity = np.ones(leaf.size, np.float32)
    sorted_leaf = leaf[order]
    bounds = np.flatnonzero(np.r_[True, sorted_leaf[1:] != sorted_leaf[:-1], True]) \
        if leaf.size else np.zeros(1, np.int64)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        members = order[a:b]
        rep, sim = dedup_ordered_leaf(lambda p, m=members: vectors[m[p]], b - a, threshold,
                                      leaf_cap, query_rows)
        representative[members] = members[rep]
        similarity[members] = sim
    return NearDuplicates(representative, similarity)


def memory_bound(config: DedupConfig, dim: int, largest_leaf: int = 0) -> int:
    """Bytes a dedup run holds at most beyond the interpreter: the compact columns of one
    group of leaves (max(group_items, largest leaf) x COMPACT_ROW_BYTES), one run's vectors
    and faiss' copies (5 x leaf_cap x d x 4 B), one batch of range-search results
    (QUERY_ROWS x 2 x leaf_cap x 12 B), one scan batch and the LanceDB reader's reserve."""
    return int(max(config.group_items, largest_leaf) * COMPACT_ROW_BYTES
               + 5 * config.leaf_cap * dim * 4 + QUERY_ROWS * 2 * config.leaf_cap * 12
               + BATCH_ROWS * COMPACT_ROW_BYTES + READER_RESERVE)


# --- the pool ---------------------------------------------------------------------------------


def config_key(fit_version: int, config: DedupConfig) -> np.uint64:
    """What a row was computed under: the fit and the settings that change the outcome."""
    payload = json.dumps({"fit": int(fit_version), "threshold": float(config.threshold),
                          "leaf_cap": int(config.leaf_cap)}, sort_keys=True)
    return np.uint64(blake2b_u64([payload.encode()])[0])


class _Fingerprints:
    """Per leaf: item count and wrapping sum of splitmix64(item key XOR config key): equal
    for equal memberships under equal settings, whatever the order rows are seen in."""

    def __init__(self, n_leaves: int):
        self.count = np.zeros(n_leaves, np.int64)
        self.total = np.zeros(n_leaves, np.uint64)

    def grow(self, n: int) -> None:
        if n > self.count.size:
            self.count = np.pad(self.count, (0, n - self.count.size))
            self.total = np.pad(self.total, (0, n - self.total.size))

    def add(self, leaf: np.ndarray, key: np.ndarray, salt) -> None:
        leaf = np.asarray(leaf, np.int64)
        if not leaf.size:
            return
        self.grow(int(leaf.max()) + 1)
        self.count += np.bincount(leaf, minlength=self.count.size)
        np.add.at(self.total, leaf, splitmix64(np.asarray(key, np.uint64)
                                               ^ np.asarray(salt, np.uint64)))


def similarity_bin(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Bin of each duplicate's similarity among SIM_BINS equal bins from threshold to 1."""
    at = np.floor((np.asarray(similarity, np.float64) - threshold) / (1.0 - threshold)
                  * SIM_BINS).astype(np.int64)
    return np.clip(at, 0, SIM_BINS - 1)


@dataclass
class DedupOutcome:
    fit_version: int
    threshold: float
    leaf_cap: int
    items: int  # eligible items of the fit (not taken down)
    leaves_recomputed: int
    items_recomputed: int
    removed_per_leaf: np.ndarray  # duplicates per leaf, after this run
    items_per_leaf: np.ndarray
    histogram: np.ndarray  # duplicates per similarity bin (threshold .. 1, SIM_BINS bins)
    table_version: int | None
    largest_leaf: int
    groups: int

    @property
    def removed(self) -> int:
        return int(self.removed_per_leaf.sum())

    def bin_edges(self) -> list[float]:
        return [round(float(e), 4) for e in np.linspace(self.threshold, 1.0, SIM_BINS + 1)]

    def by_level(self, parents: list[np.ndarray], top: int = 5) -> list[dict]:
        """Per level (1 = leaves): duplicates removed, clusters with any, the clusters that
        lost the largest share."""
        n = len(parents) + 1
        removed = level_sizes(self.removed_per_leaf, parents)
        items = level_sizes(self.items_per_leaf, parents)
        out = []
        for level in range(n):
            r, s = removed[level], np.maximum(items[level], 1)
            share = r / s
            worst = np.argsort(-share, kind="stable")[:top]
            out.append({"level": level + 1, "removed": int(r.sum()),
                        "clusters_with_duplicates": int((r > 0).sum()),
                        "largest_shares": [{"cluster": int(c), "removed": int(r[c]),
                                            "items": int(items[level][c]),
                                            "share": round(float(share[c]), 4)}
                                           for c in worst if r[c] > 0]})
        return out


def _eligible(batch, down) -> np.ndarray:
    import pyarrow.compute as pc

    if not len(down):
        return np.ones(batch.num_rows, bool)
    return ~pc.is_in(batch.column("item_id"), value_set=down).to_numpy(zero_copy_only=False)


def _keys(batch) -> np.ndarray:
    if "item_key" in batch.schema.names:
        return batch.column("item_key").to_numpy().astype(np.uint64)
    return item_keys(batch.column("item_id"))


def _groups(leaves: np.ndarray, sizes: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive leaves whose items add up to at most `budget` (a larger leaf alone)."""
    groups, current, held = [], [], 0
    for leaf in leaves:
        size = int(sizes[leaf]) if leaf < sizes.size else 0
        if current and held + size > budget:
            groups.append(np.asarray(current, np.int64))
            current, held = [], 0
        current.append(int(leaf))
        held += size
    if current:
        groups.append(np.asarray(current, np.int64))
    return groups


def _vectors(store: PoolStore, emb, row_ids: np.ndarray) -> np.ndarray:
    """Vectors of these rows of the pinned embeddings table (-1: no vector, a zero row,
    similar to nothing)."""
    dim = emb.schema.field("vector").type.list_size if emb is not None else 1
    x = np.zeros((row_ids.size, dim), np.float32)
    have = row_ids >= 0
    if have.any():
        x[have] = store.vectors_by_row(emb, row_ids[have].astype(np.uint64))
    return x


def dedup_pool(store: PoolStore, fit, config: DedupConfig,
               batch_rows: int = BATCH_ROWS) -> DedupOutcome:
    """Bring `<pool>__near_duplicates` up to date with the pool's current fit and its
    assignments (taken-down items left out), recomputing only the leaves whose membership or
    settings changed (module docstring). `fit`: the pool's `FitRecord`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fit_version = int(fit.fit_version)
    n_leaves = int(fit.hierarchy.centroids[0].shape[0])
    salt = config_key(fit_version, config)
    down = store.taken_down_ids()
    assignments = store.table("assignments")
    if assignments is None:
        raise ValueError(f"pool {store.pool_name} has no assignments yet")
    assignments.checkout(assignments.version)  # every pass reads one version
    need_id = len(down) or "item_key" not in assignments.schema.names
    compact = ["level_1", "item_key"] + (["item_id"] if need_id else [])
    where = f"fit_version = {fit_version}"

    now = _Fingerprints(n_leaves)
    for batch in store.scan("assignments", compact, where, batch_rows, table=assignments):
        ok = _eligible(batch, down)
        now.add(batch.column("level_1").to_numpy()[ok], _keys(batch)[ok], salt)

    stored = _Fingerprints(n_leaves)
    removed = np.zeros(n_leaves, np.int64)
    hist = np.zeros((n_leaves, SIM_BINS), np.int64)
    for batch in store.scan("near_duplicates", ["leaf", "item_key", "representative_key",
                                                "similarity", "config_key"], None, batch_rows):
        leaf = batch.column("leaf").to_numpy().astype(np.int64)
        key = batch.column("item_key").to_numpy().astype(np.uint64)
        stored.add(leaf, key, batch.column("config_key").to_numpy().astype(np.uint64))
        dup = (key != batch.column("representative_key").to_numpy()) & (leaf < n_leaves)
        removed += np.bincount(leaf[dup], minlength=n_leaves)[:n_leaves]
        sims = batch.column("similarity").to_numpy()[dup]
        np.add.at(hist, (leaf[dup], similarity_bin(sims, config.threshold)), 1)
    size = max(now.count.size, stored.count.size)
    now.grow(size)
    stored.grow(size)
    touched = np.flatnonzero((now.count != stored.count) | (now.total != stored.total))

    emb = store.table("embeddings")
    if emb is not None:
        emb.checkout(emb.version)
    table = None
    items_recomputed = 0
    groups = _groups(touched, now.count, config.group_items)
    for group in groups:
        in_group = np.zeros(size, bool)
        in_group[group] = True
        ids, drops, leaves, distances, keys = [], [], [], [], []
        for batch in store.scan("assignments", ["item_id", "drop", "level_1", "distance",
                                                "item_key"], where, batch_rows,
                                table=assignments):
            leaf = batch.column("level_1").to_numpy().astype(np.int64)
            ok = in_group[leaf] & _eligible(batch, down)
            if ok.any():
                take = pa.array(np.flatnonzero(ok))
                ids.append(batch.column("item_id").take(take))
                drops.append(batch.column("drop").take(take))
                leaves.append(leaf[ok])
                distances.append(batch.column("distance").to_numpy()[ok])
                keys.append(_keys(batch)[ok])
        if not ids:
            table = store.write_near_duplicates(group, rows("near_duplicates", {
                f: [] for f in ("item_id", "drop", "leaf", "item_key", "representative",
                                "representative_key", "similarity", "fit_version",
                                "config_key")}))
            removed[group[group < n_leaves]] = 0
            hist[group[group < n_leaves]] = 0
            continue
        leaf, key = np.concatenate(leaves), np.concatenate(keys)
        order = canonical_order(leaf, np.concatenate(distances), key)
        leaf, key = leaf[order], key[order]
        wanted = pa.concat_arrays(ids).take(pa.array(order))
        drop = pa.concat_arrays(drops).take(pa.array(order))
        # the members' rows in the pinned embeddings table (one scan of its id column)
        row_of = np.full(leaf.size, -1, np.int64)
        for batch in store.scan("embeddings", ["item_id"], None, batch_rows, row_id=True,
                                table=emb):
            at = pc.index_in(batch.column("item_id"), value_set=wanted)
            hit = pc.is_valid(at).to_numpy(zero_copy_only=False)
            if hit.any():
                row_of[at.to_numpy(zero_copy_only=False)[hit].astype(np.int64)] = \
                    batch.column("_rowid").to_numpy()[hit].astype(np.int64)
        rep = np.arange(leaf.size, dtype=np.int64)
        sim = np.ones(leaf.size, np.float32)
        bounds = np.flatnonzero(np.r_[True, leaf[1:] != leaf[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            r, s = dedup_ordered_leaf(
                lambda p, leaf_rows=row_of[a:b]: _vectors(store, emb, leaf_rows[p]), b - a,
                config.threshold, config.leaf_cap)
            rep[a:b], sim[a:b] = r + a, s
        data = rows("near_duplicates", {
            "item_id": wanted, "drop": drop, "leaf": leaf.astype(np.int32),
            "item_key": key, "representative": wanted.take(pa.array(rep)),
            "representative_key": key[rep], "similarity": sim,
            "fit_version": np.full(leaf.size, fit_version, np.int64),
            "config_key": np.full(leaf.size, salt, np.uint64),
        })
        table = store.write_near_duplicates(group, data)
        items_recomputed += leaf.size
        dup = rep != np.arange(rep.size)
        known = group[group < n_leaves]
        removed[known] = 0
        hist[known] = 0
        removed += np.bincount(leaf[dup], minlength=n_leaves)[:n_leaves]
        np.add.at(hist, (leaf[dup], similarity_bin(sim[dup], config.threshold)), 1)
    if table is None:
        table = store.table("near_duplicates")
    items_per_leaf = now.count[:n_leaves]
    return DedupOutcome(
        fit_version=fit_version, threshold=float(config.threshold), leaf_cap=config.leaf_cap,
        items=int(items_per_leaf.sum()), leaves_recomputed=int(touched.size),
        items_recomputed=items_recomputed, removed_per_leaf=removed,
        items_per_leaf=items_per_leaf, histogram=hist.sum(axis=0),
        table_version=None if table is None else table.version,
        largest_leaf=int(items_per_leaf.max(initial=0)), groups=len(groups))
