"""Import and export of other tools' logit caches.

Most published early-exit results exist only as someone's cached outputs: a
numpy archive of per-exit logits, or MSDNet's ``logits_single.pth`` of
softmax probabilities. Importing them into the store puts them on the same
footing as our own extractions (same checks, same policies, same reports),
keyed by the source file's bytes so a re-import finds the same entry.

torch is imported only to read ``.pth`` files.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eebench.store.logitset import KINDS, LogitSet
from eebench.store.logitstore import LogitStore, StoreError, atomic_file, file_sha256
from eebench.store.validate import check_costs, check_values

LAYOUTS = ("auto", "knc", "nkc")


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


def load_npz_logits(
    path: str | os.PathLike[str],
    costs: Sequence[float] | np.ndarray | None = None,
    layout: str = "auto",
) -> LogitSet:
    """Read an .npz of per-exit logits as a LogitSet (in memory).

    The archive holds ``logits`` (or ``probabilities``), 3-D in either axis
    order, and ``labels``; optionally ``costs``, ``ids``, ``exit_names``,
    ``kind`` and ``layout`` (an order the file declares is used when ``layout``
    is "auto"). ``costs`` given here override the file's.
    """
    p = _check_file(path)
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
                values, kind = z["logits"], "logits"
            elif "probabilities" in files:
                values, kind = z["probabilities"], "probabilities"
            else:
                raise StoreError(
                    f"{p} has no 'logits' array (it has {sorted(files)}); "
                    "save per-exit logits as 'logits'"
                )
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
    if not np.issubdtype(values.dtype, np.floating):
        raise StoreError(f"logits in {p} have dtype {values.dtype}; expected floating point")
    if layout == "auto" and declared in ("knc", "nkc"):
        layout = declared
    resolved = resolve_layout(values.shape, labels.shape[0], layout)
    if resolved == "knc":
        values = np.ascontiguousarray(np.swapaxes(values, 0, 1))
    check_values(values, kind, f"{p}: '{kind}'")
    if costs is None:
        if file_costs is None:
            raise StoreError(
                f"{p} has no 'costs' array; give the cumulative cost of each of the "
                f"{values.shape[1]} exits (e.g. costs=[1, 2, ...] or --costs 1,2,...)"
            )
        costs = file_costs
    ls = LogitSet(
        logits=values,
        labels=labels,
        costs=np.asarray(_costs_list(costs, f"{p}: costs" if costs is file_costs else "costs")),
        exit_names=exit_names,
        ids=ids,
        kind=kind,
        manifest={"source": str(p.resolve()), "source_format": "npz", "layout": resolved},
    )
    return ls


def _import(store: LogitStore, ls: LogitSet, identity: dict[str, Any], name: str | None,
            overwrite: bool) -> str:
    """Put unless the same import is already there.

    An existing entry of the same file and costs is returned; it takes ``name`` if it has
    none, and keeps the name it has otherwise (the call then fails and says so). When
    several processes import at once, one commits and the others find its entry.
    """
    from eebench.store.logitstore import EntryExistsError, identity_key

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


def import_npz(
    store: LogitStore,
    path: str | os.PathLike[str],
    costs: Sequence[float] | np.ndarray | None = None,
    name: str | None = None,
    layout: str = "auto",
    overwrite: bool = False,
) -> str:
    """Import an .npz (see ``load_npz_logits``) into ``store``; returns the key.

    The identity is the file's sha256, the costs and the axis order, so
    importing the same file with the same costs again returns the same entry.
    """
    ls = load_npz_logits(path, costs=costs, layout=layout)
    p = Path(path).expanduser()
    identity = {
        "source_format": "npz",
        "source_sha256": file_sha256(p),
        "costs": _costs_list(ls.costs),
        "layout": ls.manifest["layout"],
    }
    return _import(store, ls, identity, name, overwrite)


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


def export_npz(store: LogitStore, ref: str, path: str | os.PathLike[str]) -> Path:
    """Write an entry as .npz: logits (K,N,C), labels, costs, ids, exit_names, kind, layout."""
    ls = store.get(ref)
    out = Path(path).expanduser()
    if out.is_dir():
        raise StoreError(f"{out} is a folder; give a file path such as {out / 'logits.npz'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as f:
        np.savez(
            f,
            logits=np.ascontiguousarray(np.swapaxes(np.asarray(ls.logits), 0, 1)),
            labels=ls.labels,
            costs=ls.costs,
            ids=ls.ids,
            exit_names=np.asarray(ls.exit_names, dtype=str),
            kind=np.asarray(ls.kind),
            layout=np.asarray("knc"),
        )
    return out
