"""Drop runs on a Ray cluster of one node vs two (not a test): throughput of a 20-drop backfill.

    .venv/bin/python benchmarks/bench_ray_backfill.py                 # 20 drops x 20,000 x 384
    .venv/bin/python benchmarks/bench_ray_backfill.py --drops 4 --drop-size 2000   # smoke

The steps of every run go to Ray through dagster-ray's executor ($CURATION_EXECUTOR=ray, one CPU
per step), on a cluster of one node of one CPU, then on one of two nodes of one CPU each
(`ray start --head` plus a second `ray start --address=...` on 127.0.0.1, each its own temp
dir). Each cluster gets the same 20 drops of precomputed vectors (the same seeds), a fresh
pool and a fresh database on one PostgreSQL (the production instance, deploy/dagster.yaml).
`--run-workers` run workers (processes of this machine that launch a drop's run and watch its
steps on Ray; 4 by default, more than the cluster's CPUs, so Ray is what limits) take the drops
from one queue; the clock runs from the first run's start to the last run's end. Each run
holds raw and embeddings of its drop (what a drop run holds before the first fit). Every row
is checked to have arrived.

Ray binds the host's non-loopback address whatever --node-ip-address says: the script re-runs
itself in a private network namespace (`unshare --net`, loopback only), as tests/live/test_ray.py
does, and uses its cluster helper (tests/servers.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # servers.ray_cluster: the tests' loopback cluster

IN_NETNS = "CURATION_BENCH_IN_NETNS"
POOL = "raybench"


def pool_config(dim: int) -> dict:
    return {"pools": [{
        "name": POOL, "modality": "vectors", "dim": dim,
        "hierarchy": {"n_clusters": [50, 5], "resampling_steps": [1], "max_iter": 10,
                      "seed": 0, "device": "cpu"},
        "subsets": [{"name": "balanced", "target_size": 1000, "strategy": "random",
                     "seed": 0}]}]}


def run_worker(env: dict, drops, start, done) -> None:
    """One run worker: takes drops from the queue, runs each drop's run (steps on Ray)."""
    os.environ.update(env)
    import dagster as dg

    from curation_demo.live import reconstructable_drop_job

    with dg.DagsterInstance.get() as instance:
        job = reconstructable_drop_job()
        start.wait(timeout=600)
        while True:
            drop = drops.get()
            if drop is None:
                return
            began = time.time()
            result = dg.execute_job(job, instance, tags={"dagster/partition": drop})
            why = [f"{e.event_type_value}: {e.message}" for e in result.all_events
                   if e.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")]
            done.put((drop, began, time.time(), result.success, why))


def keep_logs(ray_root: Path, where: Path, nodes: int) -> Path:
    """Copy the cluster's log files (not its sockets) out of its temp dir, which goes."""
    kept = Path(tempfile.mkdtemp(prefix=f"raybench-logs-{nodes}-", dir=where))
    for path in ray_root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "logs" in path.parts:
            target = kept / path.relative_to(ray_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return kept


def one_cluster(nodes: int, args, postgres: dict, work: Path) -> dict:
    from servers import ray_cluster

    from curation.store import PoolStore
    from curation_demo.live import new_database
    from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop

    home = work / f"nodes{nodes}"
    landing = home / "landing" / POOL
    drops = [f"d{k:02d}" for k in range(args.drops)]
    for k, drop in enumerate(drops):  # the same vectors for every cluster size
        x, _ = fixed_mixture_draw(args.drop_size, args.dim, 1000 + k)
        write_vector_drop(landing / drop, x, [f"{drop}-{i}" for i in range(args.drop_size)])
    pools = home / "pools.json"
    pools.write_text(json.dumps(pool_config(args.dim)))
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    ray_root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    try:
        with ray_cluster(ray_root, nodes=nodes) as cluster:
            env = {**new_database(postgres, f"raybench{nodes}"),
                   "DAGSTER_HOME": str(dagster_home), "CURATION_HOME": str(home),
                   "CURATION_POOLS": str(pools), "CURATION_LANDING": str(home / "landing"),
                   "CURATION_LANCEDB_URI": str(home / "lancedb"), "CURATION_EXECUTOR": "ray",
                   "CURATION_RAY_ADDRESS": cluster.jobs_url,
                   "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
            os.environ.update(env)
            import dagster as dg

            with dg.DagsterInstance.get() as instance:
                instance.add_dynamic_partitions(f"{POOL}_drops", drops)
            spawn = multiprocessing.get_context("spawn")
            queue, done = spawn.Queue(), spawn.Queue()
            for drop in drops:
                queue.put(drop)
            for _ in range(args.run_workers):
                queue.put(None)
            start = spawn.Barrier(args.run_workers)
            workers = [spawn.Process(target=run_worker, args=(env, queue, start, done))
                       for _ in range(args.run_workers)]
            for w in workers:
                w.start()
            runs = [done.get(timeout=3600) for _ in drops]
            for w in workers:
                w.join(timeout=60)
        failed = {d: why for d, _, _, ok, why in runs if not ok}
        if failed:
            kept = keep_logs(ray_root, work.parent, nodes)
            raise SystemExit(f"{nodes} node(s): runs failed: {json.dumps(failed, indent=1)}\n"
                             f"Ray's logs: {kept}")
    finally:
        shutil.rmtree(ray_root, ignore_errors=True)
    counts = PoolStore.open_uri(str(home / "lancedb"), POOL).drop_counts("embeddings")
    if counts != {d: args.drop_size for d in drops}:
        raise SystemExit(f"{nodes} node(s): embeddings rows per drop {counts}")
    wall = max(end for _, _, end, _, _ in runs) - min(began for _, began, _, _, _ in runs)
    return {"nodes": nodes, "wall_s": wall, "drops": len(drops),
            "run_s": sorted(end - began for _, began, end, _, _ in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--drop-size", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--run-workers", type=int, default=4)
    args = parser.parse_args()
    if os.environ.get(IN_NETNS) != "1":
        script = 'ip link set lo up && exec "$0" "$@"'
        os.execvpe("unshare", ["unshare", "--net", "--", "sh", "-c", script, sys.executable,
                               *sys.argv], {**os.environ, IN_NETNS: "1"})
    from curation_demo.live import postgres_cluster

    results = []
    with postgres_cluster() as postgres, tempfile.TemporaryDirectory() as tmp:
        for nodes in (1, 2):
            results.append(one_cluster(nodes, args, postgres, Path(tmp)))
            print(json.dumps(results[-1]), file=sys.stderr)
    base = results[0]["drops"] / results[0]["wall_s"]
    print(f"{args.drops} drop runs of {args.drop_size:,} x {args.dim} (raw + embeddings, each "
          f"step a Ray job of 1 CPU), {args.run_workers} run workers, {os.cpu_count()} cores")
    print("| Ray nodes (1 CPU each) | wall s | drops / min | median run s | throughput ratio |")
    print("|---|---|---|---|---|")
    for r in results:
        rate = r["drops"] / r["wall_s"]
        print(f"| {r['nodes']} | {r['wall_s']:.1f} | {60 * rate:.1f} | "
              f"{r['run_s'][len(r['run_s']) // 2]:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
