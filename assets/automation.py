"""Declarative automation: every asset follows its upstream without clicks.

- raw and embeddings have no condition: the drop sensor runs them together for each new drop,
  and re-embedding after a model change is a backfill (curate backfill). An eager condition
  here re-requested a drop's embeddings in the moment between the sensor adding the partition
  and its run starting, so a drop was sometimes embedded twice;
- assignments (per drop) follow their drop's embeddings, and every partition follows a new
  tree (a refit); they wait until a tree exists and their drop's blocking checks passed;
- fan-in assets (subsets) fire when any upstream partition updated, even while other
  partitions are missing or failed (one bad drop must not block the rest), and still wait
  for runs in progress; they follow the assignments, not the tree: after a refit the tree is
  new before the items are re-assigned to it, and the re-assignment is what they wait for;
- the tree itself (level_1) has no condition: the refit sensor asks for it when the refit
  policy says so (curation_dags.refit), the upper levels follow level_1.
"""

from __future__ import annotations

from dagster import AssetSelection, AutomationCondition

FAN_IN = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())
FOLLOW = AutomationCondition.eager()


def assignments_condition() -> AutomationCondition:
    return AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()


def subsets_condition(level_keys) -> AutomationCondition:
    return FAN_IN.ignore(AssetSelection.assets(*level_keys))
