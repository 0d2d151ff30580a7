"""Genetic-algorithm threshold search (the solver the DVT paper names; its code ships the MSDNet rule).

Problem per budget B: choose thresholds for exits 1..K-1 that maximise
validation accuracy subject to validation mean cost <= B.

Design choices, and why:

- Genes live in *quantile* space: gene u of exit k decodes to the
  ``floor(u N)``-th smallest validation score of exit k, and u >= 1 to the
  sentinel 1e8 (nobody exits there). Saturated confidences (most mass at
  exactly 1.0) make value-space mutation useless; quantile space spends the
  search where the samples are, and every decoded threshold is a real score.
- Each exit's threshold is chosen from a fixed set of *levels*: ``levels``
  sorted-score indices evenly spaced over the validation set, plus the exact
  threshold of every seed (so seeds are represented exactly); a gene decodes
  to the nearest level at or below its index. For every level the set of
  samples whose score reaches it is stored once as packed bits (one bit a
  sample). An individual's exits, hits and per-exit counts are then a few
  AND / XOR / popcount passes over N/64 machine words per exit, for the whole
  population at once, instead of comparisons and scatters over N samples per
  individual: the search costs about as much per generation as one pass over
  the data. The counts are exact for the decoded thresholds (they equal those
  of ``assign_exits``), so fitness is never an estimate. Levels, not every
  index, because the table takes (K-1) x levels x N/8 bytes; a population of
  tens evolved for tens of generations cannot use finer steps anyway.
- The initial population holds the geometric (MSDNet-rule) solutions that
  are feasible at B, the budget-targeted geometric solution (what
  ``GeometricSolver(budgets=[B])`` returns), and "everyone exits first".
  Elitism keeps the best individual of every generation and a hall of fame
  returns the best feasible individual ever seen. The result is then checked
  on the full validation set with ``assign_exits`` against the seeds' own
  exact accuracy and cost, and the best seed is returned instead should it be
  better, so the result's validation accuracy is never below any seeded
  geometric solution's and its cost never above B. Budgets are searched in
  increasing order and every earlier result that fits the current budget is
  a seed too, so validation accuracy never decreases with the budget.
- Fitness is lexicographic in one number: feasible individuals score
  ``hits + 0.5 (1 - cost / max_cost)`` (more hits always win; among equal
  hits, cheaper wins), infeasible ones ``-1 - (cost - B) / max_cost``.
- Individuals are cloned by copying their genes and fitness, not with
  ``copy.deepcopy`` (deap's default), which cost more than the evaluation.
- deap draws from Python's global ``random``; we seed it per budget from
  ``seed`` and restore the caller's random state afterwards, so the same seed
  gives identical thresholds and nothing else is disturbed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from eebench.errors import DataError, InputError
from eebench.policies.assignment import assign_exits, exit_counts, hits_at, mean_cost
from eebench.policies.estimator import Estimator
from eebench.policies.grids import get_grid
from eebench.policies.solvers import SENTINEL, SOLVERS, GeometricSolver, Solution
from eebench.store.validate import check_budgets

_NOBODY = 1.05  # upper gene bound; genes in [1, _NOBODY] mean "nobody exits here"

#: Bound on the level table's memory; above it fewer evenly spaced levels are used.
MAX_TABLE_BYTES = 256 << 20

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """(P,) int64 number of set bits in each row of a (P, W) uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return _popcount_bytes(words)


def _popcount_bytes(words: np.ndarray) -> np.ndarray:
    """The same count through a byte table (numpy < 2.0 has no bitwise_count)."""
    w = np.ascontiguousarray(words)
    return _POPCOUNT8[w.view(np.uint8)].reshape(w.shape[0], -1).sum(axis=1, dtype=np.int64)


