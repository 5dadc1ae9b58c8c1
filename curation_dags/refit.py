"""`<pool>_refit_sensor`: asks for a new tree when the pool's refit policy says so.

Each tick reads the latest fit's scalars (`<pool>__fits`, no tree blob) and the assignment
log of that fit (`<pool>__assignment_log`, one row per drop assigned since), decides with
`curation.refit.decide_refit`, and requests one run of every level when a (re)fit is due. A
drop that the policy lets through never runs the levels: it is assigned to the current tree.

One fit at a time per pool: no request while a fit of the pool is queued or running. A due fit
also waits while drops of the pool are being ingested, at most `refit.max_wait_for_drops_s`
(a steady stream of drops must not starve it). The
run key names the fit it replaces and the data it saw, so a tick never asks twice for the
same refit, and a failed fit is asked for again once more data arrived.
"""

from __future__ import annotations

import time
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


def in_flight(instance: dg.DagsterInstance, pool_name: str) -> tuple[bool, int]:
    """(a fit of the pool is queued or running, number of its drop runs in flight)."""
    runs = instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={POOL_TAG: pool_name}), limit=1000
    )
    tags = [r.dagster_run.tags for r in runs]
    return any(FIT_TAG in t for t in tags), sum(DROP_TAG in t for t in tags)


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


def evaluate_refit(context: dg.SensorEvaluationContext, pool: PoolConfig, lancedb: Any,
                   now: float | None = None):
    """One tick of a pool's refit sensor (separate from the decorator for tests). The cursor
    holds when the pending fit was first found due (empty: none is)."""
    name = pool.name
    now = time.time() if now is None else now
    fitting, ingesting = in_flight(context.instance, name)
    if fitting:
        return dg.SkipReason(f"pool {name}: not now, a fit is queued or running")
    fit = latest_fit_summary(lancedb, pool)
    pool_items = 0
    if fit is None:
        embeddings = lancedb.open(pool.table("embeddings"))
        pool_items = embeddings.count_rows() if embeddings is not None else 0
        drift = DriftSummary()
    else:
        drift = drift_since_fit(lancedb, pool, fit.fit_version)
    decision = decide_refit(pool.refit, fit, drift, pool_items, pool.hierarchy.n_clusters[0],
                            config=pool.hierarchy.model_dump_json())
    if not decision.refit:
        return dg.SensorResult(skip_reason=f"pool {name}: no refit ({decision.reason})",
                               cursor="")
    due_since = float(context.cursor) if context.cursor else now
    waited = now - due_since
    if ingesting and waited < pool.refit.max_wait_for_drops_s:
        return dg.SensorResult(
            skip_reason=f"pool {name}: a fit is due ({decision.reason}); not now, {ingesting} "
            f"drop run(s) in flight (waited {waited:.0f} s of at most "
            f"{pool.refit.max_wait_for_drops_s} s)",
            cursor=repr(due_since),
        )
    seen = drift.new_items + drift.mismatched_items if fit else pool_items
    run_key = f"{name}:after-fit-{fit.fit_version if fit else 0}:{seen}"
    if "config_changed" in decision.numbers:  # one fit per config asked for
        from curation.hashing import json_sha256

        run_key += f":config-{json_sha256(pool.hierarchy.model_dump(mode='json'))[:12]}"
    context.log.info(f"pool {name}: asking for a fit: {decision.reason} {decision.numbers}"
                     + (f" after waiting {waited:.0f} s for {ingesting} drop run(s)"
                        if ingesting else ""))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                asset_selection=hierarchy_keys(pool),
                tags={POOL_TAG: name, FIT_TAG: name, REASON_TAG: decision.reason},
            )
        ],
        cursor="",
    )


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
