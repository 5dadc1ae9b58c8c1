"""Write embeddings as Parquet (item_id, uri, vector as a fixed-size list, embedder_version),
streamed batch by batch, and the quarantine as JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import EmbedBatch, identity_version

QUARANTINE_SUFFIX = ".quarantine.json"


def quarantine_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + QUARANTINE_SUFFIX)


class EmbeddingWriter:
    """`with EmbeddingWriter(out, identity) as w: w.write(batch)`; the identity (JSON) and its
    version go into the Parquet schema metadata, and the version into every row."""

    def __init__(self, out: str | Path, identity: dict[str, Any]):
        import pyarrow as pa

        self.out = Path(out)
        self.identity = identity
        self.version = identity_version(identity)
        dim = int(identity["dim"])
        self.schema = pa.schema(
            [
                ("item_id", pa.string()),
                ("uri", pa.string()),
                ("vector", pa.list_(pa.float32(), dim)),
                ("embedder_version", pa.string()),
            ],
            metadata={
                b"embedder_identity": json.dumps(identity, sort_keys=True).encode(),
                b"embedder_version": self.version.encode(),
            },
        )
        self.n_written = 0
        self.quarantined: list[tuple[str, str]] = []
        self._writer = None

    def __enter__(self) -> EmbeddingWriter:
        import pyarrow.parquet as pq

        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out.with_name(self.out.name + ".part")
        self._writer = pq.ParquetWriter(self._tmp, self.schema)
        return self

    def write(self, batch: EmbedBatch) -> None:
        import pyarrow as pa

        self.quarantined.extend(batch.quarantined)
        n = len(batch.refs)
        if n == 0:
            return
        dim = self.schema.field("vector").type.list_size
        flat = pa.array(batch.vectors.reshape(-1), type=pa.float32())
        table = pa.Table.from_arrays(
            [
                pa.array(batch.item_ids, pa.string()),
                pa.array(batch.refs, pa.string()),
                pa.FixedSizeListArray.from_arrays(flat, dim),
                pa.array([self.version] * n, pa.string()),
            ],
            schema=self.schema,
        )
        self._writer.write_table(table)
        self.n_written += n

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        self._tmp.replace(self.out)  # readers never see a half-written file
        report = {
            "embedder_version": self.version,
            "embedded": self.n_written,
            "quarantined": [{"uri": ref, "reason": reason} for ref, reason in self.quarantined],
        }
        quarantine_path(self.out).write_text(json.dumps(report, indent=1) + "\n")
