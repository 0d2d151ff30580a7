"""The q grids of the published budgeted-batch curves, and the exit distributions they define.

Each paper's "dynamic evaluation" curve is one grid of q values; q sets a
geometric target distribution ``p_k ~ q^k`` over the exits (FIELD-NOTES
section 1). Reproducing a published curve point by point needs the same grid,
so the grids are named after the code they come from:

- ``msdnet``: q = p/20, p = 1..39 (MSDNet, RANet, L2W-DEN, calibrated-dnn).
- ``imta``: q = p/20, p = 1..40.
- ``dvt``: q = p/20, p = 1..59.
- ``dynperceiver``: 33 values, (i+4)/20 for i = 0..16 then 20/(i+4) for
  i = 16..1 (q = 1 twice; the official list has a 34th value, 5.0, that its
  loop never reaches), with the per-exit re-weighting [0.85, 1, 0.5, 1]
  (4 exits) applied after the geometric distribution.
- ``eenet``: q = p/15 for p in linspace(1, 81, 80).

Distributions are computed in float64. The official code computes them in
float32 with torch, so ``floor(N p_k)`` can differ by one sample where
``N p_k`` lies within float32 rounding of an integer (we measured 9 of 16,520
(N, K, q, k) combinations over typical N, K and the msdnet/dvt q values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from eebench.errors import InputError
from eebench.registry import Registry


@dataclass(frozen=True)
class QGrid:
    """q values of one curve, and an optional per-exit re-weighting of the distribution."""

    name: str
    q: tuple[float, ...]
    exit_weights: tuple[float, ...] | None = None


def _msdnet_like(last: int) -> tuple[float, ...]:
    return tuple(p / 20 for p in range(1, last + 1))


def _dynperceiver() -> tuple[float, ...]:
    full = [0.0] * 34
    for i in range(17):
        full[i] = (i + 4) / 20
        full[33 - i] = 20 / (i + 4)
    return tuple(full[:33])


GRIDS: Registry[QGrid] = Registry("q grid", where="eebench policies")
"""Named q grids of the geometric exit distribution, as the papers sweep them."""
for _grid in (
    QGrid("msdnet", _msdnet_like(39)),
    QGrid("imta", _msdnet_like(40)),
    QGrid("dvt", _msdnet_like(59)),
    QGrid("dynperceiver", _dynperceiver(), (0.85, 1.0, 0.5, 1.0)),
    QGrid("eenet", tuple(float(p) / 15 for p in np.linspace(1, 81, 80))),
):
    GRIDS.register(_grid.name, _grid)


def list_grids() -> list[str]:
    return GRIDS.names()


def parse_floats(text: str) -> list[float]:
    """``"0.5,1,2"`` -> [0.5, 1.0, 2.0] with a clear error."""
    try:
        return [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise InputError(
            f"expected a grid name ({', '.join(list_grids())}) or comma-separated numbers, "
            f"got {text!r}"
        ) from None


def is_q_values(grid: Sequence[float] | Sequence[Sequence[float]]) -> TypeGuard[Sequence[float]]:
    """True for one flat list of numbers (q values); False for per-exit threshold lists."""
    return bool(np.ndim(grid) <= 1)


def nested_grid_error(grid: object) -> ValueError:
    """The error for a list of lists where a q grid is expected."""
    return ValueError(
        f"a q grid is one list of numbers, got lists {grid!r}; per-exit threshold lists "
        "are the sweep solver's grid"
    )


def get_grid(
    grid: str | Sequence[float] | QGrid | None, exit_weights: Sequence[float] | None = None
) -> QGrid:
    """A named grid, a list of q values (or a string "0.5,1,2"), or ``None`` for msdnet."""
    if grid is None:
        g = GRIDS["msdnet"]
    elif isinstance(grid, QGrid):
        g = grid
    elif isinstance(grid, str):
        if grid.strip().lower() in GRIDS or not any(ch.isdigit() for ch in grid):
            g = GRIDS[grid]
        else:
            g = QGrid("custom", tuple(parse_floats(grid)))
    else:
        values = np.asarray(grid, dtype=np.float64)
        if values.ndim > 1:  # per-exit lists would otherwise be flattened into one q grid
            raise nested_grid_error(grid)
        g = QGrid("custom", tuple(float(v) for v in values.reshape(-1)))
    if not g.q:
        raise InputError("the q grid is empty; give at least one q value")
    if any(not np.isfinite(v) or v <= 0 for v in g.q):
        raise InputError(f"q values must be positive and finite, got {list(g.q)}")
    if exit_weights is not None:
        g = QGrid(g.name, g.q, tuple(float(w) for w in exit_weights))
    return g


def exit_distribution(
    q: float, num_exits: int, exit_weights: Sequence[float] | None = None
) -> np.ndarray:
    """Target fraction of samples per exit: ``p_k ~ q^k`` (k = 1..K), optionally re-weighted.

    The re-weighting (Dynamic Perceiver) multiplies ``p_j`` by ``w_j`` and
    rescales the tail ``p_{j+1..K}`` so the total stays 1, for j = 1..K-1 in
    turn; ``w_K`` is never used.
    """
    if num_exits < 1:
        raise InputError(f"need at least one exit, got {num_exits}")
    p = np.exp(np.log(float(q)) * np.arange(1, num_exits + 1, dtype=np.float64))
    p /= p.sum()
    if exit_weights is not None:
        w = np.asarray(exit_weights, dtype=np.float64)
        if w.shape != (num_exits,):
            raise InputError(
                f"exit_weights has {w.size} values for {num_exits} exits (the dynperceiver grid "
                f"re-weights exactly 4 exits); pass exit_weights with one weight per exit or "
                f"use another grid"
            )
        for j in range(num_exits - 1):
            p[j] *= w[j]
            tail = p[j + 1 :].sum()
            p[j + 1 :] = (1 - p[: j + 1].sum()) * p[j + 1 :] / tail
    return p
