"""An independent re-count with ptflops, so that a counting bug shows as a gap.

ptflops' ATen backend watches the dispatcher during a real forward pass, so
it shares no code, tracing or hooks with fvcore or the MSDNet rules: if our
count dropped a head or a stage, the two disagree. Its rules differ a
little by design (it counts convolution and linear biases, never batch norm
or pooling), which leaves a small, explainable gap. Out of the box it also
ignores fused attention kernels and ``baddbmm``; we give it the same
matmul rules as the fvcore convention so that vision transformers do not
show a spurious gap.

ptflops reports its own failures by printing and returning ``None``; we
capture that text and turn it into a note, never an exception, because a
cross-check must not break the count it checks.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
from math import prod
from typing import Any

import torch
from torch import nn

_ATTENTION_KERNELS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


def _attention_macs(inputs: Any, outputs: Any) -> int:
    """Q @ K^T plus attn @ V for a fused attention kernel (query, key, value first)."""
    q, k, v = inputs[0].shape, inputs[1].shape, inputs[2].shape
    return prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _baddbmm_macs(inputs: Any, outputs: Any) -> int:
    """The batched product of ``baddbmm(input, b1, b2)``, as ptflops counts ``bmm``."""
    n, m, k = inputs[1].shape
    return n * m * k * inputs[2].shape[-1]


def _extra_hooks() -> dict[Any, Any]:
    ops = torch.ops.aten
    hooks: dict[Any, Any] = {
        getattr(ops, name): _attention_macs for name in _ATTENTION_KERNELS if hasattr(ops, name)
    }
    hooks[ops.baddbmm] = _baddbmm_macs
    return hooks


class _Outer(nn.Module):
    """A throwaway parent: ptflops hooks the children of what it is given and never unhooks."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        return self.inner(x)


def count_ptflops(
    module: nn.Module, input_size: tuple[int, int, int], x: torch.Tensor
) -> tuple[float | None, str, str]:
    """MACs of ``module(x)`` by ptflops' ATen backend: (macs or None, tool, error text).

    ``module`` should be a fresh wrapper (a new ``TruncatedModel``): ptflops
    leaves forward hooks on the children of the module it counts, which here
    land on that wrapper, not on the user's model.
    """
    try:
        from ptflops import get_model_complexity_info
    except ImportError as exc:  # pragma: no cover - ptflops is a dependency
        return None, "ptflops", f"ptflops is not importable ({exc})"
    try:
        version = " " + importlib.metadata.version("ptflops")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = ""
    tool = f"ptflops{version} ATen backend (+ fused attention and baddbmm as matmuls)"
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            macs, _ = get_model_complexity_info(
                _Outer(module),
                input_size,
                as_strings=False,
                print_per_layer_stat=False,
                backend="aten",
                input_constructor=lambda _res: x,
                custom_modules_hooks=_extra_hooks(),
                ost=out,
                verbose=False,
            )
    except Exception as exc:  # ptflops normally catches its own errors; be sure
        return None, tool, f"ptflops raised {type(exc).__name__}: {exc}"
    if macs is None:
        text = (out.getvalue() + err.getvalue()).strip().splitlines()
        reason = next(
            (line.strip() for line in reversed(text) if "Error" in line or "error" in line),
            text[-1].strip() if text else "no reason given",
        )
        return None, tool, f"ptflops could not count this model: {reason}"
    return float(macs), tool, ""
