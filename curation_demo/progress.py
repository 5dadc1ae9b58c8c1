"""What `curate demo` says on stderr while the daemon works, so a user sees it move.

`DemoProgress.poll(instance)` reads what happened since the last poll from the Dagster
instance the daemon writes to: runs of the pool that started or finished (with the assets
they materialise), each drop's embeddings (items and items per second), each fit, each
subset, evaluation and report refreshed. Every line carries the seconds since the demo
started; a bar counts the drops embedded out of the drops landed. stdout is left alone: the
demo's final JSON line is the only thing printed there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from curation import naming

PARTITION_TAG = "dagster/partition"  # Dagster's tag on a run of one partition
FINISHED = {"SUCCESS": "finished", "FAILURE": "FAILED", "CANCELED": "canceled"}


class DemoProgress:
    """Progress of one demo on `stream` (stderr). Use as a context manager (the bar runs
    inside it); call `landed` when drops land and `poll` while waiting."""

    def __init__(self, pool, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.pool, self._clock = pool, clock
        self._started = clock()
        self._since = time.time()  # wall clock: only runs and events after it are reported
        # soft_wrap: lines stay whole in a log file (a file console is 80 columns wide)
        console = Console(file=stream or sys.stderr, soft_wrap=True, highlight=False)
        self.bar = Progress(
            TextColumn("drops embedded"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[items]} items"), TimeElapsedColumn(),
            console=console,
        )
        self._drops = self.bar.add_task("drops", total=0, items=0)
        self._run_states: dict[str, str] = {}  # run id -> "started" or "finished"
        self._run_labels: dict[str, str] = {}  # run id -> its label, once its assets are known
        self._cursors: dict[tuple[str, ...], int] = {}  # asset key path -> last storage id

    def __enter__(self) -> DemoProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def say(self, message: str) -> None:
        self.bar.console.print(f"[{self._clock() - self._started:7.1f} s] {message}",
                               markup=False)

    def landed(self, drops: list[str], items: int, where: str) -> None:
        self.bar.update(self._drops, total=self.bar.tasks[self._drops].total + len(drops))
        names = drops[0] if len(drops) == 1 else f"{drops[0]} .. {drops[-1]}"
        self.say(f"landed {len(drops)} drop(s) ({names}, {items} items) in {where}")

    def poll(self, instance) -> None:
        """Report the runs and materialisations of the pool that are new since the last
        poll."""
        self._report_runs(instance)
        self._report_embeddings(instance)
        self._report_fits(instance)
        for spec in self.pool.subsets:
            for meta, *_ in self._new_events(instance, naming.subset_path(self.pool.name,
                                                                          spec.name)):
                excluded = meta.get("duplicates_excluded")
                left_out = f", {excluded} near duplicates left out" if excluded else ""
                self.say(f"subset {spec.name} refreshed: {meta.get('selected_items')} of "
                         f"{meta.get('pool_size')} items (fit {meta.get('fit_version')}"
                         f"{left_out})")
        for spec in self.pool.subsets:
            for meta, *_ in self._new_events(instance, naming.evaluation_path(self.pool.name,
                                                                              spec.name)):
                self.say(f"evaluation of {spec.name} refreshed (curated, random): "
                         + curated_vs_random(meta) + labels_absent(meta))
        for meta, *_ in self._new_events(instance, naming.asset_path(self.pool.name, "report")):
            self.say(f"report written: {meta.get('path')}")

    # ---- readers --------------------------------------------------------------------------
    def _report_runs(self, instance) -> None:
        from dagster import RunsFilter

        created_after = datetime.fromtimestamp(self._since, UTC)
        records = instance.get_run_records(RunsFilter(created_after=created_after),
                                           ascending=True)
        for record in records:
            run = record.dagster_run
            label = self._run_labels.get(run.run_id) or self._run_label(instance, run)
            if label is None:
                continue
            state, status = self._run_states.get(run.run_id), run.status.value
            if state is None and (record.start_time or status in FINISHED):
                self.say(f"{label} started")
                state = self._run_states[run.run_id] = "started"
            if state == "started" and status in FINISHED:
                took = (record.end_time or time.time()) - (record.start_time or time.time())
                self.say(f"{label} {FINISHED[status]} in {took:.1f} s")
                self._run_states[run.run_id] = "finished"

    def _run_label(self, instance, run) -> str | None:
        """"run <id> (<assets>; drop <drop>)", or None for a run of another pool. The assets:
        the run's selection (runs a sensor asks for) and those it planned to materialise
        (recorded just after a run is created, whoever asked for it)."""
        from dagster import DagsterEventType

        planned = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
        keys = {*(run.asset_selection or ()),
                *(r.event_log_entry.dagster_event.asset_key for r in planned)}
        assets = {"/".join(k.path[1:]) for k in keys if k.path[0] == self.pool.name}
        if not assets and run.tags.get(naming.POOL_TAG) != self.pool.name:
            return None
        # per-drop assets are partitioned by drop: a run the drop sensor did not ask for (a
        # backfill, a job) names its drop by its partition
        drop = run.tags.get(naming.DROP_TAG) or run.tags.get(PARTITION_TAG)
        label = f"run {run.run_id[:8]} ({', '.join(sorted(assets)) or run.job_name}" + (
            f"; drop {drop})" if drop else ")")
        if assets:
            self._run_labels[run.run_id] = label
        return label

    def _report_embeddings(self, instance) -> None:
        from dagster import DagsterEventType

        path = naming.asset_path(self.pool.name, "embeddings")
        for meta, drop, record in self._new_events(instance, path):
            embedded = int(meta.get("embedded", 0))
            task = self.bar.tasks[self._drops]
            self.bar.update(self._drops, advance=1, items=task.fields["items"] + embedded)
            # the embedder's own rate; precomputed vectors have none: the step's, from its
            # start to this materialisation (the step may still be running)
            starts = instance.get_records_for_run(
                record.run_id, of_type=DagsterEventType.STEP_START).records
            seconds = max((record.timestamp - r.timestamp for r in starts
                           if r.event_log_entry.step_key == naming.op_name(path)), default=0.0)
            rate = meta.get("items_per_s") or (embedded / seconds if seconds > 0 else None)
            self.say(f"embedded {meta.get('embedded')} items of drop {drop}"
                     + (f" ({rate:.0f} items/s)" if rate is not None else "")
                     + f"; {meta.get('pool_items')} in the pool")

    def _report_fits(self, instance) -> None:
        for meta, *_ in self._new_events(instance, naming.level_path(self.pool.name, 1)):
            self.say(f"fit {meta.get('fit_version')} ({meta.get('reason')}): "
                     f"{meta.get('n_clusters')} leaf clusters over {meta.get('pool_items')} "
                     f"items in {float(meta.get('fit_seconds', 0.0)):.1f} s")

    def _new_events(self, instance, key_path: list[str]) -> list[tuple[dict, str | None, Any]]:
        """(metadata values, partition, event record) of the asset's materialisations after
        the last poll, oldest first."""
        from dagster import AssetKey, AssetRecordsFilter

        cursor = self._cursors.get(tuple(key_path))
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(key_path), after_storage_id=cursor,
                               after_timestamp=None if cursor else self._since),
            limit=1000, ascending=True).records
        if records:
            self._cursors[tuple(key_path)] = records[-1].storage_id
        return [({k: v.value for k, v in r.asset_materialization.metadata.items()},
                 r.partition_key, r) for r in records]


def curated_vs_random(meta: dict) -> str:
    """"coverage_p99 12.6 / 14.8, ..." from an evaluation's <figure>_curated and
    <figure>_random metadata."""
    names = [k.removesuffix("_curated") for k in meta if k.endswith("_curated")]
    return ", ".join(f"{n} {float(meta[f'{n}_curated']):.3g} / "
                     f"{float(meta.get(f'{n}_random', float('nan'))):.3g}" for n in names)


def labels_absent(meta: dict) -> str:
    """"; label figures absent: <why>" for an evaluation without label figures (its
    `label_figures` metadata), "" for one with them."""
    note = str(meta.get("label_figures", ""))
    if not note.startswith("absent: "):
        return ""
    return "; label figures absent: " + note.removeprefix("absent: ").split("; ")[0]
