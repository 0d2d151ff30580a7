"""scikit-learn's 8x8 handwritten digits, shaped like a tiny colour image data set.

The embedded default: it ships with scikit-learn (no download, no network),
loads in a second, and is small enough to train a multi-exit network on a CPU
in a minute, so the whole flow (train, count, extract, evaluate, report) can
run anywhere. Images are upsampled to 32x32 and repeated to 3 channels so
that CIFAR-shaped architectures (MSDNet's CIFAR models) take them unchanged.
Digits are not mirror-symmetric, so training augmentation never flips them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eebench.data.base import InMemoryImageDataset
from eebench.errors import InputError

#: Per-channel mean and std of the 32x32 upsampled images in [0, 1] (all 1797 samples).
DIGITS_MEAN = (0.3053, 0.3053, 0.3053)
DIGITS_STD = (0.3236, 0.3236, 0.3236)


def digits(*, size: int = 32, transform: Any = None) -> InMemoryImageDataset:
    """The 1797 digits (10 classes) as float (3, size, size) images in [0, 1].

    Pixel values 0..16 are scaled to [0, 1] and upsampled bilinearly
    (``align_corners=False``) from 8x8 to ``size``. Sample ids are the positions
    in ``sklearn.datasets.load_digits()``.
    """
    from sklearn.datasets import load_digits

    if int(size) < 8:
        raise InputError(f"size must be at least the native 8 pixels, got {size}")
    raw = load_digits()
    x = torch.from_numpy(raw.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(int(size), int(size)), mode="bilinear", align_corners=False)
    images = x.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    return InMemoryImageDataset(
        "digits",
        {"size": int(size)},
        images,
        raw.target.astype(np.int64),
        [str(c) for c in raw.target_names],
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        transform=transform,
        flip_invariant=False,
    )
