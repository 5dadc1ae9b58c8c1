"""Two drops that share items, ingested at once into the same LanceDB folder (issue 7, point 5):
the shared items are ingested by exactly one of them, and no drop's rows end up under the
other's drop id. Real processes, real LanceDB folders, real Dagster runs."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
from kit import DIM, materialized, meta, small_pool

from assets.raw import build_raw_asset
from curation.store import Database, PoolStore, connect
from curation_demo.synthetic import write_vector_drop
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

SHARED = [f"shared-{i}" for i in range(300)]


def _rows(drop: str, ids: list[str]) -> pa.Table:
    uris = [f"{drop}/{i}" for i in ids]
    return pa.table({"item_id": ids, "drop": [drop] * len(ids), "uri": uris})


def test_claim_rows_resolves_a_race_that_slipped_past_the_merge(tmp_path):
    """LanceDB commits two concurrent inserts of one key side by side; the reader that finds
    its row behind another's gives it up, whatever order the runs read back in."""
    db = Database(connect(str(tmp_path / "db")))
    ids_a, ids_b = ["x", "y", "a-only"], ["x", "y", "b-only"]
    table, holders = db.claim_rows("t", _rows("A", ids_a), "item_id", "drop", ("uri",))
    assert holders == {"x": "A", "y": "A", "a-only": "A"}  # A read back before B committed
    table.add(_rows("B", ["x", "y"]))  # B's concurrent insert, committed after A's
    _, holders = db.claim_rows("t", _rows("B", ids_b), "item_id", "drop", ("uri",))
    assert holders == {"x": "A", "y": "A", "b-only": "B"}
    stored = db.read("t", ["item_id", "drop"]).to_pylist()
    assert sorted((r["item_id"], r["drop"]) for r in stored) == [
        ("a-only", "A"), ("b-only", "B"), ("x", "A"), ("y", "A")]

    # B again with changed uris: B's own rows are updated, A's are never touched
    changed = _rows("B", ids_b).set_column(2, "uri", pa.array(["new"] * 3))
    _, holders = db.claim_rows("t", changed, "item_id", "drop", ("uri",))
    assert holders["x"] == "A"
    stored = {r["item_id"]: r for r in db.read("t", ["item_id", "drop", "uri"]).to_pylist()}
    assert stored["x"]["uri"] == "A/x" and stored["b-only"]["uri"] == "new"


class RendezvousStore(PoolStore):
    """The real storage home, except that each run waits for the other at the write, so that
    the two merge_inserts are issued together (a file per run in `rendezvous`)."""

    rendezvous = Path()
    parties = 1

    def claim_rows(self, name, data, *args, **kwargs):
        (self.rendezvous / str(os.getpid())).touch()
        deadline = time.monotonic() + 300
        while (len(list(self.rendezvous.iterdir())) < self.parties
               and time.monotonic() < deadline):
            time.sleep(0.005)
        return super().claim_rows(name, data, *args, **kwargs)


class RendezvousLanceDB(LanceDBResource):
    """The real resource, building a RendezvousStore."""

    rendezvous: str = ""
    parties: int = 1

    def store(self, pool: str) -> PoolStore:
        store = RendezvousStore(self.connect(), pool)
        store.rendezvous, store.parties = Path(self.rendezvous), self.parties
        return store


def _resources(tmp: str, parties: int = 1) -> dict:
    rendezvous = Path(tmp) / "rendezvous"
    rendezvous.mkdir(exist_ok=True)
    return {
        "landing": LandingStorage(url=f"{tmp}/landing"),
        "lancedb": RendezvousLanceDB(
            uri=f"{tmp}/lancedb", rendezvous=str(rendezvous), parties=parties
        ),
    }


def _ingest_worker(tmp: str, drop: str, start, out) -> None:
    """One run of raw for `drop`, in its own process and Dagster instance (Dagster's in-process
    executor is not thread-safe); `start` releases both runs together."""
    try:
        pool = small_pool()
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(f"{pool.name}_drops", [drop])
            start.wait(timeout=300)
            result = dg.materialize(
                [build_raw_asset(pool)], partition_key=drop, instance=instance,
                resources=_resources(tmp, parties=2),
            )
            out.put((drop, meta(materialized(result, [pool.name, "raw"])[0])))
    except BaseException as exc:  # noqa: BLE001 (reported by the parent)
        out.put((drop, repr(exc)))


def _ingest_at_once(tmp_path, drops: dict[str, list[str]]) -> dict[str, dict]:
    pool = small_pool()
    rng = np.random.default_rng(0)
    for drop, ids in drops.items():
        x = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        write_vector_drop(tmp_path / "landing" / pool.prefix / drop, x, ids)
    spawn = multiprocessing.get_context("spawn")
    start, out = spawn.Barrier(len(drops)), spawn.Queue()
    workers = [
        spawn.Process(target=_ingest_worker, args=(str(tmp_path), d, start, out)) for d in drops
    ]
    for w in workers:
        w.start()
    results = dict(out.get(timeout=600) for _ in workers)
    for w in workers:
        w.join()
    assert all(isinstance(r, dict) for r in results.values()), results
    stored = _resources(str(tmp_path))["lancedb"].read(pool.table("raw"), ["item_id", "drop"])
    results["_stored"] = {"rows": stored.to_pylist()}
    return results


def test_two_drops_sharing_items_ingested_at_once(tmp_path):
    for attempt in range(2):
        drops = {
            "a": SHARED + [f"a-{i}" for i in range(100)],
            "b": SHARED + [f"b-{i}" for i in range(150)],
        }
        out = _ingest_at_once(tmp_path / str(attempt), drops)
        a, b, stored = out["a"], out["b"], out["_stored"]["rows"]
        for counts in (a, b):  # the invariant holds per drop
            assert counts["ingested"] + counts["duplicates"] + counts["quarantined"] == (
                counts["delivered"])
        # the shared items are ingested once in all, the rest by their own drop
        assert a["ingested"] + b["ingested"] == 300 + 100 + 150
        assert a["duplicates"] + b["duplicates"] == 300
        ids = [r["item_id"] for r in stored]
        assert len(ids) == len(set(ids)) == 550
        owner = {r["item_id"]: r["drop"] for r in stored}
        assert all(owner[f"a-{i}"] == "a" for i in range(100))
        assert all(owner[f"b-{i}"] == "b" for i in range(150))
        # what each drop reported is what the table holds
        assert sum(1 for d in owner.values() if d == "a") == a["ingested"]
        assert sum(1 for d in owner.values() if d == "b") == b["ingested"]
