"""`<pool>/report`: a self-contained HTML page per pool (curation.report) under
$CURATION_HOME/reports/<pool>.html, linked from the metadata, with each subset's evaluation as a
Markdown table in the metadata itself (each figure with the direction that is better).

It reads the evaluations from the Dagster instance (the latest materialisation of every
`<pool>/evaluation/<subset>`), the cluster paths of the pool and of every subset, and the
members of the largest, median and smallest top-level clusters through the landing storage
(local paths or s3://). The drift of the last refit shows when level_1's latest
materialisation carries it under the metadata key "drift".
"""


from datetime import UTC, datetime

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation.evaluation import PoolCounts
from curation.pool_pass import SnapshotIncomplete, items_by_row, open_snapshot, pool_pass
from curation.pools import PoolConfig
from curation.report import (
    ClusterExamples,
    evaluation_markdown,
    render_report,
    report_file,
    write_page,
)
from curation.selection import level_sizes
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .automation import consumed_metadata, fan_in_condition
from .evaluation import not_read
from .keys import asset_key, evaluation_key, level_keys, near_duplicates_key
from .retries import retried_on_storage_errors


def _latest_json(context: AssetExecutionContext, key: AssetKey, name: str):
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(name)
    return None if value is None else value.value


def shown_items(embeddings, examples: dict | None) -> tuple[dict, dict]:
    """({row id: item id}, {row id: uri}) of the example members the report shows (a few
    dozen rows read by row id from the pinned embeddings table, not the pool's ids)."""
    rows = sorted({int(r) for info in (examples or {}).values() for r in info["rows"]})
    if not rows:
        return {}, {}
    ids, uris = items_by_row(embeddings, np.asarray(rows, dtype=np.uint64))
    return dict(zip(rows, ids, strict=True)), dict(zip(rows, uris, strict=True))


def build_report_asset(pool: PoolConfig):
    key = asset_key(pool, "report")

    @asset(
        key=key,
        deps=[evaluation_key(pool, spec.name) for spec in pool.subsets],
        group_name=pool.name,
        kinds={"html"},
        output_required=False,  # an incomplete snapshot is observed, not reported
        automation_condition=fan_in_condition(),
        description=f"HTML report of pool {pool.name!r}: cluster sizes before and after "
        "curation, subsets vs random, members of large and small clusters, drift.",
    )
    @retried_on_storage_errors
    def report(context: AssetExecutionContext, lancedb: LanceDBResource,
               landing: LandingStorage):
        consumed = consumed_metadata(context, [evaluation_key(pool, spec.name)
                                               for spec in pool.subsets])
        store = lancedb.store(pool.name)
        try:  # one complete snapshot, or an observation saying why not
            snapshot = open_snapshot(store, ("embeddings", "assignments"))
        except SnapshotIncomplete as exc:
            yield not_read(context, key, exc)
            return
        fit = snapshot.fit
        # one bounded pass over the pool: leaf sizes and a few members of three clusters
        passing = pool_pass(snapshot, labels=False)
        examples_kept = ClusterExamples(seed=0)
        counts = PoolCounts((np.zeros(0, np.int64),))
        for batch in passing.batches():
            examples_kept.add(batch.keys, batch.paths[:, -1], batch.locators)
            counts = counts.plus(PoolCounts.of(batch.paths[:, :1]))
        leaf_counts, pool_size = counts.clusters[0], counts.items
        n_clusters = [c.shape[0] for c in fit.hierarchy.centroids]
        subset_sizes, evaluations, tables, label_notes = {}, {}, {}, {}
        for spec in pool.subsets:
            rows = store.read(pool.table(f"subset_{spec.name}"), ["path", "weight"])
            if rows is not None and rows.num_rows:
                flat = rows["path"].combine_chunks().flatten().to_numpy()
                sub_paths = flat.reshape(rows.num_rows, -1).astype(np.int64)
                if sub_paths.shape[1] == len(n_clusters) and sub_paths[:, 0].max() < \
                        n_clusters[0]:  # written on this tree's leaves
                    copies = np.bincount(sub_paths[:, 0], rows["weight"].to_numpy(),
                                         minlength=n_clusters[0])
                    subset_sizes[spec.name] = level_sizes(copies, fit.hierarchy.parents,
                                                          n_clusters)
            evaluation = _latest_json(context, evaluation_key(pool, spec.name), "evaluation")
            if evaluation is not None:
                evaluations[spec.name] = evaluation
                label_notes[spec.name] = _latest_json(
                    context, evaluation_key(pool, spec.name), "label_figures")
                tables[f"evaluation_{spec.name}"] = MetadataValue.md(
                    evaluation_markdown(evaluation))
        examples = examples_kept.result() or None
        ids, uris = shown_items(passing.embeddings, examples)
        page = render_report(
            pool.name, pool.modality, level_sizes(
                np.pad(leaf_counts, (0, max(n_clusters[0] - leaf_counts.size, 0))),
                fit.hierarchy.parents,
                n_clusters), subset_sizes,
            evaluations, examples, ids, uris, landing.read_bytes,
            drift=_latest_json(context, level_keys(pool)[0], "drift"),
            near_duplicates=_latest_json(context, near_duplicates_key(pool), "summary")
            if pool.dedup.enabled else None,
            label_notes=label_notes,
            generated=f"{datetime.now(UTC).isoformat(timespec='seconds')}, fit "
            f"{fit.fit_version}",
        )
        path = write_page(report_file(pool.name), page)
        yield MaterializeResult(
            metadata={
                **consumed,
                "table_versions": MetadataValue.json(snapshot.versions),
                "path": MetadataValue.path(str(path)),
                "url": MetadataValue.url(path.as_uri()),
                "bytes": len(page.encode()),
                "pool_size": pool_size,
                "fit_version": fit.fit_version,
                "evaluated_subsets": sorted(evaluations),
                **tables,
            }
        )

    return report
