"""Subsets of a pool straight from its LanceDB tables (pure core: no Dagster).

`select_subsets` streams the `<pool>__assignments` table twice in batches, reading only
compact columns (pass 1: level_1 and fit_version -> leaf sizes; pass 2: item_id, level_1,
distance, fit_version -> keys, fed to one `LeafSelector` per subset), then fetches item_id
and uri for the selected rows only (by LanceDB row id, on the same pinned table version).
Memory: O(#clusters + selected) whatever the pool's size. Rows assigned by another fit than
the current one are excluded and counted (`stale_excluded`), so are taken-down items and, when
the pool deduplicates, the near duplicates of another item (`excluded_keys`: the sorted item
keys from `<pool>__near_duplicates`, 8 B each; `duplicates_excluded`): subsets sample
representatives only.
A subset with `stability="sticky"` ranks the previous version's members of each leaf first
(read from that version's item_key and leaf columns: O(selected)), when it was built on the
same fit.

If the assignments table carries an `item_key` uint64 column (= `selection.item_keys` of
item_id, written once at assignment), pass 2 reads it instead of hashing every id.

Tables (names from `naming.table(pool, kind)` = `<pool>__<kind>`):
- `<pool>__subset_<name>`: item_id, uri, weight, path (fixed list of L cluster ids, leaf
  first), leaf, quota (the leaf's), rank (in the leaf, 0 first), leaf_size (eligible items
  of the leaf), item_key (uint64, `selection.item_keys`), fit_version. Rows sorted by
  (leaf, rank). Every materialisation is one new LanceDB version: pin it to reproduce.
- `<pool>__takedowns`: the audit table of takedowns (`curation.takedowns`).

The tables are opened, and their schemas declared, by the pool's `curation.store.PoolStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import SampleConfig
from .selection import (
    Churn,
    LeafSelector,
    SubsetSelection,
    churn,
    item_keys,
    leaf_quotas,
    level_sizes,
    manifest,
    tree_paths,
)
from .store import PoolStore, fetch_rows
from .store import rows as table_rows

BATCH_ROWS = 1 << 18


# --- selection over the assignments table ------------------------------------------------


@dataclass
class Previous:
    """The subset's previous version: its keys, leaves, per-leaf sizes, fit version."""

    version: int
    keys: np.ndarray
    leaf: np.ndarray
    leaf_size: np.ndarray  # (n_leaves,) 0 where unknown
    fit_version: int


def read_previous(store: PoolStore, subset: str, n_leaves: int) -> Previous | None:
    table = store.subset_table(subset)
    if table is None:
        return None
    names = table.schema.names
    if not {"item_key", "leaf", "leaf_size", "fit_version"} <= set(names):
        rows = table.to_arrow().select(["item_id", "leaf"])  # written before item keys
        keys, leaf = item_keys(rows["item_id"]), rows["leaf"].to_numpy().astype(np.int64)
        return Previous(table.version, keys, leaf, np.zeros(n_leaves, np.int64), -1)
    rows = table.search().select(["item_key", "leaf", "leaf_size", "fit_version"]).limit(
        None).to_arrow()
    leaf = rows["leaf"].to_numpy().astype(np.int64)
    sizes = np.zeros(n_leaves, np.int64)
    ok = leaf < n_leaves
    sizes[leaf[ok]] = rows["leaf_size"].to_numpy()[ok]
    fit = int(rows["fit_version"][0].as_py()) if rows.num_rows else -1
    return Previous(table.version, rows["item_key"].to_numpy().astype(np.uint64), leaf, sizes,
                    fit)


@dataclass
class SubsetResult:
    name: str
    config: SampleConfig
    selection: SubsetSelection
    rows: object  # pyarrow Table to write (subset table schema)
    churn: Churn | None
    previous_version: int | None
    manifest: dict = field(default_factory=dict)
    sticky_base: int | None = None  # the previous version whose members ranked first


@dataclass
class PoolScan:
    """What the two passes saw: eligible rows per leaf and what was excluded."""

    assignments_version: int
    rows: int
    eligible: int
    stale_excluded: int
    taken_down_excluded: int
    leaf_size: np.ndarray
    subsets: dict[str, SubsetResult] = field(default_factory=dict)
    duplicates_excluded: int = 0  # eligible rows left out as near duplicates


