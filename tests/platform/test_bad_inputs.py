"""Bad drops fail or quarantine alone, with counts that add up; good drops carry on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from kit import DIM, materialized, meta

from curation_demo.synthetic import write_vector_drop


def _counts(result) -> dict:
    return meta(materialized(result, ["tiny", "raw"])[0])


def _adds_up(c: dict) -> bool:
    return c["ingested"] + c["duplicates"] + c["quarantined"] == c["delivered"]


def test_bad_drops_are_isolated_and_counted(platform):
    p = platform
    good = [p.land("good0"), p.land("good1")]

    # corrupt parquet next to a good file: the bad file is one quarantined item
    p.land("corrupt", n=50)
    (p.folder("corrupt") / "part-1.parquet").write_bytes(b"PAR1 this is not parquet")
    # empty drop: only the marker
    p.folder("empty").mkdir(parents=True)
    (p.folder("empty") / "_SUCCESS").write_text("")
    # NaN rows and wrong-dimension vectors
    x = np.random.default_rng(0).normal(size=(20, DIM)).astype(np.float32)
    x[[3, 7]] = np.nan
    write_vector_drop(p.folder("nan"), x, [f"nan-{i}" for i in range(20)])
    write_vector_drop(p.folder("narrow"), np.ones((10, DIM - 3), np.float32),
                      [f"narrow-{i}" for i in range(10)])
    # duplicates: ids of an earlier drop, plus one repeated inside the drop
    ids = [f"good0-{i}" for i in range(5)] + ["fresh-0", "fresh-0", "fresh-1"]
    write_vector_drop(p.folder("dups"), np.zeros((8, DIM), np.float32), ids)

    results = {d: p.ingest(d) for d in [*good, "corrupt", "empty", "nan", "narrow", "dups"]}
    assert all(results[d].success for d in good)

    corrupt = _counts(results["corrupt"])
    assert corrupt == {**corrupt, "delivered": 51, "ingested": 50, "quarantined": 1}
    assert _adds_up(corrupt)
    reasons = p.table("quarantine").to_arrow().filter(
        pa.compute.equal(p.table("quarantine").to_arrow()["drop"], "corrupt"))
    assert "unreadable parquet" in reasons["reason"][0].as_py()

    assert not results["empty"].success
    failure = results["empty"].get_step_failure_events()[0]
    assert "empty" in failure.event_specific_data.error.message

    nan = _counts(results["nan"])
    assert nan["ingested"] == 20 and _adds_up(nan)
    nan_emb = meta(materialized(results["nan"], ["tiny", "embeddings"])[0])
    assert nan_emb["embedded"] == 18 and nan_emb["quarantined"] == 2
    assert p.rows("quarantine", "drop = 'nan' AND stage = 'embeddings'") == 2

    narrow_emb = meta(materialized(results["narrow"], ["tiny", "embeddings"])[0])
    assert narrow_emb["embedded"] == 0 and narrow_emb["quarantined"] == 10
    assert "wrong dimension" in narrow_emb["quarantine_reasons"].__str__()

    dups = _counts(results["dups"])
    assert dups == {**dups, "delivered": 8, "ingested": 2, "duplicates": 6} and _adds_up(dups)
    assert p.rows("duplicates", "drop = 'dups'") == 6
    assert p.rows("embeddings", "drop = 'dups'") == 2

    for result in results.values():  # every embeddings partition that ran passed its checks
        assert all(e.passed for e in result.get_asset_check_evaluations())

    # the pool carries on: fit, assign and sample over the good items
    done = p.refresh([*good, "corrupt", "nan", "dups"])
    assert all(r.success for r in done["results"])
    assert p.rows("assignments") == 600 + 50 + 18 + 2
    ids = p.table("embeddings").to_arrow()["item_id"].to_pylist()
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("drop", ["../escape", "a..b", ".hidden"])
def test_unsafe_drop_names_fail_only_their_partition(platform, drop):
    p = platform
    ok = p.ingest(p.land("fine"))
    assert ok.success
    bad = p.ingest(drop)
    assert not bad.success
    message = bad.get_step_failure_events()[0].event_specific_data.error.message
    assert "invalid drop id" in message and drop in message
    assert p.rows("raw") == 300


def test_slash_in_drop_name_fails_clearly(platform):
    p = platform
    try:
        result = p.ingest("nested/drop")
    except Exception as exc:  # Dagster may refuse the key itself: also a clear, local failure
        assert "nested/drop" in str(exc) or "/" in str(exc)
        return
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "contains '/'" in message
