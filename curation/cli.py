"""The core's command line: one subcommand per module under curation.commands.

`curate` (curation_dags.cli) adds the subcommands that drive Dagster (demo, backfill);
`python -m curation.cli` offers the core ones alone, without importing Dagster."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines register(subparsers) -> None and sets a `func` default on its parser.
COMMAND_MODULES = tuple(
    f"curation.commands.{name}"
    for name in ("cluster", "sample", "tune", "embed", "subset", "explain", "takedown")
)


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Curate a balanced, diverse subset from a large raw pool "
        "(hierarchical k-means with resampling, then balanced sampling).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None, modules: tuple[str, ...] = COMMAND_MODULES) -> int:
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # validated input errors: no traceback
        print(f"curate {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
