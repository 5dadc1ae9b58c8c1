"""curation_dags package."""
