"""CIFAR-10 and CIFAR-100 from the python-pickle folders the authors distribute.

The papers' CIFAR numbers use the official train/test split, with
validation carved from train (MSDNet: the last 5000 of a random permutation
of the 50000 training images) and the official test set as test; we keep that
convention, with a seed instead of an unsaved permutation. The full data set
is train followed by test, so sample ids 0..49999 are the training images in
file order and 50000..59999 the test images.

The files are pickles; they are read with an unpickler that only admits the
few numpy names an array needs, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eebench.data.base import InMemoryImageDataset
from eebench.errors import InputError, MissingKeyError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # as eebench.zoo.base.CIFAR_MEAN / CIFAR_STD
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR file: only numpy arrays, lists and "
                "strings are expected there"
            )
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> dict[bytes, Any]:
    """One CIFAR batch or meta file as a dict with bytes keys."""
    with open(path, "rb") as f:
        obj = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR batch")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _folder(root: str | Path, variant: str) -> Path:
    sub, train, test, meta = _LAYOUTS[variant]
    root = Path(root).expanduser()
    for cand in (root / sub, root):
        if all((cand / f).is_file() for f in train + test):
            return cand
    expected = "\n  ".join([f"{sub}/{f}" for f in train + test] + [f"{sub}/{meta}"])
    raise FileNotFoundError(
        f"no {variant} data under {root}. Expected the python version of {variant} "
        f"(the folder extracted from {sub.replace('-batches-py', '').replace('-python', '')}"
        f"-python.tar.gz), i.e. root/ containing\n  {expected}\n"
        f"(root may also be the {sub} folder itself)"
    )


def _read_part(folder: Path, files: list[str], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch = read_cifar_pickle(folder / name)
        if b"data" not in batch or label_key not in batch:
            raise MissingKeyError(
                f"{folder / name} lacks {[k for k in (b'data', label_key) if k not in batch]}; "
                f"it has {sorted(batch)}"
            )
        data = np.asarray(batch[b"data"])
        lab = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise InputError(
                f"{folder / name}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}"
            )
        if data.shape[0] != lab.shape[0]:
            raise InputError(f"{folder / name}: {data.shape[0]} images but {lab.shape[0]} labels")
        images.append(data.reshape(-1, 3, 32, 32))  # rows hold the R, G, B planes in turn
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _cifar(variant: str, root: str | Path, label_mode: str, transform: Any) -> InMemoryImageDataset:
    folder = _folder(root, variant)
    _, train_files, test_files, meta_file = _LAYOUTS[variant]
    if variant == "cifar10":
        label_key, names_key = b"labels", b"label_names"
    else:
        if label_mode not in ("fine", "coarse"):
            raise InputError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
        label_key, names_key = f"{label_mode}_labels".encode(), f"{label_mode}_label_names".encode()
    x_train, y_train = _read_part(folder, train_files, label_key)
    x_test, y_test = _read_part(folder, test_files, label_key)
    meta_path = folder / meta_file
    if meta_path.is_file():
        meta = read_cifar_pickle(meta_path)
        if names_key not in meta:
            raise MissingKeyError(f"{meta_path} lacks {names_key!r}; it has {sorted(meta)}")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    elif variant == "cifar10":
        classes = list(CIFAR10_CLASSES)
    else:
        raise FileNotFoundError(f"{meta_path} (the class names of CIFAR-100) is missing")
    n_train, n_test = len(y_train), len(y_test)
    params: dict[str, Any] = {"root": str(folder.resolve())}
    if variant == "cifar100":
        params["label_mode"] = label_mode
    mean, std = (
        (CIFAR10_MEAN, CIFAR10_STD) if variant == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    )
    return InMemoryImageDataset(
        variant,
        params,
        torch.from_numpy(np.concatenate([x_train, x_test])),
        np.concatenate([y_train, y_test]),
        classes,
        mean=mean,
        std=std,
        transform=transform,
        official_splits={
            "train": np.arange(n_train),
            "test": np.arange(n_train, n_train + n_test),
        },
        default_val_size=5000,
    )


def cifar10(root: str | Path, *, transform: Any = None) -> InMemoryImageDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta)."""
    return _cifar("cifar10", root, "fine", transform)


def cifar100(
    root: str | Path, *, label_mode: str = "fine", transform: Any = None
) -> InMemoryImageDataset:
    """CIFAR-100 from ``root/cifar-100-python`` (train, test, meta); fine or coarse labels."""
    return _cifar("cifar100", root, label_mode, transform)
