"""Time one `<pool>/evaluation/<subset>` run at pool scale (prints medians; not a test).

    python benchmarks/bench_eval_scale.py --dir /tmp/evalbench --n 1000000   # build + time

The first call writes a synthetic pool into LanceDB under --dir (embeddings, assignments in a
fitted tree, labels in the raw table's meta, one subset); later calls with the same --dir reuse
it. The evaluation asset is then invoked directly, --repeats times, with its real resources.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pool_config(n: int, dim: int, subset: int):
    from curation.config import HierarchyConfig
    from curation.pools import PoolConfig, SubsetSpec

    return PoolConfig(
        name="scale", dim=dim,
        hierarchy=HierarchyConfig(n_clusters=[200, 20], resampling_steps=[0], max_iter=10,
                                  seed=0, fit_sample_size=20000, device="cpu"),
        subsets=[SubsetSpec(name="sub", target_size=subset, strategy="random", seed=0)],
    )


def build(lancedb, pool, n: int, dim: int, batch: int = 200_000) -> None:
    import pyarrow as pa

    from curation.drops import assignment_rows
    from curation.hierarchy import fit_hierarchy
    from curation.store import FitRecord, vector_array
    from curation_demo.synthetic import long_tailed_mixture

    db = lancedb.connect()
    x, _ = long_tailed_mixture(n=n, dim=dim, n_components=500, seed=0)
    fit = fit_hierarchy(x[:: max(n // 20000, 1)], pool.hierarchy)
    lancedb.store(pool.name).save_fit(FitRecord(fit_version=1, hierarchy=fit.hierarchy,
                                                n_items=n, mean_distance=1.0, drops={"d0": n}))
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        ids = pa.array([f"item-{i}" for i in range(lo, hi)])
        drop = pa.array(["d0"] * (hi - lo))
        uri = pa.array([f"mem://{i}" for i in range(lo, hi)])
        emb = pa.table({"item_id": ids, "drop": drop, "uri": uri,
                        "vector": vector_array(x[lo:hi])})
        asg = assignment_rows(ids, drop, uri, fit.hierarchy.assign(x[lo:hi]), 1)
        for kind, table in (("embeddings", emb), ("assignments", asg)):
            name = pool.table(kind)
            if lo == 0:
                db.create_table(name, table)
            else:
                db.open_table(name).add(table)


def build_labels(lancedb, pool, n: int, dim: int, n_labels: int = 10) -> None:
    """`label` in the raw table's meta: the mixture component modulo n_labels (a handful of
    classes, as in the demo pools; the k-NN test split is per_class x classes rows)."""
    import pyarrow as pa

    from curation_demo.synthetic import long_tailed_mixture

    _, labels = long_tailed_mixture(n=n, dim=dim, n_components=500, seed=0)
    meta = [json.dumps({"label": int(v) % n_labels}) for v in labels]
    lancedb.connect().create_table(pool.table("raw"), pa.table({
        "item_id": [f"item-{i}" for i in range(n)], "meta": meta}))


def build_subset(lancedb, pool, n: int, subset: int) -> None:
    """A uniform subset drawn apart from any evaluation seed (with default_rng(0) it would be
    the old evaluation's own random baseline, and both sides would read the same)."""
    import pyarrow as pa

    chosen = np.sort(np.random.default_rng(12345).choice(n, subset, replace=False))
    lancedb.connect().create_table(pool.table("subset_sub"), pa.table({
        "item_id": [f"item-{i}" for i in chosen],
        "weight": pa.array(np.ones(subset, np.int64)),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--join-budget-mib", type=int, default=None,
                        help="curation.pool_stream.JOIN_BUDGET for this run (default 512)")
    args = parser.parse_args()
    if args.join_budget_mib:
        from curation import pool_stream

        pool_stream.JOIN_BUDGET = args.join_budget_mib * 2**20

    from dagster import DagsterInstance, build_asset_context

    from assets.evaluation import build_evaluation_asset
    from resources.lancedb import LanceDBResource
    from resources.storage import LandingStorage

    root = Path(args.dir)
    pool = pool_config(args.n, args.dim, args.subset)
    lancedb = LanceDBResource(uri=str(root / "lancedb"))
    landing = LandingStorage(url=str(root / "landing"))
    if lancedb.open(pool.table("embeddings")) is None:
        started = time.perf_counter()
        build(lancedb, pool, args.n, args.dim)
        print(f"built {args.n} x {args.dim} in {time.perf_counter() - started:.1f} s")
    if lancedb.open(pool.table("raw")) is None:
        build_labels(lancedb, pool, args.n, args.dim)
    if lancedb.open(pool.table("subset_sub")) is None:
        build_subset(lancedb, pool, args.n, args.subset)
    evaluation = build_evaluation_asset(pool, pool.subsets[0])
    instance = DagsterInstance.ephemeral()
    times, cpu = [], []
    for _ in range(args.repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = evaluation(context=build_asset_context(instance=instance), lancedb=lancedb,
                            landing=landing)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    values = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pool {values['pool_size']} x {args.dim}, subset {values['selected_items']}: "
          f"evaluation {statistics.median(times):.2f} s median of {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)}), CPU {statistics.median(cpu):.2f} s "
          f"median, peak RSS {peak:.0f} MiB, pool passes {values['pool_passes']}, vectors read "
          f"{values.get('vectors_read', values['pool_size'])}, coverage p99 curated "
          f"{values['coverage_p99_curated']:.3f} random {values['coverage_p99_random']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
