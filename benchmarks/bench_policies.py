"""Time the score computation and the sweep path against a plain streaming read.

Setting: ImageNet size by default (50,000 samples, 5 exits, 1,000 classes),
seeded synthetic float16 logits written as a store-like ``logits.npy`` in a
temporary folder and read back as a read-only memory map (as LogitStore.get
does). Everything below is measured in this one run, so the ratios compare like
with like on the same machine and the same page cache:

- the streaming pass: the memory map read block by block and summed (float32
  accumulation), i.e. reading and converting every float16 value once; a
  byte-level pass (the same bytes summed as int16, no conversion) for reference;
- each score (confidence, entropy, margin, patience, ensemble-confidence) of every
  exit, with the predictions, computed from scratch, and its ratio to the pass;
- ``torch.softmax(...).max(-1)`` block by block (one torch thread) for reference;
- ``run_sweep`` (load, check, split, fit, apply, curve) against the bare path
  (split, scores and correctness once per split, GeometricSolver.solve,
  assign_exits on both splits, accuracy and cost of every point);
- peak memory of a sweep at 1,000,000 samples (5 exits, 10 classes: C=10 keeps the
  file at 100 MB), in a subprocess: ru_maxrss growth from just before the sweep, as a
  ratio to the logits' bytes, and the absolute peak.

    python benchmarks/bench_policies.py                    # full size (needs ~2 GB of disk)
    python benchmarks/bench_policies.py --samples 5000     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from memory import memory_now

from eebench.evaluate import run_sweep
from eebench.policies import GeometricSolver, assign_exits, evaluate_exits, score_cache
from eebench.policies.scores import block_rows, scores_and_predictions
from eebench.store.logitset import LogitSet
from eebench.store.splits import split_logitset

SCORE_NAMES = ("confidence", "entropy", "margin", "patience", "ensemble-confidence")


def write_logits(folder: Path, n: int, k: int, c: int, seed: int) -> Path:
    """Seeded float16 logits whose exits improve with depth, written block by block."""
    path = folder / "logits.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, k, c))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    boost = np.linspace(1.0, 5.0, k, dtype=np.float32)
    step = max(1, (1 << 22) // (k * c))
    for start in range(0, n, step):
        stop = min(n, start + step)
        z = rng.standard_normal((stop - start, k, c), dtype=np.float32)
        z[np.arange(stop - start), :, labels[start:stop]] += boost * rng.random(
            (stop - start, 1), dtype=np.float32
        )
        mm[start:stop] = z
    mm.flush()
    del mm
    np.save(folder / "labels.npy", labels)
    return path


def open_set(folder: Path) -> LogitSet:
    logits = np.load(folder / "logits.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    k = logits.shape[1]
    return LogitSet(logits, labels, np.arange(1, k + 1, dtype=np.float64))


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Shortest of ``repeat`` wall-clock runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def streaming_pass(ls: LogitSet) -> float:
    n, k, c = ls.logits.shape
    step = block_rows(k, c)
    total = 0.0
    for start in range(0, n, step):
        total += float(np.asarray(ls.logits[start : start + step]).sum(dtype=np.float32))
    return total


def byte_pass(ls: LogitSet) -> int:
    n, k, c = ls.logits.shape
    step = block_rows(k, c)
    total = 0
    for start in range(0, n, step):
        total += int(np.asarray(ls.logits[start : start + step]).view(np.int16).sum())
    return total


def torch_softmax_max(ls: LogitSet) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    n, k, c = ls.logits.shape
    step = block_rows(k, c)
    for start in range(0, n, step):
        z = torch.from_numpy(np.asarray(ls.logits[start : start + step])).float()
        torch.softmax(z, dim=-1).max(dim=-1)


def fresh_scores(ls: LogitSet, score: str) -> None:
    score_cache.clear(ls)
    scores_and_predictions(ls, score)


def bare_sweep(ls: LogitSet) -> None:
    """Split, then scores and correctness once per split, solve, assign exits."""
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    vs, vp = scores_and_predictions(val, "confidence")
    ts, tp = scores_and_predictions(test, "confidence")
    vc, tc = vp == val.labels[:, None], tp == test.labels[:, None]
    for sol in GeometricSolver(grid="msdnet").solve(vs, vc, val.costs):
        evaluate_exits(assign_exits(vs, sol.thresholds), vc, val.costs)
        evaluate_exits(assign_exits(ts, sol.thresholds), tc, test.costs)


def memory_child(folder: str) -> None:
    """Run in a subprocess: one sweep on the memory map, report the peak growth."""
    import pandas  # noqa: F401 - imported before the baseline, as run_sweep needs it

    ls = open_set(Path(folder))
    before, _, _ = memory_now()
    curve = run_sweep(ls, val_fraction=0.5, seed=0, score="confidence", grid="msdnet")
    _, peak, source = memory_now()
    print(json.dumps({"before": before, "peak": peak, "bytes": int(ls.logits.nbytes),
                      "rows": len(curve), "source": source}))


def measure_memory(tmp: Path, n: int, k: int, seed: int) -> str:
    folder = tmp / "memory"
    folder.mkdir()
    write_logits(folder, n, k, 10, seed)
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(folder)],
        check=True, capture_output=True, text=True, env=dict(os.environ),
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    grow = (m["peak"] - m["before"]) / m["bytes"]
    return (
        f"peak memory of run_sweep on {n} x {k} x 10 float16 ({m['bytes'] / 2**20:.0f} MiB of "
        f"logits, C=10): grew by {grow:.2f} x the logits' bytes over the resident set before "
        f"the sweep (peak {m['peak'] / 2**20:.0f} MiB = {m['peak'] / m['bytes']:.2f} x, "
        f"interpreter and libraries included; {m['source']})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50_000, help="samples (default 50,000)")
    ap.add_argument("--exits", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing; the best counts")
    ap.add_argument("--memory-samples", type=int, default=1_000_000,
                    help="samples of the peak-memory sweep (10 classes); 0 skips it")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    n, k, c = args.samples, args.exits, args.classes
    with tempfile.TemporaryDirectory(prefix="eebench-bench-") as tmp:
        # memory first, while this process is small (a child may inherit its ru_maxrss)
        memory = measure_memory(Path(tmp), args.memory_samples, k, args.seed) \
            if args.memory_samples > 0 else "peak memory: skipped"
        folder = Path(tmp) / "speed"
        folder.mkdir()
        write_logits(folder, n, k, c, args.seed)
        ls = open_set(folder)
        mb = ls.logits.nbytes / 2**20
        print(f"setting: {n} samples, {k} exits, {c} classes, float16 memory map "
              f"({mb:.0f} MiB), blocks of {block_rows(k, c)} samples, seed {args.seed}; "
              f"best of {args.repeat} runs each")
        streaming_pass(ls)  # warm the page cache
        t_pass = best_of(lambda: streaming_pass(ls), args.repeat)
        t_bytes = best_of(lambda: byte_pass(ls), args.repeat)
        print(f"{'streaming pass (read, float32 sum):':44s}{t_pass:8.3f} s  (1.00 x)")
        print(f"{'byte pass (same bytes summed as int16):':44s}{t_bytes:8.3f} s  "
              f"({t_bytes / t_pass:.2f} x)")
        for name in SCORE_NAMES:
            t = best_of(lambda name=name: fresh_scores(ls, name), args.repeat)
            print(f"{name + ' + predictions:':44s}{t:8.3f} s  ({t / t_pass:.2f} x the pass)")
        try:
            import torch

            torch.set_num_threads(1)
            t_torch = best_of(lambda: torch_softmax_max(ls), args.repeat)
            print(f"{'torch.softmax(...).max(-1), 1 thread:':44s}{t_torch:8.3f} s  "
                  f"({t_torch / t_pass:.2f} x the pass)")
        except ImportError:
            print("torch.softmax reference: torch is not installed")

        def public() -> None:
            run_sweep(ls, val_fraction=0.5, seed=0, score="confidence", grid="msdnet")

        public()  # imports pandas and the rest once, outside the timing
        t_bare = best_of(lambda: bare_sweep(ls), args.repeat)
        t_sweep = best_of(public, args.repeat)
        print(f"{'bare path (split, scores once, solve):':44s}{t_bare:8.3f} s")
        print(f"{'run_sweep (msdnet grid, 39 points):':44s}{t_sweep:8.3f} s  "
              f"({t_sweep / t_bare:.2f} x the bare path)")
        print(memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
