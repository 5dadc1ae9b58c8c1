"""When to refit the tree: the refit policy as a pure function (no Dagster, no storage).

The platform keeps one fitted tree per pool and assigns each new drop to it. The tree is
refitted only when the policy says the new data no longer fits it:

- no tree yet and at least as many items as level-1 clusters: "first fit";
- every embedding now comes from a model the tree was not fitted with: "embedding model
  changed" (while drops mix two models, nothing is fitted: a tree over two vector spaces is
  meaningless);
- the items added since the fit exceed `max_added_fraction` of the fitted items;
- the added items lie, on average, more than `max_distance_ratio` times farther from their
  leaf centroid than the fitted items did.

The inputs are summaries that the per-drop assignment step records (items, items new since
the fit, their summed distance, model mismatches), so a decision costs O(drops since the fit),
never a scan of the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FitSummary:
    """What the policy needs to know of the current fit."""

    fit_version: int
    n_items: int
    mean_distance: float
    model_hash: str = ""
    config: str = ""  # the fit's HierarchyConfig (JSON); "" from fits that did not keep it


def tree_shape(config_json: str) -> dict:
    """The options of a HierarchyConfig that shape the tree: all but where it runs (device)."""
    import json

    return {k: v for k, v in json.loads(config_json).items() if k != "device"}


@dataclass
class DriftSummary:
    """Since the current fit: per-drop assignment records added up."""

    drops: int = 0
    items: int = 0
    new_items: int = 0
    new_distance_sum: float = 0.0
    mismatched_items: int = 0  # rows embedded with a model other than the fit's
    other_models: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RefitDecision:
    refit: bool
    reason: str
    numbers: dict


def decide_refit(
    policy, fit: FitSummary | None, drift: DriftSummary, pool_items: int, min_items: int,
    config: str = "",
) -> RefitDecision:
    """Refit or not under `policy` (max_added_fraction, max_distance_ratio).

    `pool_items` is the number of embedded items (only used before the first fit);
    `min_items` the number of level-1 clusters (a first fit needs at least that many);
    `config` the pool's HierarchyConfig now (JSON): a tree fitted under other options
    (levels, cluster counts, metric, seed...) is refitted, whatever the drift.
    """
    if fit is None:
        numbers = {"pool_items": pool_items}
        if pool_items < min_items:
            return RefitDecision(False, f"waiting for data: {pool_items} items < {min_items}",
                                 numbers)
        return RefitDecision(True, "first fit", numbers)
    numbers = {
        "fit_version": fit.fit_version,
        "items_at_fit": fit.n_items,
        "drops_assigned_since_fit": drift.drops,
        "added_since_fit": drift.new_items,
        "added_fraction": drift.new_items / max(fit.n_items, 1),
        "fitted_mean_distance": fit.mean_distance,
    }
    if config and fit.config and tree_shape(config) != tree_shape(fit.config):
        was, now = tree_shape(fit.config), tree_shape(config)
        changed = sorted(k for k in now.keys() | was.keys() if was.get(k) != now.get(k))
        numbers.update(config_changed={k: [was.get(k), now.get(k)] for k in changed})
        return RefitDecision(True, f"hierarchy config changed ({', '.join(changed)})", numbers)
    if drift.new_items:
        new_mean = drift.new_distance_sum / drift.new_items
        numbers.update(new_mean_distance=new_mean,
                       distance_ratio=new_mean / max(fit.mean_distance, 1e-12))
    if drift.mismatched_items:
        numbers.update(mismatched_items=drift.mismatched_items,
                       other_models=sorted(drift.other_models))
        if drift.mismatched_items < drift.items or len(drift.other_models) > 1:
            return RefitDecision(
                False,
                f"waiting for re-embedding: {drift.mismatched_items} of {drift.items} items "
                "carry another model than the tree's",
                numbers,
            )
        return RefitDecision(True, "embedding model changed", numbers)
    if numbers["added_fraction"] > policy.max_added_fraction:
        return RefitDecision(True, f"added fraction > {policy.max_added_fraction}", numbers)
    if numbers.get("distance_ratio", 0.0) > policy.max_distance_ratio:
        return RefitDecision(True, f"distance ratio > {policy.max_distance_ratio}", numbers)
    return RefitDecision(False, "within refit policy: new drops are assigned to the current tree",
                         numbers)
