"""assets/retries.py: a step that meets a transient storage error is retried by Dagster, any
other error fails it. The transient error is produced for real (a reader of a version a
takedown's cleanup removed); the step runs under a real Dagster instance."""

import dagster as dg
import numpy as np
import pytest
from dagster import AssetExecutionContext

from assets.retries import STORAGE_RETRIES, retried_on_storage_errors, storage_retries
from curation.store import PoolStore, erase_old_versions, rows


def _embeddings(drop: str, ids: list[str]):
    x = np.ones((len(ids), 4), np.float32)
    return rows("embeddings", {"item_id": ids, "drop": [drop] * len(ids), "uri": ids,
                               "vector": x, "model": [""] * len(ids),
                               "model_hash": [""] * len(ids)}, dim=4)


def _stale_reader(tmp_path):
    """A table pinned at a version the cleanup then removed: reading it fails for real."""
    store = PoolStore.open_uri(str(tmp_path / "db"), "p")
    store.rewrite_drop("embeddings", "a", _embeddings("a", ["a-0", "a-1"]))
    pinned = store.table("embeddings")
    pinned.checkout(pinned.version)
    store.rewrite_drop("embeddings", "a", _embeddings("a", ["b-0"]))
    erase_old_versions(store.table("embeddings"))
    return pinned


def test_a_transient_storage_error_asks_for_a_retry_and_others_pass(tmp_path):
    pinned = _stale_reader(tmp_path)
    with pytest.raises(dg.RetryRequested) as caught, storage_retries():
        pinned.search().select(["item_id", "vector"]).limit(None).to_arrow()
    assert caught.value.max_retries == STORAGE_RETRIES
    with pytest.raises(ValueError, match="a bad drop"), storage_retries():
        raise ValueError("a bad drop")  # not a storage race: fails as it is


def test_a_step_that_meets_a_removed_version_is_run_again_and_succeeds(tmp_path):
    """The first attempt reads the stale pinned table and fails for real; Dagster runs the
    step again (RetryRequested), which reads the latest version and succeeds."""
    pinned = _stale_reader(tmp_path)
    attempts = []

    @dg.asset
    @retried_on_storage_errors
    def reads_embeddings(context: AssetExecutionContext):
        attempts.append(context.retry_number)
        if context.retry_number == 0:
            pinned.search().select(["item_id", "vector"]).limit(None).to_arrow()
        pinned.checkout_latest()
        return dg.MaterializeResult(metadata={"rows": pinned.count_rows()})

    with dg.instance_for_test() as instance:
        result = dg.materialize([reads_embeddings], instance=instance)
    assert result.success and attempts == [0, 1]
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["rows"].value == 1
