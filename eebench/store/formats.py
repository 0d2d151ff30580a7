"""Import and export of other tools' logit caches.

Most published early-exit results exist only as someone's cached outputs: a
numpy archive of per-exit logits, or MSDNet's ``logits_single.pth`` of
softmax probabilities. Importing them into the store puts them on the same
footing as our own extractions (same checks, same policies, same reports),
keyed by the source file's bytes so a re-import finds the same entry.

An ImageNet-sized cache is hundreds of megabytes, so .npz import and export
stream: values pass through in blocks of a fixed size (read, checked, cast,
written and hashed on the way), and memory stays at about one block whatever
the file's size.

torch is imported only to read ``.pth`` files.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import re
import struct
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eebench.errors import DataError, InputError
from eebench.store.logitset import KINDS, LogitSet
from eebench.store.logitstore import (
    LOGIT_DTYPES,
    EntryExistsError,
    LogitStore,
    StoreError,
    atomic_file,
    cast_logits,
    check_logit_dtype,
    file_sha256,
    identity_key,
)
from eebench.store.validate import _BLOCK_BYTES as _CHECK_BLOCK_BYTES
from eebench.store.validate import check_costs, check_values

LAYOUTS = ("auto", "knc", "nkc")
#: Bytes of values an import or export holds in memory at a time (one block of samples).
BLOCK_BYTES = 64 << 20
# Granularity of reads, casts and hashing inside a block.
_PIECE_BYTES = 4 << 20


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if not p.is_file():
        raise StoreError(f"{p} is not a file")
    return p


def _integer_labels(labels: Any, what: str) -> np.ndarray:
    arr = np.asarray(labels).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0):
            raise StoreError(f"{what} must be integer class indices, got {arr[:5]} ({arr.dtype})")
    return arr.astype(np.int64)


def _costs_list(costs: Sequence[float] | np.ndarray | None, where: str = "costs") -> list[float] | None:
    if costs is None:
        return None
    return check_costs(costs, where).tolist()


def resolve_layout(shape: tuple[int, ...], num_labels: int, layout: str = "auto") -> str:
    """Which axis order ("knc" or "nkc") a 3-D logits array of ``shape`` has."""
    if layout not in LAYOUTS:
        raise StoreError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if len(shape) != 3:
        raise StoreError(
            f"logits must be 3-D, (exits, samples, classes) or (samples, exits, classes); "
            f"got shape {tuple(shape)}"
        )
    a, b, _ = shape
    if layout == "knc":
        if b != num_labels:
            raise StoreError(
                f"layout 'knc' means (exits, samples, classes), but axis 1 has {b} entries "
                f"and there are {num_labels} labels; try layout 'nkc'"
            )
        return "knc"
    if layout == "nkc":
        if a != num_labels:
            raise StoreError(
                f"layout 'nkc' means (samples, exits, classes), but axis 0 has {a} entries "
                f"and there are {num_labels} labels; try layout 'knc'"
            )
        return "nkc"
    if a == num_labels and b == num_labels:
        raise StoreError(
            f"cannot tell the axis order of logits {tuple(shape)} with {num_labels} labels "
            "(as many exits as samples); pass layout 'knc' (exits, samples, classes) or 'nkc'"
        )
    if b == num_labels:
        return "knc"
    if a == num_labels:
        return "nkc"
    raise StoreError(
        f"logits {tuple(shape)} do not match {num_labels} labels on axis 0 or 1; "
        "logits must be (exits, samples, classes) or (samples, exits, classes)"
    )


@dataclass
class _Archive:
    """An .npz's members besides the values, and the values' .npy header (or the values)."""

    path: Path
    kind: str
    member: zipfile.ZipInfo
    header: _NpyHeader
    values: np.ndarray | None
    labels: np.ndarray
    declared: str | None
    file_costs: np.ndarray | None
    ids: np.ndarray | None
    exit_names: list[str]

    @property
    def where(self) -> str:
        """How value messages name the array (the same for every reader)."""
        return f"{self.path}: '{self.kind}'"


@dataclass(frozen=True)
class _NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # bytes of the .npy header: the data starts here


def _read_npy_header(f: Any) -> _NpyHeader:
    """The header of an .npy stream, leaving ``f`` at the first data byte."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise StoreError(f".npy format version {version[0]}.{version[1]} is not read here; "
                         "save the array with numpy's default format")
    if dtype.hasobject:
        raise InputError("Object arrays cannot be loaded when allow_pickle=False")
    return _NpyHeader(np.dtype(dtype), tuple(int(s) for s in shape), bool(fortran), f.tell())


