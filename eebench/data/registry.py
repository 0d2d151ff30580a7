"""Data set registry: names in suites and on the command line, resolved to loaders.

A suite names its data set by a string, so a typo must fail with the names it
was probably meant to be. Listing names must not import torch (``eebench data
list`` and the suite validator start fast), so the built-in loaders are
registered as ``module:function`` strings and imported only when a data set is
built.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from eebench.errors import EebenchError

DatasetFn = Callable[..., Any]

# name -> loader function, or "module:function" imported on first use.
_DATASETS: dict[str, DatasetFn | str] = {
    "digits": "eebench.data.digits:digits",
    "cifar10": "eebench.data.cifar:cifar10",
    "cifar100": "eebench.data.cifar:cifar100",
    "image_folder": "eebench.data.folder:image_folder",
    "imagenet": "eebench.data.folder:imagenet",
    "arrays": "eebench.data.arrays:arrays",
}


class UnknownDatasetError(EebenchError, KeyError):
    """Raised for a data set name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_dataset(fn: DatasetFn | None = None, *, name: str | None = None):
    """Register a loader under ``name`` (default: the function's name).

    A loader takes keyword parameters (``root=...``) and returns the *full* data
    set as an :class:`eebench.data.base.ImageDataset`; splits are cut from it by
    :func:`eebench.data.split_dataset`.
    """

    def wrap(f: DatasetFn) -> DatasetFn:
        key = name or f.__name__
        old = _DATASETS.get(key)
        if (
            old is not None
            and old is not f
            and not (isinstance(old, str) and old == f"{f.__module__}:{f.__name__}")
        ):
            raise ValueError(f"data set name {key!r} is already registered")
        _DATASETS[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def list_datasets() -> list[str]:
    """Every registered data set name, sorted (imports nothing heavy)."""
    return sorted(_DATASETS)


def close_dataset_matches(name: str, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, list(_DATASETS), n=n, cutoff=0.4)


def get_dataset_fn(name: str) -> DatasetFn:
    """The loader registered under ``name``; unknown names fail with close matches."""
    if name not in _DATASETS:
        hint = close_dataset_matches(name)
        msg = f"unknown data set {name!r}."
        if hint:
            msg += f" Did you mean: {', '.join(hint)}?"
        msg += f" Registered: {', '.join(list_datasets())} (`eebench data list`)."
        raise UnknownDatasetError(msg)
    fn = _DATASETS[name]
    if isinstance(fn, str):
        module, attr = fn.split(":")
        fn = getattr(importlib.import_module(module), attr)
        _DATASETS[name] = fn
    return fn
