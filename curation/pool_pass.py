"""A pool read as one pinned, complete snapshot: the evaluation's and the report's pass.

`open_snapshot` pins the tables a fan-in reader needs (embeddings, assignments, raw, the
subset's table) at their versions now and refuses, with `SnapshotIncomplete` naming the drops,
a snapshot in which a drop's embeddings are not all assigned at the current fit
(`PoolStore.assignment_gaps`) or the subset was drawn on another fit: such a reader would
judge a subset against part of the pool, or against a tree it was not drawn on.

`pool_pass` streams the snapshot past its tree and labels (curation.pool_stream: item keys,
places in the tree and label codes, a batch at a time); vectors are read only for a bounded,
seeded sample, by row id from the pinned embeddings table (`PoolStore.vectors_by_row`).
`evaluate_published_subset` is the evaluation asset's one core call. Memory: the config's bound,
not the pool's (docs/SCALE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .evaluation import SubsetDraws, SubsetEvaluation, evaluate_subset, meta_labels
from .labels import parse_labels_csv, unmatched_note
from .pool_stream import LabelNames, PoolBatch, join_bytes, partitions, stream_pool
from .selection import item_keys
from .settings import join_budget_bytes
from .store import PoolStore, fetch_rows, stream


class SnapshotIncomplete(ValueError):
    """The pool's tables, read now, are not one complete state of the current tree."""

    def __init__(self, reason: str, gaps: dict[str, str], versions: dict[str, int]):
        super().__init__(reason)
        self.gaps, self.versions = gaps, versions


@dataclass(frozen=True)
class Snapshot:
    """Pinned tables of one pool (None: the table does not exist) and the fit they hold."""

    store: PoolStore
    fit: Any  # curation.store.FitRecord
    tables: dict[str, Any]

    @property
    def versions(self) -> dict[str, int]:
        return {kind: t.version for kind, t in self.tables.items() if t is not None}


def open_snapshot(store: PoolStore, kinds=("embeddings", "assignments", "raw"),
                  subset: str | None = None) -> Snapshot:
    """Pin `kinds` (and the subset's table) now; `SnapshotIncomplete` when a drop's
    embeddings are not all assigned at the current fit, or the subset was drawn on another
    fit. ValueError when the pool has no tree or no embeddings."""
    fit = store.load_fit()
    if fit is None:
        raise ValueError(f"pool {store.pool_name} has no fitted tree: materialise level_1 first")
    kinds = [*kinds, *([f"subset_{subset}"] if subset else [])]
    snapshot = Snapshot(store, fit, store.snapshot(kinds))
    if snapshot.tables.get("embeddings") is None:
        raise ValueError(f"pool {store.pool_name} has no embeddings yet")
    gaps = store.assignment_gaps(fit, snapshot.tables["embeddings"],
                                 snapshot.tables.get("assignments"))
    if gaps:
        shown = list(gaps)[:20]
        raise SnapshotIncomplete(
            f"{len(gaps)} drop(s) of pool {store.pool_name} are not all assigned at fit "
            f"{fit.fit_version} in the snapshot read (a re-assignment or a drop's run in "
            f"flight): {', '.join(shown)}{' ...' if len(gaps) > len(shown) else ''}",
            gaps, snapshot.versions)
    table = snapshot.tables.get(f"subset_{subset}") if subset else None
    if table is not None and "fit_version" in table.schema.names and table.count_rows():
        drawn = set(store.fit_versions_of(table))
        if drawn != {fit.fit_version}:
            raise SnapshotIncomplete(
                f"subset {subset} of pool {store.pool_name} was drawn on fit(s) "
                f"{sorted(drawn)}, the tree is fit {fit.fit_version}: its refresh follows the "
                "re-assignment", {}, snapshot.versions)
    return snapshot


@dataclass(frozen=True)
class PoolPass:
    """How to stream a snapshot's pool past its tree and labels: `batches()` starts a pass."""

    embeddings: Any  # the pinned LanceDB table the locators point into
    batches: Callable[[], Iterator[PoolBatch]]
    names: LabelNames
    labelled: bool
    parts: int  # join partitions: passes over the tables' small columns
    notes: list[str] = field(default_factory=list)


