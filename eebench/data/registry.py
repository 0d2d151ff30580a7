"""Data set registry: names in suites and on the command line, resolved to loaders.

A suite names its data set by a string, so a typo must fail with the names it
was probably meant to be. The names live in :data:`DATASETS`, an
:class:`eebench.registry.Registry` like every other kind of name. Listing names
must not import torch (``eebench data list`` and the suite validator start
fast), so the built-in loaders are registered as ``module:function`` strings and
imported only when a data set is built; a loader registered with
:func:`register_dataset` is usable by name at once, in suites too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eebench.errors import UnknownNameError
from eebench.registry import Registry

DatasetFn = Callable[..., Any]

DATASETS: Registry[DatasetFn] = Registry("data set", where="eebench data list")

# The built-in loaders: name -> "module:function", imported on first use.
_DATASETS: dict[str, str] = {
    "digits": "eebench.data.digits:digits",
    "digits_distorted": "eebench.data.digits_distorted:digits_distorted",
    "cifar10": "eebench.data.cifar:cifar10",
    "cifar100": "eebench.data.cifar:cifar100",
    "image_folder": "eebench.data.folder:image_folder",
    "imagenet": "eebench.data.folder:imagenet",
    "arrays": "eebench.data.arrays:arrays",
}

for _name, _target in _DATASETS.items():
    DATASETS.register_lazy(_name, _target)
del _name, _target


class UnknownDatasetError(UnknownNameError):
    """Raised for a data set name that is not registered."""


def register_dataset(fn: DatasetFn | None = None, *, name: str | None = None) -> Any:
    """Register a loader under ``name`` (default: the function's name).

    A loader takes keyword parameters (``root=...``) and returns the *full* data
    set as an :class:`eebench.data.base.ImageDataset`; splits are cut from it by
    :func:`eebench.data.split_dataset`.
    """

    def wrap(f: DatasetFn) -> DatasetFn:
        return DATASETS.register(name or f.__name__, f)

    return wrap(fn) if fn is not None else wrap


def list_datasets() -> list[str]:
    """Every registered data set name, sorted (imports nothing heavy)."""
    return DATASETS.names()


def close_dataset_matches(name: str, n: int = 5) -> list[str]:
    return DATASETS.close_matches(name, n=n)


def dataset_name(name: str) -> str:
    """The registered form of a data set name (trimmed, lower case); an unknown name
    fails with the close matches."""
    if isinstance(name, str) and name not in DATASETS:
        raise UnknownDatasetError(DATASETS.unknown_message(name))
    return DATASETS.key(name)


def get_dataset_fn(name: str) -> DatasetFn:
    """The loader registered under ``name``; unknown names fail with close matches."""
    return DATASETS[dataset_name(name)]
