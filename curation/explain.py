"""Why is an item in (or not in) each subset of its pool? (pure core, reads LanceDB only)

`explain_item(store, item_id)` (`store`: the pool's `curation.store.PoolStore`) looks the
item up in `<pool>__takedowns`, `<pool>__duplicates`, `<pool>__quarantine` and
`<pool>__assignments`, then, for every `<pool>__subset_<name>` table (its latest version),
says whether the item is in and why: its leaf, the leaf's quota, its rank in the leaf
(recomputed from the leaf's members with the subset's seed and strategy when it is not in),
or that it was taken down, is not assigned, or was assigned by another fit than the subset's.
When the pool deduplicates (`<pool>__near_duplicates`), a near duplicate names its
representative and their cosine similarity: subsets built over that table (their manifest
records its version) sample representatives only.
"""

from __future__ import annotations

import numpy as np

from .selection import item_keys, rank_hash
from .sql import sql_str
from .store import PoolStore


def leaf_rank(store: PoolStore, item_id: str, leaf: int, fit_version: int, config: dict,
              taken_down: set[str], first: set[str] | None = None) -> tuple[int, int]:
    """(rank of the item among its leaf's eligible members, members) under a subset's
    seed and strategy: the order the selection uses (bottom-k). `first`: ids ranked ahead
    of the others (a sticky subset's members)."""
    where = f"level_1 = {int(leaf)} AND fit_version = {int(fit_version)}"
    rows = store.query("assignments", where, ["item_id", "distance"])
    ids = [r["item_id"] for r in rows if r["item_id"] not in taken_down]
    if item_id not in ids:
        return -1, len(ids)
    dist = {r["item_id"]: r["distance"] for r in rows}
    keys = item_keys(ids)
    h = rank_hash(keys, int(config.get("seed", 0)))
    tier = np.array([0 if first and i in first else 1 for i in ids], np.uint8)
    if config.get("strategy") == "closest":
        order = np.lexsort((keys, h, np.array([dist[i] for i in ids], np.float64), tier))
    else:
        order = np.lexsort((keys, h, tier))
    return int(np.flatnonzero(np.asarray(ids, object)[order] == item_id)[0]), len(ids)


def duplicate_ids(store: PoolStore, leaf: int, fit_version: int) -> set[str]:
    """Ids of the leaf's near duplicates of another item (fit `fit_version`)."""
    rows = store.query("near_duplicates",
                       f"leaf = {int(leaf)} AND fit_version = {int(fit_version)}",
                       ["item_id", "representative"])
    return {r["item_id"] for r in rows if r["representative"] != r["item_id"]}


def explain_item(store: PoolStore, item_id: str) -> dict:
    where = f"item_id = {sql_str(item_id)}"
    takedowns = store.query("takedowns", where, ["reason", "at", "by", "run"])
    duplicates = store.query("duplicates", where, ["drop", "first_drop", "uri"])
    quarantine = store.query("quarantine", where, ["drop", "stage", "reason", "uri"])
    assigned = store.query("assignments", where)
    assignment = None
    if assigned:
        a = assigned[0]
        levels = sorted((k for k in a if k.startswith("level_")), key=lambda k: int(k[6:]))
        assignment = {"drop": a.get("drop"), "uri": a.get("uri"),
                      "path": [a[k] for k in levels], "leaf": a["level_1"],
                      "distance": a["distance"], "fit_version": a["fit_version"]}
    down = set(store.taken_down_ids().to_pylist())
    near = store.near_duplicate_of(item_id)
    near_duplicate = None
    if near is not None and near["representative"] != item_id:
        near_duplicate = {"representative": near["representative"],
                          "similarity": round(float(near["similarity"]), 6),
                          "leaf": near["leaf"], "fit_version": near["fit_version"]}
    subsets = {}
    for name in store.subset_names():
        version, manifest = store.subset_manifest(name)
        config = manifest.get("config", {})
        entry: dict = {"version": version, "seed": config.get("seed"),
                       "strategy": config.get("strategy")}
        row = store.query(f"subset_{name}", where, version=version)[:1]
        if row:
            r = row[0]
            entry.update(selected=True, leaf=r["leaf"], path=r["path"], quota=r["quota"],
                         rank=r["rank"], weight=r["weight"], leaf_size=r.get("leaf_size"),
                         why=f"rank {r['rank']} in leaf {r['leaf']} is within the leaf's "
                         f"{min(r['quota'], r.get('leaf_size') or r['quota'])} taken "
                         f"(quota {r['quota']})")
            if takedowns:
                entry["why"] += "; taken down since: leaves at the next materialisation"
        else:
            entry["selected"] = False
            fit = manifest.get("fit_version")
            if takedowns:
                entry["why"] = "taken down: " + "; ".join(t["reason"] for t in takedowns)
            elif assignment is None:
                entry["why"] = ("not in the pool's assignments" +
                                (" (quarantined)" if quarantine else "") +
                                (" (delivered again as a duplicate)" if duplicates else ""))
            elif fit is not None and assignment["fit_version"] != fit:
                entry["why"] = (f"assigned by fit {assignment['fit_version']}, the subset was "
                                f"built on fit {fit}: stale rows are excluded")
            elif (near_duplicate is not None and near_duplicate["fit_version"] == fit
                  and "near_duplicates" in manifest.get("table_versions", {})):
                entry["why"] = (f"near duplicate of {near_duplicate['representative']} "
                                f"(cosine similarity {near_duplicate['similarity']:.4f} in leaf "
                                f"{near_duplicate['leaf']}): subsets sample representatives "
                                "only")
            else:
                leaf = assignment["leaf"]
                in_leaf = store.query(f"subset_{name}", f"leaf = {int(leaf)}",
                                      ["item_id", "quota", "leaf_size"], version=version)
                quota = int(in_leaf[0]["quota"]) if in_leaf else 0
                taken = len(in_leaf)
                # sticky: the members rank first (they did when this version was built)
                first = ({r["item_id"] for r in in_leaf}
                         if config.get("stability") == "sticky" else None)
                excluded = down
                if "near_duplicates" in manifest.get("table_versions", {}):
                    # the leaf's near duplicates were not eligible either
                    excluded = down | duplicate_ids(store, leaf, assignment["fit_version"])
                rank, members = leaf_rank(store, item_id, leaf, assignment["fit_version"],
                                          config, excluded, first)
                entry["stability"] = config.get("stability", "fair")
                entry.update(leaf=leaf, path=assignment["path"], quota=quota, rank=rank,
                             leaf_size=members, taken=taken)
                if quota == 0:
                    entry["why"] = f"leaf {leaf} got quota 0 from the water-filling"
                elif rank >= taken:
                    entry["why"] = (f"rank {rank} in leaf {leaf} ({members} items) is below "
                                    f"the cut: the leaf's quota {quota} takes {taken}")
                else:
                    entry["why"] = (f"would be taken now (rank {rank} < {taken}): the item "
                                    "arrived after this subset version was built")
        subsets[name] = entry
    return {"pool": store.pool_name, "item_id": item_id, "assignment": assignment,
            "near_duplicate_of": near_duplicate,
            "taken_down": takedowns, "duplicate_deliveries": duplicates,
            "quarantined": quarantine, "subsets": subsets}
