"""Ablation tables in the papers' style: variants as rows, budgets as columns, each cell
the variant's accuracy with its signed difference to a reference row.

Papers print ablations (CHASE without CAM or GAL, DVT without feature or
relationship reuse) as deltas against the full model, with an arrow so a
reader sees the direction at a glance. Values come from measured curves read
at common budgets (the report's interpolation rule: nothing is extrapolated)
or from the ``ablation`` rows of ``results/published``, so a user's own
variants and the paper's can be laid out the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from eebench.errors import InputError
from eebench.report.frames import curve_xy, ordered, read_at, require_columns
from eebench.report.style import CostScale, format_cost
from eebench.report.tables import DASH, Cell, Table, mark_best

if TYPE_CHECKING:
    import pandas as pd

UP, DOWN = "↑", "↓"


def delta_text(value: float, reference: float, decimals: int = 1) -> str:
    """``75.3 (↑1.2)``, ``73.9 (↓0.2)`` or ``74.1 (±0.0)``: the value and its signed change."""
    d = round(value - reference, decimals)
    if d > 0:
        arrow = f"{UP}{d:.{decimals}f}"
    elif d < 0:
        arrow = f"{DOWN}{-d:.{decimals}f}"
    else:
        arrow = f"±{0:.{decimals}f}"
    return f"{value:.{decimals}f} ({arrow})"


def ablation_table(
    values: pd.DataFrame,
    reference: str,
    *,
    variants: Sequence[str] | None = None,
    budgets: Sequence[str] | None = None,
    title: str = "Ablation",
    stem: str = "ablation",
    decimals: int = 1,
    notes: Sequence[str] = (),
) -> Table:
    """Lay out ``values`` (columns variant, budget, top1 in %; optional interpolated) as a
    table: the ``reference`` variant first with plain numbers, every other variant with
    its signed delta to the reference at the same budget; the best of each column bold."""
    require_columns(values, ["variant", "budget", "top1"], "the ablation values")
    variants = list(variants) if variants is not None else ordered(values["variant"].astype(str))
    if reference not in variants:
        raise InputError(
            f"reference {reference!r} is not among the variants {variants}; choose one of them"
        )
    variants = [reference] + [v for v in variants if v != reference]
    budgets = list(budgets) if budgets is not None else ordered(values["budget"].astype(str))
    if not budgets:
        raise InputError("the ablation values hold no budget")
    dup = values.duplicated(["variant", "budget"])
    if dup.any():
        r = values[dup].iloc[0]
        raise InputError(f"two values for variant {r['variant']!r} at budget {r['budget']!r}")

    def lookup(v: str, b: str) -> tuple[float, bool]:
        hit = values[(values["variant"].astype(str) == v) & (values["budget"].astype(str) == b)]
        if hit.empty:
            return math.nan, False
        interp = bool(hit["interpolated"].iloc[0]) if "interpolated" in hit.columns else False
        return float(hit["top1"].iloc[0]), interp

    rows: list[list[Cell]] = []
    for v in variants:
        row = [Cell(v)]
        for b in budgets:
            val, interp = lookup(v, b)
            ref, _ = lookup(reference, b)
            if not np.isfinite(val):
                row.append(Cell(DASH))
            elif v == reference or not np.isfinite(ref):
                row.append(Cell(f"{val:.{decimals}f}", round(val, decimals), dagger=interp))
            else:
                row.append(Cell(delta_text(val, ref, decimals), round(val, decimals), dagger=interp))
        rows.append(row)
    for c in range(1, len(budgets) + 1):
        mark_best(rows, c, higher=True)
    all_notes = [f"Top-1 accuracy (%); arrows: change against {reference}. Best of each column in bold."]
    if "interpolated" in values.columns and values["interpolated"].astype(bool).any():
        all_notes.append("† read off the curve between two measured operating points (linear).")
    all_notes.extend(notes)
    return Table(stem, title, ["variant", *budgets], rows, all_notes)


def ablation_from_curves(
    curves: pd.DataFrame,
    costs: Sequence[float],
    scale: CostScale,
    *,
    policy: str,
    variants: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read each model's (variant's) test curve of ``policy`` at ``costs`` (in the results'
    unit); columns variant, budget (formatted cost), top1 (%), interpolated."""
    import pandas as pd

    require_columns(curves, ["model", "policy", "test_cost", "test_acc"], "the curves frame")
    df = curves[curves["policy"].astype(str) == policy]
    if df.empty:
        raise InputError(
            f"no curve of policy {policy!r}; policies in the results: "
            f"{', '.join(ordered(curves['policy'].astype(str)))}"
        )
    variants = list(variants) if variants is not None else ordered(df["model"].astype(str))
    out = []
    for v in variants:
        sub = df[df["model"].astype(str) == v]
        if sub.empty:
            raise InputError(f"no curve of {v!r} under {policy!r}")
        x, y = curve_xy(sub["test_cost"].to_numpy(), sub["test_acc"].to_numpy())
        for c in costs:
            acc, interp = read_at(x, y, float(c))
            out.append({"variant": v, "budget": f"{format_cost(float(scale(np.array([c]))[0]))} {scale.label}",
                        "top1": 100 * acc, "interpolated": interp})
    return pd.DataFrame(out)


def ablation_from_published(
    published: pd.DataFrame, source: str, *, dataset: str | None = None
) -> pd.DataFrame:
    """The ``ablation`` rows of one paper as ablation values (variant = the row's model,
    budget = its point, or its GMACs when the point is empty)."""
    import pandas as pd

    rows = published[(published["source"] == source) & (published["setting"] == "ablation")]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    if rows.empty:
        raise InputError(f"results/published has no ablation rows for source {source!r}")

    def budget(r: pd.Series) -> str:
        if isinstance(r["point"], str) and r["point"].strip():
            return r["point"]
        return f"{r['gmacs']:g} GMACs" if np.isfinite(r["gmacs"]) else "—"

    return pd.DataFrame({"variant": rows["model"].astype(str).to_numpy(),
                         "budget": [budget(r) for _, r in rows.iterrows()],
                         "top1": rows["top1"].to_numpy(dtype=np.float64)})


def published_points_table(published: pd.DataFrame, scale: CostScale) -> Table:
    """Every published number a report draws, with its citation, so each grey marker can be
    traced to the paper's table or figure."""
    require_columns(published, ["source", "model", "setting", "gmacs", "top1"], "published numbers")
    rows = []
    for _, r in published.iterrows():
        where = ""
        if "exit" in published.columns and np.isfinite(float(r.get("exit", math.nan))):
            where = f"exit {int(r['exit'])}"
        elif isinstance(r.get("point"), str):
            where = r["point"]
        cost = float(scale.from_gmacs(np.array([float(r["gmacs"])]))[0])
        rows.append([
            Cell(str(r["model"])), Cell(str(r["source"])), Cell(str(r.get("dataset", ""))),
            Cell(str(r["setting"])), Cell(where),
            Cell(format_cost(cost)), Cell(f"{float(r['top1']):.2f}"),
            Cell(str(r.get("citation", "")) + (" (read off a figure)" if r.get("from_figure") is True else "")),
        ])
    return Table(
        "published_numbers", "Published numbers drawn in the figures",
        ["model", "source", "data set", "setting", "exit / point", f"cost ({scale.label})", "top-1 (%)",
         "cited from"],
        rows,
    )
