"""`<pool>/evaluation/<subset>`: how a curated subset compares with a uniform random subset of
the same size drawn with the same seed (curation.evaluation): coverage, balance at every level
and, when the pool's items carry labels, label balance and k-NN accuracy. A WARN check fails
when the subset is worse than random on coverage or balance.

Labels come from the pool's labels file (`labels:` in the pool config, a CSV with item_id and
label under the pool's landing prefix), else from a `label` field of the items' metadata (a
column of the parquet drops, kept in `<pool>__raw`'s `meta` JSON).

The evaluation reads the vectors of a bounded, seeded sample only (the pool's `eval_sample`,
see curation.evaluation), by row id from one version of the embeddings table: its cost no
longer grows with the pool, so a refresh of a 1M pool is not held up by it.
"""


import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation import naming
from curation.evaluation import evaluate_selection
from curation.labels import parse_labels_csv, unmatched_note
from curation.pools import PoolConfig, SubsetSpec
from curation.report import evaluation_markdown
from curation.selection import item_keys
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .automation import consumed_metadata, fan_in_condition
from .tables import load_fit, vectors_of

TAKE_BATCH = 65536  # row ids per LanceDB take: bounded memory per request


def evaluation_key(pool: PoolConfig, spec: SubsetSpec) -> list[str]:
    return naming.evaluation_path(pool.name, spec.name)


