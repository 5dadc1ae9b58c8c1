"""Semantic dedup on the bundled pools: items removed and the label purity of the merged pairs
against the threshold (what docs/METHOD.md's default comes from).

    python benchmarks/bench_dedup.py [--n-images 3000] [--n-texts 2000] [--thresholds ...]
                                     [--scale 100000] [--copies 300]

Each pool is built as `make demo` builds it (curation_demo.data: Zipf-skewed Fashion-MNIST
images, templated texts; the texts' item ids are content hashes, so identical sentences are one
item, as raw would ingest them), embedded with the pool's own embedder (curation/pools.yaml),
fitted with the pool's hierarchy, then deduplicated inside the leaves at each threshold
(`curation.dedup.near_duplicates`, the rule the platform runs). Per row: the threshold, items
removed (count and share), the share of (duplicate, representative) pairs with the same label
(a merge across labels is a loss), and the dedup's seconds. Seeded; the embedding dominates
(1,000 images took 68 s on a shared 2-core machine).

`--copies N` prints how similar each kind of copy is to its original under the pool's embedder
(N random Fashion-MNIST images re-encoded, shifted, noised ...; the distinct templated
sentences with each edit of curation_demo.data.TEXT_EDITS), beside how similar an original is to
its most similar other original: which copies a threshold collapses, and what it costs.

`--scale N` also runs the platform's incremental path (`curation.dedup.dedup_pool` on a real
LanceDB store, no Dagster) on N synthetic 64-d items (Gaussian directions, 5% of them near
copies of others) in 10 drops, leaves of ~250 items (nearest of N/250 seeded centroids): the
first dedup of the pool, then a new drop of N/100 items spread over the pool, then one of N/100
near copies of items of 5 leaves: seconds, leaves and items recomputed, peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = [0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]


def _labels_by(path: Path, column: str) -> dict[str, int]:
    with path.open(newline="") as fh:
        return {row[column]: int(row["label"]) for row in csv.DictReader(fh)}


def _embed(pool, items):
    from curation.embedding import EmbedderSpec, make_embedder

    embedder = make_embedder(EmbedderSpec(**pool.embedder_fields()))
    return embedder.embed(items)


def image_pool(pool, folder: Path, n: int, seed: int):
    """(vectors, labels, item ids) of `n` Fashion-MNIST images through the pool's embedder."""
    from curation.embedding import Item
    from curation_demo.data import build_fashion_mnist_drops

    drops = build_fashion_mnist_drops(folder, n_drops=1, n_items=n, seed=seed)
    labels = _labels_by(folder / "labels.csv", "file")
    paths = sorted((folder / drops[0]).glob("*.png"))
    out = _embed(pool, [Item(str(p), path=p) for p in paths])
    y = np.array([labels[Path(ref).name] for ref in out.refs])
    return out.vectors, y, [Path(ref).name for ref in out.refs]


