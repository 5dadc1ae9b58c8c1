"""`curate` subcommands that drive a Dagster deployment (backfill; `curate demo` lives in
curation_demo and is registered by name in curation_dags.cli)."""
