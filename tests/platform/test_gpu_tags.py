"""$CURATION_GPUS: the steps that use a GPU ask for one where the cluster has them, read by the
consumers themselves (dagster-ray's per-step config; the Kubernetes launcher's run tag, whose
JSON shape is dagster-k8s's `dagster-k8s/config`)."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster_ray.configs import RayExecutionConfig

from curation import naming
from curation.pools import load_pools
from curation_dags.definitions import build_definitions
from curation_dags.settings import gpu_op_tags, gpu_run_tags, gpus_per_step

BUNDLED = "curation/pools.yaml"  # a vectors pool, an image pool and a text pool


def _defs(monkeypatch, tmp_path, gpus: str | None):
    if gpus is None:
        monkeypatch.delenv("CURATION_GPUS", raising=False)
    else:
        monkeypatch.setenv("CURATION_GPUS", gpus)
    monkeypatch.setenv("CURATION_HOME", str(tmp_path))
    pools = load_pools(BUNDLED)
    assert {p.modality for p in pools} == {"vectors", "images", "texts"}
    return pools, build_definitions(pools)


def _ray_gpus(defs, pool, asset: str) -> float | None:
    tags = defs.resolve_assets_def(dg.AssetKey([pool.name, asset])).op.tags
    return RayExecutionConfig.from_tags(tags).num_gpus


def test_a_models_embeddings_and_the_fit_ask_for_gpus(monkeypatch, tmp_path):
    pools, defs = _defs(monkeypatch, tmp_path, "1")
    for pool in pools:
        model = pool.modality != "vectors"
        assert _ray_gpus(defs, pool, "embeddings") == (1.0 if model else None), pool.name
        assert _ray_gpus(defs, pool, "level_1") == 1.0, pool.name
        for other in ("raw", "assignments"):  # CPU steps ask for none
            assert _ray_gpus(defs, pool, other) is None, (pool.name, other)
        schedule = defs.resolve_schedule_def(naming.refit_schedule(pool.name))
        k8s = json.loads(schedule.tags["dagster-k8s/config"])
        assert k8s["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_without_the_setting_nothing_asks_for_a_gpu(monkeypatch, tmp_path):
    pools, defs = _defs(monkeypatch, tmp_path, None)
    for pool in pools:
        for asset in ("embeddings", "level_1"):
            assert _ray_gpus(defs, pool, asset) is None
        schedule = defs.resolve_schedule_def(naming.refit_schedule(pool.name))
        assert "dagster-k8s/config" not in schedule.tags
    assert gpu_op_tags() == gpu_run_tags() == {}


@pytest.mark.parametrize(("value", "accepted"), [("0.5", 0.5), ("2", 2.0), ("", 0.0),
                                                 ("one", None), ("-1", None), ("nan", None)])
def test_the_setting_is_validated_once(monkeypatch, value, accepted):
    monkeypatch.setenv("CURATION_GPUS", value)
    if accepted is None:
        with pytest.raises(ValueError, match="CURATION_GPUS"):
            gpus_per_step()
    else:
        assert gpus_per_step() == accepted
    if accepted == 0.5:  # a fraction for Ray, a whole GPU for a pod
        assert json.loads(gpu_op_tags()["dagster-ray/config"]) == {"num_gpus": 0.5}
        assert '"nvidia.com/gpu": "1"' in gpu_run_tags()["dagster-k8s/config"]
