"""`curate takedown`: take items down from a pool, with an audit trail.

Records one row per item in `<pool>__takedowns` (item_id, reason, at, by, run = "" while
pending) and, for a configured pool, lands the request as a takedown file under the pool's
landing prefix (`_takedowns/cli-<user>-<time>-<hash>.csv`, the rows' `by`), so it lives with
the data and a pool renamed over the same folder applies it again. Every subset excludes them
from its next materialisation (refilling their leaves from the same leaves); the pool's
takedowns sensor then asks for a run of `[pool, "takedowns"]`, which deletes them from raw,
embeddings and assignments and stamps the run.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from .subset import add_lancedb_option, pool_store


def register(subparsers) -> None:
    p = subparsers.add_parser("takedown", help="take items down from a pool's subsets",
                              description=__doc__)
    p.add_argument("--pool", required=True, help="a pool of the pools config ($CURATION_POOLS)")
    p.add_argument("--items", required=True,
                   help="one item_id per line (split at \\n only, ids verbatim), or a .csv "
                   "with an item_id column (CSV quoting for ids with newlines or edges)")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", default=None, help="who asks (default: the user name)")
    add_lancedb_option(p)
    p.set_defaults(func=run)


MAX_LISTED = 100  # unmatched ids printed; the count is always exact


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ..hashing import sha256_hex
    from ..landing import TAKEDOWNS_FOLDER
    from ..pools import load_pools
    from ..settings import lancedb_uri, landing_url, s3_endpoint_url
    from ..takedowns import land_takedown_file, read_id_list, record_takedowns, takedown_csv

    store = pool_store(args)
    # a pool exists when it is configured or has ingested items in this LanceDB: a typo must
    # not record takedowns (and create a table) for a pool nobody reads
    configured = {p.name for p in load_pools()}
    stored = {name[: -len("__raw")] for name in store.names() if name.endswith("__raw")}
    if args.pool not in configured | stored:
        raise ValueError(f"--pool {args.pool!r} is no known pool (pools config: "
                         f"{', '.join(sorted(configured)) or 'none'}; with items in "
                         f"{lancedb_uri(args.lancedb)}: {', '.join(sorted(stored)) or 'none'}); "
                         "nothing recorded")
    path = Path(args.items)
    if not path.is_file():
        raise FileNotFoundError(f"--items {path} does not exist")
    ids = read_id_list(path)
    requester = args.by or getpass.getuser()
    rows = [(i, args.reason) for i in ids]
    # The request also lands as a file under the pool's landing prefix, so it lives with the
    # data: a pool renamed over the same folder applies it again. Recorded here under the
    # file's name (the sensor then finds it recorded: one audit row per item and request).
    pool_config = next((p for p in load_pools() if p.name == args.pool), None)
    landed = None
    if pool_config is not None:
        data = takedown_csv(rows)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in requester)[:40]
        name = f"cli-{safe}-{stamp}-{sha256_hex(data)[:8]}.csv"
        landed = land_takedown_file(landing_url(), pool_config.prefix, name, data,
                                    s3_endpoint_url())
        by = f"file:{TAKEDOWNS_FOLDER}/{name}"
    else:
        by = args.by or f"cli:{requester}"
        print(f"curate takedown: pool {args.pool!r} is not in the pools config: the request "
              "is recorded in the LanceDB only, not landed as a takedown file", file=sys.stderr)
    done = record_takedowns(store, rows, by)
    unmatched = store.unmatched_ids(ids)
    print(json.dumps({"pool": args.pool, "taken_down": done["items"] - len(unmatched),
                      "requested": done["items"], "unmatched": len(unmatched),
                      "unmatched_ids": unmatched[:MAX_LISTED],
                      "recorded": done["recorded"], "reason": args.reason, "by": by,
                      "table": f"{args.pool}__takedowns", "version": done["version"],
                      "takedown_file": landed,
                      "pending": store.pending_takedowns()}))
    if unmatched:
        print(f"curate takedown: {len(unmatched)} of {done['items']} ids match no item of pool "
              f"{args.pool!r} (recorded: a later delivery of them is refused): "
              + ", ".join(repr(i) for i in unmatched[:10])
              + (" ..." if len(unmatched) > 10 else ""), file=sys.stderr)
    return 0
