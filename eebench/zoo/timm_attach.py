"""Any timm classifier as a multi-exit model: exits attached after its stages or blocks.

Researchers want a multi-exit baseline on architectures nobody has published an
early-exit version of, and they want it for the whole timm zoo (CNNs,
EfficientNet/MobileNet, ViT/DeiT, Swin, hybrids such as MobileViT), not for
the few families someone wrote code for. So nothing here is per family: the
split points come from timm's own description of each model, and are checked
by running the model once.

Why not ``forward_intermediates``: it runs from the image to the requested
block every time, so exit k+1 would redo the work of exit k, and neither it nor
``prune_intermediate_layers`` can resume a network where it stopped. What we
take from timm is the structure: ``feature_info`` names each model's stage or
block modules (the model's own ``blocks``/``stages``/``layers`` containers
where it has none).

Why a check run, rather than trusting those names: an exit after unit ``j`` is
only honest if running the units one by one reproduces the model, and only the
model knows what its ``forward_features`` does between units (position
embeddings, rotary tables, reshapes). We hook the named modules (with the
containers that hold them), run ``forward_features`` once on the meta device
(shapes only: no memory, no time; one real run on a zero image for models that
need values), and keep as the *trunk* the longest run of units, ending at the
unit of timm's last feature, in which each unit is called once, receives
exactly the tensor object the previous unit returned (unchanged: its version
counter did not move), and gets the same extra arguments (a rotary table, say)
as the others. What runs before the trunk is the *stem*; what
``forward_features`` does after it must be a chain of the model's own modules
(the final norm, EfficientNet's conv head) ending in the value it returns, so
that the last exit can be the model's own ``forward_head`` and give exactly the
backbone's logits. Models that fail these checks are refused with the reason
rather than split somewhere that changes what they compute: stages that hand
tuples or several tensors to each other (PiT, CrossViT, NASNet, HRNet) cannot
be split at all; work after the trunk that is not a chain of modules (CaiT's
and XCiT's class-attention blocks) keeps the model's own head out of reach, and
such a model needs ``own_head=False``.

Why the stem is run by the model's own code, stopped by an exception: the stem
is where models differ most (a ViT's ``_pos_embed`` is a method, not a module),
and re-implementing it per family is what we set out to avoid. A pre-hook on
the first trunk unit (or on the outermost container that is called with the
same tensor and nothing in between) raises, carrying the unit's input; the
trunk then runs unit by unit, so ``iter_exits`` does only the work exit k
needs and a consumer that stops iterating stops the network. The stem runs as
a call of the backbone module with a temporary ``forward``, so that forward
hooks see the backbone run: cost counters credit its own parameters (a ViT's
class token and position embedding) like everyone else's.

Why the heads look as they do: a head of ours should cost little and train
well on any feature format, so it pools first (timm's ``SelectAdaptivePool2d``
for NCHW/NHWC maps; the class token or the mean of the patch tokens for token
sequences, as the model's own ``global_pool``), then normalises the pooled
vector (a fresh copy of the model's final norm where its width matches, as for
ViTs; otherwise ``LayerNorm``), then a linear classifier. Pooling before the
norm gives the same logits as norm-then-pool for a class token, at a fraction
of the cost. The last exit, when it sits after the final unit, is the model's
own head (its final norm, pooling, pre-logits and classifier), so with the same
weights it reproduces the plain timm model.

Pretrained weights are never downloaded: ``pretrained_file`` loads a local timm
checkpoint into the backbone through timm's own loader (its key filters, its
classifier handling when ``num_classes`` differs).
"""

from __future__ import annotations

import copy
import difflib
import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import nn

from eebench.errors import InputError
from eebench.zoo.base import ModelConfig, MultiExitModel, check_keep, keep_rows
from eebench.zoo.registry import register_family

HEAD_KINDS = ("norm", "linear", "conv")
TOKEN_POOLS = ("token", "avg")
# Containers some timm models keep their stages or blocks in, for models without feature_info.
_STAGE_CONTAINERS = ("stages", "blocks", "layers", "features")
_WORKING_EXAMPLES = (
    "resnet18, convnext_atto, regnety_002, efficientnet_b0, mobilenetv3_small_100, "
    "deit_tiny_patch16_224, swin_tiny_patch4_window7_224, mobilevitv2_050"
)


