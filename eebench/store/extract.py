"""Run a multi-exit model over a data set once and cache every exit's logits (and, when
asked, each exit's pre-logit features: the input of the nn.Linear that made its logits).

Extracting ImageNet logits from a large model takes hours, and machines get
preempted. So the work is cut into chunks of samples, each written to its own
file in one atomic step; a rerun with the same identity keeps every chunk that
reads back whole and recomputes only the rest, and the finished entry is
assembled and committed atomically like any other store write. A rerun after
completion finds the entry by identity and does not touch the model.

torch is imported inside the functions only: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eebench.parallel import World
from eebench.parallel import current as current_world
from eebench.store.logitset import LogitSet
from eebench.store.logitstore import (
    FEATURE_FILE,
    EntryExistsError,
    LogitStore,
    StoreError,
    atomic_file,
    cast_logits,
    check_logit_dtype,
    extraction_identity,
    identity_key,
)
from eebench.store.validate import check_costs, check_features, check_values

JOB_FILE = "job.json"
#: Mixed precision an extraction may run in; it changes the logits, so it enters the identity.
AUTOCAST_DTYPES: dict[str, Any] = {}
CHUNK_PATTERN = "chunk_{:05d}.npz"
#: Member of a chunk file that holds exit k's features.
FEATURE_MEMBER = "features_{}"


def chunk_spans(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """The (start, stop) sample ranges of the chunks of an extraction of ``n`` samples."""
    return [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]


def read_chunk(
    path: Path, start: int, stop: int, dtype: np.dtype, *, features: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """A chunk's (logits, labels) if the file reads back whole and matches its span, else None;
    with ``features``, (logits, labels, one (n, D_k) array per exit), and a chunk without
    them (or with broken ones) is None too.

    npz members carry a CRC-32 that zipfile checks on reading, so a truncated
    file or a changed byte fails here and the chunk is recomputed.
    """
    n = stop - start
    try:
        with np.load(path, allow_pickle=False) as z:
            logits = z["logits"]
            labels = z["labels"]
            span = z["span"]
            if (
                span.shape != (2,)
                or tuple(int(v) for v in span) != (start, stop)
                or logits.ndim != 3
                or logits.shape[0] != n
                or logits.dtype != dtype
                or labels.shape != (n,)
            ):
                return None
            if not features:
                return logits, labels
            feats = [z[FEATURE_MEMBER.format(k)] for k in range(logits.shape[1])]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if any(f.ndim != 2 or f.shape[0] != n or f.dtype != dtype for f in feats):
        return None
    return logits, labels, feats


def _chunk_features(
    chunk: tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, list[np.ndarray]],
) -> list[np.ndarray]:
    """The per-exit features of a chunk read with ``features=True``; none without."""
    return chunk[2] if len(chunk) == 3 else []


def _write_chunk(path: Path, logits: np.ndarray, labels: np.ndarray, span: tuple[int, int],
                 features: list[np.ndarray] | None = None) -> None:
    # Any: mypy would check a **dict of arrays against savez's allow_pickle (a bool) too
    extra: dict[str, Any] = {FEATURE_MEMBER.format(k): f for k, f in enumerate(features or [])}
    with atomic_file(path) as f:
        np.savez(f, logits=logits, labels=labels, span=np.asarray(span, dtype=np.int64), **extra)


def _prepare_workdir(work: Path, job: dict[str, Any]) -> None:
    """Create the chunk folder; drop chunks written under different extraction settings."""
    work.mkdir(parents=True, exist_ok=True)
    for stray in work.glob("*.tmp-*"):  # left by a run killed mid-write
        stray.unlink(missing_ok=True)
    job_path = work / JOB_FILE
    old: dict[str, Any] | None = None
    if job_path.is_file():
        try:
            old = json.loads(job_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
    if old != job:
        for chunk in work.glob("chunk_*.npz"):
            chunk.unlink()
        with atomic_file(job_path, "w") as f:
            json.dump(job, f, indent=2)


def _labels_to_numpy(y: Any) -> np.ndarray:
    import torch

    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise StoreError(f"data set labels must be integer class indices, got {arr[:5]}...")
    return arr.astype(np.int64)


class _LinearTap:
    """Records the nn.Linear calls of a model so each exit's features can be found.

    An exit's features are the input of the final nn.Linear that produced its logits: the
    call whose output *is* the yielded tensor, else (a model that copies its logits) the
    last call whose output equals it. Only calls with a 2-D output are kept: logits are
    (batch, classes), and token-wise layers of a transformer (3-D) would hold gigabytes.
    Inputs are cloned on record, so a later in-place operation cannot change them.
    """

    def __init__(self, model: Any) -> None:
        from torch import nn

        self.calls: list[tuple[Any, Any]] = []  # (output, input) in call order
        self.handles = [m.register_forward_hook(self._hook, with_kwargs=True)
                        for m in model.modules() if isinstance(m, nn.Linear)]
        cfg = getattr(model, "config", None)
        self.model_name = getattr(cfg, "name", None) or type(model).__name__
        self.exit_names = list(getattr(model, "exits", []) or [])

    def _hook(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        if getattr(output, "ndim", None) == 2 and x is not None:
            self.calls.append((output, x.detach().clone()))

    def features(self, k: int, logits: Any) -> Any:
        """Exit ``k``'s features (batch, D_k) as float32 on the CPU, or a clear error."""
        import torch

        found = next((x for out, x in reversed(self.calls) if out is logits), None)
        if found is None:
            found = next((x for out, x in reversed(self.calls)
                          if out.shape == logits.shape and out.dtype == logits.dtype
                          and torch.equal(out, logits)), None)
        if found is None:
            name = f" ({self.exit_names[k]})" if k < len(self.exit_names) else ""
            raise StoreError(
                f"exit {k}{name} of model {self.model_name}: exit {k}'s logits do not come from "
                "an nn.Linear; features cannot be stored for this model (extract without "
                "features)"
            )
        return found.flatten(1).float().cpu()

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.calls.clear()


