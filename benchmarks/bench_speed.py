"""Real early exit against its MACs prediction, at batch 1 and batch 64 (with compaction).

Random weights and seeded random images (timing does not depend on what the weights
learned); each model at an operating point whose mean cost is at most half its last
exit's, set by exit fractions. For every model and batch size the script prints the
speed-up the MACs predict, the speed-up measured, their ratio ("realised"), the exit
agreement with the simulated policy, and the runner's overhead over the same work
with every exit known in advance. All numbers of one run, on this machine.

    python benchmarks/bench_speed.py                     # MSDNet step 4 and DVT T2T-ViT-12
    python benchmarks/bench_speed.py --samples 32 --repeats 2   # quicker look
"""

from __future__ import annotations

import argparse

import torch

from eebench.costs import count_costs
from eebench.costs.speed import measure_speed, model_inputs
from eebench.zoo import create_model

CASES = {
    # cumulative GMACs 0.34/0.69/1.01/1.25/1.36: mean 0.67 at these fractions
    "msdnet_imagenet_step4": [0.5, 0.2, 0.1, 0.1, 0.1],
    # cumulative GMACs 0.47/1.46/3.50: mean 1.27
    "dvt_t2t_vit_12": [0.6, 0.2, 0.2],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default=",".join(CASES))
    args = p.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"{'model':24s} {'batch':>5s} {'predicted':>9s} {'measured':>8s} {'realised':>8s} "
          f"{'agree':>6s} {'overhead':>8s} {'img/s':>8s} {'full img/s':>10s}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        costs = count_costs(model, convention="fvcore", cross_check=False).macs
        x = model_inputs(model, args.samples, seed=0)
        report = measure_speed(model, x, exit_fractions=CASES[name], costs=costs,
                               batch_sizes=sizes, device=args.device, threads=args.threads,
                               warmup=args.warmup, repeats=args.repeats)
        for r in report.rows:
            print(f"{name:24s} {r['batch_size']:5d} {r['predicted_speedup']:9.2f} "
                  f"{r['measured_speedup']:8.2f} {r['realised']:8.2f} {r['exit_agreement']:6.3f} "
                  f"{100 * r['runner_overhead']:+7.1f}% {r['throughput']:8.1f} "
                  f"{r['full_throughput']:10.1f}")
        lat = ", ".join(f"{ms:.1f}" for ms in report.exit_latency_ms)
        gm = ", ".join(f"{c / 1e9:.3f}" for c in costs)
        print(f"  per-exit cumulative latency at batch 1 (ms): {lat}; GMACs: {gm}")
    print(f"hardware: {report.hardware}")


if __name__ == "__main__":
    main()
