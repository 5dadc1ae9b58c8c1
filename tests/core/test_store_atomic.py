"""The store's writes under concurrency, on real LanceDB folders: a drop's rows change with no
version in which the drop lacks them, and a takedown's cleanup of old versions neither fails
nor breaks a concurrent writer, and leaves no version holding the item. Randomised and
seeded: every version is checked after every step."""

from __future__ import annotations

import multiprocessing
import random
import time

import numpy as np
import pytest

from curation.store import PoolStore, erase_old_versions, retried, rows, transient
from curation.store.tables import _versions_holding

DIM = 4
SEEDS = range(12)


def _embeddings(drop: str, ids: list[str]):
    x = np.random.default_rng(len(ids)).standard_normal((len(ids), DIM)).astype(np.float32)
    return rows("embeddings", {"item_id": ids, "drop": [drop] * len(ids), "uri": ids,
                               "vector": x, "model": [""] * len(ids),
                               "model_hash": [""] * len(ids)}, dim=DIM)


def _ids_of(table, drop: str) -> frozenset:
    got = table.search().where(f"drop = '{drop}'").select(["item_id"]).limit(None).to_arrow()
    return frozenset(got["item_id"].to_pylist())


@pytest.mark.parametrize("seed", SEEDS)
def test_every_version_of_a_drop_rewrite_holds_its_old_or_its_new_rows(tmp_path, seed):
    """A drop rewritten again and again (items leaving, staying, arriving): each version the
    writes left holds the drop's old rows, the old rows less those leaving, or the new rows,
    and the other drops' rows untouched; never the drop without its rows."""
    rng = random.Random(seed)
    store = PoolStore.open_uri(str(tmp_path / "db"), "p")
    universe = [f"x{i}" for i in range(60)]
    others = {d: [f"{d}-{i}" for i in range(rng.randint(1, 30))] for d in ("a", "c")}
    for drop, ids in others.items():
        store.rewrite_drop("embeddings", drop, _embeddings(drop, ids))
    current = frozenset(rng.sample(universe, 25))
    store.rewrite_drop("embeddings", "b", _embeddings("b", sorted(current)))
    for step in range(6):
        table = store.table("embeddings")
        first_new = table.version + 1
        new = frozenset(rng.sample(universe, rng.randint(1, 40)))
        store.rewrite_drop("embeddings", "b", _embeddings("b", sorted(new)))
        allowed = {current, current & new, new}
        latest = store.table("embeddings").version
        for version in range(first_new, latest + 1):
            table.checkout(version)
            seen = _ids_of(table, "b")
            assert seen in allowed, (f"seed {seed} step {step}: version {version} holds "
                                     f"{len(seen)} rows of drop b, neither the old "
                                     f"{len(current)}, the staying {len(current & new)} nor "
                                     f"the new {len(new)}")
            for drop, ids in others.items():
                assert _ids_of(table, drop) == frozenset(ids), (seed, step, version, drop)
        assert _ids_of(store.table("embeddings"), "b") == new
        current = new


def _write_drops(uri: str, drops: list[str], seed: int, rounds: int) -> None:
    """A drop writer in its own process: rewrites its drops in random order and sizes."""
    rng = random.Random(seed)
    store = PoolStore.open_uri(uri, "p")
    for _ in range(rounds):
        drop = rng.choice(drops)
        n = rng.randint(5, 60)
        store.rewrite_drop("embeddings", drop, _embeddings(drop, [f"{drop}-{i}" for i in
                                                                  range(n)]))
        time.sleep(rng.uniform(0, 0.01))


