"""Split a LogitSet into validation and test parts, reading its logits once.

The split is always fixed by a seed or an index file (DESIGN.md: thresholds are
never fit on the test split). ``subsets`` cuts any number of disjoint parts in one
sequential pass, so a memory-mapped set larger than memory is split without holding it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eebench.errors import DataError, InputError
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
    from eebench.store.logitset import check_logitset

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
        raise InputError(
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

    ``check``: also refuse non-finite logits while reading (the check of
    eebench.store.sources.load_source, without a pass of its own). Sets with per-exit
    features (or fields this function does not know) go through ``ls.subset``.
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
