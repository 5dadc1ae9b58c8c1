"""One drop's steps against a growing pool of precomputed vectors (prints a table; not a test).

    .venv/bin/python benchmarks/bench_drop.py                         # pools of 1M and 2.5M x 384
    .venv/bin/python benchmarks/bench_drop.py --pools 10,200 --dim 64 --grow direct  # issue 26
    .venv/bin/python benchmarks/bench_drop.py --pools 2,4 --drop-size 10000 --dim 64   # smoke

The pool grows to `--pools` drops of `--drop-size` synthetic vectors (`curation_demo.synthetic`),
through the platform's core either way:
- `--grow platform`: each drop lands as a parquet file and goes through `ingest_drop` and
  `embed_drop`;
- `--grow direct`: the same points and the rows those steps would write (`rows("raw")`,
  `rows("embeddings")`, identical but for `ingested_at`), written by the same store calls
  (`claim_raw`, `rewrite_drop`, `write_duplicates`, `write_quarantine`): no parquet to write and
  parse, and no lookups, so the pool grows faster, with the same tables and indexes.
Once the first pool size is reached the tree is fitted (`fit_pool`, `--clusters`, on a sample of
`--fit-sample` vectors; not timed) and every drop is assigned (`assign_drops`, `--assign-run`
drops per call, as the re-assignment backfill does); drops grown later are assigned to that tree.
Then one more drop lands and goes through the drop run's steps, each in a fresh process: raw
(`ingest_drop`: parse the parquet file, look up and claim the ids), embeddings (`embed_drop`: the
drop's raw values, checks, one commit), the embeddings asset's blocking read-back check
(`check_stored_embeddings`) and assignments (`assign_drops` of that drop with the core's assign,
as `ClusteringResource.assign` on the CPU). Printed per pool size: seconds and peak RSS (VmHWM of
the step's process, which unlike ru_maxrss does not carry the parent's peak across exec; the
`imports` column is a process that only imports them, the floor under each step), then a row
of ratios, largest pool over smallest, and where each table's BTREE indexes stood before the
drop (rows covered, rows appended since: what a lookup reads besides the index).

`--root DIR` keeps the pool (and resumes it: a later run grows it from the drops it holds, and
its drop lands after them); without, it lives in a temp folder. `--ids hashed` gives items
64-hex-character ids (sha256, as content-addressed ids are) instead of the synthetic drops'
`drop-NNNNN-NNNNNN`, whose new keys all sort after the pool's.
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

STEPS = ("imports", "raw", "embeddings", "check", "assignments")
TABLES = ("raw", "embeddings", "assignments")


def item_ids(drop: str, n: int, kind: str) -> list[str]:
    from curation.hashing import sha256_hex

    ids = [f"{drop}-{i:06d}" for i in range(n)]
    return ids if kind == "sequential" else [sha256_hex(i) for i in ids]


def drop_points(d: int, drop_size: int, dim: int):
    """Drop number `d`'s points and mixture components (`build_synthetic_drops`' draw)."""
    from curation_demo.synthetic import fixed_mixture_draw

    return fixed_mixture_draw(drop_size, dim, d)


def land_drop(landing: Path, d: int, drop_size: int, dim: int, ids: str) -> str:
    """Drop number `d` as `build_synthetic_drops` lands it (with labels), `ids` as asked."""
    import pyarrow as pa

    from curation_demo.synthetic import write_vector_drop

    drop = f"drop-{d:05d}"
    x, components = drop_points(d, drop_size, dim)
    write_vector_drop(landing / "p" / drop, x, item_ids(drop, drop_size, ids),
                      {"label": pa.array(components)})
    return drop


def write_drop_direct(store, landing: Path, d: int, drop_size: int, dim: int, ids: str) -> str:
    """Drop number `d`'s raw and embeddings rows as `ingest_drop` and `embed_drop` write them
    for `land_drop`'s file (a drop with no duplicate and nothing quarantined), by the same
    store calls."""
    from datetime import UTC, datetime

    from curation.embedding.base import identity_version
    from curation.store import list_array, rows

    drop = f"drop-{d:05d}"
    x, components = drop_points(d, drop_size, dim)
    keys = item_ids(drop, drop_size, ids)
    source = str((landing / "p" / drop / "part-0.parquet").resolve())
    refs = [f"{source}#row={r}" for r in range(drop_size)]
    now = datetime.now(UTC).isoformat()
    raw = rows("raw", {
        "item_id": keys, "drop": [drop] * drop_size, "uri": refs,
        "size": [4 * dim] * drop_size, "source": [source] * drop_size,
        "row": list(range(drop_size)),
        "meta": [json.dumps({"label": int(c)}) for c in components],
        "ingested_at": [now] * drop_size, "text": [None] * drop_size,
        "values": list_array(list(x)),
    })
    _, holders = store.claim_raw(drop, raw)
    assert len(holders) == drop_size and set(holders.values()) == {drop}, drop
    store.write_duplicates(drop, [])
    store.write_quarantine(drop, "raw", [], ids=[])
    store.write_quarantine(drop, "embeddings", [], ids=[])
    identity = {"name": "bench"}
    store.rewrite_drop("embeddings", drop, rows("embeddings", {
        "item_id": keys, "drop": [drop] * drop_size, "uri": refs, "vector": x,
        "model": ["bench"] * drop_size, "model_hash": [identity_version(identity)] * drop_size,
    }, dim=dim))
    return drop


def assign(hierarchy, x):
    """The core's assignment, on the CPU (`ClusteringResource.assign` with device cpu)."""
    import dataclasses

    config = hierarchy.config.model_copy(update={"device": "cpu"})
    return dataclasses.replace(hierarchy, config=config).assign(x)


