"""A self-contained HTML report of a pool's curation (pure core, no Dagster): cluster-size
distributions per level before and after curation (log scale), the evaluation figures of every
subset (curation.evaluation), members of the largest, median and smallest top-level clusters
(image thumbnails, text snippets or item ids) and the drift of the last refit. An evaluation
without label figures (a pool without labels) shows the others and says why those are absent.
Plots are matplotlib PNGs and thumbnails are PNGs, both inlined as base64: the file opens
anywhere.
Also Markdown for Dagster metadata: the evaluation table and its figure (the same PNG as the
page's, as a data URI, which the Dagster UI's Markdown renders). Every figure and table says
which direction is better (curation.evaluation.BETTER).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import settings
from .evaluation import BETTER_VERDICT, LABEL_FREE, better, check_outcome, headline_paths

MEMBERS_SHOWN = 12
THUMBNAIL_PX = 64
SNIPPET_CHARS = 160


# ---- small pieces -------------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table (what Dagster's MetadataValue.md renders)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


EVALUATION_HEADERS = ["figure", "better", "curated", "random"]
VERSUS_HEADERS = ["figure", "better", "curated", "random mean +- std", "random min..max",
                  "verdict"]


def evaluation_rows(evaluation: dict) -> list[list[Any]]:
    """(figure, which direction is better, curated, random) rows of an evaluation
    (curation.evaluation.evaluate_selection); random is the mean of the draws."""
    cur, rnd = evaluation["curated"], evaluation["random"]
    rows: list[list[Any]] = [["items", "equal by design", cur["items"], rnd["items"]]]
    for key in ("median", "p90", "p99", "leaf_share"):
        if key in cur["coverage"]:
            name = ("leaf clusters hit (share)" if key == "leaf_share"
                    else f"coverage {key} distance")
            rows.append([name, better(key), cur["coverage"][key], rnd["coverage"][key]])
    for level, stats in cur["balance"].items():
        other = rnd["balance"][level]
        rows += [[f"{level} {key}", better(key), stats[key], other[key]]
                 for key in ("entropy", "effective_clusters", "top1_share", "gini")]
    if "labels" in cur:
        rows += [[f"label {key.removeprefix('label_')}", better(key), cur["labels"][key],
                  rnd["labels"][key]] for key in ("label_entropy", "labels_hit", "top1_share")]
        rows += [[f"k-NN {key}", better(key), cur["knn"][key], rnd["knn"][key]]
                 for key in ("accuracy", "balanced_accuracy")]
    return rows


def versus_random_rows(evaluation: dict, headline_only: bool = False) -> list[list[Any]]:
    """(figure, better, curated, random mean +- std, min..max, verdict) of every figure
    against the random draws (of the headline figures, which the check judges, with
    headline_only); none for a report without draws (one random subset, from before)."""
    versus = evaluation.get("versus_random", {})
    paths = headline_paths(evaluation).values() if headline_only else versus
    rows = []
    for path in paths:
        figure = versus.get(path)
        if figure is None:
            continue
        verdict = figure["verdict"] + ("" if figure["verdict"] == BETTER_VERDICT
                                       or not figure.get("trade_off")
                                       else " (a trade-off of balancing)")
        rows.append([figure["figure"], f"{figure['better']} is better", figure["curated"],
                     f"{_fmt(figure['random_mean'])} +- {_fmt(figure['random_std'])}",
                     f"{_fmt(figure['random_min'])}..{_fmt(figure['random_max'])}", verdict])
    return rows


def versus_random_markdown(evaluation: dict, headline_only: bool = False) -> str:
    return markdown_table(VERSUS_HEADERS, versus_random_rows(evaluation, headline_only))


def evaluation_markdown(evaluation: dict) -> str:
    return markdown_table(EVALUATION_HEADERS, evaluation_rows(evaluation))


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_png(fig, dpi: int = 90, colors: int | None = None) -> bytes:
    """The figure as PNG bytes; with `colors`, quantised to that many (a plot of a few flat
    colours loses nothing visible and shrinks several-fold: small enough for metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if colors is None:
        return buf.getvalue()
    from PIL import Image

    with Image.open(io.BytesIO(buf.getvalue())) as img:
        small = img.convert("RGB").quantize(colors)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _figure_uri(fig) -> str:
    return _png_data_uri(_figure_png(fig))


# ---- plots --------------------------------------------------------------------------------------

SIZE_PLOT_DIRECTION = "flatter is more balanced: better"


def size_plot(level: int, pool_sizes: np.ndarray, subsets: dict[str, np.ndarray]) -> str:
    """Rank-size plot of one level (clusters largest first, log scale): the pool and every
    subset; a subset's flatter curve is the balance curation aims at. PNG data URI."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    for name, sizes in {"pool": pool_sizes, **subsets}.items():
        ranked = np.sort(np.asarray(sizes))[::-1]
        ranked = ranked[ranked > 0]
        ax.plot(np.arange(1, ranked.size + 1), ranked, drawstyle="steps-post", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("items")
    ax.set_title(f"level {level}: cluster sizes ({SIZE_PLOT_DIRECTION})")
    ax.legend()
    return _figure_uri(fig)


def evaluation_panels(evaluation: dict) -> list[str]:
    """Titles of evaluation_png's panels, each with the direction that is better."""
    shares = "leaf clusters hit" + (", k-NN balanced accuracy" if "knn" in evaluation["curated"]
                                    else "")
    return [f"coverage: distance to nearest selected item ({better('p99')})",
            f"entropy per level, nats ({better('entropy')})",
            f"top-1 share per level ({better('top1_share')})",
            f"{shares} ({better('leaf_share')})"]


def evaluation_caption(evaluation: dict) -> str:
    """One sentence per panel of evaluation_png: what it shows and which direction is better."""
    titles = evaluation_panels(evaluation)
    draws = len(evaluation.get("random_draws", [])) or 1
    against = ("a uniform random subset of the same size" if draws == 1 else
               f"the mean of {draws} uniform random subsets of the same size (whiskers: their "
               "range)")
    return (f"Curated (the subset) against {against}; the pool's own balance for reference. "
            + ". ".join(t[0].upper() + t[1:] for t in titles) + ".")


def _curated_and_random_bars(ax, evaluation: dict, figures: list[tuple[str, str, str]]):
    """Side-by-side bars of curated and random (the draws' mean, a whisker over their min..max)
    for (tick label, section, figure) triples."""
    at = np.arange(len(figures))
    width = 0.38
    versus = evaluation.get("versus_random", {})
    for offset, side in ((-width / 2, "curated"), (width / 2, "random")):
        values = [evaluation[side][section][key] for _, section, key in figures]
        spread = [versus.get(f"{section}.{key}") for _, section, key in figures]
        whisker = None
        if side == "random" and all(spread):
            whisker = [[v - f["random_min"] for v, f in zip(values, spread, strict=True)],
                       [f["random_max"] - v for v, f in zip(values, spread, strict=True)]]
        ax.bar(at + offset, values, width, label=side, yerr=whisker, capsize=3 if whisker else 0)
    ax.set_xticks(at, [label for label, _, _ in figures])


def evaluation_png(name: str, evaluation: dict, dpi: int = 90,
                   colors: int | None = None) -> bytes:
    """The evaluation of one subset in four panels (coverage distances, entropy and top-1 share
    per level, leaf share and k-NN balanced accuracy), curated against random, the pool's
    balance for reference: PNG bytes. Panel titles say which direction is better."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3), layout="constrained")
    cover, entropy, top1, shares = fig.subplots(1, 4)
    _curated_and_random_bars(cover, evaluation,
                             [(key, "coverage", key) for key in ("median", "p90", "p99")])
    cover.set_ylabel("distance")
    levels = list(evaluation["curated"]["balance"])
    ticks = np.arange(1, len(levels) + 1)
    for side in ("curated", "random", "pool"):
        style = {"linestyle": "--", "color": "grey"} if side == "pool" else {}
        for ax, key in ((entropy, "entropy"), (top1, "top1_share")):
            ax.plot(ticks, [evaluation[side]["balance"][lv][key] for lv in levels], marker="o",
                    label=side, **style)
    for ax in (entropy, top1):
        ax.set_xticks(ticks)
        ax.set_xlabel("level")
    share_figures = [("leaf clusters hit", "coverage", "leaf_share")]
    if "knn" in evaluation["curated"]:
        share_figures.append(("k-NN bal. accuracy", "knn", "balanced_accuracy"))
    _curated_and_random_bars(shares, evaluation, share_figures)
    shares.set_ylim(0, 1)
    for ax, title in zip((cover, entropy, top1, shares), evaluation_panels(evaluation),
                         strict=True):
        ax.set_title(title.replace(" (", "\n("), fontsize=9)
    entropy.legend(fontsize=8)
    draws = len(evaluation.get("random_draws", [])) or 1
    fig.suptitle(f"{name} against {draws} uniform random subset(s) of the same size")
    return _figure_png(fig, dpi, colors)


FIGURE_DPI_UI = 75  # the Dagster UI's copy: 900x225 px, about 12 KB
FIGURE_COLORS_UI = 48


def evaluation_figure_markdown(name: str, evaluation: dict) -> str:
    """Markdown of the evaluation figure for Dagster metadata: a small PNG as a data URI
    (Dagster's Markdown keeps `data:` image sources) and the caption with the directions."""
    png = evaluation_png(name, evaluation, FIGURE_DPI_UI, FIGURE_COLORS_UI)
    return (f"![{name} against random]({_png_data_uri(png)})\n\n"
            f"{evaluation_caption(evaluation)}")


# ---- members ------------------------------------------------------------------------------------

class ClusterExamples:
    """From one pass over a pool in batches (any order), the largest, median and smallest
    non-empty top-level clusters and a seeded sample of `n_members` members of each: per
    top-level cluster its size and the members with the lowest keyed scores. Memory: top-level
    clusters x n_members rows, not the pool's size."""

    def __init__(self, n_members: int = MEMBERS_SHOWN, seed: int = 0):
        self.n_members, self.seed = n_members, seed
        self.sizes = np.zeros(0, np.int64)
        self._kept = (np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.uint64))

    def add(self, keys: np.ndarray, top: np.ndarray, locators: np.ndarray) -> None:
        """A batch: item keys, top-level cluster ids, where each item is (returned as rows)."""
        from .sampling import rank_in_group
        from .selection import rank_hash

        top = np.asarray(top, dtype=np.int64)
        counts = np.bincount(top)
        if counts.size > self.sizes.size:
            self.sizes = np.pad(self.sizes, (0, counts.size - self.sizes.size))
        self.sizes[:counts.size] += counts
        clusters = np.concatenate([self._kept[0], top])
        scores = np.concatenate([self._kept[1],
                                 rank_hash(np.asarray(keys, dtype=np.uint64), self.seed)])
        rows = np.concatenate([self._kept[2], np.asarray(locators, dtype=np.uint64)])
        keep = rank_in_group(clusters, scores) < self.n_members
        self._kept = (clusters[keep], scores[keep], rows[keep])

    def result(self) -> dict[str, dict]:
        """{"largest" | "median" | "smallest": {"cluster", "size", "rows"}} (rows: sorted
        locators of the members shown); {} for an empty pool."""
        present = np.flatnonzero(self.sizes)
        if present.size == 0:
            return {}
        by_size = present[np.lexsort((present, -self.sizes[present]))]  # largest first
        picks = {"largest": by_size[0], "median": by_size[by_size.size // 2],
                 "smallest": by_size[-1]}
        clusters, _, rows = self._kept
        return {what: {"cluster": int(c), "size": int(self.sizes[c]),
                       "rows": np.sort(rows[clusters == c]).astype(np.int64)}
                for what, c in picks.items()}


def example_clusters(top: np.ndarray, n_members: int = MEMBERS_SHOWN,
                     seed: int = 0) -> dict[str, dict]:
    """ClusterExamples of a pool held whole: `top` per row; the rows are row positions."""
    from .selection import item_keys

    examples = ClusterExamples(n_members, seed)
    n = np.asarray(top).size
    examples.add(item_keys([str(i) for i in range(n)]), top, np.arange(n, dtype=np.uint64))
    return examples.result()


def thumbnail(data: bytes, px: int = THUMBNAIL_PX) -> str:
    """A PNG data URI of an image's thumbnail (at most px on its longer side, upscaled small
    images included, so 28-px items stay visible)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
    scale = px / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return _png_data_uri(buf.getvalue())


def text_snippet(uri: str, read_bytes: Callable[[str], bytes],
                 chars: int = SNIPPET_CHARS) -> str:
    """The text of an item: a .txt file, or line N of a .jsonl file (uri `file#LN`, its "text")."""
    base, _, fragment = uri.partition("#L")
    data = read_bytes(base).decode("utf-8-sig", errors="replace")
    if fragment.isdigit():
        # numbered as ingestion numbers them (curation.items.parse_jsonl): lines end at "\n"
        # only; str.splitlines also breaks at U+2028 and U+0085 inside a record's text
        line = data.split("\n")[int(fragment) - 1].removesuffix("\r")
        try:
            data = str(json.loads(line).get("text", line))
        except (ValueError, AttributeError):
            data = line
    data = " ".join(data.split())
    return data if len(data) <= chars else data[: chars - 1] + "…"


def member_cell(modality: str, item_id: str, uri: str | None,
                read_bytes: Callable[[str], bytes] | None) -> str:
    """HTML of one member: a thumbnail, a text snippet, or the item id (also when the item
    cannot be read: the report never fails on one missing file)."""
    label = html.escape(item_id[:16])
    if read_bytes is not None and uri and modality in ("images", "texts"):
        try:
            if modality == "images":
                src = thumbnail(read_bytes(uri))
                return (f'<figure class="thumb"><img src="{src}" alt="{label}" '
                        f'title="{html.escape(item_id)}"><figcaption>{label}</figcaption></figure>')
            snippet = html.escape(text_snippet(uri, read_bytes))
            return f'<div class="snippet" title="{html.escape(item_id)}">{snippet}</div>'
        except Exception as exc:  # a missing or undecodable item shows as its id
            reason = html.escape(f"{type(exc).__name__}")
            return f'<code class="item" title="unreadable: {reason}">{label}</code>'
    return f'<code class="item">{html.escape(item_id)}</code>'


# ---- the page -----------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
.members { display: flex; flex-wrap: wrap; gap: 0.5em; margin-bottom: 1.5em; }
figure.thumb { margin: 0; text-align: center; font-size: 0.7em; }
figure.thumb img { image-rendering: pixelated; border: 1px solid #ddd; }
.snippet { max-width: 30em; font-size: 0.85em; background: #f6f6f6; padding: 0.3em 0.5em; }
code.item { font-size: 0.8em; }
"""


def render_report(
    pool: str,
    modality: str,
    pool_sizes: list[np.ndarray],
    subset_sizes: dict[str, list[np.ndarray]],
    evaluations: dict[str, dict],
    examples: dict[str, dict] | None = None,
    item_ids: Sequence[str] | Mapping[int, str] | None = None,
    uris: Sequence[str] | Mapping[int, str] | None = None,
    read_bytes: Callable[[str], bytes] | None = None,
    drift: dict | None = None,
    generated: str = "",
    near_duplicates: dict | None = None,
    label_notes: Mapping[str, str] | None = None,
) -> str:
    """The report page. pool_sizes: items beneath each cluster, per level (level 1 first);
    subset_sizes: the same per subset (selected items, copies counted); evaluations: per
    subset, evaluate_selection's result; examples: example_clusters' result, whose rows index
    item_ids / uris (lists over the pool, or {row: value} of the rows shown);
    read_bytes(uri) -> bytes reads items (local paths or s3://);
    near_duplicates: the dedup's summary (`near_duplicates_rows`), when the pool deduplicates;
    label_notes: per subset, its evaluation's `label_figures` (why the label figures are
    absent, shown under an evaluation without them)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Curation report: {e(pool)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Curation report: pool <code>{e(pool)}</code></h1>",
        f"<p>{e(modality)} pool, {int(np.sum(pool_sizes[0]))} items, "
        f"{len(pool_sizes)} level(s), subsets: {e(', '.join(subset_sizes) or 'none')}."
        f"{' Generated ' + e(generated) + '.' if generated else ''}</p>",
        "<h2>Cluster sizes per level, before and after curation</h2>",
    ]
    for level, sizes in enumerate(pool_sizes, start=1):
        per_subset = {name: s[level - 1] for name, s in subset_sizes.items()}
        parts.append(f'<img class="plot" alt="level {level} cluster sizes '
                     f'({SIZE_PLOT_DIRECTION})" '
                     f'src="{size_plot(level, sizes, per_subset)}">')
    parts.append("<h2>Subsets against a uniform random subset of the same size</h2>")
    if not evaluations:
        parts.append("<p>No evaluation yet.</p>")
    for name, evaluation in evaluations.items():
        outcome, reasons = check_outcome(evaluation)
        verdict = (f"{outcome} on the headline figures" if outcome == BETTER_VERDICT
                   else f"{outcome}: " + "; ".join(reasons))
        draws = len(evaluation.get("random_draws", [])) or 1
        losses = [r for r in evaluation.get("worse_than_random", []) if r not in reasons]
        parts += [
            f"<h3>{e(name)}</h3><p>{e(verdict)}</p>",
            f"<p>Against {draws} seeded random subset(s) of the same size."
            + (f" Also worse than random: {e('; '.join(losses))}." if losses else "") + "</p>",
            *([f'<p class="labels">{e(labels_absent_sentence((label_notes or {}).get(name)))}'
               "</p>"] if "labels" not in evaluation["curated"] else []),
            f'<img class="plot" alt="{e(name)} against random" '
            f'src="{_png_data_uri(evaluation_png(name, evaluation))}">',
            f'<p class="caption">{e(evaluation_caption(evaluation))}</p>',
            _html_table(EVALUATION_HEADERS, evaluation_rows(evaluation)),
            *([_html_table(VERSUS_HEADERS, versus_random_rows(evaluation))]
              if "versus_random" in evaluation else []),
        ]
    if examples:
        parts.append("<h2>Members of the largest, median and smallest top-level clusters</h2>")
        for what, info in examples.items():
            parts.append(f"<h3>{e(what)}: cluster {info['cluster']} ({info['size']} items)</h3>"
                         '<div class="members">')
            for row in info["rows"]:
                uri = uris[row] if uris is not None else None
                parts.append(member_cell(modality, item_ids[row], uri, read_bytes))
            parts.append("</div>")
    if near_duplicates:
        parts += near_duplicates_html(near_duplicates)
    if drift:
        parts += ["<h2>Drift at the last refit</h2>",
                  _html_table(["figure", "value"],
                              [[k, json.dumps(v) if isinstance(v, list | dict) else v]
                               for k, v in drift.items() if k != "permutation"])]
    parts.append("</body></html>")
    return "\n".join(parts)


def labels_absent_sentence(note: str | None) -> str:
    """"Label figures absent: <why>; ..." from an evaluation's `label_figures` note
    (curation.evaluation.label_figures_note), or a general one for an evaluation without it."""
    why = (note or "").removeprefix("absent: ") or (
        f"the items carry no labels, or not every item has one; {LABEL_FREE}")
    return f"Label figures absent: {why}."


def near_duplicates_rows(summary: dict) -> tuple[list[list[Any]], list[list[Any]]]:
    """(per level: removed, clusters with duplicates, the cluster that lost the largest share;
    per similarity bin: duplicates) from the dedup's summary: {"threshold", "items",
    "removed", "removed_per_level" (DedupOutcome.by_level), "similarity_histogram" ({"edges",
    "counts"})}."""
    levels = []
    for level in summary.get("removed_per_level", []):
        worst = level["largest_shares"][0] if level["largest_shares"] else None
        levels.append([level["level"], level["removed"], level["clusters_with_duplicates"],
                       f"{worst['cluster']}: {worst['removed']} of {worst['items']}"
                       if worst else "-"])
    hist = summary.get("similarity_histogram", {"edges": [], "counts": []})
    edges = hist["edges"]
    bins = [[f"{lo:.3f} - {hi:.3f}", count]
            for lo, hi, count in zip(edges[:-1], edges[1:], hist["counts"], strict=True)]
    return levels, bins


def near_duplicates_html(summary: dict) -> list[str]:
    levels, bins = near_duplicates_rows(summary)
    removed, items = summary.get("removed", 0), max(summary.get("items", 0), 1)
    return [
        "<h2>Near duplicates removed before sampling</h2>",
        f"<p>{removed} of {items} items ({100 * removed / items:.1f}%) are near duplicates of "
        f"a representative in their leaf (cosine similarity above "
        f"{summary.get('threshold')}); the subsets sample representatives only.</p>",
        _html_table(["level", "removed", "clusters with duplicates",
                     "largest share (cluster: removed of items)"], levels),
        _html_table(["cosine similarity to the representative", "duplicates"], bins),
    ]


def report_file(pool: str) -> Path:
    """Where the report of a pool lives: $CURATION_HOME/reports/<pool>.html."""
    return settings.reports_dir().resolve() / f"{pool}.html"


def write_page(path: Path, page: str) -> Path:
    """Write the page through a temporary file: readers see the old page or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
