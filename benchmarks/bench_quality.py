"""Curated against random on messy real pools (prints tables; not a test).

    python benchmarks/bench_quality.py [--pools fashion,texts] [--seeds 3] [--no-tune]
                                       [--fashion-items 8000] [--text-draws 600]

Each bundled real pool is made long-tailed and given web-like near duplicates by the documented
generator in curation_demo/data.py (`messy_fashion_mnist`, `messy_texts`):
- class sizes follow a Zipf law (Fashion-MNIST: 8,000 images, exponent 1.2 over 10 classes;
  texts: 600 templated sentences drawn, exponent 2.0 over 6 topics, repeats kept once), as
  `make demo` draws them;
- in the 5 largest classes a third of the items are copied 1-5 times with a small change
  (images: shifted by up to a pixel, brightness x0.9-1.1, noise of 4 grey levels; texts: case,
  punctuation, spacing or quotes), so the copies land in the head classes, as on the web;
- identical content is kept once (raw ingests content once).

Every item goes through the pool's own embedder (curation/pools.yaml: EfficientNet-Lite0 at
64 px, MiniLM). Then, per configuration and curated seed (0..seeds-1), the platform's code
path in memory (`curation.tune.run_candidate`: `fit_hierarchy`, the dedup rule
`near_duplicates` when on, the sampler `sample_rows` for the pool's first subset target, and
`evaluate_selection` against 5 seeded uniform random draws of the same size from the whole
pool, duplicates included, in the pool's metric):
- `defaults`: the pool's hierarchy as shipped, metric following the embedder (cosine);
- `defaults + dedup`: the same with dedup on at the default threshold (DedupConfig);
- `tuned`: `curation.tune.tune`'s winner on a seeded sample of the pool (as `curate tune`
  recommends it, with the default dedup threshold in the sweep), cluster counts scaled to the
  pool; `tuned + dedup` when the winner did not deduplicate.

Per row: curated mean +- spread over the curated seeds, the random draws' mean +- spread (of
the seed-0 evaluation's 5 draws), the gain, and the verdicts (+ better, = no better, - worse
than random) per seed. The goal line checks `defaults + dedup`: a mean gain (over the curated
seeds, each against its 5 random draws) of >= 0.2 nats of label entropy and >= 3 points of k-NN
balanced accuracy; the smallest gain of a seed is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = {"label entropy": 0.2, "knn": 0.03}
FIGURES = ("label entropy", "knn", "p99 coverage", "top entropy")
MARK = {"better than random": "+", "no better than random": "=", "worse than random": "-"}


def messy_pool(name: str, args):
    """(items, labels, source rows) of the pool's messy version (module doc)."""
    from curation.embedding.base import Item
    from curation_demo.data import messy_fashion_mnist, messy_texts

    if name == "fashion":
        pngs, labels, source = messy_fashion_mnist(args.fashion_items, args.data_seed)
        return [Item(f"fm{i:06d}", data=b) for i, b in enumerate(pngs)], labels, source
    texts, labels, source = messy_texts(args.text_draws, args.data_seed)
    return [Item(f"tx{i:06d}", text=t) for i, t in enumerate(texts)], labels, source


def embed(pool, items):
    from curation.embedding import EmbedderSpec, make_embedder

    out = make_embedder(EmbedderSpec(**pool.embedder_fields())).embed(items)
    if out.quarantined:
        raise RuntimeError(f"{len(out.quarantined)} items quarantined: {out.quarantined[:3]}")
    return out.vectors


def evaluate(x, ids, keys, labels, candidate, base, target, seeds, metric):
    from curation.tune import run_candidate

    return [run_candidate(x, ids, keys, labels, candidate, base, target, 1.0, seed, metric, 5)
            for seed in range(seeds)]


