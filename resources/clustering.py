"""ClusteringResource: the pure core's fit and assignment, on the device this process has."""

from __future__ import annotations

import dataclasses

import numpy as np
from dagster import ConfigurableResource

from curation.config import HierarchyConfig

_DEVICE = HierarchyConfig.model_fields["device"]  # the core's option, not a copy of it


class ClusteringResource(ConfigurableResource):
    device: _DEVICE.annotation = _DEVICE  # type, default and description of HierarchyConfig

    def _config(self, config: HierarchyConfig) -> HierarchyConfig:
        return config.model_copy(update={"device": self.device})

    def fit(self, vectors: np.ndarray, config: HierarchyConfig, init_centroids=None):
        from curation.hierarchy import fit_hierarchy

        return fit_hierarchy(vectors, self._config(config), init_centroids=init_centroids)

    def assign(self, hierarchy, vectors: np.ndarray):
        """Nearest leaf centroid of every vector, then up the tree (no refit)."""
        # A copy on this resource's device: the caller's (cached) tree stays as it was.
        return dataclasses.replace(hierarchy, config=self._config(hierarchy.config)).assign(vectors)
