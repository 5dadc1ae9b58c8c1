"""One drop's steps against a growing pool of precomputed vectors (prints a table; not a test).

    .venv/bin/python benchmarks/bench_drop.py                         # pools of 1M and 2.5M x 384
    .venv/bin/python benchmarks/bench_drop.py --pools 2,4 --drop-size 10000 --dim 64   # smoke

Drops of `--drop-size` synthetic vectors (`curation_demo.synthetic`) land in a temp landing
folder and are ingested and embedded by the core (`ingest_drop`, `embed_drop`) until the pool
holds `--pools` drops; then one more drop goes through the drop run's steps, each in a fresh
process: raw (`ingest_drop`: parse the parquet files, look up and claim the ids), embeddings
(`embed_drop`: the drop's raw values, checks, one commit) and the embeddings asset's blocking
read-back check (`check_stored_embeddings`). Printed per step: seconds and peak RSS (VmHWM of
its process, which unlike ru_maxrss does not carry the parent's peak across exec; the first
row is a process that only imports them, the floor under each step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("imports", "raw", "embeddings", "check")


def run_step(step: str, root: Path, drop: str, dim: int) -> dict:
    """One step of one drop in this process: {"s": seconds, "peak_mib": VmHWM}."""
    from curation.drops import check_stored_embeddings, embed_drop, ingest_drop
    from curation.store import PoolStore
    from resources.storage import LandingStorage

    store = PoolStore.open_uri(str(root / "lancedb"), "p")
    started = time.perf_counter()
    if step == "raw":
        ingest_drop(store, LandingStorage(url=str(root / "landing")).child("p"), drop,
                    "vectors")
    elif step == "embeddings":
        embed_drop(store, drop, "vectors", dim, {"name": "bench"})
    elif step == "check":
        got = check_stored_embeddings(store.table("embeddings"), drop)
        assert got.duplicate_ids == 0 and got.non_finite_rows == 0, got
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    (hwm,) = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
    return {"s": seconds, "peak_mib": hwm // 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", default="10,25", help="pool sizes, in drops, before the drop")
    p.add_argument("--drop-size", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a child process
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--drop", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.root, args.drop, args.dim)))
        return

    from curation.drops import embed_drop, ingest_drop
    from curation.store import PoolStore
    from curation_demo.synthetic import build_synthetic_drops
    from resources.storage import LandingStorage

    print(f"drops of {args.drop_size:,} x {args.dim}-d, precomputed vectors; one drop's steps, "
          "each in a fresh process")
    print("| pool items before | step | seconds | peak RSS MiB |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        landing = root / "landing"
        store = PoolStore.open_uri(str(root / "lancedb"), "p")
        storage = LandingStorage(url=str(landing)).child("p")
        built = 0
        for size in sorted(int(n) for n in args.pools.split(",")):
            for drop in build_synthetic_drops(landing, "p", size - built, args.drop_size,
                                              args.dim, first=built):
                ingest_drop(store, storage, drop, "vectors")
                embed_drop(store, drop, "vectors", args.dim, {"name": "bench"})
            (drop,) = build_synthetic_drops(landing, "p", 1, args.drop_size, args.dim,
                                            first=size)
            for step in STEPS:
                out = subprocess.run(
                    [sys.executable, __file__, "--step", step, "--root", str(root), "--drop",
                     drop, "--dim", str(args.dim)], check=True, capture_output=True, text=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {size * args.drop_size:,} | {step} | {got['s']:.2f} | "
                      f"{got['peak_mib']} |", flush=True)
            built = size + 1


if __name__ == "__main__":
    main()
