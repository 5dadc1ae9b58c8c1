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

The asset is wiring: it reads the labels file through the landing storage and calls the core's
`curation.pool_pass.evaluate_published_subset`, which pins the pool's tables and the subset's
and evaluates only a complete snapshot (every embedded drop assigned at the current fit, the
subset drawn on it); otherwise the step records an observation naming the drops missing and
materialises nothing, and the condition asks again once their assignments land. The pool is
read in one bounded pass (curation.pool_stream), vectors only for a bounded, seeded sample:
memory is a bound of the config, not of the pool (docs/SCALE.md).
"""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation.evaluation import (
    BETTER_VERDICT,
    better,
    check_outcome,
    headline_directions,
    headline_spread,
)
from curation.pool_pass import SnapshotIncomplete, evaluate_published_subset
from curation.pools import PoolConfig, SubsetSpec
from curation.report import (
    evaluation_figure_markdown,
    evaluation_markdown,
    versus_random_markdown,
)
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from . import keys
from .automation import consumed_metadata, fan_in_condition
from .retries import retried_on_storage_errors


def labels_file_uri(landing: LandingStorage, pool: PoolConfig) -> str:
    storage = landing.child(pool.prefix)
    if storage.is_s3:
        return storage.url.rstrip("/") + "/" + pool.labels
    return str(Path(storage.url.removeprefix("file://")).expanduser() / pool.labels)


def read_labels_file(landing: LandingStorage, pool: PoolConfig) -> tuple[str, bytes] | None:
    """(uri, bytes) of the pool's labels file, None when it has none configured; a file that
    cannot be read fails the step naming it."""
    if not pool.labels:
        return None
    uri = labels_file_uri(landing, pool)
    try:
        return uri, landing.read_bytes(uri)
    except Exception as exc:  # a missing local file or S3 key, unreadable
        raise Failure(description=f"labels file {uri} (pool {pool.name!r}, `labels:`) "
                      f"cannot be read: {type(exc).__name__}: {exc}") from None


def not_read(context: AssetExecutionContext, key: AssetKey, exc: SnapshotIncomplete):
    """An observation instead of a materialisation: the snapshot was not complete (the step
    ends well; the condition asks again once the assignments that complete it land)."""
    context.log.warning(f"{key.to_user_string()}: not evaluated: {exc}")
    return AssetObservation(asset_key=key, metadata={
        "not_evaluated": str(exc), "incomplete_drops": MetadataValue.json(
            dict(list(exc.gaps.items())[:20])),
        "table_versions": MetadataValue.json(exc.versions)})


# ---- the asset ----------------------------------------------------------------------------------

def build_evaluation_asset(pool: PoolConfig, spec: SubsetSpec):
    key = keys.evaluation_key(pool, spec.name)
    subset_key = keys.subset_key(pool, spec.name)

    @asset(
        key=key,
        deps=[subset_key],
        group_name=pool.name,
        output_required=False,  # an incomplete snapshot is observed, not evaluated
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
    @retried_on_storage_errors
    def evaluation(context: AssetExecutionContext, lancedb: LanceDBResource,
                   landing: LandingStorage):
        consumed = consumed_metadata(context, [subset_key])
        try:
            done = evaluate_published_subset(
                lancedb.store(pool.name), spec.name, seed=spec.seed,
                random_draws=pool.eval_random_draws, metric=pool.hierarchy.metric,
                eval_sample=pool.eval_sample, labels_file=read_labels_file(landing, pool))
        except SnapshotIncomplete as exc:
            yield not_read(context, key, exc)
            return
        except ValueError as exc:  # a labels file that cannot be trusted, names the line
            if pool.labels and "labels file" in str(exc):
                raise Failure(description=str(exc)) from None
            raise
        outcome, notes = done.outcome, done.notes
        report, headline = outcome.report, outcome.headline()
        verdict, reasons = check_outcome(report)
        label_figures, absent = outcome.label_figures(), outcome.labels_absent()
        described = (f"{verdict} on the headline figures" if verdict == BETTER_VERDICT
                     else f"{verdict}: " + "; ".join(reasons))
        if absent is not None:  # judged without the label figures: say so, and why
            described += f"; label figures absent: {absent}"
        headline_md = MetadataValue.md(versus_random_markdown(report, headline_only=True))
        yield MaterializeResult(
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
                "fit_version": done.fit_version,
                "table_versions": MetadataValue.json(done.versions),
                "eval_sample": pool.eval_sample,
                "pool_passes": done.parts,  # one per join partition (docs/SCALE.md)
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
