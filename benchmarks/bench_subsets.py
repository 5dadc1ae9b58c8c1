"""Benchmark subset selection straight from LanceDB (curation.subsets.select_subsets).

    python benchmarks/bench_subsets.py                       # 1M (x3) and 10M (x1) pools
    python benchmarks/bench_subsets.py --sizes 1000000,10000000,100000000 --repeats-large 1
    python benchmarks/bench_subsets.py --quick               # 200k pool once, small churn run

A synthetic `<pool>__assignments` table (4 levels, long-tailed leaf sizes, item_id / drop /
uri strings as the platform writes them) is written directly to LanceDB, no embedding. Each
measurement runs in a fresh subprocess, so its peak RSS (resource.getrusage) is its own:
wall time and peak RSS of one refresh (two streaming passes, fetch of the selected rows,
write of the subset table) for a 10% subset. Churn: a 1M pool's subset, then a 1% drop added
without refit, for both stability modes ("fair": order-free bottom-k; "sticky": the previous
version's members first): items that left vs the strict forced minimum (quota shrinkage) and
the fair minimum (+ the newcomers' expected share). (The whole-pool redraw that earlier
releases' `curate sample` made is gone: `curate sample` now runs this same selection.)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH = 1 << 20


def tree(n: int, seed: int = 0) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """(clusters per level, parent arrays, leaf probabilities) of a 4-level synthetic tree."""
    leaves = max(100, n // 1000)
    ks = [leaves, max(leaves // 10, 20), max(leaves // 50, 15), 10]
    rng = np.random.default_rng(seed)
    parents = []
    for k, up in zip(ks, ks[1:], strict=False):
        parents.append(np.concatenate([np.arange(up), rng.integers(0, up, k - up)]))
    from curation_demo.synthetic import zipf_weights

    return ks, parents, rng.permutation(zipf_weights(leaves, 1.0))


def batches(n: int, start: int, p: np.ndarray, parents, seed: int, drop: str,
            cached_keys: bool = False):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    for at in range(start, start + n, BATCH):
        m = min(BATCH, start + n - at)
        leaf = rng.choice(p.size, size=m, p=p)
        ids = pa.array([f"img-{i:010d}" for i in range(at, at + m)], pa.string())
        cols = {
            "item_id": ids,
            "drop": pa.array([drop] * m, pa.string()),
            "uri": pa.compute.binary_join_element_wise("s3://bucket/pool/", ids, ".jpg", ""),
            "distance": pa.array(rng.random(m, dtype=np.float32)),
        }
        level = leaf
        for lv in range(4):
            cols[f"level_{lv + 1}"] = pa.array(level.astype(np.int32))
            if lv < 3:
                level = parents[lv][level]
        cols["fit_version"] = pa.array(np.ones(m, np.int64))
        if cached_keys:
            from curation.selection import item_keys

            cols["item_key"] = pa.array(item_keys(ids), pa.uint64())
        yield pa.record_batch(cols)


def write_pool(db_dir: str, n: int, cached_keys: bool = False) -> None:
    import lancedb
    import pyarrow as pa

    _, parents, p = tree(n)
    db = lancedb.connect(db_dir)
    gen = batches(n, 0, p, parents, seed=1, drop="d0", cached_keys=cached_keys)
    first = next(gen)
    table = db.create_table("bench__assignments", pa.Table.from_batches([first]),
                            mode="overwrite")
    for b in gen:
        table.add(pa.Table.from_batches([b]))


def add_drop(db_dir: str, n: int, added: int) -> None:
    import lancedb
    import pyarrow as pa

    _, parents, p = tree(n)
    table = lancedb.connect(db_dir).open_table("bench__assignments")
    for b in batches(added, n, p, parents, seed=2, drop="d1"):
        table.add(pa.Table.from_batches([b]))


def refresh(db_dir: str, n: int, fraction: float, name: str = "s",
            stability: str = "fair") -> dict:
    """One subset refresh, as the asset does it; returns timings and churn."""
    import lancedb

    from curation import naming
    from curation.config import SampleConfig
    from curation.store import PoolStore
    from curation.subsets import read_previous, select_subsets

    ks, parents, _ = tree(n)
    db = lancedb.connect(db_dir)
    t0 = time.perf_counter()
    table = db.open_table("bench__assignments")
    config = SampleConfig(target_size=int(n * fraction), seed=7, stability=stability)
    previous = {name: read_previous(PoolStore(db, "bench"), name, ks[0])}
    scan = select_subsets(table, parents, ks[0], 1, {name: config}, previous=previous)
    t1 = time.perf_counter()
    result = scan.subsets[name]
    db.create_table(naming.subset_table("bench", name), result.rows, mode="overwrite")
    t2 = time.perf_counter()
    return {"n": scan.eligible, "selected": len(result.selection), "select_s": t1 - t0,
            "write_s": t2 - t1, "total_s": t2 - t0,
            "churn": result.churn.as_dict() if result.churn else None,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(args) -> int:
    if args.child == "write":
        write_pool(args.db, args.n, args.cached_keys)
        out = {}
    elif args.child == "add":
        add_drop(args.db, args.n, args.added)
        out = {}
    else:
        out = refresh(args.db, args.n, args.fraction, f"s_{args.stability}", args.stability)
    print(json.dumps(out))
    return 0


def run_child(*argv) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="per size up to 1M")
    parser.add_argument("--repeats-large", type=int, default=1, help="per size above 1M")
    parser.add_argument("--churn-size", type=int, default=1000000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cached-keys", action="store_true",
                        help="the assignments table carries item_key (no hashing of ids)")
    parser.add_argument("--no-churn", action="store_true")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--added", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stability", default="fair", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.sizes, args.repeats, args.churn_size = "200000", 1, 200000
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_subsets_"))
    frac = str(args.fraction)
    print("| pool items | subset items | leaves | write pool s | refresh s (median) | "
          "select s | write subset s | peak RSS MiB | runs |"
          + (" (item_key cached)" if args.cached_keys else ""))
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        db = str(scratch / f"pool_{n}")
        shutil.rmtree(db, ignore_errors=True)
        t = time.perf_counter()
        run_child("--child", "write", "--db", db, "--n", str(n),
                  *(["--cached-keys"] if args.cached_keys else []))
        written = time.perf_counter() - t
        repeats = args.repeats if n <= 1000000 else args.repeats_large
        runs = [run_child("--child", "refresh", "--db", db, "--n", str(n), "--fraction", frac)
                for _ in range(repeats)]
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("total_s", "select_s", "write_s")}
        peak = max(r["peak_mib"] for r in runs)
        print(f"| {n:,} | {runs[0]['selected']:,} | {tree(n)[0][0]:,} | {written:.1f} | "
              f"{med['total_s']:.2f} | {med['select_s']:.2f} | {med['write_s']:.2f} | "
              f"{peak:.0f} | {repeats} |", flush=True)
        shutil.rmtree(db, ignore_errors=True)

    if args.no_churn:
        return 0
    n = args.churn_size
    db = str(scratch / "churn")
    shutil.rmtree(db, ignore_errors=True)
    run_child("--child", "write", "--db", db, "--n", str(n))
    modes = ("fair", "sticky")
    for mode in modes:
        run_child("--child", "refresh", "--db", db, "--n", str(n), "--fraction", frac,
                  "--stability", mode)
    run_child("--child", "add", "--db", db, "--n", str(n), "--added", str(n // 100))
    after = {mode: run_child("--child", "refresh", "--db", db, "--n", str(n), "--fraction",
                             frac, "--stability", mode) for mode in modes}
    print()
    print("| stability | pool | subset | drop added | left | entered | strict forced minimum | "
          "fair minimum | left / forced | left / fair | refresh s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        c = after[mode]["churn"]
        ratio = f"{c['left'] / c['forced_minimum']:.2f}" if c["forced_minimum"] else "inf"
        print(f"| {mode} | {n:,} | {after[mode]['selected']:,} | {n // 100:,} | {c['left']:,} | "
              f"{c['entered']:,} | {c['forced_minimum']:,} | {c['fair_minimum']:,} | {ratio} | "
              f"{c['left'] / max(c['fair_minimum'], 1):.2f} | {after[mode]['total_s']:.2f} |")
    shutil.rmtree(db, ignore_errors=True)
    if not args.dir:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
