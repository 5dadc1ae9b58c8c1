"""`curate cluster`: fit the hierarchy on an embeddings file and write it to a folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, FilePath

from ._options import parse_int_list, validate


class ClusterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embeddings: FilePath
    vector_column: str = "vector"
    n_clusters: list[int]
    resampling_steps: list[int]
    sample_sizes: list[int]
    resampling: Literal["closest", "random"]
    metric: Literal["l2", "cosine"]
    upper_metric: Literal["same", "centered-cosine"]
    max_iter: int
    tol: float
    level1_split: int
    fit_sample_size: int | None
    seed: int
    device: Literal["auto", "cpu", "gpu"]
    out: Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="fit hierarchical k-means with resampling on embeddings",
        description="Fit the cluster tree (level 1 clusters the items, each higher level the "
        "centroids below) and write it to --out: centroids and parents as .npy, the assignment "
        "of every item as Parquet, and manifest.json (config, seed, versions, per-level stats).",
    )
    p.add_argument(
        "--embeddings", required=True, help=".npy (n x d) or Parquet with a vector column"
    )
    p.add_argument("--vector-column", default="vector", help="Parquet column holding vectors")
    p.add_argument("--n-clusters", required=True, help="clusters per level, e.g. 1000,200,50")
    p.add_argument("--resampling-steps", default="10", help="T per level (one value = all)")
    p.add_argument("--sample-sizes", default="", help="r per level; default half the mean size")
    p.add_argument("--resampling", default="closest", help="closest | random")
    p.add_argument("--metric", default="l2", help="l2 | cosine")
    p.add_argument(
        "--upper-metric",
        default="same",
        help="levels above 1: same (the paper) | centered-cosine (for high-dimensional "
        "embeddings: clusters centroids by direction from their mean)",
    )
    p.add_argument("--max-iter", default=50, help="Lloyd iterations at most")
    p.add_argument("--tol", default=1e-4, help="relative objective improvement to stop at")
    p.add_argument("--level1-split", default=1, help="s: fit level 1 in two steps (k/s, then s)")
    p.add_argument("--fit-sample-size", default=None, help="fit level 1 on a sample of this size")
    p.add_argument("--seed", default=0, help="random seed (same seed, same tree)")
    p.add_argument("--device", default="auto", help="auto | cpu | gpu")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import HierarchyConfig
    from ..hierarchy import fit_hierarchy
    from ..io import load_embeddings, save_clustering

    opts = validate(
        ClusterOptions,
        embeddings=args.embeddings,
        vector_column=args.vector_column,
        n_clusters=parse_int_list(args.n_clusters),
        resampling_steps=parse_int_list(args.resampling_steps),
        sample_sizes=parse_int_list(args.sample_sizes),
        resampling=args.resampling,
        metric=args.metric,
        upper_metric=args.upper_metric,
        max_iter=args.max_iter,
        tol=args.tol,
        level1_split=args.level1_split,
        fit_sample_size=args.fit_sample_size,
        seed=args.seed,
        device=args.device,
        out=args.out,
    )
    config = validate(
        HierarchyConfig, **opts.model_dump(exclude={"embeddings", "out", "vector_column"})
    )
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
