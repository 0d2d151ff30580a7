"""Risk control (Learn-then-Test, fixed-sequence testing): the guarantee holds on real logits
over many calibration/test splits, the rule is the documented one, and bad input fails."""

from __future__ import annotations

import numpy as np
import pytest
from policy_testing import synthetic_exits
from scipy.stats import binom
from shared_data import SHARED_DATA

from eebench.data.splits import seeded_split
from eebench.policies import (
    SENTINEL,
    Policy,
    assign_exits,
    exit_correct,
    exit_counts,
    exit_scores,
    mean_cost,
)
from eebench.policies.risk import (
    GUARANTEE,
    RiskControlSolver,
    gap_losses,
    hb_p_values,
    loss_counts,
    realised_drop,
)
from eebench.store.logitset import LogitSet

COSTS6 = np.arange(1, 7, dtype=np.float64)


def _cifar() -> LogitSet:
    path = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    z = np.load(path)
    return LogitSet(np.ascontiguousarray(np.swapaxes(z["logits"], 0, 1)), z["labels"], COSTS6)


def _synthetic(n: int = 2000, k: int = 4, c: int = 10, seed: int = 0) -> LogitSet:
    return synthetic_exits(n, k, c, seed)


def _brute_counts(scores: np.ndarray, correct: np.ndarray, grid: np.ndarray) -> np.ndarray:
    k = scores.shape[1]
    return np.array([
        gap_losses(correct, assign_exits(scores, np.array([lam] * (k - 1) + [-SENTINEL]))).sum()
        for lam in grid
    ])


# ---------------------------------------------------------------- the guarantee on real logits


@pytest.fixture(scope="module")
def cifar_parts() -> tuple[np.ndarray, np.ndarray]:
    ls = _cifar()
    return exit_scores(ls), exit_correct(ls)


@pytest.mark.parametrize("bound", ["binomial", "hb"])
def test_drop_bounded_over_50_splits_and_exits_early(cifar_parts, bound: str) -> None:
    scores, correct = cifar_parts
    n = scores.shape[0]
    eps_list, delta, splits = (0.01, 0.05), 0.1, 50
    drops: dict[float, list[float]] = {e: [] for e in eps_list}
    costs: list[float] = []
    solver = RiskControlSolver(list(eps_list), delta, bound=bound)
    for seed in range(splits):
        parts = seeded_split(n, {"cal": 0.5, "test": 0.5}, 1000 + seed)
        cal, test = parts["cal"], parts["test"]
        for sol in solver.solve(scores[cal], correct[cal], COSTS6):
            exits = assign_exits(scores[test], sol.thresholds)
            drops[sol.param].append(realised_drop(exits, correct[test]))
            if sol.param == 0.05:
                costs.append(mean_cost(exit_counts(exits, 6), COSTS6, test.size))
    for eps in eps_list:
        held = np.mean(np.array(drops[eps]) <= eps)
        assert held >= 1 - delta, f"eps={eps}: drop <= eps in only {held:.0%} of splits"
    # it does exit early: about half the last exit's cost on this model (3.1 of 6 measured)
    assert np.mean(costs) < 0.75 * COSTS6[-1]
    assert max(costs) < COSTS6[-1]


def test_solution_fields_and_fixed_sequence_rule(cifar_parts) -> None:
    scores, correct = cifar_parts
    sc, co = scores[:5000], correct[:5000]
    solver = RiskControlSolver([0.02, 0.05], delta=0.1)
    grid = solver.candidates(sc)
    assert np.all(np.diff(grid) < 0) and grid[0] == 1.0 and grid[-1] == 0.0
    losses = _brute_counts(sc, co, grid)
    for sol in solver.solve(sc, co, COSTS6):
        eps = sol.param
        assert sol.param_name == "epsilon"
        assert set(sol.info) >= {"epsilon", "delta", "guarantee", "val_risk", "p_value"}
        assert sol.info["guarantee"] == GUARANTEE and sol.info["delta"] == 0.1
        lam = sol.info["lambda"]
        assert np.array_equal(sol.thresholds, np.array([lam] * 5 + [-SENTINEL]))
        # every candidate down to lam is rejected, the next one is not
        p = binom.cdf(losses, sc.shape[0], eps)
        i = int(np.flatnonzero(grid == lam)[0])
        assert np.all(p[: i + 1] <= 0.1) and p[i + 1] > 0.1
        assert sol.info["p_value"] == pytest.approx(p[i], rel=1e-12)
        # the reported risk is the loss of the fit assignment
        assert sol.info["val_risk"] == gap_losses(co, sol.fit_exits).mean()
        assert sol.info["val_risk"] <= eps


# ---------------------------------------------------------------- the rule, on synthetic data


def test_loss_counts_match_the_threshold_rule_with_ties() -> None:
    ls = _synthetic(600, 5, seed=3)
    scores = exit_scores(ls)
    scores[::7, 1] = scores[::7, 0]  # ties across exits
    scores[::11, 2] = 1.0  # saturated confidences
    correct = exit_correct(ls)
    grid = np.unique(np.concatenate([np.linspace(0, 1, 57), scores[:40, :].ravel()]))
    assert np.array_equal(loss_counts(scores, correct, grid), _brute_counts(scores, correct, grid))


def test_larger_epsilon_never_gives_a_larger_threshold() -> None:
    eps = [0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.4]
    for seed in range(4):
        ls = _synthetic(1500, 4, seed=seed)
        s, c = exit_scores(ls), exit_correct(ls)
        for bound in ("binomial", "hb"):
            sols = RiskControlSolver(eps, 0.1, bound=bound).solve(s, c, ls.costs)
            lam = [sol.thresholds[0] for sol in sols]
            assert all(a >= b for a, b in zip(lam, lam[1:])), (seed, bound, lam)
            assert lam[-1] < lam[0]  # the range of eps matters on this data


