"""The takedown audit of one pool and the purge of its items from every version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..sql import in_list, sql_str
from .schemas import (
    rows,
    schema,
)
from .tables import (
    IN_CHUNK,
    delete_in,
    erase_old_versions,
    find_in,
    retried,
)


class TakedownTables:
    """The pool's `takedowns` and `takedown_content` tables, and the purge of
    taken-down items from the item tables."""

    def _audit(self) -> Any | None:
        """The audit table, with the `run` column added to one written before it existed."""
        table = self.table("takedowns")
        return None if table is None else self.table_for(table.name, schema("takedowns"))

    def takedown_audit(self):
        """pyarrow Table of the takedowns (item_id, reason, at, by[, run]), or None."""
        table = self.table("takedowns")
        return None if table is None else table.to_arrow()

    def taken_down_ids(self):
        """pyarrow string array of the distinct taken-down item ids (empty when none)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.table("takedowns")
        if table is None:
            return pa.array([], pa.string())
        got = table.search().select(["item_id"]).limit(None).to_arrow()
        return pc.unique(got["item_id"].combine_chunks()) if got.num_rows else pa.array(
            [], pa.string())

    def recorded_pairs(self, ids, by: str) -> list[tuple[str, str]]:
        """(item_id, reason) already recorded by `by` for these ids."""
        table = self._audit()
        if table is None:
            return []
        found = find_in(table, "item_id", sorted(set(ids)), ["item_id", "reason"],
                        f"by = {sql_str(by)}")
        return list(zip(found["item_id"].to_pylist(), found["reason"].to_pylist(), strict=True))

    def append_takedowns(self, pairs: list[tuple[str, str]], by: str, run: str = "") -> int:
        """Add one audit row per (item_id, reason); returns the table version."""
        now = datetime.now(UTC).isoformat()
        data = rows("takedowns", {"item_id": [i for i, _ in pairs],
                                  "reason": [r for _, r in pairs], "at": [now] * len(pairs),
                                  "by": [by] * len(pairs), "run": [run] * len(pairs)})
        return self.append(self.name("takedowns"), data).version

    def audit_version(self) -> int | None:
        table = self.table("takedowns")
        return None if table is None else table.version

    def takedown_reasons(self, ids) -> dict[str, str]:
        """{item_id: reason(s)} of those of `ids` taken down (recorded, applied or not)."""
        found = self.lookup("takedowns", "item_id", sorted(set(ids)), ["item_id", "reason"])
        out: dict[str, str] = {}
        for item, reason in zip(*(found[c].to_pylist() for c in ("item_id", "reason")),
                                strict=True) if found is not None else ():
            out[item] = reason if item not in out else f"{out[item]}; {reason}"
        return out

    def drop_taken_down_rows(self, kind: str, scope: str, ids) -> list[str]:
        """After a write to `kind` of the rows `scope` selects (a drop, or the drops of a
        run): delete those of `ids` taken down meanwhile (recorded, or even purged, while
        the drop was being ingested), so a takedown never loses the race with an ingest.
        One read of the audit's id column. Returns the ids deleted."""
        down = set(self.taken_down_ids().to_pylist())
        late = sorted(i for i in set(ids) if i in down) if down else []
        table = self.table(kind) if late else None
        if table is not None:
            retried(table, lambda: delete_in(table, "item_id", late, scope))
        return late

    def record_content_keys(self, keys: dict[str, str]) -> int:
        """Add (item_id, content_key) rows for taken-down text items (a re-delivery of the
        same text under another id is refused); returns how many were new."""
        if not keys:
            return 0
        known = set(self.taken_down_contents())
        new = {i: k for i, k in keys.items() if k not in known}
        if new:
            self.append(self.name("takedown_content"), rows("takedown_content", {
                "item_id": list(new), "content_key": list(new.values())}))
        return len(new)

    def taken_down_contents(self) -> dict[str, str]:
        """{content_key: item_id} of taken-down text items."""
        got = self.read(self.name("takedown_content"), ["item_id", "content_key"])
        if got is None:
            return {}
        return dict(zip(got["content_key"].to_pylist(), got["item_id"].to_pylist(), strict=True))

    def pending_takedowns(self) -> int:
        """Audit rows not applied yet (recorded by the CLI, no run removed the item yet)."""
        table = self.table("takedowns")
        if table is None:
            return 0
        return table.count_rows("run = ''") if "run" in table.schema.names else table.count_rows()

    def pending_takedown_ids(self) -> list[str]:
        """Distinct item ids of the audit rows not applied yet (bounded by the takedowns
        waiting, not by the pool)."""
        import pyarrow.compute as pc

        table = self._audit()
        if table is None:
            return []
        got = table.search().where("run = ''").select(["item_id"]).limit(None).to_arrow()
        return pc.unique(got["item_id"].combine_chunks()).to_pylist() if got.num_rows else []

    def mark_applied(self, run: str, ids) -> int:
        """Stamp the pending audit rows of these items with the run that applied them;
        returns how many. Rows recorded after the run read its ids stay pending: their
        items may not have been removed."""
        table = self._audit()
        ids = sorted(set(ids))
        stamped = 0
        for start in range(0, len(ids) if table is not None else 0, IN_CHUNK):
            where = f"run = '' AND {in_list('item_id', ids[start:start + IN_CHUNK])}"
            if table.count_rows(where):
                stamped += table.update(where=where, values={"run": run}).rows_updated
        return stamped

    def purge(self, ids, kinds) -> dict:
        """Delete the rows of these items from the pool's `kinds` tables, then remove the
        tables' older versions, checking that no version left holds one of them
        (`erase_old_versions`; safe beside the pool's writers). Returns {kind: {"deleted":
        rows, "version": table version or None, "versions_removed": n}}. A table with none of
        them is left alone; raises `TakedownIncomplete` rather than return while a readable
        version holds one."""
        out = {}
        ids = sorted(set(ids))
        for kind in kinds:
            table = self.table(kind)
            if table is None:
                out[kind] = {"deleted": 0, "version": None, "versions_removed": 0}
                continue
            deleted = retried(table, lambda t=table: delete_in(t, "item_id", ids))
            removed = erase_old_versions(table, ids) if deleted else 0
            out[kind] = {"deleted": deleted, "version": table.version, "versions_removed": removed}
        return out

    def forget_older_versions(self, kind: str) -> int:
        """Remove every version of the pool's `kind` table but the latest
        (`erase_old_versions`); 0 when the table does not exist."""
        table = self.table(kind)
        return 0 if table is None else erase_old_versions(table)

    def unmatched_ids(self, ids) -> list[str]:
        """The ids in none of the pool's item tables (raw, embeddings)."""
        ids = sorted(set(ids))
        found: set[str] = set()
        for kind in ("raw", "embeddings"):
            got = self.lookup(kind, "item_id", ids, ["item_id"])
            found.update(got["item_id"].to_pylist() if got is not None else [])
        return [i for i in ids if i not in found]