def _npy_header_bytes(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header np.save and np.lib.format.open_memmap write for a C-ordered array."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
         "shape": tuple(int(s) for s in shape)}
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # a header too long for format 1.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _open_archive(p: Path, *, load_values: bool) -> _Archive:
    """Read an .npz's small members and either its values or only their .npy header."""
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{p} cannot be read as an .npz archive: {exc}") from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise StoreError(f"{p} holds a single array; expected an .npz with 'logits' and 'labels'")
    with z:
        files = set(z.files)
        try:
            if "logits" in files and "probabilities" in files:
                raise StoreError(f"{p} has both 'logits' and 'probabilities'; keep one")
            if "logits" in files:
                kind = "logits"
            elif "probabilities" in files:
                kind = "probabilities"
            else:
                raise StoreError(
                    f"{p} has no 'logits' array (it has {sorted(files)}); "
                    "save per-exit logits as 'logits'"
                )
            assert z.zip is not None  # the archive is open inside this with block
            names = set(z.zip.namelist())
            member = z.zip.getinfo(kind if kind in names else f"{kind}.npy")
            with z.zip.open(member) as f:
                if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    raise StoreError(f"'{kind}' in {p} is not an .npy array; save it with np.savez")
                f.seek(0)
                header = _read_npy_header(f)
            values = z[kind] if load_values else None
            label_key = "labels" if "labels" in files else "targets" if "targets" in files else None
            if label_key is None:
                raise StoreError(f"{p} has no 'labels' array (it has {sorted(files)})")
            labels = _integer_labels(z[label_key], f"'{label_key}' in {p}")
            if "kind" in files:
                kind = str(z["kind"])
                if kind not in KINDS:
                    raise StoreError(f"'kind' in {p} is {kind!r}; expected one of {KINDS}")
            declared = str(z["layout"]) if "layout" in files else None
            file_costs = z["costs"] if "costs" in files else None
            ids = z["ids"] if "ids" in files else None
            exit_names = [str(s) for s in z["exit_names"]] if "exit_names" in files else []
        except ValueError as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{p}: {exc} (object arrays are not read; save plain arrays)") from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            raise StoreError(f"{p} cannot be read as an .npz archive: {exc}") from exc
    return _Archive(p, kind, member, header, values, labels, declared, file_costs, ids, exit_names)


def _resolve(arch: _Archive, layout: str) -> str:
    """Check the values' dtype and find their axis order (a declared order counts for "auto")."""
    if not np.issubdtype(arch.header.dtype, np.floating):
        raise StoreError(
            f"logits in {arch.path} have dtype {arch.header.dtype}; expected floating point"
        )
    if layout == "auto" and arch.declared in ("knc", "nkc"):
        layout = arch.declared
    return resolve_layout(arch.header.shape, arch.labels.shape[0], layout)


def _logitset(arch: _Archive, values: np.ndarray, costs: Sequence[float] | np.ndarray | None,
              resolved: str) -> LogitSet:
    """The LogitSet of ``values`` (N, K, C) with the archive's labels, ids, names and costs."""
    file_costs = arch.file_costs
    if costs is None:
        if file_costs is None:
            raise StoreError(
                f"{arch.path} has no 'costs' array; give the cumulative cost of each of the "
                f"{values.shape[1]} exits (e.g. costs=[1, 2, ...] or --costs 1,2,...)"
            )
        costs = file_costs
    where = f"{arch.path}: costs" if costs is file_costs else "costs"
    return LogitSet(
        logits=values,
        labels=arch.labels,
        costs=np.asarray(_costs_list(costs, where)),
        exit_names=arch.exit_names,
        ids=arch.ids,
        kind=arch.kind,
        manifest={"source": str(arch.path.resolve()), "source_format": "npz", "layout": resolved},
    )


def load_npz_logits(
    path: str | os.PathLike[str],
    costs: Sequence[float] | np.ndarray | None = None,
    layout: str = "auto",
) -> LogitSet:
    """Read an .npz of per-exit logits as a LogitSet (in memory).

    The archive holds ``logits`` (or ``probabilities``), 3-D in either axis
    order, and ``labels``; optionally ``costs``, ``ids``, ``exit_names``,
    ``kind`` and ``layout`` (an order the file declares is used when ``layout``
    is "auto"). ``costs`` given here override the file's. ``import_npz`` reads
    the same files without holding them in memory.
    """
    arch = _open_archive(_check_file(path), load_values=True)
    values = arch.values
    assert values is not None
    resolved = _resolve(arch, layout)
    if resolved == "knc":
        values = np.ascontiguousarray(np.swapaxes(values, 0, 1))
    check_values(values, arch.kind, arch.where)
    return _logitset(arch, values, costs, resolved)


