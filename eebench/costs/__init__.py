"""Per-exit cumulative costs (MACs and parameters) of multi-exit models.

Importing this package does not import torch: reading, printing and storing
costs stays fast; ``count_costs`` loads the counters when it runs.
"""

from eebench.costs.conventions import (
    CONVENTIONS,
    CostConvention,
    CountResult,
    cumulative_conventions,
    register_convention,
)
from eebench.costs.exit_costs import ExitCosts, count_costs, format_costs_table

__all__ = [
    "CONVENTIONS",
    "CostConvention",
    "CountResult",
    "ExitCosts",
    "count_costs",
    "cumulative_conventions",
    "format_costs_table",
    "register_convention",
]
