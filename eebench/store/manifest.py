"""A store's manifests, read without numpy: what listing the store needs.

``eebench store ls`` must start about as fast as a bare Python, and numpy alone costs
several times a bare start. Listing only reads JSON manifests and looks at folders, so
everything it needs lives here, on light standard-library modules only: the layout
constants, the store's errors, the manifest checks, the rows of ``ls``, the broken-entry
list and the scan of ``.partial/``. ``LogitStore`` (numpy) uses the same functions, so
a listing and a read can never disagree about which entries are whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from eebench.errors import EebenchError

TYPE_CHECKING = False  # typing itself costs a start a few milliseconds
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping
    from typing import Any

#: What an entry's array holds: raw logits, or probabilities (an imported cache without logits).
KINDS = ("logits", "probabilities")
LOGIT_DTYPES = ("float32", "float16")
MANIFEST = "manifest.json"
#: Exit k's pre-logit features (N, D_k), present only in entries stored with features.
FEATURE_FILE = "features_{}.npy"
PARTIAL = ".partial"
SHORT_KEY = 12
LS_COLUMNS = ("key", "name", "model", "dataset", "split", "N", "K", "C", "dtype", "kind", "created")

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------- errors


class StoreError(EebenchError, ValueError):
    """A store operation that cannot be done as asked."""


class EntryNotFoundError(StoreError, KeyError):
    """A reference that names no entry (a KeyError too, so dict-like callers work)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AmbiguousReferenceError(StoreError):
    """A key prefix or name that matches more than one entry."""


class EntryExistsError(StoreError, FileExistsError):
    """A write that would replace an existing entry or reuse another entry's name."""


# ---------------------------------------------------------------- location


