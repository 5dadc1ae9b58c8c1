"""Several processes writing different drops to `<pool>__embeddings` and `<pool>__assignments`
at once (issue 17, point 2): every row is present exactly once and no write is lost, on a local
folder and on S3 (the moto server), for several seeds of random start times. Real LanceDB
through the storage home (`PoolStore.rewrite_drop`: a delete of the drop's rows, then an
append, what the embeddings and assignments assets call); the tables are missing when a round
starts, so the writers also race to create them."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pyarrow.compute as pc
import pytest
from servers import S3_CREDENTIALS

from curation.store import PoolStore, rows, storage_options

POOL = "race"
DIM = 8
WRITERS = 4  # processes, each writing DROPS_PER_WRITER drops one after the other
DROPS_PER_WRITER = 2
SEEDS = (0, 1, 2)
MAX_DELAY_S = 0.4  # each write waits a seeded random time in [0, MAX_DELAY_S) first


def _drop_rows(drop: str, n: int) -> tuple:
    """(embeddings rows, assignments rows) of `n` items of `drop`."""
    ids = [f"{drop}-{i}" for i in range(n)]
    uris = [f"mem://{i}" for i in ids]
    rng = np.random.default_rng(n)
    embeddings = rows("embeddings", {
        "item_id": ids, "drop": [drop] * n, "uri": uris,
        "vector": rng.normal(size=(n, DIM)).astype(np.float32),
        "model": ["precomputed"] * n, "model_hash": ["h"] * n}, dim=DIM)
    assignments = rows("assignments", {
        "item_id": ids, "drop": [drop] * n, "uri": uris,
        "distance": rng.random(n).astype(np.float32),
        "level_1": rng.integers(0, 12, n).astype(np.int32),
        "level_2": rng.integers(0, 3, n).astype(np.int32),
        "fit_version": np.ones(n, np.int64),
        "item_key": np.arange(n, dtype=np.uint64)}, n_levels=2)
    return embeddings, assignments


def _plan(seed: int) -> dict[int, list[tuple[str, int, float, float]]]:
    """Per writer: its drops as (drop, items, delay before embeddings, before assignments)."""
    rng = np.random.default_rng(seed)
    return {w: [(f"s{seed}-w{w}-d{k}", int(rng.integers(50, 400)),
                 *rng.uniform(0, MAX_DELAY_S, 2).tolist()) for k in range(DROPS_PER_WRITER)]
            for w in range(WRITERS)}


def _writer(writer: int, rounds: list[tuple[str, list]], options: dict, env: dict,
            barrier, out) -> None:
    """One process: for each round (one LanceDB uri per seed), wait for the others at the
    barrier, then write its drops after their seeded delays."""
    os.environ.update(env)
    try:
        for uri, drops in rounds:
            store = PoolStore.open_uri(uri, POOL, options)
            barrier.wait(timeout=300)
            for drop, n, embed_delay, assign_delay in drops:
                embeddings, assignments = _drop_rows(drop, n)
                time.sleep(embed_delay)
                store.rewrite_drop("embeddings", drop, embeddings)
                time.sleep(assign_delay)
                store.rewrite_drop("assignments", drop, assignments)
        out.put((writer, "ok"))
    except BaseException as exc:  # noqa: BLE001 (reported by the parent)
        out.put((writer, repr(exc)))


def _run_processes(target, arguments: list[tuple]) -> None:
    """One spawned process per argument tuple, sharing a barrier and a result queue (the
    last two arguments of `target`); every one must report "ok"."""
    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(len(arguments)), spawn.Queue()
    workers = [spawn.Process(target=target, args=(*a, barrier, out)) for a in arguments]
    for w in workers:
        w.start()
    outcomes = dict(out.get(timeout=600) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert set(outcomes.values()) == {"ok"}, outcomes


def _race(root: str, options: dict, env: dict) -> list[tuple[str, dict[str, int]]]:
    """Run every seed's round; returns (uri, {drop: items}) per round."""
    plans = {seed: _plan(seed) for seed in SEEDS}
    uris = {seed: f"{root}/seed-{seed}" for seed in SEEDS}
    _run_processes(_writer, [(w, [(uris[s], plans[s][w]) for s in SEEDS], options, env)
                             for w in range(WRITERS)])
    return [(uris[s], {d: n for drops in plans[s].values() for d, n, *_ in drops})
            for s in SEEDS]


