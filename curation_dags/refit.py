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

The decision (`decide_refit_run`) is a plain function of the runs in flight, the fit state and
the cursor; the sensor only gathers them (`in_flight`, `read_fit_state`) and asks it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg

from assets.keys import level_keys
from curation import naming
from curation.naming import DROP_TAG, FIT_TAG, POOL_TAG, REASON_TAG
from curation.pools import PoolConfig
from curation.refit import DriftSummary, FitSummary, decide_refit
from curation_dags.settings import gpu_run_tags
from resources.lancedb import LanceDBResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def pool_runs_in_flight(instance: dg.DagsterInstance, pool_name: str) -> list[dg.DagsterRun]:
    """The pool's runs that are queued or running."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={POOL_TAG: pool_name}), limit=1000
    )
    return [r.dagster_run for r in records]


def in_flight(instance: dg.DagsterInstance, pool_name: str) -> tuple[bool, int]:
    """(a fit of the pool is queued or running, number of its drop runs in flight)."""
    tags = [run.tags for run in pool_runs_in_flight(instance, pool_name)]
    return any(FIT_TAG in t for t in tags), sum(DROP_TAG in t for t in tags)


@dataclass(frozen=True)
class FitState:
    """What the refit policy reads of a pool's tables: the latest fit (None: no tree yet),
    the drift since it, the items embedded (counted only before the first fit)."""

    fit: FitSummary | None
    drift: DriftSummary
    pool_items: int = 0


def drift_since_fit(store, fit_version: int) -> DriftSummary:
    """The assignment log of the current fit, added up (O(drops since the fit))."""
    import pyarrow.compute as pc

    log = store.assignment_log(
        ["items", "new_items", "new_distance_sum", "mismatched_items", "other_model"],
        where=f"fit_version = {int(fit_version)}",
    )
    if log is None or log.num_rows == 0:
        return DriftSummary()
    models = pc.split_pattern(log["other_model"], ",").combine_chunks().flatten()
    return DriftSummary(
        drops=log.num_rows,
        items=pc.sum(log["items"]).as_py(),
        new_items=pc.sum(log["new_items"]).as_py(),
        new_distance_sum=float(pc.sum(log["new_distance_sum"]).as_py()),
        mismatched_items=pc.sum(log["mismatched_items"]).as_py(),
        other_models={m for m in pc.unique(models).to_pylist() if m},
    )


def read_fit_state(lancedb: LanceDBResource, pool: PoolConfig) -> FitState:
    store = lancedb.store(pool.name)
    fit = store.latest_fit_summary()
    if fit is not None:
        return FitState(fit, drift_since_fit(store, fit.fit_version))
    return FitState(None, DriftSummary(), store.count("embeddings"))


@dataclass(frozen=True)
class RefitTick:
    """One tick of a refit sensor: a run to ask for (`run_key`, with `reason`), or a skip;
    `cursor` None leaves the cursor as it is."""

    run_key: str | None
    reason: str
    cursor: str | None
    log: str | None = None


def decide_refit_run(pool: PoolConfig, *, fitting: bool, ingesting: int, state: FitState | None,
                     cursor: str | None, now: float) -> RefitTick:
    """Plain inputs: whether a fit of the pool is queued or running, how many of its drop runs
    are, the fit state (None when not read: a fit is in flight) and the cursor (when the
    pending fit was first found due; empty: none is). The refit policy (curation.refit) says
    whether a fit is due; a due fit waits for the drop runs in flight, at most
    refit.max_wait_for_drops_s. The run key names the fit it replaces and the data it saw."""
    name = pool.name
    if fitting or state is None:
        return RefitTick(None, f"pool {name}: not now, a fit is queued or running", None)
    fit, drift = state.fit, state.drift
    decision = decide_refit(pool.refit, fit, drift, state.pool_items,
                            pool.hierarchy.n_clusters[0], config=pool.hierarchy.model_dump_json())
    if not decision.refit:
        return RefitTick(None, f"pool {name}: no refit ({decision.reason})", "")
    due_since = float(cursor) if cursor else now
    waited = now - due_since
    if ingesting and waited < pool.refit.max_wait_for_drops_s:
        return RefitTick(
            None, f"pool {name}: a fit is due ({decision.reason}); not now, {ingesting} "
            f"drop run(s) in flight (waited {waited:.0f} s of at most "
            f"{pool.refit.max_wait_for_drops_s} s)", repr(due_since))
    seen = drift.new_items + drift.mismatched_items if fit else state.pool_items
    run_key = f"{name}:after-fit-{fit.fit_version if fit else 0}:{seen}"
    if "config_changed" in decision.numbers:  # one fit per config asked for
        from curation.hashing import json_sha256

        run_key += f":config-{json_sha256(pool.hierarchy.model_dump(mode='json'))[:12]}"
    log = (f"pool {name}: asking for a fit: {decision.reason} {decision.numbers}"
           + (f" after waiting {waited:.0f} s for {ingesting} drop run(s)" if ingesting else ""))
    return RefitTick(run_key, decision.reason, "", log)


def evaluate_refit(context: dg.SensorEvaluationContext, pool: PoolConfig,
                   lancedb: LanceDBResource, now: float | None = None):
    """One tick of a pool's refit sensor: gathers the runs in flight and the fit state, asks
    `decide_refit_run`, turns the answer into a run request or a skip."""
    fitting, ingesting = in_flight(context.instance, pool.name)
    tick = decide_refit_run(
        pool, fitting=fitting, ingesting=ingesting,
        state=None if fitting else read_fit_state(lancedb, pool),
        cursor=context.cursor, now=time.time() if now is None else now)
    if tick.log:
        context.log.info(tick.log)
    if tick.run_key is None:
        if tick.cursor is None:
            return dg.SkipReason(tick.reason)
        return dg.SensorResult(skip_reason=tick.reason, cursor=tick.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=tick.run_key,
            asset_selection=level_keys(pool),
            tags={POOL_TAG: pool.name, FIT_TAG: pool.name, REASON_TAG: tick.reason,
                  **gpu_run_tags()},
        )],
        cursor=tick.cursor,
    )


def build_refit_sensor(pool: PoolConfig, minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=naming.refit_sensor(pool.name),
        description=f"Asks for a new tree of pool {pool.name!r} when its refit policy says so "
        "(first fit, added fraction, distance ratio, embedding model changed).",
        target=level_keys(pool),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _refit_sensor(context: dg.SensorEvaluationContext, lancedb: LanceDBResource):
        return evaluate_refit(context, pool, lancedb)

    return _refit_sensor
