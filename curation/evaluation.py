"""How good is a curated subset? Coverage, balance and label figures against a uniform random
subset of the same size drawn with the same seed (pure core, no Dagster).

- coverage: for a seeded probe of pool items, the distance to the nearest selected item
  (median, p90, p99; Euclidean, on normalised vectors for metric "cosine"), and the share of
  the pool's (non-empty) leaf clusters that hold a selected item;
- balance at every level of the tree: entropy, effective number of clusters, top-1 share and
  Gini of the selection over the clusters the pool occupies (curation.metrics.balance_stats);
- with labels: label entropy, labels hit, top-1 share (curation.metrics.selection_label_stats)
  and the balanced accuracy (mean per-class recall) of a k-NN classifier (cosine, majority
  vote of k neighbours) trained on the selection and tested on a class-balanced sample of the
  pool held out from training.

Bounded cost (evaluate_selection): vectors are read for a bounded, seeded sample only, never the
whole pool: the coverage probe (`coverage_sample` items), the k-NN test split and each side's
members, each side capped at `eval_sample` members (a keyed subsample of a larger subset; both
sides alike, so the comparison stays fair). Every draw ranks items by a keyed hash of their
64-bit item key (curation.selection), so it is independent of the pool's storage order.
Balance, leaf share and label figures need only small per-item columns and stay exact.

A pool's subset (evaluate_subset): the evaluation asset reads the pool's small columns and
its subset, `index_items` places every item in the current tree (assigning, from their vectors
only, the items whose stored assignment is of another fit), and `evaluate_subset` returns a
`SubsetEvaluation` whose figures, sample note and headline figures are what the asset shows.
Which direction is better for every figure is declared once (`BETTER`): the report, the Dagster
metadata and the check say it from there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .hierarchy import Hierarchy, normalize_rows, validate_points
from .metrics import balance_stats, selection_label_stats
from .selection import item_keys, rank_hash, splitmix64

COVERAGE_SAMPLE = 5000
EVAL_SAMPLE = 100_000  # most members per side whose vectors an evaluation reads
KNN_K = 20
TEST_PER_CLASS = 100


PROBE_STREAM = 0x5EED  # seed-sequence key of the coverage probe, apart from the baseline's
# Keyed-hash streams of the bounded evaluation: each draw gets its own, and none is the
# subset's own rank hash (rank_hash(key, seed)), which would make the "random" baseline
# replay the curated subset's picks inside every leaf.
BASELINE_STREAM = 0xBA5E
SIDE_STREAM = 0x51DE
TEST_STREAM = 0x7E57


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
                        seed: int = 0, scores: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows of a class-balanced test sample: per class min(per_class, half the class),
    at least one item of every class with two or more (the rest stays available to train).
    Inside a class the lowest `scores` are taken (default: seeded random numbers)."""
    labels = np.asarray(labels)
    if scores is None:
        scores = np.random.default_rng(seed).random(labels.size)
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.lexsort((scores, inverse))
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