def _duplicates(batch, excluded: np.ndarray | None) -> np.ndarray | None:
    """Mask of the batch's rows whose item key is among the sorted `excluded` keys."""
    if excluded is None or not excluded.size:
        return None
    if "item_key" in batch.schema.names:
        keys = batch.column("item_key").to_numpy().astype(np.uint64)
    else:
        keys = item_keys(batch.column("item_id"))
    at = np.minimum(np.searchsorted(excluded, keys), excluded.size - 1)
    return excluded[at] == keys


def _batches(table, columns: list[str], batch_rows: int, row_id: bool = False):
    query = table.search().select(columns).limit(None)
    if row_id:
        query = query.with_row_id(True)
    yield from query.to_batches(batch_rows)


def _eligible(batch, fit_version: int, takedowns) -> tuple[np.ndarray, int, int]:
    """Mask of rows in the current fit and not taken down; (mask, stale, taken down)."""
    import pyarrow.compute as pc

    fresh = batch.column("fit_version").to_numpy() == fit_version
    mask = fresh
    down = 0
    if len(takedowns):
        gone = pc.is_in(batch.column("item_id"), value_set=takedowns).to_numpy(
            zero_copy_only=False)
        down = int(np.count_nonzero(gone & fresh))
        mask = fresh & ~gone
    return mask, int(fresh.size - np.count_nonzero(fresh)), down


