"""One test per kind of bad input (issue 8): each gets a quarantine row or a clear reason, and
never more; every drop's counts add up (delivered = ingested + duplicates + quarantined).
Real files, real LanceDB folders, a real Dagster instance."""

from __future__ import annotations

import json
import os

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kit import DIM, materialized, meta, small_pool

from assets.raw import build_raw_asset
from curation.config import HierarchyConfig
from curation.embedding.sources import file_items
from curation.items import parse_jsonl
from curation.pools import PoolConfig, SubsetSpec, load_pools
from curation_dags.sensors import build_drop_sensor
from curation_demo.synthetic import write_vector_drop
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage


def _adds_up(c: dict) -> bool:
    return c["ingested"] + c["duplicates"] + c["quarantined"] == c["delivered"]


def _texts_pool() -> PoolConfig:
    return small_pool(name="notes", modality="texts", dim=None)


class RawOnly:
    """The raw asset of one pool over a landing folder and a LanceDB folder under tmp_path."""

    def __init__(self, tmp_path, pool: PoolConfig):
        self.pool = pool
        self.landing = tmp_path / "landing"
        self.lancedb = LanceDBResource(uri=str(tmp_path / "lancedb"))
        self.storage = LandingStorage(url=str(self.landing))
        self.asset = build_raw_asset(pool)

    def folder(self, drop: str):
        return self.landing / self.pool.prefix / drop

    def deliver(self, drop: str, files: dict[str, bytes]) -> None:
        self.folder(drop).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (self.folder(drop) / name).write_bytes(data)
        (self.folder(drop) / "_SUCCESS").write_bytes(b"")

    def run(self, drop: str, instance):
        instance.add_dynamic_partitions(f"{self.pool.name}_drops", [drop])
        return dg.materialize(
            [self.asset],
            partition_key=drop,
            instance=instance,
            resources={"landing": self.storage, "lancedb": self.lancedb},
            raise_on_error=False,
        )

    def rows(self, kind: str, where: str | None = None) -> list[dict]:
        table = self.lancedb.open(self.pool.table(kind))
        if table is None:
            return []
        query = table.search().limit(None)
        return (query.where(where) if where else query).to_arrow().to_pylist()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _counts(result, pool: PoolConfig) -> dict:
    return meta(materialized(result, [pool.name, "raw"])[0])


class Ticker:
    """Sensor ticks as the daemon runs them: cursor carried, partition requests applied."""

    def __init__(self, pool, instance, storage):
        self.sensor, self.instance, self.storage = build_drop_sensor(pool), instance, storage
        self.pool, self.cursor = pool, None

    def tick(self) -> list[str]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"landing": self.storage}
        ) as context:
            result = self.sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        self.cursor = result.cursor
        self.cursor.encode("utf-8")  # storable by any run storage (raises on lone surrogates)
        return [r.partition_key for r in result.run_requests or []]


def _parquet(ids, vectors) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"item_id": ids, "vector": vectors}), sink)
    return sink.getvalue().to_pybytes()


def _good_parquet(prefix: str, n: int = 5) -> bytes:
    x = np.random.default_rng(len(prefix)).normal(size=(n, DIM)).astype(np.float32)
    return _parquet([f"{prefix}-{i}" for i in range(n)], x.tolist())


# ---- landing folder names -----------------------------------------------------------------------
def test_non_utf8_folder_name_is_reported_once_and_never_blocks_the_pool(
    tmp_path, instance, capfd
):
    raw = RawOnly(tmp_path, small_pool())
    pool_dir = os.fsencode(raw.landing / raw.pool.prefix)
    bad = pool_dir + b"/drop-\xff\xfe"
    os.makedirs(bad)
    with open(bad + b"/_SUCCESS", "wb"), open(bad + b"/part-0.parquet", "wb") as fh:
        fh.write(_good_parquet("bad"))
    raw.deliver("good-1", {"part-0.parquet": _good_parquet("good-1")})
    ticker = Ticker(raw.pool, instance, raw.storage)

    capfd.readouterr()
    assert ticker.tick() == ["good-1"]
    logged = capfd.readouterr().err
    assert logged.count("not valid UTF-8 (byte 0xff") == 1
    assert sorted(instance.get_dynamic_partitions("tiny_drops")) == ["good-1"]

    raw.deliver("good-2", {"part-0.parquet": _good_parquet("good-2")})
    assert ticker.tick() == ["good-2"]  # the bad folder is still there: the pool goes on
    assert "not valid UTF-8" not in capfd.readouterr().err  # reported once
    assert ticker.tick() == []


