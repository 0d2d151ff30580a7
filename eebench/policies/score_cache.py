"""Per-LogitSet memory of computed scores and predictions.

A sweep fits and applies several policies to the same validation and test sets;
most of them threshold the same score under no (or the same) calibration. The
scores of a (N, K, C) cache cost a full read of it, the solvers almost nothing,
so each score is computed once per set and kept here for as long as the set lives.

Entries hang off the LogitSet object through a weak reference (a LogitSet is an
unhashable dataclass, so it is keyed by ``id`` and the weak reference guards
against a recycled id). They are dropped when the set is garbage collected, and
cleared when its ``logits``, ``labels``, ``kind`` or ``features`` are replaced by
other objects. Writing into the arrays of a LogitSet in place after scoring it is
not detected: the stored results are read-only, and so should the outputs be.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

_CACHES: dict[int, tuple[weakref.ref, dict[Any, Any]]] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    entry = _CACHES.get(key)
    if entry is not None and entry[0] is ref:
        del _CACHES[key]


def _ref(obj: Any) -> Any:
    if obj is None:
        return None
    try:
        return weakref.ref(obj)
    except TypeError:  # not weak-referenceable (a list of features, say): keep its id
        return ("id", id(obj))


def _same(ref: Any, obj: Any) -> bool:
    if ref is None:
        return obj is None
    if isinstance(ref, tuple):
        return ref == ("id", id(obj))
    return ref() is obj


def cache_for(ls: Any) -> dict[Any, Any] | None:
    """The result memory of ``ls`` (created on first use); None when ``ls`` cannot be
    weakly referenced."""
    key = id(ls)
    entry = _CACHES.get(key)
    if entry is None or entry[0]() is not ls:
        try:
            ref = weakref.ref(ls, functools.partial(_forget, key))
        except TypeError:
            return None
        entry = (ref, {})
        _CACHES[key] = entry
    store = entry[1]
    parts = (ls.logits, ls.labels, getattr(ls, "features", None))
    stamp = store.get("__stamp__")
    if (
        stamp is None
        or stamp[3] != ls.kind
        or not all(_same(r, o) for r, o in zip(stamp[:3], parts))
    ):
        store.clear()
        store["__stamp__"] = (*(_ref(o) for o in parts), ls.kind)
    return store


def clear(ls: Any | None = None) -> None:
    """Forget the results of ``ls`` (of every set when None)."""
    if ls is None:
        _CACHES.clear()
        return
    entry = _CACHES.get(id(ls))
    if entry is not None and entry[0]() is ls:
        entry[1].clear()


def calibration_key(calibration: Any) -> Any:
    """A hashable key that identifies a fitted calibration's results, or None when it
    cannot be identified (its results are then not kept).

    ``"none"`` without calibration; the calibration's own ``cache_key()`` when it has
    one (a complete description of its fitted state, so that two calibrations fit alike
    share results); else the object itself, through a weak reference.
    """
    if calibration is None:
        return "none"
    own = getattr(calibration, "cache_key", None)
    if callable(own):
        return (type(calibration).__module__, type(calibration).__qualname__, own())
    try:
        return ("object", _ObjectKey(calibration))
    except TypeError:
        return None


class _ObjectKey:
    """Hashable by identity, equal only while the same object lives."""

    __slots__ = ("_id", "_ref")

    def __init__(self, obj: Any) -> None:
        self._ref = weakref.ref(obj)
        self._id = id(obj)

    def __hash__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ObjectKey):
            return NotImplemented
        mine = self._ref()
        return mine is not None and mine is other._ref()
