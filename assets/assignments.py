"""`<pool>/assignments`, one partition per drop: the drop's items placed in the current tree.

The one owner of `<pool>__assignments` (item_id, drop, uri, distance, level_1..L, fit_version)
and of `<pool>__assignment_log` (one row per drop and fit: items, items new since the fit and
their summed distance, items embedded with another model than the tree's). The refit sensor
decides from that log alone, in O(drops since the fit).

Nearest leaf centroid, then up the tree; no refit. A new drop costs O(drop): it reads only its
vectors and replaces only its rows (one merge_insert commit). After a refit every partition
is requested again (the tree changed), in one run (single-run backfill policy), so rows from
an older fit only live until that run ends; readers can tell them by `fit_version`.
"""

import warnings

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from curation import naming
from curation.landing import validate_drop_id
from curation.pools import PoolConfig
from curation.sql import in_list
from curation.takedowns import drop_taken_down_rows
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .automation import assignments_condition
from .levels import level_keys
from .partitions import drops_partitions
from .tables import assignment_table, load_fit, stream_vectors


def build_assignments_asset(pool: PoolConfig):
    keys = level_keys(pool)
    with warnings.catch_warnings():  # single-run backfill policy: beta in Dagster 1.13
        warnings.simplefilter("ignore", BetaWarning)
        return _build(pool, keys)


def _build(pool: PoolConfig, keys):
    @asset(
        key=naming.asset_path(pool.name, "assignments"),
        deps=[naming.asset_path(pool.name, "embeddings"), keys[-1]],
        partitions_def=drops_partitions(pool.name),
        backfill_policy=BackfillPolicy.single_run(),
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=assignments_condition(),
        description="Each item of the drop assigned to the current tree (leaf, then up).",
    )
    def assignments(
        context: AssetExecutionContext, lancedb: LanceDBResource, clustering: ClusteringResource
    ) -> MaterializeResult:
        try:
            drops = sorted(validate_drop_id(k) for k in context.partition_keys)
        except ValueError as exc:
            raise Failure(description=f"refusing drop: {exc}") from None
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise Failure(description=f"pool {pool.name} has no fitted tree yet: run level_1")
        embeddings = lancedb.open(pool.table("embeddings"))
        if embeddings is None:
            raise Failure(description=f"pool {pool.name} has no embeddings table")
        scope = in_list("drop", drops)
        cols, x = stream_vectors(embeddings, scope, columns=("item_id", "drop", "uri",
                                                             "model_hash"))
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        drop_of = cols["drop"].to_numpy(zero_copy_only=False)
        usable = np.ones(len(x), dtype=bool)
        if fit.model_hash:  # vectors of another model live in another space: never assign them
            usable = (cols["model_hash"].to_numpy(zero_copy_only=False) == fit.model_hash)
        rows = None
        distance = np.zeros(len(x), np.float32)
        if usable.any():
            keep = pa.array(usable)
            assignment = clustering.assign(fit.hierarchy, x[usable])
            distance[usable] = assignment.distance
            rows = assignment_table(pc.filter(cols["item_id"], keep), pc.filter(cols["drop"], keep),
                                    pc.filter(cols["uri"], keep), assignment, fit.fit_version)
        del x
        late = 0
        if rows is not None:
            table = lancedb.replace_rows(pool.table("assignments"), rows, "item_id", scope)
            # taken down while these drops were assigned: their rows go again
            late = len(drop_taken_down_rows(lancedb.connect(), pool.name, "assignments", scope,
                                            rows["item_id"].to_pylist()))
        else:
            table = lancedb.open(pool.table("assignments"))
            if table is not None:
                table.delete(scope)

        log, totals = _log_rows(fit, drops, drop_of, usable, distance, cols)
        lancedb.replace_rows(pool.table("assignment_log"), log, "key",
                             f"fit_version = {fit.fit_version} AND {scope}")
        assigned = int(usable.sum())
        return MaterializeResult(metadata={
            "drops": len(drops),
            "items": assigned,
            "new_since_fit": totals["new"],
            "other_model_items": int((~usable).sum()),
            "taken_down_during_ingest": late,
            "fit_version": fit.fit_version,
            "mean_distance": float(distance[usable].mean()) if assigned else 0.0,
            "distance_ratio_to_fit": (float(distance[usable].mean())
                                      / max(fit.mean_distance, 1e-12)) if assigned else 0.0,
            "per_drop": MetadataValue.json(totals["per_drop"]) if len(drops) <= 50 else
            MetadataValue.text(f"{len(drops)} drops"),
            "lancedb_table": pool.table("assignments"),
            "lancedb_version": table.version if table is not None else 0,
        })

    return assignments


def _log_rows(fit, drops, drop_of, usable, distance, cols):
    """One `<pool>__assignment_log` row per drop of this run, for the current fit."""
    import numpy as np
    import pyarrow as pa

    hashes = cols["model_hash"].to_numpy(zero_copy_only=False)
    out = {k: [] for k in ("key", "drop", "fit_version", "items", "new_items",
                           "new_distance_sum", "mismatched_items", "other_model")}
    per_drop = {}
    for drop in drops:
        mine = drop_of == drop
        n = int(mine.sum())
        ok = mine & usable
        # a drop is new to the fit unless the fit saw exactly this many of its items
        new = fit.drops.get(drop) != n
        others = sorted(set(hashes[mine & ~usable].tolist()))
        out["key"].append(f"{fit.fit_version}|{drop}")
        out["drop"].append(drop)
        out["fit_version"].append(fit.fit_version)
        out["items"].append(n)
        out["new_items"].append(int(ok.sum()) if new else 0)
        out["new_distance_sum"].append(float(distance[ok].sum()) if new else 0.0)
        out["mismatched_items"].append(int((mine & ~usable).sum()))
        out["other_model"].append(",".join(others))
        per_drop[drop] = {"items": n, "new": bool(new)}
    table = pa.table({
        "key": pa.array(out["key"], pa.string()),
        "drop": pa.array(out["drop"], pa.string()),
        "fit_version": pa.array(out["fit_version"], pa.int64()),
        "items": pa.array(out["items"], pa.int64()),
        "new_items": pa.array(out["new_items"], pa.int64()),
        "new_distance_sum": pa.array(out["new_distance_sum"], pa.float64()),
        "mismatched_items": pa.array(out["mismatched_items"], pa.int64()),
        "other_model": pa.array(out["other_model"], pa.string()),
    })
    return table, {"new": int(np.sum(out["new_items"])), "per_drop": per_drop}
