"""The `curate` command line: one subcommand per module under curation.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers) -> None and sets a `func` default on its parser.
COMMAND_MODULES = (
    "cluster", "sample", "embed", "backfill", "demo", "subset", "explain", "takedown",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Curate a balanced, diverse subset from a large raw pool "
        "(hierarchical k-means with resampling, then balanced sampling).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"curation.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # validated input errors: no traceback
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
