"""The whole graph materialised in-process over several drops, on real LanceDB and Dagster."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetCheckKey, AssetKey
from kit import DIM, materialized, meta

from curation.pools import load_pools

ROOT = Path(__file__).resolve().parents[2]


def test_every_asset_materialised_with_tables_and_lineage(grown):
    p = grown
    assert all(r.success for r in p.ingest_results)
    assert all(r.success for r in p.first["results"])
    assert p.first["refit"] is True
    assert p.rows("raw") == p.rows("embeddings") == p.rows("assignments") == 900

    emb = p.table("embeddings")
    assert emb.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert set(emb.to_arrow()["model"].to_pylist()) == {"precomputed"}

    level_1 = p.table("level_1").to_arrow()
    level_2 = p.table("level_2").to_arrow()
    assert level_1.num_rows == 12 and level_2.num_rows == 3
    assert sum(level_1["size"].to_pylist()) == sum(level_2["size"].to_pylist()) == 900
    assert set(level_1["parent"].to_pylist()) <= set(range(3))

    for spec in p.pool.subsets:
        rows = p.table(f"subset_{spec.name}").to_arrow()
        assert sum(rows["weight"].to_pylist()) == spec.target_size
        assert rows.schema.field("path").type == pa.list_(pa.int64(), 2)
        (m,) = materialized(p.first["results"][-1], ["tiny", "subsets", spec.name])
        values = meta(m)
        digest = hashlib.sha256("\n".join(sorted(rows["item_id"].to_pylist())).encode())
        assert values["manifest_sha256"] == digest.hexdigest()
        assert values["pool_size"] == 900
        assert values["top1_share_subset"] <= values["top1_share_pool"]

    graph = p.defs.resolve_asset_graph()
    assert graph.get(AssetKey(["tiny", "level_2"])).parent_keys == {AssetKey(["tiny", "level_1"])}
    subset_parents = graph.get(AssetKey(["tiny", "subsets", "even"])).parent_keys
    assert AssetKey(["tiny", "level_2"]) in subset_parents

    level_meta = meta(materialized(p.first["results"][0], ["tiny", "level_1"])[0])
    assert level_meta["fit_version"] == 1 and level_meta["n_clusters"] == 12
    assert sum(level_meta["size_histogram"].values()) == 12


def test_checks_ran_and_passed(grown):
    instance = grown.instance
    for name in ("dimension", "finite", "unique_ids"):
        key = AssetCheckKey(AssetKey(["tiny", "embeddings"]), name)
        evaluations = [e for r in grown.ingest_results for e in r.get_asset_check_evaluations()
                       if e.asset_check_key == key]
        assert len(evaluations) == 3 and all(e.passed for e in evaluations)
    health = [e for e in grown.first["results"][0].get_asset_check_evaluations()
              if e.check_name == "cluster_health"]
    assert len(health) == 2 and all(e.passed for e in health)
    assert instance.get_latest_materialization_event(AssetKey(["tiny", "level_2"])) is not None


def test_rematerialising_a_drop_replaces_exactly_its_rows(grown):
    p = grown
    before = p.rows("embeddings")
    result = p.ingest(p.drops[0])
    assert result.success
    assert p.rows("embeddings") == before
    assert p.rows("embeddings", "drop = 'd0'") == 300
    ids = p.table("embeddings").to_arrow()["item_id"].to_pylist()
    assert len(ids) == len(set(ids))
    raw_meta = meta(materialized(result, ["tiny", "raw"])[0])
    assert raw_meta["ingested"] == 300 and raw_meta["duplicates"] == 0  # its own rows don't count


def test_bundled_pools_file_is_valid_and_bad_files_name_the_field(tmp_path):
    pools = load_pools()
    assert [p.name for p in pools] == ["demo", "fashion", "texts"]
    assert [p.modality for p in pools] == ["vectors", "images", "texts"]
    # the real pools collapse near copies before sampling (docs/BENCHMARKS.md, messy pools)
    assert [p.dedup.enabled for p in pools] == [False, True, True]
    bad = tmp_path / "pools.yaml"
    bad.write_text("pools:\n  - name: Bad-Name\n    hierarchy: {n_clusters: [4]}\n"
                   "    subsets: [{name: a, target_size: 1}]\n")
    with pytest.raises(ValueError, match="pool name"):
        load_pools(bad)


def test_code_location_validates(tmp_path):
    env = dict(os.environ, CURATION_HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w",
         "workspace.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_level_vectors_are_the_tree_centroids(grown):
    from curation.store import vectors_of

    fit = grown.lancedb.store(grown.pool.name).load_fit()
    stored = vectors_of(grown.table("level_1").to_arrow()["vector"])
    np.testing.assert_array_equal(stored, fit.hierarchy.centroids[0])
