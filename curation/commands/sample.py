"""`curate sample`: draw a balanced selection from a clustering folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, DirectoryPath, Field, FilePath

from ._options import validate


class SampleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clustering: DirectoryPath
    target_size: int = Field(ge=1)
    strategy: Literal["random", "closest"]
    seed: int
    multiplier: int = Field(ge=1)
    labels: FilePath | None = None
    out: Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw a balanced selection from a clustering",
        description="Split the target top-down by water-filling so every top-level cluster "
        "gets an equal share, then pick inside each leaf cluster. Writes SELECTION.npy (int64 "
        "row indices into the embeddings; repeats never, copies go to the weights) and "
        "SELECTION_weights.npy beside it.",
    )
    p.add_argument("--clustering", required=True, help="folder written by `curate cluster`")
    p.add_argument("--target-size", required=True, help="items to select, counting copies")
    p.add_argument("--strategy", default="random", help="random | closest (to the centroid)")
    p.add_argument("--seed", default=0, help="random seed (same seed, same selection)")
    p.add_argument("--multiplier", default=1, help="copies allowed per item (as weights)")
    p.add_argument("--labels", default=None, help="optional .npy of item labels: print balance")
    p.add_argument("--out", required=True, help="SELECTION.npy to write")
    p.set_defaults(func=run)


def weights_path(selection_path: Path) -> Path:
    return selection_path.with_name(selection_path.stem + "_weights.npy")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import load_clustering
    from ..metrics import selection_label_stats
    from ..sampling import sample_balanced

    opts = validate(
        SampleOptions,
        clustering=args.clustering,
        target_size=args.target_size,
        strategy=args.strategy,
        seed=args.seed,
        multiplier=args.multiplier,
        labels=args.labels,
        out=args.out,
    )
    _, assignment = load_clustering(opts.clustering)
    selection = sample_balanced(
        assignment.paths,
        opts.target_size,
        strategy=opts.strategy,
        seed=opts.seed,
        distances=assignment.distance,
        multiplier=opts.multiplier,
    )
    out = opts.out if opts.out.suffix == ".npy" else opts.out.with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, selection.indices)
    np.save(weights_path(out), selection.weights)
    summary = {
        "out": str(out),
        "weights": str(weights_path(out)),
        "selected_items": int(selection.indices.size),
        "selected_with_copies": selection.size,
    }
    if opts.labels is not None:
        labels = np.load(opts.labels)
        if labels.shape[0] != assignment.leaf.size:
            raise ValueError(
                f"--labels has {labels.shape[0]} entries, the clustering {assignment.leaf.size}"
            )
        summary.update(selection_label_stats(labels[selection.indices], selection.weights))
    print(json.dumps(summary))
    return 0
