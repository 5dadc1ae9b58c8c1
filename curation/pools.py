"""Pools: what data a curation platform ingests and how it curates it (pure, no Dagster).

One config file (YAML or JSON) declares every pool; `load_pools` validates it with pydantic
so that a typo fails at load time, naming the field, not halfway through a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import naming
from .config import DedupConfig, HierarchyConfig, SampleConfig
from .items import EMBEDDER_KIND

BUNDLED_POOLS = Path(__file__).resolve().parent / "pools.yaml"  # the demo pools
Modality = Literal["images", "texts", "vectors"]


def _relative_path(value: str | None, what: str) -> str | None:
    if value is not None and (
        not value or value.startswith("/") or any(p in ("", ".", "..") for p in value.split("/"))
    ):
        raise ValueError(f"{what} {value!r} must be a relative path without . or ..")
    return value


# Sundays 03:00. The one default of refit.cron; the expression is validated where it is read,
# by Dagster's schedule (curation_dags.sensors.build_refit_schedule), not here.
DEFAULT_REFIT_CRON = "0 3 * * 0"


class EmbedderConfig(BaseModel):
    """Which model turns a pool's raw items into vectors (ignored for precomputed vectors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="precomputed", description="model name, or 'precomputed'")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="EmbedderSpec fields (batch_size, image_size, ...), validated by it",
    )


class SubsetSpec(SampleConfig):
    """One curated view of a pool: a named balanced sample (target size, strategy, seed,
    multiplier as in the core's SampleConfig)."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return naming.check_name(value, "subset name")


class RefitPolicy(BaseModel):
    """When to refit the hierarchy instead of assigning new drops to the current one.

    A refit happens when the share of items embedded since the last fit exceeds
    `max_added_fraction`, or when their mean squared distance to the nearest leaf centroid is
    more than `max_distance_ratio` times the fitted items' mean (the new data no longer looks
    like the data the tree was fitted on). `cron` is read by the periodic refit schedule.

    `warm_start` starts a refit from the previous tree's centroids. Off by default: a cold fit
    depends only on the items and the seed, so the same items give the same tree whatever the
    history of fits; top-level cluster ids stay stable across refits anyway (drift matching).

    A due fit waits while drop runs of the pool are in flight, so drops landed together are
    fitted together, but at most `max_wait_for_drops_s`: under a steady stream of drops it is
    then queued anyway (behind the drop runs already queued).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_added_fraction: float = Field(default=0.5, gt=0.0)
    max_distance_ratio: float = Field(default=1.5, gt=1.0)
    warm_start: bool = False
    cron: str | None = Field(
        default=DEFAULT_REFIT_CRON,
        description="5-field cron of the periodic refit (None: none); a cron Dagster rejects "
        "fails that pool's refit schedule only, never the code location",
    )
    max_wait_for_drops_s: int = Field(default=600, ge=0)
    drops_per_run: int = Field(
        default=10, ge=1,
        description="drops per run of the re-assignment after a refit: a backfill of "
        "ceil(drops / this) runs, which go in parallel up to the per-pool run limit")


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
    dedup: DedupConfig = Field(
        default=DedupConfig(),
        description="semantic dedup inside the leaves before sampling (off by default)",
    )
    labels: str | None = Field(
        default=None,
        description="CSV file (columns item_id, label) under the pool's landing prefix, for "
        "the evaluation's label figures; without it, a `label` column of the drops is used",
    )
    eval_sample: int = Field(
        default=100_000,
        ge=1,
        description="most members of a subset (and of each random draw) whose vectors an "
        "evaluation reads; a larger subset is evaluated on a seeded sample of this size",
    )
    eval_random_draws: int = Field(
        default=5,
        ge=2,
        le=50,
        description="seeded uniform random subsets a subset's evaluation compares with: their "
        "spread decides whether a difference is noise ('no better than random'); each draw "
        "is read after the previous one is freed (more time, not more memory)",
    )
    stall_after_ticks: int = Field(
        default=4,
        ge=1,
        description="automation ticks after which an update (a drop's assignments, a "
        "takedown) that a subset has not yet consumed turns the subset's `includes_every_drop` "
        "check red, naming the drop",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return naming.check_name(value, "pool name")

    @field_validator("landing_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return _relative_path(value, "landing_prefix")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: str | None) -> str | None:
        return _relative_path(value, "labels")

    @model_validator(mode="before")
    @classmethod
    def _metric_follows_the_embedder(cls, data: Any) -> Any:
        """hierarchy.metric unset (or null): the metric the pool's embedding space is made for
        (EmbedderSpec.metric by modality: cosine for images and texts, l2 for precomputed
        vectors), resolved here once, so the tree, drift and evaluation see 'l2' or 'cosine'.
        A metric the pool sets, 'l2' included, is kept as it is."""
        from .embedding.factory import SPACE_METRICS

        if not isinstance(data, dict):
            return data
        kind = EMBEDDER_KIND.get(data.get("modality", "vectors"))
        hierarchy = data.get("hierarchy")
        if kind is None:  # an unknown modality: its own validation names it
            return data
        if isinstance(hierarchy, dict) and hierarchy.get("metric") is None:
            return {**data, "hierarchy": {**hierarchy, "metric": SPACE_METRICS[kind]}}
        if isinstance(hierarchy, HierarchyConfig) and "metric" not in hierarchy.model_fields_set:
            resolved = hierarchy.model_copy(update={"metric": SPACE_METRICS[kind]})
            return {**data, "hierarchy": resolved}
        return data

    @model_validator(mode="after")
    def _embedder_options(self) -> PoolConfig:
        """The options are EmbedderSpec's fields, checked (names and values) at load time."""
        from pydantic import ValidationError

        from .embedding.factory import EmbedderSpec

        if self.modality == "vectors":  # options describe the producer; no embedder runs
            return self
        known = set(EmbedderSpec.model_fields) - {"kind", "model"}
        unknown = sorted(set(self.embedder.options) - known)
        if unknown:
            raise ValueError(
                f"pool {self.name!r}: unknown embedder option(s) {unknown} "
                f"(known: {', '.join(sorted(known))})"
            )
        try:
            EmbedderSpec(**self.embedder_fields())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}={e.get('input')!r}: {e['msg']}"
                for e in exc.errors())
            raise ValueError(f"pool {self.name!r}: invalid embedder option(s): {problems}") \
                from None
        return self

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
        kind = EMBEDDER_KIND[self.modality]
        model = None if self.embedder.model == "precomputed" else self.embedder.model
        return {"kind": kind, "model": model, **self.embedder.options}

    def table(self, kind: str) -> str:
        """LanceDB table name of this pool's `kind` (raw, embeddings, level_1, subset_x, ...)."""
        return naming.table(self.name, kind)


class PoolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[PoolConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PoolsFile:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pool names {names}")
        for i, a in enumerate(self.pools):
            for b in self.pools[i + 1 :]:
                pa, pb = a.prefix.strip("/").split("/"), b.prefix.strip("/").split("/")
                n = min(len(pa), len(pb))
                if pa[:n] == pb[:n]:
                    raise ValueError(
                        f"pools {a.name!r} and {b.name!r} share the landing prefix "
                        f"{'/'.join(pa[:n])!r} (landing_prefix {a.prefix!r} and {b.prefix!r}): "
                        "each pool needs a folder of its own"
                    )
        return self


def _unique_key_loader():
    """A yaml SafeLoader that rejects a mapping with the same key twice (PyYAML keeps the last
    one silently), naming the key and both lines."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if first is not None:
                raise ValueError(
                    f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                    f"(first at line {first + 1})"
                )
            seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    return UniqueKeyLoader


def load_pools(path: str | Path | None = None) -> list[PoolConfig]:
    """Pools from `path`, else $CURATION_POOLS, else the bundled demo file (.yaml/.yml/.json)."""
    path = Path(path or os.environ.get("CURATION_POOLS") or BUNDLED_POOLS)
    if not path.exists():
        raise FileNotFoundError(f"pools file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
        except ValueError as exc:
            raise ValueError(f"invalid pools file {path}: {exc}") from None
    elif path.suffix == ".json":

        def unique(pairs):
            keys = [k for k, _ in pairs]
            dups = sorted({k for k in keys if keys.count(k) > 1})
            if dups:
                raise ValueError(f"invalid pools file {path}: duplicate key(s) {dups}")
            return dict(pairs)

        data = json.loads(text, object_pairs_hook=unique)
    else:
        raise ValueError(f"pools file {path}: use .yaml, .yml or .json")
    try:
        return PoolsFile.model_validate(data).pools
    except ValueError as exc:
        raise ValueError(f"invalid pools file {path}: {exc}") from None

