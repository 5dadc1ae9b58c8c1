"""Sensors and schedules of the code location.

- ``<pool>_drops_sensor`` (one per pool): registers each new *complete* drop found under the pool's
  landing prefix as a dynamic partition of ``<pool>_drops`` and requests one run for it:
  ``[pool, "raw"]`` + ``[pool, "embeddings"]``, and once a tree exists also the drop's
  ``[pool, "assignments"]`` and the refresh of the subsets (``drop_run_selections``); the
  evaluations and the report follow by their automation conditions. A drop without
  ``_SUCCESS`` waits for a later tick. A drop id already
  registered, or a drop whose files are the same as an already registered drop's, is skipped
  (no partition, no run). Folder names that are not valid drop ids (not UTF-8, '..', ...) and
  drop folders that are symlinks out of the landing folder are skipped with a reason logged
  once; they never block the pool's other drops. A drop id is immutable once registered: a
  registered drop whose files change (seen when its _SUCCESS marker is written again) is
  reported once, as an error, and not re-ingested; deliver corrections under a new drop id.
- ``<pool>_takedowns_sensor`` (one per pool): a takedown file landed under
  ``<prefix>/_takedowns/`` (each handled once per name and content; a bad one logged with its
  reason) or takedowns recorded by ``curate takedown`` (pending) request a run of
  ``[pool, "takedowns"]``, which records them and deletes the items from raw, embeddings and
  assignments; the subsets follow by automation. The drop sensor ignores ``_takedowns``.
- ``<pool>_refit_schedule`` (one per pool with ``refit.cron``): materialises the hierarchy assets
  with the refit forced.
- ``curation_run_failure_sensor``: logs pool, drop partition, failed steps and their errors.

Everything is RUNNING by default, so ``dagster dev`` starts it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg

from assets.keys import (
    drop_run_keys,
    hierarchy_keys,
    ingest_keys,
    subset_key,
    subset_keys,
    takedowns_key,
)
from assets.partitions import drops_partitions
from curation import naming
from curation.landing import TAKEDOWNS_FOLDER, content_fingerprint, drop_id_problem
from curation.naming import DROP_TAG, FIT_TAG, POOL_TAG, REASON_TAG, REFIT_TAG
from curation.pools import PoolConfig
from curation_dags.settings import sensor_interval_s

LANDING_RESOURCE_KEY = "landing"
DEFAULT_REFIT_CRON = "0 3 * * 0"  # Sundays 03:00
# A tick must finish well inside Dagster's sensor timeout (60 s): local drops are hashed for the
# duplicate-content check, so stop hashing after this long and carry on at the next tick.
FINGERPRINT_BUDGET_S = 20.0
MAX_NEW_DROPS_PER_TICK = 200
EMPTY_FINGERPRINT = content_fingerprint([])


def has_tree(instance: dg.DagsterInstance, pool: PoolConfig) -> bool:
    return instance.get_latest_materialization_event(hierarchy_keys(pool)[-1]) is not None


def embedded(instance: dg.DagsterInstance, pool: PoolConfig, drop: str) -> bool:
    """The drop's embeddings partition was materialised (its items are in the pool)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ingest_keys(pool)[1], asset_partitions=[drop]), limit=1)
    return bool(records.records)


def tree_settled(instance: dg.DagsterInstance, pool: PoolConfig) -> bool:
    """The pool's items are all placed in the latest tree: an assignment run ended after the
    latest fit (after a fit every drop is re-assigned in one run) and no fit is queued or
    running. Only then may a drop's run refresh the subsets: before, the rows of the older fit
    are excluded and a refresh would publish a subset of the re-assigned drops alone."""
    from curation_dags.refit import in_flight

    top, assignments = hierarchy_keys(pool)[-1], drop_run_keys(pool)[2]
    ids = {r.asset_entry.asset_key: r.asset_entry.last_materialization_storage_id or 0
           for r in instance.get_asset_records([top, assignments])}
    if not ids.get(top) or ids.get(assignments, 0) < ids[top]:
        return False
    return not in_flight(instance, pool.name)[0]


