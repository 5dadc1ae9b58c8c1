"""Balance metrics shown for every level and every selection."""

from __future__ import annotations

import numpy as np


def _entropy(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a size distribution: 0 = perfectly even, towards 1 = one giant."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * ranks - n - 1) @ x / (n * x.sum()))


def cluster_size_stats(sizes: np.ndarray) -> dict[str, float]:
    """Distribution of cluster sizes (number of items beneath each cluster)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0:
        raise ValueError("cluster_size_stats needs at least one cluster")
    entropy = _entropy(sizes)
    return {
        "n_clusters": int(sizes.size),
        "empty": int((sizes == 0).sum()),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
        "mean": float(sizes.mean()),
        "entropy": entropy,
        "effective_clusters": float(np.exp(entropy)),
        "gini": gini(sizes),
    }


def balance_stats(counts: np.ndarray) -> dict[str, float]:
    """Balance of a selection over clusters, from its count (or total weight) per cluster:
    entropy (nats), effective number of clusters (exp entropy), top-1 share, Gini."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    entropy = _entropy(counts)
    return {
        "entropy": entropy,
        "effective_clusters": float(np.exp(entropy)) if total > 0 else 0.0,
        "top1_share": float(counts.max() / total) if total > 0 else 0.0,
        "gini": gini(counts),
    }


def size_histogram(sizes: np.ndarray, n_bins: int = 12) -> dict[str, int]:
    """Log-spaced histogram of cluster sizes, labelled by bin edges (for the UI)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    top = max(int(sizes.max(initial=0)), 1)
    edges = np.unique(np.geomspace(1, top + 1, n_bins + 1).astype(np.int64))
    counts, _ = np.histogram(sizes, bins=np.concatenate([[0], edges]))
    labels = ["0"] + [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return dict(zip(labels, counts.tolist(), strict=True))


def selection_label_stats(
    labels: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Balance of a selection whose items carry known labels (weights count copies)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return {"label_entropy": 0.0, "labels_hit": 0, "top1_share": 0.0}
    _, inverse = np.unique(labels, return_inverse=True)
    return label_stats(np.bincount(inverse, weights=weights))


def label_stats(counts: np.ndarray) -> dict[str, float]:
    """selection_label_stats from the items (or weight) per label."""
    counts = np.asarray(counts)
    if counts.sum() <= 0:
        return {"label_entropy": 0.0, "labels_hit": 0, "top1_share": 0.0}
    return {
        "label_entropy": _entropy(counts),
        "labels_hit": int((counts > 0).sum()),
        "top1_share": float(counts.max() / counts.sum()),
    }


def kl_to_uniform(labels: np.ndarray, n_labels: int) -> float:
    """KL divergence (nats) of the label distribution from uniform over n_labels."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_labels)
    return float(np.log(n_labels) - _entropy(counts))
