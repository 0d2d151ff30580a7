"""Name lookup shared by the score, calibration, grid and solver registries.

Every registry fails the same way on an unknown name: it says what kind of
thing was asked for, lists every known name and suggests close matches, so a
typo on the command line is fixed in one step.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """``table[name]`` (case-insensitive) or a ValueError that lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be given by name (a string), got {type(name).__name__}")
    key = name.strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}.{hint}")
