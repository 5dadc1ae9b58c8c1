"""Declarative automation: every asset follows its upstream without clicks.

- per-drop assets (embeddings) follow their own drop's partition: a bad drop fails alone;
- fan-in assets (level_1, subsets) fire when any upstream partition updated, even while
  other partitions are missing or failed (one bad drop must not block the rest), and still
  wait for runs in progress;
- assignments (per drop) follow their drop's embeddings but ignore updates of the tree: a refit
  re-assigns every item itself, so 100 reruns of the drops would only repeat that work;
  they still wait until a tree exists and their drop's blocking checks passed.
"""

from __future__ import annotations

from dagster import AssetSelection, AutomationCondition

PER_DROP = AutomationCondition.eager()
FAN_IN = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())
FOLLOW = AutomationCondition.eager()


def assignments_condition(level_keys) -> AutomationCondition:
    return (
        AutomationCondition.eager().ignore(AssetSelection.assets(*level_keys))
        & ~AutomationCondition.any_deps_missing()
        & AutomationCondition.all_deps_blocking_checks_passed()
    )