def _import(store: LogitStore, ls: LogitSet, identity: dict[str, Any], name: str | None,
            overwrite: bool) -> str:
    """Put unless the same import is already there.

    An existing entry of the same file and costs is returned; it takes ``name`` if it has
    none, and keeps the name it has otherwise (the call then fails and says so). When
    several processes import at once, one commits and the others find its entry.
    """
    key = identity_key(identity)
    if not (store.has_key(key) and not overwrite):
        try:
            return store.put(ls, identity, name=name, overwrite=overwrite)
        except EntryExistsError:
            if not store.has_key(key) or overwrite:
                raise  # the name belongs to another entry
    if name is not None:
        store.rename(key, name, replace=False)
    return key


# ---------------------------------------------------------------- streaming import


class _AlreadyStored(Exception):
    """Raised inside a streaming import once its identity turns out to be in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Stopped(Exception):
    """The source hash was told to stop (the import failed or ended early)."""


def _hash_source(path: Path, crc_span: tuple[int, int] | None,
                 stop: threading.Event) -> tuple[str, int | None]:
    """sha256 of the whole file and, for a stored member, CRC-32 of its bytes ``crc_span``
    (start, length): one sequential read, run beside the import (hashlib and zlib release
    the GIL, so the two overlap on a multi-core machine)."""
    sha = hashlib.sha256()
    crc = 0
    lo, hi = (crc_span[0], crc_span[0] + crc_span[1]) if crc_span else (0, 0)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pos = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if stop.is_set():
                raise _Stopped
            sha.update(view[:n])
            a, b = max(lo, pos), min(hi, pos + n)
            if a < b:
                crc = zlib.crc32(view[a - pos : b - pos], crc)
            pos += n
    return sha.hexdigest(), (crc if crc_span else None)


class _MemberReader:
    """The data of the values' .npy member, read into the caller's buffers.

    A stored member (``np.savez``) is read straight from the file, at any offset; its
    CRC-32 is checked against the sequential pass of ``_hash_source`` (``crc_span``). A
    compressed member (``np.savez_compressed``) can only be read in order; zipfile checks
    its CRC-32 when ``finish`` reads it to the end.
    """

    def __init__(self, arch: _Archive) -> None:
        self.where = arch.where
        info = arch.member
        self.stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1
        self.crc_span: tuple[int, int] | None = None
        self._pos = 0
        self._file = open(arch.path, "rb", buffering=0)  # noqa: SIM115 (closed in close())
        self._zip: zipfile.ZipFile | None = None
        self._stream: Any = None
        need = int(np.prod(arch.header.shape)) * arch.header.dtype.itemsize
        have = info.file_size - arch.header.offset
        try:
            if have < need:
                raise StoreError(
                    f"{self.where} holds {have} bytes of data, but its .npy header promises "
                    f"{need} ({arch.header.dtype} {arch.header.shape}); the archive is "
                    "truncated or damaged"
                )
            if self.stored:  # the local header (30 bytes, then name and extra field)
                self._file.seek(info.header_offset)
                local = self._file.read(30)
                if len(local) != 30 or local[:4] != b"PK\x03\x04":
                    raise StoreError(f"{self.where}: its zip entry is damaged")
                name_len, extra_len = struct.unpack("<2H", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                self.crc_span = (start, info.compress_size)
                self._base = start + arch.header.offset
                self._end = start + info.file_size
            else:
                self._zip = zipfile.ZipFile(self._file)
                self._stream = self._zip.open(info)
                self._stream.read(arch.header.offset)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            self.close()
            raise self._damaged(exc) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for f in (self._stream, self._zip, self._file):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()

    def _damaged(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.where} cannot be read ({exc}); the archive is damaged")

    def _short(self, got: int, need: int) -> StoreError:
        return StoreError(
            f"{self.where} ends {need - got} bytes early; the archive is truncated or damaged"
        )

    def read_at(self, out: np.ndarray, pos: int) -> None:
        """Fill ``out`` with the data bytes from ``pos`` on (stored members only)."""
        # ``.data`` is the array's buffer as a memoryview (numpy's type stubs declare
        # ndarray's buffer protocol for Python >= 3.12 only); the same below
        view = out.reshape(-1).view(np.uint8).data
        need = len(view)
        if self._base + pos + need > self._end:
            raise self._short(max(0, self._end - self._base - pos), need)
        self._file.seek(self._base + pos)
        got = 0
        while got < need:
            n = self._file.readinto(view[got:])
            if not n:
                raise self._short(got, need)
            got += n

    def read_next(self, out: np.ndarray) -> None:
        """Fill ``out`` with the next data bytes, in order."""
        if self.stored:
            self.read_at(out, self._pos)
            self._pos += out.nbytes
            return
        view = out.reshape(-1).view(np.uint8).data
        got, need = 0, len(view)
        try:
            while got < need:
                data = self._stream.read(min(_PIECE_BYTES, need - got))
                if not data:
                    raise self._short(got, need)
                view[got : got + len(data)] = data
                got += len(data)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._damaged(exc) from exc

    def finish(self) -> None:
        """Read a compressed member to its end, so that zipfile checks its CRC-32."""
        if self._stream is None:
            return
        try:
            while self._stream.read(_PIECE_BYTES):
                pass
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise self._damaged(exc) from exc


# unsigned type, mask without the sign, exponent bits of IEEE binary16/32/64
_FLOAT_BITS: dict[int, tuple[type[np.unsignedinteger], int, int]] = {
    2: (np.uint16, 0x7FFF, 0x7C00),
    4: (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
    8: (np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
}


def _surely_finite(block: np.ndarray) -> bool:
    """True when a bit test proves every value of ``block`` finite (a float is NaN or inf
    exactly when its exponent bits are all set): a few times faster than ``np.isfinite``
    on float16. False when there is a non-finite value, or the dtype is not a native
    float16/32/64; ``check_values`` then decides and words the message."""
    dt = block.dtype
    if dt.kind != "f" or not dt.isnative or dt.itemsize not in _FLOAT_BITS:
        return False
    if not block.flags.c_contiguous:
        return False
    utype, magnitude, exponent = _FLOAT_BITS[dt.itemsize]
    bits = block.reshape(-1).view(utype)
    tmp = np.empty(max(1, min(bits.size, (1 << 20) // dt.itemsize)), dtype=utype)
    for s in range(0, bits.size, tmp.size):
        part = bits[s : s + tmp.size]
        masked = np.bitwise_and(part, utype(magnitude), out=tmp[: part.size])
        if masked.max() >= exponent:
            return False
    return True


# the indices in check_values's messages
_NUMBER_AFTER = {
    "samples": re.compile(r"\bsamples (\d+)\.\.(\d+)"),
    "sample": re.compile(r"\bsample (\d+)"),
    "exit": re.compile(r"\bexit (\d+)"),
}


def _check_block(block: np.ndarray, kind: str, where: str, first_sample: int,
                 exit_index: int | None = None) -> None:
    """``check_values`` on a block of rows that starts at sample ``first_sample`` (and, for
    a (rows, 1, C) block of one exit, holds exit ``exit_index``), with the indices in its
    message counted in the whole (N, K, C) array.

    Of logits ``check_values`` asks only that they be finite, so a block of logits that
    ``_surely_finite`` clears needs no more.
    """
    if kind == "logits" and _surely_finite(block):
        return
    try:
        check_values(block, kind, where)
    except DataError as exc:
        msg = str(exc)
        if not msg.startswith(where) or (first_sample == 0 and not exit_index):
            raise
        tail = msg[len(where):]
        tail = _NUMBER_AFTER["samples"].sub(
            lambda m: f"samples {int(m[1]) + first_sample}..{int(m[2]) + first_sample}", tail)
        tail = _NUMBER_AFTER["sample"].sub(lambda m: f"sample {int(m[1]) + first_sample}", tail)
        if exit_index:
            tail = _NUMBER_AFTER["exit"].sub(lambda m: f"exit {int(m[1]) + exit_index}", tail)
        raise DataError(where + tail) from None


def _rows_per_block(n: int, row_bytes: int, block_bytes: int) -> int:
    """Rows of one block: ``block_bytes`` worth, and a multiple of check_values's own scan
    step when a block holds several, so that its messages read as for the whole array."""
    rows = max(1, block_bytes // max(1, row_bytes))
    step = max(1, _CHECK_BLOCK_BYTES // max(1, row_bytes))
    if rows >= step:
        rows -= rows % step
    return min(rows, n)


def _writeback_starter() -> Callable[[int, int, int], None]:
    """``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)`` where Linux has it, else
    nothing: the kernel starts writing each block to disk as soon as it is in the page cache,
    so the closing fsync has little left to wait for. Best effort; fsync still decides."""
    if sys.platform.startswith("linux"):
        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (OSError, AttributeError):
            fn = None
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int

            def start(fd: int, offset: int, length: int) -> None:
                fn(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE

            return start
    return lambda fd, offset, length: None


_start_writeback = _writeback_starter()


class _Sink:
    """logits.npy being written front to back: one thread writes each block, another hashes
    it, while the caller reads and checks the next block (file I/O, hashlib and numpy
    release the GIL). A block's buffer may be reused once its futures are done."""

    def __init__(self, path: Path, header: bytes) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._fd = self._file.fileno()
        self._offset = 0
        self._sha = hashlib.sha256()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="eebench-write")
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="eebench-sha256")
        self._write(header)
        self._sha.update(header)

    def _write(self, data: Any) -> None:
        self._file.write(data)
        self._file.flush()
        n = memoryview(data).nbytes
        _start_writeback(self._fd, self._offset, n)
        self._offset += n

    def _write_cast(self, rows: np.ndarray, dtype: np.dtype) -> None:
        step = max(1, _PIECE_BYTES // max(1, rows[0].size * max(rows.dtype.itemsize,
                                                                  dtype.itemsize)))
        for s in range(0, len(rows), step):
            out = np.ascontiguousarray(cast_logits(rows[s : s + step], dtype))
            self._write(out)
            self._sha.update(out.data)

    def submit(self, rows: np.ndarray, dtype: np.dtype) -> list[Future[None]]:
        """Append ``rows`` (C-contiguous) cast to ``dtype``; the caller keeps them unchanged
        until the returned futures are done. (A file casts on the writer thread only, and
        hashes there too, so the hash sees the bytes in order either way.)"""
        if rows.dtype == dtype:
            return [self._writer.submit(self._write, rows),
                    self._hasher.submit(self._sha.update, rows.data)]
        return [self._writer.submit(self._write_cast, rows, dtype)]

    def close(self, ok: bool) -> str:
        """Wait for both threads; on success fsync the file. Returns the sha256."""
        try:
            self._writer.shutdown(wait=True)
            self._hasher.shutdown(wait=True)
            if ok:
                self._file.flush()
                os.fsync(self._fd)
        finally:
            self._file.close()
        return self._sha.hexdigest()


