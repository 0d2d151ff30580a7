"""Exit policies on cached logits: scores, calibrations, threshold solvers, baselines.

Nothing here imports torch, pandas or (at import time) scipy and deap, so the
``eebench sweep`` command starts quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eebench.lazy import lazy_attributes
from eebench.policies.assignment import assign_exits, evaluate_exits, exit_counts, mean_cost
from eebench.policies.baselines import OraclePolicy, RandomPolicy, StaticPolicy
from eebench.policies.calibration import (
    CALIBRATIONS,
    TemperatureScaling,
    list_calibrations,
    make_calibration,
)
from eebench.policies.ensemble import ModelInternalEnsemble, TemperatureMIE
from eebench.policies.estimator import Estimator
from eebench.policies.factory import POLICIES, list_policy_solvers, make_policy, policy_catalog
from eebench.policies.grids import GRIDS, QGrid, exit_distribution, get_grid, list_grids
from eebench.policies.policy import BasePolicy, OperatingPoint, Policy
from eebench.policies.scores import (
    SCORES,
    correctness,
    exit_correct,
    exit_predictions,
    exit_scores,
    get_score,
    list_scores,
    predictions,
    scores_and_predictions,
)
from eebench.policies.solvers import (
    SENTINEL,
    SOLVERS,
    ExactSolver,
    GeometricSolver,
    Solution,
    SweepSolver,
    list_solvers,
    make_solver,
    quota_thresholds,
)

_LAZY = {
    "GeneticSolver": "eebench.policies.ga",
    "RiskControlSolver": "eebench.policies.risk",
    "EENetPolicy": "eebench.policies.eenet",
    "LaplaceCalibration": "eebench.policies.laplace",
}


# The lazy names for type checkers and editors; at run time __getattr__ loads them.
if TYPE_CHECKING:
    from eebench.policies.eenet import EENetPolicy
    from eebench.policies.ga import GeneticSolver
    from eebench.policies.laplace import LaplaceCalibration
    from eebench.policies.risk import RiskControlSolver


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "CALIBRATIONS",
    "GRIDS",
    "POLICIES",
    "SCORES",
    "SENTINEL",
    "SOLVERS",
    "BasePolicy",
    "EENetPolicy",
    "Estimator",
    "ExactSolver",
    "GeneticSolver",
    "GeometricSolver",
    "LaplaceCalibration",
    "ModelInternalEnsemble",
    "OperatingPoint",
    "OraclePolicy",
    "Policy",
    "QGrid",
    "RandomPolicy",
    "RiskControlSolver",
    "Solution",
    "StaticPolicy",
    "SweepSolver",
    "TemperatureMIE",
    "TemperatureScaling",
    "assign_exits",
    "correctness",
    "evaluate_exits",
    "exit_correct",
    "exit_counts",
    "exit_distribution",
    "exit_predictions",
    "exit_scores",
    "get_grid",
    "get_score",
    "list_calibrations",
    "list_grids",
    "list_policy_solvers",
    "list_scores",
    "list_solvers",
    "make_calibration",
    "make_policy",
    "make_solver",
    "mean_cost",
    "policy_catalog",
    "predictions",
    "quota_thresholds",
    "scores_and_predictions",
]
