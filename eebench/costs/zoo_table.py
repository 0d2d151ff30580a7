"""The whole zoo's per-exit costs as one table, in each model's published convention.

Comparing a zoo against the papers is a join, not a reading exercise: one row
per (model, overrides, exit) with GMACs and parameters in the same units as
``results/published`` lets ``eebench verify costs`` and anyone with pandas
check every published cost automatically. Counting is the slow part, so a
``CostCache`` counts each (model, overrides, convention, input size) once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from eebench.costs.exit_costs import ExitCosts

TABLE_COLUMNS = (
    "model", "overrides", "exit", "exit_number", "exit_name", "convention", "input_size",
    "gmacs", "params_m",
)


def overrides_key(overrides: Mapping[str, Any] | None) -> str:
    """Canonical JSON of create_model overrides ("" for none), the join key with published rows."""
    return json.dumps(dict(overrides), sort_keys=True) if overrides else ""


class CostCache:
    """Counts each model configuration once per process; ``get`` returns its ExitCosts."""

    def __init__(self, cross_check: bool = False) -> None:
        self.cross_check = cross_check
        self._done: dict[tuple[str, str, str | None, Any], ExitCosts] = {}

    def get(
        self,
        name: str,
        overrides: Mapping[str, Any] | None = None,
        convention: str | None = None,
        input_size: Any = None,
    ) -> ExitCosts:
        size_key = tuple(input_size) if isinstance(input_size, (list, tuple)) else input_size
        key = (name, overrides_key(overrides), convention, size_key)
        if key not in self._done:
            import torch

            from eebench.costs.exit_costs import count_costs
            from eebench.zoo import create_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = create_model(name, **dict(overrides or {}))
            self._done[key] = count_costs(
                model, input_size=input_size, convention=convention, cross_check=self.cross_check
            )
        return self._done[key]


def default_zoo_names() -> list[str]:
    """Every registered model except the open-ended families (``timm/<name>``)."""
    from eebench.zoo import list_models

    return [n for n in list_models() if "/" not in n]


def zoo_cost_table(
    names: Iterable[str] | None = None,
    *,
    convention: str | None = None,
    cache: CostCache | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per exit of every named model (default: the whole zoo), counted at the
    model's own input size in ``convention`` (default: each model's published one).

    Columns: model, overrides, exit (0-based, as in results), exit_number (1-based,
    as the papers and ``results/published`` count), exit_name, convention,
    input_size (CxHxW), gmacs, params_m (cumulative, earlier heads included).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    names = list(names) if names is not None else default_zoo_names()
    cache = cache or CostCache()
    rows = []
    for name in tqdm(names, desc="counting costs", unit="model", disable=not progress):
        c = cache.get(name, convention=convention)
        size = "x".join(str(s) for s in c.input_size)
        for k, exit_name in enumerate(c.exit_names):
            rows.append(
                {
                    "model": name,
                    "overrides": "",
                    "exit": k,
                    "exit_number": k + 1,
                    "exit_name": exit_name,
                    "convention": c.convention,
                    "input_size": size,
                    "gmacs": c.macs[k] / 1e9,
                    "params_m": c.params[k] / 1e6,
                }
            )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
