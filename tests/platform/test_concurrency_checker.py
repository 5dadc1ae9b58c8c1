"""The concurrency checker's own checks (curation_demo/concurrency.py), on hand-made table
versions in a real LanceDB folder: each invariant fails on the state it is about and passes on
a complete one. The live test (tests/live/test_concurrency.py) relies on them to judge what the
daemon's runs wrote; these make sure a pass there is not a checker that cannot fail."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from curation import naming
from curation.subsets import MANIFEST_KEY
from curation_demo import concurrency as cc

POOL, SUBSET = cc.POOL, cc.SUBSET


def _rows(items: dict[str, str], fit: int | None = None) -> pa.Table:
    """{item: drop} as rows (with a fit_version column when `fit` is given)."""
    columns = {"item_id": list(items), "drop": list(items.values())}
    if fit is not None:
        columns["fit_version"] = pa.array([fit] * len(items), pa.int64())
    return pa.table(columns)


def _drop(name: str, n: int) -> dict[str, str]:
    return {f"{name}-{i}": name for i in range(n)}


class Pool:
    """The tables the checker reads, written version by version as a test says."""

    def __init__(self, tmp_path):
        self.backend = cc.local_backend(tmp_path)
        self.db = cc.open_db(self.backend)
        self.checker = cc.Checker(self.backend, tmp_path / "unused")
        self.checker.db = self.db

    def table(self, kind: str, data: pa.Table):
        table = cc._open(self.db, naming.table(POOL, kind))
        if table is None:
            return self.db.create_table(naming.table(POOL, kind), data)
        table.add(data)
        return table

    def delete(self, kind: str, where: str) -> int:
        table = self.db.open_table(naming.table(POOL, kind))
        table.delete(where)
        return table.version

    def publish(self, fit: int, assignments_version: int, **versions) -> None:
        """A subset version whose manifest records what it read (an overwrite, as the
        subsets asset writes: the manifest rides in the schema metadata)."""
        manifest = {"sha256": f"{fit}-{assignments_version}", "fit_version": fit,
                    "table_versions": {"assignments": assignments_version, **versions}}
        data = pa.table({"item_id": ["x"]}).replace_schema_metadata(
            {MANIFEST_KEY: json.dumps(manifest).encode()})
        self.db.create_table(naming.subset_table(POOL, SUBSET), data, mode="overwrite")

    def check(self) -> list[cc.Violation]:
        for kind in ("embeddings", "assignments"):
            self.checker._remember(kind)
        self.checker._check_subset_versions()
        return self.checker.violations


@pytest.fixture
def pool(tmp_path):
    return Pool(tmp_path)


def test_a_complete_snapshot_passes(pool):
    pool.table("embeddings", _rows(_drop("a", 3)))
    pool.table("embeddings", _rows(_drop("b", 2)))
    table = pool.table("assignments", _rows({**_drop("a", 3), **_drop("b", 2)}, fit=1))
    pool.publish(fit=1, assignments_version=table.version)
    assert pool.check() == []
    assert pool.checker.checked == 1


def test_a_drop_absent_between_its_delete_and_its_append_fails_i1(pool):
    """The drop's rows replaced by a delete commit, then an append: a refresh that read the
    delete's version misses the drop."""
    pool.table("embeddings", _rows({**_drop("a", 3), **_drop("b", 2)}))
    pool.table("assignments", _rows({**_drop("a", 3), **_drop("b", 2)}, fit=1))
    between = pool.delete("assignments", "drop = 'b'")
    pool.table("assignments", _rows(_drop("b", 2), fit=1))
    pool.publish(fit=1, assignments_version=between)
    (violation,) = pool.check()
    assert violation.invariant == "I1"
    assert violation.where == f"subset {SUBSET} v1"
    assert "drops absent: ['b']" in violation.detail
    assert "b (2 embedded: 2 no row)" in violation.detail


def test_a_half_re_assigned_pool_fails_i1(pool):
    """After a refit, drop b is still assigned by the older fit when the subset is drawn."""
    pool.table("embeddings", _rows({**_drop("a", 3), **_drop("b", 2)}))
    pool.table("assignments", _rows(_drop("b", 2), fit=1))
    table = pool.table("assignments", _rows(_drop("a", 3), fit=2))
    pool.publish(fit=2, assignments_version=table.version)
    (violation,) = pool.check()
    assert violation.invariant == "I1"
    assert "b (2 embedded: 2 fit 1)" in violation.detail
    assert "2 assignment rows of another fit {1: 2}" in violation.detail


def test_an_embedded_drop_not_assigned_yet_fails_i1(pool):
    """Drop b's embeddings were committed before the assignments version the subset read;
    its assignments were not: b is registered and embedded, and missing."""
    pool.table("embeddings", _rows(_drop("a", 3)))
    table = pool.table("assignments", _rows(_drop("a", 3), fit=1))
    pool.table("embeddings", _rows(_drop("b", 2)))
    pool.publish(fit=1, assignments_version=table.version)
    assert pool.check() == []  # b embedded after what the subset read: not required
    pool.checker.subset_seen.clear()
    pool.checker.published.clear()
    later = pool.table("assignments", _rows(_drop("c", 1), fit=1))  # after b's embeddings
    pool.publish(fit=1, assignments_version=later.version)
    (violation,) = pool.check()
    assert "drops absent: ['b']" in violation.detail


def test_a_taken_down_item_in_a_readable_version_fails_i2(pool):
    pool.table("raw", _rows(_drop("a", 3)))
    pool.checker.erased = {"a-1": "run-1"}
    pool.checker._check_erased("raw", pool.checker._remember("raw"))
    (violation,) = pool.checker.violations
    assert violation.invariant == "I2"
    assert violation.where == f"{naming.table(POOL, 'raw')} v1"
    assert "a-1 (run run-1)" in violation.detail


def test_deliveries_count_once_each_or_fail_i4(pool):
    pool.table("raw", _rows({"a-0": "a", "a-1": "a"}))
    pool.table("duplicates", _rows({"a-0": "b"}))
    pool.table("quarantine", pa.table({"drop": ["b"], "stage": ["raw"], "item_id": [""],
                                       "uri": ["file:///landing/b/part-0.parquet#row=1"]}))
    deliveries = [("a", 0, "a-0"), ("a", 1, "a-1"), ("b", 0, "a-0"), ("b", 1, "b-1")]
    pool.checker._check_deliveries(deliveries)
    assert pool.checker.violations == []
    pool.checker._check_deliveries([*deliveries, ("c", 0, "c-0"), ("c", 1, "a-1")])
    (violation,) = pool.checker.violations
    assert violation.invariant == "I4"
    assert "a-1 delivered 2x: ingested 1, duplicate 0, quarantined 0" in violation.detail
    assert "c-0 delivered 1x: ingested 0" in violation.detail


def test_storage_conflicts_are_told_from_other_failures():
    assert cc.CONFLICT.search("LanceError(IO): Retryable commit conflict for version 12")
    assert cc.CONFLICT.search("Not found: lancedb/conc__raw.lance/data/ab.lance")
    assert not cc.CONFLICT.search("ValueError: pool conc has no fitted tree")
