"""The budgeted-batch protocol: fit a policy on validation, report every operating point on test.

Validation accuracy and cost are reported beside the test numbers so that a
reader can see the generalisation gap of the thresholds, and the exit
fractions so that a reader can see *how* a policy spends its budget.
Accuracy is hits / N (a fraction) of the policy's own predictions (a policy whose
calibration changes predictions, such as model-internal ensembling, is scored on
what it would output); cost is the mean cumulative cost of the exit taken,
accumulated as in the reference code (see eebench.policies.solvers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.policies.policy import BasePolicy, OperatingPoint, check_logitset
from eebench.policies.scores import correctness
from eebench.policies.solvers import evaluate_exits

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet


def thresholds_json(thresholds: np.ndarray) -> str:
    """Thresholds as a JSON list; non-finite values (NaN: no threshold) become null."""
    return json.dumps([float(t) if np.isfinite(t) else None for t in thresholds])


def policy_correct(policy: Any, ls: LogitSet) -> np.ndarray:
    """(N, K) bool correctness of ``policy``'s predictions on ``ls`` (its ``correct``
    method; every exit's raw arg-max for objects without one)."""
    fn = getattr(policy, "correct", None)
    return fn(ls) if callable(fn) else correctness(ls)


def curve_rows(
    name: str,
    val_points: list[OperatingPoint],
    test_points: list[OperatingPoint],
    val_correct: np.ndarray,
    test_correct: np.ndarray,
    val_costs: np.ndarray,
    test_costs: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Curve rows from operating points already computed on both sets."""
    if len(val_points) != len(test_points):
        raise ValueError(
            f"{len(val_points)} validation points but {len(test_points)} test points"
        )
    return _rows(name, _val_stats(val_points, val_correct, val_costs), test_points,
                 test_correct, test_costs, extra)


def _val_stats(
    points: Iterable[OperatingPoint], correct: np.ndarray, costs: np.ndarray
) -> list[tuple[float, float]]:
    """(accuracy, cost) of every validation point."""
    return [evaluate_exits(p.exits, correct, costs)[:2] for p in points]


def _rows(
    name: str,
    val_stats: list[tuple[float, float]],
    test_points: Iterable[OperatingPoint],
    test_correct: np.ndarray,
    test_costs: np.ndarray,
    extra: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    k = test_correct.shape[1]
    n_test = test_correct.shape[0]
    rows: list[dict[str, Any]] = []
    for i, tp in enumerate(test_points):
        if i >= len(val_stats):
            raise ValueError(f"{len(val_stats)} validation points but more test points")
        va, vc = val_stats[i]
        ta, tc, counts = evaluate_exits(tp.exits, test_correct, test_costs)
        row: dict[str, Any] = {
            "policy": name,
            "param": float(tp.param),
            "param_name": tp.param_name,
            "val_acc": va,
            "val_cost": vc,
            "test_acc": ta,
            "test_cost": tc,
        }
        for j in range(k):
            row[f"frac_{j}"] = counts[j] / n_test
        row["thresholds"] = thresholds_json(tp.thresholds)
        row["note"] = tp.note
        if tp.param_name == "epsilon":  # risk control: the bound beside what test shows
            drop = float(test_correct[:, -1].mean()) - ta if n_test else float("nan")
            row["note"] = "; ".join(filter(None, [tp.note, (
                f"accuracy drop vs the last exit guaranteed <= {tp.param:g} on the fitting "
                f"distribution, realised on test {drop:+.4f}")]))
        row.update(extra or {})
        rows.append(row)
    if len(rows) != len(val_stats):
        raise ValueError(f"{len(val_stats)} validation points but {len(rows)} test points")
    return rows


def budgeted_curve(
    policy: BasePolicy, val: LogitSet, test: LogitSet, *, fit: bool = True
) -> pd.DataFrame:
    """One row per operating point.

    Columns: policy, param, param_name, val_acc, val_cost, test_acc, test_cost,
    frac_0..frac_{K-1} (test exit fractions), thresholds (JSON list; null where
    a policy does not threshold), note (what the solver could not do, e.g. a budget
    it did not reach; empty otherwise), calibration (JSON of the fitted calibration,
    e.g. per-exit temperatures, or "" without one). ``fit=False`` uses a policy
    that is already fitted (on ``val``, by the caller).
    """
    import pandas as pd

    check_logitset(val, "the validation set")
    check_logitset(test, "the test set")
    if val.num_exits != test.num_exits:
        raise ValueError(
            f"validation has {val.num_exits} exits but test has {test.num_exits}; "
            f"both must come from the same model"
        )
    if fit:
        policy.fit(val)
    cal = policy.describe().get("calibration")
    # points are reduced to numbers as they come (one per-sample exit array at a time for
    # policies that make them lazily, never a validation and a test list at once)
    points = getattr(policy, "iter_apply", policy.apply)
    val_stats = _val_stats(points(val), policy_correct(policy, val), val.costs)
    rows = _rows(
        policy.name,
        val_stats,
        points(test),
        policy_correct(policy, test),
        test.costs,
        {"calibration": json.dumps(cal) if cal else ""},
    )
    return pd.DataFrame(rows)
