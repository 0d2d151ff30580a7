"""Resolve a logit source, as users name one, to a LogitSet: a LogitSet given in Python,
an ``.npz`` file of logits and labels, or a logit-store entry (by name or key, or
``store:REF``). A reference that could mean both a file and an entry is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from eebench.errors import DataError
from eebench.store.logitset import LogitSet

#: Prefix that makes a source reference mean a logit-store entry, never a file.
STORE_PREFIX = "store:"


def load_source(
    source: str | Path | LogitSet,
    costs: Sequence[float] | None = None,
    store_root: str | Path | None = None,
) -> LogitSet:
    """A LogitSet from a LogitSet, an ``.npz`` file, or a logit-store entry (name or key).

    ``store:REF`` always means a store entry. A bare reference that is both a path on disk
    and the name of a store entry is refused: which one was meant cannot be guessed, and
    guessing wrong evaluates the wrong logits. The costs of the result are checked (finite,
    positive, cumulative), since every curve is priced by them.
    """
    ls, unchecked = load_source_unchecked(source, costs, store_root)
    if unchecked:
        from eebench.store.validate import check_values

        check_values(ls.logits, ls.kind, f"the given {ls.kind}")
    return ls


def load_source_unchecked(
    source: str | Path | LogitSet,
    costs: Sequence[float] | None = None,
    store_root: str | Path | None = None,
) -> tuple[LogitSet, bool]:
    """``load_source`` without the value check of a given LogitSet: (set, still unchecked),
    so that run_sweep can check while it splits instead of reading the logits twice."""
    from eebench.store.validate import check_costs

    if isinstance(source, LogitSet):
        ls = source
        unchecked = False
        if costs is not None:  # the same set (features included) priced by the given costs
            ls = dataclasses.replace(
                ls, costs=check_costs(costs, "costs"), exit_names=list(ls.exit_names),
                manifest=dict(ls.manifest),
            )
        elif not ls.manifest.get("key"):  # store entries were checked when they were stored
            unchecked = True
        check_costs(ls.costs, "costs of the logits" if costs is None else "costs")
        return ls, unchecked
    from eebench.store.logitstore import LogitStore
    from eebench.store.manifest import default_store_root

    text = str(source)
    store = LogitStore(default_store_root(store_root))
    if text.startswith(STORE_PREFIX):
        return load_source_unchecked(store.get(text[len(STORE_PREFIX):]), costs)
    path = Path(text).expanduser()
    if path.exists() and store.names().get(text):
        raise DataError(
            f"{text!r} is both a path on disk and the name of a store entry in {store.root}; "
            f"write ./{text} for the file or {STORE_PREFIX}{text} for the entry"
        )
    if path.suffix == ".npz" or path.exists():
        if path.is_dir():
            raise DataError(f"{path} is a folder; give an .npz file of logits and labels, or a store entry")
        if path.suffix != ".npz":
            raise DataError(f"{path}: expected an .npz file of logits and labels, or a store entry")
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (and no store entry is called {text!r})")
        from eebench.store.formats import load_npz_logits

        ls = load_npz_logits(path, costs=costs)
        check_costs(ls.costs, f"{path}: costs")
        return ls, False
    return load_source_unchecked(store.get(text), costs)
