"""Where things live, from the environment, with local defaults (both gitignored)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "./.curation"


def curation_home() -> Path:
    return Path(os.environ.get("CURATION_HOME") or DEFAULT_HOME)


def landing_url() -> str:
    return os.environ.get("CURATION_LANDING") or str(curation_home() / "landing")


def lancedb_uri() -> str:
    return os.environ.get("CURATION_LANCEDB_URI") or str(curation_home() / "lancedb")


def s3_endpoint_url() -> str | None:
    return os.environ.get("CURATION_S3_ENDPOINT_URL") or None
