"""The genetic-algorithm threshold solver: its guarantee over the geometric rule at every budget
(accuracy never below, cost never above the budget), exact bit-set evaluation, determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest
from shared_data import SHARED_DATA

from eebench.errors import DataError
from eebench.policies import (
    SENTINEL,
    GeometricSolver,
    assign_exits,
    evaluate_exits,
    exit_correct,
    exit_scores,
)
from eebench.policies import ga as ga_module
from eebench.policies.ga import GeneticSolver
from eebench.store.logitset import LogitSet

COSTS5 = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def synthetic(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N, K) float32 and correctness (N, K): deeper exits and easier samples do better.

    Scores are rounded to 1/200 and clipped at 1, so many ties and a saturated top
    (as real confidences have) are part of every test.
    """
    rng = np.random.default_rng(seed)
    easy = rng.random((n, 1))
    skill = np.linspace(0.3, 0.9, k)[None, :]
    correct = rng.random((n, k)) < skill * (0.4 + 0.6 * easy)
    raw = 0.45 * correct + 0.5 * easy + 0.25 * rng.standard_normal((n, k))
    scores = np.clip(np.round(raw * 200) / 200, 0.0, 1.0).astype(np.float32)
    return scores, correct


def geometric_budgets(scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, m: int):
    """``m`` budgets evenly spaced over the msdnet-grid geometric costs."""
    grid = GeometricSolver(grid="msdnet").solve(scores, correct, costs)
    c = [evaluate_exits(s.fit_exits, correct, costs)[1] for s in grid]
    return np.linspace(min(c), max(c), m).tolist()


def check_guarantee(
    scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, budgets: list[float], **opts
) -> list[float]:
    """Assert the GA's guarantee at every budget; return its validation accuracies."""
    geo = GeometricSolver(budgets=budgets).solve(scores, correct, costs)
    sols = GeneticSolver(budgets=budgets, **opts).solve(scores, correct, costs)
    assert [s.param for s in sols] == budgets
    accs = []
    n = scores.shape[0]
    for b, g, s in zip(budgets, geo, sols):
        g_acc, _, _ = evaluate_exits(g.fit_exits, correct, costs)
        ex = assign_exits(scores, s.thresholds)
        acc, cost, _ = evaluate_exits(ex, correct, costs)
        assert cost <= b, f"budget {b}: validation cost {cost} above the budget"
        assert acc >= g_acc, f"budget {b}: GA accuracy {acc} below the geometric {g_acc}"
        # what the solver reports is the threshold rule's own, exact, result
        assert np.array_equal(s.fit_exits, ex)
        assert s.info["hits"] == round(acc * n) and s.info["cost"] == cost
        assert s.info["geometric_best_hits"] >= round(g_acc * n)
        accs.append(acc)
    return accs


# ---------------------------------------------------------------- the guarantee


def test_ga_never_below_geometric_on_synthetic_scores() -> None:
    scores, correct = synthetic(4000, 5, 0)
    budgets = geometric_budgets(scores, correct, COSTS5, 10)
    state = random.getstate()
    accs = check_guarantee(scores, correct, COSTS5, budgets, population=16, generations=8)
    assert random.getstate() == state, "the GA must not disturb the global random state"
    # budgets searched in increasing order seed each other: accuracy never drops with the budget
    assert accs == sorted(accs)


def test_ga_guarantee_holds_at_coarsest_levels_and_small_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # seeds' own thresholds are levels whatever the resolution, so two evenly spaced levels
    # (and a table capped far below its natural size) still cannot lose to the geometric rule
    scores, correct = synthetic(1500, 4, 1)
    costs = np.array([1.0, 1.5, 4.0, 6.0])
    budgets = geometric_budgets(scores, correct, costs, 6)
    check_guarantee(scores, correct, costs, budgets, population=8, generations=3, levels=2)
    monkeypatch.setattr(ga_module, "MAX_TABLE_BYTES", 3 * 24 * 8 * 10)
    sols = GeneticSolver(budgets=budgets, population=8, generations=3).solve(scores, correct, costs)
    assert sols[0].info["levels"] == 2
    check_guarantee(scores, correct, costs, budgets, population=8, generations=3)


def test_ga_budget_between_first_exit_and_geometric_reach() -> None:
    # the geometric rule cannot reach this budget (q >= 1e-4 still sends some samples on);
    # "everyone exits first" can, so the GA answers where the geometric solver raises
    rng = np.random.default_rng(2)
    scores, correct = rng.random((800, 3)), rng.random((800, 3)) < 0.6  # no ties: 1 sample goes on
    costs = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="below the cheapest"):
        GeometricSolver(budgets=[1.00001]).solve(scores, correct, costs)
    (sol,) = GeneticSolver(budgets=[1.00001], population=8, generations=2).solve(
        scores, correct, costs
    )
    _, cost, _ = evaluate_exits(assign_exits(scores, sol.thresholds), correct, costs)
    assert cost <= 1.00001
    with pytest.raises(ValueError, match="no thresholds reach"):
        GeneticSolver(budgets=[0.5], population=8, generations=2).solve(scores, correct, costs)


def test_ga_returns_the_best_seed_when_the_search_result_is_worse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scores, correct = synthetic(1000, 4, 3)
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    budgets = geometric_budgets(scores, correct, costs, 4)

    def nobody_exits_early(self, index, budget, seeds, table, costs):  # noqa: ANN001, ANN202
        return [1.02] * (table.k - 1), {"fitness": -1.0, "generations": 0}  # the dearest point

    monkeypatch.setattr(GeneticSolver, "_search", nobody_exits_early)
    sols = GeneticSolver(budgets=budgets[:-1]).solve(scores, correct, costs)
    assert all(s.info["source"] == "seed" for s in sols)
    check_guarantee(scores, correct, costs, budgets[:-1])


