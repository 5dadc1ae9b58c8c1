"""Platform benchmark (prints a table; not a test): the live path under the real daemon, at the
settings users run.

    python benchmarks/bench_platform.py                          # 10 drops x 10,000 x 384 (100k)
    python benchmarks/bench_platform.py --n-drops 100            # a 1M pool (long)
    python benchmarks/bench_platform.py --n-drops 4 --drop-size 2000 --dim 64 --repeat 1  # smoke

Lands `--n-drops` drops of synthetic 384-d vectors in a temp landing folder, starts a throwaway
PostgreSQL on loopback and `dagster-daemon` over workspace.yaml with the production instance
(deploy/dagster.yaml as shipped: PostgreSQL storage, queued runs, one run per pool at a time)
and the shipped tick intervals (`--tick`, default: the code location's defaults), and times
the first full materialisation (sensor, ingestion, first fit, assignments, subsets), then
until the evaluations and the report caught up with those subsets. Then lands `--repeat`
more drops one at a time and breaks each "drop landed -> every subset includes it" time down
per stage: sensor wait, queue, run launch, each step of
the drop's run, what came after the run. Medians in the last row. Finally one drop far from
the tree (a refit by the distance policy): when the subsets first include it, and when they
are refreshed over the refitted tree.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POOL_YAML = """\
pools:
  - name: bench
    modality: vectors
    dim: {dim}
    hierarchy: {{n_clusters: {clusters}, resampling_steps: [{steps}], max_iter: 20,
                fit_sample_size: {fit_sample}, seed: 0}}
    subsets:
      - {{name: balanced, target_size: {target}, strategy: random, seed: 0}}
    refit: {{max_added_fraction: 0.5, max_distance_ratio: 2.0, warm_start: false, cron: null}}
    health: {{max_empty_fraction: 1.0, max_cluster_share: 1.0}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-drops", type=int, default=10)
    p.add_argument("--drop-size", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", default="500,50")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--fit-sample", type=int, default=100_000)
    p.add_argument("--target", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3, help="incremental drops to time")
    p.add_argument("--tick", type=int, default=None,
                   help="sensor and automation interval, seconds (default: as shipped)")
    p.add_argument("--instance", choices=["production", "local"], default="production",
                   help="deploy/dagster.yaml (PostgreSQL) or deploy/dagster.local.yaml (SQLite)")
    p.add_argument("--no-refit-drop", action="store_true", help="skip the refit drop")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        home = Path(tmp)
        pools = home / "pools.yaml"
        pools.write_text(POOL_YAML.format(dim=args.dim, clusters=f"[{args.clusters}]",
                                          steps=args.steps, fit_sample=args.fit_sample,
                                          target=args.target))
        env = {"CURATION_HOME": str(home / "curation"), "CURATION_POOLS": str(pools),
               "DAGSTER_HOME": str(home / "dagster")}
        if args.tick is not None:
            env.update({"CURATION_SENSOR_INTERVAL_S": str(args.tick),
                        "CURATION_AUTOMATION_INTERVAL_S": str(args.tick)})
        from curation_demo import live

        if args.instance == "production":
            env.update(stack.enter_context(live.postgres_cluster()))
        os.environ.update(env)
        from dagster import DagsterInstance

        from curation.pools import load_pools
        from curation_dags.settings import automation_interval_s, sensor_interval_s
        from curation_demo.synthetic import build_synthetic_drops
        from resources.lancedb import LanceDBResource

        pool = load_pools(pools)[0]
        landing = home / "curation" / "landing"
        lancedb = LanceDBResource(uri=str(home / "curation" / "lancedb"))
        live.write_instance_yaml(home / "dagster", "dagster.yaml" if args.instance ==
                                 "production" else "dagster.local.yaml")
        build_synthetic_drops(landing, pool.prefix, args.n_drops, args.drop_size, args.dim)
        started = time.time()
        rows = []
        refit_row = None
        instance = DagsterInstance.get()  # creates the storage before the daemon does
        with live.daemon(home / "dagster", env) as proc:
            live.wait_until(lambda: live.subsets_cover(instance, lancedb, pool, started),
                            args.timeout, "first full materialisation", proc)
            full_s = time.time() - started
            # then the evaluations of those subsets and the report over them
            live.wait_until(lambda: live.reports_caught_up(instance, pool), args.timeout,
                            "evaluations and report", proc)
            reports_s = time.time() - started
            fits = live.materialization_count(instance, [pool.name, "level_1"])
            for k in range(args.repeat):
                landed = time.time()
                (drop,) = build_synthetic_drops(landing, pool.prefix, 1, args.drop_size,
                                                args.dim, first=args.n_drops + k)
                live.wait_until(lambda t=landed: live.subsets_cover(instance, lancedb, pool, t),
                                args.timeout, f"subsets after {drop}", proc)
                rows.append(live.drop_timeline(instance, pool.name, drop, landed, time.time()))
            refits = live.materialization_count(instance, [pool.name, "level_1"]) - fits
            if not args.no_refit_drop:
                refit_row = refit_drop(args, instance, lancedb, pool, landing, live, proc)
    items = args.n_drops * args.drop_size
    print(f"pool of {items:,} items ({args.n_drops} drops x {args.drop_size:,} x {args.dim}-d), "
          f"{args.instance} instance, sensor tick {sensor_interval_s()} s, automation tick "
          f"{automation_interval_s()} s: first full materialisation {full_s:.1f} s (every "
          f"subset over every drop), evaluations and report caught up at {reports_s:.1f} s; "
          f"refits during the incremental drops: {refits}")
    order = ["raw", "embeddings", "assignments", "subsets"]  # the drop run's steps, in order
    steps = sorted({s for r in rows for s in r.steps_s},
                   key=lambda s: (order.index(s) if s in order else len(order), s))
    fields = ["sensor_wait_s", "queue_s", "launch_s", *steps, "after_run_s", "total_s", "runs"]

    def value(r, f):
        return r.steps_s.get(f, 0.0) if f in steps else getattr(r, f)

    print("| drop | " + " | ".join(fields) + " |")
    print("|---" * (len(fields) + 1) + "|")
    for k, r in enumerate(rows):
        print(f"| +{k + 1} | " + " | ".join(str(value(r, f)) for f in fields) + " |")
    print("| median | " + " | ".join(
        f"{statistics.median(value(r, f) for r in rows):.2f}" for f in fields) + " |")
    if refit_row is not None:
        print("refit drop (far from the tree): " + ", ".join(
            f"{k} {v}" for k, v in refit_row.items()))


def refit_drop(args, instance, lancedb, pool, landing, live, proc) -> dict:
    """Land one drop far from the tree: seconds until the subsets include it (assigned to the
    old tree in its own run), and until they are refreshed over the refitted tree."""
    import numpy as np

    from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop

    fit_before = lancedb.store(pool.name).latest_fit_summary().fit_version
    drop = "drop-far"
    x, _ = fixed_mixture_draw(args.drop_size, args.dim, 777)
    landed = time.time()
    write_vector_drop(landing / pool.prefix / drop, x + np.float32(25.0),
                      [f"{drop}-{i:06d}" for i in range(args.drop_size)])

    def included(refitted: bool):
        meta = live.subsets_cover(instance, lancedb, pool, landed)
        if meta is None:
            return None
        fit = lancedb.store(pool.name).latest_fit_summary().fit_version
        return meta if (fit > fit_before) == refitted else None

    live.wait_until(lambda: included(False) or included(True), args.timeout,
                    "subsets including the far drop", proc)
    first_s = time.time() - landed
    live.wait_until(lambda: included(True), args.timeout, "subsets over the refitted tree",
                    proc)
    return {"included_s": round(first_s, 1), "refitted_subsets_s":
            round(time.time() - landed, 1)}

if __name__ == "__main__":
    main()