def run_step(step: str, root: Path, drop: str, dim: int) -> dict:
    """One step of one drop in this process: {"s": seconds, "peak_mib": VmHWM}."""
    from curation.drops import assign_drops, check_stored_embeddings, embed_drop, ingest_drop
    from curation.store import PoolStore
    from resources.storage import LandingStorage

    store = PoolStore.open_uri(str(root / "lancedb"), "p")
    cpu, read = _cpu_seconds(), _read_bytes()
    started = time.perf_counter()
    if step == "raw":
        out = ingest_drop(store, LandingStorage(url=str(root / "landing")).child("p"), drop,
                          "vectors")
        assert out.duplicates == 0 and not out.quarantined, out.summary(drop)
    elif step == "embeddings":
        embed_drop(store, drop, "vectors", dim, {"name": "bench"})
    elif step == "check":
        got = check_stored_embeddings(store.table("embeddings"), drop)
        assert got.duplicate_ids == 0 and got.non_finite_rows == 0, got
    elif step == "assignments":
        out = assign_drops(store, [drop], assign)
        assert out.items == out.new_since_fit > 0, out
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text().splitlines()
    (hwm,) = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
    return {"s": seconds, "peak_mib": hwm // 1024, "cpu_s": _cpu_seconds() - cpu,
            "read_mib": (_read_bytes() - read) >> 20}


