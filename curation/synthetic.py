"""Long-tailed synthetic embedding pools, for tests, benchmarks and the demo."""

from __future__ import annotations

import numpy as np


def long_tailed_mixture(
    n: int = 20000,
    dim: int = 64,
    n_components: int = 200,
    zipf: float = 1.1,
    spread: float = 4.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture whose component sizes follow a Zipf law, like concepts on the web.

    Returns (points float32 (n, dim), component label int64 (n,)).
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_components + 1) ** zipf
    weights /= weights.sum()
    labels = rng.choice(n_components, size=n, p=weights)
    means = rng.normal(0.0, spread, size=(n_components, dim))
    scales = rng.uniform(0.5, 1.5, size=n_components)
    points = means[labels] + rng.normal(size=(n, dim)) * scales[labels, None]
    return points.astype(np.float32), labels.astype(np.int64)


def long_tailed_grid(
    n: int = 20000, side: int = 5, zipf: float = 1.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D toy: concepts are adjacent unit cells of a side x side grid, with Zipf masses.

    Unlike separated blobs, dense and sparse concepts touch, so plain k-means spends its
    centroids on the dense cells. Returns (points float32 (n, 2), cell label int64 (n,)).
    """
    rng = np.random.default_rng(seed)
    n_cells = side * side
    weights = 1.0 / np.arange(1, n_cells + 1) ** zipf
    weights = rng.permutation(weights / weights.sum())
    labels = rng.choice(n_cells, size=n, p=weights)
    cells = np.stack([labels % side, labels // side], axis=1)
    return (cells + rng.random((n, 2))).astype(np.float32), labels.astype(np.int64)
