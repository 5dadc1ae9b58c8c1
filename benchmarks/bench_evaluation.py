"""Curated vs same-size random subsets on a pool the demo wrote (prints a table; not a test).

    curate demo                                   # writes the fashion pool under ./.curation
    python benchmarks/bench_evaluation.py         # evaluates its subsets' configs over 5 seeds

Reads the pool's embeddings, current tree and labels (the pool's labels file) from
$CURATION_HOME, then for every subset config and seeds 0..4 draws the balanced subset
(curation.selection) and a uniform one of the same size, and reports mean and standard
deviation of the coverage p50/p99, leaf clusters hit, top-level entropy, label entropy and the
20-NN balanced accuracy (curation.evaluation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIGURES = [
    ("coverage p50", ("coverage", "median")),
    ("coverage p99", ("coverage", "p99")),
    ("leaf clusters hit", ("coverage", "leaf_share")),
    ("top-level entropy", ("balance", None)),
    ("label entropy", ("labels", "label_entropy")),
    ("labels hit", ("labels", "labels_hit")),
    ("20-NN balanced acc.", ("knn", "balanced_accuracy")),
    ("20-NN accuracy", ("knn", "accuracy")),
]


def figure(side: dict, where) -> float:
    group, key = where
    if group == "balance":
        return side["balance"][list(side["balance"])[-1]]["entropy"]
    return float(side[group][key])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="fashion")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    from assets.evaluation import read_labels_file
    from curation.evaluation import evaluate_selection
    from curation.pool_pass import items_by_row, open_snapshot, pool_pass
    from curation.pools import load_pools
    from curation.selection import sample_rows
    from curation_dags import settings
    from resources.lancedb import LanceDBResource
    from resources.storage import LandingStorage

    pool = next(p for p in load_pools() if p.name == args.pool)
    lancedb = LanceDBResource(uri=settings.lancedb_uri(), endpoint_url=settings.s3_endpoint_url())
    landing = LandingStorage(url=settings.landing_url(), endpoint_url=settings.s3_endpoint_url())
    fit = lancedb.store(pool.name).load_fit()
    if fit is None:
        raise SystemExit(f"pool {pool.name} has no fit under {settings.lancedb_uri()}: run "
                         "`curate demo` first")
    # every item, id, vector and label at once: offline, unlike the asset's bounded pass
    passing = pool_pass(open_snapshot(lancedb.store(pool.name)), read_labels_file(landing, pool))
    batches = list(passing.batches())
    locators = np.concatenate([b.locators for b in batches])
    paths = np.concatenate([b.paths for b in batches])
    ids, _ = items_by_row(passing.embeddings, locators)
    x = lancedb.store(pool.name).vectors_by_row(passing.embeddings, locators)
    codes = (np.concatenate([b.codes for b in batches]) if passing.labelled
             else np.full(locators.size, -1))
    missing = int((codes < 0).sum())
    labels = codes if passing.labelled and missing == 0 else None
    distance = fit.hierarchy.assign(x).distance  # for the "closest" strategy
    print(f"pool {pool.name}: {len(ids)} items, {x.shape[1]}-d, tree "
          f"{[c.shape[0] for c in fit.hierarchy.centroids]}, labels: "
          f"{'yes' if labels is not None else f'no ({missing} missing)'}")
    for spec in pool.subsets:
        rows = {name: ([], []) for name, _ in FIGURES}
        for seed in range(args.seeds):
            sel = sample_rows(fit.hierarchy, paths[:, 0], spec.model_copy(update={"seed": seed}),
                              ids, distance)
            report = evaluate_selection(x, paths, sel.indices, sel.weights, labels, seed=seed,
                                        metric=pool.hierarchy.metric)
            for name, where in FIGURES:
                if where[0] in report["curated"]:
                    rows[name][0].append(figure(report["curated"], where))
                    rows[name][1].append(figure(report["random"], where))
        print(f"\nsubset {spec.name}: {spec.target_size} items, {spec.strategy}, "
              f"seeds 0..{args.seeds - 1} (mean ± sd)")
        print("| figure | curated | uniform random |\n|---|---|---|")
        for name, (cur, rnd) in rows.items():
            if cur:
                print(f"| {name} | {np.mean(cur):.4f} ± {np.std(cur):.4f} | "
                      f"{np.mean(rnd):.4f} ± {np.std(rnd):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
