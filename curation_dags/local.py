"""Materialise a pool's graph in-process (demo, tests, benchmark): what automation would run.

`ingest_drop` runs one drop's partition of raw and embeddings (with their checks);
`refresh` runs level_1 (refit only if due), the upper levels when level_1 refitted, the
assignments of the given drops, then the subsets. A drop that fails does not stop the others.
`evaluate` runs every subset's evaluation, then the pool's HTML report.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, Definitions, materialize

from curation.pools import PoolConfig


def _assets(defs: Definitions) -> list:
    graph = defs.resolve_asset_graph()
    return list(graph.assets_defs)


def _run(defs: Definitions, instance: DagsterInstance, keys: list[AssetKey], **kwargs):
    selection = list(keys)
    return materialize(
        _assets(defs), instance=instance, selection=selection, raise_on_error=False, **kwargs
    )


def ingest_drop(defs: Definitions, instance: DagsterInstance, pool: PoolConfig, drop: str):
    """Register the drop as a partition and run raw + embeddings for it. Returns the result."""
    instance.add_dynamic_partitions(f"{pool.name}_drops", [drop])
    keys = [AssetKey([pool.name, "raw"]), AssetKey([pool.name, "embeddings"])]
    return _run(defs, instance, keys, partition_key=drop)


def refresh(defs: Definitions, instance: DagsterInstance, pool: PoolConfig, drops: list[str],
            refit: str = "auto") -> dict:
    """Fit or assign, then subsets. Returns {'refit': bool, 'results': [...]}."""
    name = pool.name
    levels = [AssetKey([name, f"level_{lv}"]) for lv in range(1, pool.hierarchy.n_levels + 1)]
    config = {"ops": {f"{name}__level_1": {"config": {"refit": refit}}}}
    first = _run(defs, instance, levels, run_config=config)
    did_refit = any(
        e.event_specific_data.materialization.asset_key == levels[0]
        for e in first.get_asset_materialization_events()
    )
    results = [first]
    assignments = [AssetKey([name, "assignments"])]
    results += [_run(defs, instance, assignments, partition_key=drop) for drop in drops]
    subsets = [AssetKey([name, "subsets", s.name]) for s in pool.subsets]
    results.append(_run(defs, instance, subsets))
    return {"refit": did_refit, "results": results}


def evaluate(defs: Definitions, instance: DagsterInstance, pool: PoolConfig) -> list:
    """Every subset's evaluation, then the report. Returns the two results."""
    evaluations = [AssetKey([pool.name, "evaluation", s.name]) for s in pool.subsets]
    return [_run(defs, instance, evaluations),
            _run(defs, instance, [AssetKey([pool.name, "report"])])]