def _stream_in_order(reader: _MemberReader, out: Path, shape: tuple[int, int, int], layout: str,
                     src: np.dtype, dtype: np.dtype, kind: str, where: str, block_bytes: int,
                     poll: Callable[[], None]) -> str:
    """Write (N, K, C) logits.npy front to back, a block of samples at a time; returns its
    sha256, hashed as written. An (N, K, C) member is read in order; a stored (K, N, C)
    member is read exit by exit at each block's offsets.

    The block is two halves: while ``_Sink``'s threads write and hash one, this thread
    reads and checks the other.
    """
    n, k, c = shape
    row = k * c * src.itemsize
    rows = _rows_per_block(n, row, max(1, block_bytes // 2))
    halves: list[np.ndarray] = []
    piece_rows = max(1, min(rows, _PIECE_BYTES // max(1, c * src.itemsize)))
    piece_buf = np.empty(piece_rows * c, dtype=src) if layout == "knc" else None
    pending: list[list[Future[None]]] = [[], []]
    sink = _Sink(out, _npy_header_bytes(shape, dtype))
    ok = False
    try:
        for i, s0 in enumerate(range(0, n, rows)):
            poll()
            half = i % 2
            for fut in pending[half]:  # the sink is done with this half
                fut.result()
            if len(halves) <= half:
                halves.append(np.empty(rows * k * c, dtype=src))
            r = min(rows, n - s0)
            block = halves[half][: r * k * c].reshape(r, k, c)
            if piece_buf is None:
                reader.read_next(block)
            else:
                for e in range(k):
                    for p0 in range(0, r, piece_rows):
                        pr = min(piece_rows, r - p0)
                        piece = piece_buf[: pr * c].reshape(pr, c)
                        reader.read_at(piece, (e * n + s0 + p0) * c * src.itemsize)
                        block[p0 : p0 + pr, e] = piece
            pending[half] = sink.submit(block, dtype)
            _check_block(block, kind, where, s0)
        for fut in pending[0] + pending[1]:
            fut.result()
        ok = True
    finally:
        digest = sink.close(ok)
    return digest


def _stream_by_exit(reader: _MemberReader, out: Path, shape: tuple[int, int, int],
                    src: np.dtype, dtype: np.dtype, kind: str, where: str, block_bytes: int,
                    poll: Callable[[], None]) -> str:
    """Write (N, K, C) logits.npy from a compressed (K, N, C) member, which can only be read
    in order: exit by exit, each into its column of a memory-mapped window of samples (one
    window mapped at a time). Returns the sha256, hashed window by window as the last exit
    completes them."""
    n, k, c = shape
    header = _npy_header_bytes(shape, dtype)
    with open(out, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n * k * c * dtype.itemsize)
    sha = hashlib.sha256(header)
    window = max(1, min(n, block_bytes // max(1, k * c * dtype.itemsize)))
    piece_rows = max(1, min(window, _PIECE_BYTES // max(1, c * src.itemsize)))
    piece_buf = np.empty(piece_rows * c, dtype=src)
    fd = os.open(out, os.O_RDWR)
    try:
        for e in range(k):
            for w0 in range(0, n, window):
                poll()
                w = min(window, n - w0)
                offset = len(header) + w0 * k * c * dtype.itemsize
                mm = np.memmap(out, dtype=dtype, mode="r+", shape=(w, k, c), offset=offset)
                try:
                    for p0 in range(0, w, piece_rows):
                        pr = min(piece_rows, w - p0)
                        piece = piece_buf[: pr * c].reshape(pr, 1, c)
                        reader.read_next(piece)
                        _check_block(piece, kind, where, w0 + p0, e)
                        mm[p0 : p0 + pr, e] = cast_logits(piece[:, 0], dtype)
                    if e == k - 1:  # the window is final
                        sha.update(mm.data)
                finally:
                    del mm  # unmapped: its dirty pages stay in the page cache
                if e == k - 1:
                    _start_writeback(fd, offset, w * k * c * dtype.itemsize)
        os.fsync(fd)
    finally:
        os.close(fd)
    return sha.hexdigest()


def import_npz(
    store: LogitStore,
    path: str | os.PathLike[str],
    costs: Sequence[float] | np.ndarray | None = None,
    name: str | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    *,
    block_bytes: int = BLOCK_BYTES,
) -> str:
    """Import an .npz (see ``load_npz_logits``) into ``store``; returns the key.

    The identity is the file's sha256, the costs and the axis order, so
    importing the same file with the same costs again returns the same entry.

    The values are streamed, never held whole: about ``block_bytes`` of them at a
    time are read from the archive (stored or compressed), checked (non-finite values,
    probabilities; messages name sample, exit and class), cast to the store's dtype
    (the file's float32 or float16, else float32) and written into the entry, which is
    hashed as it is written; the file's own sha256 is computed beside it, and an import
    already in the store is stopped as soon as that is known. The entry is committed as
    ``put`` commits: whole or not at all. A Fortran-ordered array is read in memory.
    """
    p = _check_file(path)
    if block_bytes < 1:
        raise StoreError(f"block_bytes must be positive, got {block_bytes}")
    arch = _open_archive(p, load_values=False)
    resolved = _resolve(arch, layout)
    a0, a1, a2 = arch.header.shape  # 3-D: _resolve checked
    nkc = (a1, a0, a2) if resolved == "knc" else (a0, a1, a2)
    src = arch.header.dtype
    if 0 in nkc:
        check_values(np.empty(nkc, dtype=src), arch.kind, arch.where)  # says "empty"
    if arch.header.fortran:  # its bytes run class-major: no block of samples is contiguous
        ls = load_npz_logits(p, costs=costs, layout=layout)
        return _import(store, ls, _npz_identity(file_sha256(p), ls.costs, resolved), name,
                       overwrite)
    dtype = check_logit_dtype(src.name if src.name in LOGIT_DTYPES else "float32")
    ls = _logitset(arch, np.broadcast_to(np.zeros((), dtype=dtype), nkc), costs, resolved)
    if name is not None:  # a malformed name fails now, not after the data were read
        with contextlib.suppress(EntryExistsError):
            store.check_name(name, "")
    reader = _MemberReader(arch)
    stop = threading.Event()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="eebench-sha256") as pool:
            try:
                source = pool.submit(_hash_source, p, reader.crc_span, stop)

                def poll() -> None:  # stop early when this import is already stored
                    if source.done() and not overwrite:
                        key = identity_key(_npz_identity(source.result()[0], ls.costs, resolved))
                        if store.has_key(key):
                            raise _AlreadyStored(key)

                key = _stream_and_commit(store, arch, reader, ls, nkc, resolved, dtype,
                                         block_bytes, source, poll, name, overwrite)
                if key is not None:
                    return key
                key = identity_key(_npz_identity(source.result()[0], ls.costs, resolved))
            except _AlreadyStored as found:
                key = found.key
            finally:
                stop.set()
    finally:
        reader.close()
    if name is not None:
        store.rename(key, name, replace=False)
    return key


def _npz_identity(sha: str, costs: np.ndarray, layout: str) -> dict[str, Any]:
    return {
        "source_format": "npz",
        "source_sha256": sha,
        "costs": _costs_list(costs),
        "layout": layout,
    }


def _stream_and_commit(store: LogitStore, arch: _Archive, reader: _MemberReader, ls: LogitSet,
                       nkc: tuple[int, int, int], resolved: str, dtype: np.dtype,
                       block_bytes: int, source: Future[tuple[str, int | None]],
                       poll: Callable[[], None], name: str | None, overwrite: bool) -> str | None:
    """Stream the values into a scratch folder and commit it; returns the key, or None when
    another process committed the same import first."""
    src = arch.header.dtype
    with store.scratch("import") as tmp:
        out = tmp / "logits.npy"
        if resolved == "knc" and not reader.stored:
            logits_sha = _stream_by_exit(reader, out, nkc, src, dtype, arch.kind, arch.where,
                                         block_bytes, poll)
        else:
            logits_sha = _stream_in_order(reader, out, nkc, resolved, src, dtype, arch.kind,
                                          arch.where, block_bytes, poll)
        reader.finish()
        sha, crc = source.result()
        if crc is not None and crc != arch.member.CRC:
            raise StoreError(
                f"{arch.where} fails its CRC-32 check (the zip says {arch.member.CRC:08x}, the "
                f"bytes give {crc:08x}); the archive is damaged"
            )
        identity = _npz_identity(sha, ls.costs, resolved)
        key = identity_key(identity)
        if store.has_key(key) and not overwrite:
            raise _AlreadyStored(key)
        try:
            return store.commit_folder(tmp, ls, identity, name=name, overwrite=overwrite,
                                       logits_sha256=logits_sha)
        except EntryExistsError:
            if not store.has_key(key) or overwrite:
                raise  # the name belongs to another entry
    return None


def _as_exit_array(obj: Any, what: str) -> np.ndarray:
    import torch

    if isinstance(obj, torch.Tensor):
        arr = obj.detach().cpu().float().numpy()
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        shapes = {tuple(t.shape) for t in obj}
        if len(shapes) != 1:
            raise StoreError(f"{what}: per-exit tensors have different shapes {sorted(shapes)}")
        arr = torch.stack([t.detach().cpu().float() for t in obj], dim=0).numpy()
    else:
        raise StoreError(
            f"{what} must be a (exits, samples, classes) tensor or a list of per-exit "
            f"(samples, classes) tensors, got {type(obj).__name__}"
        )
    if arr.ndim != 3:
        raise StoreError(f"{what} must be 3-D (exits, samples, classes), got shape {arr.shape}")
    return arr


def load_msdnet_logits(
    path: str | os.PathLike[str], costs: Sequence[float] | np.ndarray
) -> tuple[LogitSet, LogitSet]:
    """Read MSDNet's ``logits_single.pth`` as (validation, test) LogitSets of probabilities.

    The file is ``(val_probs, val_targets, test_probs, test_targets)`` saved
    with ``torch.save``; probs are softmax outputs, (exits, samples, classes)
    or a list of per-exit tensors; targets may be float tensors.
    """
    import torch

    p = _check_file(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise StoreError(
            f"{p} cannot be read as MSDNet's logits_single.pth with torch.load(weights_only=True): "
            f"{exc}"
        ) from exc
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise StoreError(
            f"{p} must hold (val_probs, val_targets, test_probs, test_targets), got "
            f"{type(obj).__name__}{f' of length {len(obj)}' if isinstance(obj, (list, tuple)) else ''}"
        )
    if costs is None:
        raise StoreError("give the cumulative cost of each exit (MSDNet's flops.pth values)")
    cost_list = _costs_list(costs)
    out = []
    for split, probs_obj, targets_obj in (("val", obj[0], obj[1]), ("test", obj[2], obj[3])):
        probs = _as_exit_array(probs_obj, f"{split} probabilities in {p}")
        if isinstance(targets_obj, torch.Tensor):
            targets_obj = targets_obj.detach().cpu().numpy()
        targets = _integer_labels(targets_obj, f"{split} targets in {p}")
        if probs.shape[1] != targets.shape[0]:
            raise StoreError(
                f"{split}: {probs.shape[1]} samples of probabilities but {targets.shape[0]} targets "
                f"in {p}"
            )
        check_values(np.swapaxes(probs, 0, 1), "probabilities", f"{p}: {split} probabilities")
        out.append(LogitSet(
            logits=np.ascontiguousarray(np.swapaxes(probs, 0, 1)),
            labels=targets,
            costs=np.asarray(cost_list),
            kind="probabilities",
            manifest={
                "source": str(p.resolve()),
                "source_format": "msdnet_logits_single",
                "split": split,
                "kind_note": "MSDNet caches softmax probabilities, not logits; calibration "
                             "that needs logits works on their log",
            },
        ))
    return out[0], out[1]


def import_msdnet_logits(
    store: LogitStore,
    path: str | os.PathLike[str],
    costs: Sequence[float] | np.ndarray,
    name: str | None = None,
    overwrite: bool = False,
) -> tuple[str, str]:
    """Import ``logits_single.pth`` as two entries, validation and test; returns their keys.

    With ``name`` the entries are named ``<name>-val`` and ``<name>-test``.
    """
    val, test = load_msdnet_logits(path, costs)
    sha = file_sha256(Path(path).expanduser())
    keys = []
    for split, ls in (("val", val), ("test", test)):
        identity = {
            "source_format": "msdnet_logits_single",
            "source_sha256": sha,
            "costs": _costs_list(ls.costs),
            "layout": "knc",
            "split": split,
        }
        keys.append(_import(store, ls, identity, f"{name}-{split}" if name else None, overwrite))
    return keys[0], keys[1]


def export_npz(store: LogitStore, ref: str, path: str | os.PathLike[str], *,
               block_bytes: int = BLOCK_BYTES) -> Path:
    """Write an entry as .npz: logits (K,N,C), labels, costs, ids, exit_names, kind, layout.

    The archive is what ``np.savez`` writes, but the logits are streamed into it exit by
    exit from windows of about ``block_bytes`` of the stored (N, K, C) file, so no copy of
    the whole array is ever in memory. The file appears whole or not at all.
    """
    if block_bytes < 1:
        raise StoreError(f"block_bytes must be positive, got {block_bytes}")
    ls = store.get(ref)  # resolves the reference and checks the entry's checksums
    out = Path(path).expanduser()
    if out.is_dir():
        raise StoreError(f"{out} is a folder; give a file path such as {out / 'logits.npz'}")
    src = store.entry_dir(str(ls.manifest["key"])) / "logits.npy"
    with open(src, "rb") as f:
        header = _read_npy_header(f)
    n, k, c = header.shape
    dtype = header.dtype
    if header.fortran or (n, k, c) != tuple(ls.logits.shape):
        raise StoreError(f"{src} is not the entry's (N, K, C) array; run `eebench store verify`")
    window = max(1, min(n, block_bytes // max(1, k * c * dtype.itemsize)))
    out.parent.mkdir(parents=True, exist_ok=True)
    small = {
        "labels": ls.labels,
        "costs": ls.costs,
        "ids": ls.ids,
        "exit_names": np.asarray(ls.exit_names, dtype=str),
        "kind": np.asarray(ls.kind),
        "layout": np.asarray("knc"),
    }
    with atomic_file(out) as sink, zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED,
                                                   allowZip64=True) as zf:
        with zf.open("logits.npy", "w", force_zip64=True) as member:
            member.write(_npy_header_bytes((k, n, c), dtype))
            for e in range(k):
                for w0 in range(0, n, window):
                    w = min(window, n - w0)
                    mm = np.memmap(src, dtype=dtype, mode="r", shape=(w, k, c),
                                   offset=header.offset + w0 * k * c * dtype.itemsize)
                    try:
                        member.write(np.ascontiguousarray(mm[:, e]).reshape(-1).data)
                    finally:
                        del mm
        for key, arr in small.items():  # as np.savez writes them
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
    return out
