"""Split a LogitSet into validation and test, and run one policy sweep end to end.

``run_sweep`` is the API behind ``eebench sweep``: a cached-logit file or store
entry in, a budgeted-batch curve out. The split is always fixed by a seed or
an index file (DESIGN.md: thresholds are never fit on the test split).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import DataError
from eebench.policies.policy import check_logitset

#: Prefix that makes a source reference mean a logit-store entry, never a file.
STORE_PREFIX = "store:"

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet


def split_logitset(
    ls: LogitSet,
    val_fraction: float | None = None,
    seed: int = 0,
    val_index: str | Path | Sequence[int] | np.ndarray | None = None,
) -> tuple[LogitSet, LogitSet]:
    """(validation, test): a seeded random fraction, or the given validation indices and the rest.

    Give exactly one of ``val_fraction`` (in (0, 1); split by
    eebench.data.splits.seeded_split with ``seed``) and ``val_index`` (sample
    positions, or an index file .npy/.txt/.csv).
    """
    from eebench.data.splits import SplitError, complement, load_index_file, seeded_split

    check_logitset(ls, "the set to split")
    n = ls.num_samples
    if (val_fraction is None) == (val_index is None):
        raise ValueError(
            "give exactly one of val_fraction (e.g. 0.5, split by seed) and val_index "
            "(validation sample indices or an index file)"
        )
    if val_index is not None:
        if isinstance(val_index, (str, Path)):
            idx = load_index_file(val_index, n)
        else:
            idx = np.asarray(val_index).reshape(-1)
            if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
                raise SplitError(f"val_index must be non-empty integer positions, got {idx.dtype}")
            if idx.min() < 0 or idx.max() >= n:
                raise SplitError(f"val_index has indices outside [0, {n - 1}]")
            if np.unique(idx).size != idx.size:
                raise SplitError("val_index repeats some indices")
            idx = np.sort(idx.astype(np.int64))
        test_idx = complement(n, idx)
        if test_idx.size == 0:
            raise SplitError("val_index covers every sample: nothing is left for the test split")
    else:
        f = float(val_fraction)  # type: ignore[arg-type]
        if not 0 < f < 1:
            raise SplitError(f"val_fraction must lie strictly between 0 and 1, got {f}")
        parts = seeded_split(n, {"val": f, "test": 1 - f}, seed)
        idx, test_idx = parts["val"], parts["test"]
    return ls.subset(idx), ls.subset(test_idx)


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
    from eebench.store.logitset import LogitSet
    from eebench.store.validate import check_costs, check_values

    if isinstance(source, LogitSet):
        ls = source
        if costs is not None:
            ls = LogitSet(
                ls.logits, ls.labels, check_costs(costs, "costs"), list(ls.exit_names),
                ls.ids, ls.kind, dict(ls.manifest),
            )
        elif not ls.manifest.get("key"):  # store entries were checked when they were stored
            check_values(ls.logits, ls.kind, f"the given {ls.kind}")
        check_costs(ls.costs, "costs of the logits" if costs is None else "costs")
        return ls
    from eebench.store import LogitStore, default_store_root

    text = str(source)
    store = LogitStore(default_store_root(store_root))
    if text.startswith(STORE_PREFIX):
        return load_source(store.get(text[len(STORE_PREFIX):]), costs)
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
        return ls
    return load_source(store.get(text), costs)


def run_sweep(
    source: str | Path | LogitSet,
    *,
    costs: Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    val_index: str | Path | Sequence[int] | None = None,
    score: str = "confidence",
    solver: str = "geometric",
    grid: str | Sequence[float] | None = None,
    budgets: Sequence[float] | None = None,
    calibration: str | None = None,
    store_root: str | Path | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Load, split (``val_fraction=0.5`` by ``seed`` when neither split option is given),
    fit ``make_policy(score, solver, grid=..., budgets=..., calibration=...)`` on
    validation and return its budgeted_curve on test.

    ``seed`` seeds both the split and the policy (GA, random). Extra keyword
    options go to make_policy (e.g. ``population=``, ``generations=`` for ga).
    """
    from eebench.evaluate.curves import budgeted_curve
    from eebench.policies.factory import make_policy

    ls = load_source(source, costs, store_root)
    if val_fraction is None and val_index is None:
        val_fraction = 0.5
    val, test = split_logitset(ls, val_fraction=val_fraction, seed=seed, val_index=val_index)
    policy = make_policy(
        score, solver, grid=grid, budgets=budgets, calibration=calibration, seed=seed, **options
    )
    return budgeted_curve(policy, val, test)