# ---- JSONL texts ---------------------------------------------------------------------------------
def test_jsonl_lone_surrogate_quarantines_that_line_only(tmp_path, instance):
    raw = RawOnly(tmp_path, _texts_pool())
    lines = [
        json.dumps({"id": "a", "text": "The ferry crossed the bay."}),
        '{"id": "s", "text": "broken \\ud800 text"}',  # an escaped lone surrogate
        json.dumps({"id": "b", "text": "Owls hunt at night."}),
    ]
    raw.deliver("d1", {"texts.jsonl": "\n".join(lines).encode() + b"\n"})
    result = raw.run("d1", instance)
    assert result.success
    counts = _counts(result, raw.pool)
    assert counts == {**counts, "delivered": 3, "ingested": 2, "quarantined": 1}
    assert _adds_up(counts)
    (row,) = raw.rows("quarantine")
    assert row["uri"].endswith("texts.jsonl#L2") and "lone surrogate" in row["reason"]

    # the embedder's source reading agrees with raw: same refs, same reason for the bad line
    uri = str(raw.folder("d1") / "texts.jsonl")
    items = list(file_items([uri], "text"))
    assert {i.ref for i in items if i.error is None} == {r["uri"] for r in raw.rows("raw")}
    assert [i.ref for i in items if i.error is not None] == [row["uri"]]


def test_jsonl_separators_inside_texts_and_a_bom_are_not_line_breaks(tmp_path, instance):
    raw = RawOnly(tmp_path, _texts_pool())
    texts = ["first\u2028still the first record", "second\u0085record", "third\rrecord", "x"]
    body = "\n".join(json.dumps({"id": i, "text": t}, ensure_ascii=False)
                     for i, t in enumerate(texts))
    raw.deliver("d1", {"t.jsonl": b"\xef\xbb\xbf" + body.replace("\nx", "\r\nx").encode()})
    result = raw.run("d1", instance)
    assert result.success
    counts = _counts(result, raw.pool)
    assert counts == {**counts, "delivered": 4, "ingested": 4, "quarantined": 0}
    assert _adds_up(counts)
    assert raw.rows("quarantine") == []
    parsed = parse_jsonl("t.jsonl", (raw.folder("d1") / "t.jsonl").read_bytes())
    assert [i.text for i in parsed.items] == texts
    assert [i.ref for i in parsed.items] == [f"t.jsonl#L{n}" for n in range(1, 5)]


# ---- parquet vectors ----------------------------------------------------------------------------
def test_parquet_vector_column_of_scalars_or_strings_quarantines_that_file(tmp_path, instance):
    raw = RawOnly(tmp_path, small_pool())
    raw.deliver(
        "d1",
        {
            "good.parquet": _good_parquet("good"),
            "scalar.parquet": _parquet(["s-0", "s-1"], [1.0, 2.0]),
            "strings.parquet": _parquet(["t-0"], [["a", "b"]]),
        },
    )
    result = raw.run("d1", instance)
    assert result.success
    counts = _counts(result, raw.pool)
    assert counts == {**counts, "delivered": 7, "ingested": 5, "quarantined": 2}
    assert _adds_up(counts)
    reasons = {r["uri"].rsplit("/", 1)[-1]: r["reason"] for r in raw.rows("quarantine")}
    assert reasons["scalar.parquet"] == "'vector' column must hold lists of numbers, not double"
    assert reasons["strings.parquet"].endswith("not lists of string")
    assert all(not r["item_id"].startswith(("s-", "t-")) for r in raw.rows("raw"))


