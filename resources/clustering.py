"""ClusteringResource: the pure core's fit and assignment, on the device this process has."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from dagster import ConfigurableResource
from pydantic import Field

from curation.config import HierarchyConfig


class ClusteringResource(ConfigurableResource):
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto", description="auto: a GPU when faiss sees one, else the CPU"
    )

    def _config(self, config: HierarchyConfig) -> HierarchyConfig:
        return config.model_copy(update={"device": self.device})

    def fit(self, vectors: np.ndarray, config: HierarchyConfig, init_centroids=None):
        from curation.hierarchy import fit_hierarchy

        return fit_hierarchy(vectors, self._config(config), init_centroids=init_centroids)

    def assign(self, hierarchy, vectors: np.ndarray):
        """Nearest leaf centroid of every vector, then up the tree (no refit)."""
        # A copy on this resource's device: the caller's (cached) tree stays as it was.
        return dataclasses.replace(hierarchy, config=self._config(hierarchy.config)).assign(vectors)
