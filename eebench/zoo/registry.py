"""Model registry in the style of timm: plain functions, looked up by name.

Names are the user's handle on an architecture in suites, the CLI and the
logit store, so a typo must fail loudly with the names it was probably
meant to be, never fall back to something else.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from eebench.errors import EebenchError
from eebench.zoo.base import MultiExitModel

ModelFn = Callable[..., MultiExitModel]

_MODELS: dict[str, ModelFn] = {}
# Prefix families such as "timm/": name suffix -> model, plus a lister of valid suffixes.
_FAMILIES: dict[str, tuple[Callable[..., MultiExitModel], Callable[[str], list[str]]]] = {}


class UnknownModelError(EebenchError, KeyError):
    """Raised for a model name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_model(fn: ModelFn | None = None, *, name: str | None = None):
    """Register a model function under ``name`` (default: the function's name)."""

    def wrap(f: ModelFn) -> ModelFn:
        key = name or f.__name__
        if key in _MODELS and _MODELS[key] is not f:
            raise ValueError(f"model name {key!r} is already registered")
        _MODELS[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def register_family(
    prefix: str, factory: Callable[..., MultiExitModel], lister: Callable[[str], list[str]]
) -> None:
    """Register a family of models addressed as ``prefix + suffix`` (e.g. ``timm/resnet18``)."""
    _FAMILIES[prefix] = (factory, lister)


def _ensure_loaded() -> None:
    # Importing the zoo package imports every architecture module, which registers them.
    import eebench.zoo  # noqa: F401


def is_model(name: str) -> bool:
    _ensure_loaded()
    if name in _MODELS:
        return True
    return any(name.startswith(p) and len(name) > len(p) for p in _FAMILIES)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern; family members only when the
    pattern names the family prefix (``timm/*``), since families can hold thousands."""
    _ensure_loaded()
    names = sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))
    for prefix, (_, lister) in _FAMILIES.items():
        if pattern.startswith(prefix):
            names += [prefix + s for s in lister(pattern[len(prefix) :])]
    return names


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def close_matches(name: str, n: int = 5) -> list[str]:
    _ensure_loaded()
    return difflib.get_close_matches(name, list(_MODELS), n=n, cutoff=0.4)


def create_model(name: str, checkpoint: str | None = None, **overrides: Any) -> MultiExitModel:
    """Build a registered model; ``checkpoint`` strict-loads weights from a local file.

    ``overrides`` go to the model function (``num_classes=10``, ``exits=[1, 2]``, ...).
    """
    _ensure_loaded()
    if name in _MODELS:
        model = _MODELS[name](**overrides)
    else:
        for prefix, (factory, _) in _FAMILIES.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                model = factory(name[len(prefix) :], **overrides)
                break
        else:
            hint = close_matches(name)
            msg = f"unknown model {name!r}."
            if hint:
                msg += f" Did you mean: {', '.join(hint)}?"
            msg += " `eebench zoo list` shows every registered name"
            if _FAMILIES:
                msg += "; families: " + ", ".join(p + "<name>" for p in sorted(_FAMILIES))
            raise UnknownModelError(msg + ".")
    if not getattr(model.config, "name", None):
        model.config.name = name
    if checkpoint is not None:
        from eebench.zoo.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model


def describe_model(name: str, **overrides: Any) -> dict[str, Any]:
    """Name, exits, input size and classes of a model, built on the meta device (no memory, no
    compute), so the whole zoo can be listed in a second."""
    import torch

    try:
        with torch.device("meta"):
            model = create_model(name, **overrides)
    except (RuntimeError, NotImplementedError) as exc:
        if "meta" not in str(exc):
            raise
        # some constructors read tensor values while building (older timm ViTs call
        # .item() on a linspace): build those on the CPU instead
        model = create_model(name, **overrides)
    cfg = model.config
    return {
        "name": name,
        "exits": len(model.exits),
        "exit_names": list(model.exits),
        "input_size": "x".join(str(s) for s in cfg.input_size),
        "num_classes": cfg.num_classes,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def model_table(pattern: str = "*") -> list[dict[str, Any]]:
    """``describe_model`` for every registered name matching ``pattern``."""
    return [describe_model(n) for n in list_models(pattern)]