def text_pool(pool, folder: Path, n: int, seed: int):
    """(vectors, labels, item ids) of the templated texts, one item per distinct text."""
    from curation.embedding import Item
    from curation_demo.data import build_text_drops

    drops = build_text_drops(folder, n_drops=1, n_items=n, seed=seed)
    rows = _labels_by(folder / "labels.csv", "file")  # line id -> topic
    by_content: dict[str, tuple[str, int]] = {}
    with (folder / drops[0] / "texts.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            by_content.setdefault(entry["text"], (entry["id"], rows[entry["id"]]))
    texts = sorted(by_content)
    out = _embed(pool, [Item(by_content[t][0], text=t) for t in texts])
    topic = {by_content[t][0]: by_content[t][1] for t in texts}
    return out.vectors, np.array([topic[ref] for ref in out.refs]), list(out.refs)


def curve(name: str, x: np.ndarray, labels: np.ndarray, ids: list[str], pool,
          thresholds: list[float]) -> list[tuple]:
    from curation.dedup import near_duplicates
    from curation.hierarchy import fit_hierarchy
    from curation.selection import item_keys

    config = pool.hierarchy.model_copy(update={"device": "cpu"})
    fit = fit_hierarchy(x, config)
    keys = item_keys(ids)
    rows = []
    for threshold in thresholds:
        start = time.perf_counter()
        got = near_duplicates(fit.assignment.leaf, keys, fit.assignment.distance, x,
                              threshold, pool.dedup.leaf_cap)
        seconds = time.perf_counter() - start
        dup = got.is_duplicate
        same = labels[dup] == labels[got.representative[dup]]
        rows.append((name, len(x), threshold, int(dup.sum()), 100 * dup.mean(),
                     100 * same.mean() if dup.any() else float("nan"), seconds))
    return rows


def _write_drop(store, drop: str, ids: list[str], x, leaf, distance) -> None:
    from curation.selection import item_keys
    from curation.store import rows

    count = len(ids)
    store.rewrite_drop("embeddings", drop, rows("embeddings", {
        "item_id": ids, "drop": [drop] * count, "uri": ids, "vector": x,
        "model": ["synthetic"] * count, "model_hash": [""] * count}, dim=x.shape[1]))
    store.rewrite_drop("assignments", drop, rows("assignments", {
        "item_id": ids, "drop": [drop] * count, "uri": ids, "distance": distance,
        "level_1": leaf.astype(np.int32), "fit_version": np.ones(count, np.int64),
        "item_key": item_keys(ids)}, n_levels=1))


def scale(n: int, folder: Path, seed: int, dim: int = 64) -> list[tuple]:
    import resource
    from types import SimpleNamespace

    import faiss

    from curation.config import DedupConfig
    from curation.dedup import dedup_pool
    from curation.store import PoolStore
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 20, replace=False)
    x[copies] = x[rng.choice(n, copies.size)] * (1 + 1e-4 * rng.standard_normal((copies.size, 1)))
    k = max(n // 250, 1)
    index = faiss.IndexFlatL2(dim)
    index.add(np.ascontiguousarray(x[rng.choice(n, k, replace=False)], np.float32))

    def place(points):
        distance, leaf = index.search(np.ascontiguousarray(points, np.float32), 1)
        return leaf[:, 0], distance[:, 0]

    store = PoolStore.open_uri(str(folder / "db"), "scale")
    for d, part in enumerate(np.array_split(np.arange(n), 10)):
        leaf, distance = place(x[part])
        _write_drop(store, f"d{d}", [f"i{i}" for i in part], x[part], leaf, distance)
    fit = SimpleNamespace(fit_version=1, hierarchy=SimpleNamespace(
        centroids=[np.zeros((k, dim), np.float32)], parents=[], dim=dim))
    config = DedupConfig(enabled=True)
    out = []

    def timed(what):
        start = time.perf_counter()
        got = dedup_pool(store, fit, config)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.append((what, n, k, time.perf_counter() - start, got.leaves_recomputed,
                    got.items_recomputed, got.removed, rss))

    timed("whole pool (first run)")
    spread = rng.standard_normal((n // 100, dim)).astype(np.float32)
    leaf, distance = place(spread)
    _write_drop(store, "spread", [f"s{i}" for i in range(len(spread))], spread, leaf, distance)
    timed(f"new drop of {n // 100} items, spread")
    near = x[np.isin(place(x)[0], np.arange(5))]
    near = near[rng.choice(len(near), n // 100)] * (1 + 1e-3 * rng.standard_normal(
        (n // 100, 1)).astype(np.float32))
    leaf, distance = place(near)
    _write_drop(store, "narrow", [f"n{i}" for i in range(len(near))], near, leaf, distance)
    timed(f"new drop of {n // 100} items, narrow")
    return out


def _image_copies() -> dict:
    """Kinds of image copies: name -> f(pixels, rng) (uint8 28 x 28 in and out)."""
    from PIL import Image

    from curation_demo.data import perturb_image

    def jpeg(p, quality):
        buf = io.BytesIO()
        Image.fromarray(p, mode="L").save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))

    def scaled(p, size):
        img = Image.fromarray(p, mode="L")
        return np.asarray(img.resize((size, size), Image.BILINEAR).resize(p.shape[::-1],
                                                                           Image.BILINEAR))

    def noisy(p, rng, sigma):
        return np.clip(np.rint(p + rng.normal(0, sigma, p.shape)), 0, 255).astype(np.uint8)

    return {
        "re-post (curation_demo perturb_image: brightness x0.9-1.1, JPEG 90)": perturb_image,
        "brightness x0.9": lambda p, rng: np.clip(np.rint(p * 0.9), 0, 255).astype(np.uint8),
        "JPEG quality 90": lambda p, rng: jpeg(p, 90),
        "JPEG quality 75": lambda p, rng: jpeg(p, 75),
        "noise, 2 grey levels": lambda p, rng: noisy(p, rng, 2.0),
        "noise, 4 grey levels": lambda p, rng: noisy(p, rng, 4.0),
        "shift by 1 px": lambda p, rng: np.pad(p, 1, mode="edge")[2:30, 1:29],
        "resized to 32 px and back": lambda p, rng: scaled(p, 32),
    }


def copies(pools, n: int, seed: int) -> list[tuple]:
    """Cosine similarity of copies to their originals under each pool's embedder (n random
    Fashion-MNIST images; the distinct templated sentences), beside the similarity of an
    original to its most similar other original: the threshold separates the two."""
    from curation.dedup import normalised
    from curation.embedding import Item
    from curation_demo.data import TEXT_EDITS, _png_bytes, load_fashion_mnist, messy_texts

    rng = np.random.default_rng(seed)
    images, _ = load_fashion_mnist("train")
    originals = images[rng.choice(len(images), n, replace=False)]

    def embed_images(arrays):
        items = [Item(f"i{i}", data=_png_bytes(a)) for i, a in enumerate(arrays)]
        return normalised(_embed(pools["fashion"], items).vectors)

    rows = []
    x0 = embed_images(originals)
    nearest = x0 @ x0.T
    np.fill_diagonal(nearest, -1)
    rows.append(("fashion", "another original (most similar)", nearest.max(1)))
    for name, copy in _image_copies().items():
        x1 = embed_images([copy(p, rng) for p in originals])
        rows.append(("fashion", name, (x0 * x1).sum(1)))
    texts, _, source = messy_texts(600, seed)
    texts = [t for t, s in zip(texts, source, strict=True) if s < 0]

    def embed_texts(lines):
        items = [Item(f"t{i}", text=t) for i, t in enumerate(lines)]
        return normalised(_embed(pools["texts"], items).vectors)

    t0 = embed_texts(texts)
    nearest = t0 @ t0.T
    np.fill_diagonal(nearest, -1)
    rows.append(("texts", "another original (most similar)", nearest.max(1)))
    names = ["lower case", "no full stop", "! for .", "a double space", "a trailing space",
             "space before the full stop", "in quotes"]
    for name, edit in zip(names, TEXT_EDITS, strict=True):
        rows.append(("texts", name, (t0 * embed_texts([edit(t) for t in texts])).sum(1)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=3000)
    p.add_argument("--n-texts", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    p.add_argument("--scale", type=int, default=0, help="items of the incremental run (0: none)")
    p.add_argument("--copies", type=int, default=0,
                   help="images of the copies table (similarity of each kind of copy to its "
                   "original; 0: none)")
    args = p.parse_args()

    from curation.pools import load_pools

    pools = {pool.name: pool for pool in load_pools()}
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.n_images:
            start = time.perf_counter()
            x, y, ids = image_pool(pools["fashion"], tmp / "fashion", args.n_images, args.seed)
            print(f"fashion: {len(x)} images embedded in {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)
            rows += curve("fashion", x, y, ids, pools["fashion"], args.thresholds)
        if args.n_texts:
            start = time.perf_counter()
            x, y, ids = text_pool(pools["texts"], tmp / "texts", args.n_texts, args.seed)
            print(f"texts: {len(x)} distinct texts embedded in "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
            rows += curve("texts", x, y, ids, pools["texts"], args.thresholds)
        runs = scale(args.scale, tmp, args.seed) if args.scale else []
    if args.copies:
        print(f"cosine similarity to the original ({args.copies} Fashion-MNIST images, "
              "EfficientNet-Lite0 at 64 px; the distinct templated sentences, MiniLM)")
        print("| pool | copy | p5 | median | p95 | >= 0.95 % | >= 0.90 % |")
        print("|---|---|---|---|---|---|---|")
        for pool, name, sim in copies(pools, args.copies, args.seed):
            p5, p50, p95 = np.percentile(sim, [5, 50, 95])
            print(f"| {pool} | {name} | {p5:.3f} | {p50:.3f} | {p95:.3f} | "
                  f"{100 * (sim >= 0.95).mean():.0f} | {100 * (sim >= 0.90).mean():.0f} |")
        print()
    print("| pool | items | threshold | removed | removed % | same label % | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, n, t, removed, share, purity, seconds in rows:
        print(f"| {name} | {n} | {t:.2f} | {removed} | {share:.1f} | {purity:.1f} | "
              f"{seconds:.2f} |")
    if runs:
        print()
        print("| dedup_pool | items | leaves | seconds | leaves recomputed | items recomputed "
              "| removed | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for what, n, k, seconds, leaves, items, removed, rss in runs:
            print(f"| {what} | {n} | {k} | {seconds:.2f} | {leaves} | {items} | {removed} | "
                  f"{rss:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
