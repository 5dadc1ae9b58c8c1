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
column of the parquet drops, kept in `<pool>__raw`'s `meta` JSON). A pool without labels (the
normal case for a web-scale SSL pool) is evaluated on coverage, balance and leaf share, which
need none; the label figures need a label on every item and are otherwise absent (no key, no
zero), and the metadata `label_figures` and the check's description say why.

The pool is read in one bounded pass (`pool_pass`, curation.pool_stream: item keys, places in
the tree and label codes, a batch at a time), of which `SubsetDraws` keeps what the draws need;
vectors are read for a bounded, seeded sample only (the pool's `eval_sample`, see
curation.evaluation), by row id from one version of the embeddings table. Memory is a bound of
the config, not of the pool (docs/SCALE.md). The storage reads are the functions below the
asset's imports; everything else is the core's.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

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
    SubsetDraws,
    better,
    check_outcome,
    evaluate_subset,
    headline_directions,
    headline_spread,
    meta_labels,
)
from curation.labels import parse_labels_csv, unmatched_note
from curation.pool_stream import LabelNames, PoolBatch, join_bytes, partitions, stream_pool
from curation.pools import PoolConfig, SubsetSpec
from curation.report import (
    evaluation_figure_markdown,
    evaluation_markdown,
    versus_random_markdown,
)
from curation.selection import item_keys
from curation.settings import join_budget_bytes
from curation.store import stream, vectors_of
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from . import keys
from .automation import consumed_metadata, fan_in_condition

TAKE_BATCH = 65536  # row ids per LanceDB take: bounded memory per request


# ---- storage reads ------------------------------------------------------------------------------

def vectors_at(table, row_ids: np.ndarray) -> np.ndarray:
    """(len(row_ids), d) float32 vectors of rows of the pinned `table` by LanceDB row id, in
    the order asked, taken TAKE_BATCH at a time."""
    wanted = np.asarray(row_ids, dtype=np.uint64)
    out = np.empty((wanted.size, table.schema.field("vector").type.list_size), np.float32)
    order = np.argsort(wanted, kind="stable")
    ordered = wanted[order]
    for lo in range(0, wanted.size, TAKE_BATCH):
        chunk = ordered[lo : lo + TAKE_BATCH]
        got = table.take_row_ids(chunk.tolist()).with_row_id().select(["vector"]).to_arrow()
        if got.num_rows != chunk.size:
            raise RuntimeError(f"asked for {chunk.size} rows, LanceDB returned {got.num_rows}")
        # the take answers in its own order: place each vector by its row id
        at = order[lo + np.searchsorted(chunk, got["_rowid"].to_numpy())]
        out[at] = vectors_of(got["vector"])
    return out


def items_at(table, row_ids: np.ndarray) -> tuple[list[str], list[str]]:
    """(item ids, uris) of rows of `table` by LanceDB row id, in the order asked."""
    wanted = np.asarray(row_ids, dtype=np.uint64)
    got = table.take_row_ids(wanted.tolist()).with_row_id().select(["item_id", "uri"]).to_arrow()
    at = {int(r): i for i, r in enumerate(got["_rowid"].to_numpy())}
    order = [at[int(r)] for r in wanted]
    return [got["item_id"][i].as_py() for i in order], [got["uri"][i].as_py() for i in order]


@dataclass(frozen=True)
class PoolPass:
    """One pinned version of a pool's embeddings and how to stream the pool past its tree
    and labels (curation.pool_stream): `batches()` starts the pass."""

    embeddings: Any  # the LanceDB table, pinned
    batches: Callable[[], Iterator[PoolBatch]]
    names: LabelNames
    labelled: bool
    parts: int  # join partitions: passes over the tables' small columns