# ----------------------------------------------------------------------------- heads


class TokenPool(nn.Module):
    """Pools a token sequence (N, L, C): the class token, or the mean of the patch tokens."""

    def __init__(self, mode: str, num_prefix_tokens: int) -> None:
        super().__init__()
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "token":
            return x[:, 0]
        return x[:, self.num_prefix_tokens :].mean(dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, num_prefix_tokens={self.num_prefix_tokens}"


def make_pool(fmt: str, token_pool: str, num_prefix_tokens: int) -> nn.Module:
    """Global pooling for one feature format: NCHW, NHWC, NLC (tokens) or NC (pooled)."""
    if fmt in ("NCHW", "NHWC"):
        from timm.layers import SelectAdaptivePool2d

        return SelectAdaptivePool2d(pool_type="avg", flatten=True, input_fmt=fmt)
    if fmt == "NLC":
        return TokenPool(token_pool, num_prefix_tokens)
    return nn.Identity()


class ExitHead(nn.Module):
    """Pooling, an optional norm of the pooled vector, and a linear classifier."""

    def __init__(self, pool: nn.Module, norm: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = pool
        self.norm = norm
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.pool(x)))


class ConvHead(nn.Module):
    """MSDNet's classifier: two 3x3 conv-BN-ReLU layers (the second strided), pooling, linear."""

    def __init__(self, fmt: str, in_channels: int, num_classes: int, width: int = 128) -> None:
        super().__init__()
        self.channels_last = fmt == "NHWC"
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.head = ExitHead(make_pool("NCHW", "avg", 0), nn.Identity(), width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.head(self.features(x))


# ----------------------------------------------------------------------------- structure probe


class _StemDone(Exception):
    """Raised by the pre-hook on the first trunk unit; carries that unit's input."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("stem done")
        self.args_ = args
        self.kwargs_ = kwargs


def _raise_stem_done(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    raise _StemDone(args, kwargs)


@dataclass
class _Call:
    """One module call seen by the probe."""

    pre: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    in_version: int | None
    post: int = -1
    out: Any = None
    out_version: int | None = None


def _version(obj: Any) -> int | None:
    return obj._version if isinstance(obj, torch.Tensor) else None


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def _same_extras(a: _Call, b: _Call) -> bool:
    if len(a.args) != len(b.args) or set(a.kwargs) != set(b.kwargs):
        return False
    return all(_same(x, y) for x, y in zip(a.args[1:], b.args[1:])) and all(
        _same(a.kwargs[k], b.kwargs[k]) for k in a.kwargs
    )


class _SplitModel(Protocol):
    """The two halves of a timm classifier's forward, which the attachment runs apart."""

    def forward_features(self, x: torch.Tensor) -> Any: ...

    def forward_head(self, x: Any) -> torch.Tensor: ...


def _halves(backbone: nn.Module) -> _SplitModel:
    """``backbone`` as the split model it is: ``_find_layout`` refuses a model without both
    halves before anything runs them."""
    return cast(_SplitModel, backbone)


class _ForwardFeatures(nn.Module):
    """Lets ``torch.func.functional_call`` run a backbone's ``forward_features``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> Any:
        return _halves(self.backbone).forward_features(x)


def _probe(
    backbone: nn.Module, input_size: tuple[int, int, int]
) -> tuple[dict[str, list[_Call]], Any]:
    """Run ``forward_features`` once with every module hooked; returns the calls and the result.

    Runs on the meta device (parameters swapped for meta tensors), so it costs
    neither memory nor time; a model whose forward needs real values falls
    back to one real run on a zero image.
    """
    calls: dict[str, list[_Call]] = {}
    counter = itertools.count()

    def pre_hook(name: str):
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            first = args[0] if args else None
            calls.setdefault(name, []).append(
                _Call(next(counter), args, dict(kwargs), _version(first))
            )

        return hook

    def post_hook(name: str):
        def hook(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            call = calls[name][-1]
            call.post, call.out, call.out_version = next(counter), out, _version(out)

        return hook

    wrapper = _ForwardFeatures(backbone)
    handles = []
    for name, mod in backbone.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
            handles.append(mod.register_forward_hook(post_hook(name), with_kwargs=True))
    modes = {m: m.training for m in backbone.modules()}
    backbone.eval()
    try:
        tensors = {
            k: torch.empty_like(v, device="meta")
            for k, v in itertools.chain(wrapper.named_parameters(), wrapper.named_buffers())
        }
        try:
            with torch.no_grad():
                x = torch.zeros((1, *input_size), device="meta")
                result = torch.func.functional_call(wrapper, tensors, (x,), strict=False)
        except Exception:
            calls.clear()
            first = next(itertools.chain(backbone.parameters(), backbone.buffers()), None)
            device = first.device if first is not None else torch.device("cpu")
            try:
                with torch.no_grad():
                    result = wrapper(torch.zeros((1, *input_size), device=device))
            except Exception as exc:
                raise InputError(
                    f"{type(backbone).__name__}.forward_features failed on a zero image of size "
                    f"{'x'.join(map(str, input_size))} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); give an input_size "
                    "this model accepts"
                ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return calls, result


@dataclass
class _Layout:
    """Where a backbone can be cut: found by ``_find_layout``."""

    stop_at: str  # module whose pre-hook ends the stem
    units: list[str]  # the trunk, in execution order
    unit_fmt: dict[str, str]  # feature format of each unit's output (NCHW, NHWC, NLC, NC, "")
    unit_channels: dict[str, int]
    post: list[str] | None  # modules from the last unit to forward_features' result; None: none
    features: list[str]  # feature_info module names, in order
    feature_unit: dict[int, str]  # feature index -> trunk unit whose output it is
    feature_reduction: dict[int, int]
    unit_size: dict[str, tuple[int, ...]] = field(default_factory=dict)  # spatial size, maps only


def _feature_modules(backbone: nn.Module) -> tuple[list[str], list[int], list[int]]:
    info = getattr(backbone, "feature_info", None)
    if not isinstance(info, (list, tuple)) or not info:
        return [], [], []
    try:
        names = [str(d["module"]) for d in info]
    except (TypeError, KeyError):
        return [], [], []
    chans = [int(d.get("num_chs", 0) or 0) for d in info]
    reds = [int(d.get("reduction", 0) or 0) for d in info]
    return names, chans, reds


def _get(backbone: nn.Module, name: str) -> nn.Module | None:
    try:
        return backbone.get_submodule(name)
    except AttributeError:
        return None


def _candidate_units(backbone: nn.Module, features: list[str]) -> list[str]:
    """Modules that may be trunk units, in no particular order.

    A feature module inside a Sequential/ModuleList makes every child of its
    outermost such container a candidate (EfficientNet's features name a few of
    its seven block stages; all seven must run). A feature module that is a
    direct child of the model makes every direct child a candidate except those
    containers (ResNet's stem convolution, pooling and layers; Inception's
    mixed blocks between the named ones).
    """
    containers: list[str] = []
    root_level = False
    for f in features:
        parts = f.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if isinstance(_get(backbone, prefix), (nn.Sequential, nn.ModuleList)):
                containers.append(prefix)
                break
        else:
            root_level = root_level or "." not in f
    if not containers and not root_level:
        containers = [
            c
            for c in _STAGE_CONTAINERS
            if isinstance(getattr(backbone, c, None), (nn.Sequential, nn.ModuleList))
        ]
    containers = list(dict.fromkeys(containers))
    out: dict[str, None] = {}
    if root_level:
        holders = {c.split(".")[0] for c in containers}
        out.update((n, None) for n, _ in backbone.named_children() if n not in holders)
    for c in containers:
        for child, _ in backbone.get_submodule(c).named_children():  # a container found above
            out[f"{c}.{child}"] = None
    return list(out)


def _fmt_and_channels(out: Any, num_chs: int, model_fmt: str) -> tuple[str, int]:
    if not isinstance(out, torch.Tensor):
        return "", 0
    shape = tuple(out.shape)
    if out.dim() == 4:
        if num_chs and shape[1] == num_chs and shape[-1] != num_chs:
            return "NCHW", shape[1]
        if num_chs and shape[-1] == num_chs and shape[1] != num_chs:
            return "NHWC", shape[-1]
        return (model_fmt, shape[-1]) if model_fmt == "NHWC" else ("NCHW", shape[1])
    if out.dim() == 3:
        return "NLC", shape[-1]
    if out.dim() == 2:
        return "NC", shape[-1]
    return "", 0


def _find_layout(backbone: nn.Module, timm_name: str, input_size: tuple[int, int, int]) -> _Layout:
    if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
        raise InputError(
            f"timm model {timm_name} ({type(backbone).__name__}) has no forward_features/"
            f"forward_head pair to split; timm classifiers such as {_WORKING_EXAMPLES} have one"
        )
    features, chans, reds = _feature_modules(backbone)
    if not any(_get(backbone, f) is not None for f in features):
        features, chans, reds = [], [], []
    candidates = _candidate_units(backbone, features)
    if not candidates:
        raise InputError(
            f"timm model {timm_name} ({type(backbone).__name__}) describes no stages or blocks "
            "(no usable feature_info, no blocks/stages/layers container), so there is nowhere "
            f"to attach exits; models that work include {_WORKING_EXAMPLES}"
        )
    calls, result = _probe(backbone, input_size)
    once = sorted(
        (u for u in candidates if len(calls.get(u, [])) == 1), key=lambda u: calls[u][0].pre
    )
    if not once:
        raise InputError(
            f"timm model {timm_name}: forward_features never called its stage modules "
            f"({', '.join(candidates[:4])}, ...) once each, so it cannot be split; "
            f"models that work include {_WORKING_EXAMPLES}"
        )

    def chained(a: _Call, b: _Call) -> bool:
        return (
            b.pre > a.post
            and bool(b.args)
            and b.args[0] is a.out
            and b.in_version == a.out_version
            and _same_extras(a, b)
        )

    links = [chained(calls[a][0], calls[b][0]) for a, b in zip(once, once[1:])]

    # A feature is read at the unit that returns its tensor: the unit itself if it is one, else
    # the latest unit returning the same object (Identity units pass it on unchanged).
    feature_unit: dict[int, str] = {}
    hint: dict[str, int] = {}
    for i, f in enumerate(features):
        fc = calls.get(f, [])
        if len(fc) != 1 or not isinstance(fc[0].out, torch.Tensor):
            continue
        same = [u for u in once if calls[u][0].out is fc[0].out]
        if same:
            u = f if f in same else same[-1]
            feature_unit[i] = u
            hint[u] = chans[i]
    end = max((once.index(u) for u in feature_unit.values()), default=len(once) - 1)
    start = end
    while start > 0 and links[start - 1]:
        start -= 1
    units = once[start : end + 1]
    feature_unit = {i: u for i, u in feature_unit.items() if u in units}

    # The stem ends at the outermost module that receives the first unit's input with nothing
    # else run in between (a Sequential holding the units, usually): stopping inside a called
    # container would leave it half-entered, which confuses tracers that hook module scopes.
    first = calls[units[0]][0]
    stop_at = units[0]
    parts = units[0].split(".")
    ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
    for anc in ancestors:
        cs = calls.get(anc, [])
        if (
            len(cs) != 1
            or len(cs[0].args) != 1
            or cs[0].kwargs
            or cs[0].args[0] is not first.args[0]
        ):
            continue
        if len(first.args) != 1 or first.kwargs:
            continue
        if not any(
            cs[0].pre < c.pre < first.pre
            for name, cl in calls.items()
            if name not in ancestors
            for c in cl
        ):
            stop_at = anc
            break

    model_fmt = str(getattr(backbone, "output_fmt", "NCHW"))
    unit_fmt: dict[str, str] = {}
    unit_channels: dict[str, int] = {}
    unit_size: dict[str, tuple[int, ...]] = {}
    for u in units:
        out = calls[u][0].out
        fmt, c = _fmt_and_channels(out, hint.get(u, 0), model_fmt)
        unit_fmt[u], unit_channels[u] = fmt, c
        if fmt == "NCHW":
            unit_size[u] = tuple(out.shape[2:])
        elif fmt == "NHWC":
            unit_size[u] = tuple(out.shape[1:3])

    # After the trunk: the units that follow it, then a chain of the model's direct children,
    # must lead to forward_features' result, or the model's own head cannot be fed exactly
    # what it expects.
    post: list[str] | None = None
    tail_units = once[end + 1 :]
    if all(links[end:]):
        chain = list(tail_units)
        last = calls[(tail_units or units)[-1]][0]
        current, version, t = last.out, last.out_version, last.post
        tail = sorted(
            (cs[0].pre, name)
            for name, cs in calls.items()
            if "." not in name and len(cs) == 1 and cs[0].pre > t and name not in once
        )
        for _, name in tail:
            call = calls[name][0]
            if (
                len(call.args) == 1
                and not call.kwargs
                and call.pre > t
                and call.args[0] is current
                and call.in_version == version
            ):
                chain.append(name)
                current, version, t = call.out, call.out_version, call.post
        if current is result and _version(result) == version:
            post = chain
    return _Layout(
        stop_at=stop_at,
        units=units,
        unit_fmt=unit_fmt,
        unit_channels=unit_channels,
        unit_size=unit_size,
        post=post,
        features=features,
        feature_unit=feature_unit,
        feature_reduction={i: reds[i] for i in range(len(features))},
    )


def _default_exit_units(layout: _Layout, input_size: tuple[int, int, int]) -> list[str]:
    """Each stage of a hierarchical model, four evenly spaced blocks of an isotropic one.

    Stages are the features timm lists (the last one of each stride from 4 on) or, where
    they cannot be read at a unit, the last unit of each spatial size seen in the check
    run; a ViT gets blocks 3, 6, 9 and 12 of 12.
    """
    readable = [u for u in layout.units if layout.unit_fmt[u]]
    usable = {i: u for i, u in layout.feature_unit.items() if layout.unit_fmt[u]}
    stride: dict[str, int] = {}
    if len(set(usable.values())) >= 2:
        for i, u in usable.items():
            stride[u] = layout.feature_reduction[i]
        pool = sorted(set(usable.values()), key=layout.units.index)
    else:
        for u in readable:
            if u in layout.unit_size:
                stride[u] = round(input_size[-1] / max(1, layout.unit_size[u][-1]))
        pool = readable
    if len(set(stride.values())) > 1:
        last_of: dict[int, str] = {}
        for u in sorted(stride, key=layout.units.index):
            if stride[u] >= 4 or stride[u] == 0:
                last_of[stride[u]] = u
        chosen = sorted(set(last_of.values()), key=layout.units.index)
        if len(chosen) >= 2:
            return chosen
    n = len(pool)
    if n <= 4:
        return pool
    return [pool[round(n * (j + 1) / 4) - 1] for j in range(4)]


def _resolve_exits(exits: Sequence[int | str], layout: _Layout, timm_name: str) -> list[str]:
    names: list[str] = []
    feats = layout.features
    for e in exits:
        if isinstance(e, bool) or not isinstance(e, (int, str)):
            raise InputError(
                f"exits must be feature indices (int) or module names (str), got {e!r}"
            )
        if isinstance(e, int):
            if feats:
                if not 0 <= e < len(feats):
                    raise InputError(
                        f"{timm_name} has {len(feats)} feature stages (0..{len(feats) - 1}, "
                        f"timm's feature_info); exit {e} is out of range"
                    )
                if e not in layout.feature_unit:
                    ok = sorted(layout.feature_unit)
                    raise InputError(
                        f"{timm_name}: feature {e} ({feats[e]!r}) is computed inside the stem, "
                        f"before the first unit the network can stop after; choose among "
                        f"features {ok} or name a unit ({', '.join(layout.units)})"
                    )
                names.append(layout.feature_unit[e])
            else:
                if not 0 <= e < len(layout.units):
                    raise InputError(
                        f"{timm_name} has {len(layout.units)} units (0..{len(layout.units) - 1}); "
                        f"exit {e} is out of range"
                    )
                names.append(layout.units[e])
        else:
            if e in layout.units:
                names.append(e)
            elif e in feats and feats.index(e) in layout.feature_unit:
                names.append(layout.feature_unit[feats.index(e)])
            else:
                raise InputError(
                    f"{timm_name}: {e!r} is not a unit the network can stop after; "
                    f"choose among {', '.join(layout.units)}"
                )
    for n in names:
        if not layout.unit_fmt[n]:
            raise InputError(
                f"{timm_name}: unit {n!r} returns no single feature tensor a head can read; "
                "choose another exit"
            )
    order = [layout.units.index(n) for n in names]
    if not names or order != sorted(set(order)):
        raise InputError(
            f"exits must be strictly increasing stage indices or unit names in execution "
            f"order, got {list(exits)}"
        )
    return names


# ----------------------------------------------------------------------------- the model


class TimmAttachedExits(MultiExitModel):
    """A whole timm classifier with exit heads after chosen units of its trunk.

    ``exits``: where the exits go, in execution order: integers index timm's
    ``feature_info`` (ResNet: 1..4 = layer1..layer4; ViT: block indices
    0..depth-1), strings name trunk units (``"blocks.3"``, ``"stages.2"``).
    Default: each stage from stride 4 on for hierarchical models, four evenly
    spaced blocks for isotropic ones. ``head``: ``"norm"`` (pool, norm,
    linear), ``"linear"`` (pool, linear) or ``"conv"`` (MSDNet's classifier;
    spatial maps only). ``token_pool`` (token sequences): ``"token"`` (the
    class token) or ``"avg"`` (mean of the patch tokens); default: the
    model's own ``global_pool`` where it is one of these, else ``"avg"``.
    ``own_head``: the exit after the final unit uses the model's own head
    (default: when the model allows it; True insists; False attaches ours).
    ``input_size``: the images' size; for models built for one size (ViT,
    Swin) it also sets timm's ``img_size``. Other keyword arguments go to
    ``timm.create_model``.
    """

    def __init__(
        self,
        timm_name: str,
        exits: Sequence[int | str] | None = None,
        num_classes: int = 1000,
        head: str = "norm",
        token_pool: str | None = None,
        own_head: bool | None = None,
        input_size: int | Sequence[int] | None = None,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        in_chans: int = 3,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        base = timm_name.split(".")[0]
        if not timm.is_model(base):
            hint = difflib.get_close_matches(base, timm.list_models(), n=5)
            raise InputError(
                f"timm has no model {timm_name!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else "")
            )
        if pretrained:
            raise InputError(
                "pretrained=True would download weights, which eebench never does: load timm "
                "weights from a local checkpoint file with pretrained_file=PATH (or a saved "
                "multi-exit model with checkpoint=PATH)"
            )
        if head not in HEAD_KINDS:
            raise InputError(f"head must be one of {list(HEAD_KINDS)}, got {head!r}")
        if token_pool is not None and token_pool not in TOKEN_POOLS:
            raise InputError(f"token_pool must be one of {list(TOKEN_POOLS)}, got {token_pool!r}")

        cfg = _pretrained_cfg(timm_name)
        if input_size is None and "img_size" in timm_kwargs:
            input_size = timm_kwargs["img_size"]
        size = _input_size(input_size, cfg, in_chans)
        create_kwargs = dict(timm_kwargs)
        if (
            input_size is not None
            and cfg.get("fixed_input_size")
            and "img_size" not in create_kwargs
        ):
            create_kwargs["img_size"] = size[1:]
        if pretrained_file is not None:
            if not Path(pretrained_file).is_file():
                raise InputError(
                    f"pretrained_file {str(pretrained_file)!r} does not exist; give the path of a "
                    "local timm checkpoint (.pth, .bin or .safetensors)"
                )
            create_kwargs["pretrained"] = True
            create_kwargs["pretrained_cfg_overlay"] = {
                "file": str(pretrained_file),
                "source": "",
                "hf_hub_id": None,
                "url": None,
            }
        try:
            self.backbone = timm.create_model(
                timm_name, num_classes=num_classes, in_chans=in_chans, **create_kwargs
            )
        except TypeError as exc:
            raise InputError(
                f"timm could not build {timm_name} with {sorted(create_kwargs)}: {exc}"
            ) from exc

        layout = _find_layout(self.backbone, timm_name, size)
        exit_units = (
            _default_exit_units(layout, size)
            if exits is None
            else _resolve_exits(exits, layout, timm_name)
        )
        if len(exit_units) < 2 and exits is None:
            units = layout.units if len(layout.units) <= 4 else [*layout.units[:3], "..."]
            raise InputError(
                f"timm model {timm_name} cannot be split: of the {len(layout.units)} stage "
                f"module(s) that run one after another ({', '.join(units)}), "
                f"{len(exit_units)} return a single feature tensor a head can read, too few for "
                f"a multi-exit model; models that work include {_WORKING_EXAMPLES}"
            )
        final = exit_units[-1] == layout.units[-1]
        if own_head and not final:
            raise InputError(
                f"own_head=True needs the last exit after the final unit {layout.units[-1]!r}, "
                f"got {exit_units[-1]!r}"
            )
        if final and own_head is not False and layout.post is None:
            raise InputError(
                f"{timm_name}: forward_features does more after {layout.units[-1]!r} than run "
                "a chain of its modules, so the model's own head cannot end the last exit; pass "
                f"own_head=False to end at {layout.units[-1]!r} with an attached head instead"
            )
        self._own_head = bool(final and layout.post is not None and own_head is not False)

        num_prefix = int(getattr(self.backbone, "num_prefix_tokens", 0) or 0)
        if token_pool is None:
            gp = getattr(self.backbone, "global_pool", None)
            token_pool = "token" if gp == "token" and num_prefix > 0 else "avg"
        elif (
            token_pool == "token"
            and num_prefix == 0
            and any(layout.unit_fmt[u] == "NLC" for u in exit_units)
        ):
            raise InputError(f"{timm_name} has no class token to pool; use token_pool='avg'")

        attached = exit_units[:-1] if self._own_head else exit_units
        self.heads = nn.ModuleList(
            self._make_head(
                head,
                layout.unit_fmt[u],
                layout.unit_channels[u],
                num_classes,
                token_pool,
                num_prefix,
            )
            for u in attached
        )
        self._stop_at = layout.stop_at
        self._units = list(layout.units)
        self._post = list(layout.post or [])
        self._exit_at = [self._units.index(u) for u in exit_units]
        self.exits = list(exit_units)
        self.config = ModelConfig(
            name=f"timm/{timm_name}",
            num_classes=num_classes,
            input_size=size,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=cfg.get("interpolation", "bilinear") or "bilinear",
            crop_pct=float(cfg.get("crop_pct", 0.875) or 0.875),
            arch={
                "timm_name": timm_name,
                "exits": list(exit_units),
                "head": head,
                "token_pool": token_pool,
                "own_head": self._own_head,
                "in_chans": in_chans,
                **{k: v for k, v in timm_kwargs.items() if _plain(v)},
            },
            checkpoint_note=(
                "backbone.* are timm's own keys for this model (load timm weights with "
                "pretrained_file=PATH); heads.k.* are the attached exits"
                + ("; the last exit is the model's own head" if self._own_head else "")
            ),
        )

    def _make_head(
        self,
        kind: str,
        fmt: str,
        channels: int,
        num_classes: int,
        token_pool: str,
        num_prefix: int,
    ) -> nn.Module:
        if kind == "conv":
            if fmt not in ("NCHW", "NHWC"):
                raise InputError(
                    f"head='conv' needs spatial feature maps, but this exit gives {fmt} features; "
                    "use head='norm' or 'linear'"
                )
            return ConvHead(fmt, channels, num_classes)
        pool = make_pool(fmt, token_pool, num_prefix)
        norm = _norm_like(self.backbone, channels) if kind == "norm" else nn.Identity()
        return ExitHead(pool, norm, channels, num_classes)

    @property
    def trunk(self) -> list[str]:
        """Names of the backbone's units run one by one after the stem, in order."""
        return list(self._units)

    def _stem(self, x: torch.Tensor) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        backbone = self.backbone
        stop = backbone.get_submodule(self._stop_at)

        def stem_forward(inp: torch.Tensor) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
            handle = stop.register_forward_pre_hook(
                _raise_stem_done, with_kwargs=True, prepend=True
            )
            try:
                _halves(backbone).forward_features(inp)
            except _StemDone as done:
                return done.args_[0], done.args_[1:], done.kwargs_
            finally:
                handle.remove()
            raise RuntimeError(f"forward_features never reached {self._stop_at!r}")

        backbone.forward = stem_forward  # a call of the module, so its hooks see it run
        try:
            return backbone(x)
        finally:
            del backbone.forward

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        """Yield ``(k, logits_k)`` exit by exit; a caller may ``send`` a bool keep-mask over
        the rows just yielded, and later exits then run for the kept rows only.

        The state carried between units is the feature tensor alone, batch-first in every
        timm format (NCHW, NHWC, NLC); what the units share besides it (a rotary table) is
        computed per image size by the stem and is not sliced.
        """
        h, args, kwargs = self._stem(x)
        k, last = 0, len(self._exit_at) - 1
        for j, name in enumerate(self._units):
            h = self.backbone.get_submodule(name)(h, *args, **kwargs)
            if j != self._exit_at[k]:
                continue
            if k == last and self._own_head:
                for p in self._post:
                    h = self.backbone.get_submodule(p)(h)
                yield k, _halves(self.backbone).forward_head(h)
                return
            logits = self.heads[k](h)
            keep = yield k, logits
            if k == last:
                return
            h = keep_rows(h, check_keep(keep, logits.shape[0]))
            k += 1


