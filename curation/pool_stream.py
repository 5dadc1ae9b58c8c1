"""A pool's items streamed as fixed-width batches, in bounded memory, for the passes that need
every item: the evaluation of a subset (curation.evaluation.SubsetDraws) and the report.

An item of the pool is a row of the embeddings table (one pinned version); its place in the
tree comes from the assignments table (the row of the current fit), its label from raw's
metadata or a labels file. The three are joined by the 64-bit item key
(curation.selection.item_keys) without holding any of them whole: the keys are split into
`parts` partitions (key mod parts); for each, the assignments and labels of that partition
are held as sorted key maps while the embeddings are streamed past them. Memory: one
partition's maps, (8 + 4 L) B per assigned item and 12 B per labelled item, over `parts`
(chosen so that this stays under JOIN_BUDGET), plus a batch; time: `parts` passes over the
three tables' small columns. An item whose stored assignment is of another fit (or missing)
is placed in the tree from its vector here, a batch at a time.

Each source is a callable that starts a new pass (an iterable of batches), so every
partition reads it again:
- embedded(): (item keys, locators) per batch; a locator says where the item's vector is
  (the embeddings table's row id);
- assigned(): (item keys, fit_version, (b, L) paths) per batch;
- labelled(): (item keys, labels, None where an item has none) per batch, or no labels; a
  pool (or a partition) where no item has one streams with every code -1.

Label codes are handed out in arrival order; `LabelNames.rank()` maps them to sorted label
order at the end, so the figures do not depend on the order the tables are read in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# Bytes of join maps one partition may hold: 10M assigned and labelled items (2-level tree,
# 8 + 8 + 12 B each plus the sort's 8 B) fit in one partition.
JOIN_BUDGET = 512 * 2**20


def partitions(items: int, bytes_per_item: int, budget: int | None = None) -> int:
    """Partitions for `items` join entries of `bytes_per_item` to hold under `budget`
    (default JOIN_BUDGET)."""
    budget = JOIN_BUDGET if budget is None else budget
    return max(1, -(-int(items) * int(bytes_per_item) // int(budget)))


def join_bytes(n_levels: int, labelled: bool) -> int:
    """Bytes per item one partition's maps hold at most while built (keys, values, sort)."""
    return 8 + 4 * n_levels + 8 + (12 + 8 if labelled else 0)


@dataclass(frozen=True)
class PoolBatch:
    keys: np.ndarray  # (b,) uint64
    paths: np.ndarray  # (b, L) int32, every item placed in the current tree
    codes: np.ndarray | None  # (b,) int32 label codes, -1 where an item has none
    locators: np.ndarray  # (b,) uint64


class KeyMap:
    """Sorted item keys with a value per key: a partition of a join."""

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        order = np.argsort(keys, kind="stable")
        self.keys, self.values = keys[order], values[order]

    @classmethod
    def build(cls, parts: Iterable[tuple[np.ndarray, np.ndarray]], value_shape: tuple,
              dtype) -> KeyMap:
        keys, values = [], []
        for k, v in parts:
            keys.append(np.asarray(k, dtype=np.uint64))
            values.append(np.asarray(v, dtype=dtype))
        if not keys:
            return cls(np.empty(0, np.uint64), np.empty((0, *value_shape), dtype))
        return cls(np.concatenate(keys), np.concatenate(values))

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(whether each key is held, its position in `values` where it is)."""
        if self.keys.size == 0:
            return np.zeros(keys.size, bool), np.zeros(keys.size, np.int64)
        at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return self.keys[at] == keys, at

    def get(self, keys: np.ndarray, missing) -> np.ndarray:
        """The value of each key, `missing` where it is not held. An empty map (a pool, or a
        partition, without a single labelled item) holds none: `find`'s positions then point
        past its values and must not index them."""
        held, at = self.find(keys)
        out = np.full((keys.size, *self.values.shape[1:]), missing, self.values.dtype)
        out[held] = self.values[at[held]]
        return out


class LabelNames:
    """Label strings to int32 codes, in arrival order (shared by every partition)."""

    def __init__(self):
        self.codes: dict[str, int] = {}

    def encode(self, labels: Sequence[str | None]) -> np.ndarray:
        get = self.codes.setdefault
        return np.fromiter((-1 if lab is None else get(lab, len(self.codes))
                            for lab in labels), np.int32, count=len(labels))

    def rank(self) -> np.ndarray:
        """The sorted position of each code."""
        names = list(self.codes)
        order = sorted(range(len(names)), key=names.__getitem__)
        rank = np.empty(len(names), np.int32)
        rank[order] = np.arange(len(names), dtype=np.int32)
        return rank


def stream_pool(embedded: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
                assigned: Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                labelled: Callable[[], Iterable[tuple[np.ndarray, Sequence[str | None]]]] | None,
                *, fit_version: int, n_levels: int, place: Callable[[np.ndarray], np.ndarray],
                names: LabelNames | None = None, parts: int = 1) -> Iterator[PoolBatch]:
    """Every embedded item once, as PoolBatch (module docstring). `place(locators)` returns
    the (b, L) paths of items without a current assignment (from their vectors)."""
    names = names if names is not None else LabelNames()
    parts = max(int(parts), 1)
    for part in range(parts):
        def mine(keys: np.ndarray, part: int = part) -> np.ndarray:
            return (np.ones(keys.size, bool) if parts == 1
                    else keys % np.uint64(parts) == np.uint64(part))

        def current(batches):
            for keys, fit_versions, paths in batches:
                keys = np.asarray(keys, dtype=np.uint64)
                keep = mine(keys) & (np.asarray(fit_versions) == fit_version)
                yield keys[keep], np.asarray(paths)[keep]

        tree = KeyMap.build(current(assigned()), (n_levels,), np.int32)
        label_map = None
        if labelled is not None:
            def coded(batches):
                for keys, labels in batches:
                    keys = np.asarray(keys, dtype=np.uint64)
                    codes = names.encode(labels)
                    keep = mine(keys) & (codes >= 0)  # an item without a label: no entry
                    yield keys[keep], codes[keep]

            label_map = KeyMap.build(coded(labelled()), (), np.int32)
        for keys, locators in embedded():
            keys = np.asarray(keys, dtype=np.uint64)
            keep = mine(keys)
            keys, locators = keys[keep], np.asarray(locators, dtype=np.uint64)[keep]
            if keys.size == 0:
                continue
            found, at = tree.find(keys)
            paths = np.empty((keys.size, n_levels), np.int32)
            paths[found] = tree.values[at[found]]
            if not found.all():
                paths[~found] = place(locators[~found])
            codes = None if label_map is None else label_map.get(keys, -1)
            yield PoolBatch(keys, paths, codes, locators)
