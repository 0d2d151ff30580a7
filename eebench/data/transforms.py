"""Evaluation and training transforms, built from a model's config, that can say what they are.

A logit cache is only valid for the exact preprocessing that produced it, so
every transform here carries ``describe()``: a plain, deterministic dict that
enters the logit store's identity. Evaluation preprocessing comes from the
model's :class:`~eebench.zoo.base.ModelConfig` (input size, mean, std,
interpolation, crop fraction), never from the data set, so one data set can
feed models that expect different inputs.

Two sources of images exist: small in-memory data (digits, CIFAR, arrays),
already tensors at their native size, which are resized and normalised; and
image files (photos of any size), which get timm's evaluation pipeline
(resize the shorter side to ``size / crop_pct``, centre crop, normalise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eebench.errors import InputError

SOURCES = ("tensor", "file")
_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


def _floats(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def config_dict(config: Any) -> dict[str, Any]:
    """The preprocessing fields of a ModelConfig, a ``to_dict()`` of one, or a plain mapping."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif not isinstance(config, Mapping):
        config = {
            k: getattr(config, k) for k in ("input_size", "mean", "std") if hasattr(config, k)
        }
        for k in ("interpolation", "crop_pct"):
            if hasattr(config, k):
                config[k] = getattr(config, k)
    missing = [k for k in ("input_size", "mean", "std") if k not in config]
    if missing:
        raise InputError(
            f"a transform needs the model's input_size, mean and std; the config lacks {missing}"
        )
    size = config["input_size"]
    size = (3, int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) == 2:
        size = (3, *size)
    if len(size) != 3:
        raise InputError(
            f"input_size must be (C, H, W), (H, W) or an int, got {config['input_size']}"
        )
    mean, std = _floats(config["mean"]), _floats(config["std"])
    if len(mean) != size[0] or len(std) != size[0]:
        raise InputError(
            f"mean {mean} and std {std} need one value per channel of input_size {list(size)}"
        )
    interpolation = str(config.get("interpolation", "bilinear"))
    if interpolation not in _MODES:
        raise InputError(f"interpolation must be one of {sorted(_MODES)}, got {interpolation!r}")
    return {
        "input_size": size,
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(config.get("crop_pct", 0.875)),
    }


def to_float_chw(img: Any) -> torch.Tensor:
    """A PIL image, an (H, W[, C]) array or a (C, H, W) tensor as float CHW in [0, 1].

    uint8 inputs are divided by 255; float inputs are taken to be in [0, 1] already.
    """
    if isinstance(img, torch.Tensor):
        x = img
        if x.ndim == 2:
            x = x[None]
    else:
        arr = np.asarray(img)  # PIL images convert to (H, W[, C]) uint8
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise InputError(f"expected an image of shape (H, W) or (H, W, C), got {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def fit_size(
    x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear"
) -> torch.Tensor:
    """Resize a CHW tensor so it covers ``size`` keeping its aspect ratio, then centre-crop.

    For a square image and a square target this is a plain resize.
    """
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    scale = max(th / h, tw / w)
    nh, nw = max(th, math.ceil(h * scale - 1e-6)), max(tw, math.ceil(w * scale - 1e-6))
    mode = _MODES[interpolation]
    kwargs: dict[str, Any] = {}
    if mode != "nearest":
        kwargs = {"align_corners": False, "antialias": nh < h or nw < w}
    x = F.interpolate(x[None], size=(nh, nw), mode=mode, **kwargs)[0]
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[:, top : top + th, left : left + tw]


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1:
        return x.expand(channels, -1, -1).contiguous()
    if x.shape[0] == 4 and channels == 3:  # RGBA: drop alpha
        return x[:3]
    raise InputError(f"image has {x.shape[0]} channels; the model expects {channels}")


