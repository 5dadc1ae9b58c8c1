"""Pools: what data a curation platform ingests and how it curates it (pure, no Dagster).

One config file (YAML or JSON) declares every pool; `load_pools` validates it with pydantic
so that a typo fails at load time, naming the field, not halfway through a run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .config import HierarchyConfig, SampleConfig

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
BUNDLED_POOLS = Path(__file__).resolve().parent.parent / "curation_dags" / "pools.yaml"
Modality = Literal["images", "texts", "vectors"]


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits and _ (starting with a letter, "
            "at most 48 characters): it names tables and Dagster asset keys"
        )
    return value


def _relative_path(value: str | None, what: str) -> str | None:
    if value is not None and (
        not value or value.startswith("/") or any(p in ("", ".", "..") for p in value.split("/"))
    ):
        raise ValueError(f"{what} {value!r} must be a relative path without . or ..")
    return value


class EmbedderConfig(BaseModel):
    """Which model turns a pool's raw items into vectors (ignored for precomputed vectors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="precomputed", description="model name, or 'precomputed'")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="passed to the embedder resource as fields"
    )


class SubsetSpec(SampleConfig):
    """One curated view of a pool: a named balanced sample (target size, strategy, seed,
    multiplier as in the core's SampleConfig)."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "subset name")


class RefitPolicy(BaseModel):
    """When to refit the hierarchy instead of assigning new drops to the current one.

    A refit happens when the share of items embedded since the last fit exceeds
    `max_added_fraction`, or when their mean squared distance to the nearest leaf centroid is
    more than `max_distance_ratio` times the fitted items' mean (the new data no longer looks
    like the data the tree was fitted on). `cron` is read by the periodic refit schedule.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_added_fraction: float = Field(default=0.5, gt=0.0)
    max_distance_ratio: float = Field(default=1.5, gt=1.0)
    warm_start: bool = True
    cron: str | None = "0 3 * * 0"


class HealthPolicy(BaseModel):
    """Cluster health gates: a level fails its check past these thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_empty_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    max_cluster_share: float = Field(default=0.5, gt=0.0, le=1.0)


class PoolConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    landing_prefix: str | None = Field(
        default=None,
        description="folder under the landing root holding this pool's drops; "
        "default: the pool name",
    )
    modality: Modality = "vectors"
    dim: int | None = Field(default=None, ge=1, description="vector dimension, if known up front")
    embedder: EmbedderConfig = EmbedderConfig()
    hierarchy: HierarchyConfig
    subsets: list[SubsetSpec] = Field(min_length=1)
    refit: RefitPolicy = RefitPolicy()
    health: HealthPolicy = HealthPolicy()
    labels: str | None = Field(
        default=None,
        description="CSV file (columns item_id, label) under the pool's landing prefix, for "
        "the evaluation's label figures; without it, a `label` column of the drops is used",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "pool name")

    @field_validator("landing_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return _relative_path(value, "landing_prefix")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: str | None) -> str | None:
        return _relative_path(value, "labels")

    @model_validator(mode="after")
    def _unique_subsets(self) -> PoolConfig:
        names = [s.name for s in self.subsets]
        if len(set(names)) != len(names):
            raise ValueError(f"pool {self.name!r} has duplicate subset names {names}")
        return self

    @property
    def prefix(self) -> str:
        return self.landing_prefix or self.name

    def embedder_fields(self) -> dict:
        """Fields of this pool's EmbedderResource / EmbedderSpec (images and texts pools)."""
        kind = {"images": "image", "texts": "text", "vectors": "vectors"}[self.modality]
        model = None if self.embedder.model == "precomputed" else self.embedder.model
        return {"kind": kind, "model": model, **self.embedder.options}

    def table(self, kind: str) -> str:
        """LanceDB table name of this pool's `kind` (raw, embeddings, level_1, subset_x, ...)."""
        return f"{self.name}__{kind}"


class PoolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[PoolConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PoolsFile:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pool names {names}")
        return self


def load_pools(path: str | Path | None = None) -> list[PoolConfig]:
    """Pools from `path`, else $CURATION_POOLS, else the bundled demo file (.yaml/.yml/.json)."""
    path = Path(path or os.environ.get("CURATION_POOLS") or BUNDLED_POOLS)
    if not path.exists():
        raise FileNotFoundError(f"pools file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"pools file {path}: use .yaml, .yml or .json")
    try:
        return PoolsFile.model_validate(data).pools
    except ValueError as exc:
        raise ValueError(f"invalid pools file {path}: {exc}") from None

