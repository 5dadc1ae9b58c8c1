"""`curate takedown`: take items down from a pool, with an audit trail.

Records one row per item in `<pool>__takedowns` (item_id, reason, at, by, run = "" while
pending). Every subset excludes them from its next materialisation (refilling their leaves
from the same leaves); the pool's takedowns sensor then asks for a run of `[pool,
"takedowns"]`, which deletes them from raw, embeddings and assignments and stamps the run.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from .subset import add_lancedb_option


def register(subparsers) -> None:
    p = subparsers.add_parser("takedown", help="take items down from a pool's subsets",
                              description=__doc__)
    p.add_argument("--pool", required=True)
    p.add_argument("--items", required=True, help="text file: one item_id per line")
    p.add_argument("--reason", required=True)
    p.add_argument("--by", default=None, help="who asks (default: the user name)")
    add_lancedb_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..subsets import connect
    from ..takedowns import pending_takedowns, record_takedowns

    path = Path(args.items)
    if not path.is_file():
        raise FileNotFoundError(f"--items {path} does not exist")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    by = args.by or f"cli:{getpass.getuser()}"
    db = connect(args.lancedb)
    done = record_takedowns(db, args.pool, [(i, args.reason) for i in ids], by)
    print(json.dumps({"pool": args.pool, "taken_down": done["items"],
                      "recorded": done["recorded"], "reason": args.reason, "by": by,
                      "table": f"{args.pool}__takedowns", "version": done["version"],
                      "pending": pending_takedowns(db, args.pool)}))
    return 0
