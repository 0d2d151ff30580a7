"""The budgeted-batch protocol: fit a policy on validation, report every operating point on test.

Validation accuracy and cost are reported beside the test numbers so that a
reader can see the generalisation gap of the thresholds, and the exit
fractions so that a reader can see *how* a policy spends its budget.
Accuracy is hits / N (a fraction) of the policy's own predictions (a policy whose
calibration changes predictions, such as model-internal ensembling, is scored on
what it would output); cost is the mean cumulative cost of the exit taken,
accumulated as in the reference code (see eebench.policies.solvers).

With ``n_boot > 0`` each row also gets ``test_acc_low`` and ``test_acc_high``, a
percentile bootstrap interval of the point's test accuracy: its exits stay fixed
(the thresholds were fit on validation and do not move), test samples are
resampled. The resamples come from eebench.evaluate.summary.bootstrap_weights,
so every point and policy of one test set, and the summary's intervals, see the
same resamples when given the same seed: bands of two policies are comparable,
and a band is the interval the summary would give at that point. With the
usual 95% and a few hundred resamples the band contains the point's accuracy;
it is a percentile interval, not forced to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError
from eebench.policies.assignment import evaluate_exits, hits_at
from eebench.policies.policy import BasePolicy, OperatingPoint
from eebench.policies.scores import correctness
from eebench.store.logitset import check_logitset

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
    *,
    n_boot: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> list[dict[str, Any]]:
    """Curve rows from operating points already computed on both sets (``n_boot``,
    ``seed``, ``ci``: the accuracy band, as in budgeted_curve)."""
    if len(val_points) != len(test_points):
        raise InputError(
            f"{len(val_points)} validation points but {len(test_points)} test points"
        )
    return _rows(name, _val_stats(val_points, val_correct, val_costs), test_points,
                 test_correct, test_costs, extra, _band_spec(n_boot, seed, ci))


def _band_spec(n_boot: Any, seed: Any, ci: Any) -> tuple[int, int, float] | None:
    """Checked bootstrap settings of the accuracy band, or None for no band."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise InputError(f"n_boot must be a non-negative integer (0: no band), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), e.g. 0.95, got {ci!r}")
    return (int(n_boot), int(seed), float(ci)) if n_boot > 0 else None


def accuracy_bands(
    hits: list[np.ndarray], n_boot: int, seed: int, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile bootstrap intervals of the accuracy of each point, given
    each point's (N,) per-sample hits; all points share the resamples."""
    from eebench.evaluate.summary import bootstrap_weights, percentile_interval

    if not hits:
        return np.empty(0), np.empty(0)
    n = hits[0].shape[0]
    if n == 0:
        nan = np.full(len(hits), np.nan)
        return nan, nan.copy()
    stats = np.empty((n_boot, len(hits)))
    cols = max(1, (1 << 22) // n)  # float64 hit columns per product: about 32 MB at most
    row = 0
    for w in bootstrap_weights(n, n_boot, seed):
        b = w.shape[0]
        for c0 in range(0, len(hits), cols):
            h = np.stack(hits[c0:c0 + cols], axis=1).astype(np.float64)
            stats[row:row + b, c0:c0 + h.shape[1]] = w @ h / n
        row += b
    bounds = [percentile_interval(stats[:, j], ci) for j in range(len(hits))]
    return np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])


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
    band: tuple[int, int, float] | None = None,
) -> list[dict[str, Any]]:
    k = test_correct.shape[1]
    n_test = test_correct.shape[0]
    rows: list[dict[str, Any]] = []
    hits: list[np.ndarray] = []  # per point, (N,) bool: kept only for a band
    for i, tp in enumerate(test_points):
        if band is not None:
            hits.append(hits_at(np.asarray(tp.exits), test_correct))
        if i >= len(val_stats):
            raise InputError(f"{len(val_stats)} validation points but more test points")
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
        raise InputError(f"{len(val_stats)} validation points but {len(rows)} test points")
    if band is not None:
        low, high = accuracy_bands(hits, *band)
        for row, lo, hi in zip(rows, low, high):
            row["test_acc_low"] = float(lo)
            row["test_acc_high"] = float(hi)
    return rows


RESULT_COLUMNS = ("policy_kind", "cost_unit", "dataset")
"""Columns the runner appends to the frames it writes (after their own columns, so that a
reader of an older file finds every column it knew in the same place)."""


def append_result_columns(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    cost_unit: str | None = None,
    datasets: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """A copy of ``frame`` with the result columns appended after its own, so that a
    program reads what a row is from columns instead of from names or prose:

    - policy_kind: ``kinds[policy]`` (learned, oracle, random or static: the policy
      object's ``kind``), for frames with a ``policy`` column;
    - cost_unit: the unit of every cost of the frame;
    - dataset: ``datasets[model]``, the data set a model's outputs come from (empty where
      nobody knows, e.g. logits from an ``.npz``), for frames with a ``model`` column.

    A column the frame already has is kept as it is; an argument left None adds nothing.
    """
    out = frame.copy()
    if kinds is not None and "policy" in out.columns and "policy_kind" not in out.columns:
        unknown = sorted({str(p) for p in out["policy"]} - set(kinds))
        if unknown:
            raise InputError(f"no kind given for the policies {unknown}; pass kinds for every "
                             f"policy of the frame")
        out["policy_kind"] = [kinds[str(p)] for p in out["policy"]]
    if cost_unit is not None and "cost_unit" not in out.columns:
        out["cost_unit"] = cost_unit
    if datasets is not None and "model" in out.columns and "dataset" not in out.columns:
        out["dataset"] = [datasets.get(str(m)) for m in out["model"]]
    return out


def budgeted_curve(
    policy: BasePolicy,
    val: LogitSet,
    test: LogitSet,
    *,
    fit: bool = True,
    n_boot: int = 0,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """One row per operating point.

    Columns: policy, param, param_name, val_acc, val_cost, test_acc, test_cost,
    frac_0..frac_{K-1} (test exit fractions), thresholds (JSON list; null where
    a policy does not threshold), note (what the solver could not do, e.g. a budget
    it did not reach; empty otherwise), calibration (JSON of the fitted calibration,
    e.g. per-exit temperatures, or "" without one). ``fit=False`` uses a policy
    that is already fitted (on ``val``, by the caller).

    ``n_boot > 0`` adds test_acc_low and test_acc_high (last): the ``ci`` percentile
    bootstrap interval of test_acc over ``n_boot`` test resamples seeded by ``seed``
    (the same resamples for every policy given the same test set and seed).
    """
    import pandas as pd

    band = _band_spec(n_boot, seed, ci)
    check_logitset(val, "the validation set")
    check_logitset(test, "the test set")
    if val.num_exits != test.num_exits:
        raise InputError(
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
        band,
    )
    return pd.DataFrame(rows)
