"""`curate cluster`: fit the hierarchy on an embeddings file and write it to a folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pydantic import Field, FilePath

from ..config import HierarchyConfig
from ._options import add_model_arguments, from_args


class ClusterOptions(HierarchyConfig):
    """The hierarchy's own options (declared once, in HierarchyConfig) plus the files."""

    embeddings: FilePath = Field(description=".npy (n x d) or Parquet with a vector column")
    vector_column: str = Field(default="vector", description="Parquet column holding vectors")
    out: Path = Field(description="output folder")

    def hierarchy(self) -> HierarchyConfig:
        return HierarchyConfig(**self.model_dump(include=set(HierarchyConfig.model_fields)))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="fit hierarchical k-means with resampling on embeddings",
        description="Fit the cluster tree (level 1 clusters the items, each higher level the "
        "centroids below) and write it to --out: centroids and parents as .npy, the assignment "
        "of every item as Parquet, and manifest.json (config, seed, versions, per-level stats).",
    )
    add_model_arguments(p, ClusterOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hierarchy import fit_hierarchy
    from ..io import load_embeddings, save_clustering

    opts = from_args(ClusterOptions, args)
    config = opts.hierarchy()
    started = time.perf_counter()
    points = load_embeddings(opts.embeddings, opts.vector_column)
    loaded = time.perf_counter()
    fit = fit_hierarchy(points, config)
    fitted = time.perf_counter()
    save_clustering(
        opts.out,
        fit,
        extra={
            "embeddings": str(opts.embeddings),
            "timings": {
                "load_s": round(loaded - started, 4),
                "fit_s": round(fitted - loaded, 4),
                "total_s": round(time.perf_counter() - started, 4),
            },
        },
    )
    summary = {
        "out": str(opts.out),
        "n_items": int(points.shape[0]),
        "levels": [
            {
                "level": r.level,
                "clusters": r.stats["n_clusters"],
                "empty": r.stats["empty"],
                "effective_clusters": round(r.stats["effective_clusters"], 1),
            }
            for r in fit.levels
        ],
        "fit_s": round(fitted - loaded, 3),
    }
    print(json.dumps(summary))
    return 0
