"""Which tree fits this pool? Sweep tree shapes, metrics and the dedup threshold on a bounded,
seeded sample of the pool, judge each with the evaluation against random draws, rank them and
recommend a pools.yaml `hierarchy:` block (pure core, no Dagster; `curate tune` is its edge).

**The sweep** (`sweep_candidates`). Shapes start from the documented rule
(`config.suggest_levels` of the sample size), then vary it: twice and half as many leaves
(about half and twice the items per leaf; the levels above stay), and one level more (a middle
level, the geometric mean of its neighbours) or, for a tree of three levels or more, only the
leaves and the top. Every shape is fitted with each metric (l2, cosine); the suggested shape
also with semantic dedup (`curation.dedup.near_duplicates`) at each given threshold, the
selection then drawn from the representatives only. Shapes that coincide are fitted once.

**One configuration** (`run_candidate`): fit the tree on the sample (`fit_hierarchy`), draw
`target` x sample / pool items with the platform's sampler (`selection.sample_rows`: the same
share of the sample as the target is of the pool, so a leaf's quota is what it would be on
the pool), and evaluate that selection with `evaluation.evaluate_selection` against
`random_draws` seeded uniform draws, with labels when given. Every configuration is evaluated
in one space (`eval_metric`), so the random draws and the coverage figures are the same for
all and the rows of the table compare.

**The ranking** (`rank_key`, best first): (1) fewest headline figures worse than random
(those the evaluation's check judges: p99 coverage, leaf clusters hit, top-level entropy,
label entropy, k-NN), (2) fewest figures worse than random of all (every level's balance
included; not the trade-offs of balancing, median and p90 coverage); (3) most headline
figures better than random; then the gains over the random mean, rounded so that
differences below 0.01 tie: (4) k-NN balanced accuracy and (5) label entropy where labels
exist, (6) p99 coverage distance as a share of the random mean's, (7) top-level entropy as a
share of its maximum, ln(top clusters); (8) the sweep's order (the suggested shape first)
breaks the remaining ties.

**The recommendation** scales the winner's cluster counts from the sample to the pool
(x pool / sample, so every cluster keeps the items it had on the sample) and prints them as
the `hierarchy:` block (plus `dedup:` when the winner deduplicated), valid for
`HierarchyConfig` as printed.

**Memory** (`memory_bound`): the sample's vectors (sample x d x 4 B), then one of: the fit's
working set (measured at 4.1 x the sample for cosine: validated and normalised copies,
resampled subsets) or the evaluation's (its block, the probe, test split and sides, is rows of
the sample, held as read, prepared, and as the coverage and k-NN copies: measured at 9.3 x
the sample when the probe takes every item): VECTOR_COPIES = 10 x sample x d x 4 B +
sample x 64 B of per-item columns in all, whatever the pool holds;
dedup adds one run of `near_duplicates` (at most leaf_cap items: 5 x leaf_cap x d x 4 B and
its range-search pairs).
Configurations run one after the other; each one's tree and report are dropped but for its
figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import HierarchyConfig, SampleConfig, suggest_levels

# Default sample: the fits dominate the sweep's time (on 5,000 Fashion-MNIST 1280-d vectors
# one fit of [125, 12] with the pool's 5 resampling steps took 43 s on 2 cores shared at
# load 9), and 5,000 items still give the size rule 125 leaves of 40. 1280-d: 26 MB.
TUNE_SAMPLE = 5_000
METRICS = ("l2", "cosine")
LEAF_FACTORS = (2.0, 0.5)  # leaves x2 and x0.5: about half and twice the items per leaf
VECTOR_COPIES = 10  # the sample and, at most, the evaluation's copies of it (module doc)
PER_ITEM_BYTES = 64  # ids, keys, leaf, distance, paths, labels of one sampled item
RANK_DECIMALS = 2  # gains closer than 0.01 tie in the ranking
# The figures of the evidence table, in the table's order (paths of evaluation.side_figures;
# "top" is the tree's top level).
TABLE_FIGURES = {
    "knn": "knn.balanced_accuracy",
    "label entropy": "labels.label_entropy",
    "p99 coverage": "coverage.p99",
    "top entropy": "balance.top.entropy",
}
VERDICT_MARK = {"better than random": "+", "no better than random": "=",
                "worse than random": "-"}


@dataclass(frozen=True)
class Candidate:
    """One configuration of the sweep: cluster counts on the sample, metric, dedup."""

    shape: str  # how the counts came about: "suggested", "leaves x2", ...
    n_clusters: tuple[int, ...]
    metric: str
    dedup_threshold: float | None = None

    @property
    def label(self) -> str:
        dedup = "off" if self.dedup_threshold is None else f"{self.dedup_threshold:g}"
        return f"{list(self.n_clusters)} {self.metric} dedup {dedup}"


@dataclass
class TuneRow:
    """A configuration's outcome: its figures against random and its cost."""

    candidate: Candidate
    pool_clusters: tuple[int, ...]
    figures: dict[str, dict]  # table name -> {curated, random_mean, verdict, gain}
    worse: list[str]  # figures worse than random (not the trade-offs of balancing)
    worse_headline: int  # of them, headline figures (the ones the evaluation's check judges)
    better_headline: int  # headline figures better than random
    selected: int  # items selected on the sample (copies counted)
    duplicates_removed: int
    seconds: float
    top_clusters: int
    rank: int = 0


