"""`includes_every_drop`, one check per subset: red when an update the subset has not consumed
yet (a drop's assignments, a takedown) is older than the pool's `stall_after_ticks` automation
ticks, naming the drops, so a stalled refresh shows in the UI instead of silence.

The same function answers for the check when it runs (with a subsets run, or "Execute" in the
UI) and for the pool's stall sensor, which reports it at every tick without a run
(curation_dags.sensors). What counts as consumed is the subset's own record
(assets.automation, `consumed_upstream_event`).
"""


import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from dagster import AssetCheckExecutionContext, AssetKey, AssetRecordsFilter

from curation.pools import PoolConfig

from .automation import refresh_state
from .keys import subset_key, subset_upstream

CHECK_NAME = "includes_every_drop"
MAX_LISTED = 1000  # newer materialisations read per upstream asset and tick


@dataclass(frozen=True)
class Pending:
    """An upstream materialisation that a subset has not consumed yet."""

    asset: str
    partition: str | None
    age_s: float

    def label(self) -> str:
        return f"drop {self.partition!r}" if self.partition else self.asset


def pending_updates(instance: dg.DagsterInstance, key: AssetKey, upstream: Sequence[AssetKey],
                    now: float) -> list[Pending]:
    """Upstream materialisations newer than what `key` last consumed, oldest first."""
    consumed = refresh_state(instance, key, upstream).consumed
    out = []
    for dep in upstream:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=dep, after_storage_id=consumed), limit=MAX_LISTED
        ).records
        latest: dict[str | None, float] = {}
        for r in records:  # one entry per partition: its oldest unconsumed update
            latest[r.partition_key] = min(r.timestamp, latest.get(r.partition_key, r.timestamp))
        out += [Pending(dep.to_user_string(), part, now - ts) for part, ts in latest.items()]
    return sorted(out, key=lambda p: -p.age_s)


def stall_outcome(instance: dg.DagsterInstance, pool: PoolConfig, subset: str, tick_s: int,
                  now: float | None = None) -> dict:
    """Keyword arguments of the check's result (AssetCheckResult / AssetCheckEvaluation)."""
    now = time.time() if now is None else now
    max_lag_s = pool.stall_after_ticks * tick_s
    key = subset_key(pool, subset)
    pending = pending_updates(instance, key, subset_upstream(pool), now)
    stalled = [p for p in pending if p.age_s > max_lag_s]
    if stalled:
        named = ", ".join(p.label() for p in stalled[:20])
        more = f" and {len(stalled) - 20} more" if len(stalled) > 20 else ""
        description = (f"subset {subset!r} has not consumed {named}{more} for more than "
                       f"{max_lag_s} s ({pool.stall_after_ticks} ticks of {tick_s} s)")
    else:
        description = (f"subset {subset!r} consumed every update older than {max_lag_s} s"
                       + (f"; {len(pending)} newer pending" if pending else ""))
    return dict(
        asset_key=key,
        check_name=CHECK_NAME,
        passed=not stalled,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "stalled": [p.label() for p in stalled[:100]],
            "oldest_pending_age_s": round(pending[0].age_s, 1) if pending else 0.0,
            "pending_updates": len(pending),
            "max_lag_s": max_lag_s,
        },
    )


def build_stall_checks(pool: PoolConfig, tick_s: int):
    """The `includes_every_drop` check of every subset of the pool (one definition)."""
    specs = [dg.AssetCheckSpec(CHECK_NAME, asset=subset_key(pool, s.name),
                               description="every drop's assignments and every takedown "
                               f"consumed within {pool.stall_after_ticks} automation ticks")
             for s in pool.subsets]

    @dg.multi_asset_check(specs=specs, can_subset=True,
                          name=f"{pool.name}__subsets_{CHECK_NAME}")
    def includes_every_drop(context: AssetCheckExecutionContext):
        for check_key in context.selected_asset_check_keys:
            subset = check_key.asset_key.path[-1]
            yield dg.AssetCheckResult(**stall_outcome(context.instance, pool, subset, tick_s))

    return includes_every_drop
