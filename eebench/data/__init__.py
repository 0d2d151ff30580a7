"""Data sets (embedded digits; CIFAR, image folders and arrays from disk) and seeded splits.

This package root stays light: listing data sets must not import torch or
numpy (``eebench data list``, the command line's help and the suite validator
start in well under a second), and computing splits must not import torch.
Everything else (the splits with numpy, the loaders with torch) is imported on
first use through the module ``__getattr__`` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eebench.data.registry import DATASETS, UnknownDatasetError, list_datasets, register_dataset
from eebench.lazy import lazy_attributes

_LAZY = {
    "DEFAULT_FRACTIONS": "eebench.data.splits",
    "DEFAULT_VAL_SIZE": "eebench.data.splits",
    "SplitError": "eebench.data.splits",
    "check_disjoint": "eebench.data.splits",
    "complement": "eebench.data.splits",
    "index_sha256": "eebench.data.splits",
    "load_index_file": "eebench.data.splits",
    "make_split_indices": "eebench.data.splits",
    "seeded_split": "eebench.data.splits",
    "ImageDataset": "eebench.data.base",
    "InMemoryImageDataset": "eebench.data.base",
    "SplitView": "eebench.data.base",
    "NamedTransform": "eebench.data.base",
    "create_dataset": "eebench.data.base",
    "split_dataset": "eebench.data.base",
    "eval_transform": "eebench.data.transforms",
    "train_transform": "eebench.data.transforms",
    "TensorTransform": "eebench.data.transforms",
    "FileEvalTransform": "eebench.data.transforms",
    "TrainTransform": "eebench.data.transforms",
    "digits": "eebench.data.digits",
    "digits_distorted": "eebench.data.digits_distorted",
    "cifar10": "eebench.data.cifar",
    "cifar100": "eebench.data.cifar",
    "image_folder": "eebench.data.folder",
    "imagenet": "eebench.data.folder",
    "arrays": "eebench.data.arrays",
}

# The lazy names for type checkers and editors; at run time __getattr__ loads them.
if TYPE_CHECKING:
    from eebench.data.arrays import arrays
    from eebench.data.base import (
        ImageDataset,
        InMemoryImageDataset,
        NamedTransform,
        SplitView,
        create_dataset,
        split_dataset,
    )
    from eebench.data.cifar import cifar10, cifar100
    from eebench.data.digits import digits
    from eebench.data.digits_distorted import digits_distorted
    from eebench.data.folder import image_folder, imagenet
    from eebench.data.splits import (
        DEFAULT_FRACTIONS,
        DEFAULT_VAL_SIZE,
        SplitError,
        check_disjoint,
        complement,
        index_sha256,
        load_index_file,
        make_split_indices,
        seeded_split,
    )
    from eebench.data.transforms import (
        FileEvalTransform,
        TensorTransform,
        TrainTransform,
        eval_transform,
        train_transform,
    )

__all__ = [
    "DATASETS",
    "UnknownDatasetError",
    "list_datasets",
    "register_dataset",
    # sorted(_LAZY), written out so that linters and type checkers can read it
    "DEFAULT_FRACTIONS",
    "DEFAULT_VAL_SIZE",
    "FileEvalTransform",
    "ImageDataset",
    "InMemoryImageDataset",
    "NamedTransform",
    "SplitView",
    "TensorTransform",
    "TrainTransform",
    "SplitError",
    "arrays",
    "check_disjoint",
    "cifar10",
    "cifar100",
    "complement",
    "create_dataset",
    "digits",
    "digits_distorted",
    "eval_transform",
    "image_folder",
    "imagenet",
    "index_sha256",
    "load_index_file",
    "make_split_indices",
    "seeded_split",
    "split_dataset",
    "train_transform",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
