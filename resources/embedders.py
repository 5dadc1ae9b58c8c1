"""Dagster resource over curation.embedding: configuration in, a core embedder out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field

from curation.embedding import (
    Embedder,
    EmbedderSpec,
    Item,
    file_items,
    identity_version,
    make_embedder,
)
from curation.embedding.factory import config_identity


@lru_cache(maxsize=2)
def _cached_embedder(spec: EmbedderSpec) -> Embedder:
    # One loaded model per configuration and process (identity() and embedding share it).
    return make_embedder(spec)


class EmbedderResource(ConfigurableResource):
    """Feature extractor of a pool. Weights are local files; nothing is downloaded."""

    kind: Literal["image", "text", "vectors"] = Field(
        default="image", description="image | text | vectors (precomputed Parquet)"
    )
    model: str | None = Field(
        default=None,
        description="efficientnet-lite0 (image default), all-MiniLM-L6-v2 (text default), "
        "torchscript, torchvision/<arch>, timm/<arch>, or a producer name for vectors",
    )
    weights_path: str | None = Field(default=None, description="local weights file or folder")
    batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=0, ge=0, description="image decoding processes (0: inline)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    normalize: bool = Field(default=True, description="L2-normalise the vectors")
    image_size: int = Field(default=224, ge=8)
    max_pixels: int = Field(default=40_000_000, ge=1, description="larger images: quarantined")
    num_threads: int | None = Field(default=None, ge=1, description="CPU threads for torch")
    deterministic: bool = True
    max_seq_length: int | None = Field(default=None, ge=1)
    dim: int | None = Field(default=None, ge=1, description="vectors only: expected dimension")
    mean: list[float] | None = Field(default=None, description="image: channel mean in [0, 1]")
    std: list[float] | None = Field(default=None, description="image: channel std in [0, 1]")

    def spec(self) -> EmbedderSpec:
        return EmbedderSpec(
            kind=self.kind,
            model=self.model,
            weights_path=self.weights_path,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device,
            normalize=self.normalize,
            image_size=self.image_size,
            max_pixels=self.max_pixels,
            num_threads=self.num_threads,
            deterministic=self.deterministic,
            max_seq_length=self.max_seq_length,
            dim=self.dim,
            mean=tuple(self.mean) if self.mean else None,
            std=tuple(self.std) if self.std else None,
        )

    def get_embedder(self) -> Embedder:
        return _cached_embedder(self.spec())

    def identity(self) -> dict[str, Any]:
        return self.get_embedder().identity()

    def identity_version(self) -> str:
        return identity_version(self.identity())

    def config_version(self) -> str:
        """16 hex digits over what determines the vectors, without loading the model (the
        Dagster code_version of a pool's embeddings; see config_identity)."""
        return identity_version(config_identity(self.spec()))

    def items(
        self, uris: Iterable[str], read_bytes: Callable[[str], bytes] | None = None
    ) -> Iterator[Item]:
        """Items of a drop's files (e.g. [f.uri for f in storage.list_files(drop_id)],
        read_bytes=storage.read_bytes for s3:// uris)."""
        return file_items(uris, self.kind, read_bytes)
