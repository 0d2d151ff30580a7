"""Exit policies: calibration (optional) + score + solver, fit on validation, applied to test.

The scikit-learn contract (parameters in the constructor, ``fit`` on one set,
learned state ending in ``_``, ``apply`` on another) makes it impossible to
fit thresholds on the test split by accident: ``fit`` is the only place that
sees labels, and it only sees the validation set. Every policy, learned or
baseline, produces the same thing: a list of OperatingPoint, each with an
exit index per sample, so evaluation never needs to know which kind it got.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from eebench.errors import InputError
from eebench.policies.assignment import assign_exits, exit_counts, mean_cost
from eebench.policies.calibration import make_calibration
from eebench.policies.estimator import Estimator
from eebench.policies.scores import correctness, get_score, scores_and_predictions
from eebench.policies.solvers import Solution, make_solver
from eebench.store.logitset import check_logitset

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet


@dataclass
class OperatingPoint:
    """One point of a policy on one set: its parameter, thresholds (K,) and exits (N,).

    ``param`` is what the solver swept (q, a shared threshold, a budget, an
    exit index; NaN for the oracle), named by ``param_name``. Thresholds are
    NaN for policies that do not threshold (oracle, random).
    """

    param: float
    thresholds: np.ndarray
    exits: np.ndarray
    param_name: str = "q"
    note: str = ""


def merge_budget_duplicates(
    solutions: list[Solution], costs: np.ndarray, num_samples: int
) -> list[Solution]:
    """One solution per distinct operating point of a budget-targeting solver, each saying
    whether it used its budget.

    A solver asked for a budget it cannot use (accuracy already at its best at a lower
    cost, or a cost no threshold reaches) returns the same thresholds for several budgets;
    written as separate points they would look like distinct results. The first budget keeps
    the point, ``info["budgets"]`` lists every budget it answers, and ``info["note"]`` says
    which budgets were not reached and at what validation cost the solver stopped.
    """
    out: list[Solution] = []
    for sol in solutions:
        if sol.param_name != "budget":
            out.append(sol)
            continue
        prev = out[-1] if out and out[-1].param_name == "budget" else None
        if prev is not None and np.array_equal(prev.thresholds, sol.thresholds, equal_nan=True):
            prev.info.setdefault("budgets", [prev.param]).append(float(sol.param))
        else:
            out.append(sol)
    k = len(costs)
    # one sample moved from the first exit to the last, or 0.5% of the cost range (solvers
    # that search a grid of thresholds stop that close): finer than that, no budget is "missed"
    span = float(costs[-1]) - float(costs[0])
    grain = max(span / max(1, num_samples), 0.005 * span)
    for sol in out:
        if sol.param_name != "budget" or sol.fit_exits is None:
            continue
        reached = float(mean_cost(exit_counts(sol.fit_exits, k), costs, num_samples))
        sol.info["val_cost"] = reached
        budgets = sol.info.get("budgets", [float(sol.param)])
        unreached = [b for b in budgets if reached < b - grain - 1e-9 * abs(b)]
        if unreached:
            listed = ", ".join(f"{b:g}" for b in unreached)
            sol.info["note"] = (
                f"budget{'s' if len(unreached) > 1 else ''} {listed} not reached: the solver "
                f"stopped at validation cost {reached:.4g}"
                + (f"; one operating point for {len(budgets)} budgets" if len(budgets) > 1 else "")
            )
    return out


class BasePolicy(Estimator):
    """Shared checks of every policy; subclasses implement ``fit`` and ``apply``."""

    kind: ClassVar[str] = "learned"
    """What a report may compare it as: ``"learned"`` (fit on validation outputs), or a
    reference that learns nothing: ``"oracle"``, ``"random"``, ``"static"``."""

    @property
    def name(self) -> str:
        """What reports call the policy; subclasses set a class attribute or a property."""
        return "policy"

    def _check_fitted(self, ls: LogitSet) -> None:
        check_logitset(ls, "the set to apply the policy to")
        if not hasattr(self, "num_exits_"):
            raise RuntimeError(f"policy {self.name!r} is not fitted; call fit(validation_set) first")
        if ls.num_exits != self.num_exits_:
            raise InputError(
                f"policy {self.name!r} was fit on {self.num_exits_} exits but the set has "
                f"{ls.num_exits}; apply it to outputs of the same model"
            )

    def describe(self) -> dict[str, Any]:
        """Plain-data description (name and fitted state worth reporting)."""
        return {"name": self.name}

    def correct(self, ls: LogitSet) -> np.ndarray:
        """(N, K) bool: is exit k's prediction of sample i right, as this policy predicts.

        Every exit's raw arg-max here; policies whose calibration changes predictions
        (model-internal ensembling, ...) answer with their own predictions, so that their
        accuracy is that of what they would output.
        """
        check_logitset(ls, "the set")
        return correctness(ls)

    def fit(self, val: LogitSet) -> BasePolicy:  # pragma: no cover - interface
        raise NotImplementedError

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:  # pragma: no cover - interface
        raise NotImplementedError

    def iter_apply(self, ls: LogitSet) -> Iterator[OperatingPoint]:
        """The points of ``apply`` one at a time (policies that can make them lazily hold
        one per-sample exit array at a time instead of all of them)."""
        yield from self.apply(ls)


class Policy(BasePolicy):
    """Threshold policy: ``score`` (name) + ``solver`` (name or object) + ``calibration``.

    After ``fit``: ``calibration_`` (fitted, or None), ``solutions_`` (list of
    Solution on the validation set), ``num_exits_``.
    """

    def __init__(
        self,
        score: str = "confidence",
        solver: Any = "geometric",
        calibration: Any = None,
        *,
        solver_options: Mapping[str, Any] | None = None,
    ) -> None:
        get_score(score)  # unknown names fail here, listing the known ones
        self.score = score
        self.solver = solver
        self.calibration = calibration
        self.solver_options = dict(solver_options or {})
        self._solver = make_solver(solver, **self.solver_options) if isinstance(solver, str) else solver
        if isinstance(calibration, str) or calibration is None:
            make_calibration(calibration)

    @property
    def name(self) -> str:
        cal = self.calibration if isinstance(self.calibration, str) else getattr(
            self.calibration, "name", None
        )
        cal_part = f"+{cal}" if cal and cal != "none" else ""
        return f"{self.score}{cal_part}/{self._solver.name}"

    def fit(self, val: LogitSet) -> Policy:
        check_logitset(val, "the validation set")
        if val.num_samples == 0:
            raise InputError("the validation set is empty")
        if isinstance(self.calibration, str) or self.calibration is None:
            cal = make_calibration(self.calibration)
        else:
            cal = self.calibration
        self.calibration_ = cal.fit(val) if cal is not None else None
        scores, preds = scores_and_predictions(val, self.score, self.calibration_)
        correct = preds == val.labels[:, None]
        self.solutions_: list[Solution] = merge_budget_duplicates(
            self._solver.solve(scores, correct, val.costs), val.costs, val.num_samples
        )
        self.num_exits_ = val.num_exits
        return self

    def correct(self, ls: LogitSet) -> np.ndarray:
        """(N, K) bool correctness of this policy's predictions (from the calibrated
        probabilities when its calibration changes predictions, else the raw arg-max)."""
        self._check_fitted(ls)
        return correctness(ls, self.calibration_)

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:
        return list(self.iter_apply(ls))

    def iter_apply(self, ls: LogitSet) -> Iterator[OperatingPoint]:
        self._check_fitted(ls)
        # scores (and with them the predictions) now, in one pass; exits point by point
        scores, _ = scores_and_predictions(ls, self.score, self.calibration_)
        return self._points(scores)

    def _points(self, scores: np.ndarray) -> Iterator[OperatingPoint]:
        for s in self.solutions_:
            yield OperatingPoint(s.param, s.thresholds.copy(), assign_exits(scores, s.thresholds),
                                 s.param_name, s.info.get("note", ""))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "score": self.score, "solver": self._solver.name}
        cal = getattr(self, "calibration_", None)
        if cal is not None:
            out["calibration"] = cal.describe()
        return out
