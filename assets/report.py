"""`<pool>/report`: a self-contained HTML page per pool (curation.report) under
$CURATION_HOME/reports/<pool>.html, linked from the metadata, with each subset's evaluation as a
Markdown table in the metadata itself.

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

from curation import naming, settings
from curation.pools import PoolConfig
from curation.report import evaluation_markdown, example_clusters, render_report
from resources.lancedb import LanceDBResource
from resources.storage import LandingStorage

from .automation import consumed_metadata, fan_in_condition
from .evaluation import evaluation_key, pool_index
from .tables import load_fit


def report_path(pool: PoolConfig):
    return settings.reports_dir().resolve() / f"{pool.name}.html"


def _latest_json(context: AssetExecutionContext, key: list[str], name: str):
    event = context.instance.get_latest_materialization_event(AssetKey(key))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(name)
    return None if value is None else value.value


def level_sizes(paths: np.ndarray, n_clusters: list[int],
                weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Items (or copies) beneath each cluster, per level."""
    return [np.bincount(paths[:, lv], weights=weights, minlength=k).astype(np.int64)
            for lv, k in enumerate(n_clusters)]


def build_report_asset(pool: PoolConfig):
    key = naming.asset_path(pool.name, "report")

    @asset(
        key=key,
        deps=[evaluation_key(pool, spec) for spec in pool.subsets],
        group_name=pool.name,
        kinds={"html"},
        automation_condition=fan_in_condition(),
        description=f"HTML report of pool {pool.name!r}: cluster sizes before and after "
        "curation, subsets vs random, members of large and small clusters, drift.",
    )
    def report(context: AssetExecutionContext, lancedb: LanceDBResource,
               landing: LandingStorage) -> MaterializeResult:
        consumed = consumed_metadata(context, [AssetKey(evaluation_key(pool, spec))
                                               for spec in pool.subsets])
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise ValueError(f"pool {pool.name} has no fitted tree: materialise level_1 first")
        index = pool_index(lancedb, pool, fit)  # small columns only: no pool vectors
        ids, uris, paths = index.ids, index.uris, index.paths
        n_clusters = [c.shape[0] for c in fit.hierarchy.centroids]
        subset_sizes, evaluations, tables = {}, {}, {}
        for spec in pool.subsets:
            rows = lancedb.read(pool.table(f"subset_{spec.name}"), ["path", "weight"])
            if rows is not None and rows.num_rows:
                flat = rows["path"].combine_chunks().flatten().to_numpy()
                sub_paths = flat.reshape(rows.num_rows, -1).astype(np.int64)
                if sub_paths.shape[1] == len(n_clusters):
                    subset_sizes[spec.name] = level_sizes(
                        sub_paths, n_clusters, rows["weight"].to_numpy().astype(np.float64))
            evaluation = _latest_json(context, evaluation_key(pool, spec), "evaluation")
            if evaluation is not None:
                evaluations[spec.name] = evaluation
                tables[f"evaluation_{spec.name}"] = MetadataValue.md(
                    evaluation_markdown(evaluation))
        examples = example_clusters(paths[:, -1], seed=0) if ids else None
        page = render_report(
            pool.name, pool.modality, level_sizes(paths, n_clusters), subset_sizes,
            evaluations, examples, ids, uris, landing.read_bytes,
            drift=_latest_json(context, naming.level_path(pool.name, 1), "drift"),
            generated=f"{datetime.now(UTC).isoformat(timespec='seconds')}, fit "
            f"{fit.fit_version}",
        )
        path = report_path(pool)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)  # readers see the old page or the new one
        return MaterializeResult(
            metadata={
                **consumed,
                "path": MetadataValue.path(str(path)),
                "url": MetadataValue.url(path.as_uri()),
                "bytes": len(page.encode()),
                "pool_size": len(ids),
                "fit_version": fit.fit_version,
                "evaluated_subsets": sorted(evaluations),
                **tables,
            }
        )

    return report