def select_subsets(
    assignments,
    parents: list[np.ndarray],
    n_leaves: int,
    fit_version: int,
    subsets: dict[str, SampleConfig],
    takedowns=None,
    previous: dict[str, Previous | None] | None = None,
    batch_rows: int = BATCH_ROWS,
    clip_to_pool: bool = True,
    excluded_keys: np.ndarray | None = None,
    excluded_version: int | None = None,
) -> PoolScan:
    """Select every subset of one pool from its assignments table (pinned at its current
    version for both passes and the final fetch). `clip_to_pool` lowers a target above the
    pool's capacity to the capacity (as the platform does for a young pool). `excluded_keys`:
    sorted uint64 item keys left out (near duplicates), read from the near-duplicates table at
    `excluded_version` (recorded in the manifest)."""
    import pyarrow as pa

    version = assignments.version
    assignments.checkout(version)
    if takedowns is None:
        takedowns = pa.array([], pa.string())
    previous = dict(previous or {})
    cached = "item_key" in assignments.schema.names  # keys stored by the writer: no hashing
    dedup = excluded_keys is not None and excluded_keys.size > 0
    pass1 = ["level_1", "fit_version"] + (["item_id"] if len(takedowns) else [])
    if dedup:
        pass1.append("item_key" if cached else "item_id")
        pass1 = list(dict.fromkeys(pass1))
    sizes = np.zeros(n_leaves, np.int64)
    rows = stale = down = duplicates = 0
    for batch in _batches(assignments, pass1, batch_rows):
        mask, s, d = _eligible(batch, fit_version, takedowns)
        rows, stale, down = rows + batch.num_rows, stale + s, down + d
        dup = _duplicates(batch, excluded_keys)
        if dup is not None:
            duplicates += int(np.count_nonzero(mask & dup))
            mask = mask & ~dup
        leaf = batch.column("level_1").to_numpy()[mask]
        if leaf.size and (leaf.max() >= n_leaves or leaf.min() < 0):
            raise ValueError(f"leaf id {leaf.max()} outside the tree's {n_leaves} leaves")
        sizes += np.bincount(leaf, minlength=n_leaves)
    eligible = int(sizes.sum())
    scan = PoolScan(version, rows, eligible, stale, down, sizes, duplicates_excluded=duplicates)
    if eligible == 0:
        raise ValueError("the pool has no eligible assigned items (none in the current fit)")

    selectors: dict[str, LeafSelector] = {}
    seen: dict[str, np.ndarray] = {}
    sticky: set[str] = set()
    for name, config in subsets.items():
        capacity = eligible * config.multiplier
        if clip_to_pool and config.target_size > capacity:
            config = config.model_copy(update={"target_size": capacity})
        quotas = leaf_quotas(sizes, parents, config)
        selectors[name] = LeafSelector(quotas[0], sizes, config)
        prev = previous.get(name)
        if prev is not None:
            order = np.argsort(prev.keys)
            previous[name] = Previous(prev.version, prev.keys[order], prev.leaf[order],
                                      prev.leaf_size, prev.fit_version)
            seen[name] = np.zeros(prev.keys.size, bool)
            # leaf ids of another fit mean other clusters: no member is kept across a refit
            if config.stability == "sticky" and prev.fit_version == fit_version:
                sticky.add(name)

    pass2 = ["item_id", "level_1", "distance", "fit_version"] + (["item_key"] if cached else [])
    if cached and not len(takedowns):
        pass2.remove("item_id")
    for batch in _batches(assignments, pass2, batch_rows, row_id=True):
        mask, _, _ = _eligible(batch, fit_version, takedowns)
        dup = _duplicates(batch, excluded_keys)
        if dup is not None:
            mask = mask & ~dup
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        if cached:
            keys = batch.column("item_key").to_numpy().astype(np.uint64)[idx]
        else:
            keys = item_keys(batch.column("item_id").take(pa.array(idx)))
        leaf = batch.column("level_1").to_numpy()[idx]
        dist = batch.column("distance").to_numpy()[idx]
        row_id = batch.column("_rowid").to_numpy()[idx]
        for name, selector in selectors.items():
            tier = None
            if name in seen:
                prev_keys = previous[name].keys
                pos = np.searchsorted(prev_keys, keys)
                hit = pos < prev_keys.size
                hit[hit] = prev_keys[pos[hit]] == keys[hit]
                seen[name][pos[hit]] = True
                if name in sticky:  # a previous member still in the same leaf ranks first
                    member = hit.copy()
                    member[hit] = previous[name].leaf[pos[hit]] == leaf[hit]
                    tier = (~member).astype(np.uint8)
            selector.add(leaf, keys, row_id, dist, tier)

    for name, selector in selectors.items():
        sel = selector.result()
        fetched = fetch_rows(assignments, sel.payload)
        if not np.array_equal(item_keys(fetched["item_id"]), sel.key):
            raise ValueError("fetched rows do not match the selected keys")
        prev = previous.get(name)
        change = None
        if prev is not None:
            comparable = prev.fit_version == fit_version
            change = churn(prev.keys, prev.leaf, sel, previous_leaf_size=prev.leaf_size,
                           gone_from_pool=int((~seen[name]).sum()), comparable=comparable)
        versions = {"assignments": version}
        if excluded_version is not None:
            versions["near_duplicates"] = int(excluded_version)
        m = manifest(fetched["item_id"], sel.weight, selector.config, fit_version, versions)
        rows_out = subset_rows(sel, fetched, parents, fit_version, m.to_json())
        scan.subsets[name] = SubsetResult(name, selector.config, sel, rows_out, change,
                                          None if prev is None else prev.version, m.as_dict(),
                                          prev.version if name in sticky else None)
    return scan


MANIFEST_KEY = b"curation.manifest"


def subset_rows(sel: SubsetSelection, fetched, parents: list[np.ndarray], fit_version: int,
                manifest_json: str = "{}"):
    """The subset table's rows (schema in the module docstring); the manifest (config with
    seed and strategy, fit and table versions read) rides in the schema metadata."""
    import pyarrow as pa

    paths = tree_paths(parents, sel.leaf)
    return table_rows("subset", {
        "item_id": fetched["item_id"],
        "uri": fetched["uri"],
        "weight": sel.weight,
        "path": pa.FixedSizeListArray.from_arrays(pa.array(paths.reshape(-1), pa.int64()),
                                                  paths.shape[1]),
        "leaf": sel.leaf,
        "quota": sel.quota,
        "rank": sel.rank,
        "leaf_size": sel.leaf_size[sel.leaf],
        "item_key": sel.key,
        "fit_version": np.full(len(sel), fit_version, np.int64),
    }, n_levels=paths.shape[1]).replace_schema_metadata({MANIFEST_KEY: manifest_json.encode()})


def table_manifest(table) -> dict:
    """The manifest stored with a subset table version ({} when absent)."""
    import json

    raw = (table.schema.metadata or {}).get(MANIFEST_KEY)
    return json.loads(raw) if raw else {}


