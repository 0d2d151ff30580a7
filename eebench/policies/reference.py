"""A deliberately slow, plain-loop transcription of MSDNet's dynamic evaluation.

This is the yardstick for eebench.policies.solvers.GeometricSolver: the tests
check that both give bit-identical thresholds, exit assignments, accuracies
and costs, and benchmarks/bench_solvers.py times both. It follows the two
Python loops of the official ``dynamic_eval_find_threshold`` /
``dynamic_eval_with_threshold`` (FIELD-NOTES section 1) step by step, over
Python lists (the official code indexes tensors element by element, which is
slower still). Do not use it for real work.

Deliberate differences from the official code, none of which changes a
threshold or an exit:

- inputs are (N, K) scores and predictions (the official layout is (K, N, C)
  probabilities, reduced with ``max`` inside the function);
- the target distribution ``p`` is an argument (the caller computes it with
  eebench.policies.grids.exit_distribution), so the comparison isolates the
  threshold rule; the official code computes it in float32;
- accuracy is returned as a fraction (hits / N), not a percentage, and costs
  are accumulated in float64 (the official code uses float32 tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SENTINEL = 1e8


def find_thresholds(scores: np.ndarray, p: Sequence[float]) -> list[float]:
    """Thresholds (K,) on the validation scores, loop by loop as in the official code."""
    n_sample, n_stage = np.asarray(scores).shape
    conf = np.asarray(scores).T.tolist()  # conf[k][i]
    sorted_idx = [
        sorted(range(n_sample), key=conf[k].__getitem__, reverse=True) for k in range(n_stage)
    ]
    filtered = [0] * n_sample
    thresholds = [SENTINEL] * n_stage
    for k in range(n_stage - 1):
        count = 0
        out_n = math.floor(n_sample * p[k])
        for i in range(n_sample):
            ori_idx = sorted_idx[k][i]
            if filtered[ori_idx] == 0:
                count += 1
                if count == out_n:
                    thresholds[k] = conf[k][ori_idx]
                    break
        for i in range(n_sample):
            if conf[k][i] >= thresholds[k]:
                filtered[i] += 1
    thresholds[n_stage - 1] = -SENTINEL
    return thresholds


def evaluate_with_thresholds(
    scores: np.ndarray,
    predictions: np.ndarray,
    labels: np.ndarray,
    costs: Sequence[float],
    thresholds: Sequence[float],
) -> tuple[float, float, list[int]]:
    """(accuracy, expected cost, exit per sample): each sample exits at the first k with score >= T_k."""
    n_sample, n_stage = np.asarray(scores).shape
    conf = np.asarray(scores).T.tolist()
    pred = np.asarray(predictions).T.tolist()
    gold = np.asarray(labels).tolist()
    costs = [float(c) for c in costs]
    acc = 0
    exp = [0] * n_stage
    exits = []
    for i in range(n_sample):
        for k in range(n_stage):
            if conf[k][i] >= thresholds[k]:
                if gold[i] == pred[k][i]:
                    acc += 1
                exp[k] += 1
                exits.append(k)
                break
    expected_cost = 0.0
    for k in range(n_stage):
        expected_cost += (exp[k] / n_sample) * costs[k]
    return acc / n_sample, expected_cost, exits


def dynamic_evaluate(
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    costs: Sequence[float],
    distributions: Sequence[Sequence[float]],
) -> list[dict[str, Any]]:
    """The whole curve: for each distribution, thresholds on ``val``, evaluated on val and test.

    ``val`` and ``test`` are (scores (N, K), predictions (N, K), labels (N,)).
    """
    out = []
    for p in distributions:
        t = find_thresholds(val[0], p)
        val_acc, val_cost, val_exits = evaluate_with_thresholds(*val, costs, t)
        test_acc, test_cost, test_exits = evaluate_with_thresholds(*test, costs, t)
        out.append(
            {
                "thresholds": t,
                "val_acc": val_acc,
                "val_cost": val_cost,
                "val_exits": val_exits,
                "test_acc": test_acc,
                "test_cost": test_cost,
                "test_exits": test_exits,
            }
        )
    return out