@runtime_checkable
class _Resettable(Protocol):
    """A module that can re-initialise its parameters (torch's norms can)."""

    def reset_parameters(self) -> None: ...


def _norm_like(backbone: nn.Module, channels: int) -> nn.Module:
    """A fresh copy of the model's final norm when its width matches, else LayerNorm."""
    norm = getattr(backbone, "norm", None)
    if (
        isinstance(norm, nn.Module)
        and tuple(getattr(norm, "normalized_shape", ())) == (channels,)
        and isinstance(norm, _Resettable)
    ):
        fresh = copy.deepcopy(norm)
        fresh.reset_parameters()
        return fresh
    return nn.LayerNorm(channels, eps=1e-6)


def _pretrained_cfg(timm_name: str) -> dict[str, Any]:
    """timm's default config for a model (input size, normalisation), or {} if it has none."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(timm_name)
    except RuntimeError:
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def _plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, type(None))) or (
        isinstance(v, (list, tuple)) and all(_plain(x) for x in v)
    )


def _input_size(
    input_size: int | Sequence[int] | None, cfg: dict[str, Any], in_chans: int
) -> tuple[int, int, int]:
    if input_size is None:
        size = tuple(cfg.get("input_size", (3, 224, 224)))
        return (in_chans, int(size[1]), int(size[2]))
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (in_chans, input_size, input_size)
    size = () if isinstance(input_size, bool) else tuple(int(s) for s in input_size)
    if len(size) == 2:
        return (in_chans, *size)
    if len(size) == 3:
        return size
    raise InputError(
        f"input_size must be an int, (height, width) or (channels, height, width), got {input_size!r}"
    )


def _create(timm_name: str, **kwargs: Any) -> TimmAttachedExits:
    return TimmAttachedExits(timm_name, **kwargs)


def _list(pattern: str) -> list[str]:
    import timm

    return list(timm.list_models(pattern or "*"))


register_family("timm/", _create, _list)
