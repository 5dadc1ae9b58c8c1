"""Raw's claim of one drop against the rows the table already holds (prints a table; not a test).

    .venv/bin/python benchmarks/bench_claim.py                         # 0.5M, 2M, 10M rows, 8-d
    .venv/bin/python benchmarks/bench_claim.py --rows 2000000 --dim 384

For each size: a raw table of that many rows is written straight to LanceDB in drops of
`--drop-size` (the platform's schema, item ids as content hashes, a precomputed `values`
payload of `--dim` floats), then one new drop of `--drop-size` rows is claimed exactly as the
raw asset claims it (`PoolStore.claim_raw`), under cProfile. Before it, the lookup of who
else holds the drop's ids (`PoolStore.raw_holders`, which ingest runs first) is timed twice: as
IN filters of `IN_CHUNK` ids (how it ran until 2026-12-02) and as the store does it now.
Printed per size: the claim's
seconds, its peak RSS above the start (ru_maxrss of a fresh process per size), and the
seconds inside the claim's parts: the query of the drop's own rows, the delete, the append,
and the read-back of who holds each key (`find_streamed` over the whole table's key and owner
columns). A small `--dim` isolates what grows with the table's rows from the payload's bytes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTS = {  # cProfile function name -> what the table calls it
    "find_streamed": "read-back (key, owner) scan",
    "delete_in": "delete",
    "add": "append",
    "to_arrow": "own rows query",
}


def drop_rows(drop: str, start: int, count: int, dim: int):
    import pyarrow as pa

    from curation.hashing import sha256_hex
    from curation.store import rows

    rng = np.random.default_rng(start)
    ids = [sha256_hex(f"item-{i}") for i in range(start, start + count)]
    values = rng.standard_normal((count, dim)).astype(np.float32)
    payload = pa.ListArray.from_arrays(np.arange(0, (count + 1) * dim, dim, dtype=np.int32),
                                       pa.array(values.reshape(-1)))
    return rows("raw", {"item_id": ids, "drop": [drop] * count,
                        "uri": [f"s3://landing/{drop}/part.parquet#{i}" for i in range(count)],
                        "size": np.full(count, dim * 4), "source": ["parquet"] * count,
                        "row": np.arange(count), "meta": [None] * count,
                        "ingested_at": ["2026-12-02T00:00:00"] * count, "text": [None] * count,
                        "values": payload})


def one_size(n_rows: int, drop_size: int, dim: int, folder: Path) -> dict:
    from curation.sql import in_list
    from curation.store import IN_CHUNK, PoolStore

    store = PoolStore.open_uri(str(folder / "db"), "claim")
    started = time.perf_counter()
    for d in range(n_rows // drop_size):
        data = drop_rows(f"d{d:05d}", d * drop_size, drop_size, dim)
        if d == 0:
            store.db.create_table(store.name("raw"), data)
        else:
            store.table("raw").add(data)
    write_s = time.perf_counter() - started
    new = drop_rows("new", n_rows, drop_size, dim)
    # before the claim, ingest asks who else holds the drop's ids (raw_holders): as IN
    # filters of IN_CHUNK ids (each a scan of the table), and as the store does it now
    ids = sorted(new["item_id"].to_pylist())
    started = time.perf_counter()
    for start in range(0, len(ids), IN_CHUNK):  # the filters as find_in ran them before
        store.table("raw").search().where(
            f"{in_list('item_id', ids[start:start + IN_CHUNK])} AND (drop != 'new')").select(
            ["item_id", "drop"]).limit(None).to_arrow()
    holders_in_s = time.perf_counter() - started
    started = time.perf_counter()
    assert store.raw_holders(ids, "new") == {}
    holders_s = time.perf_counter() - started
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    _, holders = store.claim_raw("new", new)
    profile.disable()
    seconds = time.perf_counter() - started
    assert len(holders) == drop_size and set(holders.values()) == {"new"}
    stats = pstats.Stats(profile).stats
    parts = {label: 0.0 for label in PARTS.values()}
    for (_, _, name), (_, _, _, cumulative, _) in stats.items():
        if name in PARTS:
            parts[PARTS[name]] += cumulative
    return {"rows": n_rows, "write_s": write_s, "holders_in_s": holders_in_s,
            "holders_s": holders_s, "claim_s": seconds,
            "rss_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
            **parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="500000,2000000,10000000")
    p.add_argument("--drop-size", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a child's size
    args = p.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_size(args.one, args.drop_size, args.dim, Path(tmp))))
        return
    results = []
    for n in (int(v) for v in args.rows.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--drop-size",
                              str(args.drop_size), "--dim", str(args.dim)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    labels = list(PARTS.values())
    print(f"claim of one drop of {args.drop_size:,} rows ({args.dim}-d values) into raw")
    print("| rows before | write s | holders lookup s, IN filters | holders lookup s, now | "
          "claim s | peak RSS MiB | " + " | ".join(labels) + " |")
    print("|---" * (6 + len(labels)) + "|")
    for r in results:
        print(f"| {r['rows']:,} | {r['write_s']:.1f} | {r.get('holders_in_s', float('nan')):.2f} | "
              f"{r.get('holders_s', float('nan')):.2f} | {r['claim_s']:.2f} | {r['rss_mib']:.0f} | "
              + " | ".join(f"{r[label]:.2f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
