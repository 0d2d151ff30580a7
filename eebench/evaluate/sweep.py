"""Split a LogitSet into validation and test, and run one policy sweep end to end.

``run_sweep`` is the API behind ``eebench sweep``: a cached-logit file or store
entry in, a budgeted-batch curve out. The split is always fixed by a seed or
an index file (DESIGN.md: thresholds are never fit on the test split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    positions, or an index file .npy/.txt/.csv). Both parts are ``ls.subset`` of
    their indices; the logits are read once, front to back (see :func:`subsets`).
    """
    check_logitset(ls, "the set to split")
    idx, test_idx = split_indices(ls.num_samples, val_fraction, seed, val_index)
    val, test = subsets(ls, [idx, test_idx])
    return val, test


def split_indices(
    n: int,
    val_fraction: float | None = None,
    seed: int = 0,
    val_index: str | Path | Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (validation, test) sample positions of ``split_logitset``."""
    from eebench.data.splits import SplitError, complement, load_index_file, seeded_split

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
        assert val_fraction is not None  # exactly one of the two is given (checked above)
        f = float(val_fraction)
        if not 0 < f < 1:
            raise SplitError(f"val_fraction must lie strictly between 0 and 1, got {f}")
        parts = seeded_split(n, {"val": f, "test": 1 - f}, seed)
        idx, test_idx = parts["val"], parts["test"]
    return idx, test_idx


# LogitSet fields that subsets() knows how to carry (``features`` only when None)
_KNOWN_FIELDS = {"logits", "labels", "costs", "exit_names", "ids", "kind", "manifest", "features"}
_SPLIT_BLOCK_BYTES = 1 << 24


def _streamable(ls: Any) -> bool:
    import dataclasses

    from eebench.store.logitset import LogitSet

    if not isinstance(ls, LogitSet) or getattr(ls, "features", None) is not None:
        return False
    names = {f.name for f in dataclasses.fields(ls)}
    return names <= _KNOWN_FIELDS and ls.logits.ndim == 3 and ls.logits.size > 0


def _page_releaser(arr: np.ndarray) -> Callable[[np.ndarray], None]:
    """A function that hands the pages of a block of a read-only memory map back to the
    kernel once the block has been copied: a sequential read of a file larger than memory
    then holds one block of it, not the whole file, in the resident set. The file's pages
    stay in the page cache; reading them again only maps them again. No-op for anything
    but a read-only (shared) numpy.memmap."""
    import mmap

    mm = getattr(arr, "_mmap", None)  # numpy.memmap keeps its mmap.mmap there
    if mm is None or getattr(arr, "mode", None) != "r" or not hasattr(mm, "madvise"):
        return lambda block: None
    try:
        view = np.frombuffer(mm, dtype=np.uint8)
        base, size = view.ctypes.data, view.size
        del view
    except (TypeError, ValueError, BufferError):
        return lambda block: None
    page = mmap.PAGESIZE

    def release(block: np.ndarray) -> None:
        lo = block.__array_interface__["data"][0] - base
        hi = lo + block.nbytes
        if lo < 0 or hi > size:
            return
        start, stop = (lo // page) * page, (hi // page) * page
        if stop > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
            except (OSError, ValueError):
                pass

    return release


def _finite_block(block: np.ndarray) -> bool:
    """True when every value of a float block is finite (float16 by its exponent bits)."""
    if block.dtype == np.float16:
        # inf/NaN have all exponent bits set: as int16 the positive ones are >= 0x7C00, as
        # uint16 the negative ones are >= 0xFC00 (two reductions, no temporary)
        bits = np.ascontiguousarray(block).view(np.uint16)
        return int(bits.view(np.int16).max()) < 0x7C00 and int(bits.max()) < 0xFC00
    return bool(np.isfinite(block.max()) and np.isfinite(block.min()))


def subsets(ls: LogitSet, parts: Sequence[np.ndarray], *, check: bool = False) -> list[LogitSet]:
    """``[ls.subset(idx) for idx in parts]`` for disjoint index arrays, reading ``ls.logits``
    once in order (a memory map is read sequentially and its pages are released behind
    the read, so the copies are the only full-size memory).

    ``check``: also refuse non-finite logits while reading (the check of ``load_source``,
    without a pass of its own). Sets with per-exit features (or fields this function does
    not know) go through ``ls.subset``.
    """
    from eebench.store.validate import check_values

    parts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in parts]
    fused = check and ls.kind == "logits" and np.issubdtype(ls.logits.dtype, np.floating)
    if check and not fused:
        check_values(ls.logits, ls.kind, f"the given {ls.kind}")
    if not _streamable(ls):
        if fused:
            check_values(ls.logits, ls.kind, f"the given {ls.kind}")
        return [ls.subset(p) for p in parts]
    n, k, c = ls.logits.shape
    owner = np.full(n, -1, dtype=np.int8 if len(parts) < 127 else np.int32)
    pos = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    outs = []
    for j, p in enumerate(parts):
        owner[p] = j
        pos[p] = np.arange(p.size, dtype=pos.dtype)
        outs.append(np.empty((p.size, k, c), dtype=ls.logits.dtype))
    ordered = [bool(p.size < 2 or (np.diff(p) > 0).all()) for p in parts]
    step = max(1, _SPLIT_BLOCK_BYTES // (k * c * ls.logits.dtype.itemsize))
    release = _page_releaser(ls.logits)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = np.asarray(ls.logits[start:stop])
        if fused and not _finite_block(block):
            check_values(ls.logits, ls.kind, f"the given {ls.kind}")  # says where
            raise DataError("the given logits hold NaN or inf; eebench refuses them")
        own = owner[start:stop]
        for j, out in enumerate(outs):
            rows = np.flatnonzero(own == j)
            if rows.size == 0:
                continue
            at = pos[start + rows]
            if ordered[j]:  # sorted indices: the rows land in one contiguous run
                np.take(block, rows, axis=0, out=out[at[0] : at[0] + rows.size], mode="clip")
            else:
                out[at] = block[rows]
        release(block)
        del block
    return [ls.subset(p, logits=out) for p, out in zip(parts, outs)]


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
    ls, unchecked = _load_source(source, costs, store_root)
    if unchecked:
        from eebench.store.validate import check_values

        check_values(ls.logits, ls.kind, f"the given {ls.kind}")
    return ls


def _load_source(
    source: str | Path | LogitSet,
    costs: Sequence[float] | None = None,
    store_root: str | Path | None = None,
) -> tuple[LogitSet, bool]:
    """``load_source`` without the value check of a given LogitSet: (set, still unchecked),
    so that run_sweep can check while it splits instead of reading the logits twice."""
    import dataclasses

    from eebench.store.logitset import LogitSet
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
    from eebench.store import LogitStore, default_store_root

    text = str(source)
    store = LogitStore(default_store_root(store_root))
    if text.startswith(STORE_PREFIX):
        return _load_source(store.get(text[len(STORE_PREFIX):]), costs)
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
    return _load_source(store.get(text), costs)


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
    fit_source: str | Path | LogitSet | None = None,
    tune_on_test: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Load, split (``val_fraction=0.5`` by ``seed`` when neither split option is given),
    fit ``make_policy(score, solver, grid=..., budgets=..., calibration=...)`` on
    validation and return its budgeted_curve on test.

    ``seed`` seeds both the split and the policy (GA, random). Extra keyword
    options go to make_policy (e.g. ``population=``, ``generations=`` for ga).
    ``fit_source`` fits on another source's outputs (training images, as DVT and Dynamic
    Perceiver do) and tests on the whole ``source``; ``tune_on_test`` fits and tests on the
    whole ``source`` (CF-ViT's protocol). The curve's ``fit_on`` column says which.
    """
    from eebench.evaluate.curves import budgeted_curve
    from eebench.policies.factory import make_policy

    given = [n for n, v in (("val_fraction", val_fraction), ("val_index", val_index),
                            ("fit_source", fit_source), ("tune_on_test", tune_on_test)) if v]
    if len(given) > 1:
        raise ValueError(f"give at most one of val_fraction, val_index, fit_source, "
                         f"tune_on_test (got {', '.join(given)})")
    ls, unchecked = _load_source(source, costs, store_root)
    check_logitset(ls, "the set to split")
    if fit_source is not None or tune_on_test:
        (test,) = subsets(ls, [np.arange(ls.num_samples)], check=unchecked)
        fit_on = FIT_ON["test"] if tune_on_test else f"another source: {fit_source}"
        val = test if fit_source is None or tune_on_test else _fit_set(fit_source, test, store_root)
    else:
        if val_fraction is None and val_index is None:
            val_fraction = 0.5
        parts = split_indices(ls.num_samples, val_fraction, seed, val_index)
        val, test = subsets(ls, parts, check=unchecked)  # one read: checks and splits
        fit_on = FIT_ON["val"]
    del ls
    policy = make_policy(
        score, solver, grid=grid, budgets=budgets, calibration=calibration, seed=seed, **options
    )
    curve = budgeted_curve(policy, val, test)
    curve["fit_on"] = fit_on
    return curve


FIT_ON = {
    "val": "validation split",
    "train": "training split",
    "test": "test set (tuned on the test set: no held-out split)",
}
"""What a curve's ``fit_on`` column says for each source of the fitting outputs."""


def _fit_set(source: str | Path | LogitSet, test: LogitSet,
             store_root: str | Path | None) -> LogitSet:
    """Another source's outputs, with the test set's costs, checked to be of the same model."""
    ls, unchecked = _load_source(source, list(test.costs), store_root)
    if ls.logits.shape[1:] != test.logits.shape[1:]:
        raise DataError(
            f"the fitting source {source} has {ls.num_exits} exits x {ls.num_classes} classes "
            f"but the test source has {test.num_exits} x {test.num_classes}; both must be "
            "outputs of the same model"
        )
    (fit,) = subsets(ls, [np.arange(ls.num_samples)], check=unchecked)
    return fit
