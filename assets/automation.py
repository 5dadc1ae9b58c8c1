"""Declarative automation: every asset follows its upstream without clicks.

- raw and embeddings have no condition: the drop sensor runs them together for each new drop,
  and re-embedding after a model change is a backfill (curate backfill). An eager condition
  here re-requested a drop's embeddings in the moment between the sensor adding the partition
  and its run starting, so a drop was sometimes embedded twice;
- assignments (per drop) follow their drop's embeddings, and every partition follows a new
  tree (a refit); they wait until a tree exists and their drop's blocking checks passed;
- fan-in assets (subsets, evaluations, the report) follow a *state*, not an event: they are
  requested whenever an upstream asset holds data newer than what they last consumed
  (`upstream_newer_than_consumed`), and wait while a run of an upstream asset is in flight.
  The subsets follow the assignments and the takedowns, not the tree: after a refit the tree
  is new before the items are re-assigned to it, and the re-assignment is what they wait for;
- the tree itself (level_1) has no condition: the refit sensor asks for it when the refit
  policy says so (curation_dags.refit), the upper levels follow level_1.

Why a state and not `eager()`: `eager()` is `(newly_missing | any_deps_updated).since(handled)`,
an event seen at one tick. When a dependency's update and the asset's own materialisation land
in the same evaluation window, the reset wins, the update counts as handled and nothing re-arms
the condition until another dependency updates: the last drop of a burst could wait forever
(seen live at 30 s ticks). Data versions do not help either: Dagster stops propagating staleness
past 100 upstream partitions, and a pool has more drops than that.

So every fan-in asset records, when its step starts, the newest event-log id among the
materialisations of its upstream assets (metadata `consumed_upstream_event`): everything up to
that id was committed to LanceDB before the asset read it, because an asset's materialisation
event is written after its data. The condition compares that id with the newest upstream
materialisation now, so it holds until the asset has consumed everything, however the ticks
fall. A run that planned the asset and failed counts as having consumed what was there when it
was planned, so a failing refresh is not requested again at every tick: the next upstream
update, a retry from the UI, or run retries (crashed workers) re-arm it; the stall check
(`assets.freshness`) shows red meanwhile.

Cost per tick: one asset-records query for the asset and its parents, one for its latest
planned materialisation, plus one run lookup while that plan is newer than the last
materialisation: O(parents), not O(drops).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster import AssetKey, AssetSelection, AutomationCondition

FOLLOW = AutomationCondition.eager()
CONSUMED_KEY = "consumed_upstream_event"  # metadata: newest upstream event id read by a run


def assignments_condition(tree_key: AssetKey) -> AutomationCondition:
    """A drop's assignments follow its embeddings (`eager`), and every drop whose assignment
    predates the current tree is placed in it again (`AssignedBeforeTheTree`, a state); both
    wait for the drop's blocking checks. The state catches what the event misses: a drop whose
    run ended in the same tick window as the new tree's levels (eager's reset wins there), or
    whose run started before the fit (it re-checks the tree, curation.drops.assign_drops)."""
    stale = (AssignedBeforeTheTree(tree_key) & ~AutomationCondition.in_progress()
             & ~AutomationCondition.any_deps_in_progress()
             & ~AutomationCondition.execution_failed()).with_label(
        "assigned before the current tree, not in flight, did not fail")
    return ((AutomationCondition.eager() | stale)
            & AutomationCondition.all_deps_blocking_checks_passed())


class AssignedBeforeTheTree(AutomationCondition):
    """True for the partitions (drops) of an assignments asset whose latest materialisation
    is older than the tree's (`tree_key`: level_1, materialised right after the fit's commit).

    From the event log alone: the drops materialised at all, less those materialised after
    the tree's event (two partition queries per tick, O(drops)); no table is read. A run that
    placed a drop in the new tree but ended between the fit's commit and level_1's event counts
    as older: placed once more, harmless. Evaluated in the code server."""

    def __init__(self, tree_key: AssetKey):
        self._tree_key = tree_key

    @property
    def name(self) -> str:
        return "assigned_before_the_tree"

    @property
    def description(self) -> str:
        return "The drop's assignment is older than the current tree (level_1's materialisation)"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance
        tree_event = newest_upstream_event(instance, [self._tree_key])
        older = set()
        if tree_event:
            older = (instance.get_materialized_partitions(context.key)
                     - instance.get_materialized_partitions(context.key, after_cursor=tree_event))
        true_subset = context.candidate_subset.compute_intersection_with_partition_keys(older)
        return dg.AutomationResult(true_subset=true_subset, context=context)


# ---- what a fan-in asset consumed ------------------------------------------------------------
def newest_upstream_event(instance: dg.DagsterInstance, keys: Iterable[AssetKey]) -> int:
    """The event-log id of the newest materialisation of any of `keys` (any partition), 0 when
    none was materialised. Called by a fan-in asset when its step starts (what it consumes) and
    by the condition (what there is now)."""
    keys = list(keys)
    if not keys:
        return 0
    return max((r.asset_entry.last_materialization_storage_id or 0
                for r in instance.get_asset_records(keys)), default=0)


def consumed_metadata(context: dg.AssetExecutionContext, keys: Iterable[AssetKey]) -> dict:
    """Metadata a fan-in asset adds to its materialisation: what it consumed (read it first
    thing in the step, before reading any table)."""
    return {CONSUMED_KEY: newest_upstream_event(context.instance, keys)}


@dataclass(frozen=True)
class RefreshState:
    """What the condition decides from (event-log ids; 0 = none)."""

    newest_upstream: int  # newest materialisation of an upstream asset now
    consumed: int  # newest upstream event the asset's latest materialisation read
    attempted: int  # planned materialisation of a run that ended without materialising it
    in_flight: bool  # a run that planned the asset has not finished

    @property
    def due(self) -> bool:
        return not self.in_flight and self.newest_upstream > max(self.consumed, self.attempted)


def refresh_state(instance: dg.DagsterInstance, key: AssetKey,
                  upstream: Sequence[AssetKey]) -> RefreshState:
    records = {r.asset_entry.asset_key: r.asset_entry
               for r in instance.get_asset_records([key, *upstream])}
    newest = max((records[k].last_materialization_storage_id or 0
                  for k in upstream if k in records), default=0)
    entry = records.get(key)
    consumed = attempted = 0
    in_flight = False
    materialized = entry.last_materialization_record if entry is not None else None
    if materialized is not None:
        value = materialized.asset_materialization.metadata.get(CONSUMED_KEY)
        # materialised before this key was recorded (or by hand): its own event id
        consumed = value.value if value is not None else materialized.storage_id
    # (the asset record's own planned-event fields are not kept by every storage: ask)
    planned = instance.get_latest_planned_materialization_info(key)
    if planned is not None and planned.storage_id > (
            materialized.storage_id if materialized is not None else 0):
        run = instance.get_run_by_id(planned.run_id)
        if run is not None and not run.is_finished:
            in_flight = True
        else:
            attempted = planned.storage_id
    return RefreshState(newest, consumed, attempted, in_flight)


class UpstreamNewerThanConsumed(AutomationCondition):
    """True while an upstream asset (but those in `ignore`) holds a materialisation newer than
    the latest one this asset consumed, and no run that planned this asset is in flight.

    Evaluated in the code server (the automation sensors set use_user_code_server)."""

    def __init__(self, ignore: Iterable[AssetKey] = ()):
        self._ignore = frozenset(AssetKey.from_coercible(k) for k in ignore)

    @property
    def name(self) -> str:
        return "upstream_newer_than_consumed"

    @property
    def description(self) -> str:
        return ("An upstream asset holds data newer than what this asset last consumed "
                "(event-log ids), and no run of this asset is in flight")

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        key = context.key
        upstream = sorted(context.asset_graph.get(key).parent_entity_keys - self._ignore,
                          key=lambda k: k.to_user_string())
        state = refresh_state(context.asset_graph_view.instance, key, upstream)
        true_subset = context.candidate_subset if state.due else context.get_empty_subset()
        return dg.AutomationResult(true_subset=true_subset, context=context)


def fan_in_condition(ignore: Sequence[AssetKey] = ()) -> AutomationCondition:
    """Refresh a fan-in asset until it consumed every upstream update; not while an upstream
    run is in flight (a half re-assigned pool is not worth a refresh: the run's end re-arms)."""
    ignore = [AssetKey.from_coercible(k) for k in ignore]
    deps_in_flight = AutomationCondition.any_deps_in_progress()
    if ignore:
        deps_in_flight = deps_in_flight.ignore(AssetSelection.assets(*ignore))
    return (UpstreamNewerThanConsumed(ignore) & ~deps_in_flight).with_label(
        "upstream newer than consumed, no upstream run in flight")


def placed_in_current_tree(instance: dg.DagsterInstance, tree_key: AssetKey,
                           embeddings_key: AssetKey, assignments_key: AssetKey) -> bool:
    """Every drop with embeddings was assigned after the current tree (`tree_key`: level_1,
    materialised right after the fit's commit): the pool is one complete snapshot of the
    tree, so the re-assignment after a refit, however many runs its backfill takes, is over
    only when its last drop is placed. From the event log alone: three partition queries,
    O(drops); no table is read. False before the first tree."""
    tree_event = newest_upstream_event(instance, [tree_key])
    if not tree_event:
        return False
    embedded = instance.get_materialized_partitions(embeddings_key)
    placed = instance.get_materialized_partitions(assignments_key, after_cursor=tree_event)
    return not (embedded - placed)


class PoolPlacedInTree(AutomationCondition):
    """True while every drop with embeddings is placed in the current tree
    (`placed_in_current_tree`). The subsets wait on it: a refresh during the re-assignment
    after a refit would draw from the drops re-assigned so far."""

    def __init__(self, tree_key: AssetKey, embeddings_key: AssetKey,
                 assignments_key: AssetKey):
        self._keys = (tree_key, embeddings_key, assignments_key)

    @property
    def name(self) -> str:
        return "pool_placed_in_tree"

    @property
    def description(self) -> str:
        return "Every drop with embeddings was assigned after the current tree"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        settled = placed_in_current_tree(context.asset_graph_view.instance, *self._keys)
        true_subset = context.candidate_subset if settled else context.get_empty_subset()
        return dg.AutomationResult(true_subset=true_subset, context=context)


def subsets_condition(level_keys: Sequence[AssetKey], embeddings_key: AssetKey,
                      assignments_key: AssetKey) -> AutomationCondition:
    return (fan_in_condition(ignore=level_keys)
            & PoolPlacedInTree(level_keys[0], embeddings_key, assignments_key))
