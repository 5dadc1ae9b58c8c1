"""`curate embed`: embed a folder (or a drop) outside Dagster into Parquet + quarantine JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    DirectoryPath,
    Field,
    field_validator,
)

from ._options import validate


class EmbedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: DirectoryPath
    out: Path
    kind: Literal["image", "text", "vectors"]
    model: str | None
    weights_path: str | None
    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    normalize: bool
    image_size: int = Field(ge=8, le=4096)
    max_pixels: int = Field(ge=1)
    num_threads: int | None = Field(ge=1)
    dim: int | None = Field(ge=1)

    @field_validator("out")
    @classmethod
    def _parquet(cls, value: Path) -> Path:
        if value.suffix != ".parquet":
            raise ValueError("must end with .parquet")
        return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed a folder of images, texts or vectors into Parquet",
        description="Embed every item of a folder (a drop: images, *.txt / *.jsonl texts, or "
        "*.parquet vectors) and write --out (item_id = sha256 of the bytes, uri, vector, "
        "embedder_version; the model identity in the file metadata) and <out>.quarantine.json "
        "(items that could not be embedded, with the reason).",
    )
    p.add_argument("--input", required=True, help="folder (or drop folder) to embed")
    p.add_argument("--out", required=True, help="output .parquet file")
    p.add_argument("--kind", default="image", help="image | text | vectors")
    p.add_argument("--model", default=None, help="default: efficientnet-lite0 / all-MiniLM-L6-v2")
    p.add_argument("--weights-path", default=None, help="local weights file or model folder")
    p.add_argument("--batch-size", default=64, help="items per forward pass")
    p.add_argument("--num-workers", default=0, help="image decoding processes (0: inline)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="keep raw vectors (default: L2-normalised)",
    )
    p.add_argument("--image-size", default=224, help="input side in pixels")
    p.add_argument("--max-pixels", default=40_000_000, help="larger images are quarantined")
    p.add_argument("--num-threads", default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--dim", default=None, help="vectors only: expected dimension")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = validate(
        EmbedOptions,
        **dict(
            input=args.input,
            out=args.out,
            kind=args.kind,
            model=args.model,
            weights_path=args.weights_path,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            normalize=args.normalize,
            image_size=args.image_size,
            max_pixels=args.max_pixels,
            num_threads=args.num_threads,
            dim=args.dim,
        ),
    )
    from ..embedding import EmbedderSpec, folder_items, make_embedder
    from ..embedding.output import EmbeddingWriter, quarantine_path

    spec = validate(EmbedderSpec, **opts.model_dump(exclude={"input", "out"}))
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
