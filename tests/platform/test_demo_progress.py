"""`curate demo` talks: its progress reporter reads a real instance (runs of the small platform's
drops, fit, subsets, evaluations and report) and says what happened on stderr, once, leaving
stdout to the JSON."""

from __future__ import annotations

import re

from curation_demo.progress import DemoProgress


def said(capsys) -> list[str]:
    """The reporter's stderr lines since the last call (in-process runs log there too);
    stdout must have stayed empty."""
    captured = capsys.readouterr()
    assert captured.out == ""
    return [x for x in captured.err.splitlines() if re.match(r"\[ *\d+\.\d s\] ", x)]


def test_progress_reports_runs_embeddings_fit_and_subsets(platform, capsys):
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
        assert re.search(rf"evaluation of {spec.name} refreshed \(curated, random\): "
                         rf"coverage_p99 {figure}, .*knn_balanced_accuracy {figure}", text), text
    assert re.search(r"report written: \S+tiny\.html$", text, re.MULTILINE), text