def pool_pass(snapshot: Snapshot, labels_file: tuple[str, bytes] | None = None,
              labels: bool = True) -> PoolPass:
    """Every embedded item of the snapshot in its tree, with its label code when the pool has
    labels (`labels_file`: (its name, its bytes), else the items' metadata in raw), streamed
    in bounded batches. A labels file that cannot be trusted raises ValueError naming the
    file, the line and the problem; its ids that match no item are explained in `notes`."""
    store, fit = snapshot.store, snapshot.fit
    table, stored = snapshot.tables["embeddings"], snapshot.tables.get("assignments")
    n_levels = fit.hierarchy.n_levels
    levels = [f"level_{lv}" for lv in range(1, n_levels + 1)]
    notes: list[str] = []

    def embedded():
        for batch in stream(table, ["item_id"], row_id=True):
            yield item_keys(batch["item_id"]), batch["_rowid"].to_numpy()

    def assigned():
        if stored is None:
            return
        keyed = "item_key" in stored.schema.names
        for batch in stream(stored, ["item_key" if keyed else "item_id", "fit_version",
                                     *levels]):
            keys = batch["item_key"].to_numpy() if keyed else item_keys(batch["item_id"])
            yield (keys, batch["fit_version"].to_numpy(),
                   np.stack([batch[c].to_numpy() for c in levels], axis=1))

    labelled = label_source(snapshot, labels_file, notes) if labels else None
    names = LabelNames()
    parts = partitions(table.count_rows(), join_bytes(n_levels, labelled is not None),
                       join_budget_bytes())

    def place(row_ids: np.ndarray) -> np.ndarray:
        return fit.hierarchy.assign(store.vectors_by_row(table, row_ids)).paths

    def batches():
        return stream_pool(embedded, assigned, labelled, fit_version=fit.fit_version,
                           n_levels=n_levels, place=place, names=names, parts=parts)

    return PoolPass(table, batches, names, labelled is not None, parts, notes)


def label_source(snapshot: Snapshot, labels_file: tuple[str, bytes] | None,
                 notes: list[str]):
    """A callable starting a pass over (item keys, labels) batches: the labels file (parsed
    whole: a file the user wrote), else the `label` of raw's metadata, streamed from the
    snapshot's raw table. None when the pool has neither."""
    if labels_file is None:
        raw = snapshot.tables.get("raw")
        if raw is None:
            return None

        def from_meta():
            for batch in stream(raw, ["item_id", "meta"]):
                ids = batch["item_id"].to_pylist()
                found = meta_labels(ids, batch["meta"].to_pylist())
                yield item_keys(ids), [found.get(i) for i in ids]

        return from_meta
    name, data = labels_file
    found = parse_labels_csv(name, data)

    def is_item(ids: list[str]) -> np.ndarray:
        held = snapshot.store.lookup("embeddings", "item_id", ids, ["item_id"])
        known = set() if held is None else set(held["item_id"].to_pylist())
        return np.fromiter((i in known for i in ids), bool, count=len(ids))

    note = unmatched_note(found, is_item)
    if note:
        notes.append(note)
    keys, values = item_keys(list(found)), list(found.values())
    return lambda: [(keys, values)]


def items_by_row(table: Any, row_ids) -> tuple[list[str], list[str]]:
    """(item ids, uris) of rows of a pinned table by row id, in the order asked."""
    got = fetch_rows(table, np.asarray(row_ids, np.uint64), ("item_id", "uri"))
    return got["item_id"].to_pylist(), got["uri"].to_pylist()


@dataclass(frozen=True)
class PublishedEvaluation:
    """One evaluation of a published subset over the snapshot it was read from."""

    outcome: SubsetEvaluation
    fit_version: int
    parts: int
    notes: list[str]
    versions: dict[str, int]


def evaluate_published_subset(store: PoolStore, subset: str, *, seed: int, random_draws: int,
                              metric: str, eval_sample: int,
                              labels_file: tuple[str, bytes] | None = None
                              ) -> PublishedEvaluation:
    """The subset's latest version against `random_draws` seeded random subsets of the same
    size, over one complete snapshot of the pool (`open_snapshot`; raises
    `SnapshotIncomplete` otherwise): one bounded pass keeps what the draws need
    (`SubsetDraws`), then `evaluate_subset`."""
    snapshot = open_snapshot(store, subset=subset)
    table = snapshot.tables.get(f"subset_{subset}")
    keyed = table is not None and "item_key" in table.schema.names
    rows = None if table is None else table.search().select(
        ["item_key" if keyed else "item_id", "weight"]).limit(None).to_arrow()
    if rows is None or rows.num_rows == 0:
        raise ValueError(f"subset {subset} of pool {store.pool_name} is empty or missing")
    passing = pool_pass(snapshot, labels_file)
    draws = SubsetDraws(rows["item_key"].to_numpy() if keyed else item_keys(rows["item_id"]),
                        rows["weight"].to_numpy(), snapshot.fit.hierarchy.n_levels, seed=seed,
                        random_draws=random_draws, labelled=passing.labelled)
    for batch in passing.batches():
        draws.add(batch.keys, batch.paths, batch.codes, batch.locators)
    outcome = evaluate_subset(draws.result(passing.names.rank()),
                              partial(store.vectors_by_row, passing.embeddings),
                              metric=metric, eval_sample=eval_sample)
    return PublishedEvaluation(outcome, snapshot.fit.fit_version, passing.parts, passing.notes,
                               snapshot.versions)
