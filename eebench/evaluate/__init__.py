"""Evaluation protocols on cached logits: anytime tables, budgeted-batch curves, summaries.

Imports stay light (numpy only at import time; pandas inside the functions),
so the ``eebench sweep`` and ``report`` commands start quickly.
"""

from __future__ import annotations

from eebench.evaluate.curves import budgeted_curve, curve_rows, thresholds_json
from eebench.evaluate.metrics import ECE_VARIANTS, anytime_table, expected_calibration_error
from eebench.evaluate.summary import accuracy_at, cost_to_reach, mean_accuracy, summarize
from eebench.evaluate.sweep import run_sweep

__all__ = [
    "ECE_VARIANTS",
    "accuracy_at",
    "anytime_table",
    "budgeted_curve",
    "cost_to_reach",
    "curve_rows",
    "expected_calibration_error",
    "mean_accuracy",
    "run_sweep",
    "summarize",
    "thresholds_json",
]
