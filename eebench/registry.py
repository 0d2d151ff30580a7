"""Named components: one mechanism for every name a user can type.

Models, data sets, scores, calibrations, q grids, solvers, cost conventions,
import formats and report figures are all chosen by name in suites, on the
command line and in Python. They share one registry type so that they behave
the same everywhere: names are matched without regard to case or surrounding
spaces, an unknown name fails with one :class:`~eebench.errors.UnknownNameError`
that lists the close matches and where to see every name, and a name that is
listed does not have to be imported first (a ``"module:attribute"`` entry is
imported on first use, so listing names stays fast and torch-free).

A component registers itself with the registry's decorator::

    from eebench.policies.solvers import SOLVERS

    @SOLVERS.register("median")
    class MedianSolver: ...

and is then usable wherever its kind of name is accepted; the suite validator,
the command line's help and the docs read the names from the registry, so no
list of names is written down twice.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from eebench.errors import InputError, InputTypeError, UnknownNameError

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """The form every registry stores and matches names in (trimmed, lower case)."""
    return name.strip().lower()


class Registry(Mapping[str, T], Generic[T]):
    """Names of one kind of component, mapped to the objects that build them.

    ``kind`` says what a name names in messages ("solver", "data set"); ``where``
    says where users see every name (``"eebench zoo list"``); ``modules`` are
    imported before the first lookup or listing, for components that register
    themselves with the decorator when their module is imported.
    """

    def __init__(self, kind: str, *, where: str | None = None,
                 modules: Iterable[str] = ()) -> None:
        self.kind = kind
        self.where = where
        self._modules = tuple(modules)
        self._loaded = not self._modules
        self._entries: dict[str, T | str] = {}

    # -- registration -------------------------------------------------------------------
    @overload
    def register(self, name: str, obj: T, /) -> T: ...
    @overload
    def register(self, name: str | None = None, /) -> Callable[[T], T]: ...

    def register(self, name: str | None = None, obj: Any = None, /) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator (``name``
        defaults to the object's ``name`` attribute, then its ``__name__``)."""

        def add(target: T) -> T:
            key = name if name is not None else getattr(target, "name", None)
            if not isinstance(key, str):
                key = getattr(target, "__name__", None)
            if not isinstance(key, str) or not key.strip():
                raise InputTypeError(f"cannot register a {self.kind} without a name: {target!r}")
            self._put(key, target)
            return target

        return add(obj) if obj is not None else add

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attribute"``, imported the first time ``name`` is used."""
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise InputTypeError(f"a lazy {self.kind} is 'module:attribute', got {target!r}")
        self._put(name, target)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a component replaced in a notebook, or one a test registered)."""
        del self._entries[self.key(name)]

    def _put(self, name: str, target: T | str) -> None:
        key = normalize_name(name)
        old = self._entries.get(key)
        if old is not None and old is not target and not _same_lazy(old, target):
            raise InputError(f"{self.kind} name {key!r} is already registered; unregister it first "
                             "to replace it")
        self._entries[key] = target

    # -- lookup -------------------------------------------------------------------------
    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        """Every registered name, sorted (imports no lazy entry)."""
        self._load()
        return sorted(self._entries)

    def key(self, name: str) -> str:
        """The registered form of ``name``; an unknown name fails with close matches."""
        if not isinstance(name, str):
            raise InputTypeError(
                f"a {self.kind} is given by name (a string), got {type(name).__name__}"
            )
        self._load()
        key = normalize_name(name)
        if key not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return key

    def unknown_message(self, name: str) -> str:
        """What an unknown ``name`` fails with: close matches, then where to see them all."""
        close = self.close_matches(name)
        msg = f"unknown {self.kind} {name!r}."
        if close:
            msg += f" Did you mean {', '.join(map(repr, close))}?"
        known = self.names()
        if len(known) <= 24:
            msg += f" Known: {', '.join(known)}."
        if self.where:
            msg += f" `{self.where}` lists every one."
        return msg

    def close_matches(self, name: str, n: int = 3) -> list[str]:
        self._load()
        return difflib.get_close_matches(normalize_name(str(name)), list(self._entries),
                                         n=n, cutoff=0.5)

    def __getitem__(self, name: str) -> T:
        key = self.key(name)
        obj = self._entries[key]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[key] = obj
        return obj

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._load()
        return normalize_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _same_lazy(old: Any, new: Any) -> bool:
    """Whether a decorator registers the very object a lazy entry points at (the module of a
    lazy entry registers itself when it is imported)."""
    if isinstance(old, str) and not isinstance(new, str):
        return old == f"{getattr(new, '__module__', '')}:{getattr(new, '__name__', '')}"
    if isinstance(new, str) and not isinstance(old, str):
        return _same_lazy(new, old)
    return False
