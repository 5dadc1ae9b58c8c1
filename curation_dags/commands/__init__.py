"""`curate` subcommands that drive a Dagster deployment (demo, backfill)."""
