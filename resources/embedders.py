"""Dagster resource over curation.embedding: configuration in, a core embedder out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, get_args, get_origin

from dagster import ConfigurableResource
from pydantic import BaseModel, create_model

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


def _dagster_fields(model: type[BaseModel]) -> dict:
    """`model`'s fields for a ConfigurableResource: same names, defaults, constraints and
    descriptions; a fixed-size tuple becomes a list (Dagster's config has no tuples)."""
    fields = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if tuple in (get_origin(a) for a in (annotation, *get_args(annotation))):
            annotation = list[float] | None
        fields[name] = (annotation, info)
    return fields


# Flat fields (what Dagster config and `EmbedderResource(**pool.embedder_fields())` take),
# generated from EmbedderSpec so that the options are declared in one place only.
_EmbedderFields = create_model(
    "_EmbedderFields", __base__=ConfigurableResource, **_dagster_fields(EmbedderSpec)
)


class EmbedderResource(_EmbedderFields):
    """Feature extractor of a pool (fields: EmbedderSpec's). Weights are local files; nothing
    is downloaded."""

    def spec(self) -> EmbedderSpec:
        return EmbedderSpec(**{name: getattr(self, name) for name in EmbedderSpec.model_fields})

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
