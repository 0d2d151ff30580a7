"""Model-internal ensembling (MIE): every exit predicts with the exits before it.

Meronen et al., "Fixing Overconfidence in Dynamic Neural Networks" (WACV 2024),
combine the outputs a sample has already paid for: at exit k the predictive
distribution is the weighted mean of the (calibrated) probability vectors of
exits 1..k,

    p_ens,k = sum_{i<=k} w_i p_i / sum_{i<=k} w_i,

with w_i the cumulative computational cost of exit i (their code normalises by
the last exit's cost, which cancels in the ratio). Deeper exits cost more and are
usually better, so they get more say, while the early exits' disagreement softens
over-confident late predictions. The first exit keeps its own distribution. The
mean is taken over probabilities, not logits, so it is a mixture: it can change
an exit's top-1 class (``changes_predictions = True``), and predictions,
correctness and accuracy then come from the ensemble.

Weights: ``"cost"`` (default, as in the paper; needs the set's costs),
``"uniform"`` (all exits equal; for sets without known costs), or K positive
numbers.

``temperature+mie`` first fits per-exit temperature scaling (each exit on its own
validation NLL, eebench.policies.calibration.TemperatureScaling) and ensembles the
tempered probabilities. The paper's code instead picks each exit's temperature from
a small grid to minimise the NLL of the ensemble at that exit, exit after exit; we
keep the two steps separate so that ``temperature+mie`` is exactly temperature
scaling followed by ``mie``. Any other per-exit calibration combines the same way:
``ModelInternalEnsemble(base=...)`` fits the base first and ensembles its
probabilities (the paper's headline method is Laplace + MIE).

For caches of probabilities ``mie`` averages the stored values as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import DataError, InputError, InputTypeError
from eebench.policies.calibration import TemperatureScaling, make_calibration
from eebench.policies.estimator import Estimator
from eebench.policies.scores import calibrated_block, iter_blocks

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

WEIGHT_RULES = ("cost", "uniform")


def exit_nll(ls: LogitSet, calibration: Any = None) -> np.ndarray:
    """(K,) mean negative log-likelihood of the labels at every exit (float64 mean of the
    compute-dtype log-probabilities), under ``calibration`` (None: as stored)."""
    n, k, _ = ls.logits.shape
    total = np.zeros(k)
    for start, stop, block in iter_blocks(ls):
        _, logp = calibrated_block(ls, start, stop, block, calibration, need_logp=True)
        y = ls.labels[start:stop]
        picked = np.take_along_axis(logp, np.broadcast_to(y[:, None, None], (len(y), k, 1)), -1)
        total -= picked[..., 0].sum(axis=0, dtype=np.float64)
    return total / max(1, n)


class ModelInternalEnsemble(Estimator):
    """MIE: exit k predicts with the weighted mean of the probabilities of exits 1..k.

    ``weights``: "cost" (cumulative cost, the paper's rule), "uniform", or K positive
    numbers. ``base``: a per-exit calibration applied before ensembling, by name
    (``make_calibration``) or as an unfitted object (None: the outputs as stored); it is
    fit first, on the same validation set, and must follow the calibration protocol.

    After ``fit``: ``base_`` (the fitted base, or None), ``exit_weights_`` (K,) (divided
    by the last exit's), ``nll_before_``/``nll_after_`` (K,) validation NLL without
    calibration and with this one.
    """

    name = "mie"
    changes_predictions = True

    def __init__(self, weights: str | Sequence[float] = "cost", base: Any = None) -> None:
        if isinstance(weights, str):
            if weights.strip().lower() not in WEIGHT_RULES:
                raise InputError(
                    f"unknown MIE weights {weights!r}; give one of {', '.join(WEIGHT_RULES)} "
                    "or one positive number per exit"
                )
            weights = weights.strip().lower()
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.size == 0 or not (np.isfinite(w).all() and (w > 0).all()):
                raise InputError(f"MIE weights must be positive numbers, got {list(weights)}")
            weights = tuple(float(v) for v in w)
        self.weights = weights
        self.base = base
        if base is not None:
            base_name = base if isinstance(base, str) else getattr(base, "name", None)
            if not base_name:
                raise InputTypeError(f"base must be a calibration name or object, got {base!r}")
            self.name = f"{base_name}+mie"

    # ------------------------------------------------------------ fitting

    def _exit_weights(self, ls: LogitSet) -> np.ndarray:
        from eebench.store.validate import check_costs

        k = ls.num_exits
        if self.weights == "uniform":
            return np.ones(k)
        if self.weights == "cost":
            try:
                costs = check_costs(ls.costs, "costs of the validation set")
            except DataError as e:
                raise DataError(
                    f"{e}; MIE weights exits by their cost: give the costs, or use "
                    "weights='uniform'"
                ) from None
            return costs / costs[-1]
        w = np.asarray(self.weights, dtype=np.float64)
        if w.size != k:
            raise InputError(f"{w.size} MIE weights for {k} exits; give one weight per exit")
        return w / w[-1]

    def fit(self, ls: LogitSet) -> ModelInternalEnsemble:
        if ls.num_samples == 0:
            raise InputError("cannot fit a calibration on an empty validation set")
        if self.base is None:
            self.base_ = None
        else:
            base = make_calibration(self.base) if isinstance(self.base, str) else self.base
            self.base_ = base.fit(ls)  # first: the ensemble combines calibrated exits
        self.exit_weights_ = self._exit_weights(ls)
        self.nll_before_ = exit_nll(ls, None)
        self.nll_after_ = exit_nll(ls, self)
        return self

    # ------------------------------------------------------------ applying

    def _check_fitted(self, num_exits: int) -> None:
        if not hasattr(self, "exit_weights_"):
            raise RuntimeError(f"{self.name} is not fitted; call fit(validation_set) first")
        if num_exits != len(self.exit_weights_):
            raise InputError(
                f"{self.name} was fit on {len(self.exit_weights_)} exits but the outputs have "
                f"{num_exits}; apply it to outputs of the same model"
            )

    def combine(self, probs: np.ndarray) -> np.ndarray:
        """Running weighted means over exits of (rows, K, C) probabilities, in place."""
        self._check_fitted(probs.shape[1])
        dt = probs.dtype
        w = self.exit_weights_
        cum = np.cumsum(w)
        acc = probs[:, 0] * dt.type(w[0])
        for k in range(1, probs.shape[1]):
            pk = probs[:, k]
            np.multiply(pk, dt.type(w[k]), out=pk)
            acc += pk
            np.divide(acc, dt.type(cum[k]), out=pk)
        return probs

    def block_probabilities(
        self, ls: LogitSet, start: int, stop: int, block: np.ndarray
    ) -> np.ndarray:
        """(rows, K, C) ensemble probabilities of samples start:stop."""
        self._check_fitted(block.shape[1])
        probs, _ = calibrated_block(ls, start, stop, block, self.base_)
        return self.combine(probs)

    def cache_key(self) -> tuple:
        """The weights and the base calibration's key decide the outputs."""
        from eebench.policies.score_cache import calibration_key

        self._check_fitted(len(getattr(self, "exit_weights_", ())))
        return tuple(float(v) for v in self.exit_weights_), calibration_key(self.base_)

    def describe(self) -> dict:
        """The rule and fitted state as plain data."""
        rule = "exit k: weighted mean of the probabilities of exits 1..k"
        if self.weights == "cost":
            rule += ", weights = cumulative cost / last exit's cost"
        out: dict[str, Any] = {
            "name": self.name,
            "weights": self.weights if isinstance(self.weights, str) else list(self.weights),
            "rule": rule,
        }
        if hasattr(self, "exit_weights_"):
            out["exit_weights"] = [float(v) for v in self.exit_weights_]
            out["nll_before"] = [float(v) for v in self.nll_before_]
            out["nll_after"] = [float(v) for v in self.nll_after_]
            if self.base_ is not None:
                out["base"] = self.base_.describe()
        return out


class TemperatureMIE(ModelInternalEnsemble):
    """Per-exit temperature scaling, then MIE of the tempered probabilities.

    After ``fit``: ``temperature_`` (the fitted TemperatureScaling, fit first, on the
    validation set alone; the same object as ``base_``) and MIE's fitted state.
    """

    name = "temperature+mie"

    def __init__(
        self,
        weights: str | Sequence[float] = "cost",
        bounds: tuple[float, float] = (0.01, 100.0),
    ) -> None:
        super().__init__(weights, base=TemperatureScaling(bounds))
        self.bounds = bounds

    @property
    def temperature_(self) -> TemperatureScaling:
        base = getattr(self, "base_", None)  # the TemperatureScaling that fit() fitted
        if base is None:
            raise AttributeError("temperature_ (TemperatureMIE is not fitted)")
        return base


def laplace_mie() -> ModelInternalEnsemble:
    """Calibrated-DNN's combination: model-internal ensembling of Laplace-calibrated exits."""
    from eebench.policies.laplace import LaplaceCalibration  # scipy.linalg, loaded on use

    return ModelInternalEnsemble(base=LaplaceCalibration())