def pool_pass(lancedb: LanceDBResource, landing: LandingStorage | None, pool: PoolConfig, fit,
              notes: list[str] | None = None, labels: bool = True) -> PoolPass:
    """Every embedded item of the pool in the current tree, with its label code when the pool
    has labels (its labels file, else the items' metadata), streamed in bounded batches from
    one version of the embeddings table (curation.pool_stream). A labels file that cannot be
    read or trusted fails naming the file, the line and the problem; its ids that match no
    item are explained in `notes`."""
    store = lancedb.store(pool.name)
    table = store.table("embeddings")
    if table is None:
        raise ValueError(f"pool {pool.name} has no embeddings yet")
    table.checkout(table.version)  # ids and later takes see one version
    n_levels = fit.hierarchy.n_levels
    stored = store.table("assignments")
    if stored is not None:
        stored.checkout(stored.version)  # every partition's pass reads the same rows
    levels = [f"level_{lv}" for lv in range(1, n_levels + 1)]

    def embedded():
        for batch in stream(table, ["item_id"], row_id=True):
            yield item_keys(batch["item_id"]), batch["_rowid"].to_numpy()

    def assigned():
        if stored is None:
            return
        keyed = "item_key" in stored.schema.names
        for batch in stream(stored, ["item_key" if keyed else "item_id", "fit_version",
                                     *levels]):
            keys = batch["item_key"].to_numpy() if keyed else item_keys(batch["item_id"])
            yield (keys, batch["fit_version"].to_numpy(),
                   np.stack([batch[c].to_numpy() for c in levels], axis=1))

    labelled = label_source(lancedb, landing, pool, notes) if labels else None
    names = LabelNames()
    items = table.count_rows()
    parts = partitions(items, join_bytes(n_levels, labelled is not None), join_budget_bytes())

    def place(row_ids: np.ndarray) -> np.ndarray:
        return fit.hierarchy.assign(vectors_at(table, row_ids)).paths

    def batches():
        return stream_pool(embedded, assigned, labelled, fit_version=fit.fit_version,
                           n_levels=n_levels, place=place, names=names, parts=parts)

    return PoolPass(table, batches, names, labelled is not None, parts)


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def label_source(lancedb: LanceDBResource, landing: LandingStorage | None, pool: PoolConfig,
                 notes: list[str] | None = None):
    """A callable starting a pass over (item keys, labels) batches: the pool's labels file
    (parsed whole: a file the user wrote), else the `label` of raw's metadata, streamed.
    None when the pool has neither."""
    store = lancedb.store(pool.name)
    if not pool.labels:
        raw = store.table("raw")
        if raw is None:
            return None
        raw.checkout(raw.version)  # every partition's pass reads the same rows

        def from_meta():
            for batch in stream(raw, ["item_id", "meta"]):
                ids = batch["item_id"].to_pylist()
                found = meta_labels(ids, batch["meta"].to_pylist())
                yield item_keys(ids), [found.get(i) for i in ids]

        return from_meta
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

    def is_item(ids: list[str]) -> np.ndarray:
        held = store.lookup("embeddings", "item_id", ids, ["item_id"])
        known = set() if held is None else set(held["item_id"].to_pylist())
        return np.fromiter((i in known for i in ids), bool, count=len(ids))

    note = unmatched_note(found, is_item)
    if note and notes is not None:
        notes.append(note)
    keys, labels = item_keys(list(found)), list(found.values())
    return lambda: [(keys, labels)]


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
        f"subsets of the same size (seed {spec.seed}): coverage, balance per level and, when "
        "every item has a label, label balance and k-NN accuracy, with the random mean, spread "
        "and a verdict per figure, as a table and a figure that say which direction is "
        "better.",
    )
    def evaluation(context: AssetExecutionContext, lancedb: LanceDBResource,
                   landing: LandingStorage) -> MaterializeResult:
        consumed = consumed_metadata(context, [subset_key])
        store = lancedb.store(pool.name)
        fit = store.load_fit()
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        subset_table = store.table(f"subset_{spec.name}")
        keyed = subset_table is not None and "item_key" in subset_table.schema.names
        subset = None if subset_table is None else subset_table.search().select(
            ["item_key" if keyed else "item_id", "weight"]).limit(None).to_arrow()
        if subset is None or subset.num_rows == 0:
            raise ValueError(f"subset {spec.name} of pool {pool.name} is empty or missing")
        notes: list[str] = []
        passing = pool_pass(lancedb, landing, pool, fit, notes)
        draws = SubsetDraws(subset["item_key"].to_numpy() if keyed
                            else item_keys(subset["item_id"]), subset["weight"].to_numpy(),
                            fit.hierarchy.n_levels, seed=spec.seed,
                            random_draws=pool.eval_random_draws, labelled=passing.labelled)
        for batch in passing.batches():
            draws.add(batch.keys, batch.paths, batch.codes, batch.locators)
        outcome = evaluate_subset(draws.result(passing.names.rank()),
                                  partial(vectors_at, passing.embeddings),
                                  metric=pool.hierarchy.metric, eval_sample=pool.eval_sample)
        report, headline = outcome.report, outcome.headline()
        verdict, reasons = check_outcome(report)
        label_figures, absent = outcome.label_figures(), outcome.labels_absent()
        described = (f"{verdict} on the headline figures" if verdict == BETTER_VERDICT
                     else f"{verdict}: " + "; ".join(reasons))
        if absent is not None:  # judged without the label figures: say so, and why
            described += f"; label figures absent: {absent}"
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
                "label_figures": label_figures,
                "labels_note": "; ".join(notes),
                "fit_version": fit.fit_version,
                "eval_sample": pool.eval_sample,
                "pool_passes": passing.parts,  # one per join partition (docs/SCALE.md)
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
                description=described,
                metadata={"verdict": verdict, "reasons": MetadataValue.json(reasons),
                          "label_figures": label_figures,
                          "random_draws": pool.eval_random_draws,
                          "versus_random_table": headline_md,
                          **headline, **headline_spread(report)},
            )],
        )

    return evaluation