def _bitsets(rows: np.ndarray, samples: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """(n_rows, ceil(n / 64)) uint64 bit sets with sample ``samples[m]`` put into row ``rows[m]``.

    Sample i is bit ``i % 64`` of word ``i // 64``; every set in this module is
    built here, so they all share that layout whatever the machine's byte order.
    """
    out = np.zeros((n_rows, (n + 63) // 64), dtype=np.uint64)
    s = np.asarray(samples, dtype=np.int64)
    bits = np.left_shift(np.uint64(1), (s & 63).astype(np.uint64))
    np.bitwise_or.at(out, (np.asarray(rows, dtype=np.int64), s >> 6), bits)
    return out


class _LevelTable:
    """Candidate thresholds per exit and, for each, the packed set of samples reaching it.

    Level ``l`` of exit j is an index into exit j's sorted validation scores:
    threshold ``sorted_j[l]``. A sample reaches it iff its rank (the number of
    validation scores <= its own) exceeds ``l``, which is the same test as
    ``score >= sorted_j[l]`` with ties included. Index ``n`` is the "nobody
    exits" level (threshold ``SENTINEL``); index 0 (everyone reaches it) is
    always a level too.
    """

    def __init__(
        self,
        scores: np.ndarray,
        correct: np.ndarray,
        levels: int,
        seed_thresholds: np.ndarray,
    ) -> None:
        n, k = scores.shape
        self.n, self.k = n, k
        self.sorted = [np.sort(scores[:, j]).astype(np.float64) for j in range(k - 1)]
        seed_idx = self.threshold_indices(seed_thresholds)
        words = (n + 63) // 64
        per_exit = MAX_TABLE_BYTES // max(1, (k - 1) * words * 8)
        self.uniform = max(2, min(levels, n, per_exit - seed_idx.shape[0] - 2)) if levels else 0
        even = np.arange(self.uniform, dtype=np.int64) * n // max(1, self.uniform)
        self.levels: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        for j, s in enumerate(self.sorted):
            lv = np.unique(np.concatenate([[0, n], even, seed_idx[:, j]]).astype(np.int64))
            rank = np.searchsorted(s, scores[:, j], side="right")
            # a sample of rank r reaches levels 0 .. (number of levels < r) - 1: put it in the
            # last of them, then OR every level with all higher ones (reverse running OR)
            last = np.searchsorted(lv, rank, side="left") - 1
            delta = _bitsets(last, np.arange(n), lv.size, n)
            self.masks.append(np.ascontiguousarray(np.bitwise_or.accumulate(delta[::-1])[::-1]))
            self.levels.append(lv)
        rows, cols = np.nonzero(np.asarray(correct, dtype=bool).T)
        self.correct = _bitsets(rows, cols, k, n)
        self.everyone = _bitsets(np.zeros(n, dtype=np.int64), np.arange(n), 1, n)[0]

    def threshold_indices(self, thresholds: np.ndarray) -> np.ndarray:
        """(P, K-1) index of the smallest validation score >= each threshold (n if none)."""
        t = np.atleast_2d(np.asarray(thresholds, dtype=np.float64))
        if not self.sorted:
            return np.zeros((t.shape[0], 0), dtype=np.int64)
        return np.stack(
            [np.searchsorted(s, t[:, j], side="left") for j, s in enumerate(self.sorted)], axis=1
        ).astype(np.int64)

    def positions(self, indices: np.ndarray) -> np.ndarray:
        """(P, K-1) level position of the largest level <= each sorted-score index."""
        idx = np.clip(np.atleast_2d(indices), 0, self.n)
        return np.stack(
            [np.searchsorted(lv, idx[:, j], side="right") - 1 for j, lv in enumerate(self.levels)],
            axis=1,
        ).astype(np.int64)

    def gene_positions(self, genes: np.ndarray) -> np.ndarray:
        """(P, K-1) level positions that genes (P, K-1) decode to."""
        return self.positions(np.floor(np.atleast_2d(genes) * self.n).astype(np.int64))

    def gene(self, index: int) -> float:
        """A gene that decodes to sorted-score index ``index`` (>= n: nobody exits)."""
        return 0.5 * (1.0 + _NOBODY) if index >= self.n else (index + 0.5) / self.n

    def thresholds(self, pos: np.ndarray) -> np.ndarray:
        """(K,) thresholds of one individual's level positions, the last exit's included."""
        out = np.full(self.k, -SENTINEL)
        for j, (s, lv) in enumerate(zip(self.sorted, self.levels)):
            i = int(lv[pos[j]])
            out[j] = SENTINEL if i >= self.n else s[i]
        return out

    def evaluate(
        self, pos: np.ndarray, costs: np.ndarray, chunk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hits (P,) and mean validation cost (P,) of P individuals' level positions (P, K-1)."""
        k, total = self.k, pos.shape[0]
        hits = np.zeros(total, dtype=np.int64)
        counts = np.empty((total, k), dtype=np.int64)
        for a in range(0, total, chunk):
            block = pos[a : a + chunk]
            alive = np.repeat(self.everyone[None, :], block.shape[0], axis=0)
            for j in range(k - 1):
                taken = alive & self.masks[j][block[:, j]]
                counts[a : a + chunk, j] = _popcount_rows(taken)
                hits[a : a + chunk] += _popcount_rows(taken & self.correct[j])
                alive ^= taken
            counts[a : a + chunk, k - 1] = _popcount_rows(alive)
            hits[a : a + chunk] += _popcount_rows(alive & self.correct[k - 1])
        return hits, np.asarray(mean_cost(counts, costs, self.n), dtype=np.float64)


#: Bounds on the search size: beyond them a run takes hours to days on any machine, which
#: is far more often a typo than an intention.
MAX_POPULATION = 100_000
MAX_GENERATIONS = 100_000
MAX_LEVELS = 1 << 20


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise DataError(f"GA option {name} must be an integer in [{lo}, {hi}], got {value!r}")


def _exact(
    thresholds: np.ndarray, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray
) -> tuple[np.ndarray, int, float]:
    """Exits, hits and mean cost of one threshold vector on the full set (the policy's rule)."""
    ex = assign_exits(scores, thresholds)
    n, k = correct.shape
    return ex, int(hits_at(ex, correct).sum()), float(mean_cost(exit_counts(ex, k), costs, n))


@SOLVERS.register("ga")
class GeneticSolver(Estimator):
    """Per-budget GA over exit thresholds, seeded with the geometric solutions.

    ``budgets``: validation mean-cost targets (costs' units); ``None`` uses the
    validation costs of the geometric solutions on ``grid`` (so the two
    curves are compared budget by budget). ``population``/``generations`` set
    the search size per budget; ``seed`` makes it reproducible. ``levels``:
    thresholds per exit the search chooses from, evenly spaced in rank over the
    validation set (all of them when the set is smaller), besides the seeds'
    own; the table behind them takes (K-1) x levels x N/8 bytes (fewer levels
    are used above 256 MiB). ``max_chunk_elements`` bounds population x
    samples per evaluation block.
    """

    name = "ga"

    def __init__(
        self,
        budgets: Sequence[float] | None = None,
        *,
        population: int = 64,
        generations: int = 40,
        seed: int = 0,
        grid: str | Sequence[float] | None = "msdnet",
        cx_prob: float = 0.7,
        mut_prob: float = 0.4,
        tournament: int = 3,
        elite: int = 2,
        eta_cx: float = 15.0,
        eta_mut: float = 20.0,
        max_chunk_elements: int = 1 << 25,
        levels: int = 1024,
    ) -> None:
        _check_int("population", population, 2, MAX_POPULATION)
        _check_int("generations", generations, 0, MAX_GENERATIONS)
        _check_int("elite", elite, 1, population - 1)
        _check_int("tournament", tournament, 1, population)
        _check_int("max_chunk_elements", max_chunk_elements, 1, 1 << 40)
        _check_int("levels", levels, 2, MAX_LEVELS)
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
        self.grid = grid
        self.cx_prob = cx_prob
        self.mut_prob = mut_prob
        self.tournament = tournament
        self.elite = elite
        self.eta_cx = eta_cx
        self.eta_mut = eta_mut
        self.max_chunk_elements = max_chunk_elements
        self.levels = levels

    # ------------------------------------------------------------ vectorised evaluation

    def _chunk(self, n: int) -> int:
        return max(1, self.max_chunk_elements // max(1, n))

    def evaluate_population(
        self,
        thresholds: np.ndarray,
        scores: np.ndarray,
        correct: np.ndarray,
        costs: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hits (P,) and mean validation cost (P,) of P threshold vectors (P, K-1), at once.

        Exact for any thresholds: the levels are the thresholds' own indices.
        """
        scores, correct, costs = _check_inputs(scores, correct, costs)
        t = np.atleast_2d(np.asarray(thresholds, dtype=np.float64))[:, : scores.shape[1] - 1]
        table = _LevelTable(scores, correct, 0, t)
        pos = table.positions(table.threshold_indices(t))
        return table.evaluate(pos, costs, self._chunk(scores.shape[0]))

    # ------------------------------------------------------------ search

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        scores, correct, costs = _check_inputs(scores, correct, costs)
        n, k = scores.shape
        geo = GeometricSolver(grid=self.grid)
        geo_solutions = geo.solve(scores, correct, costs)
        # (thresholds, exits, hits, cost) of every seed whose exact numbers are known
        grid_seeds = [_seed(sol, correct, costs) for sol in geo_solutions]
        budgets = (
            [c for *_, c in grid_seeds] if self.budgets is None else [float(b) for b in self.budgets]
        )
        if k == 1:
            t = np.array([-SENTINEL])
            ex = assign_exits(scores, t)
            return [Solution(b, "budget", t.copy(), ex, {"budget": b}) for b in budgets]
        budget_seeds = [self._budget_seeds(geo, scores, correct, costs, b) for b in budgets]
        every_seed = [s[0][:-1] for s in grid_seeds] + [
            s[0][:-1] for seeds in budget_seeds for s in seeds
        ]
        table = _LevelTable(scores, correct, self.levels, np.asarray(every_seed).reshape(-1, k - 1))
        everyone_first = np.full(k, -SENTINEL)
        first_exit_seed = (everyone_first, *_exact(everyone_first, scores, correct, costs))
        out: list[Solution | None] = [None] * len(budgets)
        found: list[tuple[np.ndarray, np.ndarray, int, float]] = []  # earlier results, reused
        saved = random.getstate()
        try:
            for i in sorted(range(len(budgets)), key=lambda j: budgets[j]):
                budget = budgets[i]
                seeds = [s for s in grid_seeds + found if s[3] <= budget]
                seeds += budget_seeds[i] + [first_exit_seed]
                sol = out[i] = self._solve_budget(i, budget, seeds, table, scores, correct, costs)
                assert sol.fit_exits is not None  # _solve_budget records its assignment
                found.append((sol.thresholds, sol.fit_exits, sol.info["hits"], sol.info["cost"]))
                geo_ok = [s[2] for s in grid_seeds + budget_seeds[i] if s[3] <= budget]
                sol.info["geometric_best_hits"] = max(geo_ok, default=None)
        finally:
            random.setstate(saved)
        return [s for s in out if s is not None]

    def _budget_seeds(
        self,
        geo: GeometricSolver,
        scores: np.ndarray,
        correct: np.ndarray,
        costs: np.ndarray,
        budget: float,
    ) -> list[tuple[np.ndarray, np.ndarray, int, float]]:
        """The geometric rule's solutions for one budget (plain, and on a re-weighted seed grid)."""
        solvers = [GeometricSolver()]
        if get_grid(self.grid).exit_weights is not None:
            solvers.append(geo)
        out = []
        for solver in solvers:
            try:
                out.append(_seed(solver.solve_budget(scores, costs, budget), correct, costs))
            except ValueError:
                pass  # budget below the geometric rule's reach; other seeds remain
        return out

    def _solve_budget(
        self,
        index: int,
        budget: float,
        seeds: list[tuple[np.ndarray, np.ndarray, int, float]],
        table: _LevelTable,
        scores: np.ndarray,
        correct: np.ndarray,
        costs: np.ndarray,
    ) -> Solution:
        """GA for one budget, then the exact check against the seeds (see the module docstring)."""
        seed_genes = []
        for t, *_ in seeds:
            idx = table.threshold_indices(t[:-1])[0]
            seed_genes.append([table.gene(int(i)) for i in idx])
        genes, info = self._search(index, budget, seed_genes, table, costs)
        t = table.thresholds(table.gene_positions(np.asarray(genes))[0])
        ex, hits, cost = _exact(t, scores, correct, costs)
        source = "ga"
        if cost > budget:
            hits, cost = -1, math.inf  # cannot happen with an exact table; the seeds decide
        for s_t, s_ex, s_hits, s_cost in seeds:
            if s_cost <= budget and (s_hits, -s_cost) > (hits, -cost):
                t, ex, hits, cost, source = s_t.copy(), s_ex, s_hits, s_cost, "seed"
        if hits < 0:
            raise InputError(
                f"no thresholds reach validation cost <= {budget:g}; the cheapest possible is "
                f"the first exit's cost {costs[0]:g}"
            )
        info.update({"budget": budget, "hits": hits, "cost": cost, "source": source})
        info["levels"] = table.uniform
        return Solution(budget, "budget", t, ex, info)

    def _search(
        self,
        index: int,
        budget: float,
        seeds: list[list[float]],
        table: _LevelTable,
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

        def clone(ind: Individual) -> Individual:
            out = Individual(ind)
            out.fitness.wvalues = ind.fitness.wvalues
            return out

        n_genes = table.k - 1
        rng = np.random.default_rng([self.seed, index])
        random.seed(int(rng.integers(2**63 - 1)))
        cmax = float(np.max(np.abs(costs))) or 1.0
        chunk = self._chunk(table.n)

        toolbox = base.Toolbox()
        toolbox.register("clone", clone)
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

        def assess(inds: list) -> None:
            if not inds:
                return
            pos = table.gene_positions(np.asarray([list(ind) for ind in inds], dtype=np.float64))
            hits, cost = table.evaluate(pos, costs, chunk)
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
        return list(best), {"fitness": best.fitness.values[0], "generations": self.generations}


def _check_inputs(
    scores: np.ndarray, correct: np.ndarray, costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three inputs as arrays, or one clear error saying what does not fit."""
    scores = np.asarray(scores)
    correct = np.asarray(correct, dtype=bool)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise InputError(
            f"the GA needs non-empty (samples, exits) validation scores, got shape {scores.shape}"
        )
    if correct.shape != scores.shape:
        raise InputError(
            f"correctness has shape {correct.shape} but the scores {scores.shape}; give one "
            f"right/wrong flag per sample and exit"
        )
    if costs.shape != (scores.shape[1],):
        raise InputError(f"{costs.size} costs for {scores.shape[1]} exits; give one cost per exit")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise InputError(
            "the validation scores contain NaN (no threshold test is defined for it); "
            "check the logits they come from"
        )
    return scores, correct, costs


def _seed(
    sol: Solution, correct: np.ndarray, costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(thresholds, exits, hits, cost) of a geometric solution, exact on the validation set.

    The MSDNet rule's fit assignment is the threshold rule's own (ties beyond the
    quota exit too), so its counts are the policy's.
    """
    ex = sol.fit_exits
    assert ex is not None  # the geometric solver records its fit assignment
    n, k = correct.shape
    hits = int(hits_at(ex, correct).sum())
    return sol.thresholds, ex, hits, float(mean_cost(exit_counts(ex, k), costs, n))
