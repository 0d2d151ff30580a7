"""Time the threshold solvers: the MSDNet geometric sweep against its plain-loop reference, and the GA.

Setting of FIELD-NOTES section 1: ImageNet size (50,000 validation and 50,000
test samples, 5 exits, 1,000 classes; synthetic, seeded).

Part ``reference``: the msdnet q grid (39 budgets). Both methods start from the
same per-exit confidences and predictions (computed once, timed separately)
and produce thresholds, validation and test accuracy and cost for every
budget; the script checks that both agree exactly, then prints both times and
their ratio.

Part ``ga``: 20 budgets evenly spaced between the cheapest and the dearest
validation cost of the msdnet-grid geometric solutions. GeometricSolver (one
bisection per budget) is timed before and after GeneticSolver (default
options) on the same budgets, and the GA's time is divided by their mean, so
that drift in the machine's load hits both sides alike. The target is at most
5x. The script checks the GA's guarantee on every budget: validation accuracy
never below the geometric solution's, validation cost never above the budget.

    python benchmarks/bench_solvers.py            # full size (needs about 3 GB of memory)
    python benchmarks/bench_solvers.py --samples 5000   # quick look
    python benchmarks/bench_solvers.py --part ga  # only the GA part (validation split only)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from eebench.policies import (
    GeneticSolver,
    GeometricSolver,
    assign_exits,
    evaluate_exits,
    exit_distribution,
    exit_predictions,
    exit_scores,
    get_grid,
)
from eebench.policies import reference as ref
from eebench.store.logitset import LogitSet


def synthetic_set(n: int, k: int, c: int, seed: int) -> LogitSet:
    """Float32 logits whose exits improve with depth and vary in difficulty per sample."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.standard_normal((n, k, c), dtype=np.float32)
    difficulty = rng.random((n, 1), dtype=np.float32)
    boost = (np.linspace(2.0, 6.0, k, dtype=np.float32)[None, :] * difficulty).astype(np.float32)
    logits[np.arange(n), :, labels] += boost
    return LogitSet(logits, labels, np.arange(1, k + 1, dtype=np.float64))


def bench_reference(args: argparse.Namespace, val: LogitSet, vs: np.ndarray,
                    vp: np.ndarray, t_gen: float, t_scores: float) -> bool:
    """The vectorised geometric sweep against the plain-loop reference; True when identical."""
    n, k, c = args.samples, args.exits, args.classes
    t0 = time.perf_counter()
    test = synthetic_set(n, k, c, args.seed + 1)
    t_gen += time.perf_counter() - t0
    t0 = time.perf_counter()
    ts, tp = exit_scores(test), exit_predictions(test)
    t_scores += time.perf_counter() - t0
    vc, tc = vp == val.labels[:, None], tp == test.labels[:, None]
    q = get_grid("msdnet").q

    t0 = time.perf_counter()
    ours = []
    for sol in GeometricSolver(grid="msdnet").solve(vs, vc, val.costs):
        va, vcost, _ = evaluate_exits(sol.fit_exits, vc, val.costs)
        tex = assign_exits(ts, sol.thresholds)
        ta, tcost, _ = evaluate_exits(tex, tc, test.costs)
        ours.append((sol.thresholds, va, vcost, ta, tcost, tex))
    t_ours = time.perf_counter() - t0

    dists = [exit_distribution(x, k) for x in q]
    t0 = time.perf_counter()
    loops = ref.dynamic_evaluate((vs, vp, val.labels), (ts, tp, test.labels), val.costs, dists)
    t_ref = time.perf_counter() - t0

    same = all(
        np.array_equal(o[0], np.array(r["thresholds"]))
        and (o[1], o[2], o[3], o[4]) == (r["val_acc"], r["val_cost"], r["test_acc"], r["test_cost"])
        and np.array_equal(o[5], np.array(r["test_exits"]))
        for o, r in zip(ours, loops)
    )
    print(f"setting: {n} validation + {n} test samples, {k} exits, {c} classes, "
          f"{len(q)} budgets (msdnet grid), float32 logits, seed {args.seed}")
    print(f"synthetic data generation:                {t_gen:9.3f} s (not part of either method)")
    print(f"confidences + predictions (both splits):  {t_scores:9.3f} s (shared input, once)")
    print(f"plain-loop reference (39 budgets):        {t_ref:9.3f} s ({t_ref / len(q):.3f} s per budget)")
    print(f"vectorised GeometricSolver (39 budgets):  {t_ours:9.3f} s ({t_ours / len(q) * 1e3:.2f} ms per budget)")
    print(f"speed-up (reference / vectorised):        {t_ref / t_ours:9.1f} x")
    print(f"identical thresholds, exits, accuracy and cost on every budget: {same}")
    return same


