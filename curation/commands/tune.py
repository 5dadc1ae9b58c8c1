"""`curate tune`: sweep tree shapes, metrics and the dedup threshold on a seeded sample of a
pool, rank them against random draws and print the evidence table and the recommended
pools.yaml block (the core: curation.tune)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

from ..config import DEDUP_THRESHOLD
from ..tune import METRICS, TUNE_SAMPLE
from ._options import add_model_arguments, from_args

MAX_TUNE_SAMPLE = 1_000_000  # the sample is held in memory (curation.tune.memory_bound)


class TuneOptions(BaseModel):
    """Where the pool comes from (a pool of the pools config, or an embeddings file as
    `curate cluster` reads it), the subset it is tuned for and the sweep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str | None = Field(default=None, description="a pool of the pools config: its "
                             "embeddings table is sampled (give this or --embeddings)")
    pools: FilePath | None = Field(default=None, description="pools file (default "
                                   "$CURATION_POOLS, else the bundled one)")
    lancedb: str | None = Field(default=None, description="LanceDB uri (default "
                                "$CURATION_LANCEDB_URI or $CURATION_HOME/lancedb)")
    embeddings: FilePath | None = Field(
        default=None, description=".npy (n x d) or Parquet with a vector column (and an "
        "item_id column, which then keys the items)")
    vector_column: str = Field(default="vector", description="Parquet column holding vectors")
    ids: FilePath | None = Field(
        default=None, description="item ids, one per embeddings row (Parquet with item_id "
        "or one id per line; default: the file's item_id column, else the row numbers)")
    labels: FilePath | None = Field(
        default=None, description="labels: a CSV with item_id and label columns, or (with "
        "--embeddings) a .npy with one label per row; default for --pool: the pool's "
        "`labels:` file under the landing folder, when local")
    target: int = Field(ge=1, description="items of the subset the tree is tuned for (of "
                        "the pool; the sample draws the same share of itself)")
    sample: int = Field(default=TUNE_SAMPLE, ge=2, le=MAX_TUNE_SAMPLE,
                        description="items of the pool the sweep runs on (a seeded, "
                        "order-free sample; memory at most 10 x sample x d x 4 B)")
    seed: int = Field(default=0, description="seed of the sample, the fits, the selections "
                      "and the random draws")
    metrics: list[Literal["l2", "cosine"]] = Field(default=list(METRICS), min_length=1,
                                                   description="metrics swept")
    dedup_thresholds: list[float] = Field(
        default=[DEDUP_THRESHOLD], description="dedup thresholds swept on the suggested shape "
        "(cosine similarity, each in (0, 1)); 'none' or empty: no dedup in the sweep")
    eval_metric: Literal["l2", "cosine"] | None = Field(
        default=None, description="space every configuration is evaluated in (default: the "
        "pool's metric; for a file, l2)")
    random_draws: int = Field(default=5, ge=2, le=50,
                              description="seeded random subsets each selection is judged "
                              "against")
    json_output: bool = Field(default=False, description="print one JSON object instead of "
                              "the table and the block")

    @field_validator("dedup_thresholds", mode="before")
    @classmethod
    def _none(cls, value):
        if value in (["none"], "none"):
            return []
        return value

    @field_validator("dedup_thresholds")
    @classmethod
    def _similarities(cls, values: list[float]) -> list[float]:
        if any(not 0.0 < v < 1.0 for v in values):
            raise ValueError(f"thresholds must lie in (0, 1), got {values}")
        return values

    @model_validator(mode="after")
    def _one_source(self) -> TuneOptions:
        if (self.pool is None) == (self.embeddings is None):
            raise ValueError("give either --pool or --embeddings")
        if self.pool is not None and self.ids is not None:
            raise ValueError("--ids goes with --embeddings (a pool's items have their ids)")
        if self.pool is None and (self.pools is not None or self.lancedb is not None):
            raise ValueError("--pools and --lancedb go with --pool")
        return self


