"""Numbers that summarise accuracy-cost curves, with bootstrap confidence intervals.

Curves are compared on what a reader of a paper looks for: the mean accuracy
over a common cost range (area under the curve divided by the range width),
the accuracy at given costs, and the cost at which a policy first matches the
full model (the static last exit), reported as "x times fewer FLOPs".

Intervals come from a percentile bootstrap over *test samples* with each
operating point's exit assignment held fixed (the thresholds were fit on
validation and do not change). Every policy sees the same resamples (a paired
bootstrap), and per-resample accuracy and cost of all points are one matrix
product of resample counts with per-sample hit and cost matrices.

Output is long format, one row per (policy, metric[, cost]): policy, metric,
at_cost, value, ci_low, ci_high, unit, interpolated, note, then the paired
comparison that lets a table call a policy "best" only when the data say so:
diff_ref (the policy compared with: the best policy of that metric by its
estimate, or the runner-up for the best itself; the oracle, which knows the
labels, is never a reference), diff_low and diff_high (the bootstrap interval of
value minus diff_ref's value over the same resamples). Two policies whose
intervals overlap can still differ reliably, and two whose intervals barely
separate may not: the paired difference answers the question directly.

Then what a program needs without reading the prose of ``note`` (which is for
people and may change wording): policy_kind (learned, oracle, random or static:
the policy object's ``kind``; empty when only bare operating points were given),
cost_lo and cost_hi (the cost range the value is computed over: the common range
of mean_accuracy, lo == hi == at_cost for accuracy_at_cost, NaN where no range
applies), and how the interval was made: ci_level, n_boot (resamples behind
ci_low..ci_high and diff_low..diff_high; 0: no interval) and boot_seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError
from eebench.policies.policy import BasePolicy, OperatingPoint
from eebench.policies.scores import correctness
from eebench.store.logitset import check_logitset

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet

_BOOT_ELEMENTS = 1 << 23
# metric -> is a higher value better (for choosing the reference of the paired differences)
HIGHER_IS_BETTER = {
    "mean_accuracy": True,
    "accuracy_at_cost": True,
    "cost_to_match_last_exit": False,
    "speedup_vs_last_exit": True,
}
SUMMARY_COLUMNS = [
    "policy", "metric", "at_cost", "value", "ci_low", "ci_high", "unit", "interpolated", "note",
    "diff_ref", "diff_low", "diff_high",
    "policy_kind", "cost_lo", "cost_hi", "ci_level", "n_boot", "boot_seed",
]


def bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resample counts of ``n`` test samples, ``n_boot`` resamples in all, as (b, n) float64
    blocks of at most ``_BOOT_ELEMENTS`` entries.

    The one source of resamples of the evaluation: the same ``(n, n_boot, seed)`` gives
    the same resamples here, in the curves' accuracy bands and in the summaries, so a
    band and an interval of the same model describe the same bootstrap. ``w @ hits / n``
    is the accuracy of every resample at once.
    """
    rng = np.random.default_rng(seed)
    step = max(1, _BOOT_ELEMENTS // max(1, n))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draw = rng.integers(0, n, size=(b, n))
        w = np.bincount((draw + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
        yield w.reshape(b, n).astype(np.float64)


def _xy(cost: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Curve points sorted by cost; points of equal cost are averaged."""
    x, inv = np.unique(np.asarray(cost, dtype=np.float64), return_inverse=True)
    y = np.bincount(inv, weights=np.asarray(acc, dtype=np.float64)) / np.bincount(inv)
    return x, y


def mean_accuracy(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Area under the piecewise-linear curve over [lo, hi] divided by hi - lo."""
    if hi <= lo:
        return float(np.interp(lo, x, y))
    xs = np.concatenate([[lo], x[(x > lo) & (x < hi)], [hi]])
    ys = np.interp(xs, x, y)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / (hi - lo))


def accuracy_at(x: np.ndarray, y: np.ndarray, cost: float) -> float:
    """Linear interpolation of the curve at ``cost``; NaN outside the curve's cost range."""
    if cost < x[0] or cost > x[-1]:
        return float("nan")
    return float(np.interp(cost, x, y))


def cost_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Cost where the curve (in cost order) first reaches ``target``; NaN if it never does."""
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def percentile_interval(stats: np.ndarray, ci: float) -> tuple[float, float]:
    """The central ``ci`` percentile interval of the finite values of ``stats``."""
    return _ci(stats, ci)


def _ci(stats: np.ndarray, ci: float) -> tuple[float, float]:
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(lo), float(hi)


def _point_matrices(
    pts: Sequence[OperatingPoint], correct: np.ndarray, costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, P) hit and cost matrices: per sample, at the exit each point sends it to."""
    n = correct.shape[0]
    rows = np.arange(n)
    hits = np.empty((n, len(pts)))
    cost = np.empty((n, len(pts)))
    for j, pt in enumerate(pts):
        ex = np.asarray(pt.exits, dtype=np.int64)
        if ex.shape != (n,):
            raise InputError(f"operating point {j} has {ex.size} exits for {n} test samples")
        hits[:, j] = correct[rows, ex]
        cost[:, j] = costs[ex]
    return hits, cost


@dataclass(frozen=True)
class MetricSpec:
    """What one summary row measures, besides its value: the metric, the cost it is read at
    (NaN unless a point metric), its unit, whether the value is interpolated, the sentence a
    reader sees, and the cost range the value is computed over (``cost_lo == cost_hi`` for
    a point metric; NaN where no cost range applies)."""

    metric: str
    at_cost: float
    unit: str
    interpolated: bool
    note: str
    cost_lo: float
    cost_hi: float


@dataclass(frozen=True)
class LastExit:
    """The target of "cost to match the full model": the last exit's test accuracy and
    cost."""

    accuracy: float
    cost: float


def summarize(
    curve: pd.DataFrame,
    anytime: pd.DataFrame | None = None,
    *,
    cost_range: tuple[float, float] | None = None,
    at_costs: Sequence[float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    test: LogitSet | None = None,
    points: Mapping[str, Sequence[OperatingPoint] | BasePolicy] | None = None,
    ci: float = 0.95,
    kinds: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Summary metrics per policy of a curve (one or more policies, as from budgeted_curve).

    - ``cost_range``: range of the mean-accuracy metric; default: the cost
      range common to every policy with at least two points.
    - ``at_costs``: costs at which to read accuracy off each test curve.
    - target for "cost to match": the last row of ``anytime`` (top1, cost) on
      the test set, else the last exit of ``test``.
    - bootstrap: needs ``test`` and ``points``, mapping policy names (as in
      ``curve.policy``) to their test operating points in curve-row order, or
      to the fitted policy (then applied to ``test`` and scored on its own predictions,
      which differ from the raw exits' for calibrations such as MIE). Seeded by ``seed``.
    - ``kinds``: policy name -> what it is (learned, oracle, random, static); default: the
      curve's policy_kind column where it has one, else the ``kind`` of each fitted policy
      in ``points``. It fills the policy_kind column and keeps the oracle out of the
      paired references.
    """
    import pandas as pd

    names, acc, curves = _policy_curves(curve)
    if not 0 < ci < 1:
        raise InputError(f"ci must lie in (0, 1), got {ci}")
    lo, hi = _mean_accuracy_range(curves, cost_range)
    at_costs = [float(c) for c in (at_costs or [])]
    correct = None
    if test is not None:
        check_logitset(test, "test")
        correct = correctness(test)
    last = _last_exit(anytime, test, correct)
    if kinds is None and "policy_kind" in curve.columns:
        kinds = {str(p): k for p, k in zip(curve["policy"], curve["policy_kind"])
                 if isinstance(k, str) and k}
    kind_of = _policy_kinds(names, points, kinds)

    def metrics(x: np.ndarray, y: np.ndarray, target: float | None) -> list[float]:
        return _curve_metrics(x, y, (lo, hi), at_costs, target, last)

    boot: dict[str, np.ndarray] = {}
    if n_boot > 0 and test is not None and correct is not None and points:
        boot = _bootstrap_metrics(acc, test, correct, points, n_boot, seed, metrics,
                                  with_target=last is not None)
    values = {p: metrics(*curves[p], None if last is None else last.accuracy) for p in names}
    metric_names = ["mean_accuracy", *(["accuracy_at_cost"] * len(at_costs))]
    if last is not None:
        metric_names += ["cost_to_match_last_exit", "speedup_vs_last_exit"]
    refs = _paired_references(values, boot, metric_names, kind_of)
    rows: list[dict[str, Any]] = []
    for p in names:
        specs = _metric_specs(curves[p][0], values[p], (lo, hi), at_costs, last)
        rows += _summary_rows(p, kind_of[p], specs, values[p], boot, refs, ci=ci,
                              n_boot=n_boot, seed=seed)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _policy_curves(
    curve: pd.DataFrame,
) -> tuple[list[str], dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The policies of a curve frame in first-seen order, each one's test accuracy per row,
    and its test curve as (cost, accuracy) points sorted by cost (see ``_xy``)."""
    need = {"policy", "test_acc", "test_cost"}
    if not need <= set(curve.columns):
        raise InputError(f"curve lacks columns {sorted(need - set(curve.columns))}; use budgeted_curve")
    names = list(dict.fromkeys(curve["policy"]))
    acc = {p: curve.loc[curve.policy == p, "test_acc"].to_numpy(float) for p in names}
    cost = {p: curve.loc[curve.policy == p, "test_cost"].to_numpy(float) for p in names}
    return names, acc, {p: _xy(cost[p], acc[p]) for p in names}


def _mean_accuracy_range(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], cost_range: tuple[float, float] | None
) -> tuple[float, float]:
    """The cost range of the mean-accuracy metric: ``cost_range`` checked, else the range
    common to every curve of at least two points (NaN, NaN when there is none)."""
    if cost_range is not None:
        lo, hi = float(cost_range[0]), float(cost_range[1])
        if not lo <= hi:
            raise InputError(f"cost_range must be (low, high) with low <= high, got {cost_range}")
        return lo, hi
    spans = [(x[0], x[-1]) for x, _ in curves.values() if x.size >= 2]
    if not spans:
        return float("nan"), float("nan")
    lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
    if lo > hi:
        raise InputError(
            "the policies' cost ranges do not overlap: "
            + ", ".join(f"{p}: [{x[0]:g}, {x[-1]:g}]" for p, (x, _) in curves.items())
            + "; pass cost_range=(low, high)"
        )
    return lo, hi


def _last_exit(
    anytime: pd.DataFrame | None, test: LogitSet | None, correct: np.ndarray | None
) -> LastExit | None:
    """The last exit's test accuracy and cost: the last row of ``anytime``, else the last
    exit of ``test``; None when neither is given."""
    if anytime is not None and len(anytime):
        return LastExit(float(anytime.iloc[-1]["top1"]), float(anytime.iloc[-1]["cost"]))
    if correct is not None and test is not None:
        return LastExit(float(correct[:, -1].mean()), float(test.costs[-1]))
    return None


# the ``kind`` values of eebench.policies (BasePolicy.kind and the baselines)
_KINDS = ("learned", "oracle", "random", "static")


def _policy_kinds(
    names: Sequence[str],
    points: Mapping[str, Sequence[OperatingPoint] | BasePolicy] | None,
    kinds: Mapping[str, str] | None,
) -> dict[str, str]:
    """Policy name -> kind: ``kinds`` where given, else the ``kind`` of the fitted policy in
    ``points``, else "" (unknown: bare operating points say nothing of what made them)."""
    out = {}
    for p in names:
        given = (kinds or {}).get(p)
        pol = (points or {}).get(p)
        kind = given if given is not None else pol.kind if isinstance(pol, BasePolicy) else ""
        if kind and kind not in _KINDS:
            raise InputError(f"policy {p!r} has kind {kind!r}; a kind is one of {', '.join(_KINDS)}")
        out[p] = kind
    return out


def _curve_metrics(
    x: np.ndarray,
    y: np.ndarray,
    cost_range: tuple[float, float],
    at_costs: Sequence[float],
    target: float | None,
    last: LastExit | None,
) -> list[float]:
    """Every metric of one curve, in row order: mean accuracy over ``cost_range``, the
    accuracy at each of ``at_costs``, then (with a ``target`` accuracy) the cost to reach it
    and the last exit's cost over that cost."""
    lo, hi = cost_range
    vals = [mean_accuracy(x, y, lo, hi) if x.size >= 2 and np.isfinite(lo) else float("nan")]
    vals += [accuracy_at(x, y, c) for c in at_costs]
    if target is not None:
        assert last is not None  # a target is the last exit's accuracy, set with it
        m = cost_to_reach(x, y, target)
        vals += [m, last.cost / m if m > 0 else float("nan")]
    return vals


def _bootstrap_metrics(
    acc: Mapping[str, np.ndarray],
    test: LogitSet,
    correct: np.ndarray,
    points: Mapping[str, Sequence[OperatingPoint] | BasePolicy],
    n_boot: int,
    seed: int,
    metrics: Callable[[np.ndarray, np.ndarray, float | None], list[float]],
    *,
    with_target: bool,
) -> dict[str, np.ndarray]:
    """Policy -> (n_boot, metrics) statistics of the policies in ``points`` (whose curve rows
    have test accuracies ``acc``, checked against the points) over test resamples shared by every policy
    (paired), each operating point's exits held fixed. ``with_target``: the cost to match
    the last exit is taken against each resample's own last-exit accuracy."""
    n = test.num_samples
    mats = {}
    for p, pts in points.items():
        if p not in acc:
            raise InputError(f"points given for {p!r}, which is not in the curve ({list(acc)})")
        corr = correct
        if isinstance(pts, BasePolicy):
            corr = pts.correct(test)  # the policy's own predictions (e.g. an ensemble's)
            pts = pts.apply(test)
        h, cm = _point_matrices(pts, corr, test.costs)
        if h.shape[1] != acc[p].size or not np.allclose(h.mean(axis=0), acc[p], rtol=0, atol=1e-9):
            raise InputError(
                f"the points given for {p!r} do not reproduce its curve rows on this test set "
                f"({h.shape[1]} points vs {acc[p].size} rows); pass the test operating points "
                f"of the same fitted policy, in curve order"
            )
        mats[p] = (h, cm)
    stats: dict[str, list[list[float]]] = {p: [] for p in mats}
    last = correct[:, -1].astype(np.float64)
    for w in bootstrap_weights(n, n_boot, seed):
        b = w.shape[0]
        target_b = w @ last / n if with_target else None
        for p, (h, cm) in mats.items():
            acc_b = w @ h / n
            cost_b = w @ cm / n
            for i in range(b):
                x, y = _xy(cost_b[i], acc_b[i])
                stats[p].append(metrics(x, y, None if target_b is None else target_b[i]))
    return {p: np.asarray(v, dtype=np.float64) for p, v in stats.items()}


def _metric_specs(
    x: np.ndarray,
    values: Sequence[float],
    cost_range: tuple[float, float],
    at_costs: Sequence[float],
    last: LastExit | None,
) -> list[MetricSpec]:
    """What each metric of one policy measures (in the order of ``_curve_metrics``), given
    its curve's sorted costs ``x`` and its metric ``values``."""
    lo, hi = cost_range
    area = x.size >= 2
    specs = [
        MetricSpec(
            "mean_accuracy", float("nan"), "accuracy", True,
            f"area under the test curve over cost [{lo:g}, {hi:g}] / width"
            if area else "single operating point: no area",
            lo if area else float("nan"), hi if area else float("nan"),
        )
    ]
    for c in at_costs:
        inside = x[0] <= c <= x[-1]
        exact = bool(np.any(x == c))
        specs.append(MetricSpec(
            "accuracy_at_cost", c, "accuracy", inside and not exact,
            "linear interpolation of the test curve"
            if inside else f"outside the curve's cost range [{x[0]:g}, {x[-1]:g}]",
            c, c,
        ))
    if last is not None:
        reached = np.isfinite(values[len(specs)])
        specs.append(MetricSpec(
            "cost_to_match_last_exit", float("nan"), "cost", True,
            f"first test cost reaching the last exit's accuracy {last.accuracy:.4f}"
            if reached else f"never reaches the last exit's accuracy {last.accuracy:.4f}",
            float("nan"), float("nan"),
        ))
        specs.append(MetricSpec(
            "speedup_vs_last_exit", float("nan"), "x", True,
            f"last exit cost {last.cost:g} / cost to match its accuracy",
            float("nan"), float("nan"),
        ))
    return specs


def bootstrap_note(ci: float, n_boot: int, seed: int) -> str:
    """The sentence that says how an interval was made (``n_boot == 0``: that there is none)."""
    if n_boot <= 0:
        return "no interval: pass test= and points= (and n_boot > 0) for a bootstrap"
    return f"{ci:.0%} percentile bootstrap, {n_boot} test resamples (seed {seed}), exits fixed per point"


def _summary_rows(
    policy: str,
    kind: str,
    specs: Sequence[MetricSpec],
    values: Sequence[float],
    boot: Mapping[str, np.ndarray],
    refs: Sequence[Mapping[str, str]],
    *,
    ci: float,
    n_boot: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One policy's summary rows: each metric's value, its bootstrap interval and the
    paired interval of its difference to its reference policy, with the row's schema
    columns (kind, cost range, how the interval was made)."""
    nan = float("nan")
    stats = boot.get(policy)
    drawn = n_boot if stats is not None else 0
    rows = []
    for j, spec in enumerate(specs):
        note = spec.note
        lo_ci, hi_ci = _ci(stats[:, j], ci) if stats is not None else (nan, nan)
        if stats is not None:
            finite = int(np.isfinite(stats[:, j]).sum())
            if 0 < finite < n_boot:
                note = f"{note}; defined in {finite} of {n_boot} resamples (interval over those)"
        ref = refs[j].get(policy, "")
        d_lo, d_hi = (
            _ci(stats[:, j] - boot[ref][:, j], ci) if ref and stats is not None else (nan, nan)
        )
        rows.append({
            "policy": policy,
            "metric": spec.metric,
            "at_cost": spec.at_cost,
            "value": values[j],
            "ci_low": lo_ci,
            "ci_high": hi_ci,
            "unit": spec.unit,
            "interpolated": spec.interpolated,
            "note": f"{note}; {bootstrap_note(ci, drawn, seed)}",
            "diff_ref": ref,
            "diff_low": d_lo,
            "diff_high": d_hi,
            "policy_kind": kind,
            "cost_lo": spec.cost_lo,
            "cost_hi": spec.cost_hi,
            "ci_level": ci,
            "n_boot": drawn,
            "boot_seed": seed,
        })
    return rows


def _paired_references(
    values: Mapping[str, list[float]],
    boot: Mapping[str, np.ndarray],
    metric_names: list[str],
    kinds: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """Per metric, policy -> the policy its paired difference is taken against.

    Only policies with bootstrap statistics and a finite estimate take part, never the
    oracle (by its kind; a policy of unknown kind named "oracle" counts as one). Every
    policy is compared with the best one (by estimate; the first in curve order on a tie),
    and the best with the runner-up, so that one row says whether the best is ahead by
    more than resampling noise.
    """
    kinds = kinds or {}

    def oracle(p: str) -> bool:
        kind = kinds.get(p, "")
        return kind == "oracle" if kind else str(p).strip().lower() == "oracle"

    refs: list[dict[str, str]] = []
    for j, metric in enumerate(metric_names):
        higher = HIGHER_IS_BETTER.get(metric, True)
        cands = [p for p in values if p in boot and not oracle(p) and np.isfinite(values[p][j])]
        ranked = sorted(cands, key=lambda p: -values[p][j] if higher else values[p][j])
        out: dict[str, str] = {}
        if len(ranked) >= 2:
            best = ranked[0]
            out = {p: best for p in ranked[1:]}
            out[best] = ranked[1]
        refs.append(out)
    return refs
