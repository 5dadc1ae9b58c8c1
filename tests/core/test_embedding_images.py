"""Image embedder on real Fashion-MNIST images with the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.embedding import EmbedderSpec, Item, folder_items, identity_version, make_embedder
from curation.embedding.images import ImageEmbedder
from curation_demo.data import load_fashion_mnist

pytestmark = pytest.mark.slow
SIZE = 64


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fmnist():
    return load_fashion_mnist("test")


@pytest.fixture(scope="module")
def embedder() -> ImageEmbedder:
    return ImageEmbedder(EmbedderSpec(image_size=SIZE, batch_size=16, device="cpu", num_threads=2))


def write_images(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(images):
        p = folder / f"{prefix}_{i:04d}.png"
        p.write_bytes(png(pixels))
        paths.append(p)
    return paths


def test_identical_bytes_identical_vectors(tmp_path, fmnist, embedder):
    images, _ = fmnist
    paths = write_images(tmp_path, images[:20])
    copy = tmp_path / "copy_of_3.png"
    copy.write_bytes(paths[3].read_bytes())
    # the copy lands in another batch (batch_size 16) than the original
    result = embedder.embed([*paths, copy])
    assert result.vectors.shape == (21, 1280)
    assert result.vectors.dtype == np.float32
    assert result.item_ids[3] == result.item_ids[20]
    np.testing.assert_allclose(result.vectors[3], result.vectors[20], atol=1e-5)
    # a second run is bit-identical (deterministic on the CPU)
    again = embedder.embed([*paths, copy])
    assert np.array_equal(result.vectors, again.vectors)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    # different images give different vectors
    assert not np.allclose(result.vectors[0], result.vectors[1], atol=1e-3)


def test_nearest_neighbours_share_the_class(tmp_path, fmnist, embedder):
    images, labels = fmnist
    rng = np.random.default_rng(0)
    classes = [0, 1, 5, 8, 9]  # t-shirt, trouser, sandal, bag, ankle boot
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), 40, replace=False) for c in classes]
    )
    paths = write_images(tmp_path, images[idx])
    result = embedder.embed(paths)
    assert result.vectors.shape == (200, 1280) and not result.quarantined
    y = labels[idx]
    sims = result.vectors @ result.vectors.T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1)[:, :5]
    votes = np.array([np.bincount(y[n], minlength=10).argmax() for n in neighbours])
    accuracy = float((votes == y).mean())
    assert accuracy > 0.6, accuracy  # chance is 0.2


def test_bad_inputs_are_quarantined_and_the_drop_goes_on(tmp_path, fmnist):
    images, _ = fmnist
    good = write_images(tmp_path, images[:5], "good")
    data = png(images[5])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    buf = io.BytesIO()
    Image.fromarray(images[6]).convert("RGB").save(buf, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "garbage.webp").write_bytes(np.random.default_rng(0).bytes(2048))
    buf = io.BytesIO()
    Image.new("1", (3000, 3000)).save(buf, format="PNG")  # 9 Mpx, a few KB: a bomb below
    (tmp_path / "bomb.png").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(images[7]).save(buf, format="GIF")
    (tmp_path / "really_a_gif.png").write_bytes(buf.getvalue())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "_SUCCESS").touch()

    embedder = ImageEmbedder(EmbedderSpec(image_size=32, batch_size=4, device="cpu",
                                          max_pixels=1_000_000))
    result = embedder.embed(folder_items(tmp_path, "image"))
    reasons = {Path(ref).name: reason for ref, reason in result.quarantined}
    assert sorted(Path(r).name for r in result.refs) == [p.name for p in good]
    assert reasons["zero.png"].startswith("empty file")
    assert reasons["truncated.png"].startswith("truncated or corrupt image")
    assert reasons["truncated.jpg"].startswith("truncated or corrupt image")
    assert reasons["garbage.webp"].startswith("unsupported format: not a recognised image")
    assert reasons["bomb.png"].startswith("decompression bomb: 3000x3000")
    assert reasons["really_a_gif.png"].startswith("unsupported format: GIF")
    assert reasons["notes.txt"].startswith("unsupported format: .txt")
    assert len(reasons) == 7  # _SUCCESS is not an item
    # the good items' vectors do not depend on the bad items around them
    alone = embedder.embed(good)
    np.testing.assert_allclose(result.vectors, alone.vectors, atol=1e-5)


def test_pil_decompression_bomb_error_is_quarantined(tmp_path, fmnist):
    images, _ = fmnist
    buf = io.BytesIO()
    Image.new("1", (13000, 14000)).save(buf, format="PNG")  # > 2x PIL's limit: PIL raises
    embedder = ImageEmbedder(EmbedderSpec(image_size=32, device="cpu", max_pixels=10**12))
    result = embedder.embed([Item("bomb", data=buf.getvalue()), Item("ok", data=png(images[0]))])
    assert result.refs == ["ok"]
    assert result.quarantined[0][0] == "bomb"
    assert result.quarantined[0][1].startswith("decompression bomb")


def test_streaming_batches_progress_and_parallel_workers(tmp_path, fmnist, embedder):
    images, _ = fmnist
    paths = write_images(tmp_path, images[:40])
    seen = []
    batches = list(embedder.embed_batches(paths, progress=seen.append))
    assert [len(b.refs) for b in batches] == [16, 16, 8]
    assert [p.done for p in seen] == [16, 32, 40]
    assert all(p.items_per_s > 0 for p in seen)
    inline = np.concatenate([b.vectors for b in batches])
    parallel = ImageEmbedder(EmbedderSpec(image_size=SIZE, batch_size=16, device="cpu",
                                          num_workers=2))
    result = parallel.embed(paths)
    assert result.refs == [str(p) for p in paths]  # order kept across workers
    np.testing.assert_allclose(result.vectors, inline, atol=1e-5)


def test_torchscript_file_gives_the_same_vectors(tmp_path, fmnist, embedder):
    import torch

    images, _ = fmnist
    paths = write_images(tmp_path / "imgs", images[:8])
    x = torch.zeros(2, 3, SIZE, SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit.trace is deprecated, not gone
        traced = torch.jit.trace(embedder.module, x)
    script = tmp_path / "lite0.pt"
    traced.save(str(script))
    ts = ImageEmbedder(EmbedderSpec(
        model="torchscript",
        weights_path=str(script),
        image_size=SIZE,
        device="cpu",
        mean=embedder.mean,
        std=embedder.std,
    ))
    np.testing.assert_allclose(ts.embed(paths).vectors, embedder.embed(paths).vectors, atol=1e-4)
    assert ts.identity()["dim"] == 1280
    assert identity_version(ts.identity()) != identity_version(embedder.identity())


def test_model_change_changes_the_identity_version(tmp_path, embedder):
    import torch

    base = identity_version(embedder.identity())
    same = ImageEmbedder(EmbedderSpec(image_size=SIZE, batch_size=99, num_workers=1, device="cpu"))
    assert identity_version(same.identity()) == base  # batching does not change vectors
    assert len(base) == 16 and int(base, 16) >= 0
    # other weights for the same architecture: a fine-tuned checkpoint
    state = torch.load(embedder.weights_path, map_location="cpu", weights_only=True)
    state["_conv_head.weight"] = state["_conv_head.weight"] * 1.01
    tuned = tmp_path / "lite0-tuned.pth"
    torch.save(state, tuned)
    other = ImageEmbedder(EmbedderSpec(weights_path=str(tuned), image_size=SIZE, device="cpu"))
    assert other.identity()["weights_sha256"] != embedder.identity()["weights_sha256"]
    assert identity_version(other.identity()) != base
    for changed in (
        ImageEmbedder(EmbedderSpec(image_size=SIZE + 32, device="cpu")),
        ImageEmbedder(EmbedderSpec(image_size=SIZE, device="cpu", normalize=False)),
    ):
        assert identity_version(changed.identity()) != base


def test_missing_frameworks_and_weights_give_clear_errors(tmp_path):
    import importlib.util

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(ValueError, match="needs timm, which is not installed"):
            make_embedder(EmbedderSpec(model="timm/resnet18", weights_path=str(weights))).identity()
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ValueError, match="needs torchvision, which is not installed"):
            ImageEmbedder(EmbedderSpec(model="torchvision/resnet18",
                                       weights_path=str(weights))).identity()
    with pytest.raises(ValueError, match="needs weights_path"):
        ImageEmbedder(EmbedderSpec(model="torchscript"))
    with pytest.raises(FileNotFoundError):
        ImageEmbedder(EmbedderSpec(model="torchscript", weights_path=str(tmp_path / "missing.pt")))
