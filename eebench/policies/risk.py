"""Risk control: a shared exit threshold with a high-probability bound on the accuracy drop.

Budgeted solvers say how much a policy costs; this one says how much it may lose. It follows
the Learn-then-Test recipe (Angelopoulos et al., 2021) as Jazbec et al. (2024, "Fast yet
Safe: Early-Exiting with Risk Control") apply it to early-exit networks:

- one threshold ``lam`` shared by exits 0..K-2; the last exit takes the rest (the usual
  rule of ``assign_exits``);
- per-sample loss ``1`` when the last exit is right and the exit taken is wrong, else ``0``
  (the accuracy gap to the full model, clipped at zero per sample, so it lies in [0, 1]);
- candidate thresholds ordered from conservative (high: few samples exit early) to
  permissive; fixed-sequence testing walks them in that order, testing
  ``H0: risk(lam) > epsilon`` with a valid p-value, and stops at the first candidate it
  cannot reject at level ``delta``. The last rejected candidate is returned. Fixed-sequence
  testing controls the family-wise error at ``delta`` without a multiplicity correction,
  so the grid may be as fine as one likes.

Guarantee: with probability at least ``1 - delta`` over the draw of the calibration set,
the expected loss at the returned threshold, i.e. the accuracy drop against the last exit
counted per sample, is at most ``epsilon``; the drop in accuracy (last exit minus the
assigned exits) is at most that expected loss. It assumes calibration and test samples are
exchangeable draws from one distribution, and a grid fixed before looking at labels.

p-values: ``binomial`` (the loss is 0/1, so the number of losses is Binomial(n, risk); the
tail ``P(Binomial(n, epsilon) <= observed)`` is an exact p-value) or ``hb``
(Hoeffding-Bentkus, Bates et al. 2021, valid for any loss in [0, 1]; never smaller than the
binomial tail, so it exits less, and offered for comparison with papers that use it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from eebench.errors import InputError
from eebench.policies.assignment import assign_exits
from eebench.policies.estimator import Estimator
from eebench.policies.grids import parse_floats
from eebench.policies.solvers import SENTINEL, SOLVERS, Solution

GUARANTEE = (
    "accuracy drop vs the last exit <= eps with probability >= 1 - delta over the "
    "calibration set"
)
BOUNDS = ("binomial", "hb")
DEFAULT_GRID_POINTS = 1001


def _check_unit_interval(name: str, value: Any) -> float:
    """A float strictly inside (0, 1), or a ValueError naming the parameter.

    ``value`` is anything ``float()`` takes (numbers, numeric strings, ...); what it
    refuses is refused here with the parameter's name.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise InputError(
            f"{name} must lie strictly between 0 and 1 (e.g. 0.05), got {value!r}"
        )
    return v


def gap_losses(correct: np.ndarray, exits: np.ndarray) -> np.ndarray:
    """(N,) bool: the last exit is right and the exit taken is wrong."""
    correct = np.asarray(correct, dtype=bool)
    taken = np.take_along_axis(correct, np.asarray(exits, dtype=np.int64)[:, None], axis=1)[:, 0]
    return correct[:, -1] & ~taken


def realised_drop(exits: np.ndarray, correct: np.ndarray) -> float:
    """Accuracy of the last exit minus accuracy at the assigned ``exits``, on the same samples.

    Negative when early exits fix more of the last exit's mistakes than they add. This is
    the quantity a test set reports; the risk-control guarantee bounds its expectation.
    """
    correct = np.asarray(correct, dtype=bool)
    exits = np.asarray(exits)
    if correct.ndim != 2 or exits.shape != (correct.shape[0],):
        raise InputError(
            f"exits must be (N,) and correct (N, K); got {exits.shape} and {correct.shape}"
        )
    n = correct.shape[0]
    if n == 0:
        raise InputError("cannot measure an accuracy drop on an empty set")
    taken = np.take_along_axis(correct, exits.astype(np.int64)[:, None], axis=1)[:, 0]
    return float(correct[:, -1].sum() - taken.sum()) / n


