"""What the report needs to know about the result frames: their columns, kinds of policy,
and how a test curve is read at a cost.

The report is built from the saved files alone, so it checks them the way a
reader would: a missing column or an accuracy that is not a fraction stops the
build with the file and the column named, instead of producing a wrong figure.
Reading a curve at a cost uses the rule of eebench.evaluate.summary (points of
equal cost averaged, linear interpolation, nothing outside the curve's range),
so tables and summaries agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from eebench.errors import InputError, InputTypeError
from eebench.report.published import SETTINGS

if TYPE_CHECKING:
    import pandas as pd

ANYTIME_COLUMNS = ("model", "exit", "cost", "top1")
ANYTIME_OPTIONAL = ("exit_name", "top5", "nll", "ece", "overthinking")
CURVE_COLUMNS = ("model", "policy", "test_acc", "test_cost")
SUMMARY_COLUMNS = ("model", "policy", "metric", "value")
RELIABILITY_REQUIRED = ("model", "exit", "bin_low", "bin_high", "count", "mean_confidence", "accuracy")
PUBLISHED_COLUMNS = ("source", "model", "setting", "gmacs", "top1")
PUBLISHED_SETTINGS = SETTINGS  # the settings of results/published (eebench.report.published)


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise ValueError naming ``what`` (a file or argument) and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {missing}; it has {list(df.columns)}. "
            f"Re-create it with `eebench run SUITE`."
        )


def require_numbers(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Every cell of ``columns`` is a finite number: a truncated or hand-edited CSV shows up
    as empty or non-numeric cells, and must not become a plotted point."""
    import pandas as pd

    for c in columns:
        if c not in df.columns:
            continue
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise InputError(
                f"{what}: column {c!r} has no finite number in row {int(bad[0]) + 2} (line of the "
                f"file; {bad.size} such row{'s' if bad.size > 1 else ''}); the file is truncated "
                "or damaged: re-create it with `eebench run SUITE`"
            )


