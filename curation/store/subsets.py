"""The subset tables of one pool: one LanceDB version per materialisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import naming
from .tables import (
    stream,
)


@dataclass(frozen=True)
class SubsetVersion:
    version: int
    rows: object  # pyarrow Table sorted by item_id, taken-down items left out
    taken_down_excluded: int


class SubsetTables:
    """The pool's `subset_<name>` tables."""

    def subset_names(self) -> list[str]:
        prefix = self.name("subset_")
        return sorted(n[len(prefix):] for n in self.names() if n.startswith(prefix))

    def write_subset(self, subset: str, data) -> Any:
        """One new version of the subset's table (the whole table)."""
        return self.overwrite(naming.subset_table(self.pool_name, subset), data)

    def subset_table(self, subset: str, version: int | None = None) -> Any | None:
        return self.open(naming.subset_table(self.pool_name, subset), version)

    def subset_version(self, subset: str, version: int | None = None,
                       columns=("item_id", "uri", "weight", "path")) -> SubsetVersion:
        """One subset table version (the latest when `version` is None), rows sorted by
        item_id, without the items taken down since: whatever version a reader opens,
        exports and the training loader never serve a taken-down item."""
        import pyarrow.compute as pc

        table = self.subset_table(subset, version)
        if table is None:
            raise ValueError(f"no subset table {naming.subset_table(self.pool_name, subset)} "
                             "(materialise the subset first)")
        got = table.to_arrow().select(list(dict.fromkeys([*columns, "item_id"])))
        down = self.taken_down_ids()
        n = got.num_rows
        if len(down):
            got = got.filter(pc.invert(pc.is_in(got["item_id"], value_set=down)))
        got = got.select(list(columns))
        got = got.take(pc.sort_indices(got, sort_keys=[("item_id", "ascending")]))
        return SubsetVersion(table.version, got, n - got.num_rows)

    @staticmethod
    def fit_versions_of(table: Any) -> list[int]:
        """The distinct fit versions of a (pinned) table's rows (one small column)."""
        import pyarrow.compute as pc

        got = [pc.unique(b.column("fit_version")).to_pylist()
               for b in stream(table, ["fit_version"])]
        return sorted({int(v) for part in got for v in part})

    def subset_manifest(self, subset: str) -> tuple[int, dict]:
        """(latest version, the manifest stored with it) of a subset table ({} when absent)."""
        import json

        from ..subsets import MANIFEST_KEY

        table = self.subset_table(subset)
        raw = (table.schema.metadata or {}).get(MANIFEST_KEY)
        return int(table.version), json.loads(raw) if raw else {}

    def retired_subset_kinds(self, configured: list[str]) -> list[str]:
        """Table kinds (`subset_<name>`) of subsets stored but not in `configured`."""
        return [f"subset_{s}" for s in self.subset_names() if s not in set(configured)]
