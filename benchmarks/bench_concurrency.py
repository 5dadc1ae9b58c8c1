"""Concurrency checker over many seeds (prints a table; not a test): the scenario of
tests/live/test_concurrency.py (curation_demo/concurrency.py) on the production instance
(PostgreSQL, queued runs, per-pool limit 4, real dagster-daemon and dagster-webserver), on a
local folder and on S3 (moto's server), one fresh instance, pool and bucket per seed.

    python benchmarks/bench_concurrency.py --seeds 5                  # seeds 1..5, both backends
    python benchmarks/bench_concurrency.py --seeds 3 --first-seed 10 --backends s3 --steps 30

Per seed and backend: the steps run (drops, forced refits, takedown files, exports,
evaluations at seeded random moments), the subset versions checked, the violations of each
invariant (I1 complete snapshot, I2 takedowns erased from every readable version, I3 no storage
conflict, I4 every delivered item once ingested, duplicate or quarantined; `settled`: the
platform reached a state with every drop in the subsets), subset versions whose inputs were
gone before they could be read, and the wall time. Each failing seed's violations follow the
table. Exit status 1 when any seed violated an invariant.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="how many seeds (per backend)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--backends", default="local,s3", help="comma list of local, s3")
    p.add_argument("--steps", type=int, default=24, help="random actions per seed")
    p.add_argument("--keep", action="store_true", help="keep each seed's folder (logs)")
    args = p.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"local", "s3"}:
        p.error("--backends: a comma list of local, s3")

    from curation_demo import concurrency as cc
    from curation_demo.live import postgres_cluster

    results = []
    with contextlib.ExitStack() as stack:
        root = cc.temp_work("bench-conc-")
        if not args.keep:
            stack.callback(shutil.rmtree, root, True)
        pg = stack.enter_context(postgres_cluster())
        endpoint = stack.enter_context(cc.moto_server(root / "moto")) if "s3" in backends \
            else None
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for kind in backends:
                work = root / f"{kind}-{seed}"
                backend = (cc.local_backend(work / "data") if kind == "local"
                           else cc.s3_backend(endpoint))
                result = cc.run_seed(seed, backend, pg, work, args.steps)
                results.append(result)
                print(_row(result), file=sys.stderr, flush=True)
    print(_table(results))
    failed = [r for r in results if r.violations]
    for r in failed:
        print("\n" + r.failure())
    for r in results:
        for note in r.notes:
            print(f"note (seed {r.seed}, {r.backend}): {note}")
    if args.keep:
        print(f"\nlogs: {root}")
    return 1 if failed else 0


HEADER = ("seed", "backend", "steps", "runs", "failed runs", "subset versions", "I1", "I2",
          "I3", "I4", "settled", "unverifiable", "wall s")


def _row(r) -> str:
    counts = r.counts()
    cells = (r.seed, r.backend, r.steps, r.runs, r.failed_runs, r.subset_versions_checked,
             counts["I1"],
             counts["I2"], counts["I3"], counts["I4"], "no" if counts["settled"] else "yes",
             len(r.unverifiable), f"{r.wall_s:.0f}")
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(results) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [_row(r) for r in results]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