def require_fractions(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Accuracies in results are fractions in [0, 1]; anything else is a unit mix-up."""
    for c in columns:
        if c not in df.columns:
            continue
        v = df[c].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size and (v.min() < -1e-9 or v.max() > 1 + 1e-9):
            raise InputError(
                f"{what}: column {c!r} must hold fractions in [0, 1], found values in "
                f"[{v.min():g}, {v.max():g}] (percentages? divide them by 100)"
            )


def check_published(published: pd.DataFrame) -> pd.DataFrame:
    """Validate a published-numbers frame (source, model, setting, gmacs, top1 in %)."""
    import pandas as pd

    if not isinstance(published, pd.DataFrame):
        raise InputTypeError(f"published must be a pandas DataFrame or None, got {type(published).__name__}")
    require_columns(published, PUBLISHED_COLUMNS, "published numbers")
    bad = sorted(set(published["setting"].astype(str)) - set(PUBLISHED_SETTINGS))
    if bad:
        raise InputError(
            f"published numbers: setting must be one of {PUBLISHED_SETTINGS}, found {bad}"
        )
    top1 = published["top1"].to_numpy(dtype=np.float64)
    finite = top1[np.isfinite(top1)]
    if finite.size and finite.max() <= 1.0:
        raise InputError(
            "published numbers: top1 is in percent (e.g. 75.3), but every value is <= 1; "
            "multiply fractions by 100"
        )
    return published


POLICY_KINDS = ("learned", "oracle", "random", "static")
"""What a policy is, as results say in their ``policy_kind`` column (each policy class's
``kind``): oracle, random and static are baselines; learned policies compete."""


def policy_kind(name: str) -> str:
    """``"oracle"``, ``"random"``, ``"static"`` (baselines) or ``"learned"``, guessed from a
    policy's label.

    Only for results folders written before the ``policy_kind`` column existed: a label is
    the user's to choose (``label = "oracle"`` on a learned policy is allowed), so results
    that carry the column are read with ``policy_kinds`` instead.
    """
    n = str(name).strip().lower()
    if n == "oracle":
        return "oracle"
    if n == "static":
        return "static"
    if n == "random" or n.startswith("random("):
        return "random"
    return "learned"


def policy_kinds(frame: pd.DataFrame, what: str = "results") -> dict[str, str]:
    """Policy name -> kind for every policy of ``frame`` (a curves or summary frame), in
    first-seen order.

    The ``policy_kind`` column decides, since the runner writes what each policy object is.
    A frame without the column, or a policy whose cells are all empty (results folders
    written before the column existed, or hand-made frames), falls back to
    ``policy_kind(name)``.
    A value that is not a known kind, or two kinds for one name, is an error naming
    ``what``: a table must not quietly rank an oracle among the learned policies.
    """
    import pandas as pd

    names = frame["policy"].astype(str).tolist()
    given = (frame["policy_kind"].tolist() if "policy_kind" in frame.columns
             else [None] * len(names))
    stated: dict[str, str] = {}
    for name, cell in zip(names, given):
        if cell is None or (not isinstance(cell, str) and pd.isna(cell)) or not str(cell).strip():
            continue
        kind = str(cell).strip().lower()
        if kind not in POLICY_KINDS:
            raise InputError(
                f"{what}: policy {name!r} has policy_kind {cell!r}; it must be one of "
                f"{', '.join(POLICY_KINDS)} (re-create the results with `eebench run SUITE`)"
            )
        if stated.setdefault(name, kind) != kind:
            raise InputError(
                f"{what}: policy {name!r} is given two kinds ({stated[name]} and {kind}); one "
                "label must name one policy"
            )
    return {name: stated.get(name) or policy_kind(name) for name in dict.fromkeys(names)}


def learned_policies(
    policies: Iterable[str], kinds: Mapping[str, str] | None = None
) -> list[str]:
    """Learned policies in first-seen order; ``kinds`` (from ``policy_kinds``) decides,
    else the name (``policy_kind``, for results without a ``policy_kind`` column)."""
    kinds = kinds or {}
    return [p for p in dict.fromkeys(policies) if kinds.get(p, policy_kind(p)) == "learned"]


def curve_xy(cost: Sequence[float], acc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Curve points sorted by cost, points of equal cost averaged, non-finite points dropped."""
    c = np.asarray(cost, dtype=np.float64)
    a = np.asarray(acc, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(a)
    x, inv = np.unique(c[keep], return_inverse=True)
    if x.size == 0:
        return x, x.copy()
    y = np.bincount(inv, weights=a[keep]) / np.bincount(inv)
    return x, y


def read_at(x: np.ndarray, y: np.ndarray, cost: float, rtol: float = 1e-9) -> tuple[float, bool]:
    """Accuracy of the curve (x, y) at ``cost`` and whether it was interpolated.

    A cost within ``rtol`` of an operating point returns that point (not
    interpolated); outside [x[0], x[-1]] the value is NaN.
    """
    if x.size == 0:
        return float("nan"), False
    close = np.isclose(x, cost, rtol=rtol, atol=0.0)
    if close.any():
        return float(y[np.flatnonzero(close)[0]]), False
    if cost < x[0] or cost > x[-1]:
        return float("nan"), False
    return float(np.interp(cost, x, y)), True


def common_range(curves: pd.DataFrame, policies: Iterable[str]) -> tuple[float, float] | None:
    """Cost range covered by every one of ``policies`` in ``curves`` (one model's rows)."""
    lo, hi = -np.inf, np.inf
    any_policy = False
    for p in policies:
        c = curves.loc[curves["policy"] == p, "test_cost"].to_numpy(dtype=np.float64)
        c = c[np.isfinite(c)]
        if c.size == 0:
            continue
        any_policy = True
        lo, hi = max(lo, float(c.min())), min(hi, float(c.max()))
    if not any_policy or lo > hi:
        return None
    return lo, hi


def slug(name: str, taken: set[str] | None = None) -> str:
    """A file-name-safe form of a model name, unique within ``taken`` (which it updates)."""
    s = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "model"
    if taken is not None:
        base, i = s, 2
        while s in taken:
            s = f"{base}-{i}"
            i += 1
        taken.add(s)
    return s


def ordered(values: Iterable[str]) -> list[str]:
    """Unique values in first-seen order (result files keep the suite's order)."""
    return list(dict.fromkeys(str(v) for v in values))
