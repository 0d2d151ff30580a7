"""Strict loading of official checkpoints.

A partial load gives a model that runs and reports plausible but wrong
accuracy, the worst kind of benchmark error; so every load is strict, and a
mismatch names the first missing and unexpected keys and differing shapes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eebench.errors import EebenchError

CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "module")


class CheckpointReadError(EebenchError, ValueError):
    """A checkpoint file that cannot be read safely (empty, truncated, not torch, pickled code)."""


class CheckpointMismatchError(EebenchError, RuntimeError):
    """The checkpoint's keys or shapes do not match the model."""


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state_dict inside the usual containers and strip a ``module.`` prefix."""
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            break
        seen += 1
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(
            f"checkpoint holds a {type(obj).__name__}, not a state_dict; expected a dict of "
            f"tensors, possibly inside one of {CONTAINER_KEYS}"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointMismatchError(
            f"no tensors found in the checkpoint (top-level keys: {list(obj)[:10]}); "
            f"expected a state_dict, possibly inside one of {CONTAINER_KEYS}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def describe_mismatch(
    model_sd: Mapping[str, torch.Tensor], ckpt_sd: Mapping[str, torch.Tensor], limit: int = 5
) -> str:
    """A readable summary of how two state_dicts differ; empty when they match."""
    missing = [k for k in model_sd if k not in ckpt_sd]
    unexpected = [k for k in ckpt_sd if k not in model_sd]
    shapes = [
        f"{k}: checkpoint {tuple(ckpt_sd[k].shape)} vs model {tuple(model_sd[k].shape)}"
        for k in model_sd
        if k in ckpt_sd and tuple(ckpt_sd[k].shape) != tuple(model_sd[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, first: {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:limit]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, first: {shapes[:limit]}")
    return "; ".join(parts)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Strict-load ``path`` into ``model``; returns the state_dict that was loaded.

    A model may define ``convert_checkpoint(state_dict) -> state_dict`` to map
    an official layout onto its own (documented in the model's docstring).
    """
    return load_checkpoint_object(model, read_checkpoint(path), str(path))


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object a checkpoint file holds, read with ``weights_only=True`` on the CPU."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointReadError(f"checkpoint {path} is a folder; give the path of a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; give the path of a local file")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"checkpoint {path} is empty (0 bytes); copy it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 torch raises EOFError, UnpicklingError, RuntimeError, ...
        text = " ".join(str(exc).split())
        # torch's own text advises weights_only=False (arbitrary code); keep only the cause
        detail = text.split("WeightsUnpickler error:")[-1].split(" Check the documentation")[0]
        if "weights_only" in detail:
            detail = ""
        raise CheckpointReadError(
            f"checkpoint {path} cannot be read as a PyTorch file of tensors "
            f"(torch.load with weights_only=True: {type(exc).__name__}"
            f"{': ' + detail.strip()[:200] if detail.strip() else ''}); "
            "it is truncated, not a torch checkpoint, or holds Python objects eebench will not "
            "unpickle. Re-save it as a state_dict (torch.save(model.state_dict(), path))"
        ) from None


def load_checkpoint_object(model: nn.Module, obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Strict-load an already read checkpoint object (``source`` names it in errors)."""
    sd = unwrap_state_dict(obj)
    convert = getattr(model, "convert_checkpoint", None)
    if callable(convert):
        sd = convert(sd)
    problem = describe_mismatch(model.state_dict(), sd)
    if problem:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise CheckpointMismatchError(f"{source} does not match {name}: {problem}")
    model.load_state_dict(sd, strict=True)
    return sd


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of the weights (names, shapes, dtypes and bytes), stable across runs."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
