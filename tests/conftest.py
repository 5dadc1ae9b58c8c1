"""Fixtures for every test layer (core/, platform/, live/): the small platform of kit.py and the
real servers of servers.py (moto's S3, PostgreSQL, dagster-webserver + daemon). Test modules use
them by name; nothing imports a fixture by hand."""

from __future__ import annotations

import pytest
from kit import Platform, small_pool
from servers import (  # noqa: F401 - fixtures exposed to every test module
    landing,
    local_landing,
    moto_s3,
    postgres,
    s3_bucket,
    s3_landing,
)


@pytest.fixture
def platform(tmp_path, request):
    """The small platform; parametrised indirectly with a kit.LABELLINGS value, its drops
    carry labels on all items (the default), some or none."""
    from dagster import instance_for_test

    with instance_for_test() as instance:
        yield Platform(tmp_path, instance, small_pool(),
                       labels=getattr(request, "param", "all"))


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A platform with three drops fully materialised (shared by a module's tests)."""
    from dagster import instance_for_test

    tmp = tmp_path_factory.mktemp("grown")
    with instance_for_test() as instance:
        p = Platform(tmp, instance, small_pool())
        drops = [p.land(f"d{i}") for i in range(3)]
        p.ingest_results = [p.ingest(d) for d in drops]
        p.first = p.refresh(drops)
        p.drops = drops
        yield p

