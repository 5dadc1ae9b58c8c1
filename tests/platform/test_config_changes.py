"""Inputs and config changes that must never strand a pool: huge finite vectors and huge ids
quarantined at ingest, a changed `dim` refused per drop with a clear reason, a changed
hierarchy refitted. Real LanceDB tables, a real Dagster instance, the pool's real assets and
its refit sensor."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import build_sensor_context
from kit import DIM, Platform, small_pool

from curation.drops import MAX_ITEM_ID_BYTES
from curation_dags.refit import evaluate_refit
from curation_demo.synthetic import fixed_mixture_draw, write_vector_drop


@pytest.fixture
def platform(tmp_path):
    from dagster import instance_for_test

    with instance_for_test() as instance:
        yield Platform(tmp_path, instance, small_pool())


def quarantine(p) -> dict[str, str]:
    rows = p.table("quarantine").to_arrow().to_pylist()
    return {r["uri"]: r["reason"] for r in rows}


def test_huge_finite_vectors_are_quarantined_and_the_pool_still_fits(platform):
    p = platform
    x, _ = fixed_mixture_draw(300, DIM, 5)
    x[0, 0], x[1, 3], x[2, :] = 1e20, 3e38, 1e19  # finite in float32, overflow when squared
    ids = [f"h-{i}" for i in range(300)]
    write_vector_drop(p.folder("h"), x, ids)
    p.ingest("h")
    reasons = quarantine(p)
    huge = [u for u, r in reasons.items() if "exceeds" in r and "overflow float32" in r]
    assert len(huge) == 3
    assert p.rows("embeddings") == 297
    result = p.refresh(["h"], refit="force")
    assert all(r.success for r in result["results"])
    assert p.rows("assignments") == 297


def test_item_ids_over_the_cap_are_quarantined(platform):
    p = platform
    x, _ = fixed_mixture_draw(20, DIM, 6)
    ids = [f"ok-{i}" for i in range(18)] + ["x" * (MAX_ITEM_ID_BYTES + 1), "y" * (1 << 20)]
    write_vector_drop(p.folder("big"), x, ids)
    result = p.ingest("big")
    assert result.success
    reasons = list(quarantine(p).values())
    assert sorted(r for r in reasons if "byte cap" in r) == [
        f"item id of {MAX_ITEM_ID_BYTES + 1} bytes exceeds the {MAX_ITEM_ID_BYTES}-byte cap",
        f"item id of {1 << 20} bytes exceeds the {MAX_ITEM_ID_BYTES}-byte cap"]
    assert p.rows("raw") == 18 and p.rows("embeddings") == 18


def test_a_changed_dim_fails_the_drop_with_a_clear_reason(platform):
    p = platform
    p.ingest(p.land("d0"))
    p.reconfigure(p.pool.model_copy(update={"dim": 16}))
    x = np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32)
    write_vector_drop(p.folder("wide"), x, [f"w-{i}" for i in range(30)])
    result = p.ingest("wide")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error)
    assert "drop 'wide'" in text and "dim is 16" in text and "8-d vectors" in text
    assert p.rows("embeddings", "drop = 'wide'") == 0
    assert p.rows("embeddings") == 300  # the pool's other drops are untouched


def test_a_changed_hierarchy_is_refitted(platform):
    p = platform
    drops = [p.land(f"d{i}") for i in range(2)]
    for d in drops:
        p.ingest(d)
    p.refresh(drops, refit="force")
    tick = evaluate_refit(build_sensor_context(instance=p.instance), p.pool, p.lancedb)
    assert not tick.run_requests  # nothing changed: no refit
    changed = p.pool.hierarchy.model_copy(update={"n_clusters": [6, 2]})
    p.reconfigure(p.pool.model_copy(update={"hierarchy": changed}))
    tick = evaluate_refit(build_sensor_context(instance=p.instance), p.pool, p.lancedb)
    (request,) = tick.run_requests
    assert request.tags["curation/refit_reason"] == "hierarchy config changed (n_clusters)"
    # the fit runs under the new options (the device it runs on is no reason to refit)
    p.reconfigure(p.pool.model_copy(update={"hierarchy": changed.model_copy(
        update={"device": "auto"})}))
    result = p.refresh([], refit="auto")
    assert result["refit"] is True

    fit = p.lancedb.store(p.pool.name).latest_fit_summary()
    assert fit.fit_version == 2 and '"n_clusters":[6,2]' in fit.config.replace(" ", "")
    tick = evaluate_refit(build_sensor_context(instance=p.instance), p.pool, p.lancedb)
    assert not tick.run_requests  # fitted under the new options: settled
