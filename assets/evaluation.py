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
    meta_labels,
)
from curation.labels import parse_labels_csv, unmatched_note
from curation.pools import PoolConfig, SubsetSpec
from curation.report import (
    evaluation_figure_markdown,
    evaluation_markdown,
    versus_random_markdown,
)
from curation.store import vectors_of
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
    """Every embedded item in the current tree (curation.evaluation.index_items) and a reader
    of their vectors, from one version of the embeddings table: small columns only, the
    vectors of items whose stored assignment is of another fit, nothing else."""
    store = lancedb.store(pool.name)
    table = store.table("embeddings")
    table.checkout(table.version)  # ids and later vector takes see one version
    cols = (table.search().with_row_id(True).select(["item_id", "uri"]).limit(None)
            .to_arrow())
    stored = store.table("assignments")
    with_keys = stored is not None and "item_key" in stored.schema.names
    wanted = ["item_id", "fit_version",
              *(f"level_{lv}" for lv in range(1, fit.hierarchy.n_levels + 1)),
              *(["item_key"] if with_keys else [])]
    row_ids = cols["_rowid"].to_numpy().astype(np.uint64)
    return index_items(cols["item_id"].to_pylist(), cols["uri"].to_pylist(),
                       store.read(pool.table("assignments"), wanted), fit.hierarchy,
                       fit.fit_version, partial(take_vectors, table, row_ids))


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def read_labels(lancedb: LanceDBResource, landing: LandingStorage, pool: PoolConfig,
                item_ids: list[str], notes: list[str] | None = None) -> dict[str, str]:
    """{item_id: label} from the pool's labels file, else from the items' metadata. A labels
    file that cannot be read or trusted fails the evaluation naming the file, the line and the
    problem; label ids that match no item are explained in `notes`."""
    if not pool.labels:
        raw = lancedb.store(pool.name).read(pool.table("raw"), ["item_id", "meta"])
        return {} if raw is None else meta_labels(raw["item_id"].to_pylist(),
                                                  raw["meta"].to_pylist())
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
    return found


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
        subset = store.read(pool.table(f"subset_{spec.name}"), ["item_id", "weight"])
        if subset is None or subset.num_rows == 0:
            raise ValueError(f"subset {spec.name} of pool {pool.name} is empty or missing")
        index = pool_index(lancedb, pool, fit)
        notes: list[str] = []
        labels = read_labels(lancedb, landing, pool, index.ids, notes)
        outcome = evaluate_subset(index, subset["item_id"], subset["weight"].to_numpy(), labels,
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
