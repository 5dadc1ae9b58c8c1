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
  assignments; the subsets follow by automation. Pending rows wait while a takedowns run of
  the pool is in flight (it applies them). The drop sensor ignores ``_takedowns``.
- ``<pool>_refit_schedule`` (one per pool with ``refit.cron``): materialises the hierarchy assets
  with the refit forced.
- ``curation_run_failure_sensor``: logs pool, drop partition, failed steps and their errors.

Every sensor is a decision plus a thin shell: ``decide_drops``, ``decide_takedowns`` and
``decide_stall_reports`` are plain functions of plain inputs (the listing, the registered drops,
the cursor, ...) returning what to request, log and keep; the sensor body gathers those inputs
from its resources (declared as parameters) and the instance, and turns the decision into
RunRequests or a skip reason. Everything is RUNNING by default, so ``dagster dev`` starts it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import dagster as dg

from assets.automation import placed_in_current_tree
from assets.keys import (
    drop_run_keys,
    ingest_keys,
    level_keys,
    refresh_keys,
    subset_key,
    takedowns_key,
)
from assets.partitions import drops_partitions
from curation import naming
from curation.landing import TAKEDOWNS_FOLDER, content_fingerprint, drop_id_problem
from curation.naming import DROP_TAG, FIT_TAG, POOL_TAG, REASON_TAG, REFIT_TAG
from curation.pools import PoolConfig
from curation_dags.settings import gpu_run_tags, sensor_interval_s
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

# A tick must finish well inside Dagster's sensor timeout (60 s): local drops are hashed for the
# duplicate-content check, so stop hashing after this long and carry on at the next tick.
FINGERPRINT_BUDGET_S = 20.0
MAX_NEW_DROPS_PER_TICK = 200
EMPTY_FINGERPRINT = content_fingerprint([])

Log = tuple[str, str]  # (level: "info", "warning" or "error", message) for the sensor's log


def _log_all(context: dg.SensorEvaluationContext, logs: Iterable[Log]) -> None:
    for level, message in logs:
        getattr(context.log, level)(message)


# ---- instance state the sensors decide from ----------------------------------------------------
def has_tree(instance: dg.DagsterInstance, pool: PoolConfig) -> bool:
    return instance.get_latest_materialization_event(level_keys(pool)[-1]) is not None


def embedded(instance: dg.DagsterInstance, pool: PoolConfig, drop: str) -> bool:
    """The drop's embeddings partition was materialised (its items are in the pool)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ingest_keys(pool)[1], asset_partitions=[drop]), limit=1)
    return bool(records.records)


def tree_settled(instance: dg.DagsterInstance, pool: PoolConfig) -> bool:
    """The pool's items are all placed in the latest tree: every drop with embeddings was
    assigned after the latest fit (however many runs the re-assignment backfill takes, it
    counts as the fit in flight until its last drop is placed), and no fit is queued or
    running. Only then may a drop's run refresh the subsets: before, the rows of the older fit
    are excluded and a refresh would publish a subset of the re-assigned drops alone (the
    subsets refuse such a snapshot anyway: assets.subsets)."""
    from curation_dags.refit import in_flight

    if not placed_in_current_tree(instance, level_keys(pool)[0], ingest_keys(pool)[1],
                                  drop_run_keys(pool)[2]):
        return False
    return not in_flight(instance, pool.name)[0]


# ---- drop sensor: the decision -----------------------------------------------------------------
class LandedDrop(NamedTuple):
    """One folder under a pool's landing prefix, as listed at a tick."""

    drop_id: str
    problem: str | None = None  # why it can never be a drop (invalid id, symlink out)
    marker: str | None = None  # stamp of its _SUCCESS marker; None: no marker (incomplete)


class _Cursor:
    """Drop sensor state kept between ticks (JSON): content fingerprints of registered drops,
    and the names already reported (invalid, duplicate, incomplete) so each is logged once."""

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


@dataclass(frozen=True)
class DropDecision:
    """One tick of a drop sensor: the drops to register (one run each), what to log, the
    cursor to keep."""

    new: list[str]
    logs: list[Log]
    cursor: str


