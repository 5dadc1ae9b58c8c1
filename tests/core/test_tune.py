"""`curate tune`: a seeded sweep of tree shapes, metrics and dedup on a sample of a pool, ranked
by the evaluation against random draws, with the recommended pools.yaml block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from curation.cli import main
from curation.config import DedupConfig, HierarchyConfig, suggest_levels
from curation.tune import (
    Candidate,
    evidence_table,
    recommended_block,
    scale_levels,
    shape_variants,
    summary,
    sweep_candidates,
    tune,
)
from curation_demo.synthetic import fixed_mixture_draw, long_tailed_mixture, zipf_weights


def without_seconds(result) -> dict:
    data = summary(result)
    for row in data["rows"]:
        row.pop("seconds")
    return data


def direction_pool(n: int = 1500, dim: int = 16, n_classes: int = 12, seed: int = 0):
    """Long-tailed classes told apart by direction only; lengths spread over two orders of
    magnitude, so an l2 tree groups by length and mixes the classes (a cosine space)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_classes, n, p=zipf_weights(n_classes, 1.2))
    directions = rng.normal(size=(n_classes, dim))
    unit = directions[labels] / np.linalg.norm(directions[labels], axis=1, keepdims=True)
    unit = unit + 0.2 * rng.normal(size=(n, dim))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return (unit * rng.lognormal(0.0, 1.0, n)[:, None]).astype(np.float32), labels


def test_shapes_start_from_the_size_rule_and_vary_it():
    shapes = dict(shape_variants(2000))
    base = tuple(suggest_levels(2000))
    assert list(shapes)[0] == "suggested" and shapes["suggested"] == base
    assert shapes["leaves x2"] == (2 * base[0], *base[1:])
    assert shapes["leaves x0.5"] == (round(base[0] / 2), *base[1:])
    assert len(shapes["3 levels"]) == 3 and shapes["3 levels"][::2] == base
    for ks in shapes.values():
        HierarchyConfig(n_clusters=list(ks))  # strictly decreasing: a valid config
    # a tree of 3 levels or more is also tried with 2
    assert dict(shape_variants(1_000_000))["2 levels"] == (25_000, 25)
    # every shape with every metric, then the suggested one with each dedup threshold
    candidates = sweep_candidates(2000, ("l2", "cosine"), (0.9,))
    assert len(candidates) == 2 * len(shapes) + 2
    assert {c.dedup_threshold for c in candidates[-2:]} == {0.9}
    assert scale_levels((50, 10), 4.0) == (200, 40)
    with pytest.raises(ValueError):
        scale_levels((50, 10), 0.5)


def test_sweep_is_deterministic_with_one_row_per_configuration():
    x, labels = long_tailed_mixture(n=900, dim=8, n_components=15, seed=3)
    ids = [f"item-{i:04d}" for i in range(len(x))]
    quick = HierarchyConfig(n_clusters=[2, 1], resampling_steps=[2], max_iter=15)
    sweep = dict(metrics=("cosine",), dedup_thresholds=(0.99,), seed=4, base=quick)
    first = tune(x, ids, labels, target=200, n_pool=1800, **sweep)
    again = tune(x, ids, labels, target=200, n_pool=1800, **sweep)
    candidates = sweep_candidates(900, ("cosine",), (0.99,))
    assert len(first.rows) == len(candidates)
    assert {r.candidate for r in first.rows} == set(candidates)
    assert without_seconds(first) == without_seconds(again)  # same sample and seed, same sweep
    assert recommended_block(first) == recommended_block(again)
    table = evidence_table(first).splitlines()
    assert len(table) == 2 + len(candidates)  # header, rule, one line per configuration
    assert table[0].split("|")[1].strip() == "rank"
    assert [r.rank for r in first.rows] == list(range(1, len(candidates) + 1))
    # the target's share of the pool is the selection's share of the sample
    assert first.sample_target == 100 and all(r.selected == 100 for r in first.rows)
    # the pool's counts are the sample's x 2 (every cluster keeps its items)
    assert all(r.pool_clusters == scale_levels(r.candidate.n_clusters, 2.0) for r in first.rows)
    deduped = [r for r in first.rows if r.candidate.dedup_threshold is not None]
    assert deduped and all(r.duplicates_removed >= 0 for r in deduped)
    assert {"knn", "label entropy", "p99 coverage", "top entropy"} <= set(first.best.figures)


