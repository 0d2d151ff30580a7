"""Images already in memory or in an ``.npz``: the shortest way to benchmark on one's own data.

Many groups keep their evaluation images as one array (a re-encoded CIFAR
test set, a medical data set, a synthetic shift). The array contents are
hashed into ``describe()``, since a path or an in-memory array says nothing
about which images they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eebench.data.base import InMemoryImageDataset
from eebench.errors import InputError, MissingKeyError


def _sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _to_nchw(images: np.ndarray, layout: str) -> np.ndarray:
    if images.ndim == 3:  # (N, H, W) grey
        images = images[:, None]
        layout = "NCHW"
    if images.ndim != 4:
        raise InputError(
            f"images must be (N, H, W, C), (N, C, H, W) or (N, H, W), got shape {images.shape}"
        )
    if layout == "auto":
        last, second = images.shape[3] in (1, 3), images.shape[1] in (1, 3)
        if last == second:
            raise InputError(
                f"cannot tell the channel axis of images {images.shape}; pass layout='NHWC' or "
                "'NCHW'"
            )
        layout = "NHWC" if last else "NCHW"
    if layout == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    elif layout != "NCHW":
        raise InputError(f"layout must be 'auto', 'NHWC' or 'NCHW', got {layout!r}")
    if images.shape[1] not in (1, 3):
        raise InputError(f"images need 1 or 3 channels, got {images.shape[1]} ({layout})")
    return np.ascontiguousarray(images)


def arrays(
    path: str | Path | None = None,
    *,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    layout: str = "auto",
    flip_invariant: bool = True,
    transform: Any = None,
) -> InMemoryImageDataset:
    """Images and labels from an ``.npz`` (keys ``images``, ``labels``, optional ``classes``)
    or passed in.

    ``images`` are uint8 (0..255) or float (0..1), channels last (N, H, W, C) or
    first (N, C, H, W), C = 1 or 3; ``layout='auto'`` finds the channel axis.
    Without ``classes`` the classes are named ``0..max(label)``. Sample ids are
    positions in the arrays. The default transform normalises with the
    images' own per-channel mean and std.
    """
    params: dict[str, Any] = {}
    if path is not None:
        if images is not None or labels is not None:
            raise InputError("give either path= or images=/labels=, not both")
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; give an .npz with arrays 'images' (N, H, W, 3) uint8 "
                "and 'labels' (N,) int"
            )
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if missing:
                raise MissingKeyError(f"{path} lacks arrays {missing}; it holds {z.files}")
            images, labels = z["images"], z["labels"]
            if classes is None and "classes" in z.files:
                classes = [str(c) for c in z["classes"]]
        params["file"] = path.name
    elif images is None or labels is None:
        raise InputError("give path= (an .npz) or both images= and labels=")
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"images must be uint8 or float, got {images.dtype}")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise InputError(
                f"float images must lie in [0, 1], got [{lo:g}, {hi:g}]; scale them or pass uint8"
            )
        images = images.astype(np.float32, copy=False)
    params["sha256"] = _sha256(images, labels.astype(np.int64))
    nchw = _to_nchw(images, layout)
    if classes is None:
        classes = [str(c) for c in range(int(labels.max()) + 1 if labels.size else 0)]
    tensor = torch.from_numpy(nchw)
    scale = 255.0 if nchw.dtype == np.uint8 else 1.0
    mean, std = [], []
    for c in range(nchw.shape[1]):  # one channel at a time keeps the float copy small
        ch = nchw[:, c].astype(np.float32) / scale
        mean.append(round(float(ch.mean(dtype=np.float64)), 4))
        std.append(max(round(float(ch.std(dtype=np.float64)), 4), 1e-4))
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return InMemoryImageDataset(
        "arrays",
        params,
        tensor,
        labels.astype(np.int64),
        list(classes),
        mean=mean,
        std=std,
        transform=transform,
        flip_invariant=flip_invariant,
    )
