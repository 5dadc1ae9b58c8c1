"""`curate`: the core's subcommands (curation.cli) plus those that drive Dagster."""

from __future__ import annotations

import sys

from curation import cli

# `curate demo` lives with the demo driver and data in curation_demo, outside the product
# packages: named here, imported only when the parser is built (never by the code location).
COMMAND_MODULES = (
    *cli.COMMAND_MODULES,
    "curation_dags.commands.backfill",
    "curation_demo.command",
)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