@dataclass
class TuneResult:
    rows: list[TuneRow]  # ranked, best first
    n_sample: int
    n_pool: int
    target: int
    sample_target: int
    seed: int
    eval_metric: str
    labelled: int
    base: HierarchyConfig
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> TuneRow:
        return self.rows[0]


def memory_bound(sample: int, dim: int, dedup: bool = False) -> int:
    """Bytes a sweep holds at once (module doc): VECTOR_COPIES x sample x d x 4 B + sample x
    64 B; with dedup also one run of `near_duplicates` (runs of at most leaf_cap =
    DedupConfig's default items: 5 x run x d x 4 B + QUERY_ROWS x 2 x run x 12 B of
    range-search pairs)."""
    total = VECTOR_COPIES * sample * dim * 4 + sample * PER_ITEM_BYTES
    if dedup:
        from .config import DedupConfig
        from .dedup import QUERY_ROWS

        run = min(sample, DedupConfig().leaf_cap)
        total += 5 * run * dim * 4 + QUERY_ROWS * 2 * run * 12
    return total


def scale_levels(n_clusters: Sequence[int], factor: float) -> tuple[int, ...]:
    """Cluster counts x factor (>= 1), rounded: every cluster keeps its items on a pool
    `factor` times the sample (a strictly decreasing list stays so: k1 > k2 gives
    k1 x f >= k2 x f + f)."""
    if factor < 1:
        raise ValueError(f"a pool is at least its sample: factor {factor} < 1")
    return tuple(max(1, round(k * factor)) for k in n_clusters)


