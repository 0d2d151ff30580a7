"""``make_policy``: one entry point that turns names (CLI flags, suite files) into a policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eebench.policies._registry import lookup
from eebench.policies.baselines import OraclePolicy, RandomPolicy, StaticPolicy
from eebench.policies.grids import is_q_values, nested_grid_error
from eebench.policies.policy import BasePolicy, Policy
from eebench.policies.solvers import SOLVERS

BASELINES = ("oracle", "random", "static")
LEARNED_POLICIES = ("eenet",)
"""Policies that learn their own exit scores (not a score + threshold solver)."""


def list_policy_solvers() -> list[str]:
    """Every name ``make_policy(solver=...)`` accepts."""
    return sorted([*SOLVERS, *BASELINES, *LEARNED_POLICIES])


def make_policy(
    score: str = "confidence",
    solver: str = "geometric",
    *,
    grid: str | Sequence[float] | Sequence[Sequence[float]] | None = None,
    budgets: Sequence[float] | None = None,
    calibration: str | None = None,
    seed: int = 0,
    base_solver: str = "geometric",
    **options: Any,
) -> BasePolicy:
    """A policy by name, e.g. ``make_policy("confidence", solver="geometric", grid="msdnet",
    calibration="temperature")``.

    - geometric / exact: ``grid`` (q grid name or values) or ``budgets``; option ``exit_weights``.
    - sweep: ``grid`` = shared thresholds (default CF-ViT's 0.00..0.99) or per-exit lists.
    - ga: ``budgets`` (default: the geometric costs on ``grid``, default msdnet), ``seed``,
      options ``population``, ``generations``, ... (see GeneticSolver).
    - risk: options ``epsilon`` (one or a list), ``delta``, ``bound`` (binomial or hb);
      ``grid`` = candidate thresholds (a count or values).
    - eenet: a learned exit scorer (EENetPolicy) with ``budgets`` (default: the geometric costs
      on ``grid``, default msdnet), ``seed``, options ``hidden``, ``epochs``, ``lr``,
      ``weight_decay``; it reads every exit's outputs itself, so ``score`` and
      ``calibration`` do not apply.
    - oracle, static: no parameters. random: the fractions of ``base_solver`` built from the
      same arguments, samples drawn with ``seed``.
    """
    key = lookup("solver", solver, {n: n for n in list_policy_solvers()})
    if key == "oracle":
        return OraclePolicy()
    if key == "static":
        return StaticPolicy()
    if key == "eenet":
        if calibration not in (None, "none"):
            raise ValueError("the eenet policy learns its own exit scores; drop the calibration")
        from eebench.policies.eenet import EENetPolicy

        known = ("hidden", "epochs", "lr", "weight_decay")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"the eenet policy has no option {', '.join(map(repr, unknown))}; "
                             f"it accepts: budgets, seed, grid, {', '.join(known)}")
        budget_grid = grid or "msdnet"
        if not (isinstance(budget_grid, str) or is_q_values(budget_grid)):
            raise nested_grid_error(budget_grid)
        return EENetPolicy(budgets, seed=seed, budget_grid=budget_grid, **options)
    if key == "random":
        if base_solver.strip().lower() == "random":
            raise ValueError("base_solver of a random policy cannot itself be 'random'")
        base = make_policy(
            score, base_solver, grid=grid, budgets=budgets, calibration=calibration, seed=seed,
            **options,
        )
        return RandomPolicy(base, seed=seed)
    if key in ("geometric", "exact"):
        opts = {"grid": grid, "budgets": budgets, **options}
    elif key in ("sweep", "risk"):
        if budgets is not None:
            raise ValueError(
                f"the {key} solver has no budget targeting; use geometric, exact, ga or eenet "
                "for budgets"
            )
        opts = {"grid": grid, **options}
    else:  # ga
        opts = {"budgets": budgets, "seed": seed, **options}
        if grid is not None:
            opts["seed_grid"] = grid
    return Policy(score, key, calibration, solver_options=opts)
