"""The ``dynperceiver`` convention: the per-exit costs Dynamic Perceiver's official code prints.

Dyn-Perceiver's accuracy-vs-cost curves are drawn against the numbers of its
own code, not fvcore's, and fvcore lands 1.4 to 6.1% higher on the same
networks (it counts the norms, RegNet's squeeze-excitation, ...). Putting a
new policy on the same x axis, or checking a released model against those
curves, needs the official numbers. The official repository
(LeapLabTHU/Dynamic_Perceiver) prices its backbones in two ways, and this
convention follows each:

RegNetY and MobileNetV3: an analytic counter that walks the forward pass
(``forward_calc_flops``). Its rules, applied here with forward hooks on our
modules, each time a module runs (multiply-accumulates, batch 1):

- Conv2d: Cin * Cout * kh * kw * Hout * Wout / groups, no bias. This covers
  the stems, every backbone convolution, MobileNetV3's squeeze-excitation
  and the 7x7 depthwise convolutions of X2Z. RegNet's squeeze-excitation
  layers count nothing, pooling included.
- Linear: rows * in * out, no bias (attention projections, MLPs, token
  mixers, classifiers). The token expander between two stages is charged for
  as many tokens as entered the token mixer before it, twice the tokens it
  projects, as the official counter does.
- attention products: Lq * Lk * (d_qk + d_v), the two matrix products.
- AdaptiveAvgPool2d: one per input element (the 7x7 pooling of every X2Z,
  the CNN's global pooling, MobileNetV3's squeeze-excitation pooling).
- the mean over the final latents (before the attention exit): one per
  element; the mean before the stage-3 exit counts nothing.
- nothing for batch and layer norms, activations, dropout, softmax, residual
  additions, position biases and concatenations.
- heads: a cumulative exit cost includes only its own head and the work
  before it. Exit ``early3`` pays ``early_classifier3``; ``attention`` pays
  ``isc3`` and ``classifier_att`` but not ``early_classifier3``; ``cnn`` pays
  ``classifier_cnn`` and none of the earlier heads; ``merged`` pays
  ``classifier_cnn`` and ``classifier_merge`` but not ``early_classifier3``,
  ``isc3``, ``classifier_att`` or ``isc4`` (which the official counter never
  charges), although a real run computes them. Together they are under 0.3%
  of an exit's cost.

ResNet: the official code has no analytic counter for it; its costs come
from fvcore on the model built to stop at exit k, which returns that exit's
logits only (at the last exit, its full forward, all four). A trace that
returns one tensor drops what does not reach it: at the ``cnn`` exit, the
latent stage 4 and every earlier head, which a real run computes first (the
``cnn`` exit then costs less than the ``attention`` exit). We count the same
way: fvcore's rules (``eebench.costs.fvcore_counter``) on a trace of our
model that returns what the official one returns.

Shapes come from the real tensors. The official RegNet counter assumes
square feature maps for the first convolution of a block; at square inputs
(224x224 and the like) the two agree exactly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import torch
from torch import nn

from eebench.costs.conventions import CountResult, cumulative_conventions
from eebench.errors import InputError
from eebench.zoo.base import MultiExitModel
from eebench.zoo.dynperceiver import Attention, DynPerceiver, SelfAttentionBlock

#: Head modules and the exits (0-based) whose cumulative cost includes them.
HEAD_CHARGES: dict[str, frozenset[int]] = {
    "early_classifier3": frozenset({0}),
    "isc3": frozenset({1}),
    "classifier_att": frozenset({1}),
    "classifier_cnn": frozenset({2, 3}),
    "isc4": frozenset(),
    "classifier_merge": frozenset({3}),
}

_FREE = (
    nn.LayerNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.Sigmoid,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
)


def check_model(model: Any) -> DynPerceiver:
    """The Dynamic Perceiver that the convention can price, or a ValueError saying why not."""
    if not isinstance(model, DynPerceiver):
        others = " or ".join(cumulative_conventions())
        raise InputError(
            f"the dynperceiver cost convention prices Dynamic Perceiver models only "
            f"(eebench.zoo.dynperceiver), got {type(model).__name__}; count it with the "
            f"{others} convention"
        )
    return model


def _backbone(model: DynPerceiver) -> str:
    return str(model.config.arch["backbone"])


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple | list) else x


class _OfficialExitOutput(nn.Module):
    """Runs the model to exit k and returns what the official model built for exit k returns:
    that exit's logits alone, or every exit's logits at the last exit (its full forward)."""

    def __init__(self, model: MultiExitModel, exit_index: int) -> None:
        super().__init__()
        self.model = model
        self.exit_index = exit_index

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        logits = self.model.forward_until(x, self.exit_index)
        return tuple(logits) if self.exit_index == len(self.model.exits) - 1 else logits[-1]


def _count_exit_trace(model: DynPerceiver, exit_index: int, x: torch.Tensor) -> CountResult:
    """fvcore's count of a trace of ``_OfficialExitOutput`` (the official ResNet costs)."""
    import warnings

    from eebench.costs.fvcore_counter import flop_count_analysis

    analysis = flop_count_analysis(_OfficialExitOutput(model, exit_index), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = analysis.total()
        skipped = Counter(analysis.unsupported_ops())
    notes = [
        "dynperceiver (ResNet): fvcore on a trace that returns only this exit's logits, as the "
        "official code counts ResNet models; work that reaches no returned logit (at the cnn "
        "exit: the latent stage 4 and the earlier heads) is dropped"
    ]
    if skipped:
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(skipped.items()))
        notes.append(f"fvcore: operators not counted, by its convention: {listed}")
    return CountResult(macs=float(total), notes=notes)


