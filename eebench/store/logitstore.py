"""LogitStore: a folder of LogitSets, each found again by what determined its logits.

Policies and reports are only trustworthy if the logits they read belong to
the model, weights, data and split they claim. So an entry's folder name is a
hash of that identity (changed weights give a new key; old logits are never
silently reused), every array file carries a checksum in the manifest (a
flipped byte is found and named), and writes are built in a scratch folder
and renamed into place in one step (a crash leaves nothing that looks like a
finished entry). Reads memory-map the logits, so opening an ImageNet-sized
entry costs nothing until samples are touched.

Only numpy and the standard library are imported here: the ``store`` and
``sweep`` commands must start without torch. Reading manifests (and listing, which
needs nothing else) lives in ``eebench.store.manifest``, which does without numpy.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import eebench.store.manifest as _manifest
from eebench.outputs import atomic_file, exchange_paths, fsync_path
from eebench.provenance import package_versions
from eebench.store.logitset import LogitSet

# Listing needs no numpy, so the layout constants, the store's errors and the manifest
# checks live in eebench.store.manifest: one copy, still importable from here.
from eebench.store.manifest import (  # noqa: F401
    _KEY_RE,
    FEATURE_FILE,
    KINDS,
    LOGIT_DTYPES,
    LS_COLUMNS,
    MANIFEST,
    PARTIAL,
    SHORT_KEY,
    AmbiguousReferenceError,
    EntryExistsError,
    EntryNotFoundError,
    StoreError,
    default_store_root,
    feature_files,
)
from eebench.store.manifest import manifest_problem as _manifest_problem  # noqa: F401
from eebench.store.manifest import tree_size as _tree_size  # noqa: F401
from eebench.store.validate import check_costs, check_features, check_values

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FORMAT_VERSION = 1
ARRAY_FILES = ("logits.npy", "labels.npy", "ids.npy", "costs.npy")
VERIFIED = ".verified"
LOCK_FILE = ".lock"
#: Seconds a store operation waits for another process's commit before giving up.
LOCK_TIMEOUT = 600.0
#: Suffixes an entry name may not end with: a reference must never be both a file and an entry.
FILE_SUFFIXES = (".npz", ".npy", ".pth", ".pt", ".csv")
SMALL_FILES = ("labels.npy", "ids.npy", "costs.npy")
MIN_PREFIX = 6

# Manifest fields copied from the identity when it names them (what `ls` and `show` describe).
IDENTITY_FIELDS = (
    "model",
    "model_config",
    "weights_sha256",
    "dataset",
    "dataset_params",
    "split",
    "split_indices_sha256",
    "transform",
)
# Manifest fields the store itself sets; a LogitSet's own manifest cannot override them.
RESERVED_FIELDS = (
    "format_version",
    "key",
    "name",
    "identity",
    "kind",
    "dtype",
    "shape",
    "costs",
    "exit_names",
    "versions",
    "created",
    "files",
    "features",
)

_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@=-]{0,127}$")
_ROW_BLOCK_BYTES = 64 << 20


# ---------------------------------------------------------------- what verify and gc report


@dataclass(frozen=True)
class VerifyProblem:
    """One thing wrong with one entry: which entry, which file, and what."""

    key: str
    name: str | None
    file: str | None
    problem: str

    def __str__(self) -> str:
        who = self.key[:SHORT_KEY] + (f" ({self.name})" if self.name else "")
        where = f"{self.file}: " if self.file else ""
        return f"entry {who}: {where}{self.problem}"


@dataclass(frozen=True)
class PartialItem:
    """One thing in ``.partial/``: ``kind`` is "extraction" (resumable chunks) or "leftover"
    (what an interrupted write left); ``active`` when a live process holds it."""

    path: Path
    kind: str
    bytes: int
    active: bool


# ---------------------------------------------------------------- identity


def _canonical(obj: Any, where: str) -> Any:
    """Plain JSON types only, so the same identity always serialises to the same bytes."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        return _canonical(obj.item(), where)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise StoreError(f"identity value at {where!r} is {obj}; identities must be finite")
        # 1 and 1.0 describe the same thing; let them hash the same
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise StoreError(
                    f"identity key {k!r} at {where!r} is a {type(k).__name__}; use str keys"
                )
            out[k] = _canonical(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist(), where)
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise StoreError(
        f"identity value at {where!r} has type {type(obj).__name__}, which has no canonical "
        "JSON form; convert it to str, number, bool, None, list or dict"
    )


