"""`curate embed`: embed a folder (or a drop) outside Dagster into Parquet + quarantine JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pydantic import DirectoryPath, Field, field_validator

from ..embedding.factory import EmbedderSpec
from ._options import add_model_arguments, from_args


class EmbedOptions(EmbedderSpec):
    """The embedder's options (declared once, in EmbedderSpec) plus the files."""

    input: DirectoryPath = Field(description="folder (or drop folder) to embed")
    out: Path = Field(description="output .parquet file")

    @field_validator("out")
    @classmethod
    def _parquet(cls, value: Path) -> Path:
        if value.suffix != ".parquet":
            raise ValueError("must end with .parquet")
        return value

    def spec(self) -> EmbedderSpec:
        return EmbedderSpec(**self.model_dump(include=set(EmbedderSpec.model_fields)))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed a folder of images, texts or vectors into Parquet",
        description="Embed every item of a folder (a drop: images, *.txt / *.jsonl texts, or "
        "*.parquet vectors) and write --out (item_id = sha256 of the bytes, uri, vector, "
        "embedder_version; the model identity in the file metadata) and <out>.quarantine.json "
        "(items that could not be embedded, with the reason).",
    )
    add_model_arguments(p, EmbedOptions)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = from_args(EmbedOptions, args)
    from ..embedding import folder_items, make_embedder
    from ..embedding.output import EmbeddingWriter, quarantine_path

    spec = opts.spec()
    embedder = make_embedder(spec)

    def progress(p) -> None:
        if not args.quiet:
            print(
                f"embed: {p.done} items ({p.quarantined} quarantined), {p.items_per_s:.1f} items/s",
                file=sys.stderr,
            )

    started = time.perf_counter()
    with EmbeddingWriter(opts.out, embedder.identity()) as writer:
        for batch in embedder.embed_batches(folder_items(opts.input, spec.kind), progress):
            writer.write(batch)
    seconds = time.perf_counter() - started
    done = writer.n_written + len(writer.quarantined)
    print(
        json.dumps(
            {
                "out": str(opts.out),
                "quarantine": str(quarantine_path(opts.out)),
                "embedded": writer.n_written,
                "quarantined": len(writer.quarantined),
                "dim": writer.identity["dim"],
                "embedder_version": writer.version,
                "seconds": round(seconds, 3),
                "items_per_s": round(done / seconds, 1) if seconds > 0 else None,
            }
        )
    )
    return 0
