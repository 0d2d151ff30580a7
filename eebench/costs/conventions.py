"""Cost conventions: the named rules by which the MACs of a run up to one exit are counted.

The papers price their exits under different rules, so a cost is only meaningful
with the name of the rule that produced it; that name is stored beside every
count. Each convention is registered here once, with the prose a user reads
(``eebench costs --list-conventions``), the counter that applies it and whether
its counts are cumulative. The counters import torch, so they are named as
``"module:function"`` and imported only when something is counted: listing the
conventions, validating a suite and the command line's help stay torch-free.

The counter modules import :class:`CountResult` from here, and this module imports
none of them, so counting code and its dispatcher (``exit_costs``) form no cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from eebench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class CountResult:
    """What one counter reports for one truncated run: MACs and what it could not count."""

    macs: float
    notes: list[str] = field(default_factory=list)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return cast(Callable[..., Any], getattr(importlib.import_module(module), attr))


@dataclass(frozen=True)
class CostConvention:
    """A counting rule: ``counter`` is ``"module:function"``, a function ``(module, x) ->
    CountResult`` counting one run of ``module`` on ``x``; ``accepts`` (optional, also
    ``"module:function"``) refuses, with a clear error, a model the rule cannot price.
    ``cumulative`` says whether exit k's count includes all the work before it, earlier
    heads too, which is what a budgeted curve needs as its cost axis."""

    name: str
    description: str
    counter: str
    cumulative: bool = True
    accepts: str | None = None

    def count(self, module: nn.Module, x: torch.Tensor) -> CountResult:
        """Count one run of ``module`` on ``x`` under this convention."""
        return cast(CountResult, _resolve(self.counter)(module, x))

    def check(self, model: nn.Module) -> None:
        """Fail when ``model`` cannot be priced under this convention."""
        if self.accepts is not None:
            _resolve(self.accepts)(model)


CONVENTIONS: Registry[CostConvention] = Registry(
    "cost convention", where="eebench costs --list-conventions"
)


def register_convention(convention: CostConvention) -> CostConvention:
    """Make ``convention`` usable by its name in ``count_costs``, suites and the command line."""
    return CONVENTIONS.register(convention.name, convention)


def cumulative_conventions() -> list[str]:
    """The names of the conventions whose counts can price the exits of a budgeted curve."""
    return [name for name, c in CONVENTIONS.items() if c.cumulative]


register_convention(CostConvention(
    name="fvcore",
    counter="eebench.costs.fvcore_counter:count_fvcore",
    description=(
        "fvcore.nn.FlopCountAnalysis on a JIT trace: one fused multiply-add counts as one "
        "(MACs, the papers' 'FLOPs'). Every module output is kept alive in the trace, so "
        "work done before exit k counts even when only later exits read it. Convolutions "
        "and linear layers count their weight MACs without bias; batch norm counts 2 ops "
        "per element (1 without affine); layer, group and instance norm 5 per input element "
        "(4 without affine); adaptive average pooling 1 per input element; bilinear upsampling 4 per "
        "output element. Added to fvcore: fused attention "
        "(aten::scaled_dot_product_attention) counts its two matrix products "
        "B*heads*Lq*Lk*(d_qk + d_v), and aten::baddbmm counts as the batched matmul it "
        "contains, exactly what fvcore counts when attention is written with explicit "
        "matmuls (the published DeiT-S 4.61 G); PyTorch's fused MultiheadAttention fast "
        "path is switched off while counting so that its projections and products are seen. "
        "Elementwise operations (add, mul, activations, softmax), max/average pooling with "
        "a window, mean reductions and concatenation are not counted, by fvcore's "
        "convention; the operators skipped on each model are listed in the notes."
    ),
))

register_convention(CostConvention(
    name="msdnet",
    counter="eebench.costs.msdnet_counter:count_msdnet",
    description=(
        "The rules of MSDNet's op_counter.py (also used by RANet, IMTA and L2W), applied with "
        "forward hooks on leaf modules, each time a module runs: Conv2d counts "
        "Cin*Cout*kh*kw*Hout*Wout/groups (no bias); Linear counts its weights plus biases per "
        "row (in*out + out); ReLU 1 per element; AvgPool2d and MaxPool2d kh*kw per output "
        "element; AdaptiveAvgPool2d 1 per input element; batch norm, dropout, identity and "
        "flatten nothing. Other leaf modules (GELU, LayerNorm, ...) and matrix products "
        "computed functionally outside those modules (attention, F.linear) count nothing "
        "and are listed in the notes."
    ),
))

register_convention(CostConvention(
    name="dynperceiver",
    counter="eebench.costs.dynperceiver_counter:count_dynperceiver",
    accepts="eebench.costs.dynperceiver_counter:check_model",
    cumulative=False,
    description=(
        "The per-exit costs of Dynamic Perceiver's official code (LeapLabTHU/Dynamic_Perceiver), "
        "for Dynamic Perceiver models only. RegNetY and MobileNetV3 backbones: the rules of its "
        "analytic counter (forward_calc_flops), applied with forward hooks each time a module "
        "runs: Conv2d counts Cin*Cout*kh*kw*Hout*Wout/groups and Linear rows*in*out (no biases); "
        "attention counts its two matrix products Lq*Lk*(d_qk + d_v); adaptive average pooling "
        "1 per input element; the mean of the final latents 1 per element; norms, activations, "
        "softmax, dropout and additions nothing; RegNet's squeeze-excitation nothing (MobileNetV3's "
        "counts); the token expander is charged for the tokens that entered the token mixer "
        "before it (twice those it projects). An exit is charged its own head only: the earlier "
        "exits' heads (early_classifier3, isc3, classifier_att) and isc4 are left out of later "
        "exits, as the official counter leaves them out. ResNet backbones: fvcore's rules on a "
        "trace that returns only exit k's logits, as the official code counts them, so work "
        "that reaches no returned logit is dropped (at the cnn exit: the latent stage 4 and the "
        "earlier heads)."
    ),
))
