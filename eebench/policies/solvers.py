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

from eebench.errors import InputError
from eebench.policies.assignment import assign_exits, exit_counts, exit_dtype, mean_cost
from eebench.policies.estimator import Estimator, check_options, constructor_options
from eebench.policies.grids import QGrid, exit_distribution, get_grid
from eebench.registry import Registry
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


class QuotaSolver(Estimator):
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
            raise InputError(
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
            raise InputError(
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
            raise InputError(f"scores must be a non-empty (samples, exits) array, got {scores.shape}")
        if self.budgets is None:
            g = get_grid(self.grid, self.exit_weights)
            return [self.solve_q(scores, costs, q)[0] for q in g.q]
        return [self.solve_budget(scores, costs, float(b)) for b in self.budgets]

    def solve_budget(self, scores: np.ndarray, costs: np.ndarray, budget: float) -> Solution:
        """Largest q (bisection on log q) whose validation cost does not exceed ``budget``."""
        lo, hi = math.log(_Q_RANGE[0]), math.log(_Q_RANGE[1])
        sol_lo, cost_lo = self.solve_q(scores, costs, math.exp(lo))
        if cost_lo > budget:
            raise InputError(
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


class SweepSolver(Estimator):
    """Thresholds given, not fitted: one shared threshold swept over a grid, or per-exit lists.

    ``grid`` (or ``thresholds``, its name in suites): ``None``/"cfvit" (0.00, 0.01, ..., 0.99, then 1.0), a list of shared
    thresholds, a string "0.5,0.9,last", or a list of per-exit threshold lists
    (K-1 values each; K values are accepted and the last is ignored, since the
    last exit always takes the rest).

    A shared value of ``"last"`` (or ``inf``) sends every sample to the last exit. CF-ViT's
    eta = 1.0, the last point of the "cfvit" grid, means the same in its paper (the full
    model); read literally as "exit when confidence >= 1.0" it would still let out the
    samples whose float32 confidence saturates at exactly 1.0, so it is that point instead.
    """

    def __init__(
        self,
        grid: str | Sequence[float] | Sequence[Sequence[float]] | None = None,
        thresholds: str | Sequence[float] | Sequence[Sequence[float]] | None = None,
    ) -> None:
        if grid is not None and thresholds is not None:
            raise InputError("give the sweep's thresholds once: as grid or as thresholds "
                             "(the same option under two names)")
        self.grid = grid
        self.thresholds = thresholds
        self._values = grid if thresholds is None else thresholds

    @property
    def name(self) -> str:
        g = self._values
        if g is None or (isinstance(g, str) and g.strip() == "cfvit"):
            return "sweep[cfvit]"
        return "sweep[custom]"

    def _points(self, num_exits: int) -> list[tuple[float, str, np.ndarray]]:
        g = self._values
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
                raise InputError("the threshold grid is empty")
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
                raise InputError(
                    f"per-exit threshold list {i} has {r.size} values; give {num_exits - 1} "
                    f"(one per exit except the last) for {num_exits} exits"
                )
            t = np.append(r[: num_exits - 1], -SENTINEL)
            out.append((float(i), "index", t))
        if not out:
            raise InputError("the threshold grid is empty")
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
        raise InputError(
            f"sweep thresholds are numbers or 'last' (every sample to the last exit), "
            f"got {value!r}"
        ) from None
    if math.isnan(t) or t == -math.inf:
        raise InputError(f"sweep threshold {value!r} is not a usable threshold")
    return t


SOLVERS: Registry[Any] = Registry("solver", where="eebench policies")
"""Threshold solvers: classes with ``solve(scores, correct, costs) -> list[Solution]``
whose keyword parameters are their options. Register one with ``@SOLVERS.register("name")``."""
SOLVERS.register("geometric", GeometricSolver)
SOLVERS.register("exact", ExactSolver)
SOLVERS.register("sweep", SweepSolver)
SOLVERS.register_lazy("ga", "eebench.policies.ga:GeneticSolver")  # deap loads on first use
SOLVERS.register_lazy("risk", "eebench.policies.risk:RiskControlSolver")


def make_solver(name: str, **options: Any) -> Any:
    """A threshold solver by name (``SOLVERS``) with its constructor options.

    An option the solver does not take fails with the names it does take (not with a
    TypeError from deep inside a constructor).
    """
    cls = SOLVERS[name]
    check_options("solver", SOLVERS.key(name), cls, options)
    return cls(**options)


def solver_options(name: str) -> list[str]:
    """The keyword options a solver's constructor accepts, in signature order."""
    return list(constructor_options(SOLVERS[name]))


def list_solvers() -> list[str]:
    return SOLVERS.names()
