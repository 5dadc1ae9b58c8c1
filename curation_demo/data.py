"""Real demo pools: long-tailed drops of Fashion-MNIST images, and a small long-tailed text corpus.

Fashion-MNIST comes from Debian's dataset-fashion-mnist (IDX gz files); the text corpus is
generated from templates shipped here (a few KB), so both build offline and deterministically.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path

import numpy as np

from curation.landing import SUCCESS_MARKER

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
LABELS_FILE = "labels.csv"


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally .gz) as a numpy array (uint8 images (n, 28, 28) or labels (n,))."""
    path = Path(path)
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic)")
    dtype_code, ndim = raw[2], raw[3]
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{dtype_code:02x}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtypes[dtype_code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape}")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))


def load_fashion_mnist(split: str = "train", root: str | Path | None = None):
    """(images (n, 28, 28) uint8, labels (n,) uint8) of the train or t10k split."""
    root = Path(root) if root else FASHION_MNIST_DIR
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    images = root / f"{prefix}-images-idx3-ubyte.gz"
    labels = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (images, labels):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: install Debian's dataset-fashion-mnist")
    return read_idx(images), read_idx(labels)


def zipf_sizes(n_items: int, n_classes: int, exponent: float, rng: np.random.Generator):
    """Class sizes summing to n_items, proportional to 1/rank^exponent, ranks shuffled by rng;
    every class gets at least one item when n_items >= n_classes."""
    if n_items < 0 or n_classes < 1:
        raise ValueError("n_items must be >= 0 and n_classes >= 1")
    weights = 1.0 / np.arange(1, n_classes + 1) ** exponent
    weights = weights[rng.permutation(n_classes)]
    floor = 1 if n_items >= n_classes else 0
    spare = n_items - floor * n_classes
    raw = weights / weights.sum() * spare
    sizes = np.floor(raw).astype(np.int64)
    remainder = spare - int(sizes.sum())
    sizes[np.argsort(-(raw - sizes), kind="stable")[:remainder]] += 1
    return sizes + floor


def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _split_drops(landing_dir: Path, n_drops: int, prefix: str) -> list[str]:
    if n_drops < 1:
        raise ValueError(f"n_drops={n_drops}: must be >= 1")
    drop_ids = [f"{prefix}-{i:04d}" for i in range(n_drops)]
    for drop_id in drop_ids:
        if (landing_dir / drop_id).exists():
            raise FileExistsError(f"{landing_dir / drop_id} exists: choose an empty landing dir")
    return drop_ids


def zipf_draw(labels: np.ndarray, n_items: int, exponent: float, rng: np.random.Generator,
              classes: list[int] | None = None) -> np.ndarray:
    """Rows of `n_items` labelled images with Zipf class sizes (zipf_sizes over `classes`,
    default 0..9), drawn without replacement within each class and shuffled; seeded by rng."""
    classes = list(range(10)) if classes is None else list(classes)
    sizes = zipf_sizes(n_items, len(classes), exponent, rng)
    chosen: list[np.ndarray] = []
    for cls, size in zip(classes, sizes, strict=True):
        pool = np.flatnonzero(labels == cls)
        if size > pool.size:
            raise ValueError(f"class {cls} has {pool.size} images, {size} requested")
        chosen.append(rng.choice(pool, size=int(size), replace=False))
    return rng.permutation(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def build_fashion_mnist_drops(
    landing_dir: str | Path,
    n_drops: int = 4,
    n_items: int = 2000,
    seed: int = 0,
    *,
    exponent: float = 1.2,
    classes: list[int] | None = None,
    labels_path: str | Path | None = None,
    root: str | Path | None = None,
) -> list[str]:
    """Write `n_items` real Fashion-MNIST images as PNGs into `n_drops` drop folders under
    `landing_dir` (each completed with _SUCCESS). Class sizes follow a Zipf law (seeded), items are
    shuffled across the drops. Labels go to `labels_path` (default <landing_dir>/labels.csv, a
    file, not a drop): drop_id, file, item_id (sha256 of the PNG), label, class_name.
    Returns the drop ids, in order."""
    from curation.hashing import sha256_hex

    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    drop_ids = _split_drops(landing_dir, n_drops, "fmnist")
    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train", root)
    order = zipf_draw(labels, n_items, exponent, rng, classes)
    rows = []
    for d, (drop_id, part) in enumerate(zip(drop_ids, np.array_split(order, n_drops), strict=True)):
        folder = landing_dir / drop_id
        folder.mkdir(parents=True)
        for j, idx in enumerate(part):
            name = f"d{d:04d}_{j:06d}.png"
            data = _png_bytes(images[idx])
            (folder / name).write_bytes(data)
            label = int(labels[idx])
            sha = sha256_hex(data)
            rows.append((drop_id, name, sha, label, FASHION_MNIST_CLASSES[label]))
        (folder / SUCCESS_MARKER).touch()
    _write_labels(labels_path or landing_dir / LABELS_FILE, rows)
    return drop_ids


def _write_labels(path: str | Path, rows: list[tuple]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["drop_id", "file", "item_id", "label", "class_name"])
        writer.writerows(rows)


def read_labels(path: str | Path) -> dict[str, int]:
    """file name -> label from a labels.csv written by the builders."""
    with Path(path).open(newline="") as fh:
        return {row["file"]: int(row["label"]) for row in csv.DictReader(fh)}


# ---- text --------------------------------------------------------------------------------------

# Topic -> (subjects, verbs, objects): templated sentences, clearly separable by MiniLM.
TEXT_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "cooking": (
        ("The chef", "My grandmother", "The baker", "A home cook", "The sous-chef"),
        ("simmers", "seasons", "roasts", "kneads", "bakes"),
        (
            "the tomato sauce with garlic",
            "a loaf of sourdough bread",
            "the onions in butter",
            "a pot of lentil soup",
            "the chicken with rosemary",
        ),
    ),
    "football": (
        ("The striker", "The goalkeeper", "The home team", "The coach", "The midfielder"),
        ("scores", "defends", "celebrates", "misses", "wins"),
        (
            "a penalty in extra time",
            "the championship final",
            "a header from a corner kick",
            "the derby against their rivals",
            "the match after a late goal",
        ),
    ),
    "astronomy": (
        ("The telescope", "The astronomer", "A space probe", "The observatory", "The satellite"),
        ("observes", "photographs", "detects", "measures", "tracks"),
        (
            "a distant spiral galaxy",
            "the rings of Saturn",
            "a supernova explosion",
            "light from an exoplanet",
            "the orbit of a comet",
        ),
    ),
    "finance": (
        ("The central bank", "The investor", "The stock market", "The trader", "The pension fund"),
        ("raises", "sells", "buys", "hedges", "reports"),
        (
            "interest rates to curb inflation",
            "government bonds",
            "shares of the tech company",
            "quarterly earnings",
            "currency risk with futures",
        ),
    ),
    "medicine": (
        ("The doctor", "The nurse", "The surgeon", "The pharmacist", "The clinic"),
        ("treats", "prescribes", "vaccinates", "examines", "diagnoses"),
        (
            "the patient with antibiotics",
            "a child against measles",
            "a fractured wrist",
            "symptoms of the flu",
            "high blood pressure",
        ),
    ),
    "gardening": (
        ("The gardener", "My neighbour", "The farmer", "The florist", "A volunteer"),
        ("waters", "prunes", "plants", "harvests", "fertilises"),
        (
            "the rose bushes in spring",
            "tomato seedlings",
            "the apple orchard",
            "tulip bulbs before winter",
            "the vegetable beds",
        ),
    ),
}