# ---- drop sensor -------------------------------------------------------------------------------
class _Cursor:
    """Sensor state kept between ticks (JSON): content fingerprints of registered drops, and the
    names already reported (invalid, duplicate, incomplete) so each is logged once."""

    def __init__(self, text: str | None):
        data = json.loads(text) if text else {}
        self.fingerprints: dict[str, str] = dict(data.get("fingerprints", {}))
        self.reported: dict[str, str] = dict(data.get("reported", {}))
        # registered drop -> [content fingerprint at registration (or None), marker stamp]
        self.delivered: dict[str, list] = dict(data.get("delivered", {}))

    def dump(self) -> str:
        # ensure_ascii: folder names that are not UTF-8 (surrogate escapes) stay storable
        return json.dumps(
            {
                "fingerprints": self.fingerprints,
                "reported": self.reported,
                "delivered": self.delivered,
            },
            sort_keys=True,
            ensure_ascii=True,
        )


CHANGED_CONTENT = (
    "re-delivered with changed content under the same drop id: not re-ingested (a drop id is "
    "immutable once registered; deliver the corrected files under a new drop id)"
)


def evaluate_drops(
    context: dg.SensorEvaluationContext,
    pool: PoolConfig,
    storage: Any,
    *,
    dedupe_content: bool = True,
    fingerprint_budget_s: float = FINGERPRINT_BUDGET_S,
    max_new: int = MAX_NEW_DROPS_PER_TICK,
) -> dg.SensorResult:
    """One tick of a pool's drop sensor (separate from the decorator for tests)."""
    name = pool.name
    partitions_def = drops_partitions(pool.name)
    pool_storage = storage.child(pool.prefix)
    cursor = _Cursor(context.cursor)
    registered = set(context.instance.get_dynamic_partitions(partitions_def.name))

    present = pool_storage.list_drop_ids()
    # forget reports about folders that went away, so a re-created folder is reported again
    cursor.reported = {d: r for d, r in cursor.reported.items() if d in present}

    def report_once(drop_id: str, reason: str, level: str = "warning") -> None:
        if cursor.reported.get(drop_id) != reason:
            getattr(context.log, level)(f"pool {name}: drop {drop_id!r} skipped: {reason}")
            cursor.reported[drop_id] = reason

    def check_redelivery(drop_id: str) -> None:
        """A registered drop whose marker was written again: same files, or a report."""
        known = cursor.delivered.get(drop_id)
        stamp = pool_storage.marker_stamp(drop_id)
        if known is None:  # registered before this cursor kept stamps: the baseline is now
            cursor.delivered[drop_id] = [None, stamp]
            return
        if stamp is None or stamp == known[1]:
            return
        if time.monotonic() - started > fingerprint_budget_s:
            return  # hash it at a later tick
        fp = pool_storage.fingerprint(drop_id)
        if known[0] is not None and fp != known[0]:
            if cursor.reported.get(drop_id) != CHANGED_CONTENT:
                context.log.error(f"pool {name}: drop {drop_id!r} {CHANGED_CONTENT}")
                cursor.reported[drop_id] = CHANGED_CONTENT
        cursor.delivered[drop_id] = [known[0] or fp, stamp]

    new: list[str] = []
    started = time.monotonic()
    for drop_id in present:
        if drop_id == TAKEDOWNS_FOLDER:  # takedown files: the takedowns sensor's
            continue
        if drop_id in registered:
            check_redelivery(drop_id)
            continue
        problem = drop_id_problem(drop_id)
        if problem is not None:
            report_once(drop_id, f"invalid drop id: {problem}")
            continue
        problem = pool_storage.drop_problem(drop_id)
        if problem is not None:
            report_once(drop_id, problem)
            continue
        if drop_id in cursor.reported and cursor.reported[drop_id].startswith("same content"):
            continue  # decided at an earlier tick
        if not pool_storage.is_complete(drop_id):
            report_once(
                drop_id,
                "incomplete (no _SUCCESS yet); will register it once complete",
                level="info",
            )
            continue
        if len(new) >= max_new or (
            dedupe_content and new and time.monotonic() - started > fingerprint_budget_s
        ):
            context.log.info(f"pool {name}: more new drops than one tick handles; next tick")
            break
        if dedupe_content:
            fp = pool_storage.fingerprint(drop_id)
            if fp == EMPTY_FINGERPRINT:  # no data files: nothing to compare (raw reports it)
                fp = f"empty:{drop_id}"
            original = cursor.fingerprints.get(fp)
            # content counts as seen only once it was ingested (its drop's embeddings
            # materialised): a drop deleted before that, then delivered again under another
            # id, is registered again, so nothing delivered is lost
            if (original not in (None, drop_id) and original in registered
                    and embedded(context.instance, pool, original)):
                report_once(drop_id, f"same content as drop {original!r} (re-delivery)")
                continue
            cursor.fingerprints[fp] = drop_id
        content = None
        if dedupe_content:
            content = EMPTY_FINGERPRINT if fp.startswith("empty:") else fp
        cursor.delivered[drop_id] = [content, pool_storage.marker_stamp(drop_id)]
        cursor.reported.pop(drop_id, None)
        new.append(drop_id)

    if not new:
        return dg.SensorResult(
            skip_reason=f"no new complete drops for pool {name}", cursor=cursor.dump()
        )
    context.log.info(f"pool {name}: registering {len(new)} new drop(s): {', '.join(new)}")
    return dg.SensorResult(
        dynamic_partitions_requests=[partitions_def.build_add_request(new)],
        run_requests=[
            dg.RunRequest(
                run_key=f"{name}:{drop_id}",
                partition_key=drop_id,
                asset_selection=selection,
                tags={POOL_TAG: name, DROP_TAG: drop_id},
            )
            for drop_id, selection in zip(new, drop_run_selections(
                pool, len(new), has_tree(context.instance, pool),
                refresh_subsets=tree_settled(context.instance, pool)), strict=True)
        ],
        cursor=cursor.dump(),
    )


