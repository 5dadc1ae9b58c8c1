"""A torch Dataset over a pinned subset version: what a training job reads.

    from curation.loader import SubsetDataset, subset_loader
    ds = SubsetDataset("fashion", "balanced_5k", version=3)      # pinned: reproducible
    loader = subset_loader(ds, batch_size=64, seed=0)            # weights honoured

Rows are the subset table's version sorted by item_id (the order `curate subset export`
writes), so index i means the same item on every machine. Each item is a dict: item_id, uri,
weight and, when a `load` function is given (e.g. open the image at the uri), `data`.

Weights: with a multiplier some items count more than once. `sampler()` returns a
`WeightedRandomSampler` drawing sum(weights) indices per epoch with probability proportional
to weight (`exact=True`: each index exactly weight times, shuffled: the subset with its
copies); when every weight is 1 it returns None and a plain shuffle does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler


class CopiesSampler(Sampler[int]):
    """Each index exactly `weights[i]` times per epoch, in a seeded shuffled order
    (seed + epoch: call `set_epoch` between epochs for a new order)."""

    def __init__(self, weights: np.ndarray, seed: int = 0):
        self.index = np.repeat(np.arange(len(weights)), np.asarray(weights, np.int64))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.index.size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.permutation(self.index).tolist())


class SubsetDataset(Dataset):
    def __init__(self, pool: str, subset: str, version: int | None = None,
                 lancedb: str | None = None, load: Callable[[str], Any] | None = None):
        from .store import PoolStore

        self.pool, self.subset, self.load = pool, subset, load
        # this constructor is an edge: the LanceDB uri and S3 endpoint come from the settings
        got = PoolStore.from_settings(pool, lancedb).subset_version(
            subset, version, ("item_id", "uri", "weight"))
        # items taken down after this version was written are left out (any version)
        self.version, rows, self.taken_down_excluded = got.version, got.rows, \
            got.taken_down_excluded
        self.item_ids = rows["item_id"].to_pylist()
        self.uris = rows["uri"].to_pylist()
        self.weights = rows["weight"].to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"item_id": self.item_ids[i], "uri": self.uris[i],
                "weight": int(self.weights[i])}
        if self.load is not None:
            item["data"] = self.load(self.uris[i])
        return item

    def sampler(self, seed: int = 0, exact: bool = False) -> Sampler | None:
        if self.weights.size == 0 or np.all(self.weights == 1):
            return None
        if exact:
            return CopiesSampler(self.weights, seed)
        generator = torch.Generator().manual_seed(seed)
        return WeightedRandomSampler(torch.as_tensor(self.weights, dtype=torch.double),
                                     num_samples=int(self.weights.sum()), replacement=True,
                                     generator=generator)


def subset_loader(dataset: SubsetDataset, batch_size: int = 64, seed: int = 0,
                  exact: bool = False, **kwargs) -> DataLoader:
    """A DataLoader honouring the subset's weights (shuffled, seeded)."""
    sampler = dataset.sampler(seed, exact)
    if sampler is None:
        kwargs.setdefault("shuffle", True)
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