def test_hb_is_more_conservative_than_binomial() -> None:
    losses = np.arange(0, 200)
    for n, eps in ((1000, 0.05), (5000, 0.01), (300, 0.2)):
        assert np.all(hb_p_values(losses, n, eps) >= binom.cdf(losses, n, eps) - 1e-15)


def test_all_wrong_last_exit_lets_everyone_exit_first() -> None:
    ls = _synthetic(1000, 3, seed=1)
    s = exit_scores(ls)
    correct = exit_correct(ls)
    correct[:, -1] = False  # nothing to lose against a last exit that is always wrong
    (sol,) = RiskControlSolver(0.01, 0.1).solve(s, correct, ls.costs)
    assert sol.info["val_risk"] == 0.0
    assert sol.thresholds[0] == 0.0  # the most permissive candidate
    assert np.all(sol.fit_exits == 0)
    assert realised_drop(sol.fit_exits, correct) <= 0


def test_too_few_samples_keeps_everyone_to_the_last_exit_with_a_note() -> None:
    ls = _synthetic(20, 3, seed=2)
    s, c = exit_scores(ls), exit_correct(ls)
    (sol,) = RiskControlSolver(0.01, 0.1).solve(s, c, ls.costs)  # 0.99**20 > 0.1: no rejection
    assert np.array_equal(sol.thresholds, [SENTINEL, SENTINEL, -SENTINEL])
    assert np.all(sol.fit_exits == 2)
    assert "nobody exits early" in sol.info["note"]
    assert sol.info["val_risk"] == 0.0


def test_explicit_grid_and_range_grid_for_unbounded_scores() -> None:
    ls = _synthetic(800, 4, seed=4)
    s, c = exit_scores(ls, "entropy"), exit_correct(ls)  # negative entropy: scores <= 0
    g = RiskControlSolver(0.05, grid=11).candidates(s)
    assert g.size == 11 and g[0] == pytest.approx(s[:, :-1].max()) and g[-1] < -1
    custom = RiskControlSolver(0.05, grid=[-0.5, -0.1, -1.0, -0.1])
    assert np.array_equal(custom.candidates(s), [-0.1, -0.5, -1.0])
    assert np.array_equal(RiskControlSolver(0.05, grid="-0.5,-0.1").candidates(s), [-0.1, -0.5])
    (sol,) = custom.solve(s, c, ls.costs)
    assert sol.thresholds[0] in (-0.1, -0.5, -1.0, SENTINEL)


def test_policy_with_risk_solver_applies_to_a_test_set() -> None:
    val, test = _synthetic(1500, 4, seed=5), _synthetic(1500, 4, seed=6)
    pol = Policy("confidence", RiskControlSolver([0.02, 0.1], 0.1)).fit(val)
    pts = pol.apply(test)
    assert [p.param for p in pts] == [0.02, 0.1] and pts[0].param_name == "epsilon"
    assert pol.name == "confidence/risk[binomial,delta=0.1]"
    for p, sol in zip(pts, pol.solutions_):
        assert np.array_equal(p.exits, assign_exits(exit_scores(test), sol.thresholds))


def test_realised_drop() -> None:
    correct = np.array([[1, 1], [0, 1], [1, 0], [0, 0]], dtype=bool)
    assert realised_drop(np.array([0, 0, 0, 0]), correct) == 0.0  # one lost, one gained
    assert realised_drop(np.array([0, 0, 1, 1]), correct) == 0.25
    assert realised_drop(np.array([1, 1, 1, 1]), correct) == 0.0
    with pytest.raises(ValueError, match="empty"):
        realised_drop(np.zeros(0, dtype=int), np.zeros((0, 2), dtype=bool))
    with pytest.raises(ValueError, match="exits must be"):
        realised_drop(np.zeros(3, dtype=int), correct)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("eps", [0, 1, -0.1, 1.5, float("nan"), "x", [0.1, 1.0]])
def test_epsilon_outside_unit_interval_is_rejected(eps) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        RiskControlSolver(eps)


@pytest.mark.parametrize("delta", [0, 1, -0.5, 2.0, float("nan")])
def test_delta_outside_unit_interval_is_rejected(delta) -> None:
    with pytest.raises(ValueError, match="delta must lie strictly between 0 and 1"):
        RiskControlSolver(0.05, delta)


def test_other_bad_options_and_inputs() -> None:
    with pytest.raises(ValueError, match="bound must be one of binomial, hb"):
        RiskControlSolver(0.05, bound="wsr")
    with pytest.raises(ValueError, match="epsilon: the list is empty"):
        RiskControlSolver([])
    with pytest.raises(ValueError, match="grid"):
        RiskControlSolver(0.05, grid=[0.5, float("inf")])
    with pytest.raises(ValueError, match="grid"):
        RiskControlSolver(0.05, grid=1)
    with pytest.raises(ValueError, match="comma-separated numbers"):
        RiskControlSolver(0.05, grid="0.5,high")
    with pytest.raises(ValueError, match="non-empty"):
        RiskControlSolver(0.05).solve(np.zeros((0, 3)), np.zeros((0, 3), bool), np.ones(3))
    with pytest.raises(ValueError, match="differ in shape"):
        RiskControlSolver(0.05).solve(np.zeros((4, 3)), np.zeros((4, 2), bool), np.ones(3))