def drop_run_selections(pool: PoolConfig, n_drops: int, tree: bool,
                        refresh_subsets: bool = True) -> list[list[dg.AssetKey]]:
    """What each of the `n_drops` runs registered at one tick materialises.

    Once a tree exists a drop's whole path is one run: ingest, assign, refresh the subsets
    (no second run, no wait for an automation tick). Drops registered together refresh the
    subsets once, in the last run asked for; the subsets' automation condition catches any
    drop whose run ends after that refresh (assets.automation), and takes over while a fit
    or the re-assignment after it is pending (`refresh_subsets` false, see tree_settled).
    Before the first fit the assignments wait for the tree and follow it by automation."""
    if not tree:
        return [ingest_keys(pool)] * n_drops
    without_subsets = [k for k in drop_run_keys(pool) if k not in subset_keys(pool)]
    if not refresh_subsets:
        return [without_subsets] * n_drops
    return [without_subsets] * (n_drops - 1) + [drop_run_keys(pool)] * min(n_drops, 1)


def build_drop_sensor(
    pool: PoolConfig,
    *,
    landing_key: str = LANDING_RESOURCE_KEY,
    minimum_interval_seconds: int | None = None,
    dedupe_content: bool = True,
) -> dg.SensorDefinition:
    name = pool.name
    if minimum_interval_seconds is None:
        minimum_interval_seconds = sensor_interval_s()

    @dg.sensor(
        name=naming.drops_sensor(name),
        description=f"Registers complete drops under the landing prefix of pool {name!r} as "
        f"partitions of {naming.drops_partitions(name)} and materialises {name}/raw and "
        f"{name}/embeddings for them "
        "(and their assignments once a tree exists).",
        target=drop_run_keys(pool),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={landing_key},
    )
    def _drop_sensor(context: dg.SensorEvaluationContext, **resources) -> dg.SensorResult:
        storage = resources.get(landing_key) or getattr(context.resources, landing_key)
        return evaluate_drops(context, pool, storage, dedupe_content=dedupe_content)

    return _drop_sensor


# ---- stall sensor ------------------------------------------------------------------------------
def evaluate_stalls(context: dg.SensorEvaluationContext, pool: PoolConfig,
                    tick_s: int) -> dg.SensorResult:
    """One tick of a pool's stall sensor (separate from the decorator for tests): reports each
    subset's `includes_every_drop` check without a run, whenever its outcome (passed, drops
    named) changed. A subset never materialised yet is not judged (the first fit is under
    way)."""
    from assets.freshness import stall_outcome

    reported: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    events = []
    for spec in pool.subsets:
        if context.instance.get_latest_materialization_event(subset_key(pool, spec.name)) is None:
            continue
        outcome = stall_outcome(context.instance, pool, spec.name, tick_s)
        state = json.dumps([outcome["passed"], outcome["metadata"]["stalled"]])
        if reported.get(spec.name) == state:
            continue
        reported[spec.name] = state
        if not outcome["passed"]:
            context.log.error(f"pool {pool.name}: {outcome['description']}")
        events.append(dg.AssetCheckEvaluation(**outcome))
    cursor = json.dumps(reported, sort_keys=True)
    if not events:
        return dg.SensorResult(skip_reason=f"pool {pool.name}: no change", cursor=cursor)
    return dg.SensorResult(asset_events=events, cursor=cursor)


