"""The randomised concurrency checker under the real daemon (curation_demo/concurrency.py): on
the production instance (deploy/dagster.yaml: PostgreSQL, queued runs, per-pool limit 4, run
monitoring and retries; real dagster-webserver and dagster-daemon), with the landing and LanceDB
on a local folder, then both on S3 (moto's server), a seed's drops, forced refits, takedown
files, exports and evaluations land at seeded random moments, and after every published subset
version, and at the end, the checker holds the platform to:

- I1 every subset version is drawn from one complete snapshot (every embedded drop assigned at
  the subset's fit, at the versions its manifest records);
- I2 no readable version of any table, nor an export, holds an item once its takedown run
  succeeded;
- I3 no run (nor export) failed on a storage conflict;
- I4 every delivered item is exactly once ingested, a duplicate or quarantined.

The failure message names the invariant, the subset or table version, and the drops or items.
More seeds: $CURATION_CONCURRENCY_SEEDS (comma list), $CURATION_CONCURRENCY_STEPS, or
benchmarks/bench_concurrency.py --seeds N.
"""

from __future__ import annotations

import os

import pytest

from curation_demo import concurrency as cc

pytestmark = pytest.mark.slow

SEEDS = [int(s) for s in os.environ.get("CURATION_CONCURRENCY_SEEDS", "1").split(",")]
STEPS = int(os.environ.get("CURATION_CONCURRENCY_STEPS", "8"))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_invariants_hold_at_random_moments_under_the_daemon(kind, seed, tmp_path, postgres,
                                                             request):
    if kind == "s3":
        backend = cc.s3_backend(request.getfixturevalue("moto_s3"))
    else:
        backend = cc.local_backend(tmp_path / "data")
    result = cc.run_seed(seed, backend, postgres, tmp_path / "seed", STEPS)
    for note in result.notes:
        print(f"note: {note}")
    assert not result.violations, result.failure()
    # a pass means something only if subset versions were published and checked
    assert result.subset_versions_checked >= 2, result
    assert sum(result.actions.values()) == STEPS
