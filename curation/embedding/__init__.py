"""Feature extraction (pure core, no Dagster): items of a drop in, vectors + quarantine out.

from curation.embedding import EmbedderSpec, make_embedder, folder_items, identity_version
emb = make_embedder(EmbedderSpec(kind="image"))
for batch in emb.embed_batches(folder_items(drop_dir, "image"), progress=print):
    ...  # batch.refs, batch.item_ids, batch.vectors (n, d) float32, batch.quarantined
"""

from .base import (
    PIPELINE_VERSION,
    EmbedBatch,
    Embedder,
    EmbedResult,
    Item,
    Progress,
    identity_version,
)
from .factory import DEFAULT_MODELS, SPACE_METRICS, EmbedderSpec, make_embedder
from .sources import file_items, folder_files, folder_items, jsonl_items

__all__ = [
    "DEFAULT_MODELS",
    "PIPELINE_VERSION",
    "SPACE_METRICS",
    "EmbedBatch",
    "EmbedResult",
    "Embedder",
    "EmbedderSpec",
    "Item",
    "Progress",
    "file_items",
    "folder_files",
    "folder_items",
    "identity_version",
    "jsonl_items",
    "make_embedder",
]
