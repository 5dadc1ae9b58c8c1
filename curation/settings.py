"""Where things live, from the environment, with local defaults (gitignored).

$CURATION_HOME (default ./.curation) holds the landing folder, the LanceDB database, reports
and the demo's Dagster instance unless $CURATION_LANDING / $CURATION_LANCEDB_URI point
elsewhere (an s3:// URL for either works with $CURATION_S3_ENDPOINT_URL for a non-AWS server).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "./.curation"


def curation_home() -> Path:
    return Path(os.environ.get("CURATION_HOME") or DEFAULT_HOME)


def landing_url() -> str:
    return os.environ.get("CURATION_LANDING") or str(curation_home() / "landing")


def lancedb_uri(uri: str | None = None) -> str:
    """`uri` when given, else $CURATION_LANCEDB_URI, else $CURATION_HOME/lancedb."""
    return uri or os.environ.get("CURATION_LANCEDB_URI") or str(curation_home() / "lancedb")


def s3_endpoint_url() -> str | None:
    return os.environ.get("CURATION_S3_ENDPOINT_URL") or None


def reports_dir() -> Path:
    return curation_home() / "reports"


def join_budget_bytes() -> int | None:
    """Bytes one pass over a pool may hold in join maps ($CURATION_JOIN_BUDGET_MIB, a whole
    number of MiB; default None: curation.pool_stream.JOIN_BUDGET, 512 MiB). A larger budget
    on a large machine means fewer passes over the tables (docs/SCALE.md)."""
    value = os.environ.get("CURATION_JOIN_BUDGET_MIB")
    if not value:
        return None
    try:
        mib = int(value)
    except ValueError:
        raise ValueError(f"$CURATION_JOIN_BUDGET_MIB={value!r} must be a whole number of MiB"
                         ) from None
    if mib < 1:
        raise ValueError(f"$CURATION_JOIN_BUDGET_MIB={value!r} must be at least 1")
    return mib * 2**20
