"""Threshold solvers: from validation scores to one threshold per exit.

Every solver returns thresholds, and every policy applies them the same way
(a sample exits at the first exit whose score reaches its threshold; the last
exit takes the rest). Keeping the test-time rule out of the solvers means that
solvers differ only in how they *choose* thresholds, which is what a policy
comparison should isolate.

The geometric solver is the MSDNet rule (FIELD-NOTES section 1), vectorised:
a loop over exits and budgets, never over samples. It reproduces the official
``dynamic_eval_find_threshold`` exactly, quirks included:

- quota ``floor(N * p_k)`` with N = all validation samples (not the remaining ones);
- threshold = the score of the quota-th highest-scoring sample still remaining
  (``count == out_n`` in the official loop, i.e. ``sorted[quota - 1]``); its
  value does not depend on how the sort orders ties;
- every remaining sample with score ``>=`` the threshold exits, so ties beyond
  the quota exit too;
- a quota of 0, or more quota than remaining samples, leaves the sentinel
  ``1e8`` (nobody exits there); the last exit gets ``-1e8`` (everybody left).

Costs are accumulated as ``sum_k (count_k / N) * cost_k`` in exit order,
the official formula, so that our numbers and a plain-loop transcription are
bit-identical (eebench.policies.reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from eebench.errors import DataError
from eebench.policies._registry import lookup
from eebench.policies.grids import QGrid, exit_distribution, get_grid
from eebench.store.validate import check_budgets

SENTINEL = 1e8
"""Threshold meaning "nobody exits here" (and ``-SENTINEL``: everybody exits), as in MSDNet."""

_Q_RANGE = (1e-4, 1e4)
_BISECT_STEPS = 60


@dataclass
class Solution:
    """One operating point chosen on the validation split.

    ``fit_exits`` is the assignment the solver made while fitting (for the
    exact solver it holds the exact quotas; the threshold rule applied to the
    same set can send boundary ties to the earlier exit).
    """

    param: float
    param_name: str
    thresholds: np.ndarray
    fit_exits: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Solver(Protocol):
    """What a policy needs from a solver."""

    name: str

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        """Thresholds for every operating point, from (N, K) scores and correctness."""
        ...


# ---------------------------------------------------------------- shared vectorised pieces


def exit_dtype(num_exits: int) -> type[np.signedinteger]:
    """Smallest integer type that holds an exit index."""
    return np.int8 if num_exits <= 127 else np.int16


def assign_exits(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N,) first exit k with ``score[:, k] >= thresholds[k]``; the last exit takes the rest."""
    scores = np.asarray(scores)
    n, k = scores.shape
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape[0] != k:
        raise ValueError(f"{t.shape[0]} thresholds for {k} exits; give one threshold per exit")
    out = np.full(n, k - 1, dtype=exit_dtype(k))
    if k == 1:
        return out
    ge = scores[:, :-1] >= t[:-1]
    any_ge = ge.any(axis=1)
    out[any_ge] = ge[any_ge].argmax(axis=1)
    return out


def exit_counts(exits: np.ndarray, num_exits: int) -> np.ndarray:
    """(..., K) int64 number of samples per exit (last axis of ``exits`` = samples)."""
    exits = np.asarray(exits)
    if exits.ndim == 1:
        return np.bincount(exits.astype(np.int64), minlength=num_exits)
    return np.stack([(exits == k).sum(axis=-1) for k in range(num_exits)], axis=-1)


def mean_cost(counts: np.ndarray, costs: np.ndarray, n: int) -> np.ndarray | float:
    """``sum_k (count_k / n) * cost_k`` accumulated in exit order (the reference formula)."""
    counts = np.asarray(counts)
    total: Any = 0.0
    for k in range(counts.shape[-1]):
        total = total + (counts[..., k] / n) * float(costs[k])
    return total if counts.ndim > 1 else float(total)


