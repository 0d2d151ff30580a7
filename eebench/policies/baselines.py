"""Reference policies that bound and sanity-check the learned ones.

- ``OraclePolicy``: each sample exits at the first exit that classifies it
  correctly, else the last. It reads the labels of the set it is applied to,
  so it is an upper bound, never a method.
- ``RandomPolicy``: the exit fractions of another policy's operating point,
  assigned to random samples (DVT's "randomly exit" ablation). It shows how
  much of a policy's gain comes from *which* samples exit rather than how many.
- ``StaticPolicy``: everyone exits at exit k (the anytime points).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputTypeError
from eebench.policies.assignment import exit_counts, exit_dtype
from eebench.policies.policy import BasePolicy, OperatingPoint
from eebench.policies.scores import correctness
from eebench.policies.solvers import SENTINEL
from eebench.store.logitset import check_logitset

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet


class _UnlearnedPolicy(BasePolicy):
    """A policy that learns nothing from validation but the number of exits it must see."""

    def fit(self, val: LogitSet) -> _UnlearnedPolicy:
        check_logitset(val, "the validation set")
        self.num_exits_ = val.num_exits
        return self


class OraclePolicy(_UnlearnedPolicy):
    """First correct exit, else the last (uses the labels of the set it is applied to)."""

    name = "oracle"
    kind = "oracle"

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:
        self._check_fitted(ls)
        correct = correctness(ls)
        k = ls.num_exits
        exits = np.where(correct.any(axis=1), correct.argmax(axis=1), k - 1).astype(exit_dtype(k))
        return [OperatingPoint(float("nan"), np.full(k, np.nan), exits, "oracle")]


class StaticPolicy(_UnlearnedPolicy):
    """One operating point per exit k: every sample exits at k."""

    name = "static"
    kind = "static"

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:
        self._check_fitted(ls)
        k, n = ls.num_exits, ls.num_samples
        out = []
        for j in range(k):
            t = np.array([SENTINEL] * j + [-SENTINEL] * (k - j))
            out.append(OperatingPoint(float(j), t, np.full(n, j, dtype=exit_dtype(k)), "exit"))
        return out


class RandomPolicy(BasePolicy):
    """Exit counts copied from ``base``'s operating points on the same set; samples drawn at random.

    Point i uses the generator ``default_rng([seed, i])``, so each point is
    reproducible on its own.
    """

    kind = "random"

    def __init__(self, base: BasePolicy, seed: int = 0) -> None:
        if not isinstance(base, BasePolicy):
            raise InputTypeError(f"base must be a policy (e.g. make_policy(...)), got {type(base).__name__}")
        self.base = base
        self.seed = seed

    @property
    def name(self) -> str:
        return f"random({self.base.name})"

    def fit(self, val: LogitSet) -> RandomPolicy:
        self.base.fit(val)
        self.num_exits_ = val.num_exits
        return self

    def correct(self, ls: LogitSet) -> np.ndarray:
        """The base policy's correctness: the random ablation changes which samples exit
        where, not what the exits predict."""
        self._check_fitted(ls)
        return self.base.correct(ls)

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:
        self._check_fitted(ls)
        k, n = ls.num_exits, ls.num_samples
        out = []
        for i, pt in enumerate(self.base.apply(ls)):
            counts = exit_counts(pt.exits, k)
            rng = np.random.default_rng([self.seed, i])
            exits = np.empty(n, dtype=exit_dtype(k))
            exits[rng.permutation(n)] = np.repeat(np.arange(k), counts)
            out.append(OperatingPoint(pt.param, np.full(k, np.nan), exits, pt.param_name, pt.note))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "base": self.base.describe()}
