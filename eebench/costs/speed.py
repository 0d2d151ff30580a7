"""What early exit really buys: latency and throughput measured beside the MACs that predicted them.

Every speed-up in the papers is simulated from MACs on cached outputs. A network
really exits only when the computation stops: at batch 1 by stopping the
``iter_exits`` generator, and with a batch by shedding the rows of samples that
have left (the keep-mask protocol of ``MultiExitModel.iter_exits``). This module
runs a model that way on real inputs, at an operating point (thresholds on a
score), and reports next to each other:

- the speed-up predicted from the exits' cumulative MACs (last exit's cost over
  the mean cost of the exits the samples take),
- the measured speed-up (time of the full network over time with real exits, on
  the same samples, same batch size), and their ratio, "realised";
- whether every sample left where the policy simulated on the full run's logits
  sends it (exit agreement: 1.0 for the same thresholds and weights, up to a score
  tied with its threshold within float rounding, which is reported).

Measurement follows the careful peers: warm-up runs, repeats (the median is
kept), the same samples for every configuration, inputs on the device before the
clock starts (data loading excluded), ``torch.inference_mode``, a recorded and
settable thread count, CUDA events with synchronisation on a GPU, and optional
``torch.compile`` and channels-last. The hardware is recorded with the numbers.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from eebench.zoo.base import MultiExitModel

#: Columns of one speed row (one model, one operating point, one batch size).
SPEED_COLUMNS = (
    "batch_size", "samples", "predicted_speedup", "measured_speedup", "realised",
    "exit_agreement", "throughput", "full_throughput", "latency_mean_ms", "latency_p50_ms",
    "latency_p95_ms", "latency_p99_ms", "full_latency_ms", "runner_overhead", "mean_cost",
    "full_cost", "exit_fractions",
)


# ---------------------------------------------------------------- the exit rule


@dataclass
class ExitRule:
    """When a sample leaves: ``score(calibrated logits at exit k) >= thresholds[k]``.

    The same function decides on the live logits of a real run and on the cached
    logits of the simulation, so the two can only disagree where the logits differ.
    ``temperatures`` (K,) apply per-exit temperature scaling before the score.
    """

    thresholds: np.ndarray
    score: str = "confidence"
    temperatures: np.ndarray | None = None

    def __post_init__(self) -> None:
        from eebench.policies.scores import get_score

        get_score(self.score)  # unknown names fail here, listing the known ones
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64).reshape(-1)
        if np.isnan(self.thresholds).any():
            raise DataError(f"thresholds must not be NaN, got {self.thresholds.tolist()}")
        if self.temperatures is not None:
            self.temperatures = np.asarray(self.temperatures, dtype=np.float64).reshape(-1)
            if not (np.isfinite(self.temperatures).all() and (self.temperatures > 0).all()):
                raise DataError(f"temperatures must be positive, got {self.temperatures.tolist()}")

    def scores(self, logits: np.ndarray, k: int) -> np.ndarray:
        """(n,) scores of the rows of exit k's logits (float32 as in the cache)."""
        from eebench.policies.scores import get_score, softmax_parts

        z = np.asarray(logits, dtype=np.float32)
        if self.temperatures is not None:
            z = z / np.float32(self.temperatures[k])
        probs, _ = softmax_parts(z, need_logp=False)
        return get_score(self.score)(probs)

    def exits_here(self, logits: np.ndarray, k: int) -> np.ndarray:
        return self.scores(logits, k) >= self.thresholds[k]

    def simulate(self, logits: np.ndarray) -> np.ndarray:
        """(N,) exit of every sample of cached logits (N, K, C): the first k whose score
        reaches its threshold, the last exit otherwise."""
        from eebench.policies.assignment import assign_exits

        s = np.stack([self.scores(logits[:, k], k) for k in range(logits.shape[1])], axis=1)
        return assign_exits(s, self.thresholds).astype(np.int64)