def _cpu_seconds() -> float:
    """User + system CPU of this process, all its threads (less swayed by other work on the
    machine than wall time)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _read_bytes() -> int:
    """Bytes this process has read through read calls, page cache hits included (`rchar`):
    what a step reads of the tables, whether or not the disk served it."""
    lines = Path("/proc/self/io").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("rchar:"))


def index_state(store) -> str:
    """Each table's single-column indexes: rows covered + rows appended since (or none)."""
    parts = []
    for kind in TABLES:
        table = store.table(kind)
        got = []
        for index in table.list_indices() if table is not None else ():
            stats = table.index_stats(index.name)
            got.append(f"{index.columns[0]} {stats.num_indexed_rows:,}"
                       f"+{stats.num_unindexed_rows:,}")
        parts.append(f"{kind}: {', '.join(got) or 'no index'}")
    return "; ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pools", default="10,25", help="pool sizes, in drops, before the drop")
    p.add_argument("--drop-size", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--grow", choices=("platform", "direct"), default="platform")
    p.add_argument("--ids", choices=("sequential", "hashed"), default="sequential")
    p.add_argument("--clusters", default="100,10", help="the tree's n_clusters, per level")
    p.add_argument("--fit-sample", type=int, default=20_000, help="vectors the fit reads")
    p.add_argument("--assign-run", type=int, default=20, help="drops per assign_drops call")
    p.add_argument("--root", type=Path, help="keep (or resume) the pool in this folder")
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a child process
    p.add_argument("--drop", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.root, args.drop, args.dim)))
        return
    if args.root:
        args.root.mkdir(parents=True, exist_ok=True)
        bench(args, args.root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            bench(args, Path(tmp))


def bench(args, root: Path) -> None:
    from curation.config import HierarchyConfig
    from curation.drops import assign_drops, embed_drop, ingest_drop
    from curation.hierarchy import fit_hierarchy
    from curation.store import PoolStore
    from curation.tree import fit_pool
    from resources.storage import LandingStorage

    landing = root / "landing"
    store = PoolStore.open_uri(str(root / "lancedb"), "p")
    storage = LandingStorage(url=str(landing)).child("p")
    config = HierarchyConfig(n_clusters=[int(k) for k in args.clusters.split(",")],
                             fit_sample_size=args.fit_sample, device="cpu")
    held = store.drop_counts("embeddings") if store.table("embeddings") is not None else {}
    built = max((int(d.split("-")[1]) + 1 for d in held), default=0)
    print(f"drops of {args.drop_size:,} x {args.dim}-d, precomputed vectors, {args.ids} ids, "
          f"pool grown {args.grow}; tree {config.n_clusters} fitted on {args.fit_sample:,} "
          "vectors; one drop's steps, each in a fresh process (seconds / peak RSS MiB)")
    print("| pool items before | imports MiB | " + " | ".join(f"{s} s | {s} MiB"
                                                          for s in STEPS[1:]) + " |")
    print("|---" * (2 * len(STEPS)) + "|")
    results, notes = [], []
    for size in sorted(int(n) for n in args.pools.split(",")):
        started = time.perf_counter()
        for d in range(built, size):
            if args.grow == "direct":
                write_drop_direct(store, landing, d, args.drop_size, args.dim, args.ids)
            else:
                drop = land_drop(landing, d, args.drop_size, args.dim, args.ids)
                ingest_drop(store, storage, drop, "vectors")
                embed_drop(store, drop, "vectors", args.dim, {"name": "bench"})
            if (d + 1) % 10 == 0:  # progress, off the table
                print(f"grown to {d + 1} drops, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
        grown = time.perf_counter() - started
        fit = store.load_fit()
        if fit is None:
            fit = fit_pool(store, config, fit_hierarchy, "bench").record
        counts = store.drop_counts("embeddings")
        assigned = (store.drop_counts("assignments") if store.table("assignments") is not None
                    else {})
        todo = sorted(d for d in counts if d not in assigned)
        for start in range(0, len(todo), args.assign_run):
            assign_drops(store, todo[start:start + args.assign_run], assign)
        before = sum(counts.values())
        notes.append(f"{before:,} items: grown in {grown:.0f} s, {len(todo)} drops assigned "
                     f"in {time.perf_counter() - started - grown:.0f} s; indexes before the "
                     f"drop: {index_state(store)}")
        drop = land_drop(landing, max(size, built), args.drop_size, args.dim, args.ids)
        got = {}
        for step in STEPS:
            out = subprocess.run(
                [sys.executable, __file__, "--step", step, "--root", str(root), "--drop",
                 drop, "--dim", str(args.dim)], check=True, capture_output=True, text=True)
            got[step] = json.loads(out.stdout.strip().splitlines()[-1])
        results.append((before, got))
        print(f"| {before:,} | {got['imports']['peak_mib']} | " + " | ".join(
            f"{got[s]['s']:.2f} | {got[s]['peak_mib']}" for s in STEPS[1:]) + " |", flush=True)
        built = max(size, built) + 1
    if len(results) > 1:
        _ratio_row(results, "peak_mib", ("s", "peak_mib"))
    print("\nthe same steps: CPU seconds (user + system, all threads) / MiB read (rchar: page "
          "cache included)")
    print("| pool items before | " + " | ".join(f"{s} CPU s | {s} read MiB"
                                               for s in STEPS[1:]) + " |")
    print("|---" * (2 * len(STEPS) - 1) + "|")
    for before, got in results:
        print(f"| {before:,} | " + " | ".join(f"{got[s]['cpu_s']:.2f} | {got[s]['read_mib']}"
                                              for s in STEPS[1:]) + " |")
    if len(results) > 1:
        _ratio_row(results, None, ("cpu_s", "read_mib"))
    for note in notes:
        print(f"- {note}")


def _ratio_row(results, floor: str | None, keys) -> None:
    """The last row's figures over the first row's: largest pool / smallest."""
    (small, first), (large, last) = results[0], results[-1]
    cells = [f"{last['imports'][floor] / first['imports'][floor]:.2f}"] if floor else []
    cells += [f"{last[s][k] / max(first[s][k], 1e-9):.2f}" for s in STEPS[1:] for k in keys]
    print(f"| ratio {large / small:.0f}x pool | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