def decide_drops(
    pool_name: str,
    cursor: str | None,
    landed: list[LandedDrop],
    registered: set[str],
    *,
    fingerprint: Callable[[str], str],
    ingested: Callable[[str], bool],
    dedupe_content: bool = True,
    fingerprint_budget_s: float = FINGERPRINT_BUDGET_S,
    max_new: int = MAX_NEW_DROPS_PER_TICK,
    clock: Callable[[], float] = time.monotonic,
) -> DropDecision:
    """Which landed drops to register at this tick. Plain inputs: the listing, the registered
    drop ids, `fingerprint(drop)` (content hash, read only when needed: it costs a pass over
    the files) and `ingested(drop)` (its embeddings materialised). A drop is registered once
    it has its marker, unless its content is that of a drop already ingested; names that
    cannot be drops are reported once; a registered drop whose marker was written again with
    other files is reported as an error, never re-ingested."""
    state = _Cursor(cursor)
    logs: list[Log] = []
    present = {d.drop_id for d in landed}
    # forget reports about folders that went away, so a re-created folder is reported again
    state.reported = {d: r for d, r in state.reported.items() if d in present}
    started = clock()

    def report_once(drop_id: str, reason: str, level: str = "warning") -> None:
        if state.reported.get(drop_id) != reason:
            logs.append((level, f"pool {pool_name}: drop {drop_id!r} skipped: {reason}"))
            state.reported[drop_id] = reason

    def check_redelivery(drop_id: str, stamp: str | None) -> None:
        known = state.delivered.get(drop_id)
        if known is None:  # registered before this cursor kept stamps: the baseline is now
            state.delivered[drop_id] = [None, stamp]
            return
        if stamp is None or stamp == known[1]:
            return
        if clock() - started > fingerprint_budget_s:
            return  # hash it at a later tick
        fp = fingerprint(drop_id)
        if known[0] is not None and fp != known[0] and state.reported.get(drop_id) != (
                CHANGED_CONTENT):
            logs.append(("error", f"pool {pool_name}: drop {drop_id!r} {CHANGED_CONTENT}"))
            state.reported[drop_id] = CHANGED_CONTENT
        state.delivered[drop_id] = [known[0] or fp, stamp]

    new: list[str] = []
    for drop_id, problem, stamp in landed:
        if drop_id in registered:
            check_redelivery(drop_id, stamp)
            continue
        if problem is not None:
            report_once(drop_id, problem)
            continue
        if state.reported.get(drop_id, "").startswith("same content"):
            continue  # decided at an earlier tick
        if stamp is None:
            report_once(drop_id, "incomplete (no _SUCCESS yet); will register it once complete",
                        level="info")
            continue
        if len(new) >= max_new or (
                dedupe_content and new and clock() - started > fingerprint_budget_s):
            logs.append(("info", f"pool {pool_name}: more new drops than one tick handles; "
                                 "next tick"))
            break
        content = None
        if dedupe_content:
            content = fingerprint(drop_id)
            # no data files: nothing to compare (raw reports it)
            key = f"empty:{drop_id}" if content == EMPTY_FINGERPRINT else content
            original = state.fingerprints.get(key)
            # content counts as seen only once it was ingested (its drop's embeddings
            # materialised): a drop deleted before that, then delivered again under another
            # id, is registered again, so nothing delivered is lost
            if original not in (None, drop_id) and original in registered and ingested(original):
                report_once(drop_id, f"same content as drop {original!r} (re-delivery)")
                continue
            state.fingerprints[key] = drop_id
        state.delivered[drop_id] = [content, stamp]
        state.reported.pop(drop_id, None)
        new.append(drop_id)
    if new:
        logs.append(("info", f"pool {pool_name}: registering {len(new)} new drop(s): "
                             f"{', '.join(new)}"))
    return DropDecision(new=new, logs=logs, cursor=state.dump())


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
    without_subsets = [k for k in drop_run_keys(pool) if k not in refresh_keys(pool)]
    if not refresh_subsets:
        return [without_subsets] * n_drops
    return [without_subsets] * (n_drops - 1) + [drop_run_keys(pool)] * min(n_drops, 1)


# ---- drop sensor: the shell --------------------------------------------------------------------
def landed_drops(storage: LandingStorage, registered: set[str]) -> list[LandedDrop]:
    """The folders under a pool's landing prefix (the takedowns folder left out), with what the
    decision needs of each: one stat or HEAD of the marker per drop, never the files."""
    out = []
    for drop_id in storage.list_drop_ids():
        if drop_id == TAKEDOWNS_FOLDER:  # takedown files: the takedowns sensor's
            continue
        if drop_id in registered:
            out.append(LandedDrop(drop_id, marker=storage.marker_stamp(drop_id)))
            continue
        problem = drop_id_problem(drop_id)
        problem = (f"invalid drop id: {problem}" if problem is not None
                   else storage.drop_problem(drop_id))
        out.append(LandedDrop(drop_id, problem,
                              None if problem is not None else storage.marker_stamp(drop_id)))
    return out


