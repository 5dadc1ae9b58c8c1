"""A self-contained HTML report of a pool's curation (pure core, no Dagster): cluster-size
distributions per level before and after curation (log scale), the evaluation figures of every
subset (curation.evaluation), members of the largest, median and smallest top-level clusters
(image thumbnails, text snippets or item ids) and the drift of the last refit. Plots are
matplotlib PNGs and thumbnails are PNGs, both inlined as base64: the file opens anywhere.
Also Markdown tables for Dagster metadata.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

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


def evaluation_rows(evaluation: dict) -> list[list[Any]]:
    """(figure, curated, random) rows of an evaluation (curation.evaluation.evaluate_selection)."""
    cur, rnd = evaluation["curated"], evaluation["random"]
    rows: list[list[Any]] = [["items", cur["items"], rnd["items"]]]
    for key in ("median", "p90", "p99", "leaf_share"):
        if key in cur["coverage"]:
            name = "leaf clusters hit (share)" if key == "leaf_share" else f"coverage {key}"
            rows.append([name, cur["coverage"][key], rnd["coverage"][key]])
    for level, stats in cur["balance"].items():
        other = rnd["balance"][level]
        rows += [[f"{level} {key}", stats[key], other[key]]
                 for key in ("entropy", "effective_clusters", "top1_share", "gini")]
    if "labels" in cur:
        rows += [[f"label {key.removeprefix('label_')}", cur["labels"][key], rnd["labels"][key]]
                 for key in ("label_entropy", "labels_hit", "top1_share")]
        rows += [[f"k-NN {key}", cur["knn"][key], rnd["knn"][key]]
                 for key in ("accuracy", "balanced_accuracy")]
    return rows


def evaluation_markdown(evaluation: dict) -> str:
    return markdown_table(["figure", "curated", "random"], evaluation_rows(evaluation))


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return _png_data_uri(buf.getvalue())


# ---- plots --------------------------------------------------------------------------------------

def size_plot(level: int, pool_sizes: np.ndarray, subsets: dict[str, np.ndarray]) -> str:
    """Rank-size plot of one level (clusters largest first, log scale): the pool and every
    subset. Returns a PNG data URI."""
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
    ax.set_title(f"level {level}: cluster sizes")
    ax.legend()
    return _figure_uri(fig)


def balance_plot(name: str, evaluation: dict) -> str:
    """Entropy and top-1 share per level: curated, random and the pool. PNG data URI."""
    from matplotlib.figure import Figure

    levels = list(evaluation["curated"]["balance"])
    fig = Figure(figsize=(6, 3), layout="constrained")
    left, right = fig.subplots(1, 2)
    sides = {"curated": evaluation["curated"], "random": evaluation["random"],
             "pool": evaluation["pool"]}
    ticks = np.arange(1, len(levels) + 1)
    for side, data in sides.items():
        left.plot(ticks, [data["balance"][lv]["entropy"] for lv in levels], marker="o",
                  label=side)
        right.plot(ticks, [data["balance"][lv]["top1_share"] for lv in levels], marker="o",
                   label=side)
    for ax, title in ((left, "entropy (nats)"), (right, "top-1 share")):
        ax.set_xticks(ticks)
        ax.set_xlabel("level")
        ax.set_title(title)
    left.legend()
    fig.suptitle(f"{name}: balance per level")
    return _figure_uri(fig)


# ---- members ------------------------------------------------------------------------------------

def example_clusters(top: np.ndarray, n_members: int = MEMBERS_SHOWN,
                     seed: int = 0) -> dict[str, dict]:
    """The largest, median and smallest non-empty top-level clusters of a pool and a seeded
    sample of their member rows: {"largest": {"cluster", "size", "rows"}, ...}."""
    top = np.asarray(top, dtype=np.int64)
    sizes = np.bincount(top)
    present = np.flatnonzero(sizes)
    by_size = present[np.lexsort((present, -sizes[present]))]  # largest first, ties by id
    picks = {"largest": by_size[0], "median": by_size[by_size.size // 2],
             "smallest": by_size[-1]}
    rng = np.random.default_rng(seed)
    out = {}
    for what, cluster in picks.items():
        rows = np.flatnonzero(top == cluster)
        rows = np.sort(rng.choice(rows, size=min(n_members, rows.size), replace=False))
        out[what] = {"cluster": int(cluster), "size": int(sizes[cluster]), "rows": rows}
    return out


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
    item_ids: list[str] | None = None,
    uris: list[str] | None = None,
    read_bytes: Callable[[str], bytes] | None = None,
    drift: dict | None = None,
    generated: str = "",
) -> str:
    """The report page. pool_sizes: items beneath each cluster, per level (level 1 first);
    subset_sizes: the same per subset (selected items, copies counted); evaluations: per
    subset, evaluate_selection's result; examples: example_clusters' result, whose rows index
    item_ids / uris; read_bytes(uri) -> bytes reads items (local paths or s3://)."""
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
        parts.append(f'<img class="plot" alt="level {level} cluster sizes" '
                     f'src="{size_plot(level, sizes, per_subset)}">')
    parts.append("<h2>Subsets against a uniform random subset of the same size</h2>")
    if not evaluations:
        parts.append("<p>No evaluation yet.</p>")
    for name, evaluation in evaluations.items():
        worse = evaluation.get("worse_than_random") or []
        verdict = ("worse than random: " + "; ".join(worse)) if worse else \
            "at least as good as random on coverage and balance"
        parts += [
            f"<h3>{e(name)}</h3><p>{e(verdict)}</p>",
            f'<img class="plot" alt="{e(name)} balance" src="{balance_plot(name, evaluation)}">',
            _html_table(["figure", "curated", "random"], evaluation_rows(evaluation)),
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
    if drift:
        parts += ["<h2>Drift at the last refit</h2>",
                  _html_table(["figure", "value"],
                              [[k, json.dumps(v) if isinstance(v, list | dict) else v]
                               for k, v in drift.items() if k != "permutation"])]
    parts.append("</body></html>")
    return "\n".join(parts)
