"""Reports from saved results: paper figures (PDF + PNG), tables (Markdown + LaTeX), an index.

Everything here reads result frames or files, never a model or the logit
store, so ``eebench report`` rebuilds a report in seconds. matplotlib,
seaborn and pandas are imported only inside the functions that draw or read,
which keeps ``import eebench.report`` (and the command's start) fast.
"""

from __future__ import annotations

from eebench.report.figures import (
    default_policy,
    model_colors,
    plot_anytime,
    plot_budgeted,
    plot_exit_distribution,
    plot_reliability,
    published_label,
)
from eebench.report.index import REQUIRED_FILES, Results, build_report, load_results
from eebench.report.reliability import ece_from_bins, reliability_table
from eebench.report.style import CostScale, cost_scale, paper_style, save_figure
from eebench.report.tables import (
    Table,
    anytime_tables,
    budget_tables,
    default_budgets,
    summary_tables,
)

__all__ = [
    "REQUIRED_FILES",
    "CostScale",
    "Results",
    "Table",
    "anytime_tables",
    "budget_tables",
    "build_report",
    "cost_scale",
    "default_budgets",
    "default_policy",
    "ece_from_bins",
    "load_results",
    "model_colors",
    "paper_style",
    "plot_anytime",
    "plot_budgeted",
    "plot_exit_distribution",
    "plot_reliability",
    "published_label",
    "reliability_table",
    "save_figure",
    "summary_tables",
]
