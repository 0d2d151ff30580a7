"""Genetic-algorithm threshold search (the solver the DVT paper names; its code ships the MSDNet rule).

Problem per budget B: choose thresholds for exits 1..K-1 that maximise
validation accuracy subject to validation mean cost <= B.

Design choices, and why:

- Genes live in *quantile* space: gene u of exit k decodes to the
  ``floor(u N)``-th smallest validation score of exit k, and u >= 1 to the
  sentinel 1e8 (nobody exits there). Saturated confidences (most mass at
  exactly 1.0) make value-space mutation useless; quantile space spends the
  search where the samples are, and every decoded threshold is a real score.
- The whole population of a generation is evaluated in one vectorised numpy
  step (integer comparisons of per-exit validation ranks against the decoded
  indices, (population, samples) per exit, chunked for memory), never one
  individual at a time.
- The initial population holds the geometric (MSDNet-rule) solutions that
  are feasible at B, the budget-targeted geometric solution, and "everyone
  exits first". Encoding a threshold is exact on the validation set, elitism
  keeps the best individual of every generation and a hall of fame returns
  the best feasible individual ever seen, so the result's validation accuracy
  is never below any seeded geometric solution's at no larger validation cost.
  Budgets are searched in increasing order and every earlier result that fits
  the current budget is a seed too, so validation accuracy never decreases
  with the budget.
- Fitness is lexicographic in one number: feasible individuals score
  ``hits + 0.5 (1 - cost / max_cost)`` (more hits always win; among equal
  hits, cheaper wins), infeasible ones ``-1 - (cost - B) / max_cost``.
- deap draws from Python's global ``random``; we seed it per budget from
  ``seed`` and restore the caller's random state afterwards, so the same seed
  gives identical thresholds and nothing else is disturbed.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from eebench.errors import DataError
from eebench.policies.solvers import (
    SENTINEL,
    GeometricSolver,
    Solution,
    assign_exits,
    exit_counts,
    mean_cost,
)
from eebench.store.validate import check_budgets

_NOBODY = 1.05  # upper gene bound; genes in [1, _NOBODY] mean "nobody exits here"


class _QuantileCoder:
    """Maps genes in [0, _NOBODY] to thresholds and back, exactly on the validation set.

    It also holds each validation sample's rank (number of validation scores
    <= its score, per exit), because ``score >= sorted[i]`` is the same test
    as ``rank > i``: the population is then evaluated with integer
    comparisons on ranks instead of float comparisons on scores.
    """

    def __init__(self, scores: np.ndarray) -> None:
        n, k = scores.shape
        self.n = n
        self.sorted = [np.sort(scores[:, j]).astype(np.float64) for j in range(k - 1)]
        ranks = [np.searchsorted(s, scores[:, j], side="right") for j, s in enumerate(self.sorted)]
        self.ranks_t = np.stack(ranks) if ranks else np.zeros((0, n), dtype=np.int64)

    def indices(self, genes: np.ndarray) -> np.ndarray:
        """(P, K-1) sorted-score index of each gene; ``n`` or more means nobody exits."""
        return np.floor(np.atleast_2d(genes) * self.n).astype(np.int64)

    def threshold_indices(self, thresholds: np.ndarray) -> np.ndarray:
        """(P, K-1) index of the smallest validation score >= each threshold (n if none)."""
        t = np.atleast_2d(np.asarray(thresholds, dtype=np.float64))
        return np.stack(
            [np.searchsorted(s, t[:, j], side="left") for j, s in enumerate(self.sorted)], axis=1
        )

    def decode(self, genes: np.ndarray) -> np.ndarray:
        idx = self.indices(genes)
        out = np.empty(idx.shape, dtype=np.float64)
        for j, s in enumerate(self.sorted):
            col = idx[:, j]
            out[:, j] = np.where(col >= self.n, SENTINEL, s[np.clip(col, 0, self.n - 1)])
        return out

    def encode(self, thresholds: np.ndarray) -> list[float]:
        genes = []
        for j, s in enumerate(self.sorted):
            t = float(thresholds[j])
            if t > s[-1]:
                genes.append(0.5 * (1.0 + _NOBODY))
            else:
                i = int(np.searchsorted(s, t, side="left"))
                genes.append((i + 0.5) / self.n)
        return genes


#: Bounds on the search size: beyond them a run takes hours to days on any machine, which
#: is far more often a typo than an intention.
MAX_POPULATION = 100_000
MAX_GENERATIONS = 100_000


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise DataError(f"GA option {name} must be an integer in [{lo}, {hi}], got {value!r}")


class GeneticSolver:
    """Per-budget GA over exit thresholds, seeded with the geometric solutions.

    ``budgets``: validation mean-cost targets (costs' units); ``None`` uses the
    validation costs of the geometric solutions on ``seed_grid`` (so the two
    curves are compared budget by budget). ``population``/``generations`` set
    the search size; ``seed`` makes it reproducible.
    """

    name = "ga"

    def __init__(
        self,
        budgets: Sequence[float] | None = None,
        *,
        population: int = 64,
        generations: int = 40,
        seed: int = 0,
        seed_grid: str | Sequence[float] | None = "msdnet",
        cx_prob: float = 0.7,
        mut_prob: float = 0.4,
        tournament: int = 3,
        elite: int = 2,
        eta_cx: float = 15.0,
        eta_mut: float = 20.0,
        max_chunk_elements: int = 1 << 25,
    ) -> None:
        _check_int("population", population, 2, MAX_POPULATION)
        _check_int("generations", generations, 0, MAX_GENERATIONS)
        _check_int("elite", elite, 1, population - 1)
        _check_int("tournament", tournament, 1, population)
        _check_int("max_chunk_elements", max_chunk_elements, 1, 1 << 40)
        for opt, value in (("cx_prob", cx_prob), ("mut_prob", mut_prob)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise DataError(f"GA option {opt} must be a probability in [0, 1], got {value!r}")
        for opt, value in (("eta_cx", eta_cx), ("eta_mut", eta_mut)):
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise DataError(
                    f"GA option {opt} (distribution index of the bounded SBX/polynomial operators) "
                    f"must be a finite number >= 0, got {value!r}"
                )
        budgets = check_budgets(budgets, "GA budgets")
        self.budgets = budgets
        self.population = population
        self.generations = generations
        self.seed = seed
        self.seed_grid = seed_grid
        self.cx_prob = cx_prob
        self.mut_prob = mut_prob
        self.tournament = tournament
        self.elite = elite
        self.eta_cx = eta_cx
        self.eta_mut = eta_mut
        self.max_chunk_elements = max_chunk_elements

    # ------------------------------------------------------------ vectorised evaluation

    def evaluate_population(
        self,
        thresholds: np.ndarray,
        scores: np.ndarray,
        correct: np.ndarray,
        costs: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hits (P,) and mean validation cost (P,) of P threshold vectors (P, K-1), at once."""
        scores = np.asarray(scores)
        coder = _QuantileCoder(scores)
        correct_t = np.ascontiguousarray(np.asarray(correct, dtype=bool).T)
        return self._evaluate(coder.threshold_indices(thresholds), coder, correct_t, costs)

    def _evaluate(
        self, idx: np.ndarray, coder: _QuantileCoder, correct_t: np.ndarray, costs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Population evaluation on ranks: sample exits at the first j with rank_j > idx_j."""
        k, n = correct_t.shape
        p_total = idx.shape[0]
        hits = np.empty(p_total, dtype=np.int64)
        cost = np.empty(p_total, dtype=np.float64)
        step = max(1, self.max_chunk_elements // max(1, n))
        dt = np.int8 if k <= 127 else np.int16
        for a in range(0, p_total, step):
            block = idx[a : a + step]
            exits = np.full((block.shape[0], n), k - 1, dtype=dt)
            for j in range(k - 2, -1, -1):  # later exits first, so the first exit wins
                exits[coder.ranks_t[j][None, :] > block[:, j][:, None]] = j
            h = np.zeros(block.shape[0], dtype=np.int64)
            for j in range(k):
                h += ((exits == j) & correct_t[j][None, :]).sum(axis=1)
            hits[a : a + step] = h
            cost[a : a + step] = mean_cost(exit_counts(exits, k), costs, n)
        return hits, cost

    # ------------------------------------------------------------ search

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        scores = np.asarray(scores)
        correct = np.asarray(correct, dtype=bool)
        costs = np.asarray(costs, dtype=np.float64)
        n, k = scores.shape
        if n == 0:
            raise ValueError("cannot run the GA on an empty validation set")
        geo = GeometricSolver(grid=self.seed_grid)
        geo_solutions = geo.solve(scores, correct, costs)
        geo_stats = []
        for sol in geo_solutions:
            ex = sol.fit_exits
            geo_stats.append(
                (int(correct[np.arange(n), ex].sum()), mean_cost(exit_counts(ex, k), costs, n))
            )
        budgets = (
            [c for _, c in geo_stats] if self.budgets is None else [float(b) for b in self.budgets]
        )
        if k == 1:
            t = np.array([-SENTINEL])
            ex = assign_exits(scores, t)
            return [Solution(b, "budget", t.copy(), ex, {"budget": b}) for b in budgets]
        coder = _QuantileCoder(scores)
        geo_genes = [coder.encode(sol.thresholds) for sol in geo_solutions]
        first_exit_genes = [0.5 / n] * (k - 1)
        out: list[Solution | None] = [None] * len(budgets)
        found: list[tuple[list[float], float]] = []  # earlier results, reused as seeds
        saved = random.getstate()
        try:
            for i in sorted(range(len(budgets)), key=lambda j: budgets[j]):
                budget = budgets[i]
                seeds = [g for g, (_, c) in zip(geo_genes, geo_stats) if c <= budget]
                seeds += [g for g, c in found if c <= budget]
                try:
                    seeds.append(coder.encode(geo.solve_budget(scores, costs, budget).thresholds))
                except ValueError:
                    pass  # budget below the geometric rule's reach; other seeds remain
                seeds.append(first_exit_genes)
                genes, info = self._search(i, budget, seeds, coder, scores, correct, costs)
                t = np.append(coder.decode(np.asarray(genes))[0], -SENTINEL)
                ex = assign_exits(scores, t)
                found.append((list(genes), mean_cost(exit_counts(ex, k), costs, n)))
                best_geo = max((h for h, c in geo_stats if c <= budget), default=None)
                info.update({"budget": budget, "geometric_best_hits": best_geo})
                out[i] = Solution(budget, "budget", t, ex, info)
        finally:
            random.setstate(saved)
        return [s for s in out if s is not None]

    def _search(
        self,
        index: int,
        budget: float,
        seeds: list[list[float]],
        coder: _QuantileCoder,
        scores: np.ndarray,
        correct: np.ndarray,
        costs: np.ndarray,
    ) -> tuple[list[float], dict[str, Any]]:
        from deap import algorithms, base, tools

        class Fitness(base.Fitness):
            """One maximised value (see the module docstring)."""

            weights = (1.0,)

        class Individual(list):
            """Genes of one threshold vector, with its deap fitness."""

            def __init__(self, genes: Sequence[float]) -> None:
                super().__init__(genes)
                self.fitness = Fitness()

        n, k = scores.shape
        n_genes = k - 1
        rng = np.random.default_rng([self.seed, index])
        random.seed(int(rng.integers(2**63 - 1)))
        cmax = float(np.max(np.abs(costs))) or 1.0

        toolbox = base.Toolbox()
        toolbox.register("clone", copy.deepcopy)
        toolbox.register(
            "mate", tools.cxSimulatedBinaryBounded, eta=self.eta_cx, low=0.0, up=_NOBODY
        )
        toolbox.register(
            "mutate",
            tools.mutPolynomialBounded,
            eta=self.eta_mut,
            low=0.0,
            up=_NOBODY,
            indpb=max(1.0 / n_genes, 0.2),
        )

        correct_t = np.ascontiguousarray(correct.T)

        def assess(inds: list) -> None:
            if not inds:
                return
            idx = coder.indices(np.asarray([list(ind) for ind in inds], dtype=np.float64))
            hits, cost = self._evaluate(idx, coder, correct_t, costs)
            ok = cost <= budget
            value = np.where(ok, hits + 0.5 * (1.0 - cost / cmax), -1.0 - (cost - budget) / cmax)
            for ind, v in zip(inds, value):
                ind.fitness.values = (float(v),)

        unique = list(dict.fromkeys(tuple(g) for g in seeds))
        candidates = [Individual(g) for g in unique]
        assess(candidates)
        candidates.sort(key=lambda ind: ind.fitness.values[0], reverse=True)
        pop = candidates[: max(1, self.population // 2)]  # the best seed is always kept
        base_genes = np.asarray([list(ind) for ind in pop], dtype=np.float64)
        while len(pop) < self.population:
            if len(pop) % 2 == 0:
                g = base_genes[rng.integers(len(base_genes))] + rng.normal(0, 0.05, n_genes)
            else:
                g = rng.uniform(0.0, _NOBODY, n_genes)
            pop.append(Individual(np.clip(g, 0.0, _NOBODY).tolist()))
        assess([ind for ind in pop if not ind.fitness.valid])
        hof = tools.HallOfFame(1)
        hof.update(pop)
        for _ in range(self.generations):
            elites = [toolbox.clone(ind) for ind in tools.selBest(pop, self.elite)]
            chosen = tools.selTournament(pop, self.population - self.elite, self.tournament)
            offspring = algorithms.varAnd(chosen, toolbox, self.cx_prob, self.mut_prob)
            assess([ind for ind in offspring if not ind.fitness.valid])
            pop = elites + offspring
            hof.update(pop)
        best = hof[0]
        if best.fitness.values[0] < 0:
            raise ValueError(
                f"no thresholds reach validation cost <= {budget:g}; the cheapest possible is "
                f"the first exit's cost {costs[0]:g}"
            )
        return list(best), {"fitness": best.fitness.values[0], "generations": self.generations}
