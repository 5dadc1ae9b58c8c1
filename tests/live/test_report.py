"""The HTML report (curation.report): content per modality, and the page in a real headless
Chromium (Debian's /usr/bin/chromium driven by PyPI playwright, no browser download)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from curation.evaluation import evaluate_selection
from curation.report import (
    evaluation_markdown,
    example_clusters,
    markdown_table,
    render_report,
    text_snippet,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def pool_with_paths(n=800, seed=0):
    rng = np.random.default_rng(seed)
    top = rng.choice(4, size=n, p=[0.65, 0.2, 0.1, 0.05])
    leaf = top * 5 + rng.integers(0, 5, size=n)
    x = (np.eye(8)[top] * 6 + rng.normal(size=(n, 8))).astype(np.float32)
    return x, np.stack([leaf, top], axis=1), top


def write_pngs(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    uris = []
    for i in range(n):
        pixels = np.full((28, 28), (i * 37) % 256, np.uint8)
        pixels[i % 28, :] = 255
        path = folder / f"{i:04d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        uris.append(str(path))
    return uris


def build_page(tmp_path: Path, modality: str = "images",
               labelled: bool = True) -> tuple[str, dict]:
    """The page of a pool of 800 items; `labelled=False`: its items carry no label (the
    evaluation has coverage, balance and leaf share only)."""
    x, paths, top = pool_with_paths()
    ids = [f"item-{i:04d}" for i in range(len(x))]
    examples = example_clusters(top, n_members=6, seed=0)
    if modality == "images":
        uris = write_pngs(tmp_path / "imgs", len(x))
        shown = examples["smallest"]["rows"][0]  # a member the page shows
        uris[int(shown)] = str(tmp_path / "missing.png")
    else:
        uris = [f"{tmp_path}/v.parquet#row={i}" for i in range(len(x))]
    # a balanced selection: 25 per top-level cluster
    rng = np.random.default_rng(0)
    selected = np.sort(np.concatenate(
        [rng.choice(np.flatnonzero(top == c), 25, replace=False) for c in range(4)]))
    evaluation = evaluate_selection(x, paths, selected, labels=top if labelled else None,
                                    seed=0, test_per_class=10)
    sizes = [np.bincount(paths[:, lv], minlength=k) for lv, k in enumerate((20, 4))]
    subset = [np.bincount(paths[selected, lv], minlength=k) for lv, k in enumerate((20, 4))]
    page = render_report("shop", modality, sizes, {"even": subset}, {"even": evaluation},
                         examples, ids, uris, lambda u: Path(u).read_bytes(),
                         drift={"matched": 4, "appeared": [], "vanished": [],
                                "permutation": [0, 1, 2, 3]})
    return page, {"examples": examples, "evaluation": evaluation}


def test_image_report_has_plots_thumbnails_and_tables(tmp_path):
    page, info = build_page(tmp_path)
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,', page)) == 3
    # 3 clusters x 6 members, one of them unreadable -> shown as its id, not a failure
    assert len(re.findall(r'<figure class="thumb"><img src="data:image/png', page)) >= 15
    assert 'title="unreadable: FileNotFoundError"' in page
    ex = info["examples"]
    assert ex["largest"]["cluster"] == 0 and ex["smallest"]["cluster"] == 3
    assert ex["largest"]["size"] >= ex["median"]["size"] >= ex["smallest"]["size"]
    assert "Drift at the last refit" in page and "permutation" not in page
    assert "k-NN balanced_accuracy" in page
    # every plot says which direction is better: size plots in their titles (drawn), the
    # evaluation plot in its panel titles and in the caption under it
    assert "Coverage: distance to nearest selected item (lower is better)" in page
    assert page.count("cluster sizes (flatter is more balanced: better)") == 2
    assert "src=\"http" not in page and "<script" not in page  # self-contained


def test_report_of_an_unlabelled_pool_has_the_label_free_figures_and_says_why(tmp_path):
    """An evaluation without labels renders: coverage, balance and leaf share in the tables
    and the plot, no label or k-NN row, no NaN, and a line that says why the label figures
    are absent (the evaluation's own note when the report is given it)."""
    page, info = build_page(tmp_path, "vectors", labelled=False)
    assert "labels" not in info["evaluation"]["curated"]
    json.dumps(info["evaluation"], allow_nan=False)
    assert len(re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,', page)) == 3
    for row in ("coverage p99 distance", "leaf clusters hit (share)", "level_2 entropy"):
        assert f"<td>{row}</td>" in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "k-NN" not in text and "label entropy" not in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert page.count("Label figures absent: ") == 1
    x, paths, top = pool_with_paths()
    given = render_report("shop", "vectors", [np.bincount(paths[:, 0])], {},
                          {"even": info["evaluation"]},
                          label_notes={"even": "absent: the pool has no labels; fine"})
    assert "Label figures absent: the pool has no labels; fine." in given


def test_vectors_report_shows_item_ids(tmp_path):
    page, _ = build_page(tmp_path, "vectors")
    assert page.count('<code class="item">item-') == 18
    assert "<figure" not in page


def test_text_snippets_from_jsonl_lines_and_txt(tmp_path):
    lines = [json.dumps({"id": "a", "text": "The chef   simmers\nsoup."}),
             json.dumps({"id": "b", "text": "x" * 500})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "one.txt").write_text("hello <world>")

    def read(uri):
        return (tmp_path / uri).read_bytes()

    assert text_snippet("t.jsonl#L1", read) == "The chef simmers soup."
    long = text_snippet("t.jsonl#L2", read, chars=50)
    assert len(long) == 50 and long.endswith("…")
    from curation.report import member_cell

    cell = member_cell("texts", "id1", "one.txt", read)
    assert "hello &lt;world&gt;" in cell


def test_markdown_tables():
    assert markdown_table(["a", "b"], [[1, 0.123456], ["x|y", 2]]).splitlines() == [
        "| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x\\|y | 2 |"]
    x, paths, top = pool_with_paths()
    md = evaluation_markdown(evaluate_selection(x, paths, np.arange(0, 800, 8), labels=top))
    assert md.splitlines()[0] == "| figure | better | curated | random |"
    assert "| level_2 entropy | higher is better |" in md
    assert "| label entropy | higher is better |" in md
    assert "| coverage p99 distance | lower is better |" in md


def _browser_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


@pytest.mark.skipif(not _browser_available(),
                    reason="needs playwright (pip) and Debian's chromium (apt)")
@pytest.mark.parametrize("labelled", [True, False], ids=["labelled", "unlabelled"])
def test_report_in_headless_chromium(tmp_path, labelled):
    """The page loads with no console errors and renders every plot and thumbnail, for a
    pool with labels and one without."""
    from playwright.sync_api import sync_playwright

    page_html, _ = build_page(tmp_path, labelled=labelled)
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    expected = page_html.count("<img ")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri(), wait_until="load")
            widths = page.evaluate(
                "Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            classes = page.evaluate(
                "Array.from(document.images).map(i => i.className || i.parentElement.className)")
            title = page.title()
        finally:
            browser.close()
    assert errors == []
    assert title == "Curation report: shop"
    assert len(widths) == expected
    assert all(w > 0 for w in widths), widths
    assert classes.count("plot") == 3 and classes.count("thumb") >= 15