def _forward(model: Any, x: Any, tap: _LinearTap | None) -> tuple[list[Any], list[Any] | None]:
    """The model's per-exit logits of batch ``x`` and, with ``tap``, each exit's features."""
    if tap is None:
        return model(x), None
    if not hasattr(model, "iter_exits"):
        raise StoreError(
            f"features need a MultiExitModel (one with iter_exits); {type(model).__name__} has "
            "none: extract without features"
        )
    tap.calls.clear()
    outs, feats = [], []
    try:
        for k, (_, logits) in enumerate(model.iter_exits(x)):
            outs.append(logits)
            feats.append(tap.features(k, logits))
    finally:
        tap.calls.clear()
    return outs, feats


def _run_chunk(
    model: Any,
    dataset: Any,
    start: int,
    stop: int,
    *,
    batch_size: int,
    num_workers: int,
    device: Any,
    dtype: np.dtype,
    num_exits: int | None,
    bar: Any,
    autocast: str | None = None,
    channels_last: bool = False,
    features: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    import contextlib as _ctx

    import torch
    from torch.utils.data import DataLoader, Subset

    on_gpu = str(device).startswith("cuda")
    loader = DataLoader(
        Subset(dataset, range(start, stop)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=on_gpu,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    amp = (torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[autocast])
           if autocast else _ctx.nullcontext())
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    feat_blocks: list[list[np.ndarray]] = []
    tap = _LinearTap(model) if features else None
    try:
        for batch in loader:
            _run_batch(model, batch, tap, device=device, on_gpu=on_gpu, amp=amp,
                       channels_last=channels_last, num_exits=num_exits, dtype=dtype,
                       first=start + sum(len(b) for b in blocks), blocks=blocks,
                       labels=labels, feat_blocks=feat_blocks)
            bar.update(blocks[-1].shape[0])
    finally:
        if tap is not None:
            tap.close()
    feats = ([np.concatenate([fb[k] for fb in feat_blocks], axis=0)
              for k in range(len(feat_blocks[0]))] if features else None)
    return np.concatenate(blocks, axis=0), np.concatenate(labels, axis=0), feats


def _run_batch(model: Any, batch: Any, tap: _LinearTap | None, *, device: Any, on_gpu: bool,
               amp: Any, channels_last: bool, num_exits: int | None, dtype: np.dtype, first: int,
               blocks: list[np.ndarray], labels: list[np.ndarray],
               feat_blocks: list[list[np.ndarray]]) -> None:
    """Run one batch and append its logits, labels (and features) to the lists."""
    import torch

    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise StoreError(
            "the data set must return (image_tensor, label) pairs; got "
            f"{type(batch).__name__} batches"
        )
    x, y = batch[0], batch[1]
    x = x.to(device, non_blocking=on_gpu)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with amp:
        outs, feats = _forward(model, x, tap)
    if isinstance(outs, torch.Tensor):
        raise StoreError(
            "the model returned one tensor; a MultiExitModel returns a list with one "
            "logits tensor per exit"
        )
    outs = list(outs)
    if num_exits is not None and len(outs) != num_exits:
        raise StoreError(f"the model returned {len(outs)} exits, expected {num_exits}")
    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise StoreError(
            f"every exit must return (batch, classes) logits of one shape, got {sorted(shapes)}"
        )
    block = torch.stack([o.detach().float() for o in outs], dim=1).cpu().numpy()
    where = f"samples {first}..{first + len(block) - 1}"
    check_values(block, "logits", f"the model's logits for {where}")
    lab = _labels_to_numpy(y)
    if lab.shape[0] != block.shape[0]:
        raise StoreError(f"{lab.shape[0]} labels for a batch of {block.shape[0]} images")
    if feats is not None:
        arrays = []
        for k, f in enumerate(feats):
            arr = f.numpy()
            check_features(arr, f"the model's exit-{k} features for {where}")
            arrays.append(cast_logits(arr, dtype))
        feat_blocks.append(arrays)
    blocks.append(cast_logits(block, dtype))
    labels.append(lab)


def extract_logits(
    model: Any,
    dataset: Any,
    store: LogitStore,
    identity: Mapping[str, Any],
    *,
    name: str | None = None,
    costs: Sequence[float] | np.ndarray | None = None,
    cost_counter: str | Mapping[str, Any] | None = None,
    exit_names: Sequence[str] | None = None,
    batch_size: int = 64,
    chunk_size: int = 1024,
    dtype: str = "float32",
    device: Any = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    autocast: str | None = None,
    channels_last: bool = False,
    world: World | None = None,
    features: bool = False,
) -> str:
    """Cache ``model``'s per-exit logits on ``dataset`` in ``store``; returns the entry key.

    ``dataset`` is map-style, item ``i`` = (image tensor, label), in the order
    the entry keeps; an ``ids`` attribute (one id per item) is stored, else
    0..N-1. ``identity`` says what determines the logits (see
    ``extraction_identity``); ``dtype`` is added to it. ``costs`` are the
    cumulative per-exit costs (one per exit; stored as NaN when None) and
    ``cost_counter`` describes how they were counted (tool, unit, convention).
    An existing entry is returned at once (renamed to ``name`` if given).
    Killed runs resume from their finished chunks in ``<root>/.partial/<key>/``.

    ``autocast`` ("bf16" or "fp16") runs the model in mixed precision and enters the
    identity (it changes the logits); ``channels_last`` and ``num_workers`` (DataLoader
    workers; memory is pinned on a GPU) change only speed. Under ``torchrun`` (``world``,
    default: the environment's) every rank computes its own chunks (round robin) into the
    shared work folder and rank 0 assembles and commits the entry, so the entry is the same
    whatever the world size, and a run killed under one world size resumes under another.

    ``features`` also stores each exit's pre-logit features, the input of the nn.Linear that
    produced its logits (``features_{k}.npy``, (N, D_k), in ``dtype``), for calibrations
    such as last-layer Laplace; it enters the identity as ``"features": true`` (a model
    whose exits do not end in an nn.Linear is refused). Without it the identity, and so
    every existing key, is unchanged.
    """
    dt = check_logit_dtype(dtype)
    _check_batching(batch_size, chunk_size)
    ident = _full_identity(identity, dt, features=features, autocast=autocast)
    key = identity_key(ident)
    world = world or current_world()

    if _found(store, key, name):
        return key
    store.check_name(name, key)  # fail before hours of work, not after
    num_exits, exit_names, costs = _check_exits(model, exit_names, costs)
    n, ids = _sample_ids(dataset)

    args = {"n": n, "ids": ids, "costs": costs, "cost_counter": cost_counter,
            "exit_names": exit_names, "num_exits": num_exits, "name": name,
            "batch_size": batch_size, "chunk_size": chunk_size, "dt": dt, "device": device,
            "num_workers": num_workers, "progress": progress, "autocast": autocast,
            "channels_last": channels_last, "world": world, "features": features}
    if world.size > 1:  # the ranks share the work folder; rank 0 alone commits
        return _extract(model, dataset, store, key, ident, **args)
    with _extraction_lock(store, key):
        if _found(store, key, name):  # another process extracted it while this one waited
            return key
        return _extract(model, dataset, store, key, ident, **args)


def _check_batching(batch_size: Any, chunk_size: Any) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise StoreError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise StoreError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _full_identity(identity: Mapping[str, Any], dt: np.dtype, *, features: Any,
                   autocast: str | None) -> dict[str, Any]:
    """``identity`` with what else changes the logits: the dtype, features (only when
    stored, so that every key made without them stays the same) and autocast."""
    ident = dict(identity)
    if "dtype" in ident and ident["dtype"] != dt.name:
        raise StoreError(
            f"identity says dtype {ident['dtype']!r} but extraction asks for {dt.name!r}; "
            "leave dtype out of the identity (it is added) or make the two agree"
        )
    ident["dtype"] = dt.name
    if not isinstance(features, bool):
        raise StoreError(f"features must be True or False, got {features!r}")
    if "features" in ident and ident["features"] is not features:
        raise StoreError(
            f"identity says features {ident['features']!r} but extraction asks for {features!r}; "
            "leave features out of the identity (it is added) or make the two agree"
        )
    if features:
        ident["features"] = True
    if autocast is not None:
        _autocast_dtypes()
        if autocast not in AUTOCAST_DTYPES:
            raise StoreError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)} or None, got {autocast!r}")
        ident["autocast"] = autocast
    return ident


