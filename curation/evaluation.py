"""How good is a curated subset? Coverage, balance and label figures against a uniform random
subset of the same size drawn with the same seed (pure core, no Dagster).

- coverage: for a seeded sample of pool items, the distance to the nearest selected item
  (median, p90, p99; Euclidean, on normalised vectors for metric "cosine"), and the share of
  the pool's (non-empty) leaf clusters that hold a selected item;
- balance at every level of the tree: entropy, effective number of clusters, top-1 share and
  Gini of the selection over the clusters the pool occupies (curation.metrics.balance_stats);
- with labels: label entropy, labels hit, top-1 share (curation.metrics.selection_label_stats)
  and the balanced accuracy (mean per-class recall) of a k-NN classifier (cosine, majority
  vote of k neighbours) trained on the selection and tested on a class-balanced sample of the
  pool held out from training.
"""

from __future__ import annotations

import numpy as np

from .hierarchy import normalize_rows, validate_points
from .metrics import balance_stats, selection_label_stats

COVERAGE_SAMPLE = 5000
KNN_K = 20
TEST_PER_CLASS = 100


PROBE_STREAM = 0x5EED  # seed-sequence key of the coverage probe, apart from the baseline's


def random_selection(n_items: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a uniform random subset of `size` of `n_items` rows (seeded)."""
    if not 0 <= size <= n_items:
        raise ValueError(f"cannot draw {size} of {n_items} items")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=size, replace=False)).astype(np.int64)


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    if metric not in ("l2", "cosine"):
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    x = validate_points(x)
    return normalize_rows(x).astype(np.float32) if metric == "cosine" else x


def nearest_distances(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Euclidean distance of every query to its nearest base vector (exact, faiss)."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    d2, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return np.sqrt(np.maximum(d2[:, 0], 0.0)).astype(np.float64)


def coverage(x: np.ndarray, selected: np.ndarray, leaf: np.ndarray | None = None,
             sample: int = COVERAGE_SAMPLE, seed: int = 0, metric: str = "l2") -> dict:
    """Distances from a seeded sample of pool rows to the nearest selected row, and the share
    of the pool's leaf clusters represented in the selection (when `leaf` is given)."""
    x = _prepare(x, metric)
    selected = np.asarray(selected, dtype=np.int64)
    if selected.size == 0:
        raise ValueError("coverage of an empty selection")
    # Its own stream: with default_rng(seed) the probe would replay the draws of the random
    # baseline (random_selection), so the baseline would "cover" its own probe at distance 0.
    rng = np.random.default_rng([seed, PROBE_STREAM])
    probe = rng.choice(x.shape[0], size=min(sample, x.shape[0]), replace=False)
    d = nearest_distances(x[probe], x[selected])
    out = {
        "probe_items": int(probe.size),
        "median": float(np.median(d)),
        "p90": float(np.quantile(d, 0.9)),
        "p99": float(np.quantile(d, 0.99)),
    }
    if leaf is not None:
        leaf = np.asarray(leaf, dtype=np.int64)
        out["leaf_share"] = float(np.unique(leaf[selected]).size / np.unique(leaf).size)
    return out


def level_balance(paths: np.ndarray, selected: np.ndarray,
                  weights: np.ndarray | None = None) -> dict[str, dict]:
    """Balance of the selection at every level, over the clusters that hold pool items."""
    paths = np.asarray(paths, dtype=np.int64)
    if paths.ndim == 1:
        paths = paths[:, None]
    out = {}
    for level in range(paths.shape[1]):
        ids = paths[:, level]
        present = np.unique(ids)  # clusters that hold pool items, sorted
        where = np.searchsorted(present, ids[selected])
        counts = np.bincount(where, weights=weights, minlength=present.size)
        out[f"level_{level + 1}"] = {"clusters": int(present.size), **balance_stats(counts)}
    return out


def balanced_test_split(labels: np.ndarray, per_class: int = TEST_PER_CLASS,
                        seed: int = 0) -> np.ndarray:
    """Sorted rows of a class-balanced test sample: per class min(per_class, half the class),
    at least one item of every class with two or more (the rest stays available to train)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.lexsort((rng.random(labels.size), inverse))
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(labels.size, dtype=np.int64)
    rank[order] = np.arange(labels.size) - np.repeat(starts, counts)
    take = np.minimum(per_class, counts // 2)
    return np.flatnonzero(rank < take[inverse]).astype(np.int64)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                k: int = KNN_K) -> np.ndarray:
    """Cosine k-NN: majority vote of the k most similar training rows (ties: the larger
    summed similarity). train_y are dense ints 0..C-1. Vectorised with faiss inner product."""
    import faiss

    train_y = np.asarray(train_y, dtype=np.int64)
    a = normalize_rows(np.asarray(train_x, dtype=np.float32)).astype(np.float32)
    b = normalize_rows(np.asarray(test_x, dtype=np.float32)).astype(np.float32)
    k = min(k, a.shape[0])
    index = faiss.IndexFlatIP(a.shape[1])
    index.add(np.ascontiguousarray(a))
    sim, nn = index.search(np.ascontiguousarray(b), k)
    n_classes = int(train_y.max()) + 1
    votes = train_y[nn] + n_classes * np.arange(b.shape[0])[:, None]
    count = np.bincount(votes.ravel(), minlength=b.shape[0] * n_classes)
    mass = np.bincount(votes.ravel(), weights=sim.ravel(), minlength=b.shape[0] * n_classes)
    # votes first, similarity as tie-break (mass <= k, so scaled counts dominate)
    score = count.reshape(-1, n_classes) * (2.0 * k + 2.0) + mass.reshape(-1, n_classes)
    return np.argmax(score, axis=1)


def knn_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 k: int = KNN_K) -> dict:
    """Accuracy and balanced accuracy on `test` of a k-NN trained on rows `train` (test rows
    are removed from the training rows first)."""
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    y = y.reshape(-1)
    train = np.setdiff1d(np.asarray(train, dtype=np.int64), test)
    if train.size == 0 or test.size == 0:
        return {"train_items": int(train.size), "test_items": int(test.size),
                "accuracy": 0.0, "balanced_accuracy": 0.0}
    predicted = knn_predict(x[train], y[train], x[test], k)
    correct = predicted == y[test]
    classes, inverse = np.unique(y[test], return_inverse=True)
    recall = np.bincount(inverse, weights=correct) / np.bincount(inverse)
    return {"train_items": int(train.size), "test_items": int(test.size),
            "accuracy": float(correct.mean()), "balanced_accuracy": float(recall.mean())}


def _side(x, paths, rows, weights, labels, test, *, seed, metric, sample, k) -> dict:
    out = {
        "items": int(rows.size),
        "coverage": coverage(x, rows, paths[:, 0], sample=sample, seed=seed, metric=metric),
        "balance": level_balance(paths, rows, weights),
    }
    if labels is not None:
        out["labels"] = selection_label_stats(labels[rows], weights)
        out["knn"] = knn_accuracy(x, labels, rows, test, k)
    return out


def evaluate_selection(x: np.ndarray, paths: np.ndarray, selected: np.ndarray,
                       weights: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                       seed: int = 0, metric: str = "l2", coverage_sample: int = COVERAGE_SAMPLE,
                       k: int = KNN_K, test_per_class: int = TEST_PER_CLASS) -> dict:
    """Curated vs same-size uniform random selection (same seed) on pool rows x (n, d) with
    cluster paths (n, L). selected: row indices (unique); weights: copies per selected row;
    labels: (n,) per row, or None. Returns {"curated": {...}, "random": {...}, "pool": {...},
    "worse_than_random": [reasons]}."""
    x = _prepare(x, metric)
    paths = np.asarray(paths, dtype=np.int64)
    if paths.ndim == 1:
        paths = paths[:, None]
    if paths.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} vectors but {paths.shape[0]} cluster paths")
    selected = np.asarray(selected, dtype=np.int64)
    if np.unique(selected).size != selected.size:
        raise ValueError("selected rows must be unique (give copies as weights)")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    test = None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
        test = balanced_test_split(labels, test_per_class, seed)
    baseline = random_selection(x.shape[0], selected.size, seed)
    opts = dict(seed=seed, metric="l2", sample=coverage_sample, k=k)  # x is prepared already
    curated = _side(x, paths, selected, weights, labels, test, **opts)
    uniform = _side(x, paths, baseline, None, labels, test, **opts)
    pool = {"items": int(x.shape[0]), "balance": level_balance(paths, np.arange(x.shape[0]))}
    if labels is not None:
        pool["labels"] = selection_label_stats(labels)
    return {"curated": curated, "random": uniform, "pool": pool,
            "worse_than_random": worse_than_random(curated, uniform)}


def worse_than_random(curated: dict, uniform: dict, tol: float = 1e-9) -> list[str]:
    """Reasons the curated side loses to random on coverage or balance (empty: it does not).

    Coverage: the p99 distance from pool items to the nearest selected item (the tail a
    balanced subset is meant to reach: a uniform one wins the median, spending its budget where
    the pool is dense) and the share of leaf clusters represented. Balance: entropy over the
    top-level clusters."""
    reasons = []
    c, r = curated["coverage"], uniform["coverage"]
    if c["p99"] > r["p99"] + tol:
        reasons.append(f"coverage p99 distance {c['p99']:.4g} > random {r['p99']:.4g}")
    if c.get("leaf_share", 1.0) < r.get("leaf_share", 0.0) - tol:
        reasons.append(f"leaf share {c['leaf_share']:.4g} < random {r['leaf_share']:.4g}")
    top = list(curated["balance"])[-1]  # level_L
    ce, re_ = curated["balance"][top]["entropy"], uniform["balance"][top]["entropy"]
    if ce < re_ - tol:
        reasons.append(f"{top} entropy {ce:.4g} < random {re_:.4g}")
    return reasons
