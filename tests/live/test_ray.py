"""Drop runs of this project's code location on a real two-node Ray cluster (issue 17, point 3).

The steps go to Ray through dagster-ray's executor (`$CURATION_EXECUTOR=ray`): each step is a
Ray job, one CPU each, on a cluster of two nodes of one CPU each (`ray start --head` and a
second `ray start --address=...` on 127.0.0.1), so two drop runs at once put their steps on
both nodes. The Dagster instance is PostgreSQL and the landing and LanceDB live on S3 (moto's
server): nothing a step needs is on a local disk, and each node has its own temp dir.

Ray binds the host's non-loopback address whatever --node-ip-address says, so the cluster and
this test run in a private network namespace: the test re-runs itself under `unshare --net`
(loopback only) and skips, saying why, where unshare is not permitted.

Each step rebuilds the drop job in its Ray job from an installed module
(`curation_demo.live.drop_job`): tests/ is not on a Ray job's sys.path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

IN_NETNS = "CURATION_TEST_IN_NETNS"  # set in the re-run under unshare --net
POOL = "rayed"
DROPS = {"d0": 300, "d1": 240}


def _rerun_in_private_network(test_id: str) -> None:
    """Run this test again in a new network namespace with only loopback up; fail with its
    output when it fails, skip when the namespace is refused."""
    import shutil

    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (util-linux, iproute2): no private "
                    "network namespace for the Ray cluster")
    script = 'ip link set lo up && exec "$0" -m pytest -q -x -p no:cacheprovider "$1"'
    proc = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, sys.executable, test_id],
        env={**os.environ, IN_NETNS: "1"}, capture_output=True, text=True, timeout=900,
        cwd=Path(__file__).resolve().parents[2])
    if proc.returncode != 0 and "unshare" in proc.stderr and "ermitted" in proc.stderr:
        pytest.skip(f"unshare --net is not permitted here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]


def _run_drop(drop: str, env: dict, start, out) -> None:
    """One drop run (run worker in this process, steps on Ray); `start` releases the runs
    together, so that their steps overlap and need both nodes (one CPU each)."""
    os.environ.update(env)
    try:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            start.wait(timeout=300)
            from curation_demo.live import reconstructable_drop_job

            result = dg.execute_job(reconstructable_drop_job(), instance,
                                    tags={"dagster/partition": drop})
            out.put((drop, result.run_id, result.success))
    except BaseException as exc:  # noqa: BLE001 (reported by the parent)
        out.put((drop, repr(exc), False))


def test_drop_runs_on_a_two_node_ray_cluster(request, tmp_path):
    if os.environ.get(IN_NETNS) != "1":
        _rerun_in_private_network(request.node.nodeid)
        return
    import json
    import multiprocessing
    import shutil
    import tempfile

    import numpy as np
    from kit import DIM, small_pool
    from ray.job_submission import JobSubmissionClient
    from servers import S3_CREDENTIALS, ray_cluster

    from curation.store import PoolStore, storage_options
    from curation_demo.live import new_database
    from curation_demo.synthetic import write_vector_drop

    moto_s3 = request.getfixturevalue("moto_s3")
    bucket, client = request.getfixturevalue("s3_bucket")
    postgres = request.getfixturevalue("postgres")
    aws = {"AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
           "AWS_DEFAULT_REGION": S3_CREDENTIALS["region_name"]}
    # the drops, on S3 only
    rng = np.random.default_rng(0)
    for drop, n in DROPS.items():
        folder = write_vector_drop(tmp_path / "outbox" / drop,
                                   rng.normal(size=(n, DIM)).astype(np.float32),
                                   [f"{drop}-{i}" for i in range(n)])
        for f in sorted(folder.iterdir(), key=lambda f: f.name == "_SUCCESS"):
            client.put_object(Bucket=bucket, Key=f"landing/{POOL}/{drop}/{f.name}",
                              Body=f.read_bytes())
    pools = tmp_path / "pools.json"  # the tests' small vectors pool, under its own name
    pools.write_text(json.dumps({"pools": [small_pool(name=POOL).model_dump(mode="json")]}))
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).resolve().parents[2] / "deploy"
                                        / "dagster.yaml").read_text())
    local_home = tmp_path / "nowhere"  # CURATION_HOME: nothing may be written or read there
    ray_root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths
    try:
        with ray_cluster(ray_root) as cluster:
            env = {**aws, **new_database(postgres, "ray_runs"),
                   "DAGSTER_HOME": str(home), "CURATION_HOME": str(local_home),
                   "CURATION_POOLS": str(pools), "CURATION_LANDING": f"s3://{bucket}/landing",
                   "CURATION_LANCEDB_URI": f"s3://{bucket}/lancedb",
                   "CURATION_S3_ENDPOINT_URL": moto_s3, "CURATION_EXECUTOR": "ray",
                   "CURATION_RAY_ADDRESS": cluster.jobs_url}
            os.environ.update(env)
            import dagster as dg

            with dg.DagsterInstance.get() as instance:
                instance.add_dynamic_partitions(f"{POOL}_drops", list(DROPS))
            spawn = multiprocessing.get_context("spawn")
            start, out = spawn.Barrier(len(DROPS)), spawn.Queue()
            runs = [spawn.Process(target=_run_drop, args=(d, env, start, out)) for d in DROPS]
            for r in runs:
                r.start()
            results = {d: (run_id, ok) for d, run_id, ok in (out.get(timeout=600) for _ in runs)}
            for r in runs:
                r.join(timeout=60)
            assert all(ok for _, ok in results.values()), results
            run_ids = {run_id for run_id, _ in results.values()}
            jobs = [j for j in JobSubmissionClient(cluster.jobs_url).list_jobs()
                    if (j.metadata or {}).get("dagster/run-id") in run_ids]
            steps = {(j.metadata["dagster/run-id"], j.metadata["dagster/op"]) for j in jobs}
            assert len(steps) == 2 * len(DROPS), jobs  # raw and embeddings of each drop, on Ray
            assert {j.driver_node_id for j in jobs} == set(cluster.node_ids), jobs  # both nodes
            # each step worked in the temp dir of the node that ran it: its driver log is there;
            # the worker node's holds its own steps' logs only (the head's job server keeps a
            # copy of every job's log)
            worker = next(n for n, d in cluster.temp_dirs.items() if d.name == "worker")
            for j in jobs:
                logs = {node: any(d.glob(f"session_2*/logs/job-driver-{j.submission_id}.log"))
                        for node, d in cluster.temp_dirs.items()}
                assert logs[j.driver_node_id], (j, logs)
                assert logs[worker] == (j.driver_node_id == worker), (j, logs)
    finally:
        shutil.rmtree(ray_root, ignore_errors=True)

    store = PoolStore.open_uri(f"s3://{bucket}/lancedb", POOL, storage_options(moto_s3))
    assert store.drop_counts("embeddings") == DROPS
    assert not local_home.exists()  # no step fell back to a local folder
