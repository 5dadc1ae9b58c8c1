"""`<pool>_refit_sensor`: asks for a new tree when the pool's refit policy says so.

Each tick reads the latest fit's scalars (`<pool>__fits`, no tree blob) and the assignment
log of that fit (`<pool>__assignment_log`, one row per drop assigned since), decides with
`curation.refit.decide_refit`, and requests one run of every level when a (re)fit is due. A
drop that the policy lets through never runs the levels: it is assigned to the current tree.

One fit at a time per pool: no request while a fit of the pool is queued or running, nor while
drops of the pool are being ingested. The
run key names the fit it replaces and the data it saw, so a tick never asks twice for the
same refit, and a failed fit is asked for again once more data arrived.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from assets.keys import hierarchy_keys
from assets.tables import latest_fit_summary
from curation import naming
from curation.naming import DROP_TAG, FIT_TAG, POOL_TAG, REASON_TAG
from curation.pools import PoolConfig
from curation.refit import DriftSummary, decide_refit

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def busy(instance: dg.DagsterInstance, pool_name: str) -> str | None:
    """Why a fit should wait now: a fit of the pool is queued or running, or drops of the pool
    are being ingested (a fit waits for the drops in flight, so drops landed together are
    fitted together whatever order their runs finish in)."""
    runs = instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={POOL_TAG: pool_name}), limit=1000
    )
    tags = [r.dagster_run.tags for r in runs]
    if any(FIT_TAG in t for t in tags):
        return "a fit is queued or running"
    ingesting = sum(DROP_TAG in t for t in tags)
    if ingesting:
        return f"{ingesting} drop run(s) in flight"
    return None


def drift_since_fit(lancedb: Any, pool: PoolConfig, fit_version: int) -> DriftSummary:
    """The assignment log of the current fit, added up (O(drops since the fit))."""
    drift = DriftSummary()
    log = lancedb.read(
        pool.table("assignment_log"),
        ["items", "new_items", "new_distance_sum", "mismatched_items", "other_model"],
        where=f"fit_version = {int(fit_version)}",
    )
    if log is None:
        return drift
    for row in log.to_pylist():
        drift.drops += 1
        drift.items += row["items"]
        drift.new_items += row["new_items"]
        drift.new_distance_sum += row["new_distance_sum"]
        drift.mismatched_items += row["mismatched_items"]
        drift.other_models.update(m for m in row["other_model"].split(",") if m)
    return drift


def evaluate_refit(context: dg.SensorEvaluationContext, pool: PoolConfig, lancedb: Any):
    """One tick of a pool's refit sensor (separate from the decorator for tests)."""
    name = pool.name
    waiting = busy(context.instance, name)
    if waiting:
        return dg.SkipReason(f"pool {name}: not now, {waiting}")
    fit = latest_fit_summary(lancedb, pool)
    pool_items = 0
    if fit is None:
        embeddings = lancedb.open(pool.table("embeddings"))
        pool_items = embeddings.count_rows() if embeddings is not None else 0
        drift = DriftSummary()
    else:
        drift = drift_since_fit(lancedb, pool, fit.fit_version)
    decision = decide_refit(pool.refit, fit, drift, pool_items, pool.hierarchy.n_clusters[0])
    if not decision.refit:
        return dg.SkipReason(f"pool {name}: no refit ({decision.reason})")
    seen = drift.new_items + drift.mismatched_items if fit else pool_items
    run_key = f"{name}:after-fit-{fit.fit_version if fit else 0}:{seen}"
    context.log.info(f"pool {name}: asking for a fit: {decision.reason} {decision.numbers}")
    return dg.SensorResult(run_requests=[
        dg.RunRequest(
            run_key=run_key,
            asset_selection=hierarchy_keys(pool),
            tags={POOL_TAG: name, FIT_TAG: name, REASON_TAG: decision.reason},
        )
    ])


def build_refit_sensor(pool: PoolConfig, minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=naming.refit_sensor(pool.name),
        description=f"Asks for a new tree of pool {pool.name!r} when its refit policy says so "
        "(first fit, added fraction, distance ratio, embedding model changed).",
        target=hierarchy_keys(pool),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"lancedb"},
    )
    def _refit_sensor(context: dg.SensorEvaluationContext):
        return evaluate_refit(context, pool, context.resources.lancedb)

    return _refit_sensor