def bench_ga(args: argparse.Namespace, val: LogitSet, vs: np.ndarray, vp: np.ndarray) -> bool:
    """GeneticSolver against GeometricSolver on the same budgets; True when the guarantee holds."""
    vc = vp == val.labels[:, None]
    n = vs.shape[0]
    grid_costs = [evaluate_exits(s.fit_exits, vc, val.costs)[1]
                  for s in GeometricSolver(grid="msdnet").solve(vs, vc, val.costs)]
    budgets = np.linspace(min(grid_costs), max(grid_costs), args.ga_budgets).tolist()

    def geometric() -> tuple[list, float]:
        t0 = time.perf_counter()
        sols = GeometricSolver(budgets=budgets).solve(vs, vc, val.costs)
        return sols, time.perf_counter() - t0

    geo, t_geo1 = geometric()
    t0 = time.perf_counter()
    ga = GeneticSolver(budgets=budgets, seed=args.seed).solve(vs, vc, val.costs)
    t_ga = time.perf_counter() - t0
    _, t_geo2 = geometric()
    t_geo = 0.5 * (t_geo1 + t_geo2)

    ok, gains = True, []
    for b, g, s in zip(budgets, geo, ga):
        g_acc, _, _ = evaluate_exits(assign_exits(vs, g.thresholds), vc, val.costs)
        acc, cost, _ = evaluate_exits(assign_exits(vs, s.thresholds), vc, val.costs)
        ok &= acc >= g_acc and cost <= b
        gains.append(acc - g_acc)
    gains_pts = 100 * np.array(gains)
    nb = len(budgets)
    print(f"setting: {n} validation samples, {args.exits} exits, {args.classes} classes, "
          f"{nb} budgets from {budgets[0]:.4f} to {budgets[-1]:.4f}, seed {args.seed}")
    print(f"GeometricSolver ({nb} budgets), before/after: {t_geo1:9.3f} s / {t_geo2:.3f} s")
    print(f"GeneticSolver ({nb} budgets, defaults):       {t_ga:9.3f} s ({t_ga / nb:.3f} s per budget)")
    print(f"GA / geometric time ratio (target <= 5):     {t_ga / t_geo:9.2f} x")
    print(f"GA validation accuracy gain over geometric: mean {gains_pts.mean():.3f} points, "
          f"max {gains_pts.max():.3f}, improved on {int((gains_pts > 0).sum())} of {nb} budgets")
    print(f"GA accuracy >= geometric and cost <= budget on every budget: {ok}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50_000, help="samples per split (default 50,000)")
    ap.add_argument("--exits", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=("all", "reference", "ga"), default="all",
                    help="which comparison to run (default: both)")
    ap.add_argument("--ga-budgets", type=int, default=20, help="budgets of the GA part (default 20)")
    args = ap.parse_args(argv)
    if args.ga_budgets < 1:
        ap.error(f"--ga-budgets must be at least 1, got {args.ga_budgets}")
    n, k, c = args.samples, args.exits, args.classes

    t0 = time.perf_counter()
    val = synthetic_set(n, k, c, args.seed)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    vs, vp = exit_scores(val), exit_predictions(val)
    t_scores = time.perf_counter() - t0

    ok = True
    if args.part in ("all", "reference"):
        ok &= bench_reference(args, val, vs, vp, t_gen, t_scores)
    if args.part in ("all", "ga"):
        if args.part == "all":
            print()
        ok &= bench_ga(args, val, vs, vp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
