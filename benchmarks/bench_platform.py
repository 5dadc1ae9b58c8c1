"""Platform benchmark (prints a table; not a test): full materialisation, then one more drop.

    python benchmarks/bench_platform.py                       # 100 drops x 10,000 x 384
    python benchmarks/bench_platform.py --n-drops 10 --drop-size 2000 --dim 64   # small

Runs the real graph in-process (LanceDB + a Dagster instance in a temp folder), on the CPU.
Reports: full materialisation time and peak RSS; time from landing one more drop to refreshed
subsets (target <= 30 s at 1M); the same drop on a pool of `--small-drops` drops (the cost should
follow the drop, not the pool: target within 2x).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(tmp: Path, name: str, args):
    from dagster import DagsterInstance

    from curation.config import HierarchyConfig
    from curation.pools import PoolConfig, SubsetSpec
    from curation_dags.definitions import build_definitions
    from resources.clustering import ClusteringResource
    from resources.lancedb import LanceDBResource
    from resources.storage import LandingStorage

    pool = PoolConfig(
        name=name, dim=args.dim,
        hierarchy=HierarchyConfig(n_clusters=args.clusters, resampling_steps=[args.steps],
                                  max_iter=20, fit_sample_size=args.fit_sample, seed=0),
        subsets=[SubsetSpec(name="balanced", target_size=args.target, seed=0)],
        refit={"max_added_fraction": 0.5, "max_distance_ratio": 2.0},
        health={"max_empty_fraction": 1.0, "max_cluster_share": 1.0},
    )
    home = tmp / name
    resources = {"landing": LandingStorage(url=str(home / "landing")),
                 "lancedb": LanceDBResource(uri=str(home / "lancedb")),
                 "clustering": ClusteringResource()}
    defs = build_definitions([pool], resources, with_sensors=False)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(str(home / "dagster"))
    return pool, defs, instance, home / "landing"


def run_pool(tmp: Path, name: str, n_drops: int, args) -> dict:
    from curation.commands.demo import build_synthetic_drops
    from curation_dags.local import ingest_drop, refresh

    pool, defs, instance, landing = build(tmp, name, args)
    drops = build_synthetic_drops(landing, pool.prefix, n_drops, args.drop_size, args.dim)
    started = time.perf_counter()
    for drop in drops:
        assert ingest_drop(defs, instance, pool, drop).success, drop
    ingested = time.perf_counter() - started
    full = refresh(defs, instance, pool, drops)
    assert all(r.success for r in full["results"])
    full_s = time.perf_counter() - started
    new = build_synthetic_drops(landing, pool.prefix, 1, args.drop_size, args.dim,
                                first=n_drops)
    t = time.perf_counter()
    assert ingest_drop(defs, instance, pool, new[0]).success
    inc = refresh(defs, instance, pool, new)
    incremental_s = time.perf_counter() - t
    assert all(r.success for r in inc["results"]) and not inc["refit"]
    return {"items": n_drops * args.drop_size, "ingest_s": ingested, "full_s": full_s,
            "incremental_s": incremental_s, "peak_rss_gib": peak_rss_gib()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-drops", type=int, default=100)
    p.add_argument("--drop-size", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--small-drops", type=int, default=10, help="drops of the small pool")
    p.add_argument("--clusters", type=lambda s: [int(v) for v in s.split(",")],
                   default=[500, 50])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--fit-sample", type=int, default=100_000)
    p.add_argument("--target", type=int, default=10_000)
    args = p.parse_args()
    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        small = run_pool(Path(tmp), "small", args.small_drops, args)
        big = run_pool(Path(tmp), "big", args.n_drops, args)
    print(f"| pool items | full materialisation s | peak RSS GiB | +1 drop ({args.drop_size}) "
          "to refreshed subsets s |")
    print("|---|---|---|---|")
    for r in (small, big):
        print(f"| {r['items']:,} | {r['full_s']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{r['incremental_s']:.1f} |")
    print(f"incremental ratio big/small: {big['incremental_s'] / small['incremental_s']:.2f}")


if __name__ == "__main__":
    main()
