"""`curate demo`: the platform end to end on a real pool, under the real Dagster daemon.

--pool fashion (default): long-tailed drops of real Fashion-MNIST images (Zipf class sizes,
shuffled across the drops; labels in <landing>/fashion/labels.csv), embedded by the pool's
EfficientNet-Lite0 at 64 px. --pool texts: a long-tailed templated corpus through MiniLM.
--pool demo: synthetic precomputed 64-d vectors (no model), without labels (as a web-scale
SSL pool: its evaluations have coverage, balance and leaf share, and say the label figures
are absent).

Lands the drops in the landing folder, starts `dagster-daemon` over workspace.yaml with an
instance under $CURATION_HOME/dagster (deploy/dagster.local.yaml; `make dev` shows it
afterwards) and waits while the code location's sensors and automation move them through the
graph: raw, embeddings, the first fit, assignments, subsets, their evaluation against a
same-size random subset and the pool's HTML report ($CURATION_HOME/reports/<pool>.html). Then
lands one more drop and times it until every subset includes it (no refit). Says on stderr
what happens as it happens (drops landed, runs started and finished with their assets, items
embedded per second, the fit, each subset, evaluation and report refreshed; a bar counts the
drops embedded). Prints one JSON line on stdout: subset tables, report paths (JSON summary and
HTML), pool size, items selected, curated-vs-random figures (the label-free ones only, with
`label_figures` saying why, for a pool without labels) and, for the labelled pools, the
class balance of pool, subsets and a uniform random subset of equal size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_ITEMS = {"fashion": 8000, "texts": 600, "demo": 16000}
# Zipf exponent of the class sizes; the templated corpus has few distinct sentences per topic
# (duplicates are dropped on ingestion), so it needs a steeper tail to stay skewed.
EXPONENT = {"fashion": 1.2, "texts": 2.0}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the Dagster platform end to end on a real (or synthetic) pool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", default=None, help="storage root (default $CURATION_HOME or "
                   "./.curation)")
    p.add_argument("--pool", default="fashion", choices=sorted(DEFAULT_ITEMS),
                   help="fashion: Fashion-MNIST images (default); texts: MiniLM on a "
                   "templated corpus; demo: synthetic vectors")
    p.add_argument("--drops", type=int, default=4, help="initial drops")
    p.add_argument("--items", type=int, default=None,
                   help="items over the initial drops (default: fashion 8000, texts 600, "
                   "demo 16000); the extra drop holds items/drops more")
    p.add_argument("--drop-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tick", type=int, default=3,
                   help="seconds between sensor and automation ticks (default 3; 30 in "
                   "production)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds to wait for each stage before giving up")
    p.set_defaults(func=run)


def land_labelled_drops(prefix_dir: Path, kind: str, n_drops: int, n_items: int,
                        seed: int) -> list[str]:
    """Build drops in a scratch folder, then move them in under the next free drop numbers
    and append their labels to prefix_dir/labels.csv (so a second demo run adds new drops)."""
    from .data import LABELS_FILE, build_fashion_mnist_drops, build_text_drops

    build, stem = {"fashion": (build_fashion_mnist_drops, "fmnist"),
                   "texts": (build_text_drops, "text")}[kind]
    prefix_dir.mkdir(parents=True, exist_ok=True)
    first = len(list(prefix_dir.glob(f"{stem}-*")))
    labels = prefix_dir / LABELS_FILE
    with tempfile.TemporaryDirectory(dir=prefix_dir.parent) as scratch:
        # a later run draws other items (seed + drops already there): the same content again
        # would be a re-delivery, which the drop sensor rightly skips, and the demo would wait
        made = build(Path(scratch), n_drops=n_drops, n_items=n_items, seed=seed + first,
                     exponent=EXPONENT[kind])
        rows = list(csv.reader((Path(scratch) / LABELS_FILE).open(newline="")))
        header, rows = rows[0], rows[1:]
        renamed = {old: f"{stem}-{first + i:04d}" for i, old in enumerate(made)}
        for old, new in renamed.items():
            shutil.move(str(Path(scratch) / old), str(prefix_dir / new))
        new_file = not labels.exists()
        with labels.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new_file:
                writer.writerow(header)
            writer.writerows([renamed[r[0]], *r[1:]] for r in rows)
    return list(renamed.values())


def class_balance(labels_csv: Path, lancedb, pool, subsets: dict, seed: int = 0) -> dict:
    """Class balance (entropy in nats, top-1 share, classes hit) of the pool, each subset and
    a uniform random subset of the first subset's size, from the labels file (by item_id)."""
    from curation.metrics import selection_label_stats

    with labels_csv.open(newline="") as fh:
        label_of = {row["item_id"]: row["class_name"] for row in csv.DictReader(fh)}

    def stats(item_ids) -> dict:
        labels = np.asarray([label_of[i] for i in item_ids if i in label_of])
        s = selection_label_stats(labels)
        return {"items": int(labels.size), "entropy": round(s["label_entropy"], 4),
                "top1_share": round(s["top1_share"], 4), "classes_hit": s["labels_hit"]}

    pool_ids = lancedb.read(pool.table("embeddings"), ["item_id"])["item_id"].to_pylist()
    out = {"classes": len(set(label_of.values())), "pool": stats(pool_ids)}
    size = 0
    for name, info in subsets.items():
        ids = lancedb.read(info["table"], ["item_id"])["item_id"].to_pylist()
        out[name] = stats(ids)
        size = size or len(ids)
    rng = np.random.default_rng(seed)
    out["uniform_random"] = stats(rng.choice(pool_ids, size=min(size, len(pool_ids)),
                                             replace=False).tolist())
    return out


