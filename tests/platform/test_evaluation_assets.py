"""Evaluation and report assets materialised in-process on real LanceDB and Dagster."""

from __future__ import annotations

import base64
import csv
import json
import re

import numpy as np
import pytest
from dagster import AssetCheckSeverity, AssetKey
from kit import LABELLINGS, materialized, meta


@pytest.fixture(scope="module")
def evaluated(grown, tmp_path_factory):
    """The grown platform with every evaluation and the report materialised."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATION_HOME", str(home))
    pool = grown.pool.name
    grown.evaluated = grown.run([[pool, "evaluation", s.name] for s in grown.pool.subsets])
    grown.reported = grown.run([[pool, "report"]])
    grown.home = home
    yield grown
    mp.undo()


def test_evaluation_per_subset_beats_random_with_labels(evaluated):
    p = evaluated
    assert p.evaluated.success
    for spec in p.pool.subsets:
        (m,) = materialized(p.evaluated, ["tiny", "evaluation", spec.name])
        values = meta(m)
        report = values["evaluation"]
        assert values["labelled"] is True and values["unlabelled_items"] == 0
        assert values["pool_size"] == 900
        assert report["curated"]["items"] == report["random"]["items"] == values["selected_items"]
        assert set(report["curated"]["balance"]) == {"level_1", "level_2"}
        assert values["top_entropy_curated"] >= values["top_entropy_random"]
        if spec.strategy == "random":  # "closest" picks near centroids: few components
            assert values["label_entropy_curated"] > values["label_entropy_random"]
        assert 0.0 <= values["knn_balanced_accuracy_random"] <= 1.0
        assert "| k-NN balanced_accuracy | higher is better |" in values["summary"]
        assert "| coverage p99 distance | lower is better |" in values["summary"]
        # every figure against the five draws: mean, spread and a verdict
        assert len(report["random_draws"]) == values["random_draws"] == 5
        assert report["versus_random"]["knn.balanced_accuracy"]["random_std"] >= 0.0
        assert values["top_entropy_random_std"] > 0.0
        assert values["top_entropy_verdict"] == report["versus_random"][
            "balance.level_2.entropy"]["verdict"]
        assert "| label entropy | higher is better |" in values["versus_random_table"]
        assert values["verdict"] in ("better than random", "no better than random",
                                     "worse than random")
    checks = {e.asset_check_key.asset_key.path[-1]: e for e in
              p.evaluated.get_asset_check_evaluations()}
    assert set(checks) == {s.name for s in p.pool.subsets}
    # A balanced random subset of 200 is better balanced than uniform beyond the noise of the
    # draws. (Its p99 coverage distance on this 900-item pool is a coin flip between uniform
    # draws, and this pool's labels barely follow its vectors, k-NN balanced accuracy < 0.1
    # on both sides: those two may read "no better than random".)
    assert not [r for r in checks["even"].metadata["reasons"].value
                if not r.startswith(("coverage", "k-NN"))]
    for e in checks.values():  # the check fails exactly when there are reasons, as a WARN
        reasons = e.metadata["reasons"].value
        assert e.passed == (reasons == []) and e.severity == AssetCheckSeverity.WARN
        verdict = e.metadata["verdict"].value
        assert verdict in ("better than random", "no better than random", "worse than random")
        assert e.passed == (verdict == "better than random")
        if not e.passed:  # the numbers are in the description: curated, mean +- std, range
            assert e.description.startswith(verdict) and " +- " in e.description
            assert all(r in e.description for r in reasons)
        assert e.metadata["random_draws"].value == 5
        assert "| verdict |" in e.metadata["versus_random_table"].value


def test_evaluation_is_downstream_of_its_subset_and_eager(evaluated):
    graph = evaluated.defs.resolve_asset_graph()
    node = graph.get(AssetKey(["tiny", "evaluation", "even"]))
    assert node.parent_keys == {AssetKey(["tiny", "subsets", "even"])}
    assert node.automation_condition is not None
    report = graph.get(AssetKey(["tiny", "report"]))
    assert report.parent_keys == {AssetKey(["tiny", "evaluation", s.name])
                                  for s in evaluated.pool.subsets}


def test_report_written_under_home_and_linked(evaluated):
    p = evaluated
    assert p.reported.success
    values = meta(materialized(p.reported, ["tiny", "report"])[0])
    path = p.home.resolve() / "reports" / "tiny.html"
    assert values["path"] == str(path) and values["url"] == path.as_uri()
    assert values["evaluated_subsets"] == ["core", "even"]
    assert "| label entropy | higher is better |" in values["evaluation_even"]
    page = path.read_text()
    # two size plots, two balance plots, all inline PNGs; item ids of the vectors pool
    assert len(re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,', page)) == 4
    assert page.count('<code class="item">') > 0
    assert "largest: cluster" in page and "smallest: cluster" in page


def test_evaluation_shows_its_figure_in_the_ui_with_directions(evaluated):
    """The plot sits in the metadata as Markdown with a small embedded PNG (Dagster's UI
    renders `data:` image sources), and every figure says which direction is better."""
    p = evaluated
    for spec in p.pool.subsets:
        values = meta(materialized(p.evaluated, ["tiny", "evaluation", spec.name])[0])
        figure = values["figure"]
        (uri,) = re.findall(r"!\[[^\]]*\]\((data:image/png;base64,[A-Za-z0-9+/=]+)\)", figure)
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png.startswith(b"\x89PNG") and 2_000 < len(png) < 40_000
        caption = figure.lower()
        assert "distance to nearest selected item (lower is better)" in caption
        assert "entropy per level, nats (higher is better)" in caption
        assert "top-1 share per level (lower is better)" in caption
        assert "k-nn balanced accuracy (higher is better)" in caption  # labelled pool
        headline = {k.removesuffix("_curated") for k in values if k.endswith("_curated")}
        assert values["directions"] == {
            "coverage_p99": "lower is better", "leaf_share": "higher is better",
            "top_entropy": "higher is better", "label_entropy": "higher is better",
            "knn_balanced_accuracy": "higher is better"}
        assert set(values["directions"]) == headline
        # every row of the table but the (equal) sizes has a direction
        rows = [r.split(" | ") for r in values["summary"].splitlines()[2:]]
        assert all(r[1] in ("lower is better", "higher is better") for r in rows[1:])
    assets_def = p.defs.resolve_assets_def(AssetKey(["tiny", "evaluation", "even"]))
    (check,) = assets_def.check_specs
    assert check.name == "not_worse_than_random"
    assert "p99 distance to the nearest selected item: lower is better" in check.description
    assert "top-level entropy (higher is better)" in check.description


def test_labels_file_named_in_the_pool_config(tmp_path):
    """A pool whose labels come from a CSV under its landing prefix (as the fashion demo)."""
    from dagster import instance_for_test
    from kit import Platform, small_pool

    with pytest.raises(ValueError, match="labels"):
        small_pool(labels="../elsewhere.csv")
    pool = small_pool(name="filed", labels="labels.csv",
                      subsets=[{"name": "even", "target_size": 150, "seed": 1}])
    with instance_for_test() as instance:
        p = Platform(tmp_path, instance, pool)
        drops = [p.land(f"d{i}") for i in range(2)]
        for d in drops:
            assert p.ingest(d).success
        p.refresh(drops)
        ids = p.table("raw").to_arrow()["item_id"].to_pylist()
        with (p.landing / "filed" / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["item_id", "label"])
            writer.writerows((item, "odd" if n % 3 else "third") for n, item in enumerate(ids))
        result = p.run([["filed", "evaluation", "even"]])
        assert result.success
        values = meta(materialized(result, ["filed", "evaluation", "even"])[0])
        assert values["labelled"] is True
        report = values["evaluation"]
        assert report["pool"]["labels"]["labels_hit"] == 2  # the file's labels, not the drops'
        assert json.dumps(report)  # JSON-ready
        assert np.isfinite(report["curated"]["coverage"]["p99"])


def test_evaluation_records_its_sample_and_reads_vectors_by_row(evaluated):
    from curation.pool_pass import items_by_row, open_snapshot, pool_pass
    from curation.selection import item_keys
    from curation.store import PoolStore, vectors_of

    p = evaluated
    for spec in p.pool.subsets:
        values = meta(materialized(p.evaluated, ["tiny", "evaluation", spec.name])[0])
        sample = values["evaluation"]["sample"]
        assert values["eval_sample"] == p.pool.eval_sample == sample["eval_sample"]
        # one block per random draw, each read after the last is freed: the vectors held at
        # once stay within the pool however many draws; the probe is read again per block
        assert values["vectors_read"] == sample["vectors_read"]
        assert sample["vectors_held_max"] <= values["pool_size"]
        assert sample["vectors_read"] <= sample["random_draws"] * sample["vectors_held_max"]
        assert "seeded sample" in values["sample_note"]
    # one pass streams every embedded item once, placed in the current tree; the row-id
    # readers return each asked-for row's own vector, id and uri, in the order asked
    passing = pool_pass(open_snapshot(p.lancedb.store(p.pool.name)), labels=False)
    batches = list(passing.batches())
    locators = np.concatenate([b.locators for b in batches])
    keys = np.concatenate([b.keys for b in batches])
    paths = np.concatenate([b.paths for b in batches])
    full = p.table("embeddings").to_arrow()
    assert locators.size == full.num_rows == np.unique(keys).size
    assert paths.shape == (full.num_rows, 2) and (paths >= 0).all()
    rows = np.random.default_rng(0).permutation(locators.size)[:123]
    ids, uris = items_by_row(passing.embeddings, locators[rows])
    by_id = dict(zip(full["item_id"].to_pylist(), vectors_of(full["vector"]), strict=True))
    got = PoolStore.vectors_by_row(passing.embeddings, locators[rows])
    assert np.array_equal(got, np.stack([by_id[i] for i in ids]))
    by_uri = dict(zip(full["item_id"].to_pylist(), full["uri"].to_pylist(), strict=True))
    assert uris == [by_uri[i] for i in ids]
    assert np.array_equal(keys[rows], item_keys(ids))  # keys of the same items
    stored = p.table("assignments").to_arrow()
    leaf_of = dict(zip(stored["item_id"].to_pylist(), stored["level_1"].to_pylist(),
                       strict=True))
    assert paths[rows, 0].tolist() == [leaf_of[i] for i in ids]


def test_a_pool_streamed_in_many_partitions_is_the_same_pool(evaluated, monkeypatch):
    """Under a join budget too small for the pool, the pass splits the item keys into
    partitions (one pass over the tables each) and streams the same items, places and
    labels; the evaluation records how many passes it took."""
    from curation import pool_stream
    from curation.pool_pass import open_snapshot, pool_pass

    p = evaluated

    def streamed():
        passing = pool_pass(open_snapshot(p.lancedb.store(p.pool.name)))
        batches = list(passing.batches())
        rank = passing.names.rank()  # once the pass is over: codes in sorted label order
        rows = sorted((int(b.keys[i]), tuple(b.paths[i].tolist()),
                       -1 if b.codes is None or b.codes[i] < 0 else int(rank[b.codes[i]]),
                       int(b.locators[i]))
                      for b in batches for i in range(b.keys.size))
        return passing.parts, rows

    one_part, whole = streamed()
    monkeypatch.setattr(pool_stream, "JOIN_BUDGET", 2000)
    parts, split = streamed()
    assert one_part == 1 and parts > 5
    assert split == whole and len(whole) == p.table("embeddings").count_rows()
    for spec in p.pool.subsets:
        values = meta(materialized(p.evaluated, ["tiny", "evaluation", spec.name])[0])
        assert values["pool_passes"] == 1


# ---- pools with no labels, some labels or all labels -------------------------------------------

@pytest.fixture(scope="module", params=LABELLINGS)
def labelled_as(request, tmp_path_factory):
    """A pool of three drops whose items carry a label: all of them, every other one, or none
    (no `label` column, no labels file: a web-scale SSL pool), with every evaluation and the
    report materialised."""
    from dagster import instance_for_test
    from kit import Platform, small_pool

    tmp = tmp_path_factory.mktemp(f"labels_{request.param}")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATION_HOME", str(tmp / "home"))
    with instance_for_test() as instance:
        p = Platform(tmp, instance, small_pool(), labels=request.param)
        drops = [p.land(f"d{i}") for i in range(3)]
        for d in drops:
            assert p.ingest(d).success
        p.refresh(drops)
        p.evaluated = p.run([[p.pool.name, "evaluation", s.name] for s in p.pool.subsets])
        p.reported = p.run([[p.pool.name, "report"]])
        p.home = tmp / "home"
        yield p
    mp.undo()


LABEL_HEADLINES = {"label_entropy", "knn_balanced_accuracy"}
LABEL_FREE_HEADLINES = {"coverage_p99", "leaf_share", "top_entropy"}


def test_evaluation_and_report_with_no_some_or_all_labels(labelled_as):
    """Coverage, balance and leaf share need no labels: they are there for every pool. The
    label figures are there only when every item has a label, and otherwise absent (no key,
    not a zero or a NaN), the metadata and the check saying why."""
    p = labelled_as
    labelled = p.labels == "all"
    unlabelled = {"all": 0, "some": 450, "none": 900}[p.labels]
    assert p.evaluated.success and p.reported.success
    checks = {e.asset_check_key.asset_key.path[-1]: e
              for e in p.evaluated.get_asset_check_evaluations()}
    assert set(checks) == {s.name for s in p.pool.subsets}
    for spec in p.pool.subsets:
        values = meta(materialized(p.evaluated, ["tiny", "evaluation", spec.name])[0])
        report = values["evaluation"]
        json.dumps(report, allow_nan=False)  # JSON-ready: no NaN stands in for a figure
        assert values["labelled"] is labelled and values["unlabelled_items"] == unlabelled
        assert values["pool_size"] == 900
        headline = {k.removesuffix("_curated") for k in values if k.endswith("_curated")}
        assert headline == LABEL_FREE_HEADLINES | (LABEL_HEADLINES if labelled else set())
        assert set(values["directions"]) == headline
        for name in LABEL_FREE_HEADLINES:
            assert np.isfinite(values[f"{name}_curated"]) and np.isfinite(values[f"{name}_random"])
        assert set(report["curated"]["balance"]) == {"level_1", "level_2"}
        assert 0.0 < report["curated"]["coverage"]["leaf_share"] <= 1.0
        for side in (report["curated"], report["random"], *report["random_draws"]):
            assert ("labels" in side) is labelled and ("knn" in side) is labelled
        assert ("labels" in report["pool"]) is labelled
        assert (report["sample"]["test_items"] > 0) is labelled  # no k-NN split without
        judged_labels = {path for path in report["versus_random"]
                         if path.startswith(("labels.", "knn."))}
        assert bool(judged_labels) is labelled
        assert ("k-NN" in values["summary"]) is labelled
        assert "| coverage p99 distance | lower is better |" in values["summary"]
        caption = values["figure"].lower()
        assert "top-1 share per level (lower is better)" in caption
        assert ("k-nn balanced accuracy" in caption) is labelled
        note = values["label_figures"]
        check = checks[spec.name]
        assert check.metadata["label_figures"].value == note
        if labelled:
            assert note.startswith("present")
            assert "label figures" not in check.description
        else:
            why = ("the pool has no labels" if p.labels == "none"
                   else "450 of 900 items carry no label")
            assert note.startswith(f"absent: {why}"), note
            assert f"label figures absent: {why}" in check.description, check.description
    page = (p.home.resolve() / "reports" / "tiny.html").read_text()
    assert meta(materialized(p.reported, ["tiny", "report"])[0])["evaluated_subsets"] == [
        "core", "even"]
    assert len(re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,', page)) == 4
    assert page.count("coverage p99 distance") >= 2
    assert ("k-NN balanced_accuracy" in page) is labelled
    assert (page.count("Label figures absent") == 2) is not labelled


def test_a_pool_with_no_some_or_all_labels_streams_the_same_in_many_partitions(labelled_as,
                                                                                monkeypatch):
    """Under a join budget too small for the pool, a partition may hold no labelled item at
    all (every one, without labels): the pass streams the same items, places and label
    codes (-1 for an item without a label) as in one partition."""
    from curation import pool_stream
    from curation.pool_pass import open_snapshot, pool_pass

    p = labelled_as

    def streamed():
        passing = pool_pass(open_snapshot(p.lancedb.store(p.pool.name)))
        rows = sorted((int(b.keys[i]), tuple(b.paths[i].tolist()),
                       -1 if b.codes is None else int(b.codes[i]))
                      for b in passing.batches() for i in range(b.keys.size))
        return passing.parts, rows

    one_part, whole = streamed()
    monkeypatch.setattr(pool_stream, "JOIN_BUDGET", 2000)
    parts, split = streamed()
    assert one_part == 1 and parts > 5 and len(whole) == 900
    labelled = sum(code >= 0 for *_, code in whole)
    assert labelled == {"all": 900, "some": 450, "none": 0}[p.labels]
    # codes are handed out in arrival order: compare which items carry one
    assert [(k, path, code >= 0) for k, path, code in split] == \
        [(k, path, code >= 0) for k, path, code in whole]
