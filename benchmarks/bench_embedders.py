"""Throughput of the embedders in the pipeline path (read + decode + batch + forward, via
curation.embedding) against the bare model forward on the same pre-decoded batches.

    python benchmarks/bench_embedders.py [--n-images 256] [--image-size 224] [--repeats 3]

Prints a table (median of --repeats interleaved runs). Target: pipeline >= 80% of the bare forward.
Runs on CUDA (half precision) when present, else CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def once(fn) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds per variant; the variants alternate within each repeat so that load from
    other processes on a shared machine hits them alike."""
    for fn in variants.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(once(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_images(folder: Path, args, rows: list) -> None:
    import torch

    from curation.embedding import EmbedderSpec, Item, folder_files
    from curation.embedding.images import ImageEmbedder, _collate, _DecodeSet

    paths = folder_files(folder)
    n = len(paths)
    base = ImageEmbedder(EmbedderSpec(
        image_size=args.image_size, batch_size=args.batch_size, num_threads=args.threads
    ))
    base.identity()  # load
    # the same batches, decoded and normalised beforehand: only the forward pass is timed
    items = [Item(str(p), path=p) for p in paths]
    decoded = _DecodeSet(items, args.image_size, base.spec.max_pixels)
    batches = []
    for start in range(0, n, args.batch_size):
        _, _, pixels, _ = _collate(
            [decoded[i] for i in range(start, min(n, start + args.batch_size))]
        )
        batches.append(base.to_input(pixels))

    def bare():
        with torch.inference_mode():
            for x in batches:
                base.module(x).float().cpu()

    variants = {f"bare forward ({base.device})": bare}
    for workers in args.workers:
        emb = ImageEmbedder(EmbedderSpec(
            image_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=workers,
            num_threads=args.threads,
        ))
        emb.identity()
        variants[f"pipeline, num_workers={workers}"] = lambda emb=emb: emb.embed(paths)
    medians = interleaved(variants, args.repeats)
    t_bare = medians[f"bare forward ({base.device})"]
    for name, t in medians.items():
        rows.append(("image", name, n, t, t_bare / t))


def bench_text(folder: Path, args, rows: list) -> None:
    import torch

    from curation.embedding import EmbedderSpec, folder_items
    from curation.embedding.text import TextEmbedder

    emb = TextEmbedder(EmbedderSpec(kind="text", batch_size=args.batch_size,
                                    num_threads=args.threads))
    model = emb.model
    texts = [it.text for it in folder_items(folder, "text")]
    n = len(texts)
    features = []
    for start in range(0, n, args.batch_size):
        tokenize = getattr(model, "preprocess", None) or model.tokenize
        f = tokenize(texts[start : start + args.batch_size])
        features.append({k: v.to(emb.device) if torch.is_tensor(v) else v for k, v in f.items()})

    def bare():
        with torch.inference_mode():
            for f in features:
                model(f)["sentence_embedding"].float().cpu()

    bare_name = f"bare forward, pre-tokenised ({emb.device})"
    medians = interleaved(
        {
            bare_name: bare,
            "pipeline (read, decode, tokenise, forward)": lambda: emb.embed(
                folder_items(folder, "text")
            ),
        },
        args.repeats,
    )
    for name, t in medians.items():
        rows.append(("text", name, n, t, medians[bare_name] / t))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--n-texts", type=int, default=512)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    from curation_demo.data import build_fashion_mnist_drops, build_text_drops

    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        drops = build_fashion_mnist_drops(tmp / "img", 1, args.n_images, seed=0)
        bench_images(tmp / "img" / drops[0], args, rows)
        drops = build_text_drops(tmp / "txt", 1, args.n_texts, seed=0)
        bench_text(tmp / "txt" / drops[0], args, rows)
    import torch

    print(
        f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"image_size {args.image_size}, batch {args.batch_size}, median of {args.repeats}"
    )
    print(f"{'kind':6} {'path':46} {'items':>6} {'seconds':>8} {'items/s':>9} {'vs bare':>8}")
    for kind, path, n, t, ratio in rows:
        print(f"{kind:6} {path:46} {n:6d} {t:8.3f} {n / t:9.1f} {ratio:8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