def shape_variants(n_sample: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, cluster counts) of the sweep's tree shapes for a sample of `n_sample` items:
    the rule's (suggest_levels), leaves x2 and x0.5 (upper levels kept, at least 2 items
    per leaf, still strictly decreasing), and the depth variant (module doc). Duplicates
    and shapes that do not fit the sample are left out."""
    base = tuple(suggest_levels(n_sample))
    shapes = [("suggested", base)]
    for factor in LEAF_FACTORS:
        leaves = min(round(base[0] * factor), n_sample // 2)
        shapes.append((f"leaves x{factor:g}", (leaves, *base[1:])))
    if len(base) == 2:
        middle = round(math.sqrt(base[0] * base[1]))
        shapes.append(("3 levels", (base[0], middle, base[1])))
    else:
        shapes.append(("2 levels", (base[0], base[-1])))
    out, seen = [], set()
    for name, ks in shapes:
        valid = all(a > b for a, b in zip(ks, ks[1:], strict=False)) and ks[-1] >= 1
        if valid and 2 <= ks[0] <= n_sample and ks not in seen:
            seen.add(ks)
            out.append((name, ks))
    return out


def sweep_candidates(n_sample: int, metrics: Sequence[str] = METRICS,
                     dedup_thresholds: Sequence[float] = ()) -> list[Candidate]:
    """Every shape with every metric, then the suggested shape with each dedup threshold."""
    shapes = shape_variants(n_sample)
    out = [Candidate(name, ks, metric) for name, ks in shapes for metric in metrics]
    name, ks = shapes[0]
    out += [Candidate(name, ks, metric, float(t)) for t in dedup_thresholds for metric in metrics]
    return out


def candidate_config(base: HierarchyConfig, candidate: Candidate, seed: int) -> HierarchyConfig:
    """`base`'s fit options with the candidate's counts and metric (per-level lists that no
    longer fit the depth fall back to their first value; every point fits level 1)."""
    steps = base.resampling_steps[:1]
    return HierarchyConfig(**{**base.model_dump(), "n_clusters": list(candidate.n_clusters),
                              "metric": candidate.metric, "seed": seed, "resampling_steps": steps,
                              "sample_sizes": [], "level1_split": 1, "fit_sample_size": None})


def _figure(versus: dict, path: str) -> dict | None:
    figure = versus.get(path)
    if figure is None:
        return None
    return {"curated": figure["curated"], "random_mean": figure["random_mean"],
            "random_std": figure["random_std"], "gain": figure["gain"],
            "verdict": figure["verdict"]}


def run_candidate(x: np.ndarray, item_ids, keys: np.ndarray, labels: np.ndarray | None,
                  candidate: Candidate, base: HierarchyConfig, sample_target: int,
                  pool_factor: float, seed: int = 0, eval_metric: str = "l2",
                  random_draws: int = 5) -> TuneRow:
    """Fit, (dedup,) select and evaluate one configuration on the sample (module doc).
    item_ids: pyarrow strings, one per row of x; keys: their `selection.item_keys`."""
    import pyarrow as pa

    from .evaluation import BETTER_VERDICT, TRADE_OFFS, WORSE, evaluate_selection, headline_paths
    from .hierarchy import fit_hierarchy
    from .selection import sample_rows

    started = time.perf_counter()
    fit = fit_hierarchy(x, candidate_config(base, candidate, seed))
    where = fit.assignment
    eligible = np.arange(where.leaf.size, dtype=np.int64)
    removed = 0
    if candidate.dedup_threshold is not None:
        from .dedup import near_duplicates

        found = near_duplicates(where.leaf, keys, where.distance, x, candidate.dedup_threshold)
        eligible = np.flatnonzero(~found.is_duplicate).astype(np.int64)
        removed = found.removed
    chosen = sample_rows(fit.hierarchy, where.leaf[eligible],
                         # dedup may leave fewer items than the target: take them all
                         SampleConfig(target_size=min(sample_target, eligible.size), seed=seed),
                         item_ids.take(pa.array(eligible)), where.distance[eligible])
    rows = eligible[chosen.indices]
    report = evaluate_selection(x, where.paths, rows, chosen.weights, labels, keys=keys,
                                seed=seed, metric=eval_metric, random_draws=random_draws)
    versus = report["versus_random"]
    top = f"balance.level_{fit.hierarchy.n_levels}.entropy"
    figures = {}
    for name, path in TABLE_FIGURES.items():
        figure = _figure(versus, top if path == "balance.top.entropy" else path)
        if figure is not None:
            figures[name] = figure
    headline = set(headline_paths(report).values())
    return TuneRow(
        candidate=candidate,
        pool_clusters=scale_levels(candidate.n_clusters, pool_factor),
        figures=figures,
        worse=[f["figure"] for p, f in versus.items()
               if f["verdict"] == WORSE and p not in TRADE_OFFS and not f["at_best"]],
        worse_headline=sum(versus[p]["verdict"] == WORSE and not versus[p]["at_best"]
                           for p in headline),
        better_headline=sum(versus[p]["verdict"] == BETTER_VERDICT for p in headline),
        selected=chosen.size,
        duplicates_removed=removed,
        seconds=time.perf_counter() - started,
        top_clusters=int(report["pool"]["balance"][f"level_{fit.hierarchy.n_levels}"]
                         ["clusters"]),
    )


def rank_key(row: TuneRow, order: int) -> tuple:
    """Sort key of a row (smaller is better): the ranking rule of the module doc."""
    def gain(name: str) -> float:
        figure = row.figures.get(name)
        return 0.0 if figure is None else figure["gain"]

    p99 = row.figures.get("p99 coverage")
    p99_share = p99["gain"] / p99["random_mean"] if p99 and p99["random_mean"] > 0 else 0.0
    top = row.figures.get("top entropy")
    top_share = top["gain"] / math.log(row.top_clusters) if top and row.top_clusters > 1 else 0.0
    gains = (gain("knn"), gain("label entropy"), p99_share, top_share)
    return (row.worse_headline, len(row.worse), -row.better_headline,
            *(-round(g, RANK_DECIMALS) for g in gains), order)


def tune(x: np.ndarray, item_ids, labels: np.ndarray | None, target: int, n_pool: int, *,
         base: HierarchyConfig | None = None, candidates: Sequence[Candidate] | None = None,
         metrics: Sequence[str] = METRICS, dedup_thresholds: Sequence[float] = (),
         seed: int = 0, eval_metric: str = "l2", random_draws: int = 5) -> TuneResult:
    """Sweep `candidates` (default `sweep_candidates`) on the sample `x` (rows in a canonical
    order; `item_ids` one per row, list of str or pyarrow strings) of a pool of `n_pool` items,
    for a subset of `target` items of the pool; rank them (`rank_key`). Same sample, ids,
    labels and seed: same table and recommendation."""
    import pyarrow as pa

    from .selection import item_keys

    x = np.ascontiguousarray(x, dtype=np.float32)
    n_sample = x.shape[0]
    if not 2 <= n_sample <= n_pool:
        raise ValueError(f"a sample of {n_sample} items from a pool of {n_pool}: need "
                         f"2 <= sample <= pool")
    if not 1 <= target <= n_pool:
        raise ValueError(f"target {target} must lie in 1..{n_pool} (the pool's items)")
    if isinstance(item_ids, pa.ChunkedArray):
        item_ids = item_ids.combine_chunks()
    ids = item_ids if isinstance(item_ids, pa.Array) else pa.array(item_ids, pa.string())
    if len(ids) != n_sample:
        raise ValueError(f"{len(ids)} item ids for {n_sample} vectors")
    if labels is not None and np.shape(labels) != (n_sample,):
        raise ValueError(f"labels must have shape ({n_sample},), got {np.shape(labels)}")
    keys = item_keys(ids)
    base = base or HierarchyConfig(n_clusters=[2, 1], resampling_steps=[5], max_iter=30)
    if candidates is None:
        candidates = sweep_candidates(n_sample, metrics, dedup_thresholds)
    sample_target = max(1, round(target * n_sample / n_pool))
    factor = n_pool / n_sample
    rows = [run_candidate(x, ids, keys, labels, c, base, sample_target, factor, seed,
                          eval_metric, random_draws) for c in candidates]
    order = sorted(range(len(rows)), key=lambda i: rank_key(rows[i], i))
    ranked = [rows[i] for i in order]
    for position, row in enumerate(ranked, start=1):
        row.rank = position
    labelled = 0 if labels is None else n_sample
    return TuneResult(rows=ranked, n_sample=n_sample, n_pool=n_pool, target=target,
                      sample_target=sample_target, seed=seed, eval_metric=eval_metric,
                      labelled=labelled, base=base)


# --- output ---------------------------------------------------------------------------------


def recommended_block(result: TuneResult, row: TuneRow | None = None) -> str:
    """The pools.yaml text of the winner (or `row`): `hierarchy:` with the pool's cluster
    counts, the metric and the base's fit options; `dedup:` when it deduplicated."""
    import yaml

    row = row or result.best
    base = result.base
    hierarchy = {"n_clusters": list(row.pool_clusters), "metric": row.candidate.metric,
                 "resampling_steps": list(base.resampling_steps[:1]),
                 "max_iter": base.max_iter, "seed": result.seed}
    block: dict = {"hierarchy": hierarchy}
    if row.candidate.dedup_threshold is not None:
        block["dedup"] = {"enabled": True, "threshold": row.candidate.dedup_threshold}
    return yaml.safe_dump(block, default_flow_style=None, sort_keys=False)


