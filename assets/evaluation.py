"""`<pool>/evaluation/<subset>`: how a curated subset compares with the pool's
`eval_random_draws` (default 5) seeded uniform random subsets of the same size
(curation.evaluation.evaluate_subset): coverage, balance at every level and, when the pool's
items carry labels, label balance and k-NN accuracy, each against the random mean and spread
(std, min, max) with a verdict: better than random, no better than random (inside the noise of
the draws) or worse than random. The metadata holds the figures as a table and as a plot
(curation.report), each saying which direction is better.

The check `not_worse_than_random` judges the headline figures (curation.evaluation.
check_outcome): it passes when curation pays on each of them and fails with WARN severity,
the numbers in its description and metadata, when one is no better than random or worse than
random. WARN for a loss too, not ERROR: with five draws a uniform subset judged against the
others reads "worse" on some headline figure about one time in ten (measured, docs/SUBSETS.md),
too often for a red light; the description says which of the two it is.

Labels come from the pool's labels file (`labels:` in the pool config, a CSV with item_id and
label under the pool's landing prefix), else from a `label` field of the items' metadata (a
column of the parquet drops, kept in `<pool>__raw`'s `meta` JSON).

The evaluation reads the vectors of a bounded, seeded sample only (the pool's `eval_sample`,
see curation.evaluation), by row id from one version of the embeddings table: its cost no
longer grows with the pool, so a refresh of a 1M pool is not held up by it. The storage reads
are the functions below the asset's imports; everything else is the core's.
"""

from functools import partial
from pathlib import Path

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation.evaluation import (
    BETTER_VERDICT,
    PoolIndex,
    better,
    check_outcome,
    evaluate_subset,
    headline_directions,
    headline_spread,
    index_items,
    label_codes,
    meta_labels,
)
from curation.labels import parse_labels_csv, unmatched_note
from curation.pools import PoolConfig, SubsetSpec
from curation.report import (
    evaluation_figure_markdown,
    evaluation_markdown,
    versus_random_markdown,
)
from curation.selection import item_keys
from curation.store import stream, vectors_of
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from . import keys
from .automation import consumed_metadata, fan_in_condition

TAKE_BATCH = 65536  # row ids per LanceDB take: bounded memory per request


# ---- storage reads ------------------------------------------------------------------------------

def take_vectors(table, row_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), d) float32 vectors of pool rows (positions in `row_ids`, the LanceDB row id
    of each pool row), taken by row id in batches from the pinned `table`."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.size, table.schema.field("vector").type.list_size), np.float32)
    wanted = row_ids[rows]
    order = np.argsort(wanted, kind="stable")
    ordered = wanted[order]
    for lo in range(0, rows.size, TAKE_BATCH):
        chunk = ordered[lo : lo + TAKE_BATCH]
        got = table.take_row_ids(chunk.tolist()).with_row_id().select(["vector"]).to_arrow()
        # the take answers in its own order: place each vector by its row id
        at = order[np.searchsorted(ordered, got["_rowid"].to_numpy())]
        out[at] = vectors_of(got["vector"])
        if got.num_rows != chunk.size:
            raise RuntimeError(f"asked for {chunk.size} rows, LanceDB returned {got.num_rows}")
    return out


def pool_index(lancedb: LanceDBResource, pool: PoolConfig, fit) -> PoolIndex:
    """Every embedded item in the current tree (curation.evaluation.index_items), from one
    version of the embeddings table, with readers of chosen rows' vectors, ids and uris. The
    item ids and the stored assignments are streamed in bounded batches: what stays is 8 B
    of row id plus the index's fixed-width columns per item, no string."""
    store = lancedb.store(pool.name)
    table = store.table("embeddings")
    table.checkout(table.version)  # ids and later takes see one version
    row_ids, keys = [], []
    for batch in stream(table, ["item_id"], row_id=True):
        row_ids.append(batch["_rowid"].to_numpy().astype(np.uint64))
        keys.append(item_keys(batch["item_id"]))
    row_ids = np.concatenate(row_ids) if row_ids else np.empty(0, np.uint64)
    stored = store.table("assignments")
    assigned = ()
    if stored is not None:
        columns = ["item_key" if "item_key" in stored.schema.names else "item_id",
                   "fit_version", *(f"level_{lv}" for lv in range(1, fit.hierarchy.n_levels + 1))]
        assigned = stream(stored, columns)
    return index_items(np.concatenate(keys) if keys else np.empty(0, np.uint64), assigned,
                       fit.hierarchy, fit.fit_version, partial(take_vectors, table, row_ids),
                       partial(take_items, table, row_ids))


def take_items(table, row_ids: np.ndarray, rows: np.ndarray) -> tuple[list[str], list[str]]:
    """(item ids, uris) of pool rows, in the order asked, taken by row id from `table`."""
    wanted = row_ids[np.asarray(rows, dtype=np.int64)]
    got = table.take_row_ids(wanted.tolist()).with_row_id().select(["item_id", "uri"]).to_arrow()
    at = {int(r): i for i, r in enumerate(got["_rowid"].to_numpy())}
    order = [at[int(r)] for r in wanted]
    return ([got["item_id"][i].as_py() for i in order], [got["uri"][i].as_py() for i in order])


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def read_labels(lancedb: LanceDBResource, landing: LandingStorage, pool: PoolConfig,
                index: PoolIndex, notes: list[str] | None = None) -> tuple[np.ndarray | None, int]:
    """(a label code per pool row or None, items without a label: curation.evaluation.
    label_codes) from the pool's labels file, else from the items' metadata (raw's `meta`,
    streamed in bounded batches). A labels file that cannot be read or trusted fails the
    evaluation naming the file, the line and the problem; label ids that match no item are
    explained in `notes`."""
    if not pool.labels:
        raw = lancedb.store(pool.name).table("raw")
        if raw is None:
            return None, index.size
        return label_codes(index, (
            (item_keys(batch["item_id"]), labels_in(batch["item_id"].to_pylist(),
                                                    batch["meta"].to_pylist()))
            for batch in stream(raw, ["item_id", "meta"])))
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
    note = unmatched_note(found, lambda ids: index.rows_of(item_keys(ids)) >= 0)
    if note and notes is not None:
        notes.append(note)
    return label_codes(index, [(item_keys(list(found)), list(found.values()))])