def tuned_candidates(x, ids, labels, base, target, metric, seed=0):
    """curate tune's winner on a seeded sample (as `curate tune --pool` draws it), scaled to
    the pool; plus the same with dedup when the winner did not deduplicate."""
    from curation.config import DEDUP_THRESHOLD
    from curation.evaluation import lowest
    from curation.selection import item_keys, rank_hash
    from curation.tune import TUNE_SAMPLE, Candidate, tune

    n = x.shape[0]
    rows = lowest(rank_hash(item_keys(ids), seed), TUNE_SAMPLE)
    started = time.perf_counter()
    result = tune(x[rows], ids.take(rows), labels[rows], target, n, base=base,
                  dedup_thresholds=(DEDUP_THRESHOLD,), seed=seed, eval_metric=metric)
    seconds = time.perf_counter() - started
    best = result.best.candidate
    out = [Candidate("tuned", result.best.pool_clusters, best.metric, best.dedup_threshold)]
    if best.dedup_threshold is None:
        out.append(Candidate("tuned + dedup", result.best.pool_clusters, best.metric,
                             DEDUP_THRESHOLD))
    return out, seconds, rows.size


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(name: str, n: int, dups: int, results: dict) -> tuple[list[str], bool]:
    lines = [f"\n{name}: {n:,} items ({dups:,} near copies)",
             "| configuration | clusters | metric | dedup | removed | figure | curated | "
             "random (5 draws) | gain | verdicts |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    goal_met = True
    for label, (candidate, runs) in results.items():
        for figure in FIGURES:
            got = [r.figures[figure] for r in runs if figure in r.figures]
            if not got:
                continue
            gains = [g["gain"] for g in got]
            verdicts = "".join(MARK[g["verdict"]] for g in got)
            lines.append(
                f"| {label} | {list(candidate.n_clusters)} | {candidate.metric} | "
                f"{candidate.dedup_threshold or 'off'} | "
                f"{np.mean([r.duplicates_removed for r in runs]):.0f} | {figure} | "
                f"{cell([g['curated'] for g in got])} | "
                f"{got[0]['random_mean']:.3f} ± {got[0]['random_std']:.3f} | "
                f"{np.mean(gains):+.3f} (min {min(gains):+.3f}) | {verdicts} |")
            if label == "defaults + dedup" and figure in GOAL:
                goal_met &= float(np.mean(gains)) >= GOAL[figure]
    return lines, goal_met


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", default="fashion,texts")
    p.add_argument("--seeds", type=int, default=3, help="curated seeds per configuration")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--fashion-items", type=int, default=8000)
    p.add_argument("--text-draws", type=int, default=600)
    p.add_argument("--no-tune", action="store_true")
    args = p.parse_args()

    import pyarrow as pa

    from curation.config import DEDUP_THRESHOLD
    from curation.pools import load_pools
    from curation.selection import item_keys
    from curation.tune import Candidate

    pools = {pool.name: pool for pool in load_pools()}
    summary, all_met = [], True
    for name in args.pools.split(","):
        pool = pools[name]
        started = time.perf_counter()
        items, labels, source = messy_pool(name, args)
        x = embed(pool, items)
        embed_s = time.perf_counter() - started
        ids = pa.array([item.ref for item in items], pa.string())
        keys = item_keys(ids)
        base = pool.hierarchy.model_copy(update={"device": "cpu"})
        metric = base.metric
        target = pool.subsets[0].target_size
        ks = tuple(base.n_clusters)
        candidates = [Candidate("defaults", ks, metric),
                      Candidate("defaults + dedup", ks, metric, DEDUP_THRESHOLD)]
        tune_s, tune_n = 0.0, 0
        if not args.no_tune:
            found, tune_s, tune_n = tuned_candidates(x, ids, labels, base, target, metric)
            candidates += found
        results = {}
        for c in candidates:
            results[c.shape] = (c, evaluate(x, ids, keys, labels, c, base, target, args.seeds,
                                           metric))
        lines, met = table(f"{name} (target {target}, curated seeds {args.seeds})", len(items),
                           int((source >= 0).sum()), results)
        print("\n".join(lines), flush=True)
        all_met &= met
        summary.append(f"| {name} | {len(items):,} | {embed_s:.0f} | "
                       f"{tune_n:,} items, {tune_s:.0f} s | "
                       f"{'met' if met else 'NOT met'} |")
    print("\n| pool | items | embed s | tune | goal (defaults + dedup: >= +0.2 nats, "
          ">= +3 k-NN points, mean over seeds) |\n|---|---|---|---|---|")
    print("\n".join(summary))
    print(f"\ngoal {'met' if all_met else 'NOT met'} on every pool")


if __name__ == "__main__":
    main()
