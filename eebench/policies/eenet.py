"""EENet-style policy: learned exit scores, thresholds set per budget on those scores.

Ilhan et al. ("Adaptive Deep Neural Network Inference Optimization with EENet", WACV 2024,
arXiv:2301.07099; the facts below are from the authors' code, git-disl/EENet) replace the
hand-made confidence (max probability, entropy) by a small model trained on the validation
set's per-exit outputs. The policy has two parts:

Exit scoring (learned). For every exit k a two-layer perceptron predicts the probability
that exit k's prediction is right, from features of exits 0..k: each exit's maximum
probability, its normalised negative entropy ``1 + sum p log p / log C`` (the two
confidence features of the authors' code) and its top-1 minus top-2 margin, plus the share
of exits 0..k that agree with exit k's arg-max (their optional "vote" signal). Their scorer
also reads exit k's full probability vector and the earlier exits' learned scores; ours
reads the earlier exits' summaries instead, which keeps it independent of the number of
classes. The K heads are trained together on the validation labels, full batch, with
binary cross-entropy (unweighted: the authors weight each exit's term by its learned
assignment probability).

Exit assignment (thresholds on the learned scores). For each budget, the exact-quota rule
(``quota_thresholds(exact=True)``, the rule of the authors' threshold step: the
``floor(N p_k)`` best-scoring remaining samples exit at k) with the geometric exit
distribution ``p_k ~ q^k``, q bisected until the validation mean cost is at most the
budget (the bisection of ``QuotaSolver(exact=True).solve_budget``, run on exit counts).
The authors learn the exit distribution per budget with a second network (an assignment
head trained with a cost penalty); the geometric family is used here instead, so the
comparison with the MSDNet rule isolates what the learned scores add.

Training uses torch, imported inside ``fit`` only, in one thread and with its own seeded
generator, so a fit is repeatable on one machine; the learned weights are kept as numpy
arrays and ``apply`` needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError
from eebench.policies.assignment import assign_exits, exit_counts, mean_cost
from eebench.policies.grids import exit_distribution, get_grid
from eebench.policies.policy import BasePolicy, OperatingPoint, merge_budget_duplicates
from eebench.policies.scores import exit_correct, exit_predictions, exit_scores
from eebench.policies.solvers import SENTINEL, GeometricSolver, Solution, quota_thresholds
from eebench.store.logitset import check_logitset
from eebench.store.validate import check_budgets

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

Q_RANGE = (1e-4, 1e4)
BISECT_STEPS = 60
FEATURES_PER_EXIT = ("max_probability", "normalised_negative_entropy", "top2_margin")


def eenet_features(ls: LogitSet) -> np.ndarray:
    """(N, K, 3K + 1) float64 inputs of the K exit scorers.

    Row k holds the three confidence features of exits 0..k (zeros for later exits) and,
    in the last column, the share of exits 0..k whose arg-max equals exit k's.
    """
    n, k = ls.num_samples, ls.num_exits
    c = ls.num_classes
    per_exit = np.stack(
        [
            exit_scores(ls, "confidence").astype(np.float64),
            1.0 + exit_scores(ls, "entropy").astype(np.float64) / math.log(c) if c > 1
            else np.ones((n, k)),
            exit_scores(ls, "margin").astype(np.float64),
        ],
        axis=2,
    )  # (N, K, 3)
    pred = exit_predictions(ls)
    out = np.zeros((n, k, 3 * k + 1), dtype=np.float64)
    for j in range(k):
        out[:, j, : 3 * (j + 1)] = per_exit[:, : j + 1].reshape(n, -1)
        out[:, j, -1] = (pred[:, : j + 1] == pred[:, j : j + 1]).mean(axis=1)
    return out


def exact_quota_counts(q: float, n: int, num_exits: int) -> np.ndarray:
    """(K,) samples per exit under exact quotas ``floor(n p_k)`` (as ``quota_thresholds``)."""
    p = exit_distribution(q, num_exits)
    counts = np.zeros(num_exits, dtype=np.int64)
    remaining = n
    for j in range(num_exits - 1):
        take = min(math.floor(n * p[j]), remaining)
        counts[j] = take
        remaining -= take
    counts[-1] = remaining
    return counts


def _check_number(
    name: str, value: object, lo: float, integer: bool, open_lo: bool = False
) -> None:
    bad = True
    if not isinstance(value, bool) and (
        isinstance(value, (int, np.integer))
        or (not integer and isinstance(value, (float, np.floating)))
    ):
        v = float(value)
        bad = not math.isfinite(v) or v < lo or (open_lo and v == lo)
    if bad:
        kind = "an integer" if integer else "a finite number"
        rel = ">" if open_lo else ">="
        raise InputError(f"EENet option {name} must be {kind} {rel} {lo:g}, got {value!r}")


class EENetPolicy(BasePolicy):
    """Learned exit scores + per-budget exact-quota thresholds (see the module docstring).

    Parameters (the whole configuration; learned state ends in ``_``):

    - ``budgets``: validation mean-cost targets, in the units of the costs. ``None``: the
      validation costs of the geometric (MSDNet) rule on ``grid`` with
      max-probability scores, as the GA solver does, so the curves compare budget by budget.
    - ``seed``: initialisation of the scorer (the fit is full batch: nothing else is random).
    - ``hidden``, ``epochs``, ``lr``, ``weight_decay``: the scorer's width and its Adam run.
    - ``grid``: q grid of the default budgets.

    After ``fit``: ``num_exits_``, ``budgets_``, ``feature_mean_``/``feature_std_`` (K, D),
    ``weights_`` (numpy arrays of the K heads), ``train_loss_``, ``solutions_``.
    """

    name = "eenet"

    def __init__(
        self,
        budgets: Sequence[float] | None = None,
        *,
        seed: int = 0,
        hidden: int = 16,
        epochs: int = 300,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        grid: str | Sequence[float] = "msdnet",
    ) -> None:
        self.budgets = check_budgets(budgets, "EENet budgets")
        _check_number("seed", seed, 0, integer=True)
        _check_number("hidden", hidden, 1, integer=True)
        _check_number("epochs", epochs, 1, integer=True)
        _check_number("lr", lr, 0, integer=False, open_lo=True)
        _check_number("weight_decay", weight_decay, 0, integer=False)
        get_grid(grid)  # an unknown grid name fails here, listing the known ones
        self.seed = seed
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.grid = grid

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, as passed (scikit-learn style)."""
        return {
            "budgets": None if self.budgets is None else list(self.budgets),
            "seed": self.seed,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "grid": self.grid,
        }

    # ------------------------------------------------------------ exit scoring

    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit the K heads (one hidden layer each, ReLU, sigmoid output) by full-batch Adam."""
        import torch

        k, _, d = x.shape
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the same sums in the same order every fit
        try:
            gen = torch.Generator().manual_seed(int(self.seed))
            dt = torch.float32
            w1 = (torch.randn(k, d, self.hidden, generator=gen, dtype=dt) / math.sqrt(d))
            w2 = (torch.randn(k, self.hidden, 1, generator=gen, dtype=dt) / math.sqrt(self.hidden))
            params = [
                w1.requires_grad_(),
                torch.zeros(k, 1, self.hidden, dtype=dt, requires_grad=True),
                w2.requires_grad_(),
                torch.zeros(k, 1, 1, dtype=dt, requires_grad=True),
            ]
            xt = torch.from_numpy(x.astype(np.float32))
            yt = torch.from_numpy(y.astype(np.float32))
            opt = torch.optim.Adam(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
            loss = torch.zeros(())
            for _ in range(int(self.epochs)):
                opt.zero_grad()
                hid = torch.relu(torch.baddbmm(params[1], xt, params[0]))
                out = torch.baddbmm(params[3], hid, params[2])
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out, yt)
                loss.backward()
                opt.step()
            self.weights_ = [p.detach().numpy().astype(np.float64) for p in params]
            self.train_loss_ = float(loss.detach())
        finally:
            torch.set_num_threads(threads)

    def _standardised(self, feats: np.ndarray) -> np.ndarray:
        """(K, N, D) features standardised with the validation statistics."""
        return np.ascontiguousarray(
            ((feats - self.feature_mean_) / self.feature_std_).transpose(1, 0, 2)
        )

    def learned_scores(self, ls: LogitSet) -> np.ndarray:
        """(N, K) float64 predicted probability that each exit's prediction is right."""
        self._check_fitted(ls)
        return self._scores(eenet_features(ls))

    def _scores(self, feats: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self.weights_
        hid = np.maximum(np.matmul(self._standardised(feats), w1) + b1, 0.0)
        logit = (np.matmul(hid, w2) + b2)[:, :, 0].T  # (N, K)
        return 1.0 / (1.0 + np.exp(-logit))

    # ------------------------------------------------------------ exit assignment

    def _default_budgets(self, val: LogitSet, correct: np.ndarray) -> list[float]:
        scores = exit_scores(val, "confidence")
        sols = GeometricSolver(grid=self.grid).solve(scores, correct, val.costs)
        k, n = val.num_exits, val.num_samples
        costs = []
        for s in sols:
            assert s.fit_exits is not None  # the geometric solver records its fit assignment
            costs.append(float(mean_cost(exit_counts(s.fit_exits, k), val.costs, n)))
        return costs

    def _solve_budget(self, scores: np.ndarray, costs: np.ndarray, budget: float) -> Solution:
        """Largest q whose exact-quota assignment costs at most ``budget`` on validation.

        The bisection is ``QuotaSolver(exact=True).solve_budget``'s (60 halvings of log q
        in [1e-4, 1e4]), run on exit counts: with exact quotas the number of samples per
        exit depends on q alone, so only the chosen q is sorted by score.
        """
        n, k = scores.shape

        def cost_at(log_q: float) -> float:
            return float(mean_cost(exact_quota_counts(math.exp(log_q), n, k), costs, n))

        lo, hi = math.log(Q_RANGE[0]), math.log(Q_RANGE[1])
        if cost_at(lo) > budget:
            # below what q >= 1e-4 reaches, yet affordable: everybody at the first exit
            t = np.array([-SENTINEL] * k)
            info = {"budget": budget, "q": 0.0, "p": [1.0] + [0.0] * (k - 1)}
            return Solution(budget, "budget", t, assign_exits(scores, t), info)
        if cost_at(hi) <= budget:
            best = hi
        else:
            best = lo
            for _ in range(BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                if cost_at(mid) <= budget:
                    lo = best = mid
                else:
                    hi = mid
        q = math.exp(best)
        p = exit_distribution(q, k)
        t, fit_exits = quota_thresholds(scores, p, exact=True)
        info = {"budget": budget, "q": q, "p": p.tolist()}
        return Solution(budget, "budget", t, fit_exits, info)

    # ------------------------------------------------------------ the policy

    def fit(self, val: LogitSet) -> EENetPolicy:
        check_logitset(val, "the validation set")
        if val.num_samples == 0:
            raise InputError(
                "the validation set is empty; EENet needs labelled samples to learn from"
            )
        costs = np.asarray(val.costs, dtype=np.float64)
        if not np.isfinite(costs).all():
            raise InputError(
                "EENet needs known per-exit costs to meet budgets; the set's costs are unknown "
                "(give them when importing or extracting, e.g. --costs 1,2,3)"
            )
        correct = exit_correct(val)
        budgets = self.budgets if self.budgets is not None else self._default_budgets(val, correct)
        low = [b for b in budgets if b < costs[0]]
        if low:
            raise InputError(
                f"budget {low[0]:g} is below the cost of the first exit ({costs[0]:g}), which "
                f"every sample pays; give budgets of at least {costs[0]:g}"
            )
        feats = eenet_features(val)
        self.feature_mean_ = feats.mean(axis=0)
        std = feats.std(axis=0)
        self.feature_std_ = np.where(std > 1e-12, std, 1.0)
        self._train(self._standardised(feats), correct.T[:, :, None].astype(np.float64))
        self.num_exits_ = val.num_exits
        self.budgets_ = [float(b) for b in budgets]
        scores = self._scores(feats)
        self.solutions_ = merge_budget_duplicates(
            [self._solve_budget(scores, costs, b) for b in self.budgets_], costs, val.num_samples
        )
        return self

    def apply(self, ls: LogitSet) -> list[OperatingPoint]:
        scores = self.learned_scores(ls)
        return [
            OperatingPoint(s.param, s.thresholds.copy(), assign_exits(scores, s.thresholds),
                           "budget", s.info.get("note", ""))
            for s in self.solutions_
        ]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "params": self.get_params(),
            "features": [*FEATURES_PER_EXIT, "vote_share"],
            "assignment": "exact quotas on the learned scores, geometric p_k ~ q^k, q per budget",
        }
        if hasattr(self, "train_loss_"):
            out["train_loss"] = self.train_loss_
            out["budgets"] = self.budgets_
        return out