def _module_groups(model: DynPerceiver) -> tuple[dict[int, str], set[int]]:
    """id -> head name for every module of a head; ids of modules that count nothing."""
    heads: dict[int, str] = {}
    for name in HEAD_CHARGES:
        for m in getattr(model, name).modules():
            heads[id(m)] = name
    silent: set[int] = set()
    if _backbone(model).startswith("regnet"):
        from torchvision.ops import SqueezeExcitation

        for m in model.modules():
            if isinstance(m, SqueezeExcitation):
                silent.update(id(s) for s in m.modules())
    return heads, silent


def _expander_factors(model: DynPerceiver) -> dict[int, tuple[int, int]]:
    """id of each token expander's Linear -> (tokens entering the mixer, tokens leaving it)."""
    out = {}
    for mixer, expander in zip(model.token_mixer, model.token_expander):
        lin_mix = next(m for m in mixer.children() if isinstance(m, nn.Linear))
        lin_exp = next(m for m in expander.children() if isinstance(m, nn.Linear))
        out[id(lin_exp)] = (lin_mix.in_features, lin_mix.out_features)
    return out


def _count_analytic(model: DynPerceiver, exit_index: int, x: torch.Tensor) -> CountResult:
    """The official analytic counter's rules (module docstring) on one run up to the exit."""
    heads, silent = _module_groups(model)
    expanders = _expander_factors(model)
    final_latents = id(model.self_att4)
    by_group: defaultdict[str, float] = defaultdict(float)
    unknown: Counter[str] = Counter()

    def charge(mod: nn.Module, ops: float) -> None:
        by_group[heads.get(id(mod), "")] += ops

    def leaf_hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if id(mod) in silent:
            return
        inp, out = _first(inputs), _first(output)
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            charge(mod, out.numel() * mod.in_channels * kh * kw / mod.groups)
        elif isinstance(mod, nn.Linear):
            rows = inp.numel() // mod.in_features
            if id(mod) in expanders:
                before, after = expanders[id(mod)]
                rows = rows * before // after
            charge(mod, rows * mod.in_features * mod.out_features)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            charge(mod, inp.numel())
        elif not isinstance(mod, _FREE):
            unknown[type(mod).__name__] += 1

    def attention_hook(mod: Attention, inputs: tuple[Any, ...], output: Any) -> None:
        x_q, x_kv = inputs[0], inputs[1]
        batch, lq, lk = x_q.shape[0], x_q.shape[1], x_kv.shape[1]
        widths = mod.q_proj.out_features + mod.v_proj.out_features
        charge(mod, batch * lq * lk * widths)

    def latent_mean_hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        charge(mod, _first(output).numel())

    handles = []
    for m in model.modules():
        if isinstance(m, Attention):
            handles.append(m.register_forward_hook(attention_hook))
        elif isinstance(m, SelfAttentionBlock) and id(m) == final_latents:
            handles.append(m.register_forward_hook(latent_mean_hook))
        if next(m.children(), None) is None:
            handles.append(m.register_forward_hook(leaf_hook))
    try:
        model.forward_until(x, exit_index)
    finally:
        for h in handles:
            h.remove()
    total = by_group.pop("", 0.0)
    total += sum(ops for name, ops in by_group.items() if exit_index in HEAD_CHARGES[name])
    left_out = sorted(name for name in by_group if exit_index not in HEAD_CHARGES[name])
    notes = []
    if left_out:
        notes.append(
            "dynperceiver: heads that ran but are not charged to this exit, as in the official "
            f"counter: {', '.join(left_out)}"
        )
    if unknown:
        listed = ", ".join(f"{name} x{n}" for name, n in sorted(unknown.items()))
        notes.append(
            f"dynperceiver: modules the official counter does not know, not counted: {listed}"
        )
    return CountResult(macs=float(total), notes=notes)


def count_dynperceiver(module: nn.Module, x: torch.Tensor) -> CountResult:
    """Count a truncated Dynamic Perceiver (``TruncatedModel``) the way the official code does."""
    model = check_model(getattr(module, "model", module))
    exit_index = getattr(module, "exit_index", len(model.exits) - 1)
    if _backbone(model).startswith("resnet"):
        return _count_exit_trace(model, exit_index, x)
    return _count_analytic(model, exit_index, x)