def build_stall_sensor(pool: PoolConfig, tick_s: int,
                       minimum_interval_seconds: int | None = None) -> dg.SensorDefinition:
    @dg.sensor(
        name=naming.stall_sensor(pool.name),
        description=f"Reports the `includes_every_drop` check of every subset of {pool.name!r}: "
        f"red when a drop's assignments or a takedown wait more than "
        f"{pool.stall_after_ticks} automation ticks for a subsets refresh.",
        minimum_interval_seconds=minimum_interval_seconds or tick_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _stall_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate_stalls(context, pool, tick_s)

    return _stall_sensor


# ---- takedowns sensor ---------------------------------------------------------------------------
def evaluate_takedowns(
    context: dg.SensorEvaluationContext, pool: PoolConfig, storage: Any, lancedb: Any
) -> dg.SensorResult:
    """One tick of a pool's takedowns sensor (separate from the decorator for tests).

    Each file under `<prefix>/_takedowns/` is handled once per (name, content fingerprint):
    a good one gets a run of [pool, "takedowns"] that records and applies it; a bad one is
    logged with its reason and left alone until its content changes. Rows recorded by the CLI
    (pending) get one run per audit-table version. Errors are logged, never raised."""
    from curation.takedowns import parse_takedown_file, pending_takedowns

    name = pool.name
    data = json.loads(context.cursor) if context.cursor else {}
    done: dict[str, str] = dict(data.get("done", {}))
    pending_seen = data.get("pending_version")
    requests, files, hidden_now = [], [], []
    try:
        present = storage.child(pool.prefix).takedown_files(hidden_now)
    except Exception as exc:  # storage unreachable: try again next tick
        context.log.error(f"pool {name}: cannot list takedown files: {exc}")
        present = None
    for file, uri, size, tag in present or []:
        fp = content_fingerprint([(file, size, tag)])
        if done.get(file) == fp:
            continue
        done[file] = fp  # handled once per content, good or bad
        try:
            if tag.startswith("refused"):
                raise ValueError(tag)
            rows = parse_takedown_file(file, storage.read_bytes(uri))
        except Exception as exc:
            context.log.warning(f"pool {name}: takedown file {file!r} skipped: {exc}")
            continue
        context.log.info(f"pool {name}: takedown file {file!r}: {len(rows)} rows")
        files.append(file)
        requests.append(dg.RunRequest(
            run_key=f"{name}:takedown:{file}:{fp}",
            asset_selection=[takedowns_key(pool)],
            run_config={"ops": {naming.op_name(naming.asset_path(name, "takedowns")):
                                {"config": {"files": [file]}}}},
            tags={POOL_TAG: name},
        ))
    done = {f: fp for f, fp in done.items() if present is None or f in {p[0] for p in present}}
    hidden_seen = set(data.get("hidden", []))
    hidden = set(hidden_now) if present is not None else hidden_seen
    for file in sorted(hidden - hidden_seen):
        context.log.warning(
            f"pool {name}: takedown file {file!r} not applied: a name starting with '.' is a "
            "hidden or temporary file (an upload in progress); rename it without the dot")
    try:
        db = lancedb.connect()
        audit = None
        if pending_takedowns(db, name):
            audit = db.open_table(naming.table(name, "takedowns")).version
        if audit is not None and audit != pending_seen and not requests:
            requests.append(dg.RunRequest(
                run_key=f"{name}:takedowns-pending:{audit}",
                asset_selection=[takedowns_key(pool)],
                tags={POOL_TAG: name},
            ))
        pending_seen = audit if audit is not None else pending_seen
    except Exception as exc:
        context.log.error(f"pool {name}: cannot read pending takedowns: {exc}")
    cursor = json.dumps({"done": done, "pending_version": pending_seen,
                         "hidden": sorted(hidden)}, sort_keys=True, ensure_ascii=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"no new takedowns for pool {name}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def build_takedowns_sensor(
    pool: PoolConfig,
    *,
    landing_key: str = LANDING_RESOURCE_KEY,
    minimum_interval_seconds: int | None = None,
) -> dg.SensorDefinition:
    name = pool.name
    if minimum_interval_seconds is None:
        minimum_interval_seconds = sensor_interval_s()

    @dg.sensor(
        name=naming.takedowns_sensor(name),
        description=f"Picks up takedown files under <landing prefix of {name!r}>/_takedowns/ "
        f"and takedowns recorded by `curate takedown`, and materialises {name}/takedowns.",
        target=[takedowns_key(pool)],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={landing_key, "lancedb"},
    )
    def _takedowns_sensor(context: dg.SensorEvaluationContext, **resources) -> dg.SensorResult:
        storage = resources.get(landing_key) or getattr(context.resources, landing_key)
        lancedb = resources.get("lancedb") or context.resources.lancedb
        return evaluate_takedowns(context, pool, storage, lancedb)

    return _takedowns_sensor


# ---- run failure sensor -------------------------------------------------------------------------
def _root_message(error: Any) -> str:
    """The innermost cause's message: the user's exception, not Dagster's step wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return " ".join(str(error.message).split())


def describe_failure(context: dg.RunFailureSensorContext) -> str:
    """One readable line for a failed run: pool, drop partition, failed steps and errors."""
    run = context.dagster_run
    tags = run.tags or {}
    failures = context.get_step_failure_events()
    pools = {key.path[0] for key in (run.asset_selection or []) if key.path}
    if not pools:  # asset op steps are named <pool>__<asset>
        pools = {e.step_key.split("__")[0] for e in failures if e.step_key and "__" in e.step_key}
    pool = tags.get(POOL_TAG) or ",".join(sorted(pools)) or "?"
    partition = tags.get("dagster/partition") or tags.get(DROP_TAG) or "-"
    steps = []
    for event in failures:
        error = getattr(event.event_specific_data, "error", None)
        message = _root_message(error) if error is not None else (event.message or "")
        steps.append(f"step {event.step_key} failed: {message}")
    if not steps:
        steps.append(f"run failure: {context.failure_event.message or 'no message'}")
    return (
        f"run {run.run_id} failed (job {run.job_name}, pool {pool}, drop partition {partition}): "
        + " | ".join(steps)
    )


@dg.run_failure_sensor(
    name="curation_run_failure_sensor",
    description="Logs pool, drop partition, failed steps and errors of every failed run.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def curation_run_failure_sensor(context: dg.RunFailureSensorContext) -> None:
    context.log.error(describe_failure(context))


# ---- refit schedule ----------------------------------------------------------------------------
def refit_run_config(pool: PoolConfig) -> dict:
    """Run config forcing the refit: level_1 fits the whole tree anew even when no drop changed
    (assets.levels.RefitConfig); the upper levels serve that fit. The run also carries the tag
    curation/refit=force, which level_1 reads when its config says "auto"."""
    level_1 = naming.op_name(naming.level_path(pool.name, 1))
    return {"ops": {level_1: {"config": {"refit": "force"}}}}


def build_refit_schedule(pool: PoolConfig) -> dg.ScheduleDefinition | None:
    refit = getattr(pool, "refit", None)
    cron = getattr(refit, "cron", DEFAULT_REFIT_CRON) if refit is not None else DEFAULT_REFIT_CRON
    if not cron:
        return None  # refit.cron: null disables the periodic refit
    name = pool.name
    error = getattr(refit, "cron_error", None)
    if error is None:
        try:
            return dg.ScheduleDefinition(
                name=naming.refit_schedule(name),
                cron_schedule=cron,
                target=hierarchy_keys(pool),
                run_config=refit_run_config(pool),
                tags={REFIT_TAG: "force", POOL_TAG: name, FIT_TAG: name,
                      REASON_TAG: "refit schedule"},
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"Periodic refit of the hierarchy of pool {name!r} ({cron}).",
            )
        except dg.DagsterInvalidDefinitionError as exc:  # a cron Dagster reads differently
            error = f"refit.cron {cron!r} is not a valid cron expression: {exc}"
    return _failing_refit_schedule(pool, error)


def _failing_refit_schedule(pool: PoolConfig, error: str) -> dg.ScheduleDefinition:
    """Stands in for the refit schedule of a pool whose refit.cron is invalid: every tick fails
    with the error (shown on the schedule in the UI, logged by the daemon); the code location
    and every other pool are unaffected."""
    name = pool.name
    message = f"pool {name!r}: {error}; fix it in the pools config"

    @dg.schedule(
        name=naming.refit_schedule(name),
        cron_schedule="0 * * * *",
        target=hierarchy_keys(pool),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"INVALID: {message}",
    )
    def _invalid_refit(context: dg.ScheduleEvaluationContext):
        raise dg.Failure(description=message)

    return _invalid_refit