def labels_in(item_ids: list[str], metas: list[str | None]) -> list[str | None]:
    """The `label` of each item's metadata JSON, None where it has none."""
    found = meta_labels(item_ids, metas)
    return [found.get(i) for i in item_ids]


# ---- the asset ----------------------------------------------------------------------------------

def build_evaluation_asset(pool: PoolConfig, spec: SubsetSpec):
    key = keys.evaluation_key(pool, spec.name)
    subset_key = keys.subset_key(pool, spec.name)

    @asset(
        key=key,
        deps=[subset_key],
        group_name=pool.name,
        automation_condition=fan_in_condition(),
        check_specs=[AssetCheckSpec(
            "not_worse_than_random", asset=key,
            description=f"better than {pool.eval_random_draws} seeded random subsets beyond "
            f"their noise on coverage (p99 distance to the nearest selected item: "
            f"{better('p99')}; leaf clusters hit: {better('leaf_share')}), top-level "
            f"entropy ({better('entropy')}) and, with labels, label entropy and k-NN balanced "
            f"accuracy ({better('balanced_accuracy')}); WARN when one is no better than "
            "random (inside the noise) or worse than random")],
        description=f"Subset {spec.name!r} against {pool.eval_random_draws} uniform random "
        f"subsets of the same size (seed {spec.seed}): coverage, balance per level, labels and "
        "k-NN accuracy with the random mean, spread and a verdict per figure, as a table and a "
        "figure that say which direction is better.",
    )
    def evaluation(context: AssetExecutionContext, lancedb: LanceDBResource,
                   landing: LandingStorage) -> MaterializeResult:
        consumed = consumed_metadata(context, [subset_key])
        store = lancedb.store(pool.name)
        fit = store.load_fit()
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        subset_table = store.table(f"subset_{spec.name}")
        if subset_table is None or subset_table.count_rows() == 0:
            raise ValueError(f"subset {spec.name} of pool {pool.name} is empty or missing")
        keyed = "item_key" in subset_table.schema.names  # subsets of older versions lack it
        subset = store.read(pool.table(f"subset_{spec.name}"),
                            ["item_key" if keyed else "item_id", "weight"])
        index = pool_index(lancedb, pool, fit)
        notes: list[str] = []
        labels, unlabelled = read_labels(lancedb, landing, pool, index, notes)
        outcome = evaluate_subset(index, subset["item_key"].to_numpy() if keyed
                                  else item_keys(subset["item_id"]),
                                  subset["weight"].to_numpy(), labels, unlabelled,
                                  seed=spec.seed, metric=pool.hierarchy.metric,
                                  eval_sample=pool.eval_sample,
                                  random_draws=pool.eval_random_draws)
        report, headline = outcome.report, outcome.headline()
        verdict, reasons = check_outcome(report)
        headline_md = MetadataValue.md(versus_random_markdown(report, headline_only=True))
        return MaterializeResult(
            metadata={
                **consumed,
                "evaluation": MetadataValue.json(report),
                "summary": MetadataValue.md(evaluation_markdown(report)),
                "figure": MetadataValue.md(evaluation_figure_markdown(spec.name, report)),
                "directions": MetadataValue.json(headline_directions(report)),
                "pool_size": outcome.pool_size,
                "selected_items": outcome.selected_items,
                "labelled": outcome.labelled,
                "unlabelled_items": outcome.unlabelled_items,
                "labels_note": "; ".join(notes),
                "fit_version": fit.fit_version,
                "eval_sample": pool.eval_sample,
                "vectors_read": report["sample"]["vectors_read"],
                # the memory bound: coverage probe + test split + 2 x eval_sample vectors at
                # most, however many random draws (each draw is read after the last is freed)
                "vectors_held_max": report["sample"]["vectors_held_max"],
                "sample_note": MetadataValue.md(outcome.sample_note()),
                "random_draws": pool.eval_random_draws,
                "versus_random_table": MetadataValue.md(versus_random_markdown(report)),
                "verdict": verdict,
                "worse_reasons": MetadataValue.json(outcome.worse_than_random),
                "no_better_reasons": MetadataValue.json(outcome.no_better_than_random),
                **headline,
                **headline_spread(report),
            },
            check_results=[AssetCheckResult(
                check_name="not_worse_than_random", passed=verdict == BETTER_VERDICT,
                severity=AssetCheckSeverity.WARN,
                description=(f"{verdict} on the headline figures" if verdict == BETTER_VERDICT
                             else f"{verdict}: " + "; ".join(reasons)),
                metadata={"verdict": verdict, "reasons": MetadataValue.json(reasons),
                          "random_draws": pool.eval_random_draws,
                          "versus_random_table": headline_md,
                          **headline, **headline_spread(report)},
            )],
        )

    return evaluation
