"""Extraction against a bare forward loop of the same batches, and torchrun 2 processes
against 1, all measured in one run.

1. Overhead: a multi-exit model over N seeded random images, batch B. The bare loop runs
   the model on the same batches and keeps the logits in memory; extraction does the same
   through a DataLoader, writes chunks, checksums and commits a store entry. Prints both
   times and the ratio (target: at most 1.05).
2. Scale-out: ``eebench extract`` of a small digits suite in one process and under
   ``torchrun --nproc_per_node 2`` (gloo, one thread per process), into fresh stores;
   prints both wall times and checks that the entries' checksums are equal.

    python benchmarks/bench_extract.py
    python benchmarks/bench_extract.py --samples 512     # quicker look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eebench.store import LogitStore, extract_logits
from eebench.zoo import create_model

SUITE = """
[suite]
name = "bench"
[data]
dataset = "digits"
splits = {{ train = 0.2, val = 0.4, test = 0.4 }}
batch_size = 32
chunk_size = 96
[[models]]
name = "{model}"
label = "m"
overrides = {{ num_classes = 10 }}
[[policies]]
score = "confidence"
"""


class Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def overhead(name: str, n: int, batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn((n, *model.config.input_size), generator=torch.Generator().manual_seed(0))

    def bare() -> None:
        out = []
        with torch.no_grad():
            for s in range(0, n, batch):
                out.append(torch.stack(model(x[s : s + batch]), 1).numpy())
        np.concatenate(out)

    def extract() -> None:
        with tempfile.TemporaryDirectory() as d:
            extract_logits(model, Images(x), LogitStore(d), {"model": name, "bench": True},
                           batch_size=batch, chunk_size=1024, progress=False)

    bare()  # warm-up
    t_bare, t_ext = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine
        t = time.perf_counter()
        bare()
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        extract()
        t_ext.append(time.perf_counter() - t)
    b, e = float(np.median(t_bare)), float(np.median(t_ext))
    print(f"extraction overhead ({name}, {n} images, batch {batch}): bare loop {b:.2f} s, "
          f"extract_logits {e:.2f} s, ratio {e / b:.3f}")


def scale_out(model: str) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EEBENCH_BACKEND": "gloo"}
    with tempfile.TemporaryDirectory() as d:
        suite = Path(d) / "s.toml"
        suite.write_text(SUITE.format(model=model))
        runs = {"1 process": [sys.executable, "-m", "eebench"],
                "torchrun, 2 processes": [str(torchrun), "--standalone", "--nproc_per_node", "2",
                                          "-m", "eebench"]}
        stores = {}
        for label, cmd in runs.items():
            store = Path(d) / label.replace(" ", "_").replace(",", "")
            t = time.perf_counter()
            subprocess.run([*cmd, "extract", str(suite), "--store", str(store)], env=env,
                           check=True, capture_output=True)
            print(f"eebench extract, {label}: {time.perf_counter() - t:.1f} s wall")
            stores[label] = LogitStore(store)
        a, b = stores.values()
        same = a.keys() == b.keys() and all(
            a.show(k)["files"] == b.show(k)["files"] for k in a.keys())
        print(f"entries identical (checksums): {same}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="msdnet_cifar10_budget")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    overhead(args.model, args.samples, args.batch_size, args.repeats)
    scale_out(args.model)


if __name__ == "__main__":
    main()
