"""Per-exit cumulative costs (MACs and parameters) of multi-exit models.

Importing this package does not import torch: reading, printing and storing
costs stays fast; ``count_costs`` loads the counters when it runs.
"""

from eebench.costs.exit_costs import (
    CONVENTIONS,
    CountResult,
    ExitCosts,
    count_costs,
    format_costs_table,
)

__all__ = ["CONVENTIONS", "CountResult", "ExitCosts", "count_costs", "format_costs_table"]