# ---- symlinks -----------------------------------------------------------------------------------
def test_symlinks_out_of_the_landing_folder_are_refused_never_read(tmp_path, instance, capfd):
    raw = RawOnly(tmp_path, small_pool())
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "_SUCCESS").write_bytes(b"")
    (secret / "part-0.parquet").write_bytes(_good_parquet("secret"))
    raw.folder("x").parent.mkdir(parents=True)
    raw.folder("linked-drop").symlink_to(secret, target_is_directory=True)
    raw.deliver("d1", {"part-0.parquet": _good_parquet("d1")})
    (raw.folder("d1") / "stolen.parquet").symlink_to(secret / "part-0.parquet")

    ticker = Ticker(raw.pool, instance, raw.storage)
    capfd.readouterr()
    assert ticker.tick() == ["d1"]
    assert "'linked-drop' skipped: refused: symlink pointing outside" in capfd.readouterr().err

    result = raw.run("d1", instance)
    assert result.success
    counts = _counts(result, raw.pool)
    assert counts == {**counts, "delivered": 6, "ingested": 5, "quarantined": 1}
    assert _adds_up(counts)
    (row,) = raw.rows("quarantine")
    assert row["uri"].endswith("stolen.parquet") and "outside the landing folder" in row["reason"]

    refused = raw.run("linked-drop", instance)  # even when asked for explicitly
    assert not refused.success
    message = refused.get_step_failure_events()[0].event_specific_data.error.message
    assert "outside the landing folder" in message
    assert not [r for r in raw.rows("raw") if r["item_id"].startswith("secret")]
    with pytest.raises(PermissionError):
        raw.storage.child("tiny").read_bytes(str(raw.folder("d1") / "stolen.parquet"))


# ---- corrected re-delivery ----------------------------------------------------------------------
def test_corrected_redelivery_of_a_quarantined_item_is_ingested(platform):
    p = platform
    x = np.random.default_rng(0).normal(size=(20, DIM)).astype(np.float32)
    x[[3, 7]] = np.nan
    write_vector_drop(p.folder("nan"), x, [f"nan-{i}" for i in range(20)])
    first = p.ingest("nan")
    assert meta(materialized(first, ["tiny", "embeddings"])[0])["embedded"] == 18

    fixed = np.ones((3, DIM), np.float32)  # nan-3 and nan-7 corrected, nan-0 a true duplicate
    write_vector_drop(p.folder("fix"), fixed, ["nan-3", "nan-7", "nan-0"])
    result = p.ingest("fix")
    counts = meta(materialized(result, ["tiny", "raw"])[0])
    assert counts == {**counts, "delivered": 3, "ingested": 2, "duplicates": 1, "retaken": 2}
    assert _adds_up(counts)
    assert meta(materialized(result, ["tiny", "embeddings"])[0])["embedded"] == 2
    assert p.rows("embeddings", "item_id IN ('nan-3', 'nan-7') AND drop = 'fix'") == 2
    assert p.rows("raw", "item_id IN ('nan-3', 'nan-7')") == 2  # one row each, under `fix`
    assert p.rows("raw", "item_id = 'nan-0' AND drop = 'nan'") == 1


# ---- same drop id, changed content --------------------------------------------------------------
def test_same_drop_id_with_changed_content_is_reported_once(tmp_path, instance, capfd):
    raw = RawOnly(tmp_path, small_pool())
    raw.deliver("d1", {"part-0.parquet": _good_parquet("d1")})
    ticker = Ticker(raw.pool, instance, raw.storage)
    assert ticker.tick() == ["d1"]

    raw.deliver("d1", {"part-0.parquet": _good_parquet("d1")})  # same files again: silent
    marker = raw.folder("d1") / "_SUCCESS"
    os.utime(marker, ns=(marker.stat().st_atime_ns, marker.stat().st_mtime_ns + 10**9))
    capfd.readouterr()
    assert ticker.tick() == []
    assert "changed content" not in capfd.readouterr().err

    raw.deliver("d1", {"part-0.parquet": _good_parquet("d1-other", 7)})
    os.utime(marker, ns=(marker.stat().st_atime_ns, marker.stat().st_mtime_ns + 2 * 10**9))
    assert ticker.tick() == []  # never re-ingested under the same id
    logged = capfd.readouterr().err
    assert "drop 'd1' re-delivered with changed content under the same drop id" in logged
    assert "new drop id" in logged
    assert ticker.tick() == []
    assert "changed content" not in capfd.readouterr().err  # once


