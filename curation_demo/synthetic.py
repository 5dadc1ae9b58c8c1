"""Long-tailed synthetic embedding pools, for tests, benchmarks and the demo.

- `long_tailed_mixture`: one pool, fresh concepts per seed (core tests and benchmarks);
- `fixed_mixture_draw`: points of one fixed mixture, drawn with a seed, so successive drops
  share their concepts (the platform's demo pool, benchmarks and live tests);
- `long_tailed_grid`: the 2-D toy whose concepts touch;
- `zipf_weights` / `mixture_points`: the parts the generators share.

The two mixtures stay two entry points because their RNG layouts differ (fresh concepts
drawn after the labels vs fixed concepts from seed 0), and tests, benchmarks and
docs/METHOD.md pin figures on each: one generator would change one of them.
- `write_vector_drop` / `build_synthetic_drops`: such points as precomputed-vector drops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Probabilities proportional to 1 / rank**exponent, rank 1..n (the long tail)."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def mixture_points(rng: np.random.Generator, means: np.ndarray, scales: np.ndarray,
                   labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian noise around each label's mean (the last draw of `rng`)."""
    noise = rng.normal(size=(labels.size, means.shape[1])) * scales[labels, None]
    return (means[labels] + noise).astype(np.float32), labels.astype(np.int64)


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
    labels = rng.choice(n_components, size=n, p=zipf_weights(n_components, zipf))
    means = rng.normal(0.0, spread, size=(n_components, dim))
    scales = rng.uniform(0.5, 1.5, size=n_components)
    return mixture_points(rng, means, scales, labels)


def long_tailed_grid(
    n: int = 20000, side: int = 5, zipf: float = 1.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D toy: concepts are adjacent unit cells of a side x side grid, with Zipf masses.

    Unlike separated blobs, dense and sparse concepts touch, so plain k-means spends its
    centroids on the dense cells. Returns (points float32 (n, 2), cell label int64 (n,)).
    """
    rng = np.random.default_rng(seed)
    n_cells = side * side
    weights = rng.permutation(zipf_weights(n_cells, zipf))
    labels = rng.choice(n_cells, size=n, p=weights)
    cells = np.stack([labels % side, labels // side], axis=1)
    return (cells + rng.random((n, 2))).astype(np.float32), labels.astype(np.int64)


def write_vector_drop(folder: Path, vectors: np.ndarray, item_ids: list[str],
                      extra: dict | None = None, complete: bool = True) -> Path:
    """One precomputed-vector drop: folder/part-0.parquet (+ _SUCCESS when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    columns = {
        "item_id": pa.array(item_ids, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                    vectors.shape[1]),
        **(extra or {}),
    }
    pq.write_table(pa.table(columns), folder / "part-0.parquet")
    if complete:
        (folder / "_SUCCESS").write_text("")
    return folder


def build_synthetic_drops(landing: Path, prefix: str, n_drops: int, drop_size: int, dim: int,
                          seed: int = 0, first: int = 0, labels: bool = True) -> list[str]:
    """Drops drop-<first>.. of one long-tailed Gaussian mixture (fixed concepts, fresh points
    per drop). With `labels`, a `label` column (the mixture component) rides along as item
    metadata so the balance of a subset can be scored later; without, the drops hold item_id
    and vector only, as a web-scale SSL pool's do (the `demo` pool's: `curate demo --pool
    demo`). The points are the same either way. Swap this function for real data (images)."""
    import pyarrow as pa

    drops = []
    for d in range(first, first + n_drops):
        x, components = fixed_mixture_draw(drop_size, dim, seed * 1_000_003 + d)
        drop = f"drop-{d:05d}"
        ids = [f"{drop}-{i:06d}" for i in range(drop_size)]
        write_vector_drop(landing / prefix / drop, x, ids,
                          {"label": pa.array(components)} if labels else None)
        drops.append(drop)
    return drops


def fixed_mixture_draw(n: int, dim: int, seed: int, n_components: int = 200, zipf: float = 1.1,
            n_super: int = 20):
    """Points of one fixed long-tailed mixture (means from seed 0), drawn with `seed`.

    Component sizes follow a Zipf law (like long_tailed_mixture); component means are grouped
    around `n_super` super-concepts, as concepts are in real data, so the upper levels of the
    tree have structure to find (with independent means they merge arbitrarily).
    """
    fixed = np.random.default_rng(0)
    centres = fixed.normal(0.0, 6.0, size=(n_super, dim))
    means = centres[fixed.integers(0, n_super, n_components)]
    means = means + fixed.normal(0.0, 2.0, size=(n_components, dim))
    scales = fixed.uniform(0.5, 1.5, size=n_components)
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_components, size=n, p=zipf_weights(n_components, zipf))
    return mixture_points(rng, means, scales, labels)