def canonical_json(identity: Mapping[str, Any]) -> str:
    """The canonical text an identity is hashed from (sorted keys, no spaces)."""
    if not isinstance(identity, Mapping) or not identity:
        raise StoreError(
            "an identity must be a non-empty dict of what determines the logits "
            "(model, weights_sha256, dataset, split, transform, dtype, ...)"
        )
    return json.dumps(
        _canonical(identity, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
        allow_nan=False,
    )


def identity_key(identity: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``identity``: the entry's key in a store."""
    return hashlib.sha256(canonical_json(identity).encode("ascii")).hexdigest()


def indices_sha256(indices: Iterable[int] | np.ndarray) -> str:
    """sha256 of a sample index list (as little-endian int64), for a split's identity."""
    arr = np.asarray(indices if isinstance(indices, np.ndarray) else list(indices))
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise StoreError(f"sample indices must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr.astype("<i8").reshape(-1))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def extraction_identity(
    *,
    model: str,
    model_config: Mapping[str, Any] | None,
    weights_sha256: str | None,
    dataset: str,
    dataset_params: Mapping[str, Any] | None = None,
    split: str,
    split_indices: Sequence[int] | np.ndarray | None = None,
    transform: str | Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """The identity of logits extracted from a model: everything that changes them.

    ``split_indices`` (positions into the data set) enter as their sha256, so two
    splits with the same name but different samples never share an entry.
    ``dtype`` may be left out: ``extract_logits`` adds the dtype it stores.
    """
    if dtype is not None and dtype not in LOGIT_DTYPES:
        raise StoreError(f"dtype must be one of {LOGIT_DTYPES}, got {dtype!r}")
    out = {
        "model": model,
        "model_config": dict(model_config) if model_config is not None else None,
        "weights_sha256": weights_sha256,
        "dataset": dataset,
        "dataset_params": dict(dataset_params or {}),
        "split": split,
        "split_indices_sha256": None if split_indices is None else indices_sha256(split_indices),
        "transform": transform,
    }
    if dtype is not None:
        out["dtype"] = dtype
    return out


# ---------------------------------------------------------------- small helpers


def file_sha256(path: str | os.PathLike[str], bufsize: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(bufsize):
            h.update(block)
    return h.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def check_logit_dtype(dtype: Any) -> np.dtype:
    """The storage dtype, float32 or float16, or a clear error."""
    dt = np.dtype(dtype)
    if dt.name not in LOGIT_DTYPES:
        raise StoreError(f"logits are stored as {' or '.join(LOGIT_DTYPES)}, not {dt.name}")
    return dt


def cast_logits(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a block of logits, refusing values that the storage dtype turns into inf."""
    with np.errstate(over="ignore"):
        out = np.asarray(block).astype(dtype, copy=False)
    if out.dtype != np.asarray(block).dtype:
        bad = np.isinf(out) & np.isfinite(block)
        if bad.any():
            raise StoreError(
                f"{int(bad.sum())} logit values overflow {dtype.name} (max |x| "
                f"{float(np.abs(np.asarray(block)[bad]).max()):.4g}); store them as float32"
            )
    return out


def write_logits_npy(path: Path, logits: np.ndarray, dtype: np.dtype) -> None:
    """Stream ``logits`` (N,K,C) into an .npy file block by block (bounded memory)."""
    n = logits.shape[0]
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(logits.shape))
    try:
        row_bytes = max(1, int(np.prod(logits.shape[1:])) * 8)
        step = max(1, _ROW_BLOCK_BYTES // row_bytes)
        for s in range(0, n, step):
            mm[s : s + step] = cast_logits(logits[s : s + step], dtype)
        mm.flush()
    finally:
        del mm
    fsync_path(path)


# ---------------------------------------------------------------- the store


class LogitStore:
    """A folder of LogitSets addressed by identity key, unique key prefix or name.

    Layout: ``<root>/<key>/`` holds ``manifest.json`` and ``logits.npy``,
    ``labels.npy``, ``ids.npy``, ``costs.npy`` (and ``features_{k}.npy`` per exit in an
    entry stored with features); ``<root>/.partial/`` holds work
    in progress (entries being written, resumable extraction chunks) and is
    never listed. Reading never creates the root folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self._lock: Any = None
        self._verified: dict[str, tuple[Any, ...]] = {}

    # ------------------------------------------------------------ location and locking

    def _check_root(self) -> None:
        """A clear error when the store path is a file or lies under one."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"store path {root} is a file, not a folder; give --store (or $EEBENCH_STORE) "
                "a folder"
            )
        anc = root.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if anc.exists() and not anc.is_dir():
            raise StoreError(
                f"store path {root} lies under {anc}, which is a file; give --store (or "
                "$EEBENCH_STORE) a folder"
            )

    def _mkdir(self, path: Path) -> None:
        """``mkdir -p`` that says which store cannot be written, and why, in one line."""
        self._check_root()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot write to the store {self.root} ({exc.strerror or exc}); choose a "
                "writable folder with --store or $EEBENCH_STORE"
            ) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: names are checked and entries committed, renamed or removed
        by one process at a time, on one machine or several sharing the folder.

        The lock is an OS file lock (``filelock``) on ``<root>/.lock``; it is reentrant
        within this object, and a process that dies releases it.
        """
        from filelock import FileLock, Timeout

        self._mkdir(self.root)
        if self._lock is None:
            self._lock = FileLock(str(self.root / LOCK_FILE), timeout=LOCK_TIMEOUT)
        try:
            self._lock.acquire()
        except Timeout:
            raise StoreError(
                f"the store {self.root} stayed locked by another process for {LOCK_TIMEOUT:g} s; "
                f"if no eebench process is running, remove {self.root / LOCK_FILE}"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"cannot lock the store {self.root} ({exc.strerror or exc}); choose a writable "
                "folder with --store or $EEBENCH_STORE"
            ) from exc
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def scratch(self, stem: str) -> Iterator[Path]:
        """A fresh folder in ``.partial/`` for work in progress, removed afterwards.

        Its sibling ``<folder>.lock`` is held while it exists, so ``gc`` can tell a live
        writer's folder from one a killed process left behind.
        """
        from filelock import FileLock

        self._mkdir(self.partial_dir)
        tmp = self.partial_dir / f"{stem}-{secrets.token_hex(6)}"
        lock = FileLock(str(tmp) + ".lock", timeout=0)
        lock.acquire()  # before the folder exists: gc never sees it unlocked
        try:
            tmp.mkdir()
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            lock.release()
            with contextlib.suppress(OSError):
                os.unlink(str(tmp) + ".lock")

    def __repr__(self) -> str:
        return f"LogitStore({str(self.root)!r})"

    # ------------------------------------------------------------ paths and listing

    @property
    def partial_dir(self) -> Path:
        return self.root / PARTIAL

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def keys(self) -> list[str]:
        """Full keys of every finished entry (folders named by a key that hold a manifest)."""
        return _manifest.entry_keys(self.root)

    def has_key(self, key: str) -> bool:
        return bool(_KEY_RE.match(key)) and (self.entry_dir(key) / MANIFEST).is_file()

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        try:
            self.resolve(ref)
        except StoreError:
            return False
        return True

    def __len__(self) -> int:
        return len(self.keys())

    def _read_manifest(self, key: str) -> dict[str, Any]:
        return _manifest.read_manifest(self.root, key)

    def _manifests(self) -> dict[str, dict[str, Any]]:
        """Readable, well-formed manifests by key; broken entries are left out (see ``broken``)."""
        return _manifest.read_manifests(self.root)

    def broken(self) -> list[tuple[str, str]]:
        """(key, what is wrong) for every key-named folder whose manifest is missing,
        unreadable or malformed: listed by ``ls``, removable with ``rm KEY``."""
        return _manifest.broken_entries(self.root)

    def names(self) -> dict[str, str]:
        """name -> key for every entry that has a name."""
        return {m["name"]: k for k, m in self._manifests().items() if m.get("name")}

    # ------------------------------------------------------------ references

    def resolve(self, ref: str) -> str:
        """The full key that ``ref`` (full key, unique prefix of >= 6 characters, or name) means."""
        if not isinstance(ref, str) or not ref:
            raise StoreError(f"an entry reference must be a non-empty string, got {ref!r}")
        if self.has_key(ref):
            return ref
        manifests = self._manifests()
        by_name = [k for k, m in manifests.items() if m.get("name") == ref]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:  # only possible if someone edited manifests by hand
            raise AmbiguousReferenceError(
                f"name {ref!r} names {len(by_name)} entries in {self.root}: "
                f"{self._describe(by_name, manifests)}; use a key"
            )
        if _HEX_RE.match(ref):
            low = ref.lower()
            matches = [k for k in manifests if k.startswith(low)]
            if len(matches) == 1 and len(low) >= MIN_PREFIX:
                return matches[0]
            if len(matches) > 1 or (matches and len(low) < MIN_PREFIX):
                raise AmbiguousReferenceError(
                    f"{ref!r} is ambiguous in {self.root}: a key prefix needs at least "
                    f"{MIN_PREFIX} characters and one match; candidates: "
                    f"{self._describe(matches, manifests)}"
                )
        close = difflib.get_close_matches(
            ref, [m["name"] for m in manifests.values() if m.get("name")], n=5
        )
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        if not manifests:
            raise EntryNotFoundError(f"no entry {ref!r}: the store {self.root} is empty")
        raise EntryNotFoundError(
            f"no entry {ref!r} in {self.root}{hint}; entries: "
            f"{self._describe(list(manifests), manifests, limit=20)} "
            "(see `eebench store ls`)"
        )

    @staticmethod
    def _describe(keys: Sequence[str], manifests: Mapping[str, Mapping[str, Any]],
                  limit: int = 50) -> str:
        parts = []
        for k in list(keys)[:limit]:
            name = manifests.get(k, {}).get("name")
            parts.append(k[:SHORT_KEY] + (f" ({name})" if name else ""))
        more = len(keys) - limit
        return ", ".join(parts) + (f", ... {more} more" if more > 0 else "")

    def check_name(self, name: str | None, key: str) -> None:
        """Fail unless ``name`` is a valid alias that no entry other than ``key`` holds."""
        if name is None:
            return
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise StoreError(
                f"invalid entry name {name!r}: use 1-128 letters, digits and . _ + @ = -, "
                "starting with a letter or digit"
            )
        if name.lower().endswith(FILE_SUFFIXES):
            raise StoreError(
                f"entry name {name!r} ends like a file name ({', '.join(FILE_SUFFIXES)}), so it "
                "could be mistaken for a file on disk; drop the suffix"
            )
        if len(name) >= MIN_PREFIX and _HEX_RE.match(name):
            raise StoreError(
                f"entry name {name!r} looks like a key prefix (hex digits only); "
                "add a non-hex character, e.g. 'run-" + name + "'"
            )
        owner = self.names().get(name)
        if owner is not None and owner != key:
            raise EntryExistsError(
                f"name {name!r} already names entry {owner[:SHORT_KEY]} in {self.root}; "
                f"choose another name or remove it (`eebench store rm {name}`)"
            )

    # ------------------------------------------------------------ reading

    def show(self, ref: str) -> dict[str, Any]:
        """The entry's manifest."""
        return self._read_manifest(self.resolve(ref))

    def get(self, ref: str, *, verify: bool = False, mmap: bool = True) -> LogitSet:
        """The entry as a LogitSet; ``logits`` (and ``features``, when the entry has them) are
        read-only memory maps unless ``mmap=False``."""
        key = self.resolve(ref)
        if verify:
            problems = self.verify(key)
            if problems:
                raise StoreError(
                    "; ".join(map(str, problems))
                    + f". Remove the entry (`eebench store rm {key[:SHORT_KEY]}`) and recreate it"
                )
        d = self.entry_dir(key)
        man = self._read_manifest(key)
        missing = [f for f in (*ARRAY_FILES, *feature_files(man)) if not (d / f).is_file()]
        if missing:
            raise StoreError(
                f"entry {key[:SHORT_KEY]} is missing {', '.join(missing)}; run "
                f"`eebench store verify {key[:SHORT_KEY]}`, then remove and recreate it"
            )
        self._check_integrity(key, man)
        try:
            logits = np.load(d / "logits.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            labels = np.load(d / "labels.npy", allow_pickle=False)
            ids = np.load(d / "ids.npy", allow_pickle=False)
            costs = np.load(d / "costs.npy", allow_pickle=False)
            features = [np.load(d / f, mmap_mode="r" if mmap else None, allow_pickle=False)
                        for f in feature_files(man)] or None
        except (OSError, ValueError, EOFError) as exc:
            raise StoreError(
                f"entry {key[:SHORT_KEY]}: an array file cannot be read ({exc}); run "
                f"`eebench store verify {key[:SHORT_KEY]}`"
            ) from exc
        if list(logits.shape) != list(man.get("shape", logits.shape)):
            raise StoreError(
                f"entry {key[:SHORT_KEY]}: logits.npy has shape {tuple(logits.shape)} but the "
                f"manifest says {tuple(man['shape'])}; run `eebench store verify`"
            )
        for meta, arr in zip(man.get("features") or [], features or [], strict=True):
            if list(arr.shape) != meta["shape"] or arr.dtype.name != meta["dtype"]:
                raise StoreError(
                    f"entry {key[:SHORT_KEY]}: {meta['file']} holds {arr.dtype} {tuple(arr.shape)} "
                    f"but the manifest says {meta['dtype']} {tuple(meta['shape'])}; run "
                    "`eebench store verify`"
                )
        stated = np.asarray([np.nan if c is None else c for c in man["costs"]], dtype=np.float64)
        if stated.shape != costs.shape or not np.array_equal(stated, costs, equal_nan=True):
            raise StoreError(
                f"entry {key[:SHORT_KEY]}: costs.npy holds {costs.tolist()} but the manifest says "
                f"{man['costs']}; the entry was changed after it was stored: remove it "
                f"(`eebench store rm {key[:SHORT_KEY]}`) and recreate it"
            )
        return LogitSet(
            logits=logits,
            labels=labels,
            costs=costs,
            exit_names=list(man.get("exit_names") or []),
            ids=ids,
            kind=man.get("kind", "logits"),
            manifest=man,
            features=features,
        )

    # ------------------------------------------------------------ integrity of reads

    def _verdict_path(self, key: str) -> Path:
        return self.root / VERIFIED / f"{key}.json"

    def _forget_verdict(self, key: str) -> None:
        self._verified.pop(key, None)
        with contextlib.suppress(OSError):
            self._verdict_path(key).unlink()

    @staticmethod
    def _signature(path: Path) -> tuple[int, int, int, int, int]:
        """What changes whenever a file's bytes change: any write moves ctime and mtime."""
        st = path.stat()
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _check_integrity(self, key: str, man: Mapping[str, Any]) -> None:
        """Fail unless every array file still has the checksum the manifest recorded.

        The small arrays are hashed on every read. ``logits.npy`` and the feature files can
        be gigabytes, so they are hashed the first time they are read after one of them
        changed (file identity, size, mtime, ctime); the verdict is remembered in
        ``<root>/.verified/`` (or in memory only, for a read-only store). A changed byte
        therefore never reaches a policy.
        """
        d = self.entry_dir(key)
        files = man["files"]
        for f in SMALL_FILES:
            if file_sha256(d / f) != files.get(f):
                raise StoreError(self._corrupt_message(key, f))
        large = ["logits.npy", *feature_files(man)]
        sig: tuple[Any, ...] = ()
        for f in large:
            sig += (*self._signature(d / f), files.get(f))
        if self._verified.get(key) == sig:
            return
        vpath = self._verdict_path(key)
        try:
            cached = tuple(json.loads(vpath.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            cached = None
        if cached != sig:
            for f in large:
                if file_sha256(d / f) != files.get(f):
                    raise StoreError(self._corrupt_message(key, f))
            with contextlib.suppress(OSError):  # a read-only store checks again next time
                vpath.parent.mkdir(exist_ok=True)
                with atomic_file(vpath, "w") as out:
                    json.dump(list(sig), out)
        self._verified[key] = sig

    def _corrupt_message(self, key: str, file: str) -> str:
        return (
            f"entry {key[:SHORT_KEY]}: {file} differs from what was stored (checksum mismatch); "
            f"its numbers cannot be trusted: remove the entry (`eebench store rm {key[:SHORT_KEY]}`) "
            "and recreate it"
        )

    # ------------------------------------------------------------ unfinished work

    def partial_items(self) -> list[PartialItem]:
        """Everything in ``.partial/``: live writers, resumable extractions and leftovers."""
        return [PartialItem(*item) for item in _manifest.partial_items(self.root)]

    def gc(self, *, resumable: bool = False) -> list[PartialItem]:
        """Remove what killed writers left in ``.partial/`` (and, with ``resumable``, the
        chunks of unfinished extractions too); returns what was removed.

        Folders a live process is writing are never touched.
        """
        removed = []
        with self.locked():
            for item in self.partial_items():
                if item.active or (item.kind == "extraction" and not resumable):
                    continue
                if item.path.is_dir():
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        item.path.unlink()
                with contextlib.suppress(OSError):
                    os.unlink(str(item.path) + ".lock")
                removed.append(item)
            vdir = self.root / VERIFIED
            if vdir.is_dir():  # verdicts of entries that no longer exist
                for v in vdir.glob("*.json"):
                    if not (self.entry_dir(v.stem)).is_dir():
                        with contextlib.suppress(OSError):
                            v.unlink()
        return removed

    def ls(self) -> pd.DataFrame:
        """One row per entry: key (short), name, model, dataset, split, N, K, C, dtype, kind, created."""
        import pandas as pd

        return pd.DataFrame(self.ls_rows(), columns=list(LS_COLUMNS))

    def ls_rows(self) -> list[dict[str, Any]]:
        """The rows of ``ls`` as plain dicts (keys ``LS_COLUMNS``), oldest first: what the
        ``store ls`` command prints, without loading pandas."""
        return _manifest.ls_rows(self.root)

    def verify(self, ref: str | None = None) -> list[VerifyProblem]:
        """Recompute every checksum; report changed, missing and unlisted files, entry by entry."""
        if ref is not None:
            keys = [self.resolve(ref)]
        elif self.root.is_dir():
            # folders named like keys but without a manifest are broken entries too
            keys = sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and _KEY_RE.match(p.name))
        else:
            keys = []
        problems: list[VerifyProblem] = []
        for key in keys:
            problems.extend(self._verify_one(key))
        return problems

    def _verify_one(self, key: str) -> list[VerifyProblem]:
        d = self.entry_dir(key)
        try:
            man = self._read_manifest(key)
        except StoreError as exc:
            return [VerifyProblem(key, None, MANIFEST, str(exc))]
        name = man.get("name")
        out: list[VerifyProblem] = []
        if man.get("key") != key:
            out.append(VerifyProblem(key, name, MANIFEST,
                                     f"manifest key {man.get('key')!r} differs from folder name"))
        files = man.get("files")
        if not isinstance(files, dict):
            return out + [VerifyProblem(key, name, MANIFEST, "manifest lists no file checksums")]
        for f in (*ARRAY_FILES, *feature_files(man)):
            if f not in files:
                out.append(VerifyProblem(key, name, f, "no checksum in the manifest"))
        for f, expected in sorted(files.items()):
            path = d / f
            if not path.is_file():
                out.append(VerifyProblem(key, name, f, "missing"))
                continue
            actual = file_sha256(path)
            if actual != expected:
                out.append(VerifyProblem(
                    key, name, f,
                    f"checksum mismatch (manifest sha256 {expected[:16]}..., file {actual[:16]}...)",
                ))
        return out

    # ------------------------------------------------------------ writing

    def put(
        self,
        logitset: LogitSet,
        identity: Mapping[str, Any],
        name: str | None = None,
        overwrite: bool = False,
        *,
        dtype: str | None = None,
    ) -> str:
        """Store ``logitset`` under the key of ``identity``; returns the key.

        The entry is written into ``.partial/`` and renamed into place in one
        step. An existing key raises EntryExistsError unless ``overwrite``, which
        swaps the new entry in atomically. ``dtype`` (float32 or float16)
        defaults to the logits' own dtype when it is one of those, else float32.
        """
        key = self._check_new_entry("put", logitset, identity, name, overwrite)
        if dtype is None:
            src = np.dtype(logitset.logits.dtype)
            dtype = src.name if src.name in LOGIT_DTYPES else "float32"
        dt = check_logit_dtype(dtype)
        check_values(logitset.logits, logitset.kind, f"{logitset.kind} to store")
        for j, f in enumerate(logitset.features or []):
            check_features(f, f"exit-{j} features to store")
        with self.scratch(key) as tmp:
            write_logits_npy(tmp / "logits.npy", logitset.logits, dt)
            self._finish(tmp, key, logitset, identity, name, overwrite, dtype=dt)
        return key

    def commit_folder(
        self,
        tmp: Path,
        logitset: LogitSet,
        identity: Mapping[str, Any],
        name: str | None = None,
        overwrite: bool = False,
        *,
        logits_sha256: str,
    ) -> str:
        """Commit a ``scratch`` folder whose ``logits.npy`` the caller wrote; returns the key.

        For writers that stream logits too large to hold in memory (an import reads them
        from a file block by block): they fill ``tmp/logits.npy`` (an .npy of float32 or
        float16, (N, K, C)), check its values on the way, and hash it as they write it
        (``logits_sha256``, trusted as given: a wrong one makes the entry read as damaged).
        ``logitset`` gives everything else (labels, ids, costs, exit names, kind, manifest);
        its ``logits`` only need the file's shape, e.g. the file memory-mapped. Small arrays,
        checksums and manifest are written and the folder is committed exactly as ``put``
        does: renamed into place under the store lock, whole or not at all.
        """
        if not isinstance(logits_sha256, str) or not _KEY_RE.match(logits_sha256):
            raise StoreError(f"logits_sha256 must be 64 lowercase hex digits, got {logits_sha256!r}")
        tmp = Path(tmp)
        if tmp.parent.resolve() != self.partial_dir.resolve() or not tmp.is_dir():
            raise StoreError(
                f"{tmp} is not a work folder of {self.root}; build the entry in store.scratch()"
            )
        key = self._check_new_entry("commit_folder", logitset, identity, name, overwrite)
        path = tmp / "logits.npy"
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dt = read_header(f)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is not a readable .npy file ({exc})") from exc
        if fortran or tuple(shape) != tuple(logitset.logits.shape):
            raise StoreError(
                f"{path} holds {'a Fortran-ordered' if fortran else 'an'} array of shape "
                f"{tuple(shape)}; the LogitSet says {tuple(logitset.logits.shape)}"
            )
        dt = check_logit_dtype(dt)
        fsync_path(path)
        self._finish(tmp, key, logitset, identity, name, overwrite, dtype=dt,
                     logits_sha256=logits_sha256)
        return key

    def _check_new_entry(self, caller: str, logitset: LogitSet, identity: Mapping[str, Any],
                         name: str | None, overwrite: bool) -> str:
        """The key of a write about to start, after the checks every write makes first:
        a LogitSet with samples and sane costs, a free name, no entry unless ``overwrite``."""
        if not isinstance(logitset, LogitSet):
            raise StoreError(f"{caller} expects a LogitSet, got {type(logitset).__name__}")
        key = identity_key(identity)
        self.check_name(name, key)
        if self.has_key(key) and not overwrite:
            raise EntryExistsError(self._exists_message(key))
        if logitset.num_samples == 0:
            raise StoreError("refusing to store an empty LogitSet (0 samples)")
        check_costs(logitset.costs, "costs", allow_unknown=True)
        return key

    def _exists_message(self, key: str) -> str:
        return (
            f"entry {key[:SHORT_KEY]} already exists in {self.root} for this identity; "
            "use it (store.get), pass overwrite=True to replace it, or remove it first"
        )

    def _finish(
        self,
        tmp: Path,
        key: str,
        logitset: LogitSet,
        identity: Mapping[str, Any],
        name: str | None,
        overwrite: bool,
        *,
        dtype: np.dtype,
        logits_sha256: str | None = None,
    ) -> None:
        """Write everything but logits.npy into ``tmp``, checksum, manifest, commit.

        ``logits_sha256``, given by a writer that hashed logits.npy while writing it, saves
        reading the file once more. The LogitSet's features are written as
        ``features_{k}.npy`` in ``dtype``, unless the writer already put them there
        (an extraction streams them from its chunks).
        """
        _save_npy(tmp / "labels.npy", np.asarray(logitset.labels, dtype=np.int64))
        _save_npy(tmp / "ids.npy", np.asarray(logitset.ids, dtype=np.int64))
        _save_npy(tmp / "costs.npy", np.asarray(logitset.costs, dtype=np.float64))
        feature_meta: list[dict[str, Any]] = []
        for j, feats in enumerate(logitset.features or []):
            fname = FEATURE_FILE.format(j)
            if not (tmp / fname).is_file():
                write_logits_npy(tmp / fname, feats, dtype)
            feature_meta.append({"file": fname, "shape": [int(v) for v in feats.shape],
                                 "dtype": dtype.name})
        files = {
            f: logits_sha256 if f == "logits.npy" and logits_sha256 is not None
            else file_sha256(tmp / f)
            for f in (*ARRAY_FILES, *(m["file"] for m in feature_meta))
        }
        ident = _canonical(identity, "")
        manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "key": key, "name": name}
        for f in IDENTITY_FIELDS:
            if f in ident:
                manifest[f] = ident[f]
        for k, v in (logitset.manifest or {}).items():
            if k not in RESERVED_FIELDS and k not in manifest:
                manifest[k] = v
        costs = np.asarray(logitset.costs, dtype=np.float64)
        manifest.update({
            "identity": ident,
            "kind": logitset.kind,
            "dtype": dtype.name,
            "shape": [int(s) for s in logitset.logits.shape],
            "costs": [None if not math.isfinite(c) else float(c) for c in costs.tolist()],
            "exit_names": list(logitset.exit_names),
            "versions": package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
        })
        if feature_meta:
            manifest["features"] = feature_meta
        _write_json(tmp / MANIFEST, manifest)
        fsync_path(tmp)
        self._commit(tmp, key, overwrite, name)

    def _commit(self, tmp: Path, key: str, overwrite: bool, name: str | None) -> None:
        """Move a finished folder into place; the entry appears whole or not at all.

        Under the store lock the name is checked again (another process may have taken it
        while this one wrote), so two entries can never share a name.
        """
        with self.locked():
            self.check_name(name, key)
            final = self.entry_dir(key)
            if final.exists():
                if not overwrite and self.has_key(key):
                    raise EntryExistsError(self._exists_message(key))
                self._swap_in(tmp, final)
            else:
                os.rename(tmp, final)
            self._forget_verdict(key)
            fsync_path(self.root)

    def _swap_in(self, tmp: Path, final: Path) -> None:
        """Replace ``final`` by ``tmp``; afterwards ``tmp`` holds the old entry."""
        if exchange_paths(tmp, final):
            return
        aside = self.partial_dir / f"{final.name}-old-{secrets.token_hex(6)}"
        os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(aside, final)
            raise
        os.rename(aside, tmp)

    def rename(self, ref: str, name: str | None, *, replace: bool = True) -> str:
        """Give an entry a new name (None removes it); returns the key.

        With ``replace=False`` an entry that already has another name keeps it and the call
        fails, saying so: re-importing a file under a second name must not silently take the
        first name away.
        """
        with self.locked():
            key = self.resolve(ref)
            self.check_name(name, key)
            man = self._read_manifest(key)
            old = man.get("name")
            if old == name:
                return key
            if old and not replace:
                raise EntryExistsError(
                    f"these logits are already in {self.root} as entry {key[:SHORT_KEY]} named "
                    f"{old!r}; nothing was stored. Use that name, or rename the entry: "
                    f"`eebench store rename {old} {name}`"
                )
            man["name"] = name
            _write_json(self.entry_dir(key) / MANIFEST, man)
        return key

    def rm(self, ref: str) -> str:
        """Remove an entry (it vanishes in one rename, then its files are deleted); returns the key.

        A broken entry (a key-named folder without a readable manifest) is removed by its key
        or a unique key prefix, so every state ``verify`` reports can be repaired.
        """
        with self.locked():
            try:
                key = self.resolve(ref)
            except EntryNotFoundError:
                key = self._resolve_broken(ref)
            self._mkdir(self.partial_dir)
            trash = self.partial_dir / f"{key}-rm-{secrets.token_hex(6)}"
            os.rename(self.entry_dir(key), trash)
            self._forget_verdict(key)
            shutil.rmtree(trash, ignore_errors=True)
        return key

    def _resolve_broken(self, ref: str) -> str:
        low = ref.lower()
        broken = [k for k, _ in self.broken()]
        matches = [k for k in broken if k == low or (len(low) >= MIN_PREFIX and k.startswith(low))]
        if len(matches) == 1:
            return matches[0]
        raise EntryNotFoundError(
            f"no entry {ref!r} in {self.root}"
            + (f" (broken entries: {', '.join(k[:SHORT_KEY] for k in broken)})" if broken else "")
            + "; see `eebench store ls`"
        )
