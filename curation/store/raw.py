"""Raw rows, duplicates and quarantine of one pool (`PoolStore`'s raw family)."""

from __future__ import annotations

from typing import Any

from ..sql import sql_str
from .schemas import (
    rows,
)
from .tables import (
    IN_CHUNK,
)


class RawTables:
    """The pool's `raw`, `duplicates` and `quarantine` tables."""

    def raw_holders(self, ids, drop: str) -> dict[str, str]:
        """{item_id: drop} of those of `ids` whose raw row another drop holds."""
        found = self.lookup("raw", "item_id", sorted(ids), ["item_id", "drop"],
                            f"drop != {sql_str(drop)}")
        if found is None:
            return {}
        return dict(zip(found["item_id"].to_pylist(), found["drop"].to_pylist(), strict=True))

    def reclaimable(self, held: dict[str, str]) -> set[str]:
        """Ids among `held` ({item_id: drop holding its raw row}) whose holder's embeddings
        step quarantined them and that have no embedding: a re-delivery is not a duplicate."""
        if not held:
            return set()
        found = self.lookup("quarantine", "item_id", sorted(held), ["item_id", "drop"],
                            "stage = 'embeddings'")
        if found is None:
            return set()
        bad = {i for i, d in zip(found["item_id"].to_pylist(), found["drop"].to_pylist(),
                                 strict=True) if held.get(i) == d}
        embedded = self.lookup("embeddings", "item_id", sorted(bad), ["item_id"])
        return bad - set(embedded["item_id"].to_pylist() if embedded is not None else [])

    def release_raw(self, held: dict[str, str]) -> None:
        """Delete the raw rows {item_id: drop} (another drop takes them over)."""
        table = self.table("raw")
        ids = sorted(held)
        for start in range(0, len(ids) if table is not None else 0, IN_CHUNK):
            table.delete(" OR ".join(f"(item_id = {sql_str(i)} AND drop = {sql_str(held[i])})"
                                     for i in ids[start:start + IN_CHUNK]))

    def claim_raw(self, drop: str, data) -> tuple[Any, dict[str, str]]:
        """Insert-if-absent of the drop's raw rows: (table, {item_id: drop holding it})."""
        table, holders = self.claim_rows(self.name("raw"), data, "item_id", "drop",
                                         compare=("uri", "size", "source", "row", "meta"))
        if data.num_rows == 0:  # nothing of this drop may stay in the table
            table.delete(f"drop = {sql_str(drop)}")
        return table, holders

    def raw_rows(self, drop: str, columns: list[str]):
        """The drop's raw rows (`columns` it has), or None before the first ingest."""
        table = self.table("raw")
        if table is None:
            return None
        present = [c for c in columns if c in table.schema.names]
        return table.search().where(f"drop = {sql_str(drop)}").select(present).limit(
            None).to_arrow()

    def write_duplicates(self, drop: str, duplicates: list[tuple[str, str, str]]) -> Any:
        """Replace the drop's duplicate rows with [(item_id, uri, first_drop)]."""
        data = rows("duplicates", {
            "key": [f"{drop}|{n}|{uri}" for n, (_, uri, _) in enumerate(duplicates)],
            "item_id": [i for i, _, _ in duplicates],
            "drop": [drop] * len(duplicates),
            "uri": [u for _, u, _ in duplicates],
            "first_drop": [f for _, _, f in duplicates],
        })
        return self.replace_rows(self.name("duplicates"), data, "key",
                                 f"drop = {sql_str(drop)}")

    def write_quarantine(self, drop: str, stage: str, quarantined: list[tuple[str, str]],
                         ids: list[str] | None = None) -> Any:
        """Replace this drop's quarantine rows of one stage with [(uri, reason)] (item ids
        aligned, "" when unknown). Each stage writes only its own rows of its own drop."""
        data = rows("quarantine", {
            "key": [f"{stage}|{drop}|{n}|{u}" for n, (u, _) in enumerate(quarantined)],
            "drop": [drop] * len(quarantined),
            "stage": [stage] * len(quarantined),
            "item_id": ids or [""] * len(quarantined),
            "uri": [u for u, _ in quarantined],
            "reason": [r for _, r in quarantined],
        })
        scope = f"drop = {sql_str(drop)} AND stage = {sql_str(stage)}"
        return self.replace_rows(self.name("quarantine"), data, "key", scope)