def hits_at(exits: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(N,) bool: is the prediction of the exit taken right."""
    return np.take_along_axis(correct, exits.astype(np.int64)[:, None], axis=1)[:, 0]


def evaluate_exits(
    exits: np.ndarray, correct: np.ndarray, costs: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """(accuracy = hits / N, mean cost, counts per exit) of one exit assignment."""
    n, k = correct.shape
    counts = exit_counts(exits, k)
    acc = float(hits_at(exits, correct).sum()) / n if n else float("nan")
    return acc, float(mean_cost(counts, costs, n)), counts  # 1-D counts: a float already


def quota_thresholds(
    scores: np.ndarray, p: np.ndarray, exact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (K,) and the fit assignment (N,) for target fractions ``p``.

    ``exact=False``: the MSDNet rule (ties beyond the quota exit). ``exact=True``:
    exactly ``floor(N p_k)`` samples exit at k, ties at the boundary broken by
    sample position (earlier first); threshold = score of the last one exiting.
    """
    n, k_exits = scores.shape
    p = np.asarray(p, dtype=np.float64)
    thresholds = np.full(k_exits, SENTINEL)
    exits = np.full(n, k_exits - 1, dtype=exit_dtype(k_exits))
    remaining = np.ones(n, dtype=bool)
    for k in range(k_exits - 1):
        quota = math.floor(n * p[k])
        idx = np.flatnonzero(remaining)
        s = scores[idx, k]
        if exact:
            quota = min(quota, s.size)
            if quota < 1:
                continue
            order = np.argsort(-s, kind="stable")[:quota]
            thresholds[k] = s[order[-1]]
            out = idx[order]
        else:
            if 1 <= quota <= s.size:
                thresholds[k] = s[np.argpartition(s, s.size - quota)[s.size - quota]]
            out = idx[s >= thresholds[k]]
        exits[out] = k
        remaining[out] = False
    thresholds[k_exits - 1] = -SENTINEL
    return thresholds, exits


# ---------------------------------------------------------------- solvers


class QuotaSolver:
    """Geometric target distributions over a q grid, or q found per budget (bisection on log q).

    ``exact=False`` is the MSDNet rule; ``exact=True`` the exact-quota variant
    (EENet-style). With ``budgets`` (mean validation cost targets, in the
    units of the costs), each budget gets the largest q on a bisection of
    ``log q`` in [1e-4, 1e4] whose validation cost is at most the budget.
    """

    def __init__(
        self,
        grid: str | Sequence[float] | QGrid | None = None,
        budgets: Sequence[float] | None = None,
        exit_weights: Sequence[float] | None = None,
        exact: bool = False,
    ) -> None:
        if grid is not None and budgets is not None:
            raise ValueError(
                "give a q grid or budgets, not both (budgets choose q by bisection)"
            )
        self.grid = grid
        self.budgets = check_budgets(budgets)
        self.exit_weights = exit_weights
        self.exact = exact

    @property
    def name(self) -> str:
        kind = "exact" if self.exact else "geometric"
        if self.budgets is not None:
            return f"{kind}[budgets]"
        return f"{kind}[{get_grid(self.grid, self.exit_weights).name}]"

    def _weights(self, num_exits: int) -> tuple[float, ...] | None:
        g = get_grid(self.grid, self.exit_weights)
        if g.exit_weights is not None and len(g.exit_weights) != num_exits:
            raise ValueError(
                f"grid {g.name!r} re-weights {len(g.exit_weights)} exits but the logits have "
                f"{num_exits}; pass exit_weights with {num_exits} values or use another grid"
            )
        return g.exit_weights

    def solve_q(self, scores: np.ndarray, costs: np.ndarray, q: float) -> tuple[Solution, float]:
        """The solution for one q and its validation cost."""
        n, k = scores.shape
        p = exit_distribution(q, k, self._weights(k))
        t, ex = quota_thresholds(scores, p, exact=self.exact)
        cost = float(mean_cost(exit_counts(ex, k), costs, n))  # 1-D counts: a float already
        return Solution(float(q), "q", t, ex, {"q": float(q), "p": p.tolist()}), cost

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(f"scores must be a non-empty (samples, exits) array, got {scores.shape}")
        if self.budgets is None:
            g = get_grid(self.grid, self.exit_weights)
            return [self.solve_q(scores, costs, q)[0] for q in g.q]
        return [self.solve_budget(scores, costs, float(b)) for b in self.budgets]

    def solve_budget(self, scores: np.ndarray, costs: np.ndarray, budget: float) -> Solution:
        """Largest q (bisection on log q) whose validation cost does not exceed ``budget``."""
        lo, hi = math.log(_Q_RANGE[0]), math.log(_Q_RANGE[1])
        sol_lo, cost_lo = self.solve_q(scores, costs, math.exp(lo))
        if cost_lo > budget:
            raise ValueError(
                f"budget {budget:g} is below the cheapest validation cost this rule reaches "
                f"({cost_lo:g} at q={_Q_RANGE[0]:g}; the first exit alone costs {costs[0]:g}); "
                f"give budgets of at least {cost_lo:g}"
            )
        sol_hi, cost_hi = self.solve_q(scores, costs, math.exp(hi))
        if cost_hi <= budget:
            best = sol_hi
        else:
            best = sol_lo
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                sol, cost = self.solve_q(scores, costs, math.exp(mid))
                if cost <= budget:
                    lo, best = mid, sol
                else:
                    hi = mid
        best.info["budget"] = budget
        return Solution(budget, "budget", best.thresholds, best.fit_exits, best.info)


class GeometricSolver(QuotaSolver):
    """The MSDNet threshold rule (ties beyond the quota exit)."""

    def __init__(
        self,
        grid: str | Sequence[float] | QGrid | None = None,
        budgets: Sequence[float] | None = None,
        exit_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(grid, budgets, exit_weights, exact=False)


class ExactSolver(QuotaSolver):
    """Exactly ``floor(N p_k)`` validation samples exit at k (no tie overflow).

    The exact quotas hold for the fit assignment (``Solution.fit_exits``);
    applied as thresholds (to test, or back to validation) the usual ``>=``
    rule holds, so samples tied with the last one in a quota exit there too.
    Without ties at the quota boundaries the two coincide.
    """

    def __init__(
        self,
        grid: str | Sequence[float] | QGrid | None = None,
        budgets: Sequence[float] | None = None,
        exit_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(grid, budgets, exit_weights, exact=True)


CFVIT_THRESHOLDS = tuple(0.01 * p for p in range(100))
"""CF-ViT's sweep: ``threshold = 0.01 * p`` for p = 0..99 (meant for scores in [0, 1])."""


class SweepSolver:
    """Thresholds given, not fitted: one shared threshold swept over a grid, or per-exit lists.

    ``grid``: ``None``/"cfvit" (0.00, 0.01, ..., 0.99, then 1.0), a list of shared
    thresholds, a string "0.5,0.9,last", or a list of per-exit threshold lists
    (K-1 values each; K values are accepted and the last is ignored, since the
    last exit always takes the rest).

    A shared value of ``"last"`` (or ``inf``) sends every sample to the last exit. CF-ViT's
    eta = 1.0, the last point of the "cfvit" grid, means the same in its paper (the full
    model); read literally as "exit when confidence >= 1.0" it would still let out the
    samples whose float32 confidence saturates at exactly 1.0, so it is that point instead.
    """

    def __init__(self, grid: str | Sequence[float] | Sequence[Sequence[float]] | None = None) -> None:
        self.grid = grid

    @property
    def name(self) -> str:
        if self.grid is None or (isinstance(self.grid, str) and self.grid.strip() == "cfvit"):
            return "sweep[cfvit]"
        return "sweep[custom]"

    def _points(self, num_exits: int) -> list[tuple[float, str, np.ndarray]]:
        g = self.grid
        rows: Sequence[float] | Sequence[Sequence[float]] = ()  # per-exit threshold lists
        last_param = math.inf
        if g is None or (isinstance(g, str) and g.strip().lower() == "cfvit"):
            shared: list[float] | None = [*CFVIT_THRESHOLDS, math.inf]
            last_param = 1.0  # CF-ViT's eta = 1.0
        elif isinstance(g, str):
            shared = [_shared_value(x) for x in g.replace(";", ",").split(",") if x.strip()]
        elif len(g) and all(np.ndim(v) == 0 for v in g):
            shared = [_shared_value(v) for v in g]
        else:
            shared = None
            rows = g
        if shared is not None:
            if not shared:
                raise ValueError("the threshold grid is empty")
            return [
                (last_param, "threshold", np.array([SENTINEL] * (num_exits - 1) + [-SENTINEL]))
                if t == math.inf
                else (t, "threshold", np.array([t] * (num_exits - 1) + [-SENTINEL]))
                for t in shared
            ]
        out = []
        for i, row in enumerate(rows):
            r = np.asarray(row, dtype=np.float64).reshape(-1)
            if r.size not in (num_exits - 1, num_exits):
                raise ValueError(
                    f"per-exit threshold list {i} has {r.size} values; give {num_exits - 1} "
                    f"(one per exit except the last) for {num_exits} exits"
                )
            t = np.append(r[: num_exits - 1], -SENTINEL)
            out.append((float(i), "index", t))
        if not out:
            raise ValueError("the threshold grid is empty")
        return out

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        k = np.asarray(scores).shape[1]
        return [
            Solution(param, name, t, assign_exits(scores, t), {})
            for param, name, t in self._points(k)
        ]


def _shared_value(value: Any) -> float:
    """One shared sweep threshold: a number, or "last"/inf for "every sample to the last exit"."""
    if isinstance(value, str) and value.strip().lower() in ("last", "inf", "+inf"):
        return math.inf
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"sweep thresholds are numbers or 'last' (every sample to the last exit), "
            f"got {value!r}"
        ) from None
    if math.isnan(t) or t == -math.inf:
        raise ValueError(f"sweep threshold {value!r} is not a usable threshold")
    return t


def _ga_solver(**kwargs: Any) -> Any:
    from eebench.policies.ga import GeneticSolver

    return GeneticSolver(**kwargs)


def _risk_solver(**kwargs: Any) -> Any:
    from eebench.policies.risk import RiskControlSolver

    return RiskControlSolver(**kwargs)


SOLVERS: dict[str, Any] = {
    "geometric": GeometricSolver,
    "exact": ExactSolver,
    "sweep": SweepSolver,
    "ga": _ga_solver,
    "risk": _risk_solver,
}


def make_solver(name: str, **options: Any) -> Any:
    """A threshold solver by name (geometric, exact, sweep, ga, risk) with its constructor options.

    An option the solver does not take fails with the names it does take (not with a
    TypeError from deep inside a constructor).
    """
    factory = lookup("solver", name, SOLVERS)
    accepted = solver_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(
            f"solver {name!r} has no option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; it accepts: {', '.join(accepted) or 'none'}"
        )
    return factory(**options)


def solver_options(name: str) -> list[str]:
    """The keyword options a solver's constructor accepts, in signature order."""
    import inspect

    factory = lookup("solver", name, SOLVERS)
    if factory is _ga_solver:
        from eebench.policies.ga import GeneticSolver

        factory = GeneticSolver
    elif factory is _risk_solver:
        from eebench.policies.risk import RiskControlSolver

        factory = RiskControlSolver
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def list_solvers() -> list[str]:
    return sorted(SOLVERS)