def evaluation_figures(meta: dict) -> dict:
    """Curated vs random headline figures of one evaluation asset's metadata, rounded; for a
    pool without labels the label-free ones, and `label_figures` saying why the rest are
    absent."""
    keys = [k for k in meta if k.endswith(("_curated", "_random"))]
    out: dict = {k: round(float(meta[k]), 4) for k in keys}
    note = str(meta.get("label_figures", ""))
    if note.startswith("absent"):
        out["label_figures"] = note
    return out


def run(args: argparse.Namespace) -> int:
    if args.home:
        os.environ["CURATION_HOME"] = args.home
    from curation import settings

    home = settings.curation_home().resolve()
    os.environ["CURATION_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster")))
    n_items = args.items or (args.drop_size * args.drops if args.drop_size else None)
    n_items = n_items or DEFAULT_ITEMS[args.pool]
    if args.drops < 1 or n_items < args.drops:
        raise ValueError("--drops must be >= 1 and --items >= --drops")

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    from curation.pools import load_pools
    from resources.lancedb import LanceDBResource

    from . import live
    from .progress import DemoProgress
    from .synthetic import build_synthetic_drops

    pools = load_pools()
    matching = [p for p in pools if p.name == args.pool]
    if not matching:
        raise ValueError(f"no pool {args.pool!r} in the pools file (have "
                         f"{', '.join(p.name for p in pools)})")
    pool = matching[0]
    landing = Path(settings.landing_url())
    prefix_dir = landing / pool.prefix
    lancedb = LanceDBResource(uri=settings.lancedb_uri(), endpoint_url=settings.s3_endpoint_url())
    live.write_instance_yaml(dagster_home)
    started = time.perf_counter()
    progress = DemoProgress(pool)
    progress.say(f"pool {pool.name}: building {args.drops} drops under {prefix_dir}")

    extra = max(n_items // args.drops, 1)  # items of the drop added for the incremental path
    if pool.modality == "vectors":
        existing = len(list(prefix_dir.glob("drop-*")))
        # unlabelled, as a web-scale SSL pool: its evaluations show the label-free figures
        drops = build_synthetic_drops(landing, pool.prefix, args.drops, n_items // args.drops,
                                      pool.dim or 64, args.seed, first=existing, labels=False)
    else:
        # All drops come from one draw (one class distribution, no item twice); the last is
        # held back outside the landing folder until the incremental step lands it.
        kind = "fashion" if pool.modality == "images" else "texts"
        drops = land_labelled_drops(prefix_dir, kind, args.drops + 1, n_items + extra,
                                    args.seed)
        held = home / "held" / drops[-1]
        held.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(prefix_dir / drops[-1]), str(held))
        drops = drops[:-1]
    first_items = n_items // args.drops * args.drops if pool.modality == "vectors" else n_items

    def land_extra() -> list[str]:
        if pool.modality == "vectors":
            return build_synthetic_drops(landing, pool.prefix, 1, extra, pool.dim or 64,
                                         args.seed, first=existing + args.drops, labels=False)
        shutil.move(str(held), str(prefix_dir / held.name))
        return [held.name]

    def reporting(check):
        """`check`, after saying what the daemon did since the last poll."""
        def predicate():
            progress.poll(instance)
            return check()
        return predicate

    timings = {"landing_s": round(time.perf_counter() - started, 2)}
    # The drops move through the code location's own sensors and automation under a real
    # dagster-daemon; the demo only shortens the tick intervals (configuration, no other path).
    env = {"CURATION_SENSOR_INTERVAL_S": str(args.tick), "CURATION_AUTOMATION_INTERVAL_S":
           str(args.tick), "CURATION_HOME": str(home)}
    instance = DagsterInstance.get()  # creates the instance's storage before the daemon does
    with progress, live.daemon(dagster_home, env) as proc:
        progress.landed(drops, first_items, str(prefix_dir))
        progress.say(f"dagster-daemon started (ticks every {args.tick} s, log "
                     f"{proc.log_path}); waiting for the subsets over these drops")
        since = time.time() - 1
        live.wait_until(reporting(lambda: live.subsets_cover(instance, lancedb, pool, since)),
                        args.timeout, f"subsets of pool {pool.name} over the first drops", proc)
        timings["full_s"] = round(time.perf_counter() - started, 2)
        fits_before = live.materialization_count(instance, [pool.name, "level_1"])

        t, landed_at = time.perf_counter(), time.time()
        new = land_extra()
        progress.landed(new, extra, str(prefix_dir))
        progress.say("waiting until every subset includes it")
        subsets = live.wait_until(
            reporting(lambda: live.subsets_cover(instance, lancedb, pool, landed_at)),
            args.timeout, f"subsets after drop {new[0]}", proc)
        refreshed_at = time.time()
        timings["incremental_s"] = round(time.perf_counter() - t, 2)
        progress.say(f"every subset includes drop {new[0]}, {timings['incremental_s']} s "
                     "after it landed; waiting for the evaluations and the report")
        timeline = live.drop_timeline(instance, pool.name, new[0], landed_at, refreshed_at)
        report_key = [pool.name, "report"]
        # the evaluations over the refreshed subsets, then the report over them
        live.wait_until(reporting(lambda: live.reports_caught_up(instance, pool)),
                        args.timeout,
                        "the evaluations and the report over the refreshed subsets", proc)
        progress.poll(instance)
        evaluation = {s.name: evaluation_figures(live.latest_metadata(
            instance, [pool.name, "evaluation", s.name])[1]) for s in pool.subsets}
        html_report = live.latest_metadata(instance, report_key)[1].get("path")
        fits = live.materialization_count(instance, [pool.name, "level_1"])
        failed_runs = instance.get_run_records(RunsFilter(
            statuses=[DagsterRunStatus.FAILURE], tags={"curation/pool": pool.name}))
        failed = sorted({r.dagster_run.tags.get("curation/drop") for r in failed_runs} - {None})
    subsets = {name: {
        "table": meta["lancedb_table"], "selected": meta["selected_items"],
        # the pool's items: the eligible ones plus the near duplicates left out for them
        "pool_size": meta["pool_size"] + meta.get("duplicates_excluded", 0),
        "near_duplicates_excluded": meta.get("duplicates_excluded", 0),
        "manifest_sha256": meta["manifest_sha256"],
        "top1_share_pool": round(meta["top1_share_pool"], 4),
        "top1_share_subset": round(meta["top1_share_subset"], 4),
    } for name, meta in subsets.items()}
    balance = None
    labels_csv = prefix_dir / "labels.csv"
    if pool.modality != "vectors" and labels_csv.exists():
        balance = class_balance(labels_csv, lancedb, pool, subsets, args.seed)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    report = {
        "pool": pool.name, "drops": [*drops, *new], "failed_drops": failed,
        "lancedb": settings.lancedb_uri(), "dagster_home": str(dagster_home),
        "fits": fits, "incremental_refit": fits > fits_before,
        "incremental_timeline": timeline.__dict__,
        "subsets": subsets, "class_balance": balance, "evaluation": evaluation,
        "html_report": html_report, **timings,
    }
    report_path = home / "demo_report.json"
    report_path.write_text(json.dumps(report, indent=2))
    progress.say(f"done in {timings['total_s']} s; full report {report_path}")
    any_subset = next(iter(subsets.values()), {})
    line = {
        "pool": pool.name,
        "subset_tables": [s["table"] for s in subsets.values()],
        "report": str(report_path),
        "html_report": html_report,
        "pool_size": any_subset.get("pool_size", 0),
        "near_duplicates_excluded": any_subset.get("near_duplicates_excluded", 0),
        "selected": {name: s["selected"] for name, s in subsets.items()},
        "incremental_s": timings["incremental_s"],
    }
    if balance is not None:
        line["class_balance"] = balance
    if evaluation:
        line["curated_vs_random"] = evaluation
    print(json.dumps(line))
    return 0 if subsets and not failed else 1