# ---- pools config -------------------------------------------------------------------------------
POOL_YAML = """\
pools:
  - name: {name}
    landing_prefix: {prefix}
    modality: texts
    embedder:
      model: all-MiniLM-L6-v2
      options: {{{options}}}
    hierarchy: {{n_clusters: [4, 2], resampling_steps: [1]}}
    subsets: [{{name: all, target_size: 4}}]
    refit: {{cron: "{cron}"}}
"""


def _pool_yaml(name="a", prefix="a", options="batch_size: 8", cron="0 3 * * 0") -> str:
    return POOL_YAML.format(name=name, prefix=prefix, options=options, cron=cron)


def test_unknown_embedder_option_is_an_error_naming_it(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(_pool_yaml(options="batch_sise: 8"))
    with pytest.raises(ValueError, match=r"unknown embedder option\(s\) \['batch_sise'\]"):
        load_pools(path)
    with pytest.raises(ValueError, match="batch_sise"):
        PoolConfig(
            name="b", modality="images", embedder={"options": {"batch_sise": 8}},
            hierarchy=HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1]),
            subsets=[SubsetSpec(name="all", target_size=4)],
        )
    with pytest.raises(ValueError, match=r"\['image_size'\] do not apply to a text embedder"):
        PoolConfig(  # an image option on a text pool would be ignored: refused
            name="t", modality="texts", embedder={"options": {"image_size": 64}},
            hierarchy=HierarchyConfig(n_clusters=[4, 2], resampling_steps=[1]),
            subsets=[SubsetSpec(name="all", target_size=4)],
        )
    path.write_text(_pool_yaml(options="batch_size: 0"))  # values too: EmbedderSpec checks them
    with pytest.raises(ValueError, match=r"option\(s\): batch_size=0: .*greater than or equal"):
        load_pools(path)
    path.write_text(_pool_yaml())
    assert load_pools(path)[0].embedder.options == {"batch_size": 8}


