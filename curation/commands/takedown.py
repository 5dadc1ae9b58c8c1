"""`curate takedown`: remove items from every subset of a pool, with an audit trail.

Appends one row per item to `<pool>__takedowns` (item_id, reason, at, by); each subset
excludes them at its next materialisation and refills their leaves from the same leaves.
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
    from ..subsets import append_takedowns, connect

    path = Path(args.items)
    if not path.is_file():
        raise FileNotFoundError(f"--items {path} does not exist")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    by = args.by or f"cli:{getpass.getuser()}"
    version = append_takedowns(connect(args.lancedb), args.pool, ids, args.reason, by)
    print(json.dumps({"pool": args.pool, "taken_down": len(set(ids)), "reason": args.reason,
                      "by": by, "table": f"{args.pool}__takedowns", "version": version}))
    return 0
