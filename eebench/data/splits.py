"""Deterministic train / validation / test splits.

Exit thresholds fit on the test split, or on an unseeded subset, make
budgeted-batch numbers unrepeatable and optimistic (FIELD-NOTES section 2).
Every split here comes from a seed or from an index file the user supplies,
and validation never overlaps test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eebench.errors import EebenchError

#: Fractions for data sets without an official split.
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
#: Validation samples carved from an official training set (MSDNet: 5000 for CIFAR).
DEFAULT_VAL_SIZE = 5000


class SplitError(EebenchError, ValueError):
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
    """Read a ``.npy`` / ``.txt`` / ``.csv`` / ``.pt`` of sample indices and check them against ``n``.

    ``.pt`` / ``.pth`` files hold one integer tensor (as MSDNet's ``index.pth``); they are read
    with ``torch.load(weights_only=True)``, importing torch only then.
    """
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"index file {path} does not exist")
    if path.suffix == ".npy":
        idx = np.load(path, allow_pickle=False)
    elif path.suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, torch.Tensor):
            raise SplitError(
                f"index file {path} holds a {type(obj).__name__}; expected one integer tensor"
            )
        idx = obj.numpy()
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


def index_sha256(idx: Sequence[int] | np.ndarray) -> str:
    """Hash of an index list (as little-endian int64, in its order): the split's identity."""
    arr = np.ascontiguousarray(np.asarray(idx, dtype="<i8").reshape(-1))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def make_split_indices(
    n: int,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    index_files: Mapping[str, str | Path] | None = None,
    official: Mapping[str, np.ndarray] | None = None,
    val_size: int | float | None = None,
) -> dict[str, np.ndarray]:
    """Indices of every named split of ``n`` samples, disjoint and reproducible.

    Without an ``official`` split, the named ``fractions`` (default
    :data:`DEFAULT_FRACTIONS`) are drawn with :func:`seeded_split`. Splits named in
    ``index_files`` take their indices from those files instead; the remaining named
    splits share the samples no file claims (one split takes them all; several divide
    them by their fractions, seeded).

    With an ``official`` split (a ``train`` and a ``test`` index array, as CIFAR has),
    ``test`` is the official test set and ``val`` is carved from the official train
    set as MSDNet does: the last ``val_size`` entries (default 5000; a float is a
    fraction of train) of a seeded permutation of train, or the indices of
    ``index_files["val"]``, which must lie inside the official train set. ``train`` is
    the rest of the official train set.
    """
    if index_files:
        index_files = dict(index_files)
    if official is not None:
        return _official_split(n, seed, official, index_files, val_size, fractions)
    fractions = dict(fractions) if fractions else dict(DEFAULT_FRACTIONS)
    if not index_files:
        out = seeded_split(n, fractions, seed)
    else:
        unknown = [k for k in index_files if k not in fractions]
        if unknown:
            fractions.update({k: 0.0 for k in unknown})
        out = {name: load_index_file(path, n) for name, path in index_files.items()}
        check_disjoint(out)
        rest_names = [k for k in fractions if k not in out]
        if rest_names:
            pool = complement(n, np.concatenate(list(out.values())))
            if pool.size == 0:
                raise SplitError(
                    f"index files {sorted(out)} claim all {n} samples; nothing is left for "
                    f"{rest_names}; name fewer splits or give smaller index files"
                )
            if len(rest_names) == 1:
                out[rest_names[0]] = pool
            else:
                total = sum(fractions[k] for k in rest_names)
                sub = seeded_split(pool.size, {k: fractions[k] / total for k in rest_names}, seed)
                out.update({k: pool[v] for k, v in sub.items()})
        out = {k: out[k] for k in fractions if k in out}
    check_disjoint(out)
    return out


def _official_split(
    n: int,
    seed: int,
    official: Mapping[str, np.ndarray],
    index_files: Mapping[str, str | Path] | None,
    val_size: int | float | None,
    fractions: Mapping[str, float] | None,
) -> dict[str, np.ndarray]:
    if "train" not in official or "test" not in official:
        raise SplitError(f"an official split needs 'train' and 'test', got {sorted(official)}")
    if fractions:
        raise SplitError(
            "this data set has an official train/test split; fractions do not apply. "
            "Choose the validation size with val_size= (samples, or a fraction of train) "
            "or give index_files={'val': ...}"
        )
    bad = [k for k in (index_files or {}) if k != "val"]
    if bad:
        raise SplitError(
            f"this data set has an official train/test split; only a 'val' index file can be "
            f"given, not {bad}"
        )
    train = np.asarray(official["train"], dtype=np.int64)
    test = np.asarray(official["test"], dtype=np.int64)
    if index_files and "val" in index_files:
        val = load_index_file(index_files["val"], n)
        outside = np.setdiff1d(val, train)
        if outside.size:
            raise SplitError(
                f"validation index file {index_files['val']} has {outside.size} indices outside "
                f"the official train set (first: {outside[:5].tolist()}); validation must come "
                "from train, never from test"
            )
    else:
        size = DEFAULT_VAL_SIZE if val_size is None else val_size
        if isinstance(size, float) and not isinstance(size, bool):
            if not 0 < size < 1:
                raise SplitError(f"val_size as a fraction must lie in (0, 1), got {size}")
            size = int(round(size * train.size))
        size = int(size)
        if not 0 < size < train.size:
            raise SplitError(
                f"val_size {size} must lie in [1, {train.size - 1}] for {train.size} "
                "official training samples"
            )
        perm = np.random.default_rng(seed).permutation(train.size)
        val = np.sort(train[perm[-size:]])
    out = {"train": np.setdiff1d(train, val), "val": val, "test": np.sort(test)}
    check_disjoint(out)
    return out
