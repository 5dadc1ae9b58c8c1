"""`curate sample`: draw a balanced selection from a clustering folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import DirectoryPath, Field, FilePath

from ..config import SampleConfig
from ._options import add_model_arguments, from_args


class SampleOptions(SampleConfig):
    """The sampler's own options (declared once, in SampleConfig) plus the files."""

    clustering: DirectoryPath = Field(description="folder written by `curate cluster`")
    labels: FilePath | None = Field(
        default=None, description="optional .npy of item labels: print balance"
    )
    out: Path = Field(description="SELECTION.npy to write")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw a balanced selection from a clustering",
        description="Split the target top-down by water-filling so every top-level cluster "
        "gets an equal share, then pick inside each leaf cluster. Writes SELECTION.npy (int64 "
        "row indices into the embeddings; repeats never, copies go to the weights) and "
        "SELECTION_weights.npy beside it.",
    )
    # stability needs a previous subset version: it belongs to pool subsets, not to one draw
    add_model_arguments(p, SampleOptions, exclude=("stability",))
    p.set_defaults(func=run)


def weights_path(selection_path: Path) -> Path:
    return selection_path.with_name(selection_path.stem + "_weights.npy")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import load_clustering
    from ..metrics import selection_label_stats
    from ..sampling import sample_balanced

    opts = from_args(SampleOptions, args)
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
