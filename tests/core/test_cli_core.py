import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation_demo.synthetic import long_tailed_mixture


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    x, labels = long_tailed_mixture(n=3000, dim=16, n_components=30, seed=0)
    np.save(root / "x.npy", x)
    np.save(root / "labels.npy", labels)
    return root, x, labels


def cluster_args(src, out, seed=0):
    return [
        "cluster",
        "--embeddings",
        str(src),
        "--n-clusters",
        "150,30,10",
        "--resampling-steps",
        "3",
        "--sample-sizes",
        "10,3,2",
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]


def test_cluster_then_sample_end_to_end(embeddings, capsys):
    root, x, labels = embeddings
    assert main(cluster_args(root / "x.npy", root / "tree")) == 0
    manifest = json.loads((root / "tree" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["n_items"] == 3000
    assert [lv["stats"]["n_clusters"] for lv in manifest["levels"]] == [150, 30, 10]
    assert "faiss" in manifest["versions"] and manifest["timings"]["fit_s"] > 0
    capsys.readouterr()
    out = root / "sel.npy"
    assert (
        main(
            [
                "sample",
                "--clustering",
                str(root / "tree"),
                "--target-size",
                "500",
                "--seed",
                "1",
                "--labels",
                str(root / "labels.npy"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    selection = np.load(out)
    weights = np.load(root / "sel_weights.npy")
    assert selection.dtype == np.int64 and selection.size == 500 and (weights == 1).all()
    assert np.unique(selection).size == 500 and selection.max() < 3000
    # 29 or 30 of the 30 labels, about half the seeds each (measured over 30 seeds), and the
    # largest label keeps less than half its share of the pool
    assert summary["labels_hit"] >= 29
    assert summary["top1_share"] < 0.5 * np.bincount(labels).max() / labels.size


def test_same_seed_same_files_other_seed_differs(embeddings):
    root, _, _ = embeddings
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        main(cluster_args(root / "x.npy", root / name, seed))
        main(
            [
                "sample",
                "--clustering",
                str(root / name),
                "--target-size",
                "300",
                "--seed",
                str(seed),
                "--out",
                str(root / f"{name}.npy"),
            ]
        )
    a, b, c = (np.load(root / f"{n}.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for level in (1, 2, 3):
        f = f"level_{level}_centroids.npy"
        assert (root / "a" / f).read_bytes() == (root / "b" / f).read_bytes()


def test_parquet_input_gives_the_same_tree(embeddings):
    root, x, _ = embeddings
    table = pa.table(
        {
            "item_id": [f"i{i}" for i in range(len(x))],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 16),
        }
    )
    pq.write_table(table, root / "x.parquet")
    main(cluster_args(root / "x.parquet", root / "pq", seed=5))
    main(cluster_args(root / "x.npy", root / "npy", seed=5))
    f = "level_1_centroids.npy"
    assert (root / "pq" / f).read_bytes() == (root / "npy" / f).read_bytes()


def test_multiplier_writes_weights(embeddings, capsys):
    root, _, _ = embeddings
    main(cluster_args(root / "x.npy", root / "m"))
    assert (
        main(
            [
                "sample",
                "--clustering",
                str(root / "m"),
                "--target-size",
                "5000",
                "--multiplier",
                "2",
                "--out",
                str(root / "m.npy"),
            ]
        )
        == 0
    )
    weights = np.load(root / "m_weights.npy")
    assert weights.sum() == 5000 and weights.max() == 2
    assert np.load(root / "m.npy").size == weights.size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["cluster", "--embeddings", "missing.npy", "--n-clusters", "4", "--out", "o"],
            "--embeddings='missing.npy'",
        ),
        (
            ["cluster", "--embeddings", "{x}", "--n-clusters", "4,x", "--out", "o"],
            "--n-clusters[1]='x'",
        ),
        (
            ["cluster", "--embeddings", "{x}", "--n-clusters", "10,20", "--out", "o"],
            "strictly decrease",
        ),
        (
            ["cluster", "--embeddings", "{x}", "--n-clusters", "5000", "--out", "o"],
            "exceeds the 3000 points",
        ),
        (
            ["sample", "--clustering", "{tree}", "--target-size", "4000", "--out", "o.npy"],
            "exceeds what the pool can give",
        ),
        (
            [
                "sample",
                "--clustering",
                "{tree}",
                "--target-size",
                "10",
                "--strategy",
                "farthest",
                "--out",
                "o.npy",
            ],
            "--strategy='farthest'",
        ),
    ],
)
def test_bad_options_name_the_field_and_value(embeddings, capsys, argv, message):
    root, _, _ = embeddings
    if not (root / "tree").exists():
        main(cluster_args(root / "x.npy", root / "tree"))
    argv = [a.format(x=root / "x.npy", tree=root / "tree") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_rows_in_embeddings_are_named(tmp_path, capsys):
    x = np.ones((50, 4), dtype=np.float32)
    x[7, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    assert (
        main(
            [
                "cluster",
                "--embeddings",
                str(tmp_path / "bad.npy"),
                "--n-clusters",
                "4",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "row 7" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "curation.cli", "cluster", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--n-clusters" in result.stdout and "--resampling-steps" in result.stdout


def test_flags_are_generated_from_the_core_models():
    """Every option of HierarchyConfig / SampleConfig / EmbedderSpec is a flag of its
    subcommand, and a flag the user leaves out takes the model's own default."""
    import argparse

    from curation.commands import cluster, embed, sample
    from curation.commands._options import flag, from_args
    from curation.config import HierarchyConfig, SampleConfig
    from curation.embedding.factory import EmbedderSpec

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for command in (cluster, sample, embed):
        command.register(sub)
    for name, model in (("cluster", HierarchyConfig), ("sample", SampleConfig),
                        ("embed", EmbedderSpec)):
        text = sub.choices[name].format_help()
        for field, info in model.model_fields.items():
            wanted = flag(("no_" if info.default is True else "") + field)
            if (name, field) == ("sample", "stability"):  # needs a subset's version history
                assert wanted not in text
                continue
            assert wanted in text, (name, wanted)
    args = parser.parse_args(["cluster", "--embeddings", "x.npy", "--n-clusters", "8, 4",
                              "--out", "o"])
    assert args.n_clusters == ["8", "4"] and not hasattr(args, "seed")
    with pytest.raises(ValueError, match=r"--embeddings='x.npy'"):
        from_args(cluster.ClusterOptions, args)
    args = parser.parse_args(["embed", "--input", ".", "--out", "o.parquet", "--no-normalize",
                              "--mean", "0.5,0.4,0.3"])
    opts = from_args(embed.EmbedOptions, args)
    spec = opts.spec()
    assert spec.normalize is False and spec.mean == (0.5, 0.4, 0.3)
    assert spec.model_dump(exclude={"normalize", "mean"}) == EmbedderSpec().model_dump(
        exclude={"normalize", "mean"})


@pytest.mark.parametrize(("strategy", "target", "multiplier"),
                         [("random", 500, 1), ("closest", 4000, 2)])
def test_curate_sample_gives_the_platforms_subset(embeddings, tmp_path, strategy, target,
                                                  multiplier):
    """One sampler: `curate sample` (the console script, with the pool's item ids) and the
    subsets asset's selection over a LanceDB assignments table (rows in another order) take
    the same items with the same copies for the same tree, ids and seed."""
    import lancedb

    from curation.config import SampleConfig
    from curation.io import load_clustering
    from curation.subsets import select_subsets

    root, x, _ = embeddings
    if not (root / "tree").exists():
        main(cluster_args(root / "x.npy", root / "tree"))
    ids = [f"img-{i:05d}" for i in np.random.default_rng(3).permutation(len(x))]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    curate = [str(Path(sys.executable).with_name("curate")), "sample"]
    subprocess.run([*curate, "--clustering", str(root / "tree"), "--ids",
                    str(tmp_path / "ids.txt"), "--target-size", str(target), "--strategy",
                    strategy, "--multiplier", str(multiplier), "--seed", "11", "--out",
                    str(tmp_path / "sel.npy")], check=True, capture_output=True)
    rows, copies = np.load(tmp_path / "sel.npy"), np.load(tmp_path / "sel_weights.npy")
    from_cli = dict(zip((ids[r] for r in rows), copies.tolist(), strict=True))

    hierarchy, assignment = load_clustering(root / "tree")
    stored = np.random.default_rng(4).permutation(len(x))  # the platform's storage order
    table = lancedb.connect(str(tmp_path / "db")).create_table("p__assignments", pa.table({
        "item_id": [ids[r] for r in stored],
        "uri": [f"file:///{ids[r]}.jpg" for r in stored],
        "level_1": assignment.leaf[stored],
        "distance": assignment.distance[stored],
        "fit_version": np.ones(len(x), np.int64),
    }))
    config = SampleConfig(target_size=target, strategy=strategy, multiplier=multiplier,
                          seed=11)
    scan = select_subsets(table, hierarchy.parents, hierarchy.centroids[0].shape[0], 1,
                          {"s": config}, batch_rows=700)
    subset = scan.subsets["s"].rows
    from_platform = dict(zip(subset["item_id"].to_pylist(), subset["weight"].to_pylist(),
                             strict=True))
    assert sum(from_cli.values()) == target and len(from_cli) == len(rows)
    assert from_cli == from_platform
