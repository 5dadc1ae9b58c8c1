"""`curate`: the core's subcommands (curation.cli) plus those that drive Dagster."""

from __future__ import annotations

import sys

from curation import cli

COMMAND_MODULES = (
    *cli.COMMAND_MODULES,
    "curation_dags.commands.backfill",
    "curation_dags.commands.demo",
)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
