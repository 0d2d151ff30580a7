"""Helpers shared by the architecture tests: one torch thread, meta-device models, and the
seeded weights the official-logit fixtures of MSDNet, RANet and Dynamic Perceiver were made with."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from eebench.zoo import create_model


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    # On a shared, oversubscribed CPU, intra-op threads make small convolutions up to 100x
    # slower (seconds instead of milliseconds per forward); one thread is steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meta_model(name: str, **kw: Any) -> nn.Module:
    """A registered model on the meta device: its keys and shapes, no memory, no time."""
    with torch.device("meta"):
        return create_model(name, **kw)


def seeded_state(
    keys: dict[str, list[int]], seed: int = 0, unit_normal: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled weights for a key/shape list (BN statistics included);
    keys for which ``unit_normal`` is true (latents, position biases) get plain N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # batch/layer-norm scale
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif unit_normal is not None and unit_normal(k):
            sd[k] = torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    return sd
