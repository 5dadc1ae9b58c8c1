"""The whole graph over S3: drops land in a bucket prefix and every LanceDB table lives in the
same bucket, on a real moto S3 server (own process, loopback), real LanceDB and Dagster."""

from __future__ import annotations

from collections import Counter

import pytest
from kit import Platform, materialized, meta, small_pool
from servers import S3_CREDENTIALS

pytestmark = pytest.mark.slow

KINDS = ("raw", "embeddings", "assignments")


def _ids(p: Platform, kind: str) -> list[str]:
    return p.table(kind).to_arrow()["item_id"].to_pylist()


def test_pipeline_with_landing_and_lancedb_on_s3(tmp_path, s3_bucket, moto_s3, monkeypatch):
    from dagster import instance_for_test

    from curation.store import connect, storage_options
    from resources.lancedb import LanceDBResource
    from resources.storage import LandingStorage

    # boto3 (LandingStorage) and lance's object_store both read credentials from the env
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_CREDENTIALS["region_name"])
    bucket, client = s3_bucket
    landing = LandingStorage(url=f"s3://{bucket}/landing", endpoint_url=moto_s3)
    lancedb = LanceDBResource(uri=f"s3://{bucket}/lancedb", endpoint_url=moto_s3)
    options = storage_options(lancedb.endpoint_url, lancedb.region, lancedb.allow_http)
    assert options["allow_http"] == "true"  # an http:// endpoint needs it, whatever was set

    with instance_for_test() as instance:
        p = Platform(tmp_path, instance, small_pool(), landing_storage=landing, lancedb=lancedb)

        def deliver(drop: str) -> None:
            """Upload the drop p.land wrote locally, _SUCCESS last (as a producer would)."""
            files = sorted(p.folder(drop).iterdir(), key=lambda f: f.name == "_SUCCESS")
            for f in files:
                key = f"landing/{p.pool.prefix}/{drop}/{f.name}"
                client.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())

        # d2 re-delivers 20 items of d0: counted as duplicates, not ingested twice
        p.land("d0", n=300)
        p.land("d1", n=250)
        p.land("d2", n=200, ids=[f"d0-{i}" for i in range(20)]
               + [f"d2-{i}" for i in range(180)])
        drops = ["d0", "d1", "d2"]
        for d in drops:
            deliver(d)
        assert [i.drop_id for i in landing.child(p.pool.prefix).list_drops() if i.complete] \
            == drops
        assert not (tmp_path / "lancedb").exists()  # nothing written locally

        ingests = [p.ingest(d) for d in drops]
        assert all(r.success for r in ingests)
        first = p.refresh(drops)
        assert all(r.success for r in first["results"]) and first["refit"] is True

        # counts add up: delivered = ingested + duplicates (+ quarantined), per drop and in total
        raw = [meta(materialized(r, ["tiny", "raw"])[0]) for r in ingests]
        assert [m["delivered"] for m in raw] == [300, 250, 200]
        assert [m["duplicates"] for m in raw] == [0, 0, 20]
        assert all(m["quarantined"] == 0 for m in raw)
        assert all(m["delivered"] == m["ingested"] + m["duplicates"] for m in raw)
        total = sum(m["ingested"] for m in raw)
        assert total == 730
        assert [p.rows(k) for k in KINDS] == [total] * 3
        assert p.rows("duplicates") == 20
        assert sum(p.table("level_1").to_arrow()["size"].to_pylist()) == total

        # subsets are readable back from S3 through a fresh lancedb connection
        db = connect(lancedb.uri, options)
        for spec in p.pool.subsets:
            values = meta(materialized(first["results"][-1], ["tiny", "subsets", spec.name])[0])
            assert values["pool_size"] == total
            rows = db.open_table(p.pool.table(f"subset_{spec.name}")).to_arrow()
            assert rows.num_rows == values["selected_items"] > 0
            assert sum(rows["weight"].to_pylist()) == spec.target_size
            assert len(set(rows["item_id"].to_pylist())) == rows.num_rows

        # the tables really are objects in the bucket
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="lancedb/") for o in page.get("Contents", [])]
        for kind in (*KINDS, "level_1", "level_2", "subset_even", "subset_core"):
            table_keys = [k for k in keys if k.startswith(f"lancedb/{p.pool.table(kind)}.lance/")]
            assert any("/_versions/" in k for k in table_keys), kind
            assert any(k.endswith(".lance") and "/data/" in k for k in table_keys), kind

        # re-materialising one drop replaces its rows: same counts, no duplicate item_ids
        versions = {k: p.table(k).version for k in KINDS}
        again = p.ingest("d0")
        assert again.success
        second = p.refresh(["d0"])
        assert all(r.success for r in second["results"]) and second["refit"] is False
        for kind in KINDS:
            ids = _ids(p, kind)
            assert len(ids) == total, kind
            assert not [i for i, n in Counter(ids).items() if n > 1], kind
            # raw keeps a re-delivered drop's unchanged rows without a commit; the drop's
            # embeddings and assignments are written again
            assert (p.table(kind).version == versions[kind]) == (kind == "raw"), kind
        assert p.rows("raw", "drop = 'd0'") == 300
        assert p.rows("duplicates") == 20