def evaluate_drops(
    context: dg.SensorEvaluationContext,
    pool: PoolConfig,
    storage: LandingStorage,
    *,
    dedupe_content: bool = True,
    fingerprint_budget_s: float = FINGERPRINT_BUDGET_S,
    max_new: int = MAX_NEW_DROPS_PER_TICK,
) -> dg.SensorResult:
    """One tick of a pool's drop sensor: gathers the listing and the instance's state, asks
    `decide_drops`, and turns the answer into partitions and run requests."""
    name = pool.name
    partitions_def = drops_partitions(name)
    pool_storage = storage.child(pool.prefix)
    registered = set(context.instance.get_dynamic_partitions(partitions_def.name))
    decision = decide_drops(
        name, context.cursor, landed_drops(pool_storage, registered), registered,
        fingerprint=pool_storage.fingerprint,
        ingested=lambda drop: embedded(context.instance, pool, drop),
        dedupe_content=dedupe_content, fingerprint_budget_s=fingerprint_budget_s,
        max_new=max_new)
    _log_all(context, decision.logs)
    if not decision.new:
        return dg.SensorResult(skip_reason=f"no new complete drops for pool {name}",
                               cursor=decision.cursor)
    selections = drop_run_selections(pool, len(decision.new), has_tree(context.instance, pool),
                                     refresh_subsets=tree_settled(context.instance, pool))
    drop_gpu_tags = gpu_run_tags() if pool.modality != "vectors" else {}  # a model embeds
    return dg.SensorResult(
        dynamic_partitions_requests=[partitions_def.build_add_request(decision.new)],
        run_requests=[
            dg.RunRequest(run_key=f"{name}:{drop_id}", partition_key=drop_id,
                          asset_selection=selection, tags={POOL_TAG: name, DROP_TAG: drop_id,
                                                           **drop_gpu_tags})
            for drop_id, selection in zip(decision.new, selections, strict=True)
        ],
        cursor=decision.cursor,
    )


