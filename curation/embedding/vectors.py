"""Precomputed vectors: Parquet files with an id column (item_id or id) and a vector column.
Rows with a wrong dimension, a missing vector or non-finite values are quarantined."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..hashing import sha256_hex
from ..items import vector_type_problem
from .base import (
    PIPELINE_VERSION,
    EmbedBatch,
    EmbedderBase,
    Item,
    ProgressCallback,
    ProgressMeter,
    as_item,
    l2_normalize,
)
from .factory import EmbedderSpec

ID_COLUMNS = ("item_id", "id")


class VectorReader(EmbedderBase):
    """Reads precomputed vectors, built from an `EmbedderSpec` of kind "vectors" (validated
    there: dim is required); its `model` names the producer (it goes into the identity)."""

    kind = "vectors"

    def __init__(self, spec: EmbedderSpec, vector_column: str = "vector"):
        super().__init__(spec)
        self.dim: int = spec.dim
        self.vector_column = vector_column

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "vectors",
            "name": self.model_name,
            "weights_sha256": None,
            "preprocessing": {
                "source": f"Parquet column {self.vector_column!r}",
                "pipeline_version": PIPELINE_VERSION,
            },
            "normalize": self.spec.normalize,
            "dim": self.dim,
        }

    def _rows(self, item: Item) -> Iterator[tuple[str, str, Any, str | None]]:
        """(ref, item_id, vector-or-None, reason) for each row of one Parquet item."""
        import pyarrow.parquet as pq

        if item.error is not None:
            yield item.ref, "", None, item.error
            return
        try:
            source = item.path if item.path is not None else _buffer(item.read_bytes())
            pf = pq.ParquetFile(source)
        except Exception as exc:
            yield item.ref, "", None, f"unreadable Parquet: {type(exc).__name__}: {exc}"
            return
        names = pf.schema_arrow.names
        if self.vector_column not in names:
            yield item.ref, "", None, f"no column {self.vector_column!r} (columns: {names})"
            return
        problem = vector_type_problem(pf.schema_arrow.field(self.vector_column).type)
        if problem is not None:  # the same rule as raw's parser (curation.items)
            yield item.ref, "", None, problem.replace("'vector'", repr(self.vector_column))
            return
        id_col = next((c for c in ID_COLUMNS if c in names), None)
        columns = [self.vector_column] + ([id_col] if id_col else [])
        row = 0
        for rb in pf.iter_batches(batch_size=self.spec.batch_size, columns=columns):
            vectors = rb.column(self.vector_column).to_pylist()
            ids = rb.column(id_col).to_pylist() if id_col else [None] * len(vectors)
            for vec, item_id in zip(vectors, ids, strict=True):
                ref = f"{item.ref}#row={row}"  # raw's ref of a row without a uri column
                row += 1
                if vec is None:
                    yield ref, "", None, "missing vector (null)"
                    continue
                arr = np.asarray(vec, dtype=np.float32)
                if arr.shape != (self.dim,):
                    yield ref, "", None, f"wrong dimension: {arr.size} values, expected {self.dim}"
                elif not np.isfinite(arr).all():
                    yield ref, "", None, "non-finite values (NaN or inf)"
                else:
                    iid = (
                        str(item_id)
                        if item_id is not None
                        else sha256_hex(arr.tobytes())
                    )
                    yield ref, iid, arr, None

    def embed_batches(
        self, items: Iterable[Item | str | Path], progress: ProgressCallback | None = None
    ) -> Iterator[EmbedBatch]:
        meter = ProgressMeter(progress)
        refs, ids, vecs, quarantined = [], [], [], []

        def flush() -> EmbedBatch:
            out = np.stack(vecs) if vecs else np.zeros((0, self.dim), np.float32)
            batch = EmbedBatch(
                list(refs),
                list(ids),
                l2_normalize(out) if self.spec.normalize else out,
                list(quarantined),
            )
            refs.clear()
            ids.clear()
            vecs.clear()
            quarantined.clear()
            meter.update(batch)
            return batch

        for item in (as_item(x) for x in items):
            for ref, iid, vec, reason in self._rows(item):
                if reason is not None:
                    quarantined.append((ref, reason))
                else:
                    refs.append(ref)
                    ids.append(iid)
                    vecs.append(vec)
                if len(refs) + len(quarantined) >= self.spec.batch_size:
                    yield flush()
        if refs or quarantined:
            yield flush()


def _buffer(data: bytes):
    import pyarrow as pa

    return pa.BufferReader(data)
