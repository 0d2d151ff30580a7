"""Synthetic per-exit outputs shared by the policy tests."""

from __future__ import annotations

import numpy as np

from eebench.store.logitset import LogitSet


def synthetic_exits(n: int = 2000, k: int = 4, c: int = 10, seed: int = 0) -> LogitSet:
    """Exits that get better with depth, each sample with its own difficulty (with
    saturation, so a policy can match the last exit); costs 1..4 spread over ``k`` exits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    z = rng.normal(0, 1, size=(n, k, c))
    strength = (3.0 - 1.5 * 0.4 ** np.arange(k))[None, :] * rng.random((n, 1)) * 2
    z[np.arange(n), :, labels] += strength
    return LogitSet(z.astype(np.float32), labels, np.linspace(1.0, 4.0, k))
