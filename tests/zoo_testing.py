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


def assert_compaction(model: nn.Module, x: torch.Tensor, exit_at: list[int],
                      rel: float = 1e-4) -> None:
    """Real exits with a batch: sample i leaves at exit ``exit_at[i]``.

    Checks (1) each sample's logits at its exit equal the full run's (float32 tolerance:
    a smaller batch may take other kernels), and (2) once samples have left, no module
    sees a batch of the size before they left: the exited rows are not computed further.
    Use a batch size that no tensor has as its first dimension otherwise (e.g. 7).
    """
    from eebench.zoo.base import run_exits

    model.eval()
    n = x.shape[0]
    target = torch.tensor(exit_at)
    assert target.shape == (n,)
    with torch.no_grad():
        full = model(x)
    sizes: list[tuple[int, str, int]] = []  # (alive count, module, dim 0 of its first input)
    state = {"alive": n}

    def pre_hook(name: str):  # noqa: ANN202
        def hook(_mod, args) -> None:  # noqa: ANN001
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None and first.dim() > 0:
                sizes.append((state["alive"], name, int(first.shape[0])))
        return hook

    handles = [m.register_forward_pre_hook(pre_hook(name)) for name, m in model.named_modules()
               if name]

    def decide(k: int, logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        assert logits.shape[0] == alive.numel() == state["alive"]
        stop = target[alive] == k
        state["alive"] = int((~stop).sum())
        return stop

    try:
        with torch.no_grad():
            exits, logits = run_exits(model, x, decide)
    finally:
        for h in handles:
            h.remove()
    assert exits.tolist() == target.tolist()
    for i, k in enumerate(exit_at):
        want = full[k][i]
        scale = float(want.abs().max()) or 1.0
        torch.testing.assert_close(logits[i], want, rtol=rel, atol=rel * scale)
    shrunk = [(a, name, d) for a, name, d in sizes if a < n and d == n]
    assert not shrunk, f"modules still computing all {n} rows after samples left: {shrunk[:5]}"
    assert any(a < n for a, _, _ in sizes), "no module ran after the first samples left"


def assert_bad_keep_masks_refused(model: nn.Module, x: torch.Tensor) -> None:
    """Every model checks the keep-mask it is sent (``check_keep``): a mask of the wrong
    length, dtype or type fails with one clear ValueError, and a later exit checks against
    the rows it yielded, not the original batch."""
    n = x.shape[0]
    bads = [torch.ones(n - 1, dtype=torch.bool), torch.ones(n, dtype=torch.long), [True] * n]
    for bad in bads:
        gen = model.iter_exits(x)
        with torch.no_grad():
            next(gen)
            with pytest.raises(ValueError, match=rf"bool keep-mask of shape \({n},\)"):
                gen.send(bad)
    if model.num_exits > 2 and n > 2:
        keep = torch.ones(n, dtype=torch.bool)
        keep[0] = False
        gen = model.iter_exits(x)
        with torch.no_grad():
            next(gen)
            _, logits = gen.send(keep)
            assert logits.shape[0] == n - 1
            with pytest.raises(ValueError, match=rf"shape \({n - 1},\)"):
                gen.send(torch.ones(n, dtype=torch.bool))


def assert_keeping_everyone_changes_nothing(model: nn.Module, x: torch.Tensor) -> None:
    """A mask that keeps every row copies nothing and computes exactly the full run."""
    with torch.no_grad():
        full = model(x)
        gen = model.iter_exits(x)
        got = [next(gen)[1]]
        for _ in range(model.num_exits - 1):
            got.append(gen.send(torch.ones(x.shape[0], dtype=torch.bool))[1])
    assert all(torch.equal(a, b) for a, b in zip(got, full))