def test_a_metric_mismatch_and_a_single_leaf_rank_below_the_fitting_tree():
    x, labels = direction_pool()
    ids = [f"d{i:05d}" for i in range(len(x))]
    good = Candidate("fits", (40, 8), "cosine")
    mismatch = Candidate("metric mismatch", (40, 8), "l2")
    single = Candidate("single leaf", (1,), "cosine")
    result = tune(x, ids, labels, target=150, n_pool=len(x), candidates=[single, mismatch, good],
                  eval_metric="cosine")
    ranks = {r.candidate: r for r in result.rows}
    assert result.best.candidate == good
    assert ranks[good].rank < ranks[mismatch].rank and ranks[good].rank < ranks[single].rank
    assert ranks[good].figures["label entropy"]["verdict"] == "better than random"
    # a single leaf is a random draw: nothing better than random
    assert ranks[single].better_headline == 0
    assert ranks[good].figures["knn"]["gain"] > ranks[mismatch].figures["knn"]["gain"] + 0.1


def test_the_recommended_block_is_a_valid_pools_yaml_block():
    x, labels = long_tailed_mixture(n=600, dim=8, n_components=10, seed=1)
    ids = [f"r{i}" for i in range(len(x))]
    base = HierarchyConfig(n_clusters=[2, 1], resampling_steps=[3], max_iter=20)
    result = tune(x, ids, labels, target=90, n_pool=1800, base=base, dedup_thresholds=(0.98,),
                  candidates=[Candidate("suggested", (30, 6), "cosine", 0.98),
                              Candidate("suggested", (30, 6), "l2")])
    for row in result.rows:
        block = yaml.safe_load(recommended_block(result, row))
        config = HierarchyConfig(**block["hierarchy"])
        assert config.n_clusters == [90, 18]  # x 3: the pool is three times the sample
        assert config.metric == row.candidate.metric and config.resampling_steps == [3]
        assert config.max_iter == 20 and config.seed == result.seed
        if row.candidate.dedup_threshold is None:
            assert "dedup" not in block
        else:
            assert DedupConfig(**block["dedup"]) == DedupConfig(enabled=True, threshold=0.98)
    assert recommended_block(result) == recommended_block(result, result.best)


