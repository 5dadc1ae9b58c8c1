"""How good is a curated subset? Coverage, balance and label figures against several uniform
random subsets of the same size (seeded draws), so that a difference inside their spread reads
"no better than random" (pure core, no Dagster).

- coverage: for a seeded probe of pool items, the distance to the nearest selected item
  (median, p90, p99; Euclidean, on normalised vectors for metric "cosine"), and the share of
  the pool's (non-empty) leaf clusters that hold a selected item;
- balance at every level of the tree: entropy, effective number of clusters, top-1 share and
  Gini of the selection over the clusters the pool occupies (curation.metrics.balance_stats);
- with labels: label entropy, labels hit, top-1 share (curation.metrics.selection_label_stats)
  and the balanced accuracy (mean per-class recall) of a k-NN classifier (cosine, majority
  vote of k neighbours) trained on the selection and tested on a class-balanced sample of the
  pool held out from training. They need a label on every item; a pool with none (a
  web-scale SSL pool) or only some has the figures above only, the label ones absent (no
  key), and `labels_absent` / `label_figures_note` say why.

Against random (compare_with_random): every figure with a direction (BETTER) of the curated
side is set against `random_draws` (default RANDOM_DRAWS = 5) seeded uniform draws: their
mean, sample std, min and max, and a verdict. The noise band is a prediction interval of one
more random draw widened to the draws' [min, max] (99% on the worse side, 95% on the better
side: WORSE_LEVEL, BETTER_LEVEL): past it on the better side reads "better than random", past
it on the other side "worse than random" (a real loss), inside it "no better than random".
`check_outcome` reads the headline figures for the evaluation check: worse, no better or
better than random; the median and p90 coverage distances are the price of balance
(TRADE_OFFS): reported, never judged.

Bounded cost (evaluate_selection): vectors are read for a bounded, seeded sample only, never the
whole pool: the coverage probe (`coverage_sample` items), the k-NN test split and each side's
members, each side capped at `eval_sample` members (a keyed subsample of a larger subset; every
side alike, so the comparison stays fair). The curated side and the first draw share one read;
each further draw is read after the previous block is freed, so the draws add time, not
memory: at most coverage_sample + test split + 2 x eval_sample vectors are held at once.
Every draw ranks items by a keyed hash of their 64-bit item key (curation.selection), so it is
independent of the pool's storage order. Balance, leaf share and label figures need only small
per-item columns and stay exact.

A pool's subset (evaluate_subset): the evaluation asset streams the pool once
(curation.pool_stream: every embedded item with its place in the current tree and its label
code, in bounded batches); `SubsetDraws` keeps what the draws need of it (the pool's counts per
cluster and label, the subset's members, each draw's, the probe's and the test split's lowest
keyed scores: a bound of the config, not of the pool), and `evaluate_subset` returns a
`SubsetEvaluation` whose figures, sample note and headline figures are what the asset shows;
they equal those of `evaluate_selection` over the whole pool held in memory.
Which direction is better for every figure is declared once (`BETTER`): the report, the Dagster
metadata and the check say it from there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .hierarchy import normalize_rows, validate_points
from .metrics import balance_stats, label_stats, selection_label_stats
from .sampling import rank_in_group
from .selection import rank_hash, splitmix64

COVERAGE_SAMPLE = 5000
EVAL_SAMPLE = 100_000  # most members per side whose vectors an evaluation reads
KNN_K = 20
TEST_PER_CLASS = 100
# Uniform random subsets the curated one is compared with: their spread is the noise a
# difference must clear (compare_with_random). Each draw is evaluated after the previous one
# is freed: draws cost time, not memory.
RANDOM_DRAWS = 5
MAX_RANDOM_DRAWS = 50
# The noise band around the draws: a prediction interval of one more random draw (Student t
# from the draws' mean and std), widened to their range. A loss must pass the 99% one (5.04
# std for 5 draws): a uniform subset judged against five others still reads worse on some
# headline figure about 1 time in 10. A win passes the 95% one (3.04 std): the check passes
# only when every headline figure wins at once, which no uniform subset did in 100.
WORSE_LEVEL = 0.99
BETTER_LEVEL = 0.95


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


def _as_paths(paths) -> np.ndarray:
    """(n, L) integer cluster paths, in their own integer type (no copy of a large pool's)."""
    paths = np.asarray(paths)
    if not np.issubdtype(paths.dtype, np.integer):
        paths = paths.astype(np.int64)
    return paths[:, None] if paths.ndim == 1 else paths


def level_balance(paths: np.ndarray, selected: np.ndarray,
                  weights: np.ndarray | None = None,
                  present: Sequence[np.ndarray] | None = None) -> dict[str, dict]:
    """Balance of the selection at every level, over the clusters that hold pool items
    (`present`: their sorted ids per level, when `paths` are not the whole pool's)."""
    paths = _as_paths(paths)
    out = {}
    for level in range(paths.shape[1]):
        ids = paths[:, level]
        held = np.unique(ids) if present is None else present[level]  # sorted
        where = np.searchsorted(held, ids[selected])
        counts = np.bincount(where, weights=weights, minlength=held.size)
        out[f"level_{level + 1}"] = {"clusters": int(held.size), **balance_stats(counts)}
    return out


@dataclass(frozen=True)
class PoolCounts:
    """The whole pool as far as an evaluation needs it beyond the rows it draws: per level,
    the items under each cluster id; per label code, the items carrying it (None: no labels).
    Its size is the tree's and the labels', not the pool's."""

    clusters: tuple[np.ndarray, ...]  # per level (leaf first): items per cluster id
    labels: np.ndarray | None = None  # items per label code

    @classmethod
    def of(cls, paths: np.ndarray, codes: np.ndarray | None = None) -> PoolCounts:
        """The counts of a pool held whole: (n, L) paths and a label code per item."""
        paths = _as_paths(paths)
        if paths.size and paths.min() < 0:
            raise ValueError("cluster paths must be >= 0 (an item outside the tree)")
        return cls(tuple(np.bincount(paths[:, lv]) for lv in range(paths.shape[1])),
                   None if codes is None else np.bincount(codes))

    def plus(self, other: PoolCounts) -> PoolCounts:
        """The counts of both (label codes numbered alike)."""
        def add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            if a is None or b is None:
                return a if b is None else b
            out = np.zeros(max(a.size, b.size), np.int64)
            out[:a.size] += a
            out[:b.size] += b
            return out

        return PoolCounts(tuple(add(a, b) for a, b in zip(self.clusters, other.clusters,
                                                          strict=True)),
                          add(self.labels, other.labels))

    @property
    def items(self) -> int:
        return int(self.clusters[0].sum())

    def present(self) -> list[np.ndarray]:
        """Sorted ids of the clusters that hold items, per level."""
        return [np.flatnonzero(c) for c in self.clusters]

    def figures(self) -> dict:
        """The pool's own figures: its items, its balance at every level, its labels."""
        out = {"items": self.items, "balance": {
            f"level_{lv + 1}": {"clusters": int(held.size),
                                **balance_stats(self.clusters[lv][held])}
            for lv, held in enumerate(self.present())}}
        if self.labels is not None:
            out["labels"] = label_stats(self.labels[self.labels > 0])
        return out


def balanced_test_split(labels: np.ndarray, per_class: int = TEST_PER_CLASS,
                        seed: int = 0, scores: np.ndarray | None = None,
                        class_counts: np.ndarray | None = None) -> np.ndarray:
    """Sorted rows of a class-balanced test sample: per class min(per_class, half the class),
    at least one item of every class with two or more (the rest stays available to train).
    Inside a class the lowest `scores` are taken (default: seeded random numbers). With
    `class_counts` (the pool's items per label code), `labels` are codes and the rows may be
    part of the pool only, as long as they hold each class's lowest scores."""
    labels = np.asarray(labels)
    if scores is None:
        scores = np.random.default_rng(seed).random(labels.size)
    if class_counts is None:
        _, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(-1)
    else:
        inverse = labels.astype(np.int64)
    counts = np.bincount(inverse) if class_counts is None else class_counts
    take = np.minimum(per_class, counts // 2)
    return np.flatnonzero(rank_in_group(inverse, scores) < take[inverse]).astype(np.int64)


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


def baseline_stream(draw: int) -> int:
    """Keyed-hash stream of random draw `draw`: draw 0 is the one baseline earlier reports
    compared with (BASELINE_STREAM); the others sit above every stream of this module."""
    return BASELINE_STREAM + (int(draw) << 16)


@dataclass(frozen=True)
class EvaluationPlan:
    """Which pool rows an evaluation draws, and the few whose vectors it reads: one block per
    side (`blocks`), read one after the other (the curated side and draw 0 share the first)."""

    baselines: tuple[np.ndarray, ...]  # uniform random subsets, each as large as the curated one
    probe: np.ndarray  # coverage probe
    test: np.ndarray | None  # k-NN test split (labels only)
    curated_vectors: np.ndarray  # curated members whose vectors are used (<= eval_sample)
    baselines_vectors: tuple[np.ndarray, ...]  # each draw's members used (<= eval_sample)

    @property
    def baseline(self) -> np.ndarray:
        return self.baselines[0]

    @property
    def baseline_vectors(self) -> np.ndarray:
        return self.baselines_vectors[0]

    def block(self, *members: np.ndarray) -> np.ndarray:
        """Sorted pool rows whose vectors one read asks for: the probe, the test split and
        the `members` of the sides evaluated on it."""
        parts = [self.probe, *members] + ([] if self.test is None else [self.test])
        return np.unique(np.concatenate(parts))

    @cached_property
    def blocks(self) -> list[np.ndarray]:
        """The reads, in order: curated + draw 0, then every further draw on its own."""
        return [self.block(self.curated_vectors, self.baselines_vectors[0]),
                *(self.block(v) for v in self.baselines_vectors[1:])]

    def sample_info(self, n_items: int, eval_sample: int) -> dict:
        sizes = [int(b.size) for b in self.blocks]
        return {
            "pool_items": int(n_items),
            "eval_sample": int(eval_sample),
            "random_draws": len(self.baselines),
            "vectors_read": int(sum(sizes)),
            "vectors_held_max": int(max(sizes)),
            "probe_items": int(self.probe.size),
            "test_items": 0 if self.test is None else int(self.test.size),
            "curated_vector_items": int(self.curated_vectors.size),
            "random_vector_items": int(self.baselines_vectors[0].size),
        }


def plan_evaluation(keys: np.ndarray, selected: np.ndarray, labels: np.ndarray | None = None,
                    *, seed: int = 0, eval_sample: int = EVAL_SAMPLE,
                    coverage_sample: int = COVERAGE_SAMPLE,
                    test_per_class: int = TEST_PER_CLASS,
                    random_draws: int = RANDOM_DRAWS,
                    class_counts: np.ndarray | None = None) -> EvaluationPlan:
    """The seeded draws of an evaluation over a pool whose rows have 64-bit `keys`. Row
    indices only (random_draws x subset size x 8 B); no vector is read here. The rows may
    be part of the pool (`SubsetDraws`) when they hold every draw's lowest keyed scores;
    then `class_counts` gives the pool's items per label code."""
    if eval_sample < 1:
        raise ValueError(f"eval_sample must be >= 1, got {eval_sample}")
    if not 1 <= random_draws <= MAX_RANDOM_DRAWS:
        raise ValueError(f"random_draws must lie in [1, {MAX_RANDOM_DRAWS}], got {random_draws}")
    keys = np.asarray(keys, dtype=np.uint64)
    selected = np.asarray(selected, dtype=np.int64)
    baselines = tuple(lowest(keyed_scores(keys, seed, baseline_stream(j)), selected.size)
                      for j in range(random_draws))
    probe = lowest(keyed_scores(keys, seed, PROBE_STREAM), coverage_sample)
    test = None
    if labels is not None:
        test = balanced_test_split(labels, test_per_class, seed,
                                   scores=keyed_scores(keys, seed, TEST_STREAM),
                                   class_counts=class_counts)
    side = keyed_scores(keys, seed, SIDE_STREAM)

    def capped(rows: np.ndarray) -> np.ndarray:
        return rows if rows.size <= eval_sample else rows[lowest(side[rows], eval_sample)]

    return EvaluationPlan(baselines, probe, test, capped(selected),
                          tuple(capped(b) for b in baselines))


def _coverage_figures(distances: np.ndarray) -> dict:
    return {
        "probe_items": int(distances.size),
        "median": float(np.median(distances)),
        "p90": float(np.quantile(distances, 0.9)),
        "p99": float(np.quantile(distances, 0.99)),
    }


def _side(v, block, paths, rows, vector_rows, weights, labels, plan, k, present) -> dict:
    """Figures of one side. v: the vectors of the pool rows `block` (sorted), in that order;
    present: the sorted ids of the clusters holding pool items, per level."""
    if rows.size == 0:
        raise ValueError("coverage of an empty selection")

    def at(pool_rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(block, pool_rows)

    cover = _coverage_figures(nearest_distances(v[at(plan.probe)], v[at(vector_rows)]))
    cover["leaf_share"] = float(np.unique(paths[rows, 0]).size / present[0].size)
    out = {"items": int(rows.size), "coverage": cover,
           "balance": level_balance(paths, rows, weights, present)}
    if labels is not None:
        out["labels"] = selection_label_stats(labels[rows], weights)
        out["knn"] = knn_accuracy(v, labels[block], at(vector_rows), at(plan.test), k)
    return out


def evaluate_selection(x: np.ndarray | Callable[[np.ndarray], np.ndarray], paths: np.ndarray,
                       selected: np.ndarray, weights: np.ndarray | None = None,
                       labels: np.ndarray | None = None, *, keys: np.ndarray | None = None,
                       seed: int = 0, metric: str = "l2", coverage_sample: int = COVERAGE_SAMPLE,
                       eval_sample: int = EVAL_SAMPLE, k: int = KNN_K,
                       test_per_class: int = TEST_PER_CLASS,
                       random_draws: int = RANDOM_DRAWS,
                       counts: PoolCounts | None = None) -> dict:
    """Curated vs `random_draws` same-size uniform random selections (seeded) over a pool of n
    items with cluster paths (n, L). x: the pool's vectors (n, d), or a reader called with
    sorted pool rows that returns their vectors (once per block of plan_evaluation: the
    curated side with draw 0, then each further draw). selected: row indices (unique);
    weights: copies per selected row; labels: (n,) per row, or None; keys: (n,) uint64 item
    keys (curation.selection.item_keys; default: keyed by row position).

    With `counts` (PoolCounts of the whole pool), the rows are not the whole pool but the
    ones `SubsetDraws` kept from a stream of it (every draw's, the probe's and the test
    split's lowest keyed scores, and the curated members); `labels` are then label codes
    and `keys` are required. The figures are the same as over the whole pool.

    Returns {"curated": {...}, "random": {...} (the mean of the draws, same keys),
    "random_draws": [{...} per draw], "versus_random": {figure: mean, spread, verdict}
    (compare_with_random), "worse_than_random": [reasons], "no_better_than_random":
    [reasons], "pool": {...}, "sample": {...}}.

    Memory: at most coverage_sample + test split + 2 x eval_sample vectors (d x 4 B each)
    at once, as with one draw: a further draw's block (probe, test split, its <= eval_sample
    members) is read after the previous one is freed. Time grows with the draws (one exact
    nearest-neighbour search of the probe and one k-NN per draw)."""
    paths = _as_paths(paths)
    rows_held = paths.shape[0]
    if not callable(x) and np.shape(x)[0] != rows_held:
        raise ValueError(f"{np.shape(x)[0]} vectors but {rows_held} cluster paths")
    selected = np.asarray(selected, dtype=np.int64)
    if np.unique(selected).size != selected.size:
        raise ValueError("selected rows must be unique (give copies as weights)")
    if selected.size and (selected.min() < 0 or selected.max() >= rows_held):
        raise ValueError(f"selected rows must lie in [0, {rows_held})")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (rows_held,):
            raise ValueError(f"labels must have shape ({rows_held},), got {labels.shape}")
        if counts is None:  # codes numbered in sorted label order: the same figures
            labels = np.unique(labels, return_inverse=True)[1].reshape(-1)
    if keys is None and counts is None:
        keys = splitmix64(np.arange(rows_held, dtype=np.uint64))
    elif np.shape(keys) != (rows_held,):
        raise ValueError(f"keys must have shape ({rows_held},), got {np.shape(keys)}")
    if counts is None:
        counts = PoolCounts.of(paths, labels)
    present = counts.present()
    plan = plan_evaluation(keys, selected, labels, seed=seed, eval_sample=eval_sample,
                           coverage_sample=coverage_sample, test_per_class=test_per_class,
                           random_draws=random_draws, class_counts=counts.labels)

    def read(block: np.ndarray) -> np.ndarray:
        v = x(block) if callable(x) else np.asarray(x)[block]
        if v.shape[0] != block.size:
            raise ValueError(f"asked for {block.size} vectors, got {v.shape[0]}")
        return _prepare(v, metric)  # row-wise, so the same as preparing the whole pool

    common = dict(paths=paths, labels=labels, plan=plan, k=k, present=present)
    first = plan.blocks[0]
    v = read(first)
    curated = _side(v, first, rows=selected, vector_rows=plan.curated_vectors,
                    weights=weights, **common)
    draws = [_side(v, first, rows=plan.baselines[0], vector_rows=plan.baselines_vectors[0],
                   weights=None, **common)]
    del v  # the next block is read only once this one is freed
    for rows, vector_rows, block in zip(plan.baselines[1:], plan.baselines_vectors[1:],
                                        plan.blocks[1:], strict=True):
        v = read(block)
        draws.append(_side(v, block, rows=rows, vector_rows=vector_rows, weights=None,
                           **common))
        del v
    pool = counts.figures()
    if labels is None:
        pool.pop("labels", None)
    total = selected.size if weights is None else round(float(weights.sum()))
    versus = compare_with_random(curated, draws, pool, total)
    return {"curated": curated, "random": mean_side(draws), "random_draws": draws,
            "versus_random": versus, "pool": pool,
            "sample": plan.sample_info(counts.items, eval_sample),
            "worse_than_random": reasons(versus, WORSE),
            "no_better_than_random": reasons(versus, NO_BETTER)}


# ---- curated against the spread of the random draws -------------------------------------------

BETTER_VERDICT, NO_BETTER, WORSE = ("better than random", "no better than random",
                                    "worse than random")
# Figures balanced sampling gives up by design: it moves picks from dense regions to sparse
# ones, so the typical pool item's nearest pick gets farther (the median and p90 coverage
# distances) while the tail (p99) and the balance gain. They get a verdict like every figure
# and a loss is listed as worse than random, with this note; the check judges the headline
# figures (check_outcome), of which they are none.
TRADE_OFFS = frozenset({"coverage.median", "coverage.p90"})


def side_figures(side: dict) -> dict[str, float]:
    """{figure path: value} of every figure of one side that has a direction (BETTER), e.g.
    "coverage.p99", "balance.level_2.entropy", "labels.label_entropy",
    "knn.balanced_accuracy"."""
    out: dict[str, float] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif BETTER.get(key):
                out[prefix + key] = float(value)

    walk(side, "")
    return out


def figure_label(path: str) -> str:
    """A figure's name in tables and reasons: "coverage p99 distance", "level_2 entropy",
    "label entropy", "k-NN balanced_accuracy"."""
    section, *rest = path.split(".")
    key = rest[-1]
    if section == "coverage":
        return "leaf clusters hit (share)" if key == "leaf_share" else f"coverage {key} distance"
    if section == "balance":
        return f"{rest[0]} {key}"
    if section == "labels":
        return f"label {key.removeprefix('label_')}"
    return f"k-NN {key}"


def even_counts(total: int, groups: int) -> np.ndarray:
    """The most even split of `total` items over `groups` (sizes differ by one at most)."""
    q, r = divmod(int(total), int(groups))
    counts = np.full(int(groups), float(q))
    counts[:r] += 1.0
    return counts


def best_possible(path: str, pool: dict, total: int) -> float | None:
    """The best value a selection of `total` items (copies counted) can reach on a bounded
    figure, else None: every leaf hit, a k-NN right on every test item; balance and label
    figures of the most even split over the pool's clusters at that level or its labels. A
    tie there is not a failure of curation, and reaching it where no draw does is a win no
    spread can hide."""
    section, *rest = path.split(".")
    key = rest[-1]
    if path == "coverage.leaf_share" or section == "knn":  # every leaf hit, every test right
        return 1.0
    if section == "balance":
        return balance_stats(even_counts(total, pool["balance"][rest[0]]["clusters"]))[key]
    if section == "labels" and "labels" in pool:
        n_labels = pool["labels"]["labels_hit"]
        if key == "labels_hit":
            return float(min(n_labels, total))
        stats = balance_stats(even_counts(total, n_labels))
        return stats["entropy" if key == "label_entropy" else key]
    return None


def _reaches(value: float, best: float | None) -> bool:
    return best is not None and bool(np.isclose(value, best, rtol=1e-6, atol=1e-12))


def noise_width(draws: int, level: float) -> float:
    """Half-width, in draws' std, of the two-sided `level` prediction interval of one more
    draw: t(n - 1) x sqrt(1 + 1/n) (5 draws: 5.04 at 0.99, 3.04 at 0.95); 0 for one draw (no
    spread to estimate: any difference counts)."""
    if draws < 2:
        return 0.0
    from scipy.stats import t as student

    return float(student.ppf(0.5 + level / 2, draws - 1) * np.sqrt(1.0 + 1.0 / draws))


def compare_with_random(curated: dict, draws: list[dict], pool: dict, total: int,
                        better_level: float = BETTER_LEVEL,
                        worse_level: float = WORSE_LEVEL) -> dict[str, dict]:
    """Every directed figure of the curated side against the random draws: their mean, spread
    (sample std, min, max) and a verdict.

    The noise band reaches, on the figure's better side (BETTER), the `better_level`
    prediction interval of one more random draw (mean + noise_width x std), on its worse side
    the `worse_level` one, each widened to the draws' [min, max]; a figure is "better than
    random" past the band on its better side, "worse than random" past it on the other side
    (a real loss), else "no better than random" (inside the noise). On a bounded figure
    (best_possible, for `total` selected items) a curated value at the bound that no draw
    reached reads better (the band would pass the bound). `gain` is curated -
    mean, signed so that positive is better. `at_best` marks a figure where curated and the best
    draw reach the best possible value: a tie no selection could beat."""
    values = np.array([list(side_figures(d).values()) for d in draws], dtype=np.float64)
    names = list(side_figures(draws[0]))
    ours = side_figures(curated)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(draws) > 1 else np.zeros(len(names))
    low, high = values.min(axis=0), values.max(axis=0)
    win = noise_width(len(draws), better_level) * std
    loss = noise_width(len(draws), worse_level) * std
    out = {}
    for i, path in enumerate(names):
        sign = 1.0 if BETTER[path.rsplit(".", 1)[-1]] == "higher" else -1.0
        up, down = (win[i], loss[i]) if sign > 0 else (loss[i], win[i])
        tol = 1e-9 * (1.0 + abs(mean[i]))
        band_low = min(low[i], mean[i] - down) - tol
        band_high = max(high[i], mean[i] + up) + tol
        value = ours[path]
        best = best_possible(path, pool, total)
        best_draw = high[i] if sign > 0 else low[i]
        if _reaches(value, best) and not _reaches(best_draw, best):
            verdict = BETTER_VERDICT  # the bound no draw reached: the band cannot pass it
        elif band_low <= value <= band_high:
            verdict = NO_BETTER
        elif (value > band_high) == (sign > 0):
            verdict = BETTER_VERDICT
        else:
            verdict = WORSE
        out[path] = {
            "figure": figure_label(path),
            "better": BETTER[path.rsplit(".", 1)[-1]],
            "curated": value,
            "random_mean": float(mean[i]), "random_std": float(std[i]),
            "random_min": float(low[i]), "random_max": float(high[i]),
            "gain": float(sign * (value - mean[i])),
            "noise_band": [float(band_low + tol), float(band_high - tol)],
            "verdict": verdict,
            "at_best": _reaches(value, best) and _reaches(best_draw, best),
            "trade_off": path in TRADE_OFFS,
        }
    return out


def reasons(versus: dict[str, dict], verdict: str,
            figures: Collection[str] | None = None) -> list[str]:
    """One line per figure with `verdict` (of `figures` only when given; ties at the best
    possible value left out), with the numbers: curated, the random mean +- std and the
    draws' range."""
    return [f"{f['figure']} {f['curated'] + 0.0:.4g} {verdict} "  # + 0.0: no "-0"
            f"{f['random_mean']:.4g} +- {f['random_std']:.2g} "
            f"(range {f['random_min']:.4g}..{f['random_max']:.4g}; {f['better']} is better"
            f"{'; a trade-off of balancing' if f.get('trade_off') else ''})"
            for path, f in versus.items() if f["verdict"] == verdict and not f["at_best"]
            and (figures is None or path in figures)]


def headline_paths(report: dict) -> dict[str, str]:
    """{headline name: figure path in versus_random} of the HEADLINE figures the report has
    ("top" resolved to the top level, e.g. "balance.level_2.entropy")."""
    out = {}
    for name, path in HEADLINE.items():
        if path[0] not in report["curated"]:
            continue
        steps = [list(report["curated"][path[0]])[-1] if step == "top" else step
                 for step in path]
        out[name] = ".".join(steps)
    return out


def check_outcome(report: dict) -> tuple[str, list[str]]:
    """Does curation pay, judged on the headline figures (one per kind: tail coverage, leaf
    clusters hit, top-level balance, label balance, k-NN; the other figures restate them or
    are TRADE_OFFS, and every extra figure judged would add false alarms)?

    (WORSE, reasons) when one of them is worse than random beyond the noise (the losses
    first, then the figures inside the noise); (NO_BETTER, reasons) when none is worse but
    one is inside the noise (ties at the best possible value excepted); (BETTER_VERDICT, [])
    otherwise. A report without verdicts (one random draw, from before) reads WORSE exactly
    when its worse_than_random is not empty."""
    versus = report.get("versus_random")
    if versus is None:
        worse = list(report.get("worse_than_random", []))
        return (WORSE if worse else BETTER_VERDICT), worse
    judged = set(headline_paths(report).values())
    worse = reasons(versus, WORSE, judged)
    inside = reasons(versus, NO_BETTER, judged)
    if worse:
        return WORSE, worse + inside
    return (NO_BETTER if inside else BETTER_VERDICT), inside


def mean_side(draws: list[dict]) -> dict:
    """A side dict whose every number is the mean over the draws (an int stays an int when
    every draw has the same): what tables and headline figures show as "random"."""
    first = draws[0]
    out: dict = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = mean_side([d[key] for d in draws])
            continue
        column = [d[key] for d in draws]
        same_int = isinstance(value, int) and all(c == value for c in column)
        out[key] = value if same_int else float(np.mean(column))
    return out


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


def headline_spread(report: dict) -> dict[str, Any]:
    """`<name>_random_std` and `<name>_verdict` of every HEADLINE figure the report has
    (empty for a report without verdicts)."""
    versus = report.get("versus_random")
    if not versus:
        return {}
    out: dict[str, Any] = {}
    for name, path in headline_paths(report).items():
        figure = versus[path]
        out[f"{name}_random_std"] = figure["random_std"]
        out[f"{name}_verdict"] = figure["verdict"]
    return out


def headline_directions(report: dict) -> dict[str, str]:
    """{headline name: 'lower is better' / 'higher is better'} of the figures the report has."""
    return {name: better(path[-1]) for name, path in HEADLINE.items()
            if path[0] in report["curated"]}


# ---- a pool's subset ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DrawnRows:
    """The rows of a pool an evaluation of one subset uses (SubsetDraws.result): fixed-width
    columns of at most random_draws x subset size + probe + test split + subset rows,
    whatever the pool holds, and the pool's counts."""

    keys: np.ndarray  # (r,) uint64 item keys, sorted
    paths: np.ndarray  # (r, L) int32
    codes: np.ndarray | None  # (r,) int32 label codes (sorted label order), None: unlabelled
    locators: np.ndarray  # (r,) uint64: where each row's vector is (the caller's row ids)
    selected: np.ndarray  # rows of the subset members found in the pool, sorted
    weights: np.ndarray  # copies of each selected row
    counts: PoolCounts
    unlabelled: int  # pool items without a label
    # what the rows were kept for (evaluate_subset draws with the same)
    seed: int
    random_draws: int
    coverage_sample: int
    test_per_class: int


class SubsetDraws:
    """Keeps, from one pass over a pool in batches of any size and order, what an evaluation
    of one subset draws (evaluate_selection with `counts`): the pool's counts (PoolCounts),
    the subset's members, the `subset size` lowest keyed scores of every random draw, the
    probe's `coverage_sample` lowest, and per label the `test_per_class` lowest test scores.
    Memory: at most twice (random_draws + 1) x subset size + coverage_sample + labels x
    test_per_class rows of (8 + 4 L + 4 + 8) B, and a batch, not the pool's size: a batch's
    rows that may be drawn are appended, and the rows no draw wants any more are dropped
    when the kept rows double (not at every batch: that re-sorted them all each time). The
    rows `result` gives are the same whatever order the pool arrives in."""

    def __init__(self, subset_keys: np.ndarray, subset_weights: np.ndarray, n_levels: int, *,
                 seed: int, random_draws: int = RANDOM_DRAWS,
                 coverage_sample: int = COVERAGE_SAMPLE,
                 test_per_class: int = TEST_PER_CLASS, labelled: bool = True):
        if not 1 <= random_draws <= MAX_RANDOM_DRAWS:
            raise ValueError(f"random_draws must lie in [1, {MAX_RANDOM_DRAWS}], "
                             f"got {random_draws}")
        order = np.argsort(np.asarray(subset_keys, dtype=np.uint64), kind="stable")
        self.subset_keys = np.asarray(subset_keys, dtype=np.uint64)[order]
        self.subset_weights = np.asarray(subset_weights)[order]
        self.seed, self.test_per_class, self.labelled = seed, test_per_class, labelled
        self.random_draws, self.coverage_sample = random_draws, coverage_sample
        size = self.subset_keys.size
        self._lowest = [(baseline_stream(j), size) for j in range(random_draws)]
        self._lowest.append((PROBE_STREAM, coverage_sample))
        empty = np.empty(0, np.uint64)
        self._best = [(empty, empty) for _ in self._lowest]  # (scores, keys) per stream
        self._test = (np.empty(0, np.int32), empty, empty)  # (codes, scores, keys)
        self._rows = (empty, np.empty((0, n_levels), np.int32), np.empty(0, np.int32), empty)
        self._counts: PoolCounts | None = None
        self.unlabelled = 0

    def add(self, keys: np.ndarray, paths: np.ndarray, codes: np.ndarray | None,
            locators: np.ndarray) -> None:
        """One batch of the pool: item keys, (b, L) paths, label codes (-1: none) or None,
        and where each row's vector is."""
        keys = np.asarray(keys, dtype=np.uint64)
        paths = np.asarray(paths, dtype=np.int32)
        codes = (np.full(keys.size, -1, np.int32) if codes is None
                 else np.asarray(codes, dtype=np.int32))
        labelled = codes >= 0
        self.unlabelled += int(keys.size - labelled.sum())
        batch = PoolCounts.of(paths, codes[labelled] if self.labelled else None)
        self._counts = batch if self._counts is None else self._counts.plus(batch)
        keep_new = self._members(keys)
        for i, (stream, size) in enumerate(self._lowest):
            scores = keyed_scores(keys, self.seed, stream)
            self._best[i] = _merge_lowest(self._best[i], scores, keys, size)
            kept_scores = self._best[i][0]
            # a superset of the batch's rows that entered: every score up to the kept maximum
            keep_new |= (scores <= kept_scores.max(initial=0)) if kept_scores.size >= size \
                else np.ones(keys.size, bool)
        if self.labelled and labelled.any():
            self._test = _merge_per_class(self._test, codes[labelled],
                                          keyed_scores(keys[labelled], self.seed, TEST_STREAM),
                                          keys[labelled], self.test_per_class)
            keep_new |= np.isin(keys, self._test[2])
        held_keys, held_paths, held_codes, held_locators = self._rows
        self._rows = (np.concatenate([held_keys, keys[keep_new]]),
                      np.concatenate([held_paths, paths[keep_new]]),
                      np.concatenate([held_codes, codes[keep_new]]),
                      np.concatenate([held_locators,
                                      np.asarray(locators, dtype=np.uint64)[keep_new]]))
        if self._rows[0].size > 2 * self._bound():
            self._prune()

    def _members(self, keys: np.ndarray) -> np.ndarray:
        """Which of these keys are the subset's (its keys are sorted)."""
        if self.subset_keys.size == 0:
            return np.zeros(keys.size, bool)
        at = np.minimum(np.searchsorted(self.subset_keys, keys), self.subset_keys.size - 1)
        return self.subset_keys[at] == keys

    def _bound(self) -> int:
        return (sum(size for _, size in self._lowest) + self.subset_keys.size
                + self._test[2].size)

    def _prune(self) -> None:
        """Keep only the rows a draw, the probe, the test split or the subset wants now."""
        wanted = np.unique(np.concatenate([k for _, k in self._best] + [self._test[2]]))
        keys = self._rows[0]
        keep = np.isin(keys, wanted) | self._members(keys)
        self._rows = tuple(a[keep] for a in self._rows)

    def result(self, code_rank: np.ndarray | None = None) -> DrawnRows:
        """The kept rows. `code_rank`: the sorted position of each label code (codes handed
        out in arrival order become the same codes whatever the order)."""
        if self._counts is None:
            raise ValueError("the pool is empty: nothing to evaluate")
        self._prune()
        keys, paths, codes, locators = self._rows
        order = np.argsort(keys, kind="stable")
        keys, paths, codes, locators = keys[order], paths[order], codes[order], locators[order]
        counts = self._counts
        use_labels = (self.labelled and self.unlabelled == 0 and counts.labels is not None
                      and counts.labels.size > 0)
        if use_labels and code_rank is not None:
            code_rank = np.asarray(code_rank, dtype=np.int32)
            codes = code_rank[codes]
            by_rank = np.zeros(code_rank.size, np.int64)
            by_rank[code_rank[:counts.labels.size]] = counts.labels
            counts = PoolCounts(counts.clusters, by_rank)
        selected = np.flatnonzero(self._members(keys))
        at = np.searchsorted(self.subset_keys, keys[selected])
        return DrawnRows(keys, paths, codes if use_labels else None, locators, selected,
                         self.subset_weights[at],
                         counts if use_labels else PoolCounts(counts.clusters, None),
                         self.unlabelled if self.labelled else 0, self.seed,
                         self.random_draws, self.coverage_sample, self.test_per_class)


def _merge_lowest(best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, keys: np.ndarray,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
    """The `size` lowest (score, key) of the kept ones and a batch's."""
    best_scores, best_keys = best
    if best_scores.size >= size:  # only scores below the kept maximum can enter
        entering = scores < best_scores.max(initial=0)
        scores, keys = scores[entering], keys[entering]
    if scores.size == 0:
        return best
    all_scores = np.concatenate([best_scores, scores])
    all_keys = np.concatenate([best_keys, keys])
    keep = lowest(all_scores, size)
    return all_scores[keep], all_keys[keep]


def _merge_per_class(best: tuple, codes: np.ndarray, scores: np.ndarray, keys: np.ndarray,
                     per_class: int) -> tuple:
    """Per label code, the `per_class` lowest (score, key) of the kept ones and a batch's."""
    codes = np.concatenate([best[0], codes])
    scores = np.concatenate([best[1], scores])
    keys = np.concatenate([best[2], keys])
    keep = rank_in_group(codes, scores) < per_class
    return codes[keep], scores[keep], keys[keep]


def meta_labels(item_ids: Sequence[str], metas: Sequence[str | None]) -> dict[str, str]:
    """{item_id: label} from the `label` field of items' metadata JSON (raw's `meta`)."""
    found = {}
    for item, meta in zip(item_ids, metas, strict=True):
        if meta:
            value = json.loads(meta).get("label")
            if value is not None:
                found[item] = str(value)
    return found


LABEL_FREE = "coverage, balance and leaf share need none"


def labels_absent(labelled: bool, unlabelled: int, items: int) -> str | None:
    """Why an evaluation of a pool of `items` has no label figures (label entropy, labels
    hit, label top-1 share, k-NN accuracy), or None when it has them: they need a label on
    every item. `unlabelled` is 0 when the pool has no label source at all."""
    if labelled:
        return None
    if unlabelled in (0, items):
        return "the pool has no labels (none from a labels file or a `label` of the items)"
    return (f"{unlabelled} of {items} items carry no label (the label figures need one on "
            "every item)")


def label_figures_note(labelled: bool, unlabelled: int, items: int) -> str:
    """"present: ..." or "absent: <why>; ...": what the evaluation's metadata and check say
    about its label figures."""
    why = labels_absent(labelled, unlabelled, items)
    if why is None:
        return f"present: every one of the {items} items carries a label"
    return f"absent: {why}; {LABEL_FREE}"


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

    @property
    def no_better_than_random(self) -> list[str]:
        return self.report.get("no_better_than_random", [])

    def headline(self) -> dict[str, float]:
        return headline_figures(self.report)

    def labels_absent(self) -> str | None:
        """Why the label figures are absent (labels_absent), None when they are there."""
        return labels_absent(self.labelled, self.unlabelled_items, self.pool_size)

    def label_figures(self) -> str:
        return label_figures_note(self.labelled, self.unlabelled_items, self.pool_size)

    def sample_note(self) -> str:
        sample = self.report["sample"]
        sampled, exact = (("Coverage and k-NN figures", "Balance, leaf share and label figures")
                          if self.labelled else ("Coverage figures", "Balance and leaf share"))
        test = f"{sample['test_items']} k-NN test items, " if self.labelled else ""
        return (f"{sampled} come from a seeded sample: {sample['probe_items']} probe items, "
                f"{test}at most {self.eval_sample} members per side (curated "
                f"{sample['curated_vector_items']}, each of {sample['random_draws']} random "
                f"draws {sample['random_vector_items']}); vectors of at most "
                f"{sample['vectors_held_max']} of {self.pool_size} items read at once "
                f"({sample['vectors_read']} in {sample['random_draws']} blocks, one per "
                f"draw). {exact} are exact over the whole pool.")


def evaluate_subset(drawn: DrawnRows, vectors: Callable[[np.ndarray], np.ndarray], *,
                    metric: str = "l2", eval_sample: int = EVAL_SAMPLE) -> SubsetEvaluation:
    """A subset against uniform random subsets of the same size (evaluate_selection, with the
    seed and draws the rows were kept for), from the rows SubsetDraws kept of a pass over the
    pool (members no longer embedded, e.g. of a re-embedded drop, dropped out there).
    `vectors(locators)` returns the vectors of rows by their locators, in the order asked."""
    report = evaluate_selection(lambda rows: vectors(drawn.locators[rows]), drawn.paths,
                                drawn.selected, drawn.weights, drawn.codes, keys=drawn.keys,
                                seed=drawn.seed, metric=metric, eval_sample=eval_sample,
                                random_draws=drawn.random_draws,
                                coverage_sample=drawn.coverage_sample,
                                test_per_class=drawn.test_per_class, counts=drawn.counts)
    return SubsetEvaluation(report, drawn.counts.items, int(drawn.selected.size),
                            drawn.codes is not None, drawn.unlabelled, eval_sample)