def thresholds_for_fractions(scores: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Thresholds (K,) that send ``fractions[k]`` of the samples to exit k on ``scores`` (N, K).

    Exit k takes the highest-scoring samples still in the network, as many as the
    cumulative fractions rounded to whole samples leave for it (so the counts add up to N). Each threshold sits halfway between the last score that exits and the next
    one, so that float rounding of a re-run cannot move a sample across it.
    """
    from eebench.policies.solvers import SENTINEL

    scores = np.asarray(scores, dtype=np.float64)
    n, k_exits = scores.shape
    f = np.asarray(list(fractions), dtype=np.float64)
    if f.shape != (k_exits,):
        raise DataError(f"{f.size} exit fractions for {k_exits} exits; give one per exit")
    if not (np.isfinite(f).all() and (f >= 0).all()) or abs(f.sum() - 1) > 1e-6:
        raise DataError(f"exit fractions must be >= 0 and sum to 1, got {f.tolist()}")
    counts = np.floor(np.cumsum(f) * n + 0.5).astype(np.int64)
    counts = np.diff(np.concatenate([[0], counts]))
    thresholds = np.full(k_exits, SENTINEL)
    remaining = np.arange(n)
    for k in range(k_exits - 1):
        s = scores[remaining, k]
        order = np.argsort(-s, kind="stable")
        take = int(counts[k])
        if take <= 0 or remaining.size == 0:
            continue
        take = min(take, remaining.size)
        low = s[order[take - 1]]
        nxt = s[order[take]] if take < remaining.size else -math.inf
        thresholds[k] = low if not math.isfinite(nxt) else (low + nxt) / 2 if nxt < low else low
        remaining = remaining[s < thresholds[k]]
    thresholds[-1] = -SENTINEL
    return thresholds


def rule_from_results(results_dir: str | os.PathLike[str], policy: str, point: float | None,
                      model: str | None = None) -> tuple[ExitRule, dict[str, Any]]:
    """The exit rule of one operating point of a fitted policy in a results folder.

    ``point`` is the ``param`` of the curve row (q, budget, threshold, ...); None lists
    the points. Returns the rule and a description (model, policy, param, test cost).
    """
    from pathlib import Path

    from eebench.report.index import load_results

    res = load_results(Path(results_dir))  # what load_results makes of it first
    curves = res.curves
    models = sorted(set(curves["model"]))
    if model is None:
        if len(models) != 1:
            raise DataError(f"{results_dir} holds models {models}; choose one (--results-model)")
        model = models[0]
    rows = curves[(curves["model"] == model) & (curves["policy"] == policy)]
    if rows.empty:
        known = sorted(set(curves.loc[curves["model"] == model, "policy"]))
        raise DataError(f"{results_dir}: no policy {policy!r} for model {model!r}; known: {known}")
    params = rows["param"].to_numpy(dtype=np.float64)
    if point is None or not np.isclose(params, point, rtol=1e-9, atol=0).any():
        listed = ", ".join(f"{p:g}" for p in params)
        raise DataError(f"{results_dir}: choose --point among the params of {policy!r}: {listed}")
    row = rows.iloc[int(np.flatnonzero(np.isclose(params, point, rtol=1e-9, atol=0))[0])]
    thresholds = json.loads(row["thresholds"])
    if any(t is None for t in thresholds):
        raise DataError(f"policy {policy!r} does not threshold a score (oracle or random); "
                        "real exits need a threshold policy")
    score, temps = _policy_score(res, policy, row)
    desc = {"model": model, "policy": policy, "param": float(row["param"]),
            "test_cost": float(row["test_cost"]), "test_acc": float(row["test_acc"])}
    return ExitRule(np.asarray(thresholds, dtype=np.float64), score, temps), desc


TIMED_SCORES = ("confidence", "entropy", "margin")
"""Scores a real-exit run computes from one exit's logits (the others need earlier exits)."""


def timing_problem(policy: Any) -> str | None:
    """Why a fitted policy cannot be timed with real exits, or None when it can.

    The runner decides at each exit from that exit's logits alone (with per-exit
    temperatures): ensembles, patience and Laplace need earlier exits' outputs or features
    at run time, which a timing would have to reproduce to be honest, so it refuses them
    instead of timing a different rule.
    """
    name = getattr(policy, "name", policy)
    if not getattr(policy, "solutions_", None) or not hasattr(policy, "score"):
        return (f"policy {name!r} has no fitted thresholds; speed needs a threshold policy "
                "(not oracle, random or eenet)")
    if policy.score not in TIMED_SCORES:
        return (f"policy {name!r} thresholds the {policy.score!r} score, which combines several "
                f"exits; real-exit timing supports {', '.join(TIMED_SCORES)}")
    cal = getattr(policy, "calibration_", None)
    if cal is not None and getattr(cal, "name", None) != "temperature":
        return (f"policy {name!r} uses the {getattr(cal, 'name', cal)!r} calibration, which needs "
                "earlier exits' outputs or features at run time; real-exit timing supports no "
                "calibration or temperature")
    return None


def _policy_score(res: Any, policy: str, row: Any) -> tuple[str, np.ndarray | None]:
    """The score and fitted temperatures behind a policy label of a results folder."""
    from eebench.policies.scores import list_scores

    score = None
    try:
        suite = json.loads((res.folder / "suite.resolved.json").read_text())
        from eebench.policies.spec import policy_label

        for p in suite.get("policies", []):
            if policy_label(p) == policy:
                score = p.get("score")
    except (OSError, ValueError, KeyError):
        pass
    if score is None:
        head = policy.split("/", 1)[0].split("+", 1)[0]
        if head not in list_scores():
            raise DataError(f"cannot tell which score policy {policy!r} thresholds")
        score = head
    if score not in TIMED_SCORES:
        raise DataError(f"policy {policy!r} thresholds the {score!r} score, which combines "
                        f"several exits; real-exit timing supports {', '.join(TIMED_SCORES)}")
    temps = None
    cal = row.get("calibration") if hasattr(row, "get") else None
    if isinstance(cal, str) and cal.strip():
        info = json.loads(cal)
        if info.get("name", "temperature") != "temperature":
            raise DataError(f"policy {policy!r} uses the {info.get('name')!r} calibration, which "
                            "needs earlier exits' outputs or features at run time; real-exit "
                            "timing supports no calibration or temperature")
        if info.get("temperatures"):
            temps = np.asarray(info["temperatures"], dtype=np.float64)
    return score, temps


# ---------------------------------------------------------------- measuring


def hardware(device: str) -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, threads, GPU name."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    out: dict[str, Any] = {
        "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": device, "torch": torch.__version__, "platform": platform.platform(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def _clock(device: str) -> Callable[[Callable[[], Any]], float]:
    """Seconds one call takes; CUDA events and synchronisation on a GPU."""
    import torch

    if device.startswith("cuda"):
        def timed(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        return timed

    def timed_cpu(fn: Callable[[], Any]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return timed_cpu


@dataclass
class SpeedReport:
    """Measured speed of one model at one operating point, one row per batch size."""

    model: str
    rows: list[dict[str, Any]]
    exit_latency_ms: list[float]
    exit_costs: list[float]
    exit_names: list[str]
    hardware: dict[str, Any]
    settings: dict[str, Any]
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=list(SPEED_COLUMNS))
        df.insert(0, "model", self.model)
        for k, v in self.settings.items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                df[k] = v
        df["hardware"] = json.dumps(self.hardware, sort_keys=True)
        return df


def measure_speed(
    model: MultiExitModel,
    inputs: torch.Tensor,
    rule: ExitRule | None = None,
    *,
    exit_fractions: Sequence[float] | None = None,
    costs: Sequence[float],
    batch_sizes: Sequence[int] = (1, 64),
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 2,
    repeats: int = 3,
    compile: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> SpeedReport:
    """Time ``model`` on ``inputs`` (N images) with real exits at one operating point.

    The operating point is ``rule`` (thresholds on a score), or ``exit_fractions``
    (one per exit, summing to 1) for which confidence thresholds are chosen on these
    same inputs. ``costs`` are the cumulative per-exit costs (MACs) that predict the
    speed-up. Per batch size B the N samples run in batches of B, once through the
    full network (every exit computed, nobody leaves) and once with real exits.
    """
    import torch

    from eebench.zoo.base import run_exits

    n = int(inputs.shape[0])
    k_exits = model.num_exits
    costs_arr = np.asarray(costs, dtype=np.float64)
    if costs_arr.shape != (k_exits,):
        raise DataError(f"{costs_arr.size} costs for a model with {k_exits} exits")
    sizes = [int(b) for b in batch_sizes]
    if n == 0 or not sizes or any(b < 1 for b in sizes):
        raise DataError(f"need inputs and positive batch sizes, got {n} inputs, batch sizes {sizes}")
    if (rule is None) == (exit_fractions is None):
        raise DataError("give exactly one operating point: an exit rule (thresholds) or exit fractions")
    if warmup < 0 or repeats < 1:
        raise DataError(f"warmup must be >= 0 and repeats >= 1, got {warmup} and {repeats}")
    threads_before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise DataError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    model = model.eval().to(device)
    x_all = inputs.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    if compile:
        for child in model.children():  # iter_exits is a generator: compile its pieces
            child.compile(dynamic=True)
    timed = _clock(device)
    try:
        with torch.inference_mode():
            ref = _full_logits(model, x_all, max(sizes))
            if rule is None:
                rule = ExitRule(np.zeros(k_exits))  # confidence; thresholds chosen below
                s = np.stack([rule.scores(ref[:, k], k) for k in range(k_exits)], axis=1)
                assert exit_fractions is not None  # the one operating point given (checked above)
                rule.thresholds = thresholds_for_fractions(s, exit_fractions)
            if rule.thresholds.shape[0] == k_exits - 1:
                rule.thresholds = np.append(rule.thresholds, -np.inf)
            if rule.thresholds.shape[0] != k_exits:
                raise DataError(f"{rule.thresholds.shape[0]} thresholds for {k_exits} exits")
            simulated = rule.simulate(ref)
            mean_cost = float(costs_arr[simulated].mean())
            predicted = float(costs_arr[-1] / mean_cost)
            fractions = np.bincount(simulated, minlength=k_exits) / n
            exit_ms = _exit_latency(model, x_all, timed, warmup, repeats)
            rows, disagreements = [], []
            from tqdm.auto import tqdm

            for b in tqdm(sizes, desc=f"timing {len(sizes)} batch sizes", unit="batch size",
                          disable=not progress, leave=False):
                row, bad = _one_batch_size(model, x_all, b, rule, simulated, ref, timed,
                                           warmup, repeats, run_exits)
                row.update({
                    "predicted_speedup": predicted,
                    "realised": row["measured_speedup"] / predicted,
                    "mean_cost": mean_cost, "full_cost": float(costs_arr[-1]),
                    "exit_fractions": json.dumps([round(float(v), 6) for v in fractions]),
                })
                rows.append(row)
                disagreements += bad
            measured_on = hardware(device)
    finally:
        torch.set_num_threads(threads_before)
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    settings = {"device": device, "threads": threads or threads_before, "warmup": warmup,
                "repeats": repeats, "compile": compile, "channels_last": channels_last,
                "score": rule.score, "thresholds": json.dumps(rule.thresholds.tolist())}
    return SpeedReport(name, rows, exit_ms, costs_arr.tolist(), list(model.exits),
                       measured_on, settings, disagreements)


def _full_logits(model: Any, x: torch.Tensor, batch: int) -> np.ndarray:
    """(N, K, C) float32 logits of every exit, the simulation's cache."""
    import torch

    parts = [torch.stack(model(x[s : s + batch]), dim=1).float().cpu().numpy()
             for s in range(0, x.shape[0], batch)]
    return np.concatenate(parts)


def _median_time(timed: Callable, fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    return float(np.median([timed(fn) for _ in range(repeats)]))


def _exit_latency(model: Any, x: torch.Tensor, timed: Callable, warmup: int,
                  repeats: int) -> list[float]:
    """Cumulative latency (ms) of each exit at batch 1, averaged over up to 16 samples."""
    m = min(16, x.shape[0])
    out = []
    for k in range(model.num_exits):
        def run(k: int = k) -> None:
            for i in range(m):
                model.forward_until(x[i : i + 1], k)
        out.append(1000 * _median_time(timed, run, warmup, repeats) / m)
    return out


def _one_batch_size(model: Any, x: torch.Tensor, b: int, rule: ExitRule, simulated: np.ndarray,
                    ref: np.ndarray, timed: Callable, warmup: int, repeats: int,
                    run_exits: Callable) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import torch

    n = x.shape[0]
    batches = [(s, min(n, s + b)) for s in range(0, n, b)]
    real = np.full(n, -1, dtype=np.int64)

    def decide(k: int, logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(rule.exits_here(logits.float().cpu().numpy(), k)).to(logits.device)

    def full() -> None:
        for s, e in batches:
            model(x[s:e])

    def one_batch(s: int, e: int) -> None:
        exits, _ = run_exits(model, x[s:e], decide)
        real[s:e] = exits.cpu().numpy()

    def early() -> list[float]:  # seconds per batch
        return [timed(lambda s=s, e=e: one_batch(s, e)) for s, e in batches]

    def bare() -> None:  # the same work with every exit known in advance
        if b == 1:
            for i in range(n):
                model.forward_until(x[i : i + 1], int(simulated[i]))
        else:
            for s, e in batches:
                ex = torch.from_numpy(simulated[s:e]).to(x.device)
                run_exits(model, x[s:e], lambda k, _lg, alive, ex=ex: ex[alive] == k)

    t_full = _median_time(timed, full, warmup, repeats)
    for _ in range(warmup):
        early()
    runs = [early() for _ in range(repeats)]
    totals = [sum(r) for r in runs]
    best = runs[int(np.argsort(totals)[len(totals) // 2])]
    t_early = float(np.median(totals))
    t_bare = _median_time(timed, bare, warmup, repeats)
    lat = 1000 * np.asarray(best)  # per sample at batch 1, per batch otherwise
    agree = real == simulated
    bad = []
    for i in np.flatnonzero(~agree)[:20]:
        k = int(min(real[i], simulated[i]))
        score = float(rule.scores(ref[i : i + 1, k], k)[0])
        bad.append({"batch_size": b, "sample": int(i), "real_exit": int(real[i]),
                    "simulated_exit": int(simulated[i]), "score": score,
                    "threshold": float(rule.thresholds[k])})
    row = {
        "batch_size": b, "samples": n,
        "measured_speedup": t_full / t_early,
        "exit_agreement": float(agree.mean()),
        "throughput": n / t_early, "full_throughput": n / t_full,
        "latency_mean_ms": float(lat.mean()), "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p95_ms": float(np.percentile(lat, 95)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "full_latency_ms": 1000 * t_full / len(batches),
        "runner_overhead": t_early / t_bare - 1,
    }
    return row, bad


# ---------------------------------------------------------------- from names (CLI, suites)


def model_inputs(model: MultiExitModel, samples: int, *, data: str | None = None,
                 data_params: dict[str, Any] | None = None, seed: int = 0) -> torch.Tensor:
    """``samples`` images for timing: the first ones of a data set's test split with the
    model's evaluation transform, or seeded Gaussian images of the model's input size
    (fine for timing; exit fractions then come from the operating point)."""
    import torch

    if samples < 1:
        raise DataError(f"samples must be >= 1, got {samples}")
    if data is None:
        g = torch.Generator().manual_seed(seed)
        return torch.randn((samples, *model.config.input_size), generator=g)
    from eebench.data import create_dataset

    view = create_dataset(data, "test", seed=seed, config=model.config, **(data_params or {}))
    if len(view) < samples:
        raise DataError(f"{data} has {len(view)} test images; ask for at most that many samples")
    return torch.stack([view[i][0] for i in range(samples)])


def speed_of_model(
    name: str,
    *,
    checkpoint: str | None = None,
    overrides: dict[str, Any] | None = None,
    thresholds: Sequence[float] | None = None,
    exit_fractions: Sequence[float] | None = None,
    results: str | os.PathLike[str] | None = None,
    policy: str | None = None,
    point: float | None = None,
    results_model: str | None = None,
    score: str = "confidence",
    convention: str = "fvcore",
    samples: int = 64,
    data: str | None = None,
    data_params: dict[str, Any] | None = None,
    seed: int = 0,
    **options: Any,
) -> SpeedReport:
    """``measure_speed`` for a registered model, the API behind ``eebench speed``.

    The operating point is one of: ``thresholds`` (one per exit but the last, on
    ``score``), ``exit_fractions``, or a fitted policy of a results folder (``results``,
    ``policy``, ``point`` = the curve row's param). Costs are counted with
    ``convention`` (default fvcore: the cumulative work every exit really runs).
    ``options`` go to ``measure_speed`` (batch_sizes, device, threads, ...).
    """
    from eebench.costs import count_costs
    from eebench.zoo import create_model

    given = [thresholds is not None, exit_fractions is not None, results is not None]
    if sum(given) != 1:
        raise DataError("give exactly one operating point: --thresholds, --exit-fractions, or "
                        "--results with --policy and --point")
    if results is not None and policy is None:
        raise DataError("--results needs --policy (a policy label of its curves) and --point")
    model = create_model(name, checkpoint=checkpoint, **(overrides or {}))
    rule = None
    if thresholds is not None:
        t = np.asarray(list(thresholds), dtype=np.float64)
        if t.shape[0] == model.num_exits:
            t = t[:-1]
        if t.shape[0] != model.num_exits - 1:
            raise DataError(f"{t.shape[0]} thresholds for {model.num_exits} exits; give one per "
                            "exit but the last")
        rule = ExitRule(np.append(t, -np.inf), score)
    elif results is not None:
        assert policy is not None  # --results comes with --policy (checked above)
        rule, _ = rule_from_results(results, policy, point, results_model)
    costs = count_costs(model, convention=convention, cross_check=False)
    x = model_inputs(model, samples, data=data, data_params=data_params, seed=seed)
    return measure_speed(model, x, rule, exit_fractions=exit_fractions, costs=costs.macs,
                         **options)


def speed_of_policy(
    model: MultiExitModel,
    inputs: torch.Tensor,
    costs: Sequence[float],
    policy: Any,
    *,
    points: int = 3,
    **options: Any,
) -> pd.DataFrame:
    """Speed rows of a fitted threshold policy at ``points`` of its operating points, evenly
    spread along its curve (the cheapest and the dearest included); columns as
    ``SpeedReport.to_frame`` plus ``param`` (the solver's parameter of the point)."""
    import pandas as pd

    problem = timing_problem(policy)
    if problem:
        raise DataError(problem)
    sols = list(policy.solutions_)
    if points < 1:
        raise DataError(f"points must be >= 1, got {points}")
    cal = getattr(policy, "calibration_", None)
    temps = getattr(cal, "temperatures_", None)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(sols) - 1, min(points, len(sols)))})
    frames = []
    for i in picks:
        rule = ExitRule(sols[i].thresholds, policy.score, temps)
        df = measure_speed(model, inputs, rule, costs=costs, **options).to_frame()
        df.insert(1, "param", float(sols[i].param))
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def published_throughput(name: str) -> pd.DataFrame:
    """The papers' throughput rows of zoo model ``name`` (images/s, hardware in the note),
    to read beside a measurement; empty where none is published or the folder is absent."""
    import pandas as pd

    from eebench.report.published import load_published

    try:
        rows = load_published()
    except FileNotFoundError:
        return pd.DataFrame()
    return rows[(rows["setting"] == "throughput") & (rows["zoo_model"] == name)]