@dataclass
class PoolIndex:
    """Every embedded item's small columns (no vectors), in the current tree, and a reader of
    the vectors of chosen rows from the same table version."""

    ids: list[str]
    uris: list[str]
    keys: np.ndarray  # (n,) uint64 item keys (curation.selection.item_keys)
    paths: np.ndarray  # (n, L) cluster ids, level 1 (leaf) first
    table: Any  # the embeddings table, checked out at the version the ids were read from
    row_ids: np.ndarray  # (n,) LanceDB _rowid of each row

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) float32 vectors of pool rows, taken by row id in batches."""
        rows = np.asarray(rows, dtype=np.int64)
        dim = self.table.schema.field("vector").type.list_size
        out = np.empty((rows.size, dim), np.float32)
        wanted = self.row_ids[rows]
        order = np.argsort(wanted, kind="stable")
        ordered = wanted[order]
        for lo in range(0, rows.size, TAKE_BATCH):
            chunk = ordered[lo : lo + TAKE_BATCH]
            got = (self.table.take_row_ids(chunk.tolist()).with_row_id()
                   .select(["vector"]).to_arrow())
            # the take answers in its own order: place each vector by its row id
            at = order[np.searchsorted(ordered, got["_rowid"].to_numpy())]
            out[at] = vectors_of(got["vector"])
            if got.num_rows != chunk.size:
                raise RuntimeError(f"asked for {chunk.size} rows, LanceDB returned "
                                   f"{got.num_rows}")
        return out


def pool_index(lancedb: LanceDBResource, pool: PoolConfig, fit) -> PoolIndex:
    """Ids, uris, keys and paths of every embedded item, in the current tree: the stored
    assignment where it is from this fit, else assigned here (reading only those vectors)."""
    table = lancedb.open(pool.table("embeddings"))
    table.checkout(table.version)  # ids and later vector takes see one version
    cols = (table.search().with_row_id(True).select(["item_id", "uri"]).limit(None)
            .to_arrow())
    ids = cols["item_id"].to_pylist()
    uris = cols["uri"].to_pylist()
    row_ids = cols["_rowid"].to_numpy().astype(np.uint64)
    n_levels = fit.hierarchy.n_levels
    level_cols = [f"level_{lv}" for lv in range(1, n_levels + 1)]
    paths = np.full((len(ids), n_levels), -1, np.int64)
    keys = np.zeros(len(ids), np.uint64)
    known = np.zeros(len(ids), bool)
    table_a = lancedb.open(pool.table("assignments"))
    with_keys = table_a is not None and "item_key" in table_a.schema.names
    wanted = ["item_id", "fit_version", *level_cols, *(["item_key"] if with_keys else [])]
    assigned = lancedb.read(pool.table("assignments"), wanted)
    if assigned is not None and assigned.num_rows:
        where = {item: i for i, item in enumerate(ids)}
        at = np.fromiter((where.get(i, -1) for i in assigned["item_id"].to_pylist()),
                         np.int64, assigned.num_rows)
        ok = at >= 0
        current = ok & (assigned["fit_version"].to_numpy() == fit.fit_version)
        stored = np.stack([assigned[c].to_numpy() for c in level_cols], axis=1)
        paths[at[current]] = stored[current]
        if with_keys:
            keys[at[ok]] = assigned["item_key"].to_numpy()[ok]
            known[at[ok]] = True
    if not known.all():
        keys[~known] = item_keys([ids[i] for i in np.flatnonzero(~known)])
    index = PoolIndex(ids, uris, keys, paths, table, row_ids)
    missing = np.flatnonzero(paths[:, 0] < 0)
    if missing.size:
        paths[missing] = fit.hierarchy.assign(index.vectors(missing)).paths
    return index


def pool_view(lancedb: LanceDBResource, pool: PoolConfig, fit):
    """(item_ids, uris, vectors (n, d), paths (n, L)) of every embedded item: all vectors,
    for offline use (benchmarks); the assets read only what they need (pool_index)."""
    index = pool_index(lancedb, pool, fit)
    return index.ids, index.uris, index.vectors(np.arange(len(index.ids))), index.paths


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def pool_labels(lancedb: LanceDBResource, landing: LandingStorage, pool: PoolConfig,
                item_ids: list[str], notes: list[str] | None = None
                ) -> tuple[np.ndarray | None, int]:
    """(labels of item_ids as strings, or None; how many items have none). Labels are used
    only when every item has one. A labels file that cannot be read or trusted fails the
    evaluation naming the file, the line and the problem; label ids that match no item are
    explained in `notes`."""
    found: dict[str, str] = {}
    if pool.labels:
        uri = labels_file_uri(landing, pool)
        try:
            data = landing.read_bytes(uri)
        except Exception as exc:  # a missing local file or S3 key, unreadable
            raise Failure(description=f"labels file {uri} (pool {pool.name!r}, `labels:`) "
                          f"cannot be read: {type(exc).__name__}: {exc}") from None
        try:
            found = parse_labels_csv(uri, data)
        except ValueError as exc:
            raise Failure(description=str(exc)) from None
        note = unmatched_note(found, item_ids)
        if note and notes is not None:
            notes.append(note)
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
        automation_condition=fan_in_condition(),
        check_specs=[AssetCheckSpec("not_worse_than_random", asset=key,
                                    description="coverage (p99 distance, leaf clusters hit) "
                                    "and top-level balance at least as good as random")],
        description=f"Subset {spec.name!r} against a uniform random subset of the same size "
        f"(seed {spec.seed}): coverage, balance per level, labels and k-NN accuracy.",
    )
    def evaluation(context: AssetExecutionContext, lancedb: LanceDBResource,
                   landing: LandingStorage) -> MaterializeResult:
        consumed = consumed_metadata(context, [AssetKey(naming.subset_path(pool.name,
                                                                           spec.name))])
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        subset = lancedb.read(pool.table(f"subset_{spec.name}"), ["item_id", "weight"])
        if subset is None or subset.num_rows == 0:
            raise ValueError(f"subset {spec.name} of pool {pool.name} is empty or missing")
        index = pool_index(lancedb, pool, fit)
        ids = index.ids
        where = {item: i for i, item in enumerate(ids)}
        chosen = subset["item_id"].to_pylist()
        rows = np.asarray([where.get(i, -1) for i in chosen], np.int64)
        keep = rows >= 0  # items no longer embedded (a re-embedded drop) drop out
        weights = subset["weight"].to_numpy()[keep]
        rows = rows[keep]
        order = np.argsort(rows)
        notes: list[str] = []
        labels, unlabelled = pool_labels(lancedb, landing, pool, ids, notes)
        report = evaluate_selection(index.vectors, index.paths, rows[order], weights[order],
                                    labels, keys=index.keys, seed=spec.seed,
                                    metric=pool.hierarchy.metric, eval_sample=pool.eval_sample)
        worse = report["worse_than_random"]
        sample = report["sample"]
        return MaterializeResult(
            metadata={
                **consumed,
                "evaluation": MetadataValue.json(report),
                "summary": MetadataValue.md(evaluation_markdown(report)),
                "pool_size": len(ids),
                "selected_items": int(rows.size),
                "labelled": labels is not None,
                "unlabelled_items": unlabelled,
                "labels_note": "; ".join(notes),
                "fit_version": fit.fit_version,
                "eval_sample": pool.eval_sample,
                "vectors_read": sample["vectors_read"],
                "sample_note": MetadataValue.md(
                    f"Coverage and k-NN figures come from a seeded sample: "
                    f"{sample['probe_items']} probe items, {sample['test_items']} k-NN test "
                    f"items, at most {pool.eval_sample} members per side "
                    f"(curated {sample['curated_vector_items']}, random "
                    f"{sample['random_vector_items']}); vectors of {sample['vectors_read']} "
                    f"of {len(ids)} items read. Balance, leaf share and label figures are "
                    "exact over the whole pool."),
                **_summary(report),
            },
            check_results=[AssetCheckResult(
                check_name="not_worse_than_random", passed=not worse,
                severity=AssetCheckSeverity.WARN,
                metadata={"reasons": MetadataValue.json(worse), **_summary(report)},
            )],
        )

    return evaluation