def _found(store: LogitStore, key: str, name: str | None) -> bool:
    """Whether the entry exists already (then renamed to ``name``, if given)."""
    if not store.has_key(key):
        return False
    if name is not None:
        store.rename(key, name, replace=False)
    return True


def _check_exits(
    model: Any, exit_names: Sequence[str] | None, costs: Sequence[float] | np.ndarray | None,
) -> tuple[int | None, Sequence[str] | None, np.ndarray | None]:
    """(number of exits (None when the model does not say), exit names (the model's by
    default), checked costs): one cost and one name per exit, before hours of work."""
    model_exits = list(getattr(model, "exits", []) or [])
    num_exits = len(model_exits) or None
    if exit_names is None:
        exit_names = model_exits or None
    if exit_names is not None and num_exits is not None and len(exit_names) != num_exits:
        raise StoreError(f"{len(exit_names)} exit names for a model with {num_exits} exits")
    if costs is None:
        return num_exits, exit_names, None
    checked = check_costs(costs, "costs")
    expect = num_exits or (len(exit_names) if exit_names is not None else None)
    if expect is not None and checked.shape[0] != expect:
        raise StoreError(
            f"{checked.shape[0]} costs for a model with {expect} exits; give one cumulative "
            "cost per exit"
        )
    return num_exits, exit_names, checked


