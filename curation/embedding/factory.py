"""One validated configuration for every embedder (shared by the CLI and the Dagster resource)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Embedder

DEFAULT_MODELS = {
    "image": "efficientnet-lite0",
    "text": "all-MiniLM-L6-v2",
    "vectors": "precomputed",
}
# The metric each kind's embedding space is made for: a pool's hierarchy (and its evaluation)
# follows it unless the pool sets hierarchy.metric (docs/EMBEDDERS.md). MiniLM is trained on
# the cosine similarity of normalised embeddings; EfficientNet-Lite0's pooled features: cosine
# too, measured on long-tailed Fashion-MNIST (a curated subset's k-NN balanced accuracy +0.015
# to +0.08 over l2, docs/EMBEDDERS.md); precomputed vectors: nothing is known of their
# producer, so l2 (the default before embedders declared one) unless the pool says.
SPACE_METRICS: dict[str, Literal["l2", "cosine"]] = {
    "image": "cosine",
    "text": "cosine",
    "vectors": "l2",
}
# Options that one kind of embedder reads: set for another kind they would be silently ignored.
KIND_OPTIONS = {
    "image_size": "image", "max_pixels": "image", "num_workers": "image", "mean": "image",
    "std": "image", "max_seq_length": "text", "dim": "vectors",
}


class EmbedderSpec(BaseModel):
    """Every embedder option, declared once: `curate embed` generates its flags from these
    fields, a pool's `embedder.options` are validated by it and the Dagster EmbedderResource
    derives its fields from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["image", "text", "vectors"] = Field(
        default="image", description="what the items are (vectors: precomputed Parquet)"
    )
    model: str | None = Field(
        default=None,
        description="efficientnet-lite0 (image default), all-MiniLM-L6-v2 (text default), "
        "torchscript, torchvision/<arch>, timm/<arch>, or a producer name for vectors",
    )
    weights_path: str | None = Field(default=None, description="local weights file or folder")
    batch_size: int = Field(default=64, ge=1, description="items per forward pass")
    num_workers: int = Field(
        default=0, ge=0, description="image decoding processes (0: inline)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when torch sees a GPU, else the CPU"
    )
    normalize: bool = Field(default=True, description="L2-normalise the vectors")
    image_size: int = Field(default=224, ge=8, le=4096, description="image: input side in pixels")
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="image: larger images are quarantined"
    )
    num_threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads (default: torch's)"
    )
    deterministic: bool = Field(default=True, description="use deterministic torch kernels")
    max_seq_length: int | None = Field(
        default=None, ge=1, description="text: tokens per text at most (default: the model's)"
    )
    dim: int | None = Field(default=None, ge=1, description="vectors: the expected dimension")
    mean: tuple[float, float, float] | None = Field(
        default=None, description="image: per-channel mean in [0, 1] (default: the model's)"
    )
    std: tuple[float, float, float] | None = Field(
        default=None, description="image: per-channel std in [0, 1] (default: the model's)"
    )

    @model_validator(mode="after")
    def _check(self) -> EmbedderSpec:
        if self.kind == "vectors" and self.dim is None:
            raise ValueError("dim is required for kind='vectors'")
        fields = type(self).model_fields
        ignored = sorted(name for name, kind in KIND_OPTIONS.items()
                         if kind != self.kind and getattr(self, name) != fields[name].default)
        if ignored:
            raise ValueError(f"option(s) {ignored} do not apply to a {self.kind} embedder "
                             f"(they are read by: {', '.join(KIND_OPTIONS[n] for n in ignored)})")
        return self

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODELS[self.kind]

    @property
    def metric(self) -> Literal["l2", "cosine"]:
        """The metric this embedder's space is made for (SPACE_METRICS)."""
        return SPACE_METRICS[self.kind]


def make_embedder(spec: EmbedderSpec) -> Embedder:
    """Build (not load: weights load on first use) the embedder that `spec` describes; each
    embedder takes the spec itself, so its options are checked and defaulted here only."""
    if spec.kind == "image":
        from .images import ImageEmbedder

        return ImageEmbedder(spec)
    if spec.kind == "text":
        from .text import TextEmbedder

        return TextEmbedder(spec)
    from .vectors import VectorReader

    return VectorReader(spec)


def config_identity(spec: EmbedderSpec) -> dict:
    """What determines the vectors, known without loading the model (no torch import): kind,
    model name, the weights' sha256 (file, or every file of a model folder), the options that
    change vectors and the pipeline version. Cheap enough to compute when a code location loads
    (Dagster `code_version` of the embeddings); changes exactly when identity() would change.
    batch_size, num_workers, device, num_threads, deterministic and max_pixels do not enter it."""
    from pathlib import Path

    from ..hashing import file_sha256, tree_sha256
    from .base import PIPELINE_VERSION

    wanted = {
        "image": ("normalize", "image_size", "mean", "std"),
        "text": ("normalize", "max_seq_length"),
        "vectors": ("normalize", "dim"),
    }[spec.kind]
    options = spec.model_dump(include=set(wanted))
    weights_sha = None
    if spec.kind != "vectors":
        weights = getattr(make_embedder(spec), "weights_path", None)  # resolves the default path
        if weights is not None:
            path = Path(weights)
            weights_sha = tree_sha256(path) if path.is_dir() else file_sha256(path)
    return {
        "kind": spec.kind,
        "name": spec.model_name,
        "weights_sha256": weights_sha,
        "options": options,
        "pipeline_version": PIPELINE_VERSION,
    }