def loss_counts(scores: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(G,) number of samples with gap loss 1 when every exit but the last uses ``grid[g]``.

    Same result as ``gap_losses(correct, assign_exits(scores, [lam]*(K-1) + [-SENTINEL]))``
    summed, for every ``lam`` of the grid at once: with ``M_k`` the running maximum of a
    sample's scores over exits 0..k, it exits at k exactly for ``M_{k-1} < lam <= M_k``.
    """
    scores = np.asarray(scores)
    correct = np.asarray(correct, dtype=bool)
    n, k = scores.shape
    grid = np.asarray(grid, dtype=np.float64)
    total = np.zeros(grid.shape[0], dtype=np.int64)
    if k == 1 or n == 0:
        return total
    running = np.maximum.accumulate(scores[:, :-1].astype(np.float64), axis=1)
    lossy = correct[:, -1:] & ~correct[:, :-1]  # (N, K-1): loss if the sample exits at j
    for j in range(k - 1):
        # samples with loss at exit j: +1 where lam <= M_j, -1 where lam <= M_{j-1}
        for col, sign in ((j, 1), (j - 1, -1)):
            if col < 0:
                continue
            vals = np.sort(running[lossy[:, j], col])
            # number of values >= lam, for every lam of the grid
            total += sign * (vals.size - np.searchsorted(vals, grid, side="left"))
    return total


def binomial_p_values(losses: np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """Exact p-values of ``H0: risk > epsilon`` for 0/1 losses: ``P(Bin(n, eps) <= losses)``."""
    from scipy.stats import binom

    return np.asarray(binom.cdf(np.asarray(losses), n, epsilon), dtype=np.float64)


def hb_p_values(losses: np.ndarray, n: int, epsilon: float) -> np.ndarray:
    """Hoeffding-Bentkus p-values of ``H0: risk > epsilon`` for losses in [0, 1].

    ``min(exp(-n h(min(r, eps), eps)), e * P(Bin(n, eps) <= ceil(n r)))`` with ``r`` the
    empirical risk and ``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``.
    """
    from scipy.stats import binom

    r = np.asarray(losses, dtype=np.float64) / n
    a = np.minimum(r, epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(a > 0, a * np.log(a / epsilon), 0.0) + (1 - a) * np.log(
            (1 - a) / (1 - epsilon)
        )
    hoeffding = np.exp(-n * h)
    bentkus = math.e * binom.cdf(np.ceil(n * r - 1e-9), n, epsilon)
    return np.minimum(1.0, np.minimum(hoeffding, bentkus))


P_VALUES = {"binomial": binomial_p_values, "hb": hb_p_values}


@SOLVERS.register("risk")
class RiskControlSolver(Estimator):
    """Learn-then-Test threshold, one Solution per ``epsilon`` (see the module docstring).

    ``epsilon``: one or several bounds on the accuracy drop (fractions in (0, 1)).
    ``delta``: allowed probability that the bound fails (in (0, 1)).
    ``grid``: candidate thresholds (any order, a list or a string "0.9,0.95"; they are
    tested from the highest down), an int (that many evenly spaced values), or None: 1001 values evenly spaced over [0, 1]
    when every score lies in [0, 1] (confidence, margin), else over the scores' range (a
    grid that depends on the calibration scores, though not on their labels).
    ``bound``: "binomial" (exact, for 0/1 losses) or "hb" (Hoeffding-Bentkus).
    """

    def __init__(
        self,
        epsilon: float | Sequence[float] = 0.01,
        delta: float = 0.1,
        grid: int | str | Sequence[float] | None = None,
        bound: str = "binomial",
    ) -> None:
        eps_list = (
            [epsilon] if np.ndim(epsilon) == 0
            else list(cast(Sequence[float], epsilon))  # ndim >= 1: a sequence or an array
        )
        if not eps_list:
            raise InputError("epsilon: the list is empty; give at least one bound, e.g. 0.01")
        self.epsilon = [_check_unit_interval("epsilon", e) for e in eps_list]
        self.delta = _check_unit_interval("delta", delta)
        if isinstance(bound, str) and bound.strip().lower() in BOUNDS:
            self.bound = bound.strip().lower()
        else:
            raise InputError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
        if isinstance(grid, str):
            grid = parse_floats(grid)
        if grid is not None and not isinstance(grid, (int, np.integer)):
            g = np.asarray(list(grid), dtype=np.float64).reshape(-1)
            if g.size == 0 or not np.isfinite(g).all():
                raise InputError("grid: give finite candidate thresholds (at least one)")
        elif isinstance(grid, (int, np.integer)) and (isinstance(grid, bool) or grid < 2):
            raise InputError(f"grid: a number of candidates must be an integer >= 2, got {grid!r}")
        self.grid = grid

    @property
    def name(self) -> str:
        return f"risk[{self.bound},delta={self.delta:g}]"

    def candidates(self, scores: np.ndarray) -> np.ndarray:
        """Candidate thresholds, most conservative (highest) first, without repeats."""
        if self.grid is None or isinstance(self.grid, (int, np.integer)):
            points = DEFAULT_GRID_POINTS if self.grid is None else int(self.grid)
            s = np.asarray(scores)[:, :-1]
            lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
            if s.size == 0 or (lo >= 0.0 and hi <= 1.0):
                lo, hi = 0.0, 1.0
            g = np.linspace(lo, hi, points)
        else:
            g = np.asarray(list(self.grid), dtype=np.float64).reshape(-1)
        return np.unique(g)[::-1]

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        scores = np.asarray(scores)
        correct = np.asarray(correct, dtype=bool)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise InputError(
                f"scores must be a non-empty (samples, exits) array, got {scores.shape}"
            )
        if correct.shape != scores.shape:
            raise InputError(f"correct {correct.shape} and scores {scores.shape} differ in shape")
        n, k = scores.shape
        grid = self.candidates(scores)
        losses = loss_counts(scores, correct, grid)
        p_fn = P_VALUES[self.bound]
        out = []
        for eps in self.epsilon:
            p = p_fn(losses, n, eps)
            not_rejected = np.flatnonzero(p > self.delta)
            stop = int(not_rejected[0]) if not_rejected.size else grid.size
            info: dict[str, Any] = {
                "epsilon": eps,
                "delta": self.delta,
                "guarantee": GUARANTEE,
                "bound": self.bound,
            }
            if stop == 0 or k == 1:
                t = np.array([SENTINEL] * (k - 1) + [-SENTINEL])
                info.update({"lambda": SENTINEL, "val_risk": 0.0, "p_value": float("nan")})
                if k > 1:
                    info["note"] = (
                        f"no threshold passed the test at delta={self.delta:g} (p-value of the "
                        f"most conservative candidate {grid[0]:.4g}: {p[0]:.3g}); nobody exits "
                        f"early. Use more calibration samples or a larger epsilon"
                    )
            else:
                lam = float(grid[stop - 1])
                t = np.array([lam] * (k - 1) + [-SENTINEL])
                info.update({
                    "lambda": lam,
                    "val_risk": float(losses[stop - 1]) / n,
                    "p_value": float(p[stop - 1]),
                })
            out.append(Solution(eps, "epsilon", t, assign_exits(scores, t), info))
        return out
