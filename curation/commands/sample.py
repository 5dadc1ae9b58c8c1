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
    ids: FilePath | None = Field(
        default=None,
        description="item ids, one per embeddings row: a Parquet file with an item_id column "
        "or a text file with one id per line; they key the draw, so the platform's ids give "
        "the platform's subset (default: the row numbers 0, 1, ...)",
    )
    labels: FilePath | None = Field(
        default=None, description="optional .npy of item labels: print balance"
    )
    out: Path = Field(description="SELECTION.npy to write")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw a balanced selection from a clustering",
        description="Split the target top-down by water-filling so every top-level cluster "
        "gets an equal share, then pick inside each leaf cluster by a keyed hash of the item "
        "ids (the platform's sampler: same tree, ids and seed, same subset). Writes "
        "SELECTION.npy (int64 row indices into the embeddings; repeats never, copies go to "
        "the weights) and SELECTION_weights.npy beside it.",
    )
    # stability needs a previous subset version: it belongs to pool subsets, not to one draw
    add_model_arguments(p, SampleOptions, exclude=("stability",))
    p.set_defaults(func=run)


def weights_path(selection_path: Path) -> Path:
    return selection_path.with_name(selection_path.stem + "_weights.npy")


def read_ids(path: Path):
    """Item ids from a Parquet file (its item_id column, as pyarrow strings) or a text file
    (one per line, a list of str)."""
    if path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "item_id" not in table.column_names:
            raise ValueError(f"{path} has no item_id column (columns: {table.column_names})")
        return table.column("item_id").cast("string")
    return path.read_text(encoding="utf-8").splitlines()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import load_clustering
    from ..metrics import selection_label_stats
    from ..selection import sample_rows

    opts = from_args(SampleOptions, args)
    hierarchy, assignment = load_clustering(opts.clustering)
    item_ids = None if opts.ids is None else read_ids(opts.ids)
    # the options are a SampleConfig: the sampler reads its own fields only
    selection = sample_rows(hierarchy, assignment.leaf, opts, item_ids, assignment.distance)
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