def top_level_counts(leaf_size: np.ndarray, parents: list[np.ndarray]) -> np.ndarray:
    return level_sizes(leaf_size, parents)[-1]


def balance_from_counts(counts: np.ndarray) -> dict:
    """label_entropy, labels_hit, top1_share, kl_to_uniform of a distribution over clusters."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        return {"label_entropy": 0.0, "labels_hit": 0, "top1_share": 0.0, "kl_to_uniform": 0.0}
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log(p)).sum())
    return {"label_entropy": entropy, "labels_hit": int((counts > 0).sum()),
            "top1_share": float(counts.max() / total),
            "kl_to_uniform": float(np.log(counts.size) - entropy)}


@dataclass
class PublishedSubset:
    """One subset version written by `publish_subsets`, with what its metadata reports."""

    result: SubsetResult
    table_version: int
    versions_removed: int
    balance: dict  # top-level balance of the subset (`balance_from_counts`)
    manifest: dict


@dataclass
class Publication:
    """What one refresh did: the subsets it wrote, or why it wrote none (`gaps`: the drops of
    an incomplete snapshot, with `versions` the table versions it read)."""

    fit_version: int
    scan: PoolScan | None = None
    pool_balance: dict = field(default_factory=dict)
    published: dict[str, PublishedSubset] = field(default_factory=dict)
    gaps: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    near_duplicates_version: int | None = None


def publish_subsets(store: PoolStore, configs: dict, *, dedup: bool,
                    forget_older: dict[str, bool] | None = None) -> Publication:
    """Refresh the subsets `configs` ({name: SampleConfig}) of the pool from one complete
    snapshot, or publish nothing. The tables read are pinned now (`PoolStore.snapshot`); a
    snapshot in which a drop's embeddings are not all assigned at the current fit
    (`assignment_gaps`) writes no subset version and returns the gaps. Otherwise one scan of
    the pinned assignments selects every subset (`select_subsets`: near duplicates of the
    fit left out when `dedup`), each is written as one new version of its table, and the
    older versions of those named in `forget_older` (a takedown since their last refresh)
    are removed."""
    from .selection import tree_paths
    from .store import erase_old_versions

    fit = store.load_fit()
    if fit is None:
        raise ValueError(f"pool {store.pool_name} has no fitted tree: materialise level_1 first")
    snapshot = store.snapshot(("embeddings", "assignments", "near_duplicates"))
    assignments = snapshot["assignments"]
    if assignments is None or assignments.count_rows() == 0:
        raise ValueError(f"pool {store.pool_name} has no assigned items yet")
    versions = {kind: t.version for kind, t in snapshot.items() if t is not None}
    gaps = store.assignment_gaps(fit, snapshot["embeddings"], assignments)
    if gaps:
        return Publication(fit.fit_version, gaps=gaps, versions=versions)
    parents = fit.hierarchy.parents
    n_leaves = fit.hierarchy.centroids[0].shape[0]
    previous = {name: read_previous(store, name, n_leaves) for name in configs}
    excluded = excluded_version = None
    if dedup:  # representatives only
        dedup_table = snapshot["near_duplicates"]
        excluded = store.near_duplicate_keys(fit.fit_version, dedup_table)
        excluded_version = dedup_table.version if dedup_table is not None else 0
    scan = select_subsets(assignments, parents, n_leaves, fit.fit_version, configs,
                          takedowns=store.taken_down_ids(), previous=previous,
                          excluded_keys=excluded, excluded_version=excluded_version)
    out = Publication(fit.fit_version, scan, balance_from_counts(
        top_level_counts(scan.leaf_size, parents)), versions=versions,
        near_duplicates_version=excluded_version)
    n_top = fit.hierarchy.centroids[-1].shape[0]
    for name in configs:
        result = scan.subsets[name]
        sel = result.selection
        table = store.write_subset(name, result.rows)
        removed = erase_old_versions(table) if (forget_older or {}).get(name) else 0
        top = tree_paths(parents, sel.leaf)[:, -1]
        manifest = {**result.manifest, "table_versions": {
            **result.manifest["table_versions"], table.name: table.version}}
        out.published[name] = PublishedSubset(result, table.version, removed, balance_from_counts(
            np.bincount(top, weights=sel.weight, minlength=n_top)), manifest)
    return out
