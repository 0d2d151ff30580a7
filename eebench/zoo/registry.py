"""Model registry in the style of timm: plain functions, looked up by name.

Names are the user's handle on an architecture in suites, the CLI and the
logit store, so a typo must fail loudly with the names it was probably
meant to be, never fall back to something else. Registered models live in
:data:`MODELS`, an :class:`eebench.registry.Registry` like every other kind of
name (trimmed, lower-case names; close matches on a typo). Families such as
``timm/`` sit on top of it: a prefix and a factory that builds any member,
since a family can hold thousands of names that are never listed up front.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eebench.errors import InputTypeError, UnknownNameError
from eebench.registry import Registry, normalize_name

if TYPE_CHECKING:
    from eebench.zoo.base import MultiExitModel

ModelFn = Callable[..., "MultiExitModel"]

# Importing the zoo package imports every architecture module, which registers its models.
MODELS: Registry[ModelFn] = Registry("model", where="eebench zoo list", modules=("eebench.zoo",))
# Prefix families such as "timm/": name suffix -> model, plus a lister of valid suffixes.
_FAMILIES: dict[str, tuple[Callable[..., MultiExitModel], Callable[[str], list[str]]]] = {}


class UnknownModelError(UnknownNameError):
    """Raised for a model name that is neither registered nor a member of a family."""


def register_model(fn: ModelFn | None = None, *, name: str | None = None) -> Any:
    """Register a model function under ``name`` (default: the function's name)."""

    def wrap(f: ModelFn) -> ModelFn:
        return MODELS.register(name or f.__name__, f)

    return wrap(fn) if fn is not None else wrap


def register_family(
    prefix: str, factory: Callable[..., MultiExitModel], lister: Callable[[str], list[str]]
) -> None:
    """Register a family of models addressed as ``prefix + suffix`` (e.g. ``timm/resnet18``)."""
    _FAMILIES[normalize_name(prefix)] = (factory, lister)


def _ensure_loaded() -> None:
    MODELS.names()  # imports eebench.zoo once, which registers the models and families


def _family(key: str) -> tuple[str, Callable[..., MultiExitModel]] | None:
    """(prefix, factory) of the family whose member ``key`` (a normalised name) is, if any."""
    for prefix, (factory, _) in _FAMILIES.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return prefix, factory
    return None


def model_name(name: str) -> str:
    """The registered form of a model name (trimmed, lower case), family members included;
    an unknown name fails with the close matches."""
    if not isinstance(name, str):
        raise InputTypeError(f"a model is given by name (a string), got {type(name).__name__}")
    _ensure_loaded()
    if name in MODELS:
        return MODELS.key(name)
    if _family(normalize_name(name)) is not None:
        return normalize_name(name)
    raise UnknownModelError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    """What an unknown model name fails with: close matches, where to list them, families."""
    msg = MODELS.unknown_message(name)
    if _FAMILIES:
        msg += " Families: " + ", ".join(p + "<name>" for p in sorted(_FAMILIES)) + "."
    return msg


def is_model(name: str) -> bool:
    _ensure_loaded()
    if not isinstance(name, str):
        return False
    return name in MODELS or _family(normalize_name(name)) is not None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern; family members only when the
    pattern names the family prefix (``timm/*``), since families can hold thousands."""
    pattern = normalize_name(pattern)
    names = [n for n in MODELS.names() if fnmatch.fnmatch(n, pattern)]
    for prefix, (_, lister) in _FAMILIES.items():
        if pattern.startswith(prefix):
            names += [prefix + s for s in lister(pattern[len(prefix) :])]
    return names


def list_families() -> list[str]:
    _ensure_loaded()
    return sorted(_FAMILIES)


def close_matches(name: str, n: int = 5) -> list[str]:
    return MODELS.close_matches(name, n=n)


def create_model(name: str, checkpoint: str | None = None, **overrides: Any) -> MultiExitModel:
    """Build a registered model; ``checkpoint`` strict-loads weights from a local file.

    ``overrides`` go to the model function (``num_classes=10``, ``exits=[1, 2]``, ...).
    The model's ``config.name`` is the registered form of ``name`` (lower case).
    """
    key = model_name(name)
    family = None if key in MODELS else _family(key)
    if family is None:
        model = MODELS[key](**overrides)
    else:
        prefix, factory = family
        model = factory(key[len(prefix) :], **overrides)
    if not getattr(model.config, "name", None):
        model.config.name = key
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