DESCRIPTION = (
    "On a seeded sample of a pool (--pool, or --embeddings as `curate cluster` takes them), "
    "fit trees of several shapes (the size rule's, twice and half the leaves, one level more "
    "or fewer) with each metric, and with semantic dedup; draw the --target's share of the "
    "sample with the platform's sampler; judge it against seeded random subsets (coverage, "
    "balance, labels and k-NN when labels exist); rank the configurations and print the "
    "evidence table and the recommended pools.yaml block. Ranking rule and memory: "
    "docs/METHOD.md.")


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", description=DESCRIPTION, help="sweep tree settings on a "
                              "sample of a pool and recommend a hierarchy block")
    add_model_arguments(p, TuneOptions, exclude=("json_output",))
    p.add_argument("--json", dest="json_output", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object instead of the table and the block")
    p.set_defaults(func=run)


def _csv_labels(path: Path, item_ids: list[str], notes: list[str]):
    """Labels of the sampled items from a labels CSV, or None (with a note) when some lack one."""
    from ..evaluation import labels_of
    from ..labels import parse_labels_csv

    labels, missing = labels_of(item_ids, parse_labels_csv(str(path), path.read_bytes()))
    if labels is None:
        notes.append(f"labels {path}: {missing} of {len(item_ids)} sampled items have no "
                     "label: label figures and k-NN left out")
    return labels


def _meta_labels(store, item_ids: list[str], notes: list[str]):
    """Labels of the sampled items from the `label` of their raw metadata (as the evaluation
    asset reads them), or None; reads the sample's rows of raw only."""
    from ..evaluation import labels_of, meta_labels

    raw = store.lookup("raw", "item_id", item_ids, ["item_id", "meta"])
    if raw is None or raw.num_rows == 0:
        return None
    found = meta_labels(raw["item_id"].to_pylist(), raw["meta"].to_pylist())
    labels, missing = labels_of(item_ids, found)
    if labels is None and found:
        notes.append(f"{missing} of {len(item_ids)} sampled items have no `label` in their "
                     "metadata: label figures and k-NN left out")
    return labels


def from_pool(opts: TuneOptions, notes: list[str]):
    """(item ids, vectors, pool size, labels, base hierarchy, pool metric) of a pool's sample:
    `PoolStore.sample_vectors` reads the sample and one batch, never the table."""
    from ..pools import load_pools
    from ..settings import landing_url
    from ..store import PoolStore

    pools = {p.name: p for p in load_pools(opts.pools)}
    if opts.pool not in pools:
        raise ValueError(f"--pool {opts.pool!r} is not in the pools config (pools: "
                         f"{sorted(pools)})")
    pool = pools[opts.pool]
    store = PoolStore.from_settings(pool.name, opts.lancedb)
    got = store.sample_vectors("embeddings", opts.sample, opts.seed)
    if got is None or got[1].shape[0] < 2:
        raise ValueError(f"pool {pool.name!r} has no embeddings to tune on (materialise its "
                         "embeddings first)")
    ids, x, n_pool = got
    item_ids = ids.to_pylist()
    labels_file = opts.labels
    landing = landing_url().removeprefix("file://")
    if labels_file is None and pool.labels and "://" not in landing:
        local = Path(landing).expanduser() / pool.prefix / pool.labels
        labels_file = local if local.is_file() else None
        if labels_file is None:
            notes.append(f"the pool's labels file {local} was not found: no label figures")
    if labels_file is not None:
        labels = _csv_labels(Path(labels_file), item_ids, notes)
    elif pool.labels:
        labels = None
    else:  # no labels file: a `label` in the items' metadata, looked up for the sample only
        labels = _meta_labels(store, item_ids, notes)
    return item_ids, x, n_pool, labels, pool.hierarchy, pool.hierarchy.metric


def from_file(opts: TuneOptions, notes: list[str]):
    """The same from an embeddings file (`io.load_embeddings`, as `curate cluster`): the
    sample is the rows whose keyed hash of their id ranks lowest (as a pool's sample), in
    item-id order, so it does not depend on the file's row order. Memory: a .npy is mapped
    and only the sample is read; a Parquet file is read whole by the reader."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io import load_embeddings
    from ..selection import item_keys, rank_hash, row_ids
    from ..store import canonical_order
    from .sample import read_ids

    points = load_embeddings(opts.embeddings, opts.vector_column)
    n_pool = int(points.shape[0])
    if opts.ids is not None:
        all_ids = read_ids(opts.ids)
    elif opts.embeddings.suffix in (".parquet", ".pq") and \
            "item_id" in pq.read_schema(opts.embeddings).names:
        all_ids = read_ids(opts.embeddings)
    else:
        all_ids = row_ids(n_pool)
    all_ids = all_ids if isinstance(all_ids, pa.ChunkedArray | pa.Array) else pa.array(all_ids)
    if len(all_ids) != n_pool:
        raise ValueError(f"{len(all_ids)} item ids for {n_pool} embeddings rows")
    size = min(opts.sample, n_pool)
    score = rank_hash(item_keys(all_ids), opts.seed)
    picked = np.argpartition(score, size - 1)[:size] if size < n_pool else np.arange(n_pool)
    picked = np.sort(picked)
    ids = all_ids.take(pa.array(picked))
    order = canonical_order(ids)
    rows = picked[order]
    item_ids = ids.take(pa.array(order)).to_pylist()
    x = np.asarray(points[rows], dtype=np.float32)
    labels = None
    if opts.labels is not None and opts.labels.suffix == ".npy":
        every = np.load(opts.labels, allow_pickle=False)
        if every.shape[0] != n_pool:
            raise ValueError(f"--labels has {every.shape[0]} entries, the embeddings {n_pool}")
        labels = every[rows]
    elif opts.labels is not None:
        labels = _csv_labels(opts.labels, item_ids, notes)
    return item_ids, x, n_pool, labels, None, "l2"


def run(args: argparse.Namespace) -> int:
    from ..tune import evidence_table, memory_bound, recommended_block, summary, tune

    opts = from_args(TuneOptions, args)
    notes: list[str] = []
    item_ids, x, n_pool, labels, base, pool_metric = (
        from_pool if opts.pool is not None else from_file)(opts, notes)
    if opts.target > n_pool:
        raise ValueError(f"--target {opts.target} exceeds the pool's {n_pool} items")
    result = tune(x, item_ids, labels, opts.target, n_pool, base=base, metrics=opts.metrics,
                  dedup_thresholds=opts.dedup_thresholds, seed=opts.seed,
                  eval_metric=opts.eval_metric or pool_metric, random_draws=opts.random_draws)
    result.notes.extend(notes)
    bound = memory_bound(opts.sample, x.shape[1], bool(opts.dedup_thresholds))
    if opts.json_output:
        print(json.dumps({**summary(result), "memory_bound_bytes": bound}))
        return 0
    print(f"curate tune: {result.n_sample} of {n_pool} items sampled (seed {opts.seed}), "
          f"target {opts.target} of the pool = {result.sample_target} of the sample, "
          f"evaluated in {result.eval_metric} space against {opts.random_draws} random draws"
          f"{', with labels' if labels is not None else ', no labels'}; memory bound "
          f"{bound / 2**20:.0f} MiB")
    for note in result.notes:
        print(f"note: {note}")
    print("figures: curated (random mean) verdict: + better, = no better, - worse than random")
    print(evidence_table(result))
    print("\nrecommended (pools.yaml):\n")
    print(recommended_block(result), end="")
    return 0
