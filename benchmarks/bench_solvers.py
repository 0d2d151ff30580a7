"""Time the MSDNet geometric sweep: our vectorised solver against the plain-loop reference.

Setting of FIELD-NOTES section 1: ImageNet size (50,000 validation and 50,000
test samples, 5 exits, 1,000 classes; synthetic, seeded), the msdnet q grid
(39 budgets). Both methods start from the same per-exit confidences and
predictions (computed once, timed separately) and produce thresholds,
validation and test accuracy and cost for every budget; the script checks
that both agree exactly, then prints both times and their ratio.

    python benchmarks/bench_solvers.py            # full size (needs about 3 GB of memory)
    python benchmarks/bench_solvers.py --samples 5000   # quick look
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from eebench.policies import (
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50_000, help="samples per split (default 50,000)")
    ap.add_argument("--exits", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n, k, c = args.samples, args.exits, args.classes

    t0 = time.perf_counter()
    val = synthetic_set(n, k, c, args.seed)
    test = synthetic_set(n, k, c, args.seed + 1)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    vs, vp = exit_scores(val), exit_predictions(val)
    ts, tp = exit_scores(test), exit_predictions(test)
    t_scores = time.perf_counter() - t0
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