def build_drop_sensor(pool: PoolConfig, *, minimum_interval_seconds: int | None = None,
                      dedupe_content: bool = True) -> dg.SensorDefinition:
    name = pool.name

    @dg.sensor(
        name=naming.drops_sensor(name),
        description=f"Registers complete drops under the landing prefix of pool {name!r} as "
        f"partitions of {naming.drops_partitions(name)} and materialises {name}/raw and "
        f"{name}/embeddings for them "
        "(and their assignments once a tree exists).",
        target=drop_run_keys(pool),
        minimum_interval_seconds=minimum_interval_seconds or sensor_interval_s(),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _drop_sensor(context: dg.SensorEvaluationContext,
                     landing: LandingStorage) -> dg.SensorResult:
        return evaluate_drops(context, pool, landing, dedupe_content=dedupe_content)

    return _drop_sensor


# ---- stall sensor ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StallDecision:
    """Which subsets' `includes_every_drop` outcomes to report (those that changed)."""

    reports: list[dict]
    logs: list[Log]
    cursor: str


def decide_stall_reports(pool_name: str, cursor: str | None,
                         outcomes: dict[str, dict]) -> StallDecision:
    """`outcomes`: {subset: the check's outcome (assets.freshness.stall_outcome)} for the
    subsets materialised at least once. An outcome is reported when it differs from the last
    one reported for its subset (passed, the drops named); a red one is logged as an error."""
    reported: dict[str, str] = json.loads(cursor) if cursor else {}
    reports, logs = [], []
    for subset, outcome in outcomes.items():
        state = json.dumps([outcome["passed"], outcome["metadata"]["stalled"]])
        if reported.get(subset) == state:
            continue
        reported[subset] = state
        if not outcome["passed"]:
            logs.append(("error", f"pool {pool_name}: {outcome['description']}"))
        reports.append(outcome)
    return StallDecision(reports, logs, json.dumps(reported, sort_keys=True))


def evaluate_stalls(context: dg.SensorEvaluationContext, pool: PoolConfig,
                    tick_s: int) -> dg.SensorResult:
    """One tick of a pool's stall sensor: reports each subset's `includes_every_drop` check
    without a run, whenever its outcome changed. A subset never materialised yet is not judged
    (the first fit is under way)."""
    from assets.freshness import stall_outcome

    outcomes = {
        spec.name: stall_outcome(context.instance, pool, spec.name, tick_s)
        for spec in pool.subsets
        if context.instance.get_latest_materialization_event(subset_key(pool, spec.name))
    }
    decision = decide_stall_reports(pool.name, context.cursor, outcomes)
    _log_all(context, decision.logs)
    if not decision.reports:
        return dg.SensorResult(skip_reason=f"pool {pool.name}: no change", cursor=decision.cursor)
    return dg.SensorResult(asset_events=[dg.AssetCheckEvaluation(**o) for o in decision.reports],
                           cursor=decision.cursor)


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
class TakedownFile(NamedTuple):
    """A file under `<prefix>/_takedowns/`, as listed (LandingStorage.takedown_files)."""

    name: str
    uri: str
    size: int
    tag: str  # content tag (ETag, sha256), or why it is refused


@dataclass(frozen=True)
class TakedownDecision:
    """One tick of a takedowns sensor: the files to apply (one run each, keyed by content),
    the audit version whose pending rows get a run, what to log, the cursor."""

    files: list[tuple[str, str]]  # (file name, content fingerprint)
    pending_run: int | None
    logs: list[Log] = field(default_factory=list)
    cursor: str = ""


def decide_takedowns(
    pool_name: str,
    cursor: str | None,
    listed: list[TakedownFile] | None,
    hidden: list[str],
    *,
    parse: Callable[[TakedownFile], list],
    pending_audit: int | None,
    run_in_flight: bool = False,
) -> TakedownDecision:
    """Plain inputs: the listing (None: it failed, try again next tick), the hidden names found
    there, `parse(file)` (its rows; raises on a bad file), the audit-table version when
    rows recorded by `curate takedown` wait (None: none do) and whether a run of the pool's
    takedowns is queued or running. Each file is handled once per (name, content): a good one
    gets a run, a bad one is logged and left alone until its content changes. Pending rows get
    one run per audit version, unless a file's run (which applies them too) is asked for
    anyway, or a run in flight will apply them: a file's run records its rows pending before
    it stamps them, so they are seen pending while it runs. Such a version is looked at again
    once that run ended (still pending: it was killed, or the rows came after its purge)."""
    data = json.loads(cursor) if cursor else {}
    done: dict[str, str] = dict(data.get("done", {}))
    pending_seen = data.get("pending_version")
    logs: list[Log] = []
    files = []
    for file in listed or []:
        fp = content_fingerprint([(file.name, file.size, file.tag)])
        if done.get(file.name) == fp:
            continue
        done[file.name] = fp  # handled once per content, good or bad
        try:
            if file.tag.startswith("refused"):
                raise ValueError(file.tag)
            rows = parse(file)
        except Exception as exc:
            logs.append(("warning", f"pool {pool_name}: takedown file {file.name!r} skipped: "
                                    f"{exc}"))
            continue
        logs.append(("info", f"pool {pool_name}: takedown file {file.name!r}: {len(rows)} rows"))
        files.append((file.name, fp))
    if listed is not None:  # forget files that went away
        names = {f.name for f in listed}
        done = {f: fp for f, fp in done.items() if f in names}
    hidden_seen = set(data.get("hidden", []))
    hidden_now = set(hidden) if listed is not None else hidden_seen
    logs += [("warning", f"pool {pool_name}: takedown file {name!r} not applied: a name "
                         "starting with '.' is a hidden or temporary file (an upload in "
                         "progress); rename it without the dot")
             for name in sorted(hidden_now - hidden_seen)]
    pending_run = None
    if pending_audit is not None and not run_in_flight:
        if pending_audit != pending_seen and not files:
            pending_run = pending_audit
        pending_seen = pending_audit
    cursor = json.dumps({"done": done, "pending_version": pending_seen,
                         "hidden": sorted(hidden_now)}, sort_keys=True, ensure_ascii=True)
    return TakedownDecision(files, pending_run, logs, cursor)


def takedowns_in_flight(instance: dg.DagsterInstance, pool: PoolConfig) -> bool:
    """A run of the pool's takedowns asset is queued or running."""
    from curation_dags.refit import pool_runs_in_flight

    key = takedowns_key(pool)
    runs = pool_runs_in_flight(instance, pool.name)
    return any(key in (run.asset_selection or ()) for run in runs)


def evaluate_takedowns(context: dg.SensorEvaluationContext, pool: PoolConfig,
                       storage: LandingStorage, lancedb: LanceDBResource) -> dg.SensorResult:
    """One tick of a pool's takedowns sensor: lists the takedown files and reads whether
    recorded takedowns wait, asks `decide_takedowns`, turns the answer into run requests.
    Errors are logged, never raised."""
    from curation.takedowns import parse_takedown_file

    name = pool.name
    hidden: list[str] = []
    try:
        listed = [TakedownFile(*f) for f in storage.child(pool.prefix).takedown_files(hidden)]
    except Exception as exc:  # storage unreachable: try again next tick
        context.log.error(f"pool {name}: cannot list takedown files: {exc}")
        listed = None
    # read before the table: a run that ends in between leaves its rows stamped, not pending
    running = takedowns_in_flight(context.instance, pool)
    try:
        store = lancedb.store(name)
        pending_audit = store.audit_version() if store.pending_takedowns() else None
    except Exception as exc:
        context.log.error(f"pool {name}: cannot read pending takedowns: {exc}")
        pending_audit = None
    decision = decide_takedowns(
        name, context.cursor, listed, hidden, pending_audit=pending_audit, run_in_flight=running,
        parse=lambda file: parse_takedown_file(file.name, storage.read_bytes(file.uri)))
    _log_all(context, decision.logs)
    op = naming.op_name(naming.asset_path(name, "takedowns"))
    requests = [
        dg.RunRequest(run_key=f"{name}:takedown:{file}:{fp}", asset_selection=[takedowns_key(pool)],
                      run_config={"ops": {op: {"config": {"files": [file]}}}},
                      tags={POOL_TAG: name})
        for file, fp in decision.files
    ]
    if decision.pending_run is not None:
        requests.append(dg.RunRequest(run_key=f"{name}:takedowns-pending:{decision.pending_run}",
                                      asset_selection=[takedowns_key(pool)],
                                      tags={POOL_TAG: name}))
    if not requests:
        return dg.SensorResult(skip_reason=f"no new takedowns for pool {name}",
                               cursor=decision.cursor)
    return dg.SensorResult(run_requests=requests, cursor=decision.cursor)


def build_takedowns_sensor(pool: PoolConfig, *,
                           minimum_interval_seconds: int | None = None) -> dg.SensorDefinition:
    name = pool.name

    @dg.sensor(
        name=naming.takedowns_sensor(name),
        description=f"Picks up takedown files under <landing prefix of {name!r}>/_takedowns/ "
        f"and takedowns recorded by `curate takedown`, and materialises {name}/takedowns.",
        target=[takedowns_key(pool)],
        minimum_interval_seconds=minimum_interval_seconds or sensor_interval_s(),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _takedowns_sensor(context: dg.SensorEvaluationContext, landing: LandingStorage,
                          lancedb: LanceDBResource) -> dg.SensorResult:
        return evaluate_takedowns(context, pool, landing, lancedb)

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
    """The pool's periodic refit (None when refit.cron is null).

    refit.cron has one validator: Dagster's, here, where the expression is read. Dagster does
    not export it, so building the schedule is the check; a cron it rejects fails this pool's
    schedule only. A second grammar in the core (which cannot import Dagster) drifted from it:
    it accepted "0 3 31 2 *", which Dagster rejects, and refused "@yearly"."""
    cron = pool.refit.cron
    if not cron:
        return None
    name = pool.name
    try:
        return dg.ScheduleDefinition(
            name=naming.refit_schedule(name),
            cron_schedule=cron,
            target=level_keys(pool),
            run_config=refit_run_config(pool),
            tags={REFIT_TAG: "force", POOL_TAG: name, FIT_TAG: name,
                  REASON_TAG: "refit schedule", **gpu_run_tags()},
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Periodic refit of the hierarchy of pool {name!r} ({cron}).",
        )
    except dg.DagsterInvalidDefinitionError as exc:
        return _failing_refit_schedule(
            pool, f"refit.cron {cron!r} is not a valid cron expression: {exc}")


def _failing_refit_schedule(pool: PoolConfig, error: str) -> dg.ScheduleDefinition:
    """Stands in for the refit schedule of a pool whose refit.cron is invalid: every tick fails
    with the error (shown on the schedule in the UI, logged by the daemon); the code location
    and every other pool are unaffected."""
    name = pool.name
    message = f"pool {name!r}: {error}; fix it in the pools config"

    @dg.schedule(
        name=naming.refit_schedule(name),
        cron_schedule="0 * * * *",
        target=level_keys(pool),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"INVALID: {message}",
    )
    def _invalid_refit(context: dg.ScheduleEvaluationContext):
        raise dg.Failure(description=message)

    return _invalid_refit
