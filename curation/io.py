"""Open-format files of the core: embeddings in, clustering trees and selections out."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from .hierarchy import Assignment, FitResult, Hierarchy

ASSIGNMENT_FILE = "assignment.parquet"
MANIFEST_FILE = "manifest.json"


def load_embeddings(path: str | Path, vector_column: str = "vector") -> np.ndarray:
    """(n, d) float32 from a .npy file or a Parquet file with a list-of-floats column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embeddings file {path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if vector_column not in table.column_names:
            raise ValueError(
                f"{path} has no column {vector_column!r} (columns: {table.column_names})"
            )
        column = table.column(vector_column).combine_chunks()
        lengths = np.asarray(column.value_lengths()) if hasattr(column, "value_lengths") else None
        if lengths is not None and lengths.size and (lengths != lengths[0]).any():
            bad = int(np.argmax(lengths != lengths[0]))
            raise ValueError(
                f"{path}: row {bad} of {vector_column!r} has {lengths[bad]} values, "
                f"row 0 has {lengths[0]}: vectors must share one dimension"
            )
        flat = np.asarray(column.flatten(), dtype=np.float32)
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
    raise ValueError(f"unsupported embeddings file {path}: use .npy or .parquet")


def library_versions() -> dict[str, str]:
    import faiss

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions["faiss"] = getattr(faiss, "__version__", "unknown")
    from . import __version__

    versions["curation"] = __version__
    return versions


def save_clustering(directory: str | Path, fit: FitResult, extra: dict | None = None) -> Path:
    """Tree (.npy + JSON), per-item assignment (Parquet) and a manifest (JSON)."""
    import polars as pl

    directory = Path(directory)
    fit.hierarchy.save(directory)
    a = fit.assignment
    columns = {"row": np.arange(a.leaf.size, dtype=np.int64), "distance": a.distance}
    for level in range(a.paths.shape[1]):
        columns[f"level_{level + 1}"] = a.paths[:, level]
    pl.DataFrame(columns).write_parquet(directory / ASSIGNMENT_FILE)
    manifest = {
        "config": fit.hierarchy.config.model_dump(),
        "seed": fit.hierarchy.config.seed,
        "n_items": int(a.leaf.size),
        "dim": fit.hierarchy.dim,
        "versions": library_versions(),
        "levels": [
            {
                "level": r.level,
                "n_points": r.n_points,
                "seconds": round(r.seconds, 4),
                "n_empty_reseeded": r.n_empty_reseeded,
                "objective": r.objective,
                "stats": r.stats,
            }
            for r in fit.levels
        ],
        **(extra or {}),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return directory


def load_clustering(directory: str | Path) -> tuple[Hierarchy, Assignment]:
    import polars as pl

    directory = Path(directory)
    hierarchy = Hierarchy.load(directory)
    path = directory / ASSIGNMENT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no {ASSIGNMENT_FILE}")
    frame = pl.read_parquet(path).sort("row")
    paths = frame.select([f"level_{lv + 1}" for lv in range(hierarchy.n_levels)]).to_numpy()
    return hierarchy, Assignment(
        leaf=paths[:, 0].astype(np.int64),
        distance=frame["distance"].to_numpy().astype(np.float32),
        paths=paths.astype(np.int64),
    )
