"""Reliability tables: per exit, how often the top-1 prediction is right at each confidence.

The report draws reliability diagrams from saved results alone, so the runner
saves this table (``results/<suite>/reliability.csv``) next to the anytime
table. The bins and the confidences are the ones of the anytime table's
standard ECE (eebench.evaluate.metrics): equal-width bins over [0, 1], each
[low, high) except the last, which also holds confidences of exactly 1.0, and
the confidence is the maximum softmax probability computed exit by exit in the
cache's own precision (the stored values themselves for a cache of
probabilities). The ECE read off this table,
``sum(count / N * |accuracy - mean_confidence|)``, is therefore the anytime
table's ECE for the same number of bins.

Policies that calibrate (temperature scaling, model-internal ensembling, Laplace,
...) add rows of their own: the same bins filled with the calibrated maximum
probability and the policy's own prediction (which model-internal ensembling
changes), with the policy's name in a ``policy`` column and the calibration's in
``calibration``. The rows of the raw outputs keep an empty ``policy`` (results
written before the column existed have none at all), so a reader tells "before"
from "after" with ``raw_rows`` and ``calibrated_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError, InputTypeError

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet

RELIABILITY_COLUMNS = [
    "model",
    "exit",
    "exit_name",
    "bin_low",
    "bin_high",
    "count",
    "mean_confidence",
    "accuracy",
]
CALIBRATED_COLUMNS = [*RELIABILITY_COLUMNS, "policy", "calibration"]
RAW_POLICY = ("", "none", "nan", "raw")  # values of ``policy`` that mark the raw outputs


def reliability_table(logitset: LogitSet, model: str, n_bins: int = 15) -> pd.DataFrame:
    """One row per exit and confidence bin of ``logitset`` (the test split).

    Columns: model, exit (0-based), exit_name, bin_low, bin_high, count,
    mean_confidence, accuracy (a fraction). Every bin is listed, empty ones
    with count 0 and NaN mean_confidence and accuracy, so the counts of one
    exit sum to the number of samples.
    """
    return _table(logitset, model, n_bins, None)


def calibrated_reliability_table(
    policy: Any, logitset: LogitSet, model: str, policy_name: str | None = None, n_bins: int = 15
) -> pd.DataFrame | None:
    """The reliability table of a fitted policy's calibrated outputs, or None for a policy
    without a calibration.

    Confidence is the maximum calibrated probability and a hit is the policy's own
    prediction being right. Columns: those of ``reliability_table``, then policy
    (``policy_name``, default the policy's name) and calibration (its name).
    """
    cal = getattr(policy, "calibration_", None)
    if cal is None:
        return None
    name = policy_name if policy_name is not None else str(getattr(policy, "name", ""))
    if not name or name.strip().lower() in RAW_POLICY:
        raise InputError(
            f"a calibrated policy needs a name other than {RAW_POLICY} (those mark the raw "
            f"outputs), got {name!r}"
        )
    df = _table(logitset, model, n_bins, cal)
    df["policy"] = name
    df["calibration"] = str(getattr(cal, "name", type(cal).__name__))
    return df


def calibrated_reliability_tables(
    fitted: Mapping[str, Any], logitset: LogitSet, model: str, n_bins: int = 15
) -> list[pd.DataFrame]:
    """``calibrated_reliability_table`` of every learned policy of ``fitted`` (name ->
    fitted policy) that calibrates, in the given order; baselines are left out (a random
    baseline that borrows a calibrated policy's scores would repeat its rows)."""
    out = []
    for name, policy in fitted.items():
        if getattr(policy, "kind", "learned") != "learned":
            continue
        df = calibrated_reliability_table(policy, logitset, model, name, n_bins)
        if df is not None:
            out.append(df)
    return out


def is_raw(policy: pd.Series) -> pd.Series:
    """Which rows of a reliability table's ``policy`` column are the raw outputs."""
    return policy.isna() | policy.astype(str).str.strip().str.lower().isin(RAW_POLICY)


def raw_rows(reliability: pd.DataFrame) -> pd.DataFrame:
    """The rows of the raw outputs (all rows of results without a ``policy`` column)."""
    if "policy" not in reliability.columns:
        return reliability
    return reliability[is_raw(reliability["policy"])]


def calibrated_rows(reliability: pd.DataFrame) -> pd.DataFrame:
    """The rows of calibrated policies (none for results without a ``policy`` column)."""
    if "policy" not in reliability.columns:
        return reliability.iloc[0:0]
    return reliability[~is_raw(reliability["policy"])]


def _table(logitset: LogitSet, model: str, n_bins: int, calibration: Any) -> pd.DataFrame:
    import pandas as pd

    from eebench.policies.scores import chunk_rows, scores_and_predictions

    for attr in ("logits", "labels", "exit_names", "kind"):
        if not hasattr(logitset, attr):
            raise InputTypeError(
                f"logitset must be an eebench.store.logitset.LogitSet, got {type(logitset).__name__}"
            )
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InputError(f"n_bins must be a positive integer, got {n_bins!r}")
    if not isinstance(model, str) or not model:
        raise InputError(f"model must be a non-empty name for the results, got {model!r}")
    n, num_exits, num_classes = logitset.logits.shape
    if n == 0:
        raise InputError("cannot compute a reliability table of an empty set")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count = np.zeros((num_exits, n_bins))
    sum_conf = np.zeros((num_exits, n_bins))
    sum_hit = np.zeros((num_exits, n_bins))
    # confidences and hits of every exit in one block-wise pass (shared with the policies)
    confidence, preds = scores_and_predictions(logitset, "confidence", calibration)
    hits = preds == logitset.labels[:, None]
    # sums accumulate in the same sample chunks as always, so the float sums do not move
    step = chunk_rows(num_classes)
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        for k in range(num_exits):
            conf = confidence[sl, k].astype(np.float64)
            hit = hits[sl, k].astype(np.float64)
            idx = np.searchsorted(edges[1:-1], conf, side="right")
            count[k] += np.bincount(idx, minlength=n_bins)
            sum_conf[k] += np.bincount(idx, weights=conf, minlength=n_bins)
            sum_hit[k] += np.bincount(idx, weights=hit, minlength=n_bins)
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / count, np.nan)
        acc = np.where(count > 0, sum_hit / count, np.nan)
    for k in range(num_exits):
        for b in range(n_bins):
            rows.append(
                {
                    "model": model,
                    "exit": k,
                    "exit_name": str(logitset.exit_names[k]),
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "count": int(count[k, b]),
                    "mean_confidence": float(mean_conf[k, b]),
                    "accuracy": float(acc[k, b]),
                }
            )
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


def ece_from_bins(bins: pd.DataFrame) -> float:
    """Expected calibration error of one exit's rows of a reliability table (a fraction)."""
    count = bins["count"].to_numpy(dtype=np.float64)
    total = count.sum()
    if total <= 0:
        return float("nan")
    nz = count > 0
    gap = np.abs(
        bins["accuracy"].to_numpy(dtype=np.float64)[nz]
        - bins["mean_confidence"].to_numpy(dtype=np.float64)[nz]
    )
    return float(np.sum(count[nz] / total * gap))
