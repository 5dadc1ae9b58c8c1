"""Platform benchmark (prints a table; not a test): the live path under the real daemon.

    python benchmarks/bench_platform.py                          # 10 drops x 10,000 x 384 (100k)
    python benchmarks/bench_platform.py --n-drops 100            # a 1M pool (long)
    python benchmarks/bench_platform.py --n-drops 4 --drop-size 2000 --dim 64 --repeat 1  # smoke

Lands `--n-drops` drops of synthetic 384-d vectors in a temp landing folder, starts
`dagster-daemon` over workspace.yaml (deploy/dagster.local.yaml instance, sensor and automation
ticks of `--tick` seconds) and times the first full materialisation (sensor, ingestion, first
fit, assignments, subsets, evaluations). Then lands `--repeat` more drops one at a time and
breaks each "drop landed -> every subset refreshed" time down (sensor wait, queue and launch,
step work, automation wait), with the runs one drop cost. Medians in the last row.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--tick", type=int, default=5, help="sensor/automation interval, seconds")
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pools = home / "pools.yaml"
        pools.write_text(POOL_YAML.format(dim=args.dim, clusters=f"[{args.clusters}]",
                                          steps=args.steps, fit_sample=args.fit_sample,
                                          target=args.target))
        env = {"CURATION_HOME": str(home / "curation"), "CURATION_POOLS": str(pools),
               "CURATION_SENSOR_INTERVAL_S": str(args.tick),
               "CURATION_AUTOMATION_INTERVAL_S": str(args.tick),
               "DAGSTER_HOME": str(home / "dagster")}
        os.environ.update(env)
        from dagster import DagsterInstance

        from curation.pools import load_pools
        from curation.synthetic import build_synthetic_drops
        from curation_dags import live
        from resources.lancedb import LanceDBResource

        pool = load_pools(pools)[0]
        landing = home / "curation" / "landing"
        lancedb = LanceDBResource(uri=str(home / "curation" / "lancedb"))
        live.write_instance_yaml(home / "dagster")
        build_synthetic_drops(landing, pool.prefix, args.n_drops, args.drop_size, args.dim)
        started = time.time()
        rows = []
        instance = DagsterInstance.get()  # creates the storage before the daemon does
        with live.daemon(home / "dagster", env) as proc:
            live.wait_until(lambda: live.subsets_cover(instance, lancedb, pool, started),
                            args.timeout, "first full materialisation", proc)
            full_s = time.time() - started
            fits = live.materialization_count(instance, [pool.name, "level_1"])
            for k in range(args.repeat):
                landed = time.time()
                (drop,) = build_synthetic_drops(landing, pool.prefix, 1, args.drop_size,
                                                args.dim, first=args.n_drops + k)
                live.wait_until(lambda t=landed: live.subsets_cover(instance, lancedb, pool, t),
                                args.timeout, f"subsets after {drop}", proc)
                rows.append(live.drop_timeline(instance, pool.name, drop, landed, time.time()))
            refits = live.materialization_count(instance, [pool.name, "level_1"]) - fits
    items = args.n_drops * args.drop_size
    print(f"pool of {items:,} items ({args.n_drops} drops x {args.drop_size:,} x {args.dim}-d), "
          f"tick {args.tick} s: first full materialisation {full_s:.1f} s; "
          f"refits during the incremental drops: {refits}")
    fields = ["sensor_wait_s", "drop_run_queue_s", "drop_run_s", "automation_wait_s",
              "subsets_run_queue_s", "subsets_run_s", "total_s", "runs"]
    print("| drop | " + " | ".join(fields) + " |")
    print("|---" * (len(fields) + 1) + "|")
    for k, r in enumerate(rows):
        print(f"| +{k + 1} | " + " | ".join(str(getattr(r, f)) for f in fields) + " |")
    print("| median | " + " | ".join(
        f"{statistics.median(getattr(r, f) for r in rows):.2f}" for f in fields) + " |")


if __name__ == "__main__":
    main()
