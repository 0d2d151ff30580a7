"""Time how fast the cache-only commands of ``eebench`` start, against a bare Python start.

Setting: the venv's console script (``eebench`` next to ``sys.executable``, as a user runs
it) and ``sys.executable -c pass``, each run ``--runs`` times, the commands taking turns so
that a busy moment of a shared machine hits all of them alike; the median of each is
kept. ``store ls`` reads a fresh store of ``--entries`` small entries (plus one broken
entry, which it reports). Python's bytecode is cached in a temporary folder
(``PYTHONPYCACHEPREFIX``) and every command runs once before timing, so each start reads
compiled modules as an installed package does; ``--no-bytecode-cache`` keeps the caller's
environment instead (with ``PYTHONDONTWRITEBYTECODE`` every eebench module is compiled at
every start). Target: every command within 2x of ``python -c pass``.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --runs 41     # a steadier median on a busy machine
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 2.0


def make_store(root: Path, entries: int) -> None:
    """``entries`` small imported entries, each named, and one key folder without a manifest."""
    from eebench.store import LogitStore
    from eebench.store.formats import import_npz

    store = LogitStore(root)
    rng = np.random.default_rng(0)
    for i in range(entries):
        path = root.parent / f"cache{i}.npz"
        np.savez(path, logits=rng.normal(size=(3, 16, 5)).astype(np.float32),
                 labels=rng.integers(0, 5, 16))
        import_npz(store, path, costs=[1.0, 2.0, 3.0], name=f"entry{i}")
    (root / ("f" * 64)).mkdir()


def commands(eebench: str, store: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "eebench --version": [eebench, "--version"],
        "eebench --help": [eebench, "--help"],
        "eebench sweep --help": [eebench, "sweep", "--help"],
        "eebench report --help": [eebench, "report", "--help"],
        "eebench store ls": [eebench, "store", "ls", "--store", str(store)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="timed runs of each command")
    ap.add_argument("--entries", type=int, default=3, help="entries in the listed store")
    ap.add_argument("--eebench", default=str(Path(sys.executable).parent / "eebench"),
                    help="the console script (default: the one next to this Python)")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="run with the caller's environment, as it is")
    args = ap.parse_args()
    if args.runs < 1 or args.entries < 0:
        raise ValueError("--runs must be at least 1 and --entries at least 0")
    if not Path(args.eebench).is_file():
        raise ValueError(f"no console script at {args.eebench}; install eebench (pip install -e .) "
                         "or give --eebench PATH")

    with tempfile.TemporaryDirectory(prefix="eebench-startup-") as tmp:
        store = Path(tmp) / "store"
        make_store(store, args.entries)
        env = dict(os.environ)
        env.pop("EEBENCH_STORE", None)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        cmds = commands(args.eebench, store)
        for label, cmd in cmds.items():  # warm-up: fills the bytecode cache, checks each runs
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"{label} failed (status {res.returncode}): {res.stderr.strip()}")
        times: dict[str, list[float]] = {label: [] for label in cmds}
        for _ in range(args.runs):
            for label, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
                times[label].append(time.perf_counter() - t0)

    base = statistics.median(times["python -c pass"])
    cache = "off (caller's environment)" if args.no_bytecode_cache else "cached"
    print(f"median of {args.runs} runs; bytecode {cache}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<24} {'median ms':>10} {'ratio':>7}  target <= {TARGET:g}x")
    for label, ts in times.items():
        med = statistics.median(ts)
        ratio = med / base
        verdict = "" if label == "python -c pass" else ("ok" if ratio <= TARGET else "OVER")
        print(f"{label:<24} {1000 * med:>10.1f} {ratio:>6.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
