"""Exit assignments: which exit each sample takes under per-exit thresholds, and what an
assignment costs and scores.

Solvers need this arithmetic to fit thresholds and evaluation needs it to score them; it
lives apart from both so that they compute cost and accuracy with one formula (the
reference summation order) and neither imports the other for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eebench.errors import InputError


def exit_dtype(num_exits: int) -> type[np.signedinteger]:
    """Smallest integer type that holds an exit index."""
    return np.int8 if num_exits <= 127 else np.int16


def assign_exits(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N,) first exit k with ``score[:, k] >= thresholds[k]``; the last exit takes the rest."""
    scores = np.asarray(scores)
    n, k = scores.shape
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape[0] != k:
        raise InputError(f"{t.shape[0]} thresholds for {k} exits; give one threshold per exit")
    out = np.full(n, k - 1, dtype=exit_dtype(k))
    if k == 1:
        return out
    ge = scores[:, :-1] >= t[:-1]
    any_ge = ge.any(axis=1)
    out[any_ge] = ge[any_ge].argmax(axis=1)
    return out


def exit_counts(exits: np.ndarray, num_exits: int) -> np.ndarray:
    """(..., K) int64 number of samples per exit (last axis of ``exits`` = samples)."""
    exits = np.asarray(exits)
    if exits.ndim == 1:
        return np.bincount(exits.astype(np.int64), minlength=num_exits)
    return np.stack([(exits == k).sum(axis=-1) for k in range(num_exits)], axis=-1)


def mean_cost(counts: np.ndarray, costs: np.ndarray, n: int) -> np.ndarray | float:
    """``sum_k (count_k / n) * cost_k`` accumulated in exit order (the reference formula)."""
    counts = np.asarray(counts)
    total: Any = 0.0
    for k in range(counts.shape[-1]):
        total = total + (counts[..., k] / n) * float(costs[k])
    return total if counts.ndim > 1 else float(total)


def hits_at(exits: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(N,) bool: is the prediction of the exit taken right."""
    return np.take_along_axis(correct, exits.astype(np.int64)[:, None], axis=1)[:, 0]


def evaluate_exits(
    exits: np.ndarray, correct: np.ndarray, costs: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """(accuracy = hits / N, mean cost, counts per exit) of one exit assignment."""
    n, k = correct.shape
    counts = exit_counts(exits, k)
    acc = float(hits_at(exits, correct).sum()) / n if n else float("nan")
    return acc, float(mean_cost(counts, costs, n)), counts  # 1-D counts: a float already
