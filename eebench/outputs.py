"""Where outputs go: checked before work starts, written so that a reader never sees half.

Long commands (a sweep, a suite run, a cost table of the whole zoo) used to compute
for minutes and then fail on an unwritable ``--out``; a suite named ``../../x`` wrote
outside its results root; a killed run left a half-written ``curves.csv`` that a
later report read as if it were whole. So output locations are checked (and
created) before any work, names that become path components are validated, and
files and folders are replaced atomically: readers see the old version or the new
one, never a mixture.

Standard library only: every command imports this.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from eebench.errors import OutputPathError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


def check_path_name(name: str, what: str) -> str:
    """``name`` if it is safe as one path component (no separators, no ``..``), else a clear
    error: names from suites and options must never steer a write outside its folder."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise OutputPathError(
            f"{what} {name!r} cannot be used as a file or folder name: use 1-128 letters, digits "
            "and . _ + = @ -, starting with a letter or digit, with no '/' and no '..'"
        )
    return name


def _writable_dir(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) and prove a file can be written in it."""
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OutputPathError(f"{what}: {folder} lies under {anc}, which is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"{what}: cannot write in {folder} ({exc.strerror or exc}); choose a writable location"
        ) from None


def prepare_output_file(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """The output file path, after checking that it can be written (its folder is created)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a folder; give a file path, e.g. {p / 'out.csv'}")
    _writable_dir(p.parent if str(p.parent) else Path("."), what)
    return p


def prepare_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """The output folder, created and checked writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file; give a folder")
    _writable_dir(p, what)
    return p


def fsync_path(path: Path) -> None:
    """fsync a file or folder where the platform allows it (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success fsync it and
    ``os.replace`` it onto ``path``, on failure remove it. Readers see the old file or the
    new one, never half of one; a killed writer leaves only a ``*.tmp-*`` file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_table(frame: Any, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a results table as ``path`` (CSV, no index) and as Parquet beside it (the same
    name ending in ``.parquet``), each atomically; returns both paths.

    The Parquet file holds the table as a CSV reader gets it back (the CSV text parsed
    again), so the two never disagree: an empty text cell is missing in both, a number has
    the same value and type in both. CSV stays the format people open; Parquet keeps the
    types for programs. ``frame`` is a pandas DataFrame (pandas is imported here only).
    """
    import io

    import pandas as pd

    csv_path = Path(path)
    parquet_path = csv_path.with_suffix(".parquet")
    text = frame.to_csv(index=False)
    # what a reader gets back; a frame with no columns has no CSV to read, only a line break
    again = pd.read_csv(io.StringIO(text)) if len(frame.columns) else pd.DataFrame()
    with atomic_file(csv_path, "wb") as f:
        f.write(text.encode("utf-8"))
    with atomic_file(parquet_path, "wb") as f:
        again.to_parquet(f, index=False)
    return csv_path, parquet_path


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a hidden sibling and swap it onto ``final`` when the block ends
    without error; the old folder is removed afterwards. On error, ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        yield tmp
        fsync_path(tmp)
        if final.exists():
            if not exchange_paths(tmp, final):
                aside = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
                os.rename(final, aside)
                os.rename(tmp, final)
                os.rename(aside, tmp)
        else:
            os.rename(tmp, final)
        fsync_path(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
