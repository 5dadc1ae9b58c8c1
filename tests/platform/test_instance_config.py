"""The per-pool run limit is a setting (issue 17, point 2): one run per pool on the SQLite dev
instance, several in production, applied where the instance yaml is written; a pool's fits
stay one at a time whatever the setting. Dagster itself reads the written yaml back."""

from __future__ import annotations

import pytest
import yaml

from curation.naming import FIT_TAG, POOL_TAG
from curation_demo.live import write_instance_yaml


def _run_limits(dagster_home) -> dict[str, int]:
    """{tag key: limit} of the instance at `dagster_home`, as Dagster reads its yaml."""
    from dagster import instance_for_test

    config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    config.pop("storage", None)  # PostgreSQL's env is not set here: the limits are what counts
    with instance_for_test(overrides=config) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    return {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits
            if limit["value"] == {"applyLimitPerUniqueValue": True}}


@pytest.mark.parametrize(("template", "pool_runs"),
                         [("dagster.local.yaml", 1), ("dagster.yaml", 4)])
def test_shipped_instances(tmp_path, monkeypatch, template, pool_runs):
    monkeypatch.delenv("CURATION_POOL_RUN_LIMIT", raising=False)
    write_instance_yaml(tmp_path, template)
    assert _run_limits(tmp_path) == {POOL_TAG: pool_runs, FIT_TAG: 1}


def test_the_setting_applies_where_the_yaml_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_POOL_RUN_LIMIT", "7")
    write_instance_yaml(tmp_path, "dagster.yaml")
    assert _run_limits(tmp_path) == {POOL_TAG: 7, FIT_TAG: 1}


@pytest.mark.parametrize(("template", "value", "message"), [
    ("dagster.local.yaml", "2", "SQLite instance runs one run at a time"),
    ("dagster.yaml", "0", "must be at least 1"),
    ("dagster.yaml", "many", "must be a whole number"),
])
def test_refused_limits_name_the_setting(tmp_path, monkeypatch, template, value, message):
    monkeypatch.setenv("CURATION_POOL_RUN_LIMIT", value)
    with pytest.raises(ValueError, match=message) as refused:
        write_instance_yaml(tmp_path, template)
    assert "CURATION_POOL_RUN_LIMIT" in str(refused.value)
    assert not (tmp_path / "dagster.yaml").exists()