def _cell(figure: dict | None) -> str:
    if figure is None:
        return "-"
    curated, mean = (round(figure[k], 3) + 0.0 for k in ("curated", "random_mean"))  # no -0
    return (f"{curated:.3f} ({mean:.3f}) "
            f"{VERDICT_MARK[figure['verdict']]}")


def evidence_table(result: TuneResult) -> str:
    """One line per configuration, best first: rank, clusters on the sample and on the pool,
    metric, dedup (threshold and items removed), each table figure as `curated (random mean)
    verdict` (+ better, = no better, - worse than random), the count of figures worse than
    random, seconds."""
    names = [n for n in TABLE_FIGURES if any(n in r.figures for r in result.rows)]
    header = ["rank", "shape", "clusters (sample)", "clusters (pool)", "metric", "dedup",
              *names, "worse", "s"]
    lines = []
    for r in result.rows:
        c = r.candidate
        dedup = "off" if c.dedup_threshold is None else \
            f"{c.dedup_threshold:g} (-{r.duplicates_removed})"
        lines.append([str(r.rank), c.shape, str(list(c.n_clusters)), str(list(r.pool_clusters)),
                      c.metric, dedup, *(_cell(r.figures.get(n)) for n in names),
                      str(len(r.worse)), f"{r.seconds:.1f}"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def summary(result: TuneResult) -> dict:
    """The sweep as JSON-ready data (what `curate tune --json` prints)."""
    return {
        "n_pool": result.n_pool, "n_sample": result.n_sample, "target": result.target,
        "sample_target": result.sample_target, "seed": result.seed,
        "eval_metric": result.eval_metric, "labelled_items": result.labelled,
        "notes": result.notes,
        "rows": [{"rank": r.rank, "shape": r.candidate.shape,
                  "n_clusters_sample": list(r.candidate.n_clusters),
                  "n_clusters_pool": list(r.pool_clusters), "metric": r.candidate.metric,
                  "dedup_threshold": r.candidate.dedup_threshold,
                  "duplicates_removed": r.duplicates_removed, "selected": r.selected,
                  "figures": r.figures, "worse_than_random": r.worse,
                  "better_headline": r.better_headline, "seconds": round(r.seconds, 3)}
                 for r in result.rows],
        "recommended": recommended_block(result),
    }