def keyed_scores(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform uint64 score per item key for one (seed, stream): order-free draws."""
    keys = np.asarray(keys, dtype=np.uint64)
    return rank_hash(splitmix64(keys ^ np.uint64(stream)), seed)


def lowest(scores: np.ndarray, size: int) -> np.ndarray:
    """Sorted positions of the `size` lowest scores (a uniform sample when scores are)."""
    size = min(int(size), scores.size)
    if size <= 0:
        return np.empty(0, np.int64)
    if size == scores.size:
        return np.arange(size, dtype=np.int64)
    return np.sort(np.argpartition(scores, size - 1)[:size]).astype(np.int64)


@dataclass(frozen=True)
class EvaluationPlan:
    """Which pool rows an evaluation draws, and the few whose vectors it reads (`rows`)."""

    baseline: np.ndarray  # uniform random subset, as large as the curated one
    probe: np.ndarray  # coverage probe
    test: np.ndarray | None  # k-NN test split (labels only)
    curated_vectors: np.ndarray  # curated members whose vectors are used (<= eval_sample)
    baseline_vectors: np.ndarray  # baseline members whose vectors are used (<= eval_sample)
    rows: np.ndarray  # sorted union of the four above: the only vectors read

    def sample_info(self, n_items: int, eval_sample: int) -> dict:
        return {
            "pool_items": int(n_items),
            "eval_sample": int(eval_sample),
            "vectors_read": int(self.rows.size),
            "probe_items": int(self.probe.size),
            "test_items": 0 if self.test is None else int(self.test.size),
            "curated_vector_items": int(self.curated_vectors.size),
            "random_vector_items": int(self.baseline_vectors.size),
        }


def plan_evaluation(keys: np.ndarray, selected: np.ndarray, labels: np.ndarray | None = None,
                    *, seed: int = 0, eval_sample: int = EVAL_SAMPLE,
                    coverage_sample: int = COVERAGE_SAMPLE,
                    test_per_class: int = TEST_PER_CLASS) -> EvaluationPlan:
    """The seeded draws of an evaluation over a pool whose rows have 64-bit `keys`."""
    if eval_sample < 1:
        raise ValueError(f"eval_sample must be >= 1, got {eval_sample}")
    keys = np.asarray(keys, dtype=np.uint64)
    selected = np.asarray(selected, dtype=np.int64)
    baseline = lowest(keyed_scores(keys, seed, BASELINE_STREAM), selected.size)
    probe = lowest(keyed_scores(keys, seed, PROBE_STREAM), coverage_sample)
    test = None
    if labels is not None:
        test = balanced_test_split(labels, test_per_class, seed,
                                   scores=keyed_scores(keys, seed, TEST_STREAM))
    side = keyed_scores(keys, seed, SIDE_STREAM)

    def capped(rows: np.ndarray) -> np.ndarray:
        return rows if rows.size <= eval_sample else rows[lowest(side[rows], eval_sample)]

    curated_vectors, baseline_vectors = capped(selected), capped(baseline)
    parts = [probe, curated_vectors, baseline_vectors] + ([] if test is None else [test])
    return EvaluationPlan(baseline, probe, test, curated_vectors, baseline_vectors,
                          np.unique(np.concatenate(parts)))


def _coverage_figures(distances: np.ndarray) -> dict:
    return {
        "probe_items": int(distances.size),
        "median": float(np.median(distances)),
        "p90": float(np.quantile(distances, 0.9)),
        "p99": float(np.quantile(distances, 0.99)),
    }


def _side(v, at, paths, rows, vector_rows, weights, labels, plan, k) -> dict:
    """Figures of one side. v: the read vectors; at(pool rows) -> their positions in v."""
    if rows.size == 0:
        raise ValueError("coverage of an empty selection")
    leaf = paths[:, 0]
    cover = _coverage_figures(nearest_distances(v[at(plan.probe)], v[at(vector_rows)]))
    cover["leaf_share"] = float(np.unique(leaf[rows]).size / np.unique(leaf).size)
    out = {"items": int(rows.size), "coverage": cover,
           "balance": level_balance(paths, rows, weights)}
    if labels is not None:
        out["labels"] = selection_label_stats(labels[rows], weights)
        out["knn"] = knn_accuracy(v, labels[plan.rows], at(vector_rows), at(plan.test), k)
    return out


def evaluate_selection(x: np.ndarray | Callable[[np.ndarray], np.ndarray], paths: np.ndarray,
                       selected: np.ndarray, weights: np.ndarray | None = None,
                       labels: np.ndarray | None = None, *, keys: np.ndarray | None = None,
                       seed: int = 0, metric: str = "l2", coverage_sample: int = COVERAGE_SAMPLE,
                       eval_sample: int = EVAL_SAMPLE, k: int = KNN_K,
                       test_per_class: int = TEST_PER_CLASS) -> dict:
    """Curated vs same-size uniform random selection (same seed) over a pool of n items with
    cluster paths (n, L). x: the pool's vectors (n, d), or a reader called once with sorted
    pool rows that returns their vectors (only plan_evaluation's rows are asked for).
    selected: row indices (unique); weights: copies per selected row; labels: (n,) per row,
    or None; keys: (n,) uint64 item keys (curation.selection.item_keys; default: keyed by
    row position). Returns {"curated": {...}, "random": {...}, "pool": {...}, "sample": {...},
    "worse_than_random": [reasons]}."""
    paths = np.asarray(paths, dtype=np.int64)
    if paths.ndim == 1:
        paths = paths[:, None]
    n = paths.shape[0]
    if not callable(x) and np.shape(x)[0] != n:
        raise ValueError(f"{np.shape(x)[0]} vectors but {n} cluster paths")
    selected = np.asarray(selected, dtype=np.int64)
    if np.unique(selected).size != selected.size:
        raise ValueError("selected rows must be unique (give copies as weights)")
    if selected.size and (selected.min() < 0 or selected.max() >= n):
        raise ValueError(f"selected rows must lie in [0, {n})")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if keys is None:
        keys = splitmix64(np.arange(n, dtype=np.uint64))
    elif np.shape(keys) != (n,):
        raise ValueError(f"keys must have shape ({n},), got {np.shape(keys)}")
    plan = plan_evaluation(keys, selected, labels, seed=seed, eval_sample=eval_sample,
                           coverage_sample=coverage_sample, test_per_class=test_per_class)
    v = x(plan.rows) if callable(x) else np.asarray(x)[plan.rows]
    if v.shape[0] != plan.rows.size:
        raise ValueError(f"asked for {plan.rows.size} vectors, got {v.shape[0]}")
    v = _prepare(v, metric)  # row-wise, so the same as preparing the whole pool

    def at(rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(plan.rows, rows)

    common = dict(paths=paths, labels=labels, plan=plan, k=k)
    curated = _side(v, at, rows=selected, vector_rows=plan.curated_vectors, weights=weights,
                    **common)
    uniform = _side(v, at, rows=plan.baseline, vector_rows=plan.baseline_vectors,
                    weights=None, **common)
    pool = {"items": int(n), "balance": level_balance(paths, np.arange(n))}
    if labels is not None:
        pool["labels"] = selection_label_stats(labels)
    return {"curated": curated, "random": uniform, "pool": pool,
            "sample": plan.sample_info(n, eval_sample),
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


# ---- which direction is better ---------------------------------------------------------------

# Every figure of an evaluation and the direction that is better (None: equal by design).
# Coverage figures are distances from pool items to their nearest selected item: lower is
# better. Top-1 share and Gini measure concentration: lower is more even.
BETTER: dict[str, str | None] = {
    "items": None,
    "median": "lower", "p90": "lower", "p99": "lower",
    "leaf_share": "higher",
    "entropy": "higher", "effective_clusters": "higher", "top1_share": "lower", "gini": "lower",
    "label_entropy": "higher", "labels_hit": "higher",
    "accuracy": "higher", "balanced_accuracy": "higher",
}


def better(figure: str) -> str:
    """'lower is better' or 'higher is better' for a figure of BETTER ('' for items)."""
    direction = BETTER[figure]
    return f"{direction} is better" if direction else ""


# Headline figures (flat metadata keys `<name>_curated`, `<name>_random`): name -> the figure
# of one side, as a path into evaluate_selection's side dict ("top" = the top level).
HEADLINE: dict[str, tuple[str, ...]] = {
    "coverage_p99": ("coverage", "p99"),
    "leaf_share": ("coverage", "leaf_share"),
    "top_entropy": ("balance", "top", "entropy"),
    "label_entropy": ("labels", "label_entropy"),
    "knn_balanced_accuracy": ("knn", "balanced_accuracy"),
}


def headline_figures(report: dict) -> dict[str, float]:
    """`<name>_curated` and `<name>_random` of every HEADLINE figure the report has (label
    figures only with labels)."""
    out = {}
    for name, path in HEADLINE.items():
        if path[0] not in report["curated"]:
            continue
        for side in ("curated", "random"):
            value: Any = report[side]
            for step in path:
                value = value[list(value)[-1] if step == "top" else step]
            out[f"{name}_{side}"] = value
    return out


def headline_directions(report: dict) -> dict[str, str]:
    """{headline name: 'lower is better' / 'higher is better'} of the figures the report has."""
    return {name: better(path[-1]) for name, path in HEADLINE.items()
            if path[0] in report["curated"]}


# ---- a pool's subset ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolIndex:
    """Every embedded item of a pool in the current tree, and a reader of chosen rows' vectors
    (sorted or not; (len(rows), d) float32 in the order asked)."""

    ids: list[str]
    uris: list[str]
    keys: np.ndarray  # (n,) uint64 item keys (curation.selection.item_keys)
    paths: np.ndarray  # (n, L) cluster ids, level 1 (leaf) first
    vectors: Callable[[np.ndarray], np.ndarray]


def rows_of(ids: list[str], wanted) -> np.ndarray:
    """Row of each wanted id (a list or pyarrow array of str) among `ids`, -1 when absent."""
    import pyarrow as pa
    import pyarrow.compute as pc

    at = pc.index_in(pa.array(wanted, pa.string()) if isinstance(wanted, list) else wanted,
                     value_set=pa.array(ids, pa.string()))
    return at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def index_items(ids: list[str], uris: list[str], assigned, hierarchy: Hierarchy,
                fit_version: int, vectors: Callable[[np.ndarray], np.ndarray]) -> PoolIndex:
    """Place every embedded item in the current tree: its stored assignment when that is of
    this fit (`assigned`: a pyarrow table with item_id, fit_version, level_1..level_L and
    optionally item_key, or None), else assigned here from its vector (only those are read).
    Keys come from `item_key` where stored, else are computed from the ids."""
    n_levels = hierarchy.n_levels
    level_cols = [f"level_{lv}" for lv in range(1, n_levels + 1)]
    paths = np.full((len(ids), n_levels), -1, np.int64)
    keys = np.zeros(len(ids), np.uint64)
    known = np.zeros(len(ids), bool)
    if assigned is not None and assigned.num_rows:
        at = rows_of(ids, assigned["item_id"])
        ok = at >= 0
        current = ok & (assigned["fit_version"].to_numpy() == fit_version)
        stored = np.stack([assigned[c].to_numpy() for c in level_cols], axis=1)
        paths[at[current]] = stored[current]
        if "item_key" in assigned.column_names:
            keys[at[ok]] = assigned["item_key"].to_numpy()[ok]
            known[at[ok]] = True
    if not known.all():
        keys[~known] = item_keys([ids[i] for i in np.flatnonzero(~known)])
    missing = np.flatnonzero(paths[:, 0] < 0)
    if missing.size:
        paths[missing] = hierarchy.assign(vectors(missing)).paths
    return PoolIndex(ids, uris, keys, paths, vectors)


def meta_labels(item_ids: Sequence[str], metas: Sequence[str | None]) -> dict[str, str]:
    """{item_id: label} from the `label` field of items' metadata JSON (raw's `meta`)."""
    found = {}
    for item, meta in zip(item_ids, metas, strict=True):
        if meta:
            value = json.loads(meta).get("label")
            if value is not None:
                found[item] = str(value)
    return found


def labels_of(item_ids: list[str], found: dict[str, str]) -> tuple[np.ndarray | None, int]:
    """(labels of item_ids as strings, or None; how many items have none). Labels are used
    only when every item has one."""
    missing = sum(1 for i in item_ids if i not in found)
    if not found or missing:
        return None, missing
    return np.asarray([found[i] for i in item_ids]), 0


@dataclass(frozen=True)
class SubsetEvaluation:
    """What an evaluation of a pool's subset found (evaluate_subset)."""

    report: dict  # evaluate_selection's
    pool_size: int
    selected_items: int  # subset members still embedded
    labelled: bool
    unlabelled_items: int
    eval_sample: int

    @property
    def worse_than_random(self) -> list[str]:
        return self.report["worse_than_random"]

    def headline(self) -> dict[str, float]:
        return headline_figures(self.report)

    def sample_note(self) -> str:
        sample = self.report["sample"]
        return (f"Coverage and k-NN figures come from a seeded sample: {sample['probe_items']} "
                f"probe items, {sample['test_items']} k-NN test items, at most "
                f"{self.eval_sample} members per side (curated {sample['curated_vector_items']}, "
                f"random {sample['random_vector_items']}); vectors of {sample['vectors_read']} "
                f"of {self.pool_size} items read. Balance, leaf share and label figures are "
                "exact over the whole pool.")


def evaluate_subset(index: PoolIndex, subset_ids, subset_weights: np.ndarray,
                    labels: dict[str, str], *, seed: int, metric: str = "l2",
                    eval_sample: int = EVAL_SAMPLE) -> SubsetEvaluation:
    """A subset (its item ids and weights) of the pool of `index` against a uniform random
    subset of the same size (evaluate_selection). Members no longer embedded (a re-embedded
    drop) drop out; `labels` ({item_id: label}) count only when every item has one."""
    rows = rows_of(index.ids, subset_ids)
    keep = rows >= 0
    rows, weights = rows[keep], np.asarray(subset_weights)[keep]
    order = np.argsort(rows)
    pool_labels, unlabelled = labels_of(index.ids, labels)
    report = evaluate_selection(index.vectors, index.paths, rows[order], weights[order],
                                pool_labels, keys=index.keys, seed=seed, metric=metric,
                                eval_sample=eval_sample)
    return SubsetEvaluation(report, len(index.ids), int(rows.size), pool_labels is not None,
                            unlabelled, eval_sample)