def test_a_sweep_stays_within_its_memory_bound():
    import tracemalloc

    from curation.tune import memory_bound

    x, labels = long_tailed_mixture(n=2000, dim=128, n_components=12, seed=6)
    ids = [f"m{i}" for i in range(len(x))]
    quick = HierarchyConfig(n_clusters=[2, 1], resampling_steps=[2], max_iter=10)
    tune(x[:60], ids[:60], labels[:60], 10, 60, base=quick, metrics=("cosine",))  # imports
    tracemalloc.start()
    try:
        tune(x, ids, labels, 200, 2000, base=quick,
             candidates=[Candidate("suggested", (50, 10), "cosine"),
                         Candidate("suggested", (50, 10), "cosine", 0.95)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # numpy's allocations (faiss' own are not traced); the sample was allocated before
    assert x.nbytes + peak <= memory_bound(2000, 128, dedup=True)
    assert x.nbytes + peak <= memory_bound(2000, 128)  # dedup's run fits in the same room


def test_cli_sample_does_not_depend_on_the_files_row_order(tmp_path, capsys):
    x, labels = long_tailed_mixture(n=1200, dim=8, n_components=12, seed=2)
    ids = np.array([f"item-{i:05d}" for i in range(len(x))])
    outputs = []
    for name, order in (("sorted", np.arange(len(x))),
                        ("shuffled", np.random.default_rng(9).permutation(len(x)))):
        np.save(tmp_path / f"{name}.npy", x[order])
        np.save(tmp_path / f"{name}_labels.npy", labels[order])
        (tmp_path / f"{name}.txt").write_text("\n".join(ids[order]) + "\n")
        args = ["tune", "--embeddings", str(tmp_path / f"{name}.npy"), "--ids",
                str(tmp_path / f"{name}.txt"), "--labels", str(tmp_path / f"{name}_labels.npy"),
                "--target", "120", "--sample", "600", "--metrics", "cosine",
                "--dedup-thresholds", "none", "--seed", "5", "--json"]
        assert main(args) == 0
        data = json.loads(capsys.readouterr().out)
        for row in data["rows"]:
            row.pop("seconds")
        outputs.append(data)
    assert outputs[0] == outputs[1]
    assert outputs[0]["n_sample"] == 600 and outputs[0]["n_pool"] == 1200
    assert outputs[0]["labelled_items"] == 600
    assert all(r["metric"] == "cosine" and r["dedup_threshold"] is None
               for r in outputs[0]["rows"])
    assert outputs[0]["memory_bound_bytes"] == 10 * 600 * 8 * 4 + 600 * 64
    # a labels CSV keys labels by item id; a sampled item without one leaves them out
    rows = [f"{i},{v}" for i, v in zip(ids, labels, strict=True)]
    csv_args = ["tune", "--embeddings", str(tmp_path / "sorted.npy"), "--ids",
                str(tmp_path / "sorted.txt"), "--target", "60", "--sample", "300",
                "--metrics", "cosine", "--dedup-thresholds", "none", "--json",
                "--labels", str(tmp_path / "labels.csv")]
    (tmp_path / "labels.csv").write_text("item_id,label\n" + "\n".join(rows[::2]) + "\n")
    assert main(csv_args) == 0
    partial = json.loads(capsys.readouterr().out)
    assert partial["labelled_items"] == 0 and "have no label" in partial["notes"][0]
    assert "knn" not in partial["rows"][0]["figures"]
    (tmp_path / "labels.csv").write_text("item_id,label\n" + "\n".join(rows) + "\n")
    assert main(csv_args) == 0
    labelled = json.loads(capsys.readouterr().out)
    assert labelled["labelled_items"] == 300 and "knn" in labelled["rows"][0]["figures"]
    # one source, validated at the edge
    assert main(["tune", "--target", "5"]) == 2
    assert "give either --pool or --embeddings" in capsys.readouterr().err
    assert main(["tune", "--embeddings", str(tmp_path / "sorted.npy"), "--target", "5",
                 "--dedup-thresholds", "1.5"]) == 2
    assert "--dedup-thresholds" in capsys.readouterr().err


def write_demo_pool(lancedb: Path, n: int = 1500, dim: int = 64) -> None:
    """The bundled `demo` pool's embeddings and raw tables (real LanceDB), with the demo's own
    generator, labelled here (labels in the items' metadata, as build_synthetic_drops writes
    them with labels=True; the demo's own drops carry none) so the sweep has label figures."""
    from curation.store import PoolStore, rows

    x, labels = fixed_mixture_draw(n, dim, seed=11)
    ids = [f"drop-00000-{i:06d}" for i in range(n)]
    store = PoolStore.open_uri(str(lancedb), "demo")
    store.append(store.name("embeddings"), rows("embeddings", {
        "item_id": ids, "drop": ["drop-00000"] * n, "uri": ids, "vector": x,
        "model": ["precomputed"] * n, "model_hash": ["0"] * n}, dim=dim))
    store.append(store.name("raw"), rows("raw", {
        "item_id": ids, "drop": ["drop-00000"] * n, "uri": ids, "size": [0] * n,
        "source": ["vectors"] * n, "row": list(range(n)),
        "meta": [json.dumps({"label": int(v)}) for v in labels], "ingested_at": [""] * n,
        "text": [None] * n, "values": pa.nulls(n, pa.list_(pa.float32()))}))


def test_installed_curate_tune_on_the_bundled_demo_pool(tmp_path):
    write_demo_pool(tmp_path / "lancedb")
    env = {k: v for k, v in os.environ.items() if k not in ("CURATION_POOLS",)}
    env["CURATION_HOME"] = str(tmp_path / "home")
    curate = Path(sys.executable).parent / "curate"
    done = subprocess.run([str(curate), "tune", "--pool", "demo", "--lancedb",
                           str(tmp_path / "lancedb"), "--target", "200", "--sample", "1000"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    head, rest = out.split("\nrecommended (pools.yaml):\n")
    lines = head.splitlines()
    assert lines[0].startswith("curate tune: 1000 of 1500 items sampled (seed 0)")
    assert "evaluated in l2 space" in lines[0] and "with labels" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    n_configs = len(sweep_candidates(1000, ("l2", "cosine"), (0.95,)))
    assert len(table) == 2 + n_configs
    assert "knn" in table[0] and "label entropy" in table[0]
    block = yaml.safe_load(rest)
    config = HierarchyConfig(**block["hierarchy"])
    # the demo pool's own fit options carry over; counts scaled to the pool (x 1.5)
    assert config.resampling_steps == [5] and config.max_iter == 30
    ranked_first = table[2].split("|")
    assert json.loads(ranked_first[4].strip()) == config.n_clusters
