"""`curate explain`: for one item, for every subset of its pool, in or not and why."""

from __future__ import annotations

import argparse
import json

from .subset import add_lancedb_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="why an item is in (or not in) each subset of its pool",
        description="Leaf, the leaf's quota and the item's rank in it for every subset; or "
        "that it was taken down, quarantined, delivered as a duplicate, not assigned, or "
        "assigned by another fit. Prints one JSON object.")
    p.add_argument("--pool", required=True)
    p.add_argument("--item", required=True, help="item_id")
    add_lancedb_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explain import explain_item
    from .subset import pool_store

    print(json.dumps(explain_item(pool_store(args), args.item), default=str))
    return 0