class TensorTransform:
    """Resize (when ``input_size`` is set) and normalise a small in-memory image."""

    def __init__(
        self,
        input_size: Sequence[int] | None,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
    ) -> None:
        if interpolation not in _MODES:
            raise InputError(
                f"interpolation must be one of {sorted(_MODES)}, got {interpolation!r}"
            )
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self.mean = _floats(mean)
        self.std = _floats(std)
        if any(s <= 0 for s in self.std):
            raise InputError(f"std must be positive, got {self.std}")
        self.interpolation = interpolation
        self._mean = torch.tensor(self.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.std).view(-1, 1, 1)

    def geometry(self, img: Any) -> torch.Tensor:
        x = to_float_chw(img)
        x = _match_channels(x, len(self.mean))
        if self.input_size is not None:
            th, tw = self.input_size[-2:]
            x = fit_size(x, (th, tw), self.interpolation)
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def __call__(self, img: Any) -> torch.Tensor:
        return self.normalise(self.geometry(img))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "tensor_eval",
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class FileEvalTransform:
    """timm's evaluation pipeline for photos: resize to ``size / crop_pct``, centre crop, normalise."""

    def __init__(
        self,
        input_size: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        crop_pct: float = 0.875,
    ) -> None:
        from timm.data import create_transform

        if not 0 < crop_pct <= 1:
            raise InputError(f"crop_pct must lie in (0, 1], got {crop_pct}")
        self.input_size = tuple(int(s) for s in input_size)
        self.mean, self.std = _floats(mean), _floats(std)
        self.interpolation, self.crop_pct = interpolation, float(crop_pct)
        h, w = self.input_size[-2:]  # all timm reads of (channels, height, width)
        self._timm = create_transform(
            input_size=(h, w),
            is_training=False,
            interpolation=interpolation,
            mean=tuple(self.mean),
            std=tuple(self.std),
            crop_pct=self.crop_pct,
        )

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, (torch.Tensor, np.ndarray)):
            from PIL import Image

            x = to_float_chw(img).clamp(0, 1).mul(255).round().byte()
            img = Image.fromarray(x.permute(1, 2, 0).numpy().squeeze())
        if getattr(img, "mode", "RGB") != "RGB" and self.input_size[0] == 3:
            img = img.convert("RGB")
        return self._timm(img)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "timm_eval",
            "input_size": list(self.input_size),
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class TrainTransform(TensorTransform):
    """Training augmentation for the small trainer: random crop with zero padding, optional flip.

    The flip is an option because not every data set is mirror-symmetric
    (a mirrored digit is not a digit). Randomness comes from torch's global
    generator, which the trainer seeds, so a seeded run is repeatable.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        pad: int = 4,
        flip: bool = False,
    ) -> None:
        super().__init__(input_size, mean, std, interpolation)
        if pad < 0:
            raise InputError(f"pad must be >= 0, got {pad}")
        self.pad, self.flip = int(pad), bool(flip)

    def __call__(self, img: Any) -> torch.Tensor:
        x = self.geometry(img)
        if self.pad:
            h, w = x.shape[-2:]
            x = F.pad(x, (self.pad,) * 4)
            i, j = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
            x = x[:, i : i + h, j : j + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return self.normalise(x)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(kind="tensor_train", pad=self.pad, flip=self.flip)
        return d


def eval_transform(config: Any, source: str = "tensor") -> TensorTransform | FileEvalTransform:
    """The evaluation transform a model's config asks for.

    ``source="tensor"`` (in-memory data: digits, CIFAR, arrays): resize to the
    model's input size and normalise. ``source="file"`` (photos): timm's
    ``create_transform`` with the config's input size, crop_pct, interpolation,
    mean and std.
    """
    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}, got {source!r}")
    c = config_dict(config)
    if source == "file":
        return FileEvalTransform(
            c["input_size"], c["mean"], c["std"], c["interpolation"], c["crop_pct"]
        )
    return TensorTransform(c["input_size"], c["mean"], c["std"], c["interpolation"])


def train_transform(config: Any, *, pad: int | None = None, flip: bool = False) -> TrainTransform:
    """Random crop (zero padding ``pad``, default 1/8 of the input side) and optional flip."""
    c = config_dict(config)
    if pad is None:
        pad = max(1, c["input_size"][-1] // 8)
    return TrainTransform(
        c["input_size"], c["mean"], c["std"], c["interpolation"], pad=pad, flip=flip
    )
