"""Run one policy sweep end to end.

``run_sweep`` is the API behind ``eebench sweep``: a cached-logit file or store
entry in, a budgeted-batch curve out. The split is always fixed by a seed or
an index file (DESIGN.md: thresholds are never fit on the test split); loading and
splitting are the store's (eebench.store.sources, eebench.store.splits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import DataError, InputError
from eebench.store.logitset import check_logitset
from eebench.store.sources import load_source_unchecked
from eebench.store.splits import split_indices, subsets

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet


def run_sweep(
    source: str | Path | LogitSet,
    *,
    costs: Sequence[float] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    val_index: str | Path | Sequence[int] | None = None,
    score: str = "confidence",
    solver: str = "geometric",
    grid: str | Sequence[float] | None = None,
    budgets: Sequence[float] | None = None,
    calibration: str | None = None,
    store_root: str | Path | None = None,
    fit_source: str | Path | LogitSet | None = None,
    tune_on_test: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Load, split (``val_fraction=0.5`` by ``seed`` when neither split option is given),
    fit ``make_policy(score, solver, grid=..., budgets=..., calibration=...)`` on
    validation and return its budgeted_curve on test.

    ``seed`` seeds both the split and the policy (GA, random). Extra keyword
    options go to make_policy (e.g. ``population=``, ``generations=`` for ga).
    ``fit_source`` fits on another source's outputs (training images, as DVT and Dynamic
    Perceiver do) and tests on the whole ``source``; ``tune_on_test`` fits and tests on the
    whole ``source`` (CF-ViT's protocol). The curve's ``fit_on`` column says which, and
    its last column, ``policy_kind``, what the policy is (learned, oracle, random, static).
    """
    from eebench.evaluate.curves import append_result_columns, budgeted_curve
    from eebench.policies.factory import make_policy

    given = [n for n, v in (("val_fraction", val_fraction), ("val_index", val_index),
                            ("fit_source", fit_source), ("tune_on_test", tune_on_test)) if v]
    if len(given) > 1:
        raise InputError(f"give at most one of val_fraction, val_index, fit_source, "
                         f"tune_on_test (got {', '.join(given)})")
    ls, unchecked = load_source_unchecked(source, costs, store_root)
    check_logitset(ls, "the set to split")
    if fit_source is not None or tune_on_test:
        (test,) = subsets(ls, [np.arange(ls.num_samples)], check=unchecked)
        fit_on = FIT_ON["test"] if tune_on_test else f"another source: {fit_source}"
        val = test if fit_source is None or tune_on_test else _fit_set(fit_source, test, store_root)
    else:
        if val_fraction is None and val_index is None:
            val_fraction = 0.5
        parts = split_indices(ls.num_samples, val_fraction, seed, val_index)
        val, test = subsets(ls, parts, check=unchecked)  # one read: checks and splits
        fit_on = FIT_ON["val"]
    del ls
    policy = make_policy(
        score, solver, grid=grid, budgets=budgets, calibration=calibration, seed=seed, **options
    )
    curve = budgeted_curve(policy, val, test)
    curve["fit_on"] = fit_on
    return append_result_columns(curve, kinds={policy.name: policy.kind})  # policy_kind, last


FIT_ON = {
    "val": "validation split",
    "train": "training split",
    "test": "test set (tuned on the test set: no held-out split)",
}
"""What a curve's ``fit_on`` column says for each source of the fitting outputs."""


def _fit_set(source: str | Path | LogitSet, test: LogitSet,
             store_root: str | Path | None) -> LogitSet:
    """Another source's outputs, with the test set's costs, checked to be of the same model."""
    ls, unchecked = load_source_unchecked(source, list(test.costs), store_root)
    if ls.logits.shape[1:] != test.logits.shape[1:]:
        raise DataError(
            f"the fitting source {source} has {ls.num_exits} exits x {ls.num_classes} classes "
            f"but the test source has {test.num_exits} x {test.num_classes}; both must be "
            "outputs of the same model"
        )
    (fit,) = subsets(ls, [np.arange(ls.num_samples)], check=unchecked)
    return fit