def test_duplicate_yaml_keys_and_shared_landing_prefixes_are_rejected(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(_pool_yaml().replace("    modality: texts\n", "    modality: texts\n"
                                         "    modality: images\n"))
    with pytest.raises(ValueError, match=r"duplicate key 'modality' at line 5 \(first at line 4"):
        load_pools(path)

    two = _pool_yaml() + _pool_yaml(name="b", prefix="a/b").replace("pools:\n", "")
    path.write_text(two)
    with pytest.raises(ValueError, match="pools 'a' and 'b' share the landing prefix 'a'"):
        load_pools(path)
    path.write_text(_pool_yaml() + _pool_yaml(name="b", prefix="ab").replace("pools:\n", ""))
    assert [p.name for p in load_pools(path)] == ["a", "b"]


def test_bad_refit_cron_fails_only_its_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_HOME", str(tmp_path))
    from curation_dags.definitions import build_definitions

    path = tmp_path / "pools.yaml"
    path.write_text(_pool_yaml() + _pool_yaml(name="b", prefix="b", cron="61 3 * * 0")
                    .replace("pools:\n", ""))
    pools = load_pools(path)  # the file loads: the cron fails its pool, not the location
    assert pools[1].refit.cron == "61 3 * * 0"  # read (and validated) by Dagster's schedule
    repo = build_definitions(pools).get_repository_def()
    assert repo.get_schedule_def("a_refit_schedule").cron_schedule == "0 3 * * 0"
    broken = repo.get_schedule_def("b_refit_schedule")
    assert "refit.cron '61 3 * * 0' is not a valid cron expression" in broken.description
    with dg.build_schedule_context() as context:
        (request,) = repo.get_schedule_def("a_refit_schedule").evaluate_tick(context).run_requests
        with pytest.raises(dg.DagsterError) as error:
            broken.evaluate_tick(context)
    assert "61 3 * * 0" in str(error.value.__cause__ or error.value)
    assert request.tags["curation/refit"] == "force"
    assert {s.name for s in repo.sensor_defs} >= {"a_drops_sensor", "b_drops_sensor"}


# ---- raw and the embedder agree -----------------------------------------------------------------
def test_text_embeddings_come_from_raw_rows_with_the_same_ids_and_refs(tmp_path):
    """Through the real text embedder: what embeddings stores is exactly raw's rows of the drop
    (item id and ref), BOM / U+2028 texts included; a duplicate of an earlier drop is never
    embedded again, and nothing is quarantined for want of a match."""
    from kit import Platform

    pool = small_pool(
        name="notes", modality="texts", dim=None,
        embedder={"model": "all-MiniLM-L6-v2", "options": {"device": "cpu", "batch_size": 8}},
    )
    with dg.instance_for_test() as instance:
        p = Platform(tmp_path, instance, pool)
        first = p.folder("d0")
        first.mkdir(parents=True)
        (first / "a.jsonl").write_text(json.dumps({"id": 0, "text": "Rivers carry silt."}) + "\n")
        (first / "_SUCCESS").write_bytes(b"")
        assert p.ingest("d0").success

        texts = ["Rivers carry silt.", "Line\u2028separated", "Next\u0085line", "Plain text."]
        body = "\n".join(json.dumps({"id": i, "text": t}, ensure_ascii=False)
                         for i, t in enumerate(texts))
        folder = p.folder("d1")
        folder.mkdir(parents=True)
        (folder / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode() + b"\r\n")
        (folder / "c.txt").write_bytes(b"\xef\xbb\xbfA text file with a BOM.\n")
        (folder / "_SUCCESS").write_bytes(b"")
        p.instance.add_dynamic_partitions(f"{pool.name}_drops", ["d1"])
        raw = p.run([[pool.name, "raw"]], partition_key="d1")
        assert raw.success
        counts = meta(materialized(raw, [pool.name, "raw"])[0])
        assert counts == {**counts, "delivered": 5, "ingested": 4, "duplicates": 1}
        for name in ("b.jsonl", "c.txt"):  # parsed once, by raw: embeddings reads raw's rows
            (folder / name).unlink()
        result = p.run([[pool.name, "embeddings"]], partition_key="d1")
        assert result.success
        emb = meta(materialized(result, [pool.name, "embeddings"])[0])
        assert emb["embedded"] == 4 and emb["quarantined"] == 0

        def pairs(kind):
            rows = p.table(kind).search().where("drop = 'd1'").select(["item_id", "uri"])
            return sorted((r["item_id"], r["uri"]) for r in rows.limit(None).to_arrow().to_pylist())

        assert pairs("embeddings") == pairs("raw")
        assert {u.rsplit("/", 1)[-1] for _, u in pairs("raw")} == {
            "b.jsonl#L2", "b.jsonl#L3", "b.jsonl#L4", "c.txt"}


def test_a_vector_drop_is_read_once_by_raw(platform):
    """raw keeps each row's values: embeddings stores the same vectors with the drop's files
    gone (they are not read again), NaN rows still quarantined by embeddings."""
    p = platform
    x = np.random.default_rng(3).normal(size=(30, DIM)).astype(np.float32)
    x[4] = np.nan
    write_vector_drop(p.folder("once"), x, [f"once-{i}" for i in range(30)])
    p.instance.add_dynamic_partitions(f"{p.pool.name}_drops", ["once"])
    assert p.run([[p.pool.name, "raw"]], partition_key="once").success
    for path in p.folder("once").glob("*.parquet"):
        path.unlink()
    result = p.run([[p.pool.name, "embeddings"]], partition_key="once")
    assert result.success
    emb = meta(materialized(result, [p.pool.name, "embeddings"])[0])
    assert emb["embedded"] == 29 and emb["quarantine_reasons"] == {"vector holds NaN or Inf": 1}
    stored = p.table("embeddings").search().where("drop = 'once'").select(
        ["item_id", "vector"]).limit(None).to_arrow()
    by_id = dict(zip(stored["item_id"].to_pylist(), stored["vector"].to_pylist(), strict=True))
    np.testing.assert_array_equal(np.asarray(by_id["once-7"], np.float32), x[7])
