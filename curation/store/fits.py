"""The fit record (the whole tree, what it saw) and the levels of one pool."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..config import HierarchyConfig
from ..hashing import json_sha256
from ..hierarchy import Hierarchy
from .schemas import (
    rows,
)


@dataclass
class FitRecord:
    fit_version: int
    hierarchy: Hierarchy
    n_items: int
    mean_distance: float
    drops: dict[str, int]  # drop -> items of it the fit saw
    sizes: list[list[int]] = field(default_factory=list)  # per level, items beneath each cluster
    report: list[dict] = field(default_factory=list)  # per level: objective, reseeded, seconds
    created_at: str = ""
    model_hash: str = ""  # identity_version of the embeddings the tree was fitted on
    signature: str = ""  # what the fit saw (drop counts, model, config): see fit_signature
    reason: str = ""  # why this fit was made (first fit, policy, forced)
    drift: dict = field(default_factory=dict)  # top-level matching to the previous fit


def fit_signature(drop_counts: dict[str, int], model_hashes: dict[str, int], config) -> str:
    """What a fit depends on: the drops (and their sizes), the embedding model, the config.

    Two fits with the same signature see the same items (item ids are content addresses and a
    drop's rows are replaced atomically), so a second fit may reuse the first: that is how a
    run that crashed after saving its fit heals without fitting again.
    """
    payload = {"drops": sorted(drop_counts.items()), "models": sorted(model_hashes),
               "config": config.model_dump(mode="json")}
    return json_sha256(payload, separators=None)[:32]  # json.dumps' default: stored signatures


class FitTables:
    """The pool's `fits` and `level_<l>` tables."""

    def write_level(self, level: int, data) -> Any:
        return self.overwrite(self.name(f"level_{level}"), data)

    def save_fit(self, record: FitRecord) -> int:
        """Append a fit to `<pool>__fits`; returns the table version."""
        h = record.hierarchy
        blob = io.BytesIO()
        arrays = {f"centroids_{i}": c for i, c in enumerate(h.centroids)}
        arrays.update({f"parents_{i}": p for i, p in enumerate(h.parents)})
        np.savez(blob, **arrays)
        row = rows("fits", {
            "fit_version": [record.fit_version],
            "created_at": [datetime.now(UTC).isoformat()],
            "n_items": [record.n_items],
            "mean_distance": [record.mean_distance],
            "drops": [json.dumps(record.drops)],
            "config": [h.config.model_dump_json()],
            "sizes": [json.dumps(record.sizes)],
            "report": [json.dumps(record.report)],
            "tree": [blob.getvalue()],
            "model_hash": [record.model_hash],
            "signature": [record.signature],
            "reason": [record.reason],
            "drift": [json.dumps(record.drift)],
        })
        return self.append(self.name("fits"), row).version

    def _latest_fit_row(self, columns: list[str] | None) -> dict | None:
        latest = self.latest_fit_version()
        if latest is None:
            return None
        table = self.table("fits")
        query = table.search().where(f"fit_version = {latest}").limit(1)
        if columns is not None:
            query = query.select([c for c in columns if c in table.schema.names])
        return query.to_arrow().to_pylist()[0]

    def latest_fit_version(self) -> int | None:
        """The latest fit's version (one column read), None before the first fit."""
        table = self.table("fits")
        if table is None:
            return None
        versions = table.search().select(["fit_version"]).limit(None).to_arrow()
        return int(np.max(versions.column("fit_version").to_numpy())) if versions.num_rows \
            else None

    def load_fit(self) -> FitRecord | None:
        """The latest fit of the pool, or None before the first fit."""
        row = self._latest_fit_row(None)
        if row is None:
            return None
        config = HierarchyConfig.model_validate_json(row["config"])
        arrays = np.load(io.BytesIO(row["tree"]))
        hierarchy = Hierarchy(
            config=config,
            centroids=[arrays[f"centroids_{i}"] for i in range(config.n_levels)],
            parents=[arrays[f"parents_{i}"] for i in range(config.n_levels - 1)],
        )
        return FitRecord(
            fit_version=int(row["fit_version"]),
            hierarchy=hierarchy,
            n_items=row["n_items"],
            mean_distance=row["mean_distance"],
            drops=json.loads(row["drops"]),
            sizes=json.loads(row["sizes"]),
            report=json.loads(row["report"]),
            created_at=row["created_at"],
            model_hash=row.get("model_hash") or "",
            signature=row.get("signature") or "",
            reason=row.get("reason") or "",
            drift=json.loads(row.get("drift") or "{}"),
        )

    def latest_fit_summary(self):
        """The latest fit's scalars (no tree blob): a `curation.refit.FitSummary`, or None."""
        from ..refit import FitSummary

        row = self._latest_fit_row(["fit_version", "n_items", "mean_distance", "model_hash",
                                    "config"])
        if row is None:
            return None
        return FitSummary(fit_version=int(row["fit_version"]), n_items=int(row["n_items"]),
                          mean_distance=float(row["mean_distance"]),
                          model_hash=row.get("model_hash") or "", config=row.get("config") or "")
