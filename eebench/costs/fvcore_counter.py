"""The ``fvcore`` convention: fvcore's flop counter, made to see fused kernels.

Most published "FLOPs" of early-exit vision models (DVT, CF-ViT, timm's
tables) come from fvcore, so its rules are the field's default. But fvcore
reads a JIT trace op by op and knows nothing of fused kernels: timm's
attention now runs as one ``aten::scaled_dot_product_attention`` call, and
DeiT-S drops from the published 4.61 G to 4.25 G because the two attention
matrix products vanish. We add handlers that count such kernels exactly as
fvcore counts the explicit matmuls they replace, and nothing else, so that
the numbers stay those fvcore gives for the unfused model. Everything fvcore
still skips (elementwise ops, windowed pooling, ...) is reported, not hidden.
"""

from __future__ import annotations

import warnings
from collections import Counter
from math import prod
from typing import Any

import torch
from torch import nn

from eebench.costs.conventions import CountResult

with warnings.catch_warnings():  # fvcore scripts helpers at import; torch warns about jit.script
    warnings.simplefilter("ignore")
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape


def _shape(value: Any, what: str) -> list[int]:
    shape = get_shape(value)
    if shape is None:
        raise RuntimeError(
            f"fvcore could not see the shape of the {what}; count on a concrete input "
            "(count_costs does) rather than a scripted module"
        )
    return list(shape)


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``scaled_dot_product_attention``: Q @ K^T plus attn @ V.

    Query (..., Lq, E), key (..., Lk, E), value (..., Lk, Ev):
    batch * Lq * Lk * E + batch * Lq * Lk * Ev, batch being the product of the
    query's leading dimensions (batch x heads). Softmax, scaling and masking
    are elementwise and, as in fvcore, not counted.
    """
    q = _shape(inputs[0], "attention query")
    k = _shape(inputs[1], "attention key")
    v = _shape(inputs[2], "attention value")
    batch = prod(q[:-2])
    lq, e = q[-2], q[-1]
    lk, ev = k[-2], v[-1]
    return batch * lq * lk * e + batch * lq * lk * ev


def baddbmm_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``baddbmm(input, b1, b2)``: the batched product b1 @ b2, as fvcore's bmm."""
    b1 = _shape(inputs[1], "first baddbmm batch")
    b2 = _shape(inputs[2], "second baddbmm batch")
    n, m, k = b1
    return n * m * k * b2[-1]


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
}

# Skipped operators that hide matrix products: if one shows up, the count is too low.
HIDDEN_PRODUCT_OPS = frozenset(
    {
        "aten::_native_multi_head_attention",
        "aten::_transformer_encoder_layer_fwd",
        "aten::_scaled_dot_product_flash_attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_efficient_attention",
        "aten::_scaled_dot_product_cudnn_attention",
        "aten::addbmm",
        "aten::addmv",
        "aten::mv",
        "aten::dot",
        "aten::tensordot",
        "aten::conv_tbc",
        "aten::lstm",
        "aten::gru",
        "aten::rnn_tanh",
        "aten::rnn_relu",
    }
)


def flop_count_analysis(module: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's analysis of ``module(x)`` with our handlers added and its warnings silenced."""
    analysis = FlopCountAnalysis(module, (x,))
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, tuple | list):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class KeepAlive(nn.Module):
    """Returns every module output alongside the logits, so the trace keeps all that ran.

    A JIT trace drops operations whose results reach no output. Returning all
    logits keeps the earlier heads, but a truncated MSDNet also computes
    fine-scale features at exit k that only later blocks would read; a real
    run up to exit k pays for them (the papers count them), yet the trace
    would drop them (MSDNet CIFAR exit 1: 6.0 M instead of 6.9 M).
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kept: list[torch.Tensor] = []
        handles = [
            m.register_forward_hook(lambda mod, i, o: kept.extend(_tensors(o)))
            for m in self.inner.modules()
        ]
        try:
            out = self.inner(x)
        finally:
            for h in handles:
                h.remove()
        return (*_tensors(out), *kept)


def count_fvcore(module: nn.Module, x: torch.Tensor) -> CountResult:
    """Count everything ``module(x)`` runs under the fvcore convention.

    The module is traced inside ``KeepAlive`` so that no computed result is
    dropped as dead code; skipped operators go to the notes.
    """
    analysis = flop_count_analysis(KeepAlive(module), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        total = analysis.total()
        skipped: Counter[str] = Counter(analysis.unsupported_ops())
    notes = []
    if skipped:
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(skipped.items()))
        notes.append(
            "fvcore: operators not counted, by its convention "
            f"(calls up to the last exit): {listed}"
        )
    hidden = sorted(op for op in skipped if op in HIDDEN_PRODUCT_OPS)
    if hidden:
        notes.append(
            "WARNING: " + ", ".join(hidden) + " run matrix products that fvcore cannot see; "
            "the MAC count is too low"
        )
    return CountResult(macs=float(total), notes=notes)
