"""Tiny CIFAR pickle folders in the official layout, for tests that need a CIFAR root."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                 b"ship", b"truck"]  # fmt: skip


def cifar_image(i: int) -> np.ndarray:
    """A (32, 32, 3) uint8 image whose planes and pixels are all distinguishable."""
    r = np.arange(32 * 32, dtype=np.int64).reshape(32, 32)
    return np.stack([(r + i) % 256, (2 * r + 7 * i) % 256, (255 - r + i) % 256], -1).astype(
        np.uint8
    )


def write_batch(path: Path, ids: list[int], label_key: bytes, labels: list[int]) -> None:
    # The real layout: each row is the 1024 red values, then green, then blue, row-major.
    data = np.stack([cifar_image(i).transpose(2, 0, 1).reshape(-1) for i in ids])
    batch = {b"batch_label": b"synthetic", b"data": data, label_key: labels,
             b"filenames": [f"{i}.png".encode() for i in ids]}  # fmt: skip
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_cifar10(
    root: Path, test_ids: list[int] | None = None, test_labels: list[int] | None = None
) -> Path:
    """``root/cifar-10-batches-py`` with 4 training images per batch (ids 0..19) and the
    given test images (default ids 100, 101, 102 labelled 7, 8, 9); returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        ids = list(range(4 * b, 4 * b + 4))
        write_batch(folder / f"data_batch_{b + 1}", ids, b"labels", [i % 10 for i in ids])
    test_ids = test_ids if test_ids is not None else [100, 101, 102]
    test_labels = test_labels if test_labels is not None else [7 + i % 3 for i in range(len(test_ids))]
    write_batch(folder / "test_batch", test_ids, b"labels", test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR10_NAMES, b"num_vis": 3072}, f, protocol=2)
    return root
