"""Exit policies: the vectorised MSDNet rule against its plain-loop transcription, the other
solvers, baselines, calibration and registries."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from shared_data import SHARED_DATA

from eebench.data.splits import seeded_split
from eebench.policies import (
    SENTINEL,
    ExactSolver,
    GeometricSolver,
    OraclePolicy,
    Policy,
    RandomPolicy,
    StaticPolicy,
    SweepSolver,
    TemperatureScaling,
    assign_exits,
    evaluate_exits,
    exit_correct,
    exit_counts,
    exit_distribution,
    exit_predictions,
    exit_scores,
    get_grid,
    make_policy,
    mean_cost,
    quota_thresholds,
)
from eebench.policies import reference as ref
from eebench.policies.ga import GeneticSolver
from eebench.policies.scores import max_probability, negative_entropy, top2_margin
from eebench.store.logitset import LogitSet


def _load_npz(path: Path, costs: np.ndarray) -> LogitSet:
    """Minimal private loader: (K, N, C) or (N, K, C) logits + labels."""
    z = np.load(path)
    logits, labels = z["logits"], z["labels"]
    if logits.shape[0] != labels.shape[0]:
        logits = np.swapaxes(logits, 0, 1)
    return LogitSet(np.ascontiguousarray(logits), labels, costs)


FILES = {"cifar": ("cnn6exit-cifar10.npz", 6), "mnist": ("smallcnn3exit-mnist.npz", 3)}


@pytest.fixture(scope="module", params=sorted(FILES))
def split(request: pytest.FixtureRequest) -> tuple[str, LogitSet, LogitSet]:
    name, k = FILES[request.param]
    path = SHARED_DATA / "logits" / name
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    ls = _load_npz(path, np.arange(1, k + 1, dtype=np.float64))
    parts = seeded_split(ls.num_samples, {"val": 0.5, "test": 0.5}, 0)
    return request.param, ls.subset(parts["val"]), ls.subset(parts["test"])


def _triple(ls: LogitSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return exit_scores(ls), exit_predictions(ls), ls.labels


# ---------------------------------------------------------------- geometric == reference


def test_geometric_matches_plain_loop_reference(split: tuple[str, LogitSet, LogitSet]) -> None:
    name, val, test = split
    k = val.num_exits
    policy = make_policy("confidence", solver="geometric", grid="msdnet").fit(val)
    test_points = policy.apply(test)
    val_points = policy.apply(val)
    dists = [exit_distribution(q, k) for q in get_grid("msdnet").q]
    expected = ref.dynamic_evaluate(_triple(val), _triple(test), val.costs, dists)
    assert len(policy.solutions_) == len(expected) == 39
    vc, tc = exit_correct(val), exit_correct(test)
    overflow = 0
    for sol, vp, tp, r, p in zip(policy.solutions_, val_points, test_points, expected, dists):
        assert np.array_equal(sol.thresholds, np.array(r["thresholds"]))
        assert np.array_equal(sol.fit_exits, np.array(r["val_exits"]))
        assert np.array_equal(vp.exits, np.array(r["val_exits"]))
        assert np.array_equal(tp.exits, np.array(r["test_exits"]))
        va, vcost, counts = evaluate_exits(vp.exits, vc, val.costs)
        ta, tcost, _ = evaluate_exits(tp.exits, tc, test.costs)
        assert (va, vcost, ta, tcost) == (r["val_acc"], r["val_cost"], r["test_acc"], r["test_cost"])
        quotas = [math.floor(val.num_samples * p[j]) for j in range(k - 1)]
        overflow += sum(counts[j] > quotas[j] for j in range(k - 1))
    if name == "mnist":
        scores = exit_scores(val)
        assert (scores == 1.0).sum() > 50, "saturated float32 confidences expected in MNIST"
        assert overflow > 0, "ties at 1.0 should push exits beyond their quota"


def _ref_thresholds(scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.array(ref.find_thresholds(scores, p))


@pytest.mark.parametrize(
    "scores,p,expect",
    [
        # quota 0 at exit 0 (floor(10 * 0.05) = 0): the sentinel stays
        (np.linspace(0.1, 1.0, 20).reshape(10, 2), np.array([0.05, 0.95]), [SENTINEL, -SENTINEL]),
        # all ties: the quota's value is the common value, so everyone exits at exit 0
        (np.full((8, 3), 0.5), np.array([0.25, 0.5, 0.25]), [0.5, SENTINEL, -SENTINEL]),
        # one exit: the last exit takes everything
        (np.random.default_rng(0).random((7, 1)), np.array([1.0]), [-SENTINEL]),
        # ties exit 8 of 10 at exit 0; exit 1 wants 4 but only 2 remain: sentinel
        (
            np.array([[0.9, 0.3]] * 8 + [[0.1, 0.2], [0.1, 0.4]]),
            np.array([0.5, 0.4, 0.1]),
            None,
        ),
    ],
)
def test_geometric_edge_cases(scores: np.ndarray, p: np.ndarray, expect: list | None) -> None:
    if scores.shape[1] != p.size:
        scores = np.concatenate([scores, np.zeros((scores.shape[0], p.size - scores.shape[1]))], 1)
    t, ex = quota_thresholds(scores, p)
    assert np.array_equal(t, _ref_thresholds(scores, p))
    assert np.array_equal(ex, assign_exits(scores, t))
    if expect is not None:
        assert t.tolist() == expect
    else:
        assert t[0] == 0.9 and t[1] == SENTINEL
        assert exit_counts(ex, 3).tolist() == [8, 0, 2]


def test_geometric_matches_reference_on_random_tied_cases() -> None:
    rng = np.random.default_rng(1)
    for _ in range(150):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 5))
        scores = rng.integers(0, 4, size=(n, k)) / 4.0  # few distinct values: many ties
        p = rng.dirichlet(np.ones(k))
        t, ex = quota_thresholds(scores, p)
        assert np.array_equal(t, _ref_thresholds(scores, p))
        preds = rng.integers(0, 3, size=(n, k))
        labels = rng.integers(0, 3, size=n)
        acc, cost, r_ex = ref.evaluate_with_thresholds(scores, preds, labels, np.arange(1, k + 1), t)
        a2, c2, _ = evaluate_exits(ex, preds == labels[:, None], np.arange(1, k + 1.0))
        assert np.array_equal(ex, np.array(r_ex)) and (acc, cost) == (a2, c2)


# ---------------------------------------------------------------- grids


def test_named_grids() -> None:
    assert len(get_grid("msdnet").q) == 39 and get_grid("msdnet").q[-1] == 39 / 20
    assert len(get_grid("imta").q) == 40
    assert len(get_grid("dvt").q) == 59 and get_grid("dvt").q[-1] == 59 / 20
    eenet = get_grid("eenet").q
    assert len(eenet) == 80 and eenet[0] == 1 / 15 and eenet[-1] == pytest.approx(81 / 15)
    dp = get_grid("dynperceiver")
    assert len(dp.q) == 33 and dp.q[0] == 0.2 and dp.q[16] == dp.q[17] == 1.0 and dp.q[-1] == 4.0
    assert get_grid("0.5, 1,2").q == (0.5, 1.0, 2.0)
    assert get_grid([0.3, 3]).q == (0.3, 3.0)
    with pytest.raises(ValueError, match="msdnet"):
        get_grid("msdnett")
    with pytest.raises(ValueError, match="positive"):
        get_grid([0.5, -1])


def test_exit_distribution_geometric_and_dynperceiver_reweighting() -> None:
    assert exit_distribution(0.5, 2) == pytest.approx([2 / 3, 1 / 3])
    assert exit_distribution(1.0, 4) == pytest.approx([0.25] * 4)
    w = [0.85, 1, 0.5, 1]
    for q in get_grid("dynperceiver").q:
        # plain transcription of the official per-exit re-weighting
        p = [q ** (j + 1) for j in range(4)]
        p = [v / sum(p) for v in p]
        for j in range(3):
            p[j] *= w[j]
            rest = (1 - sum(p[: j + 1])) / sum(p[j + 1 :])
            for i in range(j + 1, 4):
                p[i] *= rest
        got = exit_distribution(q, 4, w)
        assert got == pytest.approx(p, rel=1e-12) and got.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="4 exits"):
        GeometricSolver(grid="dynperceiver").solve(np.zeros((5, 3)), np.zeros((5, 3), bool), np.ones(3))


# ---------------------------------------------------------------- exact, sweep, budgets


def test_exact_quotas_hold_exactly(split: tuple[str, LogitSet, LogitSet]) -> None:
    _, val, _ = split
    scores = exit_scores(val)
    n, k = scores.shape
    for sol in ExactSolver(grid="msdnet").solve(scores, exit_correct(val), val.costs):
        p = exit_distribution(sol.param, k)
        counts = exit_counts(sol.fit_exits, k)
        quotas = [math.floor(n * p[j]) for j in range(k - 1)]
        assert counts[:-1].tolist() == quotas
        assert counts[-1] == n - sum(quotas)


def test_exact_breaks_ties_by_position() -> None:
    scores = np.full((6, 2), 0.7)
    t, ex = quota_thresholds(scores, np.array([0.5, 0.5]), exact=True)
    assert ex.tolist() == [0, 0, 0, 1, 1, 1] and t[0] == 0.7
    t_geo, ex_geo = quota_thresholds(scores, np.array([0.5, 0.5]))
    assert ex_geo.tolist() == [0] * 6  # the MSDNet rule lets the ties overflow


def test_sweep_solver() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((50, 3))
    sols = SweepSolver().solve(scores, np.ones((50, 3), bool), np.arange(1, 4.0))
    # CF-ViT's grid: 0.00 .. 0.99, then eta = 1.0 (every sample to the last exit)
    assert len(sols) == 101 and sols[1].param == 0.01 and sols[0].param_name == "threshold"
    assert sols[-1].param == 1.0 and (sols[-1].fit_exits == 2).all()
    assert (sols[0].fit_exits == 0).all()  # threshold 0: everyone exits first
    assert sols[37].thresholds.tolist() == [0.37, 0.37, -SENTINEL]
    per_exit = SweepSolver(grid=[[0.2, 0.9], [1.1, 1.1]]).solve(scores, None, None)
    assert per_exit[0].param_name == "index"
    assert np.array_equal(per_exit[0].fit_exits, assign_exits(scores, [0.2, 0.9, -SENTINEL]))
    assert (per_exit[1].fit_exits == 2).all()
    with pytest.raises(ValueError, match="give 2"):
        SweepSolver(grid=[[0.5, 0.5, 0.5, 0.5]]).solve(scores, None, None)


def test_budget_targeting_stays_within_budget(split: tuple[str, LogitSet, LogitSet]) -> None:
    _, val, _ = split
    scores, correct = exit_scores(val), exit_correct(val)
    c = val.costs
    budgets = [c[0] + f * (c[-1] - c[0]) for f in (0.05, 0.3, 0.6, 0.95)]
    for solver in (GeometricSolver(budgets=budgets), ExactSolver(budgets=budgets)):
        costs_found = []
        for b, sol in zip(budgets, solver.solve(scores, correct, c)):
            _, cost, _ = evaluate_exits(sol.fit_exits, correct, c)
            assert cost <= b and sol.param == b and sol.param_name == "budget"
            costs_found.append(cost)
        assert costs_found == sorted(costs_found) and costs_found[-1] > costs_found[0]
    with pytest.raises(ValueError, match="below the cheapest"):
        GeometricSolver(budgets=[c[0] * 0.5]).solve(scores, correct, c)
    with pytest.raises(ValueError, match="not both"):
        GeometricSolver(grid="msdnet", budgets=[2.0])


# ---------------------------------------------------------------- genetic algorithm


def test_ga_dominates_geometric_and_is_reproducible(split: tuple[str, LogitSet, LogitSet]) -> None:
    _, val, _ = split
    scores, correct = exit_scores(val), exit_correct(val)
    geo = GeometricSolver(grid="msdnet").solve(scores, correct, val.costs)
    geo_stats = [evaluate_exits(s.fit_exits, correct, val.costs)[:2] for s in geo]
    budgets = [c for _, c in geo_stats]
    state = random.getstate()
    ga = GeneticSolver(budgets=budgets, population=16, generations=6, seed=3)
    first = ga.solve(scores, correct, val.costs)
    assert random.getstate() == state, "the GA must not disturb the global random state"
    improved = 0
    for sol, (g_acc, g_cost) in zip(first, geo_stats):
        acc, cost, _ = evaluate_exits(assign_exits(scores, sol.thresholds), correct, val.costs)
        assert cost <= g_cost and acc >= g_acc and sol.param == g_cost
        improved += acc > g_acc
    again = GeneticSolver(budgets=budgets, population=16, generations=6, seed=3).solve(
        scores, correct, val.costs
    )
    assert all(np.array_equal(a.thresholds, b.thresholds) for a, b in zip(first, again))
    assert improved > 0, "the search should improve on the geometric rule somewhere"


def test_ga_population_evaluation_matches_single_evaluation() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((300, 4)).astype(np.float32)
    correct = rng.random((300, 4)) < 0.6
    costs = np.array([1.0, 2.5, 3.0, 7.0])
    thresholds = rng.random((33, 3))
    thresholds[0, 1] = SENTINEL
    ga = GeneticSolver(max_chunk_elements=1000)  # forces several chunks
    hits, cost = ga.evaluate_population(thresholds, scores, correct, costs)
    for i, t in enumerate(thresholds):
        ex = assign_exits(scores, np.append(t, -SENTINEL))
        acc, c, _ = evaluate_exits(ex, correct, costs)
        assert hits[i] == round(acc * 300) and cost[i] == c


def test_ga_default_budgets_follow_geometric_curve() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random((400, 3))
    correct = rng.random((400, 3)) < np.array([0.5, 0.7, 0.8])
    policy_costs = np.array([1.0, 2.0, 3.0])
    sols = GeneticSolver(population=8, generations=2, grid=[0.5, 1.0, 2.0]).solve(
        scores, correct, policy_costs
    )
    geo = GeometricSolver(grid=[0.5, 1.0, 2.0]).solve(scores, correct, policy_costs)
    assert [s.param for s in sols] == [
        mean_cost(exit_counts(g.fit_exits, 3), policy_costs, 400) for g in geo
    ]


# ---------------------------------------------------------------- baselines


def test_oracle_bounds_every_policy(split: tuple[str, LogitSet, LogitSet]) -> None:
    _, val, test = split
    tc = exit_correct(test)
    (pt,) = OraclePolicy().fit(val).apply(test)
    acc, _, _ = evaluate_exits(pt.exits, tc, test.costs)
    assert acc == tc.any(axis=1).mean()
    first = np.where(tc.any(axis=1), tc.argmax(axis=1), test.num_exits - 1)
    assert np.array_equal(pt.exits, first)
    for policy in (make_policy(solver="geometric"), StaticPolicy(), make_policy(solver="sweep")):
        for p in policy.fit(val).apply(test):
            assert evaluate_exits(p.exits, tc, test.costs)[0] <= acc


def test_static_points() -> None:
    ls = _synthetic(60, 3, 5, seed=4)
    pts = StaticPolicy().fit(ls).apply(ls)
    assert [p.param for p in pts] == [0.0, 1.0, 2.0]
    for j, p in enumerate(pts):
        assert (p.exits == j).all()
        assert np.array_equal(assign_exits(exit_scores(ls), p.thresholds), p.exits)


def test_random_policy_copies_fractions_reproducibly(split: tuple[str, LogitSet, LogitSet]) -> None:
    _, val, test = split
    base = make_policy("confidence", solver="geometric", grid=[0.3, 1.0, 1.7])
    rnd = RandomPolicy(base, seed=5).fit(val)
    a, b = rnd.apply(test), RandomPolicy(base, seed=5).fit(val).apply(test)
    other = RandomPolicy(base, seed=6).fit(val).apply(test)
    k = test.num_exits
    for pa, pb, po, pbase in zip(a, b, other, base.apply(test)):
        assert np.array_equal(exit_counts(pa.exits, k), exit_counts(pbase.exits, k))
        assert np.array_equal(pa.exits, pb.exits)
        assert not np.array_equal(pa.exits, po.exits)
    assert make_policy(solver="random", seed=5).name.startswith("random(")


# ---------------------------------------------------------------- calibration and scores


def _synthetic(n: int, k: int, c: int, seed: int, temperature: float = 1.0) -> LogitSet:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, k, c))
    p = np.exp(z / temperature)
    p /= p.sum(-1, keepdims=True)
    labels = (p[:, -1].cumsum(-1) > rng.random((n, 1))).argmax(-1)
    return LogitSet(z.astype(np.float32), labels, np.arange(1, k + 1.0))


def test_temperature_scaling_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    n, c, t_true = 20000, 10, 2.0
    z = rng.normal(0, 3, size=(n, 2, c))
    z[:, 0] = 2.0 * z[:, 1]  # exit 0: the same logits doubled, true temperature 2 * t_true
    p = np.exp(z[:, 1] / t_true)
    p /= p.sum(-1, keepdims=True)
    labels = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)
    ls = LogitSet(z, labels, [1.0, 2.0])
    ts = TemperatureScaling().fit(ls)
    assert ts.temperatures_ == pytest.approx([2 * t_true, t_true], rel=0.05)
    assert (ts.nll_after_ < ts.nll_before_ - 0.01).all()
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ts_p = TemperatureScaling().fit(LogitSet(probs, labels, [1.0, 2.0], kind="probabilities"))
    assert ts_p.temperatures_ == pytest.approx(ts.temperatures_, rel=1e-3)
    cal = make_policy("confidence", calibration="temperature").fit(ls)
    assert cal.calibration_.temperatures_ == pytest.approx(ts.temperatures_)
    assert "temperatures" in cal.describe()["calibration"]
    # calibration changes confidences but never the predicted class
    from eebench.policies.scores import iter_exit_chunks

    for ch in iter_exit_chunks(ls, ts):
        assert np.array_equal(ch.probs.argmax(1), exit_predictions(ls)[ch.start : ch.stop, ch.k])
    assert not np.allclose(exit_scores(ls, "confidence", ts), exit_scores(ls, "confidence"))


def test_scores_on_hand_example() -> None:
    p = np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]])
    assert max_probability(p).tolist() == [0.7, 1.0]
    assert top2_margin(p) == pytest.approx([0.5, 1.0])
    ent = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert negative_entropy(p) == pytest.approx([-ent, 0.0])
    ls = LogitSet(np.log(np.maximum(p, 1e-30))[:, None, :], [0, 0], [1.0])
    assert exit_scores(ls, "margin")[:, 0] == pytest.approx([0.5, 1.0])
    probs_set = LogitSet(p[:, None, :], [0, 1], [1.0], kind="probabilities")
    assert exit_scores(probs_set, "confidence")[:, 0].tolist() == [0.7, 1.0]


def test_float32_scores_keep_saturation() -> None:
    logits = np.array([[[40.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]], dtype=np.float32)
    s = exit_scores(LogitSet(logits, [0, 0], [1.0]))
    assert s.dtype == np.float32 and s[0, 0] == 1.0 and s[1, 0] < 1.0


def test_registries_fail_with_known_names() -> None:
    with pytest.raises(ValueError, match="confidence, entropy, margin"):
        make_policy("confidance")
    with pytest.raises(ValueError, match="geometric") as e:
        make_policy(solver="genetic")
    assert "oracle" in str(e.value) and "ga" in str(e.value)
    with pytest.raises(ValueError, match="temperature"):
        make_policy(calibration="platt")
    with pytest.raises(ValueError, match="has no option .budgets."):
        make_policy(solver="sweep", budgets=[2.0])


def test_policy_checks_fitting_and_exit_count() -> None:
    ls3, ls2 = _synthetic(30, 3, 4, seed=1), _synthetic(30, 2, 4, seed=1)
    policy = Policy("entropy", "geometric")
    with pytest.raises(RuntimeError, match="not fitted"):
        policy.apply(ls3)
    policy.fit(ls3)
    with pytest.raises(ValueError, match="3 exits"):
        policy.apply(ls2)
    pts = policy.apply(ls3)
    assert len(pts) == 39 and pts[0].exits.dtype == np.int8
    assert policy.name == "entropy/geometric[msdnet]"


def test_policy_correctness_follows_its_calibration() -> None:
    ls = _synthetic(400, 3, 6, seed=8)
    plain = make_policy("entropy", calibration="temperature").fit(ls)
    np.testing.assert_array_equal(plain.correct(ls), exit_correct(ls))  # temperature keeps ranks
    mie = make_policy("confidence", calibration="mie").fit(ls)
    ens = exit_correct(ls, mie.calibration_)
    np.testing.assert_array_equal(mie.correct(ls), ens)
    assert not np.array_equal(ens, exit_correct(ls))
    rnd = RandomPolicy(make_policy("confidence", calibration="mie"), seed=1).fit(ls)
    np.testing.assert_array_equal(rnd.correct(ls), ens)  # same exits' predictions, random samples
    np.testing.assert_array_equal(OraclePolicy().fit(ls).correct(ls), exit_correct(ls))
    # apply and iter_apply give the same points
    lazy = list(mie.iter_apply(ls))
    for a, b in zip(mie.apply(ls), lazy):
        assert a.param == b.param and np.array_equal(a.exits, b.exits)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_policy("confidence").iter_apply(ls)
