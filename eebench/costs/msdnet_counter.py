"""The ``msdnet`` convention: the counting rules of MSDNet's own op counter.

MSDNet, RANet, IMTA and L2W all price their exits with MSDNet's
``op_counter.py``, and their budgeted-batch curves are drawn against those
numbers. Reproducing a curve, or putting a new model on the same axis, needs
the same rules, which differ from fvcore's: ReLU and pooling count, linear
layers count their biases, batch norm counts nothing. The rules (checked
against op_counter.py in kalviny/MSDNet-PyTorch), per run of a leaf module:

- Conv2d: Cin * Cout * kh * kw * Hout * Wout / groups (no bias term)
- Linear: rows * (in * out + out), weights plus biases
- ReLU: 1 per input element
- AvgPool2d, MaxPool2d: kh * kw per output element
- AdaptiveAvgPool2d: 1 per input element
- batch norm, dropout (and the shape-only Identity, Flatten): nothing

The original wraps each leaf module's ``forward``; we use forward hooks,
which see the same calls, every time a module runs. Where the original
raises on a module it does not know, we count nothing and say so in the
notes, together with matrix products and other counted operations that run
as plain functions outside any counted module (fused attention, ``F.linear``
inside a parent's forward, ``torch.matmul``...), which hooks cannot price.
Output sizes come from the real outputs, so padding modes, dilation and
``ceil_mode`` are honoured where the original's formula assumes the default.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from eebench.costs.conventions import CountResult

ZERO_COST_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple | list) else (int(v), int(v))


def _first_tensor(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple | list) else x


def module_ops(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> float | None:
    """Ops of one call of a leaf module under MSDNet's rules; None for an unknown type."""
    x = _first_tensor(inputs)
    out = _first_tensor(output)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        batch, _, h_out, w_out = out.shape
        return (
            batch
            * module.in_channels
            * module.out_channels
            * kh
            * kw
            * h_out
            * w_out
            / module.groups
        )
    if isinstance(module, nn.Linear):
        rows = x.numel() // module.in_features
        bias = module.bias.numel() if module.bias is not None else 0
        return float(rows * (module.weight.numel() + bias))
    if isinstance(module, nn.ReLU):
        return float(x.numel())
    if isinstance(module, nn.AvgPool2d | nn.MaxPool2d):
        kh, kw = _pair(module.kernel_size)
        return float(out.numel() * kh * kw)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return float(x.numel())
    if isinstance(module, ZERO_COST_MODULES):
        return 0.0
    return None


# Operations the rules would count if a counted module ran them; seen as plain
# function calls outside such a module, they are listed as not counted.
_COUNTED_KINDS_AS_FUNCTIONS = {
    F.linear,
    F.bilinear,
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    F.scaled_dot_product_attention,
    F.multi_head_attention_forward,
    F.relu,
    F.relu_,
    F.avg_pool2d,
    F.max_pool2d,
    F.adaptive_avg_pool2d,
    torch.relu,
    torch.relu_,
    torch.matmul,
    torch.mm,
    torch.bmm,
    torch.baddbmm,
    torch.addmm,
    torch.einsum,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.Tensor.mm,
    torch.Tensor.bmm,
    torch.Tensor.baddbmm,
    torch.Tensor.addmm,
    torch.Tensor.relu,
    torch.Tensor.relu_,
}


class _FunctionalSpy(TorchFunctionMode):
    """Records counted-kind operations called while no leaf module is running."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.seen: Counter[str] = Counter()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None
    ) -> Any:
        if self.depth == 0 and func in _COUNTED_KINDS_AS_FUNCTIONS:
            self.seen[getattr(func, "__name__", repr(func))] += 1
        return func(*args, **(kwargs or {}))


def count_msdnet(module: nn.Module, x: torch.Tensor) -> CountResult:
    """Count ``module(x)`` under MSDNet's rules with hooks on every leaf module."""
    total = 0.0
    unknown: Counter[str] = Counter()
    spy = _FunctionalSpy()

    def pre_hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
        spy.depth += 1

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        spy.depth -= 1
        ops = module_ops(mod, inputs, output)
        if ops is None:
            unknown[type(mod).__name__] += 1
        else:
            total += ops

    handles = []
    for m in module.modules():
        if next(m.children(), None) is None:
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(hook))
    try:
        with spy:
            module(x)
    finally:
        for h in handles:
            h.remove()
    notes = []
    if unknown:
        listed = ", ".join(f"{name} x{n}" for name, n in sorted(unknown.items()))
        notes.append(
            "msdnet rules: modules not counted, unknown to MSDNet's counter "
            f"(calls up to the last exit): {listed}"
        )
    if spy.seen:
        listed = ", ".join(f"{name} x{n}" for name, n in sorted(spy.seen.items()))
        notes.append(
            "msdnet rules: operations run as plain functions outside counted modules, "
            f"not counted (calls up to the last exit): {listed}"
        )
    return CountResult(macs=total, notes=notes)
