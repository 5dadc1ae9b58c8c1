"""Test kit: a small real platform (temp landing folder, LanceDB, Dagster instance) and helpers
to read its materialisations. The fixtures that build it live in conftest.py."""

from __future__ import annotations

from curation.config import HierarchyConfig
from curation.pools import PoolConfig, SubsetSpec
from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop

DIM = 8
# How many of a drop's items carry a `label` column value (Platform(labels=...)): every one,
# every other one (the rest null), or none (no column at all: a web-scale SSL pool).
LABELLINGS = ("all", "some", "none")


def small_pool(**overrides) -> PoolConfig:
    values = dict(
        name="tiny",
        modality="vectors",
        dim=DIM,
        hierarchy=HierarchyConfig(n_clusters=[12, 3], resampling_steps=[2], max_iter=20,
                                  seed=0, device="cpu"),
        subsets=[SubsetSpec(name="even", target_size=200, strategy="random", seed=1),
                 SubsetSpec(name="core", target_size=60, strategy="closest", seed=0)],
        refit={"max_added_fraction": 0.9, "max_distance_ratio": 3.0},
        health={"max_empty_fraction": 0.5, "max_cluster_share": 0.9},
    )
    values.update(overrides)
    return PoolConfig(**values)


class Platform:
    """A pool wired to real resources under tmp_path, with helpers to land and run drops."""

    def __init__(self, tmp_path, instance, pool: PoolConfig, landing_storage=None,
                 lancedb=None, labels: str = "all"):
        """`landing_storage` / `lancedb` replace the local folders under tmp_path (e.g. S3);
        `land` still writes drops under tmp_path/landing (upload them from `folder(drop)`).
        `labels` (LABELLINGS): which of the landed items carry a label."""
        if labels not in LABELLINGS:
            raise ValueError(f"labels must be one of {LABELLINGS}, got {labels!r}")
        self.labels = labels
        from curation_dags.definitions import build_definitions
        from resources.clustering import ClusteringResource
        from resources.lancedb import LanceDBResource
        from resources.storage import LandingStorage

        self.pool, self.instance = pool, instance
        self.landing = tmp_path / "landing"
        self.lancedb = lancedb or LanceDBResource(uri=str(tmp_path / "lancedb"))
        resources = {
            "landing": landing_storage or LandingStorage(url=str(self.landing)),
            "lancedb": self.lancedb,
            "clustering": ClusteringResource(device="cpu"),
        }
        self.resources = resources
        self.defs = build_definitions([pool], resources, with_sensors=False)
        self.next_seed = 100

    def reconfigure(self, pool: PoolConfig) -> None:
        """Serve a changed config of the same pool (same storage and instance)."""
        from curation_dags.definitions import build_definitions

        self.pool = pool
        self.defs = build_definitions([pool], self.resources, with_sensors=False)

    def folder(self, drop: str):
        return self.landing / self.pool.prefix / drop

    def land(self, drop: str, n: int = 300, shift: float = 0.0, ids: list[str] | None = None):
        """A good drop of `n` vectors of the pool's mixture (optionally shifted far away),
        labelled as the platform's `labels` say."""
        self.next_seed += 1
        x, labels = fixed_mixture_draw(n, DIM, self.next_seed)
        import pyarrow as pa

        ids = ids or [f"{drop}-{i}" for i in range(n)]
        extra = {}
        if self.labels == "all":
            extra = {"label": pa.array(labels)}
        elif self.labels == "some":  # odd rows null: no label for them
            extra = {"label": pa.array([int(v) if i % 2 == 0 else None
                                        for i, v in enumerate(labels)], pa.int64())}
        write_vector_drop(self.folder(drop), x + shift, ids, extra)
        return drop

    # In-process steps for asset-level tests. The live path (sensors, automation, daemon) is
    # tested end to end in test_live.py; these helpers call the same sensor functions.
    def run(self, names: list[list[str]], **kwargs):
        from dagster import AssetKey, materialize

        assets = list(self.defs.resolve_asset_graph().assets_defs)
        return materialize(assets, instance=self.instance, raise_on_error=False,
                           selection=[AssetKey(n) for n in names], **kwargs)

    def ingest(self, drop: str):
        """Register the drop and run raw + embeddings for it."""
        self.instance.add_dynamic_partitions(f"{self.pool.name}_drops", [drop])
        return self.run([[self.pool.name, "raw"], [self.pool.name, "embeddings"]],
                        partition_key=drop)

    def refresh(self, drops: list[str], refit: str = "auto") -> dict:
        """What the platform does next, step by step: the drops are assigned to the current
        tree (their drop run, once a tree exists); the refit sensor ticks and its fit runs
        when it asks for one (or `refit="force"`), then every drop is assigned again in one
        run; the subsets follow. Returns the runs by name and the refit sensor's answer."""
        from dagster import AssetKey, SensorResult, build_sensor_context

        from curation_dags.refit import evaluate_refit

        name = self.pool.name
        levels = [[name, f"level_{lv}"] for lv in range(1, self.pool.hierarchy.n_levels + 1)]
        top = AssetKey(levels[-1])
        out = {"assignments": [], "fit": None, "tick": None}
        if self.instance.get_latest_materialization_event(top) is not None:
            out["assignments"] = [self.run([[name, "assignments"]], partition_key=d)
                                  for d in drops]
        tags = None
        if refit == "force":
            tags = {"curation/refit": "force"}
        else:
            out["tick"] = evaluate_refit(build_sensor_context(instance=self.instance), self.pool,
                                         self.lancedb)
            if isinstance(out["tick"], SensorResult) and out["tick"].run_requests:
                tags = dict(out["tick"].run_requests[0].tags)
        if tags is not None:
            out["fit"] = self.run(levels, tags=tags)
            ordered = self.instance.get_dynamic_partitions(f"{name}_drops")
            # after a fit every partition is assigned again: here in one run over the range
            # (the platform: a backfill of runs of refit.drops_per_run drops)
            out["assignments"].append(self.run([[name, "assignments"]], tags={
                "dagster/asset_partition_range_start": ordered[0],
                "dagster/asset_partition_range_end": ordered[-1]}))
        out["subsets"] = self.run([[name, "subsets", s.name] for s in self.pool.subsets])
        runs = [r for r in (out["fit"], *out["assignments"]) if r is not None]
        # "results": the fit first when there was one, the subsets last
        return {**out, "refit": tags is not None, "results": [*runs, out["subsets"]]}

    def table(self, kind: str):
        return self.lancedb.open(self.pool.table(kind))

    def rows(self, kind: str, where: str | None = None) -> int:
        table = self.table(kind)
        return 0 if table is None else table.count_rows(where)


def materialized(result, key_path: list[str]) -> list:
    """Materialisations of one asset in an ExecuteInProcessResult."""
    return [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.path == key_path
    ]


def meta(materialization) -> dict:
    return {k: v.value for k, v in materialization.metadata.items()}
