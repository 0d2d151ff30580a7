"""Lazy package attributes: a package names what it exports, and the module behind a name is
imported the first time the name is used.

The command line starts in tens of milliseconds only if importing a package does not
import torch, pandas or scipy behind every name it exports; each package's ``__init__``
therefore maps its heavier names to their modules and installs the module-level
``__getattr__`` and ``__dir__`` made here (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``modules`` maps each lazy name to the
    module that defines it; a name is imported once, then kept in the package."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            value = getattr(importlib.import_module(modules[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(modules))

    return __getattr__, __dir__
