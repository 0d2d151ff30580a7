"""``make_policy``: one entry point that turns names (CLI flags, suite files, specs) into a
policy.

A name in the ``solver`` position is either a threshold solver (``SOLVERS``: a score is
thresholded by it) or a policy that is not a score plus thresholds (``POLICIES``: the
baselines, and learned exit scorers such as EENet). Either way its options are its
constructor's keyword parameters, passed through by name with no routing in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eebench.errors import InputError, UnknownNameError
from eebench.policies.baselines import OraclePolicy, RandomPolicy, StaticPolicy
from eebench.policies.estimator import check_options, constructor_options
from eebench.policies.policy import BasePolicy, Policy
from eebench.policies.solvers import SOLVERS
from eebench.registry import Registry, normalize_name

POLICIES: Registry[type[BasePolicy]] = Registry("policy", where="eebench policies")
"""Policies that threshold no score of ours: baselines that learn nothing, and policies
that learn their own exit scores. Register one with ``@POLICIES.register("name")`` on a
BasePolicy subclass whose keyword parameters are its options."""
POLICIES.register("oracle", OraclePolicy)
POLICIES.register("static", StaticPolicy)
POLICIES.register("random", RandomPolicy)
POLICIES.register_lazy("eenet", "eebench.policies.eenet:EENetPolicy")  # torch loads in fit


def list_policy_solvers() -> list[str]:
    """Every name ``make_policy(solver=...)`` accepts."""
    return sorted([*SOLVERS.names(), *POLICIES.names()])


def solver_key(name: str) -> str:
    """The registered form of a name in the solver position (a solver or a policy)."""
    if name in SOLVERS:
        return SOLVERS.key(name)
    if name in POLICIES:
        return POLICIES.key(name)
    if not isinstance(name, str):
        return SOLVERS.key(name)  # fails with the type
    import difflib

    known = list_policy_solvers()
    close = difflib.get_close_matches(normalize_name(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"unknown solver {name!r}.{hint} Known: {', '.join(known)}.")


def solver_class(name: str) -> type:
    """The class a name in the solver position builds (its signature is its options)."""
    key = solver_key(name)
    return SOLVERS[key] if key in SOLVERS else POLICIES[key]


def is_policy_class(name: str) -> bool:
    """Whether ``name`` is a whole policy (baseline or learned scorer) rather than a
    threshold solver of a score."""
    return solver_key(name) in POLICIES


def policy_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of the solver or policy ``name``, in signature order."""
    return constructor_options(solver_class(name))


def make_policy(
    score: str = "confidence",
    solver: str = "geometric",
    *,
    calibration: str | None = None,
    seed: int | None = None,
    base_solver: str = "geometric",
    calibration_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> BasePolicy:
    """A policy by name, e.g. ``make_policy("confidence", "ga", calibration="temperature",
    population=128, generations=60)``.

    ``options`` are the keyword parameters of the solver's class (``SOLVERS``) or of the
    policy's class (``POLICIES``), by name; ``None`` means the class's default. ``seed``
    goes to classes that take one (ga, eenet, random) and is ignored by the deterministic
    ones. ``random`` copies the exit fractions of ``base_solver`` built from the same
    score, calibration and options. An option the class does not take fails with the ones
    it takes. ``calibration_options`` go to the calibration's constructor by name (e.g.
    ``{"weights": "uniform"}`` for mie).
    """
    key = solver_key(solver)
    opts = {k: v for k, v in options.items() if v is not None}
    if key == "random":
        if normalize_name(base_solver) == "random":
            raise InputError("base_solver of a random policy cannot itself be 'random'")
        base = make_policy(score, base_solver, calibration=calibration, seed=seed,
                           calibration_options=calibration_options, **opts)
        return RandomPolicy(base, seed=0 if seed is None else seed)
    cls = solver_class(key)
    accepted = constructor_options(cls)
    if seed is not None and "seed" in accepted:
        opts["seed"] = seed
    check_options("solver", key, cls, opts)
    if key in POLICIES:
        if calibration not in (None, "none") and not getattr(cls, "uses_calibration", False):
            raise InputError(f"the {key} policy reads no calibrated score; drop the calibration")
        return cls(**opts)
    if calibration_options:
        from eebench.policies.calibration import make_calibration

        return Policy(score, key, make_calibration(calibration, **calibration_options),
                      solver_options=opts)
    return Policy(score, key, calibration, solver_options=opts)


def policy_catalog() -> list[dict[str, str]]:
    """Every registered component of a policy: ``kind`` (score, calibration, q grid, solver,
    policy), ``name`` and, for solvers and policies, ``options`` (``name=default`` from the
    constructor, the same names a suite table and a spec take)."""
    from eebench.policies.calibration import CALIBRATIONS
    from eebench.policies.grids import GRIDS
    from eebench.policies.scores import SCORES

    rows: list[dict[str, str]] = []
    for registry in (SCORES, GRIDS):
        rows += [{"kind": registry.kind, "name": n, "options": ""} for n in registry.names()]
    rows += [{"kind": "calibration", "name": n, "options": ", ".join(
        f"{k}={v!r}" for k, v in constructor_options(CALIBRATIONS[n]).items())}
        for n in CALIBRATIONS.names()]
    for kind, lookup in (("solver", SOLVERS), ("policy", POLICIES)):
        for n in lookup.names():
            opts = constructor_options(solver_class(n))
            rows.append({"kind": kind, "name": n, "options": ", ".join(
                f"{k}={v!r}" for k, v in opts.items())})
    return rows
