"""``make_policy``: one entry point that turns names (CLI flags, suite files) into a policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eebench.policies._registry import lookup
from eebench.policies.baselines import OraclePolicy, RandomPolicy, StaticPolicy
from eebench.policies.policy import BasePolicy, Policy
from eebench.policies.solvers import SOLVERS

BASELINES = ("oracle", "random", "static")


def list_policy_solvers() -> list[str]:
    """Every name ``make_policy(solver=...)`` accepts."""
    return sorted([*SOLVERS, *BASELINES])


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
    - oracle, static: no parameters. random: the fractions of ``base_solver`` built from the
      same arguments, samples drawn with ``seed``.
    """
    key = lookup("solver", solver, {n: n for n in list_policy_solvers()})
    if key == "oracle":
        return OraclePolicy()
    if key == "static":
        return StaticPolicy()
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
    elif key == "sweep":
        if budgets is not None:
            raise ValueError(
                "the sweep solver has no budget targeting; use geometric, exact or ga for budgets"
            )
        opts = {"grid": grid, **options}
    else:  # ga
        opts = {"budgets": budgets, "seed": seed, **options}
        if grid is not None:
            opts["seed_grid"] = grid
    return Policy(score, key, calibration, solver_options=opts)
