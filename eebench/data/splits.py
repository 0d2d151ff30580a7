"""Deterministic train / validation / test splits.

Exit thresholds fit on the test split, or on an unseeded subset, make
budgeted-batch numbers unrepeatable and optimistic (FIELD-NOTES section 2).
Every split here comes from a seed or from an index file the user supplies,
and validation never overlaps test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


class SplitError(ValueError):
    """A split request that cannot be honoured."""


def seeded_split(
    n: int, fractions: Mapping[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split ``range(n)`` into disjoint, sorted index arrays of the given fractions.

    Fractions must be positive and sum to at most 1; the last named split gets
    the rounding remainder when they sum to 1. The same (n, fractions, seed)
    always gives the same indices.
    """
    if n <= 0:
        raise SplitError(f"cannot split {n} samples")
    items = list(fractions.items())
    total = sum(f for _, f in items)
    if any(f <= 0 for _, f in items) or total > 1 + 1e-9:
        raise SplitError(
            f"split fractions must be positive and sum to at most 1, got {dict(fractions)}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, np.ndarray] = {}
    start = 0
    for i, (name, frac) in enumerate(items):
        stop = n if (i == len(items) - 1 and abs(total - 1) < 1e-9) else start + int(round(frac * n))
        stop = min(stop, n)
        if stop <= start:
            raise SplitError(
                f"split {name!r} ({frac:g} of {n} samples) would be empty; use a larger fraction"
            )
        out[name] = np.sort(perm[start:stop])
        start = stop
    return out


def load_index_file(path: str | Path, n: int) -> np.ndarray:
    """Read a ``.npy`` / ``.txt`` / ``.csv`` of sample indices and check them against ``n``."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"index file {path} does not exist")
    if path.suffix == ".npy":
        idx = np.load(path, allow_pickle=False)
    else:
        idx = np.loadtxt(path, dtype=np.int64, delimiter="," if path.suffix == ".csv" else None)
    idx = np.asarray(idx).reshape(-1)
    if not np.issubdtype(idx.dtype, np.integer):
        raise SplitError(f"index file {path} must hold integer sample indices, got {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size == 0:
        raise SplitError(f"index file {path} is empty")
    if idx.min() < 0 or idx.max() >= n:
        raise SplitError(
            f"index file {path} has indices in [{idx.min()}, {idx.max()}], "
            f"outside the {n} samples [0, {n - 1}]"
        )
    if np.unique(idx).size != idx.size:
        raise SplitError(f"index file {path} repeats some indices")
    return np.sort(idx)


def complement(n: int, idx: Sequence[int] | np.ndarray) -> np.ndarray:
    """Indices of ``range(n)`` not in ``idx`` (the test split beside a validation index)."""
    mask = np.ones(n, dtype=bool)
    mask[np.asarray(idx, dtype=np.int64)] = False
    return np.flatnonzero(mask)


def check_disjoint(splits: Mapping[str, np.ndarray]) -> None:
    """Fail if any two splits share a sample."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = np.intersect1d(splits[a], splits[b])
            if shared.size:
                raise SplitError(
                    f"splits {a!r} and {b!r} share {shared.size} samples (first: {shared[:5].tolist()})"
                )