def _sample_ids(dataset: Any) -> tuple[int, np.ndarray]:
    """The number of items of a non-empty data set and their ids (its ``ids``, else 0..N-1)."""
    n = len(dataset)
    if n == 0:
        raise StoreError("the data set is empty; nothing to extract")
    ids = getattr(dataset, "ids", None)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids).reshape(-1)
    if ids.shape[0] != n:
        raise StoreError(f"the data set has {n} items but {ids.shape[0]} ids")
    return n, ids


def extract_view_logits(
    model: Any,
    model_name: str,
    view: Any,
    split: str,
    store: Any,
    *,
    costs: Any = None,
    weights_sha256: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    autocast: str | None = None,
    num_workers: int = 0,
    world: Any = None,
    chunk_size: int = 1024,
    features: bool = False,
) -> str:
    """Cache ``model``'s logits on one split view (with the model's eval transform) under
    the identity every caller shares, so a suite run and an accuracy check find each
    other's entries; returns the store key. ``costs`` is the model's ExitCosts, if counted;
    ``features`` stores each exit's pre-logit features too (a separate entry)."""
    from eebench.zoo.checkpoint import state_dict_sha256

    view = view.with_eval_transform(model.config)
    desc = view.describe()
    identity = extraction_identity(
        model=model_name,
        model_config=model.config.to_dict(),
        weights_sha256=weights_sha256 or state_dict_sha256(model),
        dataset=desc["name"],
        dataset_params={**desc["params"], "split_rule": desc.get("split_rule")},
        split=split,
        split_indices=view.ids,
        transform=desc["transform"],
        dtype="float32",
    )
    return extract_logits(
        model, view, store, identity,
        costs=costs.macs if costs is not None else None,
        cost_counter=(
            {"convention": costs.convention, "input_size": list(costs.input_size)}
            if costs is not None else None
        ),
        exit_names=list(model.exits),
        batch_size=batch_size,
        device=device,
        progress=progress,
        autocast=autocast,
        num_workers=num_workers,
        world=world,
        chunk_size=chunk_size,
        features=features,
    )


