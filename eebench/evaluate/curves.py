"""The budgeted-batch protocol: fit a policy on validation, report every operating point on test.

Validation accuracy and cost are reported beside the test numbers so that a
reader can see the generalisation gap of the thresholds, and the exit
fractions so that a reader can see *how* a policy spends its budget.
Accuracy is hits / N (a fraction); cost is the mean cumulative cost of the
exit taken, accumulated as in the reference code (see eebench.policies.solvers).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.policies.policy import BasePolicy, OperatingPoint, check_logitset
from eebench.policies.scores import exit_correct
from eebench.policies.solvers import evaluate_exits

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet


def thresholds_json(thresholds: np.ndarray) -> str:
    """Thresholds as a JSON list; non-finite values (NaN: no threshold) become null."""
    return json.dumps([float(t) if np.isfinite(t) else None for t in thresholds])


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
    k = test_correct.shape[1]
    n_test = test_correct.shape[0]
    rows = []
    for vp, tp in zip(val_points, test_points):
        va, vc, _ = evaluate_exits(vp.exits, val_correct, val_costs)
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
        row.update(extra or {})
        rows.append(row)
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
    rows = curve_rows(
        policy.name,
        policy.apply(val),
        policy.apply(test),
        exit_correct(val),
        exit_correct(test),
        val.costs,
        test.costs,
        {"calibration": json.dumps(cal) if cal else ""},
    )
    return pd.DataFrame(rows)