def _assert_each_row_once(uri: str, options: dict, expected: dict[str, int]) -> None:
    store = PoolStore.open_uri(uri, POOL, options)
    want = sorted(f"{d}-{i}" for d, n in expected.items() for i in range(n))
    for kind in ("embeddings", "assignments"):
        stored = store.table(kind).to_arrow()
        ids = pc.sort_indices(stored["item_id"])
        assert stored["item_id"].take(ids).to_pylist() == want, (uri, kind)  # once each
        assert store.drop_counts(kind) == expected, (uri, kind)


def test_concurrent_drop_writers_on_a_local_folder(tmp_path):
    for uri, expected in _race(str(tmp_path / "lancedb"), {}, {}):
        _assert_each_row_once(uri, {}, expected)


@pytest.mark.slow
def test_concurrent_drop_writers_on_s3(s3_bucket, moto_s3, monkeypatch):
    bucket, _ = s3_bucket
    env = {"AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
           "AWS_DEFAULT_REGION": S3_CREDENTIALS["region_name"]}
    for key, value in env.items():  # lance's object_store reads them (writers and reader)
        monkeypatch.setenv(key, value)
    options = storage_options(moto_s3, region=S3_CREDENTIALS["region_name"])
    for uri, expected in _race(f"s3://{bucket}/lancedb", options, env):
        _assert_each_row_once(uri, options, expected)


CREATORS = 6  # processes that all find the same table missing at once
ROUNDS = 8  # fresh tables, one race each


def _creator(index: int, uris: list[str], options: dict, env: dict, barrier, out) -> None:
    """Per round: at the barrier, open the missing embeddings table through the storage
    home's create (`table_for`) and append rows with a plain LanceDB add (no write check)."""
    os.environ.update(env)
    delays = np.random.default_rng(index).uniform(0, MAX_DELAY_S, len(uris))
    try:
        for uri, delay in zip(uris, delays, strict=True):
            store = PoolStore.open_uri(uri, POOL, options)
            embeddings, _ = _drop_rows(f"c{index}", 20 + index)
            barrier.wait(timeout=300)
            time.sleep(delay)
            store.table_for(store.name("embeddings"), embeddings.schema).add(embeddings)
        out.put((index, "ok"))
    except BaseException as exc:  # noqa: BLE001 (reported by the parent)
        barrier.abort()  # the others stop waiting for this one
        out.put((index, repr(exc)))


@pytest.mark.slow
def test_racing_creates_of_a_table_on_s3_keep_every_append(s3_bucket, moto_s3, monkeypatch):
    """The creation race itself, without the drop writes' check-and-redo: six processes find
    the table missing at once, create it and append. LanceDB's create is not atomic (on S3
    the loser's create commits as an Overwrite over the winner's rows); the store's
    creation claim makes one process create and the rest wait, so every append stays, in
    every round."""
    bucket, _ = s3_bucket
    env = {"AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
           "AWS_DEFAULT_REGION": S3_CREDENTIALS["region_name"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = storage_options(moto_s3, region=S3_CREDENTIALS["region_name"])
    uris = [f"s3://{bucket}/creates/round-{r}" for r in range(ROUNDS)]
    _run_processes(_creator, [(i, uris, options, env) for i in range(CREATORS)])
    expected = {f"c{i}": 20 + i for i in range(CREATORS)}
    for uri in uris:
        store = PoolStore.open_uri(uri, POOL, options)
        assert store.drop_counts("embeddings") == expected, uri
        versions = store.table("embeddings").list_versions()
        assert len(versions) == 1 + CREATORS, uri  # one create, then one version per append
