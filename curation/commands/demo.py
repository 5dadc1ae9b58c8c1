"""`curate demo`: the platform end to end on synthetic drops, in-process, in under a minute.

Writes long-tailed synthetic vector drops (parquet + _SUCCESS) into the landing folder,
materialises the whole Dagster graph over them in a real instance under $CURATION_HOME
(so `dagster dev` shows the runs afterwards), then lands one more drop and runs the
incremental path (raw and embeddings of that drop, assignment to the current tree, subsets).
Prints one JSON line: subset tables, report path, pool size, items selected.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def write_vector_drop(folder: Path, vectors: np.ndarray, item_ids: list[str],
                      extra: dict | None = None, complete: bool = True) -> Path:
    """One precomputed-vector drop: folder/part-0.parquet (+ _SUCCESS when complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    columns = {
        "item_id": pa.array(item_ids, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)),
                                                    vectors.shape[1]),
        **(extra or {}),
    }
    pq.write_table(pa.table(columns), folder / "part-0.parquet")
    if complete:
        (folder / "_SUCCESS").write_text("")
    return folder


def build_synthetic_drops(landing: Path, prefix: str, n_drops: int, drop_size: int, dim: int,
                          seed: int = 0, first: int = 0) -> list[str]:
    """Drops drop-<first>.. of one long-tailed Gaussian mixture (fixed concepts, fresh points
    per drop). A `label` column (the mixture component) rides along as item metadata so the
    balance of a subset can be scored later. Swap this function for real data (images)."""
    import pyarrow as pa

    drops = []
    for d in range(first, first + n_drops):
        x, labels = _redraw(drop_size, dim, seed * 1_000_003 + d)
        drop = f"drop-{d:05d}"
        ids = [f"{drop}-{i:06d}" for i in range(drop_size)]
        write_vector_drop(landing / prefix / drop, x, ids, {"label": pa.array(labels)})
        drops.append(drop)
    return drops


def _redraw(n: int, dim: int, seed: int, n_components: int = 200, zipf: float = 1.1,
            n_super: int = 20):
    """Points of one fixed long-tailed mixture (means from seed 0), drawn with `seed`.

    Component sizes follow a Zipf law (like make_synth.py); component means are grouped
    around `n_super` super-concepts, as concepts are in real data, so the upper levels of the
    tree have structure to find (with independent means they merge arbitrarily).
    """
    fixed = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, n_components + 1) ** zipf
    weights /= weights.sum()
    centres = fixed.normal(0.0, 6.0, size=(n_super, dim))
    means = centres[fixed.integers(0, n_super, n_components)]
    means = means + fixed.normal(0.0, 2.0, size=(n_components, dim))
    scales = fixed.uniform(0.5, 1.5, size=n_components)
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_components, size=n, p=weights)
    points = means[labels] + rng.normal(size=(n, dim)) * scales[labels, None]
    return points.astype(np.float32), labels.astype(np.int64)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the Dagster platform end to end on synthetic drops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", default=None, help="storage root (default $CURATION_HOME or "
                   "./.curation)")
    p.add_argument("--drops", type=int, default=4, help="initial drops")
    p.add_argument("--drop-size", type=int, default=4000, help="items per drop")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.home:
        os.environ["CURATION_HOME"] = args.home
    from curation_dags import settings

    home = settings.curation_home().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    if args.drops < 1 or args.drop_size < 1:
        raise ValueError("--drops and --drop-size must be >= 1")

    from dagster import DagsterInstance

    from curation.pools import load_pools
    from curation_dags.definitions import build_definitions, default_resources
    from curation_dags.local import ingest_drop, refresh

    pool = next(p for p in load_pools() if p.name == "demo") if not os.environ.get(
        "CURATION_POOLS") else load_pools()[0]
    landing = Path(settings.landing_url())
    started = time.perf_counter()
    existing = sorted(p.name for p in (landing / pool.prefix).glob("drop-*"))
    drops = build_synthetic_drops(landing, pool.prefix, args.drops, args.drop_size,
                                  pool.dim or 64, args.seed, first=len(existing))
    defs = build_definitions([pool], default_resources([pool]), with_sensors=False)
    instance = DagsterInstance.get()
    timings = {}
    for drop in drops:
        ingest_drop(defs, instance, pool, drop)
    full = refresh(defs, instance, pool, drops)
    timings["full_s"] = round(time.perf_counter() - started, 2)

    t = time.perf_counter()
    new = build_synthetic_drops(landing, pool.prefix, 1, args.drop_size, pool.dim or 64,
                                args.seed, first=len(existing) + len(drops))
    ingest_drop(defs, instance, pool, new[0])
    incremental = refresh(defs, instance, pool, new)
    timings["incremental_s"] = round(time.perf_counter() - t, 2)

    subsets = {}
    for result in incremental["results"][-1:]:
        for event in result.get_asset_materialization_events():
            m = event.event_specific_data.materialization
            meta = {k: v.value for k, v in m.metadata.items()}
            subsets[m.asset_key.path[-1]] = {
                "table": meta["lancedb_table"], "selected": meta["selected_items"],
                "pool_size": meta["pool_size"], "manifest_sha256": meta["manifest_sha256"],
                "top1_share_pool": round(meta["top1_share_pool"], 4),
                "top1_share_subset": round(meta["top1_share_subset"], 4),
            }
    report = {
        "pool": pool.name, "drops": [*drops, *new], "lancedb": settings.lancedb_uri(),
        "dagster_home": os.environ["DAGSTER_HOME"], "first_refit": full["refit"],
        "incremental_refit": incremental["refit"], "subsets": subsets, **timings,
    }
    report_path = home / "demo_report.json"
    report_path.write_text(json.dumps(report, indent=2))
    any_subset = next(iter(subsets.values()), {})
    print(json.dumps({
        "subset_tables": [s["table"] for s in subsets.values()],
        "report": str(report_path),
        "pool_size": any_subset.get("pool_size", 0),
        "selected": {name: s["selected"] for name, s in subsets.items()},
    }))
    return 0 if subsets else 1
