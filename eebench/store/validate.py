"""What a per-exit cache may hold, checked where data enters eebench.

One NaN in a logit array silently moves most operating points of a curve (a
comparison with NaN is always false, so the sample never exits and its
accuracy counts as wrong), and all-NaN logits still give a plausible-looking
curve. Costs that decrease or are zero make every "speed-up" meaningless.
So values are checked at the door (import, extraction, store writes, the
``sweep`` and suite loaders), with a message that names the file, the array
and the first bad index, and the store only ever holds values that passed.
Reads of stored entries rely on checksums instead of re-scanning.

The scans work block by block, so checking a memory-mapped ImageNet-sized
array never holds more than one block in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eebench.errors import DataError

_BLOCK_BYTES = 32 << 20
#: Tolerance of |row sum - 1| for probability arrays, float32 and wider.
PROBABILITY_SUM_TOL = 1e-3


def check_values(values: Any, kind: str, where: str) -> None:
    """Fail unless ``values`` (N, K, C) are finite and, for ``kind="probabilities"``, lie in
    [0, 1] and sum to one over the classes of every (sample, exit).

    ``where`` names the array for the message (e.g. ``"'logits' in run.npz"``); indices
    in the message are (sample, exit, class) positions of the array as given.
    """
    arr = values
    if getattr(arr, "ndim", None) != 3:
        raise DataError(f"{where}: expected a 3-D array (samples, exits, classes)")
    n, k, c = (int(s) for s in arr.shape)
    if n == 0 or k == 0 or c == 0:
        raise DataError(f"{where}: the array is empty (shape {tuple(arr.shape)}); nothing to use")
    dtype = np.dtype(arr.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"{where}: dtype {dtype} is not floating point")
    sum_tol = max(PROBABILITY_SUM_TOL, 2 * c * float(np.finfo(dtype).eps))
    step = max(1, _BLOCK_BYTES // (k * c * dtype.itemsize))
    for s in range(0, n, step):
        block = np.asarray(arr[s : s + step])
        finite = np.isfinite(block)
        if not finite.all():
            i, e, j = (int(v) for v in np.argwhere(~finite)[0])
            bad = int((~finite).sum())
            raise DataError(
                f"{where}: {block[i, e, j]} at sample {s + i}, exit {e}, class {j} "
                f"({bad} non-finite value{'s' if bad > 1 else ''} in samples {s}..{s + len(block) - 1}"
                "); eebench refuses NaN and inf: fix or drop those samples before importing"
            )
        if kind != "probabilities":
            continue
        outside = (block < -1e-6) | (block > 1 + 1e-6)
        if outside.any():
            i, e, j = (int(v) for v in np.argwhere(outside)[0])
            raise DataError(
                f"{where}: value {float(block[i, e, j]):.6g} at sample {s + i}, exit {e}, class {j} "
                "is not a probability (outside [0, 1]); if these are logits, store them as logits"
            )
        sums = block.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1) > sum_tol
        if off.any():
            i, e = (int(v) for v in np.argwhere(off)[0])
            raise DataError(
                f"{where}: probabilities of sample {s + i} at exit {e} sum to {sums[i, e]:.6g}, "
                f"not 1 (tolerance {sum_tol:.1e}); store logits, or normalise each row"
            )


def check_features(values: Any, where: str) -> None:
    """Fail unless ``values`` is a non-empty 2-D (samples, features) floating array of finite
    numbers: one exit's pre-logit features, checked where logits are."""
    arr = values
    if getattr(arr, "ndim", None) != 2:
        raise DataError(f"{where}: expected a 2-D array (samples, features), got shape "
                        f"{tuple(getattr(arr, 'shape', ()))}")
    n, d = (int(s) for s in arr.shape)
    if d == 0:
        raise DataError(f"{where}: the features have width 0; nothing to use")
    dtype = np.dtype(arr.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"{where}: dtype {dtype} is not floating point")
    step = max(1, _BLOCK_BYTES // (d * dtype.itemsize))
    for s in range(0, n, step):
        block = np.asarray(arr[s : s + step])
        finite = np.isfinite(block)
        if not finite.all():
            i, j = (int(v) for v in np.argwhere(~finite)[0])
            raise DataError(
                f"{where}: {block[i, j]} at sample {s + i}, feature {j} "
                f"({int((~finite).sum())} non-finite in samples {s}..{s + len(block) - 1}); "
                "eebench refuses NaN and inf"
            )


def check_costs(costs: Any, where: str = "costs", *, allow_unknown: bool = False) -> np.ndarray:
    """The costs as float64 (K,), or a clear error unless they are finite, positive and
    cumulative (non-decreasing in exit order).

    ``allow_unknown`` accepts costs that are NaN at every exit: an extraction that was given
    no costs stores them so, and every use that needs costs asks for them then.
    """
    try:
        arr = np.asarray(costs, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected numbers, one cumulative cost per exit, got {costs!r}") from None
    if arr.size == 0:
        raise DataError(f"{where}: no costs given; give one cumulative cost per exit")
    nan = np.isnan(arr)
    if allow_unknown and nan.all():
        return arr
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        unknown = "; costs are unknown here, give them (e.g. --costs 1,2,3)" if nan.all() else ""
        raise DataError(f"{where}: cost of exit {i} is {arr[i]}, costs must be finite{unknown}")
    if (arr <= 0).any():
        i = int(np.flatnonzero(arr <= 0)[0])
        raise DataError(
            f"{where}: cost of exit {i} is {arr[i]:g}; costs must be positive (MACs, ms, ... "
            "a sample pays to reach that exit)"
        )
    if (np.diff(arr) < 0).any():
        i = int(np.flatnonzero(np.diff(arr) < 0)[0])
        raise DataError(
            f"{where}: cost decreases from exit {i} ({arr[i]:g}) to exit {i + 1} ({arr[i + 1]:g}); "
            "costs are cumulative: exit k's cost includes everything computed before it"
        )
    return arr


def check_budgets(budgets: Sequence[float] | None, where: str = "budgets") -> list[float] | None:
    """``budgets`` as a list of finite positive floats (None stays None), or a clear error."""
    if budgets is None:
        return None
    try:
        arr = np.asarray(list(budgets), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected numbers, got {budgets!r}") from None
    if arr.size == 0:
        raise DataError(f"{where}: the list is empty; give at least one target cost, or no budgets")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        i = int(np.flatnonzero(~np.isfinite(arr) | (arr <= 0))[0])
        raise DataError(f"{where}: budget {i} is {arr[i]}; budgets must be finite positive costs")
    return arr.tolist()
