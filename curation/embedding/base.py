"""Shared types of the feature extractors: items in, vectors (or quarantine reasons) out.

Pure core: no Dagster and no torch import at module level (torch is imported inside functions).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..hashing import json_sha256

if TYPE_CHECKING:  # factory imports this module
    from .factory import EmbedderSpec

# Bump when the pipeline code changes the vectors for the same model and options (for example a
# new resize rule): every identity_version changes with it, so every drop is re-embedded.
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class Item:
    """One input item. `ref` names it in outputs and in the quarantine (a path or uri, or
    'file.jsonl#L3' for a line). Exactly one of path / data / text is normally set; `error`
    marks an item that discovery already knows is bad (it goes straight to the quarantine);
    `reader(ref)` fetches the bytes lazily (in the decoding worker) when set."""

    ref: str
    path: Path | None = None
    data: bytes | None = None
    text: str | None = None
    error: str | None = None
    reader: Callable[[str], bytes] | None = None  # e.g. LandingStorage.read_bytes for s3:// refs

    def read_bytes(self) -> bytes:
        if self.reader is not None:
            return self.reader(self.ref)
        if self.data is not None:
            return self.data
        if self.path is not None:
            return Path(self.path).read_bytes()
        if self.text is not None:
            return self.text.encode("utf-8")
        raise ValueError(f"item {self.ref!r} has neither path, data nor text")


def as_item(obj: Item | str | os.PathLike) -> Item:
    """Accept Items, paths and path strings alike."""
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, str | os.PathLike):
        return Item(ref=str(obj), path=Path(obj))
    raise TypeError(f"cannot embed {type(obj).__name__}: pass Item, str or Path")


@dataclass
class EmbedBatch:
    """One batch of output: vectors aligned with refs/item_ids of the accepted items."""

    refs: list[str]
    item_ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    quarantined: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class EmbedResult:
    """All vectors of a call; `quarantined` lists (item ref, reason) of rejected items."""

    refs: list[str]
    item_ids: list[str]
    vectors: np.ndarray  # (n, d) float32, row i belongs to refs[i]
    quarantined: list[tuple[str, str]]
    identity: dict[str, Any]

    @classmethod
    def from_batches(
        cls, batches: Iterable[EmbedBatch], identity: dict[str, Any], dim: int
    ) -> EmbedResult:
        refs: list[str] = []
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        quarantined: list[tuple[str, str]] = []
        for b in batches:
            refs.extend(b.refs)
            ids.extend(b.item_ids)
            if len(b.refs):
                vecs.append(b.vectors)
            quarantined.extend(b.quarantined)
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        return cls(refs, ids, vectors, quarantined, identity)


@dataclass(frozen=True)
class Progress:
    done: int  # items handled so far (embedded + quarantined)
    embedded: int
    quarantined: int
    elapsed_s: float
    items_per_s: float


ProgressCallback = Callable[[Progress], None]


class ProgressMeter:
    """Counts items and calls the callback after each batch."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.start = time.perf_counter()
        self.embedded = 0
        self.quarantined = 0

    def update(self, batch: EmbedBatch) -> None:
        self.embedded += len(batch.refs)
        self.quarantined += len(batch.quarantined)
        if self.callback is not None:
            elapsed = time.perf_counter() - self.start
            done = self.embedded + self.quarantined
            rate = done / elapsed if elapsed > 0 else 0.0
            self.callback(Progress(done, self.embedded, self.quarantined, elapsed, rate))


@runtime_checkable
class Embedder(Protocol):
    """What the assets and the CLI rely on."""

    def identity(self) -> dict[str, Any]:
        """name, weights_sha256, preprocessing, normalize, dim (JSON-serialisable, stable)."""
        ...

    def embed_batches(
        self, items: Iterable[Item | str | os.PathLike], progress: ProgressCallback | None = None
    ) -> Iterator[EmbedBatch]:
        """Stream: memory bounded by the batch, not by the number of items."""
        ...

    def embed(
        self, items: Iterable[Item | str | os.PathLike], progress: ProgressCallback | None = None
    ) -> EmbedResult: ...


class EmbedderBase:
    """embed() on top of embed_batches(); every embedder is built from one EmbedderSpec,
    validated (and defaulted) once where it was made: the embedders do not check it again."""

    kind: str

    def __init__(self, spec: EmbedderSpec):
        if spec.kind != self.kind:
            raise ValueError(f"{type(self).__name__} embeds kind {self.kind!r}, the spec "
                             f"says {spec.kind!r} (make_embedder picks the class)")
        self.spec = spec
        self.model_name = spec.model_name

    @property
    def metric(self) -> str:
        """The metric the vectors' space is made for: 'cosine' or 'l2' (EmbedderSpec.metric);
        not part of identity(), which names what determines the vectors."""
        return self.spec.metric

    def identity(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_batches(self, items, progress=None) -> Iterator[EmbedBatch]:  # pragma: no cover
        raise NotImplementedError

    def embed(self, items, progress: ProgressCallback | None = None) -> EmbedResult:
        ident = self.identity()
        return EmbedResult.from_batches(self.embed_batches(items, progress), ident, ident["dim"])


def identity_version(identity: dict[str, Any]) -> str:
    """Short stable hash of an identity: use it as the Dagster code/data version of the
    embeddings. Same model, weights, preprocessing and normalisation give the same string."""
    return json_sha256(identity)[:16]




def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r}: use auto, cpu or cuda")
    return device


@contextlib.contextmanager
def torch_runtime(device: str, num_threads: int | None, deterministic: bool):
    """Inference mode, a fixed CPU thread count and deterministic kernels for the duration only
    (restored afterwards: these are process-wide torch settings)."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.inference_mode():
            yield
    finally:
        if num_threads:
            torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def chunked(iterable: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for x in iterable:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def set_offline_env() -> None:
    """Never reach a model hub: all weights are local."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
