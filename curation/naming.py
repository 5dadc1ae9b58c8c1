"""Every name the platform derives from a pool's name, in one place (strings only, no Dagster).

A pool `P` owns:
- LanceDB tables `P__<kind>` (`table`): raw, duplicates, quarantine, embeddings, fits,
  level_<l>, assignments, assignment_log, takedowns, subset_<S> (`subset_table`);
- Dagster asset keys (as paths): [P, <kind>] (`asset_path`), [P, "level_<l>"] (`level_path`),
  [P, "subsets", S] and [P, "evaluation", S]; an asset's op is its path joined by "__"
  (`op_name`), which is where run config for it goes (`{"ops": {"P__level_1": ...}}`). The
  AssetKeys themselves are built from these paths in one module, assets/keys.py;
- the dynamic partitions `P_drops`, the resource `P_embedder`, the sensors `P_drops_sensor`,
  `P_refit_sensor`, `P_takedowns_sensor`, `P_stall_sensor`, `P_automation` and the schedule
  `P_refit_schedule`;
- run tags (below) that sensors set and assets and sensors read.

`NAME_PATTERN` keeps every one of them valid for LanceDB and Dagster alike.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

# ---- run tags ------------------------------------------------------------------------------
POOL_TAG = "curation/pool"  # every run the platform asks for: the pool it serves
DROP_TAG = "curation/drop"  # a drop's run: the drop id
FIT_TAG = "curation/fit"  # a run that fits a pool's tree: the pool
REFIT_TAG = "curation/refit"  # "force": fit anew even when no drop changed
REASON_TAG = "curation/refit_reason"  # why the fit was asked for


def check_name(value: str, what: str) -> str:
    """`value` if it can name a pool or a subset, else ValueError saying why."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits and _ (starting with a letter, "
            "at most 48 characters): it names tables and Dagster asset keys"
        )
    return value


# ---- LanceDB tables ------------------------------------------------------------------------
def table(pool: str, kind: str) -> str:
    return f"{pool}__{kind}"


def subset_table(pool: str, subset: str) -> str:
    return table(pool, f"subset_{subset}")


# ---- Dagster asset keys (paths), ops, definitions -------------------------------------------
def asset_path(pool: str, kind: str) -> list[str]:
    return [pool, kind]


def level_path(pool: str, level: int) -> list[str]:
    return [pool, f"level_{level}"]


def level_paths(pool: str, n_levels: int) -> list[list[str]]:
    return [level_path(pool, lv) for lv in range(1, n_levels + 1)]


def subset_path(pool: str, subset: str) -> list[str]:
    return [pool, "subsets", subset]


def evaluation_path(pool: str, subset: str) -> list[str]:
    return [pool, "evaluation", subset]


def op_name(path: list[str]) -> str:
    return "__".join(path)


def drops_partitions(pool: str) -> str:
    return f"{pool}_drops"


def embedder_resource(pool: str) -> str:
    return f"{pool}_embedder"


def subsets_op(pool: str) -> str:
    return f"{pool}__subsets"


def drops_sensor(pool: str) -> str:
    return f"{pool}_drops_sensor"


def refit_sensor(pool: str) -> str:
    return f"{pool}_refit_sensor"


def takedowns_sensor(pool: str) -> str:
    return f"{pool}_takedowns_sensor"


def stall_sensor(pool: str) -> str:
    return f"{pool}_stall_sensor"


def refit_schedule(pool: str) -> str:
    return f"{pool}_refit_schedule"


def automation_sensor(pool: str) -> str:
    return f"{pool}_automation"