@contextlib.contextmanager
def _extraction_lock(store: LogitStore, key: str) -> Iterator[None]:
    """One process at a time fills ``.partial/<key>``; a second one waits, then finds the
    entry. The held lock also tells ``store gc`` that the chunks are in use."""
    from filelock import FileLock, Timeout

    store._mkdir(store.partial_dir)
    lock = FileLock(str(store.partial_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process that is extracting entry {key[:12]} ...",
              file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _extract(
    model: Any, dataset: Any, store: LogitStore, key: str, ident: dict[str, Any], *, n: int,
    ids: np.ndarray, costs: np.ndarray | None, cost_counter: str | Mapping[str, Any] | None,
    exit_names: Sequence[str] | None, num_exits: int | None, name: str | None, batch_size: int,
    chunk_size: int, dt: np.dtype, device: Any, num_workers: int, progress: bool,
    autocast: str | None, channels_last: bool, world: World, features: bool,
) -> str:
    import torch
    from tqdm.auto import tqdm

    work = store.partial_dir / key
    # what makes chunks interchangeable: not the rank, the world size or the GPU's index
    job = {"key": key, "n": n, "chunk_size": chunk_size, "batch_size": batch_size,
           "dtype": dt.name, "device": torch.device(device).type, "autocast": autocast}
    if world.is_main:
        _prepare_workdir(work, job)
    world.barrier()
    work.mkdir(parents=True, exist_ok=True)  # rank 0 made it; never clear it from another rank
    spans = chunk_spans(n, chunk_size)
    mine = [i for i in range(len(spans)) if world.owns(i)]
    todo = [i for i in mine
            if read_chunk(work / CHUNK_PATTERN.format(i), *spans[i], dt, features=features) is None]
    total = sum(spans[i][1] - spans[i][0] for i in mine)
    done_samples = total - sum(spans[i][1] - spans[i][0] for i in todo)

    if todo:
        was_training = bool(getattr(model, "training", False))
        if hasattr(model, "to"):
            model.to(device)
        if hasattr(model, "eval"):
            model.eval()
        rank = f" rank {world.rank}/{world.size}" if world.size > 1 else ""
        bar = tqdm(total=total, initial=done_samples, unit="img", desc=f"extract {key[:12]}{rank}",
                   disable=not progress, leave=False)
        try:
            with torch.no_grad():
                for i in todo:
                    s, e = spans[i]
                    logits, labels, feats = _run_chunk(
                        model, dataset, s, e, batch_size=batch_size, num_workers=num_workers,
                        device=device, dtype=dt, num_exits=num_exits, bar=bar,
                        autocast=autocast, channels_last=channels_last, features=features,
                    )
                    _write_chunk(work / CHUNK_PATTERN.format(i), logits, labels, (s, e), feats)
        finally:
            bar.close()
            if was_training and hasattr(model, "train"):
                model.train(True)

    world.barrier()  # every rank's chunks are on disk
    failure: Exception | None = None
    if world.is_main:
        try:
            _assemble(store, work, key, ident, spans, ids, dt, costs, cost_counter, exit_names,
                      name, {**job, "world_size": world.size}, features=features)
        except Exception as exc:  # the other ranks must not wait forever at the barrier
            failure = exc
    world.barrier()  # the entry is committed (or rank 0 failed)
    if failure is not None:
        raise failure
    if not store.has_key(key):
        raise StoreError(f"rank 0 did not commit entry {key[:12]}; see its output")
    return key


def _autocast_dtypes() -> None:
    import torch

    AUTOCAST_DTYPES.update({"bf16": torch.bfloat16, "fp16": torch.float16})


def _assemble(
    store: LogitStore,
    work: Path,
    key: str,
    ident: dict[str, Any],
    spans: list[tuple[int, int]],
    ids: np.ndarray,
    dt: np.dtype,
    costs: np.ndarray | None,
    cost_counter: str | Mapping[str, Any] | None,
    exit_names: Sequence[str] | None,
    name: str | None,
    job: dict[str, Any],
    *,
    features: bool = False,
) -> str:
    """Concatenate the chunks into a new entry and commit it; then drop the chunks."""
    n = spans[-1][1]
    first = read_chunk(work / CHUNK_PATTERN.format(0), *spans[0], dt, features=features)
    if first is None:
        raise StoreError(f"chunk 0 of {key[:12]} vanished or broke during extraction; rerun")
    _, k, c = first[0].shape
    widths = [f.shape[1] for f in _chunk_features(first)]
    with store.scratch(key) as tmp:
        mm = np.lib.format.open_memmap(tmp / "logits.npy", mode="w+", dtype=dt, shape=(n, k, c))
        fmm = [np.lib.format.open_memmap(tmp / FEATURE_FILE.format(j), mode="w+", dtype=dt,
                                         shape=(n, d)) for j, d in enumerate(widths)]
        labels = np.empty(n, dtype=np.int64)
        try:
            for i, (s, e) in enumerate(spans):
                got = first if i == 0 else read_chunk(work / CHUNK_PATTERN.format(i), s, e, dt,
                                                      features=features)
                if got is None:
                    raise StoreError(
                        f"chunk {i} of {key[:12]} vanished or broke during extraction; rerun"
                    )
                if got[0].shape[1:] != (k, c):
                    raise StoreError(
                        f"chunk {i} holds {got[0].shape[1:]} (exits, classes), chunk 0 {(k, c)}; "
                        f"remove {work} and rerun"
                    )
                mm[s:e] = got[0]
                labels[s:e] = got[1]
                for j, f in enumerate(_chunk_features(got)):
                    if f.shape[1] != widths[j]:
                        raise StoreError(
                            f"chunk {i} holds exit-{j} features of width {f.shape[1]}, chunk 0 "
                            f"{widths[j]}; remove {work} and rerun"
                        )
                    fmm[j][s:e] = f
            mm.flush()
            for f in fmm:
                f.flush()
        finally:
            del mm
            fmm.clear()
        logits = np.load(tmp / "logits.npy", mmap_mode="r", allow_pickle=False)
        feats = [np.load(tmp / FEATURE_FILE.format(j), mmap_mode="r", allow_pickle=False)
                 for j in range(len(widths))] if features else None
        manifest: dict[str, Any] = {"extraction": {k_: v for k_, v in job.items() if k_ != "key"}}
        if cost_counter is not None:
            manifest["cost_counter"] = (
                dict(cost_counter) if isinstance(cost_counter, Mapping) else str(cost_counter)
            )
        if costs is None:
            manifest["costs_note"] = "no costs were given at extraction; costs are NaN"
        ls = LogitSet(
            logits=logits,
            labels=labels,
            costs=costs if costs is not None else np.full(k, np.nan),
            exit_names=list(exit_names) if exit_names is not None else [],
            ids=ids,
            kind="logits",
            manifest=manifest,
            features=feats,
        )
        store.check_name(name, key)
        try:
            store._finish(tmp, key, ls, ident, name, overwrite=False, dtype=dt)
        except EntryExistsError:
            if not store.has_key(key):
                raise
            # another run of the same identity committed first: same logits, keep theirs
        del logits, feats, ls
    shutil.rmtree(work, ignore_errors=True)
    return key

