"""Reports from saved results: paper figures (PDF + PNG), tables (Markdown + LaTeX), an index.

Everything here reads result frames or files, never a model or the logit
store, so ``eebench report`` rebuilds a report in seconds. This package root
imports nothing numeric: its names load on first use (the module ``__getattr__``
below), so the command line can read, say, the import formats' names for its help
without loading numpy; matplotlib, seaborn and pandas are imported only inside the
functions that draw or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eebench.lazy import lazy_attributes

_LAZY = {
    "default_policy": "eebench.report.figures",
    "model_colors": "eebench.report.figures",
    "plot_anytime": "eebench.report.figures",
    "plot_budgeted": "eebench.report.figures",
    "plot_exit_distribution": "eebench.report.figures",
    "plot_reliability": "eebench.report.figures",
    "published_label": "eebench.report.figures",
    "FIGURES": "eebench.report.figures",
    "REQUIRED_FILES": "eebench.report.index",
    "Results": "eebench.report.index",
    "build_report": "eebench.report.index",
    "load_results": "eebench.report.index",
    "ece_from_bins": "eebench.report.reliability",
    "reliability_table": "eebench.report.reliability",
    "CostScale": "eebench.report.style",
    "cost_scale": "eebench.report.style",
    "paper_style": "eebench.report.style",
    "save_figure": "eebench.report.style",
    "Table": "eebench.report.tables",
    "anytime_tables": "eebench.report.tables",
    "budget_tables": "eebench.report.tables",
    "default_budgets": "eebench.report.tables",
    "summary_tables": "eebench.report.tables",
}

# The lazy names for type checkers and editors; at run time __getattr__ loads them.
if TYPE_CHECKING:
    from eebench.report.figures import (
        FIGURES,
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

# sorted(_LAZY), written out so that linters and type checkers can read it
__all__ = [
    "FIGURES",
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


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