@pytest.mark.parametrize("seed", range(6))
def test_a_takedown_purge_beside_concurrent_drop_writers(tmp_path, seed):
    """Two processes rewrite drops while takedowns purge items of another drop at random
    moments: no purge fails, no writer fails, and after each purge no readable version of
    the table holds a taken-down item (before: 35 of 95 purges failed on a commit conflict,
    and writers failed on files the cleanup removed)."""
    rng = random.Random(seed)
    uri = str(tmp_path / "db")
    store = PoolStore.open_uri(uri, "p")
    victims = [f"v-{i}" for i in range(40)]
    store.rewrite_drop("embeddings", "taken", _embeddings("taken", victims))
    for d in ("w0", "w1", "w2", "w3"):
        store.rewrite_drop("embeddings", d, _embeddings(d, [f"{d}-0"]))
    spawn = multiprocessing.get_context("spawn")  # LanceDB's state must not cross a fork
    writers = [spawn.Process(target=_write_drops, args=(uri, drops, seed * 10 + k, 60))
               for k, drops in enumerate((["w0", "w1"], ["w2", "w3"]))]
    for w in writers:
        w.start()
    try:
        taken: list[str] = []
        time.sleep(1.5)  # the writers' interpreters start
        for _ in range(6):
            time.sleep(rng.uniform(0.0, 0.3))
            batch = rng.sample([v for v in victims if v not in taken], 5)
            taken += batch
            out = store.purge(batch, ["embeddings"])
            assert out["embeddings"]["deleted"] == 5
            table = store.table("embeddings")
            assert _versions_holding(table, taken, "item_id") == [], (seed, taken)
    finally:
        for w in writers:
            w.join(120)
    assert [w.exitcode for w in writers] == [0, 0], f"seed {seed}: a writer failed"
    table = store.table("embeddings")
    assert _ids_of(table, "taken") == frozenset(victims) - frozenset(taken)


def test_a_read_of_a_removed_version_is_transient_and_heals_on_the_latest(tmp_path):
    """The error a reader of a version the cleanup removed meets (real: a pinned table, a
    rewrite, the cleanup) is one `transient` names, and `retried` heals it on the latest."""
    store = PoolStore.open_uri(str(tmp_path / "db"), "p")
    store.rewrite_drop("embeddings", "a", _embeddings("a", [f"a-{i}" for i in range(30)]))
    pinned = store.table("embeddings")
    pinned.checkout(pinned.version)
    store.rewrite_drop("embeddings", "a", _embeddings("a", [f"n-{i}" for i in range(20)]))
    erase_old_versions(store.table("embeddings"))
    with pytest.raises(Exception) as caught:
        pinned.search().select(["item_id", "vector"]).limit(None).to_arrow()
    assert transient(caught.value), str(caught.value)
    got = retried(pinned, lambda: pinned.search().select(["item_id"]).limit(None).to_arrow())
    assert sorted(got["item_id"].to_pylist()) == sorted(f"n-{i}" for i in range(20))


def test_a_snapshot_is_complete_when_every_embedded_item_is_assigned_at_the_fit(tmp_path):
    """assignment_gaps names a drop missing from the fit or assigned in part, and counts no
    taken-down item (a drop's run drops it from its assignments before the purge reaches the
    embeddings)."""
    from types import SimpleNamespace

    from curation.drops import assignment_rows

    store = PoolStore.open_uri(str(tmp_path / "db"), "p")
    fit = SimpleNamespace(fit_version=3, model_hash="")
    for drop in ("a", "b"):
        store.rewrite_drop("embeddings", drop, _embeddings(drop, [f"{drop}-{i}" for i in
                                                                  range(10)]))

    def assign(drop: str, n: int, fit_version: int):
        ids = [f"{drop}-{i}" for i in range(n)]
        placed = SimpleNamespace(paths=np.zeros((n, 2), np.int32),
                                 distance=np.zeros(n, np.float32))
        store.rewrite_drop("assignments", drop, assignment_rows(ids, [drop] * n, ids, placed,
                                                                fit_version))

    def gaps():
        snap = store.snapshot(("embeddings", "assignments"))
        return store.assignment_gaps(fit, snap["embeddings"], snap["assignments"])

    assign("a", 10, 3)
    assert gaps() == {"b": "0 of 10 embedded items assigned at fit 3"}
    assign("b", 10, 2)  # an older fit: stale
    assert list(gaps()) == ["b"]
    assign("b", 9, 3)  # b-9 left out of the assignments
    assert gaps() == {"b": "9 of 10 embedded items assigned at fit 3"}
    store.append_takedowns([("b-9", "request")], by="test")  # recorded, not purged yet
    assert gaps() == {}
