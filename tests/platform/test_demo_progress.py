"""`curate demo` talks: its progress reporter reads a real instance (runs of the small platform's
drops, fit, subsets, evaluations and report) and says what happened on stderr, once, leaving
stdout to the JSON."""

from __future__ import annotations

import re

import pytest

from curation_demo.progress import DemoProgress


def said(capsys) -> list[str]:
    """The reporter's stderr lines since the last call (in-process runs log there too);
    stdout must have stayed empty."""
    captured = capsys.readouterr()
    assert captured.out == ""
    return [x for x in captured.err.splitlines() if re.match(r"\[ *\d+\.\d s\] ", x)]


@pytest.mark.parametrize("platform", ["all", "none"], indirect=True)
def test_progress_reports_runs_embeddings_fit_and_subsets(platform, capsys):
    """With labels and without (the demo pool's drops carry none): an unlabelled pool's
    evaluations say their label-free figures and that the label figures are absent."""
    progress = DemoProgress(platform.pool)  # on stderr
    drops = ["d0", "d1"]
    with progress:
        progress.landed([platform.land(d) for d in drops], 600, "the landing folder")
        progress.poll(platform.instance)  # nothing ran yet
        (landed,) = said(capsys)
        assert re.fullmatch(r"\[ *\d+\.\d s\] landed 2 drop\(s\) \(d0 \.\. d1, 600 items\) in "
                            r"the landing folder", landed), landed

        for d in drops:
            platform.ingest(d)
        progress.poll(platform.instance)
        ingested = said(capsys)
        for d in drops:  # each drop's run, started and finished, with its assets
            run = rf"run \w{{8}} \(embeddings, raw; drop {d}\)"
            assert any(re.search(rf"{run} started$", x) for x in ingested), ingested
            assert any(re.search(rf"{run} finished in [\d.]+ s$", x) for x in ingested), ingested
        assert any(re.search(r"embedded 300 items of drop d0 \(\d+ items/s\); 300 in the pool",
                             x) for x in ingested), ingested
        assert any(re.search(r"embedded 300 items of drop d1 \(\d+ items/s\); 600 in the pool",
                             x) for x in ingested), ingested
        drops_bar = progress.bar.tasks[0]
        assert (drops_bar.completed, drops_bar.total, drops_bar.fields["items"]) == (2, 2, 600)

        platform.refresh(drops, refit="force")
        name = platform.pool.name
        platform.run([[name, "evaluation", s.name] for s in platform.pool.subsets])
        platform.run([[name, "report"]])
        progress.poll(platform.instance)
        refreshed = said(capsys)
        progress.poll(platform.instance)
        assert said(capsys) == []  # everything was said once
    # the bar's last state goes to stderr too, and stdout stays free for the demo's JSON line
    closed = capsys.readouterr()
    assert closed.out == ""
    assert re.search(r"drops embedded .* 2/2 600 items", closed.err), closed.err

    text = "\n".join(refreshed)
    assert re.search(r"run \w{8} \(level_1, level_2\) finished in [\d.]+ s", text), text
    assert re.search(r"run \w{8} \(subsets/core, subsets/even\) finished in", text), text
    assert re.search(r"fit 1 \(.*\): 12 leaf clusters over 600 items in [\d.]+ s", text), text
    figure = r"[\d.e+-]+ / [\d.e+-]+"
    for spec in platform.pool.subsets:
        assert re.search(rf"subset {spec.name} refreshed: \d+ of 600 items \(fit 1\)", text), text
        said_of = re.search(rf"evaluation of {spec.name} refreshed \(curated, random\): "
                            rf"coverage_p99 {figure}, leaf_share {figure}, top_entropy "
                            rf"{figure}(.*)$", text, re.MULTILINE)
        assert said_of, text
        if platform.labels == "all":
            assert re.fullmatch(rf", label_entropy {figure}, knn_balanced_accuracy {figure}",
                                said_of[1]), said_of[1]
        else:
            assert said_of[1] == "; label figures absent: the pool has no labels (none from " \
                "a labels file or a `label` of the items)", said_of[1]
    assert re.search(r"report written: \S+tiny\.html$", text, re.MULTILINE), text
    # the demo's final JSON line: the figures the evaluation has, and why the rest are absent
    from curation_demo.command import evaluation_figures
    from curation_demo.live import latest_metadata

    for spec in platform.pool.subsets:
        _, values = latest_metadata(platform.instance, [name, "evaluation", spec.name])
        figures = evaluation_figures(values)
        names = {k.rsplit("_", 1)[0] for k in figures if k != "label_figures"}
        assert names == {"coverage_p99", "leaf_share", "top_entropy"} | (
            {"label_entropy", "knn_balanced_accuracy"} if platform.labels == "all" else set())
        assert ("label_figures" in figures) is (platform.labels != "all")
        assert figures.get("label_figures", "absent: the pool has no labels").startswith(
            "absent: the pool has no labels")
