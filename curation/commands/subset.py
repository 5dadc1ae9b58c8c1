"""`curate subset export|diff`: a pinned subset version out to a file; what changed between two.

The subset tables live in the platform's LanceDB (`--lancedb`, else $CURATION_LANCEDB_URI,
else $CURATION_HOME/lancedb); every materialisation is one table version (`--version`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

EXPORT_COLUMNS = ("item_id", "uri", "weight", "path")


def add_lancedb_option(parser) -> None:
    parser.add_argument("--lancedb", default=None,
                        help="LanceDB uri (default $CURATION_LANCEDB_URI or "
                        "$CURATION_HOME/lancedb)")


def pool_store(args: argparse.Namespace):
    """The `--pool`'s storage home in the `--lancedb` database (the CLI's edge: the settings
    are read here, once)."""
    from ..store import PoolStore

    return PoolStore.from_settings(args.pool, args.lancedb)


def register(subparsers) -> None:
    p = subparsers.add_parser("subset", help="export or diff versions of a pool's subset",
                              description=__doc__)
    sub = p.add_subparsers(dest="subset_command", required=True, metavar="ACTION")
    e = sub.add_parser("export", help="write a subset version (byte-identical every time)",
                       description="Rows sorted by item_id: item_id, uri, weight, path "
                       "(cluster ids, level_1 first). --version: the subset table's LanceDB "
                       "version (default: the latest); the version used is printed.")
    e.add_argument("--pool", required=True)
    e.add_argument("--subset", required=True)
    e.add_argument("--version", type=int, default=None)
    e.add_argument("--format", choices=("parquet", "jsonl", "csv"), default="parquet")
    e.add_argument("--out", required=True)
    add_lancedb_option(e)
    e.set_defaults(func=run_export)
    d = sub.add_parser("diff", help="items that entered / left between two versions, "
                       "per top-level cluster")
    d.add_argument("--pool", required=True)
    d.add_argument("--subset", required=True)
    d.add_argument("--from", dest="from_version", type=int, required=True)
    d.add_argument("--to", dest="to_version", type=int, default=None,
                   help="default: the latest version")
    d.add_argument("--ids", action="store_true", help="also list the ids per cluster")
    add_lancedb_option(d)
    d.set_defaults(func=run_diff)


def read_version(store, subset: str, version: int | None, columns=EXPORT_COLUMNS):
    """(version, pyarrow Table sorted by item_id) of one subset table version."""
    got = store.subset_version(subset, version, columns)
    return got.version, got.rows


def export_bytes(rows, fmt: str) -> bytes:
    """The file's bytes: deterministic for a given table (and library versions)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(rows, buf, compression="zstd", write_statistics=True)
        return buf.getvalue()
    lines: list[str] = []
    if fmt == "jsonl":
        for start in range(0, rows.num_rows, 65536):
            lines.extend(json.dumps(r, ensure_ascii=False, separators=(",", ":"))
                         for r in rows.slice(start, 65536).to_pylist())
        return ("\n".join(lines) + ("\n" if lines else "")).encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows.column_names)
    for start in range(0, rows.num_rows, 65536):
        for r in rows.slice(start, 65536).to_pylist():
            r["path"] = "/".join(str(c) for c in r["path"])
            writer.writerow([r[c] for c in rows.column_names])
    return out.getvalue().encode()


def run_export(args: argparse.Namespace) -> int:
    from ..hashing import sha256_hex

    got = pool_store(args).subset_version(args.subset, args.version, EXPORT_COLUMNS)
    version, rows = got.version, got.rows
    data = export_bytes(rows, args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(json.dumps({"out": str(out), "pool": args.pool, "subset": args.subset,
                      "version": version, "rows": rows.num_rows, "format": args.format,
                      "taken_down_excluded": got.taken_down_excluded,
                      "sha256": sha256_hex(data)}))
    return 0


def diff_versions(old, new) -> dict:
    """entered / left between two subset versions (tables with item_id and path), per
    top-level cluster (the last path entry; an item's cluster in the version holding it)."""
    import pyarrow.compute as pc

    old_ids, new_ids = old["item_id"], new["item_id"]
    entered = new.filter(pc.invert(pc.is_in(new_ids, value_set=old_ids.combine_chunks())))
    left = old.filter(pc.invert(pc.is_in(old_ids, value_set=new_ids.combine_chunks())))
    per: dict[str, dict] = {}
    for label, part in (("entered", entered), ("left", left)):
        for item, path in zip(part["item_id"].to_pylist(), part["path"].to_pylist(),
                              strict=True):
            slot = per.setdefault(str(path[-1]), {"entered": 0, "left": 0,
                                                  "entered_ids": [], "left_ids": []})
            slot[label] += 1
            slot[f"{label}_ids"].append(item)
    ordered = dict(sorted(per.items(), key=lambda kv: int(kv[0])))
    return {"entered": entered.num_rows, "left": left.num_rows, "per_top_cluster": ordered}


def run_diff(args: argparse.Namespace) -> int:
    store = pool_store(args)
    v1, old = read_version(store, args.subset, args.from_version)
    v2, new = read_version(store, args.subset, args.to_version)
    result = diff_versions(old, new)
    if not args.ids:
        for slot in result["per_top_cluster"].values():
            del slot["entered_ids"], slot["left_ids"]
    print(json.dumps({"pool": args.pool, "subset": args.subset, "from": v1, "to": v2,
                      **result}))
    return 0
