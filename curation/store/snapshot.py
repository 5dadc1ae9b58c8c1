"""Pinned version sets of one pool, and the check that one is complete."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..sql import sql_str
from .tables import stream


class SnapshotTables:
    """One consistent state of the pool's tables for a reader."""

    def snapshot(self, kinds) -> dict[str, Any | None]:
        """The pool's `kinds` tables, each pinned at its version now (None: no such table):
        a reader that reads them all, and checks `assignment_gaps` on them, reads one
        consistent state whatever is committed meanwhile."""
        pinned = {}
        for kind in kinds:
            table = self.table(kind)
            if table is not None:
                table.checkout(table.version)
            pinned[kind] = table
        return pinned

    def assignment_gaps(self, fit, embeddings: Any, assignments: Any) -> dict[str, str]:
        """{drop: what is missing} for every drop whose embeddings (of the tree's model) are
        not all assigned at `fit` in these (pinned) tables: empty when the snapshot is
        complete. A subset, an evaluation or a report is only drawn from a complete one: a
        drop being re-assigned after a refit, or between its embeddings and its assignment,
        would be missing from it. Taken-down items are left out of both counts (a drop's run
        removes them from its assignments at once; the purge from the embeddings follows).
        One streamed pass over two columns of each table (memory: one batch plus a count per
        drop)."""
        down = self.taken_down_ids()
        where = f"model_hash = {sql_str(fit.model_hash)}" if fit.model_hash else None
        embedded = self._drop_counts_without(embeddings, where, down)
        placed = self._drop_counts_without(assignments, f"fit_version = {int(fit.fit_version)}",
                                           down)
        gaps = {}
        for drop, n in sorted(embedded.items()):
            have = placed.get(drop, 0)
            if have != n:
                gaps[drop] = (f"{have} of {n} embedded items assigned at fit "
                              f"{fit.fit_version}")
        return gaps

    def _drop_counts_without(self, table: Any, where: str | None, down) -> Counter:
        """Rows per drop of a (pinned) table matching `where`, less the ids in `down`."""
        import pyarrow.compute as pc

        if not len(down):
            return self._counts_of(table, "drop", where)
        counts: Counter = Counter()
        if table is None:
            return counts
        for batch in stream(table, ["drop", "item_id"], where):
            kept = batch.filter(pc.invert(pc.is_in(batch.column("item_id"), value_set=down)))
            for v in pc.value_counts(kept.column("drop")).to_pylist():
                counts[str(v["values"])] += int(v["counts"])
        return counts