def _load_npz(name: str, k: int) -> LogitSet:
    path = SHARED_DATA / "logits" / name
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    z = np.load(path)
    logits, labels = z["logits"], z["labels"]
    if logits.shape[0] != labels.shape[0]:
        logits = np.swapaxes(logits, 0, 1)
    return LogitSet(np.ascontiguousarray(logits), labels, np.arange(1, k + 1, dtype=np.float64))


def test_ga_never_below_geometric_on_cifar_logits() -> None:
    ls = _load_npz("cnn6exit-cifar10.npz", 6)
    scores, correct = exit_scores(ls), exit_correct(ls)
    budgets = geometric_budgets(scores, correct, ls.costs, 8)
    accs = check_guarantee(scores, correct, ls.costs, budgets, population=16, generations=6)
    assert accs == sorted(accs)


# ---------------------------------------------------------------- determinism


def test_ga_same_seed_same_thresholds() -> None:
    scores, correct = synthetic(2000, 5, 4)
    budgets = geometric_budgets(scores, correct, COSTS5, 5)

    def run(seed: int) -> list[np.ndarray]:
        sols = GeneticSolver(budgets=budgets, population=12, generations=5, seed=seed).solve(
            scores, correct, COSTS5
        )
        return [s.thresholds for s in sols]

    first, again = run(7), run(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # the search does depend on the seed (it is a search, not the seeds replayed)
    others = [run(s) for s in (8, 9)]
    assert any(not np.array_equal(a, b) for o in others for a, b in zip(first, o))


# ---------------------------------------------------------------- exact evaluation


def test_level_table_counts_equal_the_threshold_rule() -> None:
    scores, correct = synthetic(777, 5, 5)  # 777: the last 64-bit word is partly used
    rng = np.random.default_rng(0)
    seeds = np.sort(rng.choice(scores[:, :-1].ravel(), (6, 4)), axis=0)
    table = ga_module._LevelTable(scores, correct, 50, seeds)
    genes = rng.uniform(0.0, 1.05, (40, 4))
    genes[0] = 0.0  # everyone exits first
    genes[1] = 1.02  # nobody exits before the last
    pos = table.gene_positions(genes)
    hits, cost = table.evaluate(pos, COSTS5, chunk=7)
    for i in range(len(genes)):
        t = table.thresholds(pos[i])
        acc, c, _ = evaluate_exits(assign_exits(scores, t), correct, COSTS5)
        assert hits[i] == round(acc * 777) and cost[i] == c
    assert cost[0] == 1.0 and cost[1] == 5.0
    # seeds' thresholds are levels: they decode to themselves
    seed_pos = table.positions(table.threshold_indices(seeds))
    for s, p in zip(seeds, seed_pos):
        assert np.array_equal(table.thresholds(p)[:-1], s.astype(np.float64))


def test_evaluate_population_is_exact_with_ties_and_sentinels() -> None:
    scores, correct = synthetic(300, 4, 6)
    costs = np.array([1.0, 2.5, 3.0, 7.0])
    rng = np.random.default_rng(1)
    t = rng.choice(scores.ravel(), (25, 3)).astype(np.float64)  # real scores: exact ties
    t[0, 1], t[1, 0], t[2] = SENTINEL, -SENTINEL, 1.0
    hits, cost = GeneticSolver(max_chunk_elements=1000).evaluate_population(t, scores, correct, costs)
    for i, row in enumerate(t):
        acc, c, _ = evaluate_exits(assign_exits(scores, np.append(row, -SENTINEL)), correct, costs)
        assert hits[i] == round(acc * 300) and cost[i] == c


def test_popcount_fallback_matches() -> None:
    words = np.random.default_rng(2).integers(0, 2**63, (5, 9), dtype=np.int64).astype(np.uint64)
    words[0, 0] = np.uint64(2**64 - 1)
    expected = [sum(bin(int(w)).count("1") for w in row) for row in words]
    assert ga_module._popcount_bytes(words).tolist() == expected
    assert ga_module._popcount_rows(words).tolist() == expected


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "opts", [{"levels": 1}, {"levels": 2.5}, {"population": 1}, {"generations": -1}]
)
def test_ga_rejects_bad_options(opts: dict) -> None:
    with pytest.raises(DataError, match="GA option"):
        GeneticSolver(**opts)


def test_more_levels_than_samples_uses_every_score() -> None:
    scores, correct = synthetic(200, 3, 7)
    costs = np.array([1.0, 2.0, 3.0])
    budgets = geometric_budgets(scores, correct, costs, 3)
    sols = GeneticSolver(budgets=budgets, population=8, generations=2, levels=5000).solve(
        scores, correct, costs
    )
    assert all(s.info["levels"] == 200 for s in sols)


def test_ga_refuses_inputs_that_do_not_fit() -> None:
    scores, correct = synthetic(50, 3, 8)
    costs = np.array([1.0, 2.0, 3.0])
    ga = GeneticSolver(population=4, generations=1)
    with pytest.raises(ValueError, match="non-empty"):
        ga.solve(scores[:0], correct[:0], costs)
    with pytest.raises(ValueError, match="one right/wrong flag"):
        ga.solve(scores, correct[:, :2], costs)
    with pytest.raises(ValueError, match="one cost per exit"):
        ga.solve(scores, correct, costs[:2])
    bad = scores.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ga.solve(bad, correct, costs)
