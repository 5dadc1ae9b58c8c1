"""`<pool>/assignments`, one partition per drop: the drop's items placed in the current tree.

Nearest leaf centroid, then up the tree; no refit. Costs O(drop): reads only this drop's
vectors and replaces only its rows (one merge_insert commit). A refit (level_1) re-assigns
every item itself; rows carry `fit_version`, so readers can tell an assignment from an older
tree (subsets re-assign such rows on the fly and say how many).
"""

from dagster import AssetExecutionContext, Failure, MaterializeResult, asset

from curation.pools import PoolConfig
from curation_dags.automation import assignments_condition
from curation_dags.partitions import drops_partitions
from resources.clustering import ClusteringResource
from resources.lancedb import LanceDBResource

from .levels import level_keys
from .raw import checked_drop
from .tables import assignment_table, load_fit, sql_str, stream_vectors


def build_assignments_asset(pool: PoolConfig):
    keys = level_keys(pool)

    @asset(
        key=[pool.name, "assignments"],
        deps=[[pool.name, "embeddings"], keys[-1]],
        partitions_def=drops_partitions(pool.name),
        group_name=pool.name,
        kinds={"lancedb"},
        automation_condition=assignments_condition(keys),
        description="Each item of the drop assigned to the current tree (leaf, then up).",
    )
    def assignments(
        context: AssetExecutionContext, lancedb: LanceDBResource, clustering: ClusteringResource
    ) -> MaterializeResult:
        drop = checked_drop(context)
        fit = load_fit(lancedb, pool)
        if fit is None:
            raise Failure(description=f"pool {pool.name} has no fitted tree yet: run level_1")
        scope = f"drop = {sql_str(drop)}"
        embeddings = lancedb.open(pool.table("embeddings"))
        if embeddings is None:
            raise Failure(description=f"pool {pool.name} has no embeddings table")
        cols, x = stream_vectors(embeddings, scope)
        if len(x):
            assignment = clustering.assign(fit.hierarchy, x)
            rows = assignment_table(cols["item_id"], cols["drop"], cols["uri"], assignment,
                                    fit.fit_version)
            mean = float(assignment.distance.mean())
        else:
            rows, mean = None, 0.0
        table = lancedb.open(pool.table("assignments"))
        if rows is not None:
            table = lancedb.replace_rows(pool.table("assignments"), rows, "item_id", scope)
        elif table is not None:
            table.delete(scope)
        return MaterializeResult(metadata={
            "items": len(x),
            "fit_version": fit.fit_version,
            "mean_distance": mean,
            "distance_ratio_to_fit": mean / max(fit.mean_distance, 1e-12),
            "lancedb_table": pool.table("assignments"),
            "lancedb_version": table.version if table is not None else 0,
        })

    return assignments