def default_store_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` (``--store DIR``), else ``$EEBENCH_STORE``, else the user cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("EEBENCH_STORE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("eebench")) / "store"


# ---------------------------------------------------------------- manifests


def manifest_problem(man: Mapping[str, Any]) -> str | None:
    """What is wrong with a manifest's field types, or None: a hand-edited or damaged
    manifest must be refused by name, not crash a reader three calls later."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks: list[tuple[str, Any, str]] = [
        ("key", lambda v: isinstance(v, str), "a string"),
        ("name", lambda v: v is None or isinstance(v, str), "a string or null"),
        ("kind", lambda v: v in KINDS, f"one of {list(KINDS)}"),
        ("dtype", lambda v: v in LOGIT_DTYPES, f"one of {list(LOGIT_DTYPES)}"),
        ("shape", lambda v: isinstance(v, list) and len(v) == 3 and all(is_int(s) and s >= 0 for s in v),
         "a list of 3 non-negative integers"),
        ("costs", lambda v: isinstance(v, list) and all(
            c is None or (isinstance(c, (int, float)) and not isinstance(c, bool)) for c in v),
         "a list of numbers"),
        ("exit_names", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
         "a list of strings"),
        ("files", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(h, str) for k, h in v.items()),
         "an object of file name -> sha256"),
    ]
    for field_name, ok, expected in checks:
        if field_name not in man:
            return f"has no field {field_name!r}"
        if not ok(man[field_name]):
            return f"field {field_name!r} must be {expected}, got {man[field_name]!r:.80}"
    if len(man["costs"]) != man["shape"][1]:
        return f"lists {len(man['costs'])} costs for {man['shape'][1]} exits"
    if "features" in man:
        feats = man["features"]
        n, k = man["shape"][0], man["shape"][1]
        if not isinstance(feats, list) or len(feats) != k:
            return f"field 'features' must list one entry per exit ({k}), got {feats!r:.80}"
        for j, f in enumerate(feats):
            if not (isinstance(f, dict) and f.get("file") == FEATURE_FILE.format(j)
                    and f.get("dtype") in LOGIT_DTYPES and isinstance(f.get("shape"), list)
                    and len(f["shape"]) == 2 and all(is_int(v) for v in f["shape"])
                    and f["shape"][0] == n and f["shape"][1] > 0):
                return (f"field 'features'[{j}] must be {{file: {FEATURE_FILE.format(j)!r}, "
                        f"shape: [{n}, width], dtype: float32|float16}}, got {f!r:.120}")
    return None


def feature_files(man: Mapping[str, Any]) -> list[str]:
    """The feature files an entry's manifest lists (none for entries without features)."""
    return [f["file"] for f in man.get("features") or []]


def read_manifest(root: Path, key: str) -> dict[str, Any]:
    """The manifest of entry ``key`` of the store at ``root``, checked field by field.

    EntryNotFoundError when the entry has no manifest; StoreError, naming the entry and the
    command that removes it, when the manifest cannot be read or is malformed.
    """
    path = Path(root) / key / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except FileNotFoundError:
        raise EntryNotFoundError(f"entry {key} has no {MANIFEST} in {root}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"entry {key}: {MANIFEST} cannot be read ({exc}); remove the entry with "
            f"`eebench store rm {key[:SHORT_KEY]}`"
        ) from exc
    if not isinstance(man, dict):
        raise StoreError(f"entry {key}: {MANIFEST} is not a JSON object")
    problem = manifest_problem(man)
    if problem:
        raise StoreError(
            f"entry {key[:SHORT_KEY]}: {MANIFEST} {problem}; the entry cannot be trusted: "
            f"remove it (`eebench store rm {key[:SHORT_KEY]}`) and recreate it"
        )
    return man


def entry_keys(root: Path) -> list[str]:
    """Full keys of every finished entry (folders named by a key that hold a manifest)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if _KEY_RE.match(p.name) and (p / MANIFEST).is_file()
    )


def read_manifests(root: Path) -> dict[str, dict[str, Any]]:
    """Readable, well-formed manifests by key; broken entries are left out (see
    ``broken_entries``)."""
    out = {}
    for key in entry_keys(root):
        try:
            out[key] = read_manifest(root, key)
        except StoreError:
            continue
    return out


def broken_entries(root: Path) -> list[tuple[str, str]]:
    """(key, what is wrong) for every key-named folder whose manifest is missing,
    unreadable or malformed: listed by ``ls``, removable with ``rm KEY``."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if not (p.is_dir() and _KEY_RE.match(p.name)):
            continue
        try:
            read_manifest(root, p.name)
        except EntryNotFoundError:
            out.append((p.name, f"no {MANIFEST} (an interrupted write or a manual change)"))
        except StoreError as exc:
            out.append((p.name, str(exc)))
    return out


def ls_rows(root: Path) -> list[dict[str, Any]]:
    """The rows of ``ls`` as plain dicts (keys ``LS_COLUMNS``), oldest first: what the
    ``store ls`` command prints, without loading pandas."""
    rows = []
    for key, m in read_manifests(root).items():
        shape = m.get("shape") or [None, None, None]
        model = m.get("model")
        if not model and m.get("source"):
            model = f"{m.get('source_format', 'import')}:{Path(str(m['source'])).name}"
        rows.append({
            "key": key[:SHORT_KEY],
            "name": m.get("name") or "",
            "model": model or "",
            "dataset": m.get("dataset") or "",
            "split": m.get("split") or "",
            "N": shape[0],
            "K": shape[1],
            "C": shape[2],
            "dtype": m.get("dtype", ""),
            "kind": m.get("kind", ""),
            "created": m.get("created", ""),
        })
    return sorted(rows, key=lambda r: (str(r["created"]), r["key"]))


# ---------------------------------------------------------------- unfinished work


def tree_size(path: Path) -> int:
    """Bytes in a file, or in every file under a folder (files that vanish meanwhile count 0)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def partial_items(root: Path) -> list[tuple[Path, str, int, bool]]:
    """(path, kind, bytes, active) for everything in ``<root>/.partial/``: ``kind`` is
    "extraction" (resumable chunks) or "leftover" (what an interrupted write left);
    ``active`` when a live process holds it.

    The file-lock library is loaded only when there is something to look at, so listing a
    store without unfinished work stays light.
    """
    partial = Path(root) / PARTIAL
    if not partial.is_dir():
        return []
    paths = sorted(p for p in partial.iterdir() if not p.name.endswith(".lock"))
    if not paths:
        return []
    from filelock import FileLock, Timeout

    out = []
    for p in paths:
        lock_path = Path(str(p) + ".lock")
        had_lock = lock_path.exists()
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            active = True
        except OSError:  # a read-only store: nobody can be writing to it
            active = False
        else:
            active = False
            lock.release()
            # listing must leave the store as it found it (an extraction's lock stays:
            # a new extraction of that entry may be taking it right now)
            if not had_lock and not _KEY_RE.match(p.name):
                with contextlib.suppress(OSError):
                    lock_path.unlink()
        size = tree_size(p)
        kind = "extraction" if _KEY_RE.match(p.name) and (p / "job.json").is_file() else "leftover"
        out.append((p, kind, size, active))
    return out
