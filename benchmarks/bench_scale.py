"""Peak memory of a pool's fit and of its re-assignment at growing pool sizes (not a test).

    .venv/bin/python benchmarks/bench_scale.py --root /tmp/bench_scale   # 1M, 3M, 10M x 384

One pool per size of precomputed 384-d vectors (a seeded long-tailed mixture,
`curation_demo.synthetic.fixed_mixture_draw`, one seed per drop of --drop-size items) is
written straight through `PoolStore` in batches of one drop, into --root/<size>/db (a later
call with the same --root reuses what is there). At each size, two
steps run, each in a fresh subprocess: the forced level-1 fit (`curation.tree.fit_pool`) and
the re-assignment of every drop in one run (`curation.drops.assign_drops`, what the
single-run backfill after a refit does). A step's peak is its RSS high-water mark above the
RSS the process had just before the step (the kernel's mark is reset there through
/proc/self/clear_refs; where that is refused, a thread samples VmRSS every 20 ms), with
glibc's malloc arenas capped (MALLOC_ARENA_MAX=2, the recommended worker setting).
The table shows the peaks next to the bound the metadata states (docs/SCALE.md); the
peaks must stay flat (within 25 %) across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POOL = "scale"
# level 1 fits on its sample (fit_sample_size), whatever the pool holds
HIERARCHY = {"n_clusters": [200, 20], "resampling_steps": [2], "max_iter": 20,
             "fit_sample_size": 200_000, "seed": 0, "device": "cpu"}
FLAT = 1.25  # largest peak / smallest peak of one step across sizes, at most
# glibc's malloc arenas: LanceDB's reader threads each get one by default, whose freed
# batches add up over a long run (docs/SCALE.md); the recommended worker setting
ARENAS = "2"


def grow(root: Path, size: int, dim: int, drop_size: int) -> float:
    """Write drops until the pool holds `size` items; returns the seconds spent."""
    from curation.store import PoolStore, rows
    from curation_demo.synthetic import fixed_mixture_draw

    store = PoolStore.open_uri(str(root / str(size) / "db"), POOL)
    have = sum(store.drop_counts("embeddings").values())
    started = time.perf_counter()
    for d in range(have // drop_size, size // drop_size):
        x, _ = fixed_mixture_draw(drop_size, dim, seed=d)
        drop = f"drop-{d:05d}"
        ids = [f"{drop}-{i:06d}" for i in range(drop_size)]
        store.append(store.name("embeddings"), rows("embeddings", {
            "item_id": ids, "drop": [drop] * drop_size, "uri": ids, "vector": x,
            "model": ["precomputed"] * drop_size, "model_hash": ["m"] * drop_size}, dim=dim))
    return time.perf_counter() - started


def _status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakRss:
    """RSS high-water mark from now on: the kernel's, reset here, or a 20 ms sampler."""

    def __enter__(self) -> PeakRss:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.sampler = None
        except OSError:
            self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.before = _status("VmRSS")
        self.sampled, self.done = self.before, False
        if self.sampler:
            self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.done:
            self.sampled = max(self.sampled, _status("VmRSS"))
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.done = True
        self.peak = self.sampled if self.sampler else _status("VmHWM")
        if self.sampler:
            self.sampler.join()


def step(kind: str, db: Path) -> dict:
    """One measured step (inside its own subprocess)."""
    import faiss  # noqa: F401  (loaded before the baseline: libraries are not the step's)
    import lancedb  # noqa: F401

    from curation.config import HierarchyConfig
    from curation.drops import assign_drops, assign_memory_bound
    from curation.hierarchy import fit_hierarchy
    from curation.store import PoolStore
    from curation.tree import fit_memory_bound, fit_pool

    store = PoolStore.open_uri(str(db), POOL)
    config = HierarchyConfig(**HIERARCHY)
    n = sum(store.drop_counts("embeddings").values())
    dim = store.table("embeddings").schema.field("vector").type.list_size
    started = time.perf_counter()
    with PeakRss() as rss:
        if kind == "fit":
            out = fit_pool(store, config, fit_hierarchy, "bench", force=True, warm_start=False)
            detail = f"sample {out.record.report[0]['n_points']:,}"
        else:
            drops = sorted(store.drop_counts("embeddings"))
            out = assign_drops(store, drops, lambda tree, x: tree.assign(x))
            detail = f"{out.items:,} items, {len(drops)} drops"
    bound = (fit_memory_bound(config, dim, n) if kind == "fit"
             else assign_memory_bound(config.n_clusters[0], dim,
                                      max(store.drop_counts("embeddings").values())))
    return {"items": n, "step": kind, "peak_mib": (rss.peak - rss.before) / 2**20,
            "bound_mib": bound["bytes"] / 2**20, "formula": bound["formula"],
            "seconds": time.perf_counter() - started, "detail": detail}


def measure(kind: str, db: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--step", kind, "--root", str(db)],
                          capture_output=True, text=True, env=step_env())
    if done.returncode:
        raise SystemExit(f"step {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_env() -> dict:
    """The steps' environment: glibc's malloc arenas capped (docs/SCALE.md), as on a worker."""
    return {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", ARENAS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--drop-size", type=int, default=100_000)
    parser.add_argument("--steps", default="fit,assign", help="which steps to measure")
    parser.add_argument("--step", choices=("fit", "assign"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.root)))
        return
    results = []
    for size in sorted(int(s) for s in args.sizes.split(",")):
        seconds = grow(args.root, size, args.dim, args.drop_size)
        print(f"pool of {size:,} x {args.dim} written ({seconds:.0f} s)", file=sys.stderr)
        for kind in args.steps.split(","):
            results.append(measure(kind, args.root / str(size) / "db"))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(f"config: {json.dumps(HIERARCHY)}; drops of {args.drop_size:,} items; "
          f"d = {args.dim}; MALLOC_ARENA_MAX={step_env()['MALLOC_ARENA_MAX']}")
    print("| pool items | step | peak RSS above pre-step (MiB) | stated bound (MiB) | seconds "
          "| run |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['items']:,} | {r['step']} | {r['peak_mib']:.0f} | {r['bound_mib']:.0f} | "
              f"{r['seconds']:.0f} | {r['detail']} |")
    for kind in args.steps.split(","):
        peaks = [r["peak_mib"] for r in results if r["step"] == kind]
        ratio = max(peaks) / max(min(peaks), 1e-9)
        print(f"{kind}: largest / smallest peak = {ratio:.2f} (flat: {ratio <= FLAT}); "
              f"bound {next(r['formula'] for r in results if r['step'] == kind)}")


if __name__ == "__main__":
    main()