def templated_sentences(n_items: int, exponent: float,
                        rng: np.random.Generator) -> list[tuple[int, str]]:
    """(topic index, sentence) of `n_items` templated sentences, topics with Zipf sizes,
    grouped by topic (repeats kept); seeded by rng."""
    topics = list(TEXT_TOPICS)
    entries: list[tuple[int, str]] = []
    for t, size in enumerate(zipf_sizes(n_items, len(topics), exponent, rng)):
        subjects, verbs, objects = TEXT_TOPICS[topics[t]]
        for _ in range(int(size)):
            s, v, o = (parts[rng.integers(len(parts))] for parts in (subjects, verbs, objects))
            entries.append((t, f"{s} {v} {o}."))
    return entries


def build_text_drops(
    landing_dir: str | Path,
    n_drops: int = 2,
    n_items: int = 300,
    seed: int = 0,
    *,
    exponent: float = 1.2,
    labels_path: str | Path | None = None,
) -> list[str]:
    """Write a long-tailed corpus of templated sentences (topics with Zipf sizes, seeded) as
    `n_drops` drops of `texts.jsonl` (lines {"id", "text"}) with _SUCCESS. Labels (topic index per
    id) go to `labels_path` (default <landing_dir>/labels.csv). Returns the drop ids."""
    from curation.hashing import sha256_hex

    landing_dir = Path(landing_dir)
    landing_dir.mkdir(parents=True, exist_ok=True)
    drop_ids = _split_drops(landing_dir, n_drops, "text")
    rng = np.random.default_rng(seed)
    topics = list(TEXT_TOPICS)
    entries = templated_sentences(n_items, exponent, rng)
    order = rng.permutation(len(entries))
    rows = []
    for d, (drop_id, part) in enumerate(zip(drop_ids, np.array_split(order, n_drops), strict=True)):
        folder = landing_dir / drop_id
        folder.mkdir(parents=True)
        lines = []
        for j, k in enumerate(part):
            topic, text = entries[int(k)]
            item = f"d{d:04d}_{j:06d}"
            lines.append(json.dumps({"id": item, "text": text}))
            sha = sha256_hex(text)
            rows.append((drop_id, item, sha, topic, topics[topic]))
        (folder / "texts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (folder / SUCCESS_MARKER).touch()
    _write_labels(labels_path or landing_dir / LABELS_FILE, rows)
    return drop_ids


# ---- messy pools: long tail plus web-like near duplicates ---------------------------------------

# Copies of the same content, re-encoded or re-posted with a small change, as web crawls hold
# them (benchmarks/bench_quality.py; docs/BENCHMARKS.md "Curated against random on messy pools").
NEAR_DUPLICATE_CLASSES = 5  # the largest classes get copies: the head grows, as on the web
NEAR_DUPLICATE_SHARE = 1 / 3  # of their items, each copied ...
NEAR_DUPLICATE_MAX_COPIES = 5  # ... 1 to 5 times (uniform)
TEXT_EDITS = (
    lambda t: t.lower(),
    lambda t: t.rstrip("."),
    lambda t: t.rstrip(".") + "!",
    lambda t: t.replace(" ", "  ", 1),
    lambda t: t + " ",
    lambda t: t.upper()[:1] + t[1:].rstrip(".") + " .",
    lambda t: '"' + t + '"',
)  # fmt: skip


def near_duplicate_sources(labels: np.ndarray, rng: np.random.Generator, *,
                           classes: int = NEAR_DUPLICATE_CLASSES,
                           share: float = NEAR_DUPLICATE_SHARE,
                           max_copies: int = NEAR_DUPLICATE_MAX_COPIES) -> np.ndarray:
    """Rows to copy, one entry per copy (a row copied three times appears three times): in
    each of the `classes` largest classes (ties by class id), round(share x size) of its
    items drawn without replacement, each copied 1..max_copies times. Seeded by `rng`."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    largest = values[np.lexsort((values, -counts))][:classes]
    sources = []
    for cls in largest:
        members = np.flatnonzero(labels == cls)
        picked = rng.choice(members, size=round(share * members.size), replace=False)
        sources.append(np.repeat(np.sort(picked), rng.integers(1, max_copies + 1, picked.size)))
    return np.concatenate(sources) if sources else np.zeros(0, np.int64)


def perturb_image(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-posted copy of a grey image: brightness x U(0.9, 1.1), then a JPEG re-encode at
    quality 90 (decoded again; the pool stores PNG). uint8, same shape. Larger changes (a
    one-pixel shift, noise of 4 grey levels) move EfficientNet-Lite0's vector of a 28 px image
    as far as another item of the class (docs/BENCHMARKS.md)."""
    from PIL import Image

    brighter = np.clip(np.rint(pixels.astype(np.float32) * rng.uniform(0.9, 1.1)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(brighter.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=np.uint8)


def perturb_text(text: str, rng: np.random.Generator) -> str:
    """A near copy of a sentence: one of TEXT_EDITS (case, punctuation, spacing, quotes), the
    kind of difference between re-posts of one line."""
    return TEXT_EDITS[int(rng.integers(len(TEXT_EDITS)))](text)


def messy_fashion_mnist(n_items: int, seed: int = 0, *, exponent: float = 1.2,
                        root: str | Path | None = None):
    """A long-tailed Fashion-MNIST pool with near duplicates, in memory: `n_items` real images
    with Zipf class sizes (as build_fashion_mnist_drops draws them), then the copies of
    near_duplicate_sources, each through perturb_image. Returns (PNG bytes per item, labels,
    source row per item: -1 for an original, else the row it copies). Identical bytes are
    kept once (raw ingests content once)."""
    rng = np.random.default_rng(seed)
    images, labels = load_fashion_mnist("train", root)
    chosen = zipf_draw(labels, n_items, exponent, rng)
    pixels = [images[i] for i in chosen]
    y = [int(labels[i]) for i in chosen]
    source = [-1] * len(chosen)
    for row in near_duplicate_sources(np.asarray(y), rng):
        pixels.append(perturb_image(pixels[row], rng))
        y.append(y[row])
        source.append(int(row))
    return _unique_content([_png_bytes(p) for p in pixels], y, source)


def messy_texts(n_items: int, seed: int = 0, *, exponent: float = 2.0):
    """The templated corpus made long-tailed (Zipf topic sizes over `n_items` draws, as
    build_text_drops draws them; repeated sentences kept once) with near duplicates: the
    copies of near_duplicate_sources, each through perturb_text. Returns (texts, labels,
    source row per item: -1 for an original, else the row it copies). Identical texts are
    kept once (raw ingests content once)."""
    rng = np.random.default_rng(seed)
    entries = templated_sentences(n_items, exponent, rng)
    texts, y, source = _unique_content([text for _, text in entries],
                                       [topic for topic, _ in entries], [-1] * len(entries))
    y, source = y.tolist(), source.tolist()
    for row in near_duplicate_sources(np.asarray(y), rng):
        texts.append(perturb_text(texts[row], rng))
        y.append(y[row])
        source.append(int(row))
    return _unique_content(texts, y, source)


def _unique_content(contents: list, labels: list[int], source: list[int]):
    """The first of each identical content, with its label and source (a source that pointed
    at a dropped row points at the kept one)."""
    first: dict = {}
    keep = []
    for row, content in enumerate(contents):
        if content not in first:
            first[content] = len(keep)
            keep.append(row)
    kept_at = {row: first[contents[row]] for row in range(len(contents))}
    return ([contents[r] for r in keep], np.asarray([labels[r] for r in keep]),
            np.asarray([-1 if source[r] < 0 else kept_at[source[r]] for r in keep]))
