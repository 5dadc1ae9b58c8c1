"""curation.store: one storage home per pool (real LanceDB folders, no Dagster)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.config import HierarchyConfig
from curation.hierarchy import fit_hierarchy
from curation.store import IN_CHUNK, FitRecord, PoolStore, find_in, fit_signature, rows, schema
from curation.store import tables as store_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tmp_path) -> PoolStore:
    return PoolStore.open_uri(str(tmp_path / "db"), "p")


def test_table_schemas_are_declared_in_the_store_alone():
    """No module outside the storage package (curation/store/), in the core, the resources or
    the assets, builds a table by hand."""
    hand_built = re.compile(r"pa\.(table|schema)\(")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("curation", "resources", "assets")
        for path in (ROOT / package).rglob("*.py")
        if path.parent != ROOT / "curation" / "store" and "embedding" not in path.parts
        and hand_built.search(path.read_text())
    ]
    assert offenders == []
    raw = schema("raw")
    assert {"item_id", "drop", "uri", "text", "values"} <= set(raw.names)
    assert schema("assignments", n_levels=3).names[4:7] == ["level_1", "level_2", "level_3"]
    assert schema("subset_balanced", n_levels=2) == schema("subset", n_levels=2)
    assert schema("embeddings", dim=8).field("vector").type.list_size == 8


def test_rows_follow_the_declared_schema():
    got = rows("duplicates", {"key": ["a|0|u"], "item_id": ["i"], "drop": ["a"], "uri": ["u"],
                              "first_drop": ["b"]})
    assert got.schema == schema("duplicates")
    with pytest.raises(KeyError):  # a column the schema declares cannot be forgotten
        rows("duplicates", {"key": ["k"]})


def test_chunked_lookup_over_more_ids_than_one_filter_holds(store):
    n = 2 * IN_CHUNK + 123
    ids = [f"item-{i}" for i in range(n)]
    table = store.append(store.name("raw"), rows("raw", {
        "item_id": ids, "drop": ["d"] * n, "uri": ids, "size": [1] * n, "source": ids,
        "row": [-1] * n, "meta": [""] * n, "ingested_at": [""] * n, "text": [None] * n,
        "values": [None] * n}))
    wanted = ids[::2] + ["not-there"]
    found = find_in(table, "item_id", wanted, ["item_id"])
    assert sorted(found["item_id"].to_pylist()) == sorted(ids[::2])
    assert store.unmatched_ids(wanted) == ["not-there"]
    assert store.raw_holders(ids, "other") == dict.fromkeys(ids, "d")
    # row ids go unquoted: a delete by _rowid beyond one chunk
    all_rows = find_in(table, "item_id", ids, ["item_id"], row_id=True)
    assert all_rows.num_rows == n
    assert store_module.delete_in(table, "_rowid", all_rows["_rowid"].to_pylist()[:IN_CHUNK + 5]) \
        == IN_CHUNK + 5
    assert table.count_rows() == n - IN_CHUNK - 5



def test_a_lookup_of_many_ids_streams_once_and_finds_what_the_filters_find(store, monkeypatch):
    """Past STREAM_ABOVE values `find_in` (and every lookup over it) is one streamed pass, not
    a scan per IN_CHUNK ids, and finds the rows (with its `where`) the filters find."""
    n = store_module.STREAM_ABOVE + 500
    ids = [f"item-{i}" for i in range(n)]
    drops = ["a" if i % 3 else "b" for i in range(n)]
    table = store.append(store.name("raw"), rows("raw", {
        "item_id": ids, "drop": drops, "uri": ids, "size": [1] * n, "source": ids,
        "row": [-1] * n, "meta": [""] * n, "ingested_at": [""] * n, "text": [None] * n,
        "values": [None] * n}))
    wanted = ids[1:] + ["not-there"]
    assert len(wanted) > store_module.STREAM_ABOVE
    passes = []
    real_stream = store_module.stream
    monkeypatch.setattr(store_module, "stream",
                        lambda *a, **k: passes.append(a) or real_stream(*a, **k))
    got = store.raw_holders(wanted, "b")  # held by a drop other than b
    assert len(passes) == 1  # one streamed pass, not a scan per IN_CHUNK ids
    assert set(got) == {i for i, d in zip(ids[1:], drops[1:], strict=True) if d == "a"}
    assert set(got.values()) == {"a"}
    with_rows = find_in(table, "item_id", wanted, ["item_id"], "drop != 'b'", row_id=True)
    assert sorted(with_rows["item_id"].to_pylist()) == sorted(got)
    assert with_rows.column_names == ["item_id", "_rowid"]
    few = wanted[:10]  # a few ids: IN filters, no streamed pass, the same answer
    assert store.raw_holders(few, "b") == {i: "a" for i in few if drops[ids.index(i)] == "a"}
    assert len(passes) == 2  # only the find_in above streamed
    # counts too: one pass, the same count as the filters
    assert store_module.count_in(table, "item_id", wanted, "drop != 'b'") == len(got)
    assert len(passes) == 3
    assert store_module.count_in(table, "item_id", few, "drop != 'b'") == len(
        [i for i in few if i in got])
    assert len(passes) == 3

def _fit_record(version: int) -> FitRecord:
    config = HierarchyConfig(n_clusters=[6, 2], resampling_steps=[1], seed=0)
    x = np.random.default_rng(version).normal(size=(60, 4)).astype(np.float32)
    result = fit_hierarchy(x, config)
    return FitRecord(fit_version=version, hierarchy=result.hierarchy, n_items=60,
                     mean_distance=0.5, drops={"a": 60}, sizes=[[10] * 6, [30, 30]],
                     report=[{"objective": [1.0]}], model_hash="m",
                     signature=fit_signature({"a": 60}, {"m": 60}, config), reason="first fit",
                     drift={"matched": 2})


def test_fit_record_round_trip(store):
    assert store.load_fit() is None and store.latest_fit_summary() is None
    store.save_fit(_fit_record(1))
    saved = _fit_record(2)
    store.save_fit(saved)
    loaded = store.load_fit()
    assert loaded.fit_version == 2
    for a, b in zip(loaded.hierarchy.centroids, saved.hierarchy.centroids, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(loaded.hierarchy.parents, saved.hierarchy.parents, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (loaded.drops, loaded.sizes, loaded.model_hash, loaded.signature, loaded.reason,
            loaded.drift) == (saved.drops, saved.sizes, "m", saved.signature, "first fit",
                              {"matched": 2})
    summary = store.latest_fit_summary()
    assert (summary.fit_version, summary.n_items, summary.model_hash) == (2, 60, "m")


def test_a_fits_table_of_an_older_version_gains_the_new_columns(store, tmp_path):
    """A fits table written before model_hash, signature, reason and drift existed: its row
    reads as '' (no drift), and the next fit is appended with every column."""
    elsewhere = PoolStore.open_uri(str(tmp_path / "old"), "p")
    elsewhere.save_fit(_fit_record(1))
    old = elsewhere.table("fits").to_arrow().drop_columns(
        ["model_hash", "signature", "reason", "drift"])
    store.db.create_table(store.name("fits"), old)
    assert (store.load_fit().signature, store.load_fit().drift) == ("", {})

    record = _fit_record(2)
    store.save_fit(record)
    table = store.table("fits").to_arrow()
    assert table.num_rows == 2
    assert table.filter(pa.compute.equal(table["fit_version"], 1))["model_hash"].to_pylist() \
        == [""]
    assert store.load_fit().signature == record.signature


def test_takedown_audit_pending_then_applied(store):
    from curation.takedowns import record_takedowns

    done = record_takedowns(store, [("a", "privacy"), ("b", "dmca"), ("a", "privacy")], "cli:x")
    assert done["recorded"] == 2 and store.pending_takedowns() == 2
    assert record_takedowns(store, [("a", "privacy")], "cli:x")["recorded"] == 0
    assert store.takedown_reasons(["a", "b", "c"]) == {"a": "privacy", "b": "dmca"}
    assert sorted(store.pending_takedown_ids()) == ["a", "b"]
    assert store.mark_applied("run-1", ["a"]) == 1 and store.pending_takedowns() == 1
    assert store.mark_applied("run-1", ["a", "b", "c"]) == 1 and store.pending_takedowns() == 0
    assert sorted(store.taken_down_ids().to_pylist()) == ["a", "b"]
    assert pa.types.is_string(store.takedown_audit().schema.field("run").type)


def test_a_takedown_recorded_during_a_purge_stays_pending_for_the_next(store, monkeypatch):
    """`curate takedown` records 'b' while a run purges 'a' (the recording is timed into the
    purge by wrapping it; both writes are real): that run must not stamp 'b', whose item it
    never looked for; the next run removes it and stamps it."""
    from curation.takedowns import purge_and_apply, record_takedowns

    store.claim_raw("d0", rows("raw", {
        "item_id": ["a", "b", "c"], "drop": ["d0"] * 3, "uri": ["f#1", "f#2", "f#3"],
        "size": [1] * 3, "source": ["f"] * 3, "row": [0, 1, 2], "meta": [""] * 3,
        "ingested_at": [""] * 3, "text": ["x", "y", "z"], "values": [None] * 3}))
    record_takedowns(store, [("a", "privacy")], "file:_takedowns/t.txt")
    real = PoolStore.purge

    def purge_while_b_is_recorded(self, ids, kinds):
        out = real(self, ids, kinds)
        record_takedowns(store, [("b", "dmca")], "cli:someone")
        return out

    monkeypatch.setattr(PoolStore, "purge", purge_while_b_is_recorded)
    first = purge_and_apply(store, "run-1", [], lambda uri: b"", "text")
    monkeypatch.setattr(PoolStore, "purge", real)
    assert first.applied == 1
    runs = {r["item_id"]: r["run"] for r in store.takedown_audit().to_pylist()}
    assert runs == {"a": "run-1", "b": ""}
    assert store.pending_takedowns() == 1  # the sensor asks for a run of it
    second = purge_and_apply(store, "run-2", [], lambda uri: b"", "text")
    assert second.applied == 1
    runs = {r["item_id"]: r["run"] for r in store.takedown_audit().to_pylist()}
    assert runs == {"a": "run-1", "b": "run-2"}
    assert sorted(store.table("raw").to_arrow()["item_id"].to_pylist()) == ["c"]


def test_raw_rows_of_an_older_version_keep_working_after_the_payload_columns(store):
    """A raw table written before raw kept the embedder's payload (text, values): a claim adds
    the columns (null on the old rows) and the old rows still read back."""
    old = rows("raw", {c: [] for c in schema("raw").names}).drop_columns(["text", "values"])
    store.db.create_table(store.name("raw"), pa.table(
        {"item_id": ["old-1"], "drop": ["d0"], "uri": ["f#L1"], "size": [3], "source": ["f"],
         "row": [0], "meta": [""], "ingested_at": [""]}, schema=old.schema))
    new = rows("raw", {"item_id": ["new-1"], "drop": ["d1"], "uri": ["g#L1"], "size": [4],
                       "source": ["g"], "row": [0], "meta": [""], "ingested_at": [""],
                       "text": ["word"], "values": [None]})
    _, holders = store.claim_raw("d1", new)
    assert holders == {"new-1": "d1"}
    got = {r["item_id"]: r for r in store.table("raw").to_arrow().to_pylist()}
    assert got["old-1"]["text"] is None and got["new-1"]["text"] == "word"
    assert store.raw_rows("d0", ["item_id", "text"]).to_pylist() == [
        {"item_id": "old-1", "text": None}]


def test_a_vectors_pool_reads_raw_values_and_falls_back_to_the_file(tmp_path):
    """What embeddings reads of a vectors pool's raw rows: the values raw kept (one arrow
    column), a row without them (ingested before raw kept them) from its file, and a row of
    another length or gone from its file quarantined with the reason."""
    import numpy as np

    from curation.drops import _stored_vectors
    from curation.items import parse_file
    from curation_demo.synthetic import write_vector_drop

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    part = write_vector_drop(tmp_path / "d0", x, ["a", "b", "c", "d"]) / "part-0.parquet"
    items = parse_file("vectors", str(part), part.read_bytes()).items
    raw = pa.table({
        "item_id": ["a", "b", "c", "d", "e"],
        "uri": [i.ref for i in items] + ["gone#9"],
        "source": [str(part)] * 5,
        "values": pa.array([x[0].tolist(), None, [1.0, 2.0], None, None],
                           pa.list_(pa.float32())),
    })
    got, vectors, reasons, dim = _stored_vectors(raw, None, lambda uri: part.read_bytes())
    assert dim == 3 and got == [0, 1, 3]
    np.testing.assert_array_equal(vectors, x[[0, 1, 3]])
    assert reasons[2] == "wrong dimension: 2 values, the pool has 3"
    assert reasons[4] == "vector unreadable: no longer in its file"


def test_the_creation_of_a_table_is_claimed_by_one_caller_alone(tmp_path):
    """Eight threads claim the same table's creation on a folder: exactly one gets it; a
    different table is claimed independently."""
    import threading

    db = store_module.connect(str(tmp_path / "db"))
    barrier, answers = threading.Barrier(8), []

    def claim():
        barrier.wait()
        answers.append(store_module.claim_creation(db, "p__raw"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [False] * 7 + [True]
    assert store_module.claim_creation(db, "p__embeddings") is True
    assert store_module.claim_creation(db, "p__embeddings") is False
    assert "_creation_claims" not in store_module.Database(db).names()  # not a table


def test_a_claim_whose_creator_died_is_outwaited(store, monkeypatch):
    """A process that claimed a table's creation and died before creating it (its claim is
    left, the table is missing) delays the next creator by CREATE_WAIT_S, no more: the
    table is created and takes rows."""
    assert store_module.claim_creation(store.db, store.name("quarantine")) is True  # then "dies"
    monkeypatch.setattr(store_module, "CREATE_WAIT_S", 0.3)
    table = store.table_for(store.name("quarantine"), schema("quarantine"))
    table.add(rows("quarantine", {c: ["x"] for c in schema("quarantine").names}))
    assert store.table("quarantine").count_rows() == 1


def test_a_waiter_takes_the_table_its_claimer_creates(store, monkeypatch):
    """While the claimer creates the table and appends its first rows, another caller waits
    and then opens that table: it never creates one over it (the rows stay)."""
    import threading

    name, kind_schema = store.name("duplicates"), schema("duplicates")
    assert store_module.claim_creation(store.db, name) is True
    monkeypatch.setattr(store_module, "CREATE_WAIT_S", 30.0)

    errors = []

    def claimer():
        time.sleep(0.5)
        try:  # a plain create: it fails if the waiter created the table first
            created = store.db.create_table(name, schema=kind_schema)
            created.add(rows("duplicates", {c: ["first"] for c in kind_schema.names}))
        except Exception as exc:  # noqa: BLE001 (asserted below)
            errors.append(repr(exc))

    creator = threading.Thread(target=claimer)
    creator.start()
    table = store.table_for(name, kind_schema)  # missing until the claimer creates it
    creator.join()
    assert errors == []
    table.checkout_latest()
    assert table.to_arrow()["item_id"].to_pylist() == ["first"]
    assert [v["version"] for v in table.list_versions()] == [1, 2]  # one create, one append
