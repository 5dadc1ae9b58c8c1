"""`<pool>/evaluation/<subset>`: how a curated subset compares with a uniform random subset of
the same size drawn with the same seed (curation.evaluation): coverage, balance at every level
and, when the pool's items carry labels, label balance and k-NN accuracy. A WARN check fails
when the subset is worse than random on coverage or balance.

Labels come from the pool's labels file (`labels:` in the pool config, a CSV with item_id and
label under the pool's landing prefix), else from a `label` field of the items' metadata (a
column of the parquet drops, kept in `<pool>__raw`'s `meta` JSON).
"""


import csv
import io
import json
from pathlib import Path

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation import naming
from curation.evaluation import evaluate_selection
from curation.pools import PoolConfig, SubsetSpec
from curation.report import evaluation_markdown
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .tables import load_fit, stream_vectors


def evaluation_key(pool: PoolConfig, spec: SubsetSpec) -> list[str]:
    return naming.evaluation_path(pool.name, spec.name)


def pool_view(lancedb: LanceDBResource, pool: PoolConfig, fit):
    """(item_ids, uris, vectors (n, d), paths (n, L)) of every embedded item, in the current
    tree: the stored assignment where it is from this fit, else assigned here."""
    cols, x = stream_vectors(lancedb.open(pool.table("embeddings")), columns=("item_id", "uri"))
    ids = cols["item_id"].to_pylist()
    uris = cols["uri"].to_pylist()
    n_levels = fit.hierarchy.n_levels
    level_cols = [f"level_{lv}" for lv in range(1, n_levels + 1)]
    paths = np.full((len(ids), n_levels), -1, np.int64)
    table = lancedb.read(pool.table("assignments"), ["item_id", "fit_version", *level_cols])
    if table is not None and table.num_rows:
        where = {item: i for i, item in enumerate(ids)}
        current = table["fit_version"].to_numpy() == fit.fit_version
        stored = np.stack([table[c].to_numpy() for c in level_cols], axis=1)
        for item, row, ok in zip(table["item_id"].to_pylist(), stored, current, strict=True):
            i = where.get(item)
            if ok and i is not None:
                paths[i] = row
    missing = np.flatnonzero(paths[:, 0] < 0)
    if missing.size:
        paths[missing] = fit.hierarchy.assign(x[missing]).paths
    return ids, uris, x, paths


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def pool_labels(lancedb: LanceDBResource, landing: LandingStorage, pool: PoolConfig,
                item_ids: list[str]) -> tuple[np.ndarray | None, int]:
    """(labels of item_ids as strings, or None; how many items have none). Labels are used
    only when every item has one."""
    found: dict[str, str] = {}
    if pool.labels:
        text = landing.read_bytes(labels_file_uri(landing, pool)).decode("utf-8")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("item_id") and row.get("label") not in (None, ""):
                found[row["item_id"]] = str(row["label"])
    else:
        raw = lancedb.read(pool.table("raw"), ["item_id", "meta"])
        if raw is not None:
            for item, meta in zip(raw["item_id"].to_pylist(), raw["meta"].to_pylist(),
                                  strict=True):
                if meta:
                    value = json.loads(meta).get("label")
                    if value is not None:
                        found[item] = str(value)
    missing = sum(1 for i in item_ids if i not in found)
    if not found or missing:
        return None, missing
    return np.asarray([found[i] for i in item_ids]), 0


def _summary(report: dict) -> dict:
    cur, rnd = report["curated"], report["random"]
    top = list(cur["balance"])[-1]
    out = {
        "coverage_p99_curated": cur["coverage"]["p99"],
        "coverage_p99_random": rnd["coverage"]["p99"],
        "leaf_share_curated": cur["coverage"]["leaf_share"],
        "leaf_share_random": rnd["coverage"]["leaf_share"],
        "top_entropy_curated": cur["balance"][top]["entropy"],
        "top_entropy_random": rnd["balance"][top]["entropy"],
    }
    if "labels" in cur:
        out.update({
            "label_entropy_curated": cur["labels"]["label_entropy"],
            "label_entropy_random": rnd["labels"]["label_entropy"],
            "knn_balanced_accuracy_curated": cur["knn"]["balanced_accuracy"],
            "knn_balanced_accuracy_random": rnd["knn"]["balanced_accuracy"],
        })
    return out


def build_evaluation_asset(pool: PoolConfig, spec: SubsetSpec):
    key = evaluation_key(pool, spec)

    @asset(
        key=key,
        deps=[naming.subset_path(pool.name, spec.name)],
        group_name=pool.name,
        automation_condition=AutomationCondition.eager(),
        check_specs=[AssetCheckSpec("not_worse_than_random", asset=key,
                                    description="coverage (p99 distance, leaf clusters hit) "
                                    "and top-level balance at least as good as random")],
        description=f"Subset {spec.name!r} against a uniform random subset of the same size "
        f"(seed {spec.seed}): coverage, balance per level, labels and k-NN accuracy.",
    )
    def evaluation(lancedb: LanceDBResource, landing: LandingStorage) -> MaterializeResult:
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        subset = lancedb.read(pool.table(f"subset_{spec.name}"), ["item_id", "weight"])
        if subset is None or subset.num_rows == 0:
            raise ValueError(f"subset {spec.name} of pool {pool.name} is empty or missing")
        ids, _, x, paths = pool_view(lancedb, pool, fit)
        where = {item: i for i, item in enumerate(ids)}
        chosen = subset["item_id"].to_pylist()
        rows = np.asarray([where.get(i, -1) for i in chosen], np.int64)
        keep = rows >= 0  # items no longer embedded (a re-embedded drop) drop out
        weights = subset["weight"].to_numpy()[keep]
        rows = rows[keep]
        order = np.argsort(rows)
        labels, unlabelled = pool_labels(lancedb, landing, pool, ids)
        report = evaluate_selection(x, paths, rows[order], weights[order], labels,
                                    seed=spec.seed, metric=pool.hierarchy.metric)
        worse = report["worse_than_random"]
        return MaterializeResult(
            metadata={
                "evaluation": MetadataValue.json(report),
                "summary": MetadataValue.md(evaluation_markdown(report)),
                "pool_size": len(ids),
                "selected_items": int(rows.size),
                "labelled": labels is not None,
                "unlabelled_items": unlabelled,
                "fit_version": fit.fit_version,
                **_summary(report),
            },
            check_results=[AssetCheckResult(
                check_name="not_worse_than_random", passed=not worse,
                severity=AssetCheckSeverity.WARN,
                metadata={"reasons": MetadataValue.json(worse), **_summary(report)},
            )],
        )

    return evaluation
