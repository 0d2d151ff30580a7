"""Post-hoc calibration of every exit, fit on the validation split.

A calibration is fit on the validation LogitSet and then turns a block of cached
outputs (samples start:stop, all exits) into calibrated per-exit probabilities:
``block_probabilities(ls, start, stop, block)``. ``changes_predictions`` says
whether the arg-max of those probabilities may differ from an exit's raw arg-max
(then predictions, correctness and accuracy come from the calibrated
probabilities). ``describe()`` returns the fitted state as plain data. Names map
to classes in ``CALIBRATIONS``: ``temperature`` (here), ``mie`` and
``temperature+mie`` (eebench.policies.ensemble).

Early exits are over- or under-confident in different ways, and a confidence
threshold inherits that; per-exit temperature scaling (one scalar per exit,
fit on validation negative log-likelihood) is the standard fix and cannot
change any exit's top-1 prediction. We optimise ``log T`` so the search is
unconstrained in sign and symmetric in "sharpen" versus "soften".

For caches that hold probabilities (``kind="probabilities"``, e.g. MSDNet's
``logits_single.pth``) the temperature divides the log-probabilities:
``softmax(log p / T)``. That is exactly temperature scaling of the original
logits, because log-probabilities differ from logits only by a per-sample
constant that softmax ignores (up to the float precision of the stored
probabilities: probabilities that underflowed to 0 are clipped at 1e-300).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError
from eebench.policies.estimator import Estimator, check_options
from eebench.registry import Registry

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

_TINY = 1e-300


def _as_logits(x: np.ndarray, kind: str) -> np.ndarray:
    if kind != "probabilities":
        return x
    with np.errstate(divide="ignore"):  # float32 rounds 1e-300 to 0: log gives -inf, softmax 0
        return np.log(np.maximum(x, _TINY))


class TemperatureScaling(Estimator):
    """Per-exit temperature scaling; after ``fit``: ``temperatures_`` (K,), ``nll_before_``/``nll_after_``.

    ``bounds`` limits each temperature (the optimiser works on ``log T``
    inside ``log(bounds)``).
    """

    name = "temperature"
    changes_predictions = False

    def __init__(self, bounds: tuple[float, float] = (0.01, 100.0)) -> None:
        self.bounds = bounds

    def fit(self, ls: LogitSet) -> TemperatureScaling:
        from scipy.optimize import minimize

        lo, hi = self.bounds
        if not (0 < lo < 1 < hi):
            raise InputError(f"temperature bounds must satisfy 0 < low < 1 < high, got {self.bounds}")
        if ls.num_samples == 0:
            raise InputError("cannot fit temperatures on an empty validation set")
        k_exits = ls.num_exits
        temps = np.ones(k_exits)
        before = np.empty(k_exits)
        after = np.empty(k_exits)
        idx = np.arange(ls.num_samples)
        for k in range(k_exits):
            x = _as_logits(np.asarray(ls.logits[:, k, :], dtype=np.float64), ls.kind)
            xy = x[idx, ls.labels]

            def nll_and_grad(u: np.ndarray, x: np.ndarray = x, xy: np.ndarray = xy) -> tuple:
                beta = float(np.exp(-u[0]))
                z = x * beta
                m = z.max(axis=1, keepdims=True)
                e = np.exp(z - m)
                s = e.sum(axis=1, keepdims=True)
                lse = (m + np.log(s))[:, 0]
                nll = float(np.mean(lse - beta * xy))
                ex = ((e / s) * x).sum(axis=1)  # E_p[x] under the scaled softmax
                dnll_dbeta = float(np.mean(ex - xy))
                return nll, np.array([-beta * dnll_dbeta])

            before[k] = nll_and_grad(np.zeros(1))[0]
            res = minimize(
                nll_and_grad,
                x0=np.zeros(1),
                jac=True,
                method="L-BFGS-B",
                bounds=[(np.log(lo), np.log(hi))],
                options={"ftol": 1e-12, "gtol": 1e-9, "maxiter": 200},
            )
            u = float(res.x[0])
            nll_u = float(res.fun)
            if nll_u > before[k]:  # never return something worse than T = 1
                u, nll_u = 0.0, float(before[k])
            temps[k] = float(np.exp(u))
            after[k] = nll_u
        self.temperatures_ = temps
        self.nll_before_ = before
        self.nll_after_ = after
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "temperatures_"):
            raise RuntimeError("TemperatureScaling is not fitted; call fit(validation_set) first")

    def block_logits(self, ls: LogitSet, start: int, stop: int, block: np.ndarray) -> np.ndarray:
        """Calibrated logits (rows, K, C) of a block: every exit's logits over its
        temperature (for a cache of probabilities, their logarithm over it). Overwrites
        ``block`` for caches of logits."""
        self._check_fitted()
        if block.ndim != 3 or block.shape[1] != len(self.temperatures_):
            raise InputError(
                f"a block of shape {block.shape} for temperatures fit on "
                f"{len(self.temperatures_)} exits; apply the calibration to outputs of the same model"
            )
        z = _as_logits(block, ls.kind)
        t = self.temperatures_.astype(z.dtype)[None, :, None]
        return np.divide(z, t, out=z)

    def block_probabilities(
        self, ls: LogitSet, start: int, stop: int, block: np.ndarray
    ) -> np.ndarray:
        """Calibrated probabilities (rows, K, C): ``softmax(block_logits)``."""
        z = self.block_logits(ls, start, stop, block)
        np.subtract(z, z.max(axis=-1, keepdims=True), out=z)
        np.exp(z, out=z)
        return np.divide(z, z.sum(axis=-1, keepdims=True), out=z)

    def cache_key(self) -> tuple[float, ...]:
        """The fitted temperatures: they alone decide the calibrated outputs."""
        self._check_fitted()
        return tuple(float(t) for t in self.temperatures_)

    def transform(self, x: np.ndarray, k: int, kind: str) -> np.ndarray:
        """Calibrated logits of exit ``k`` (same float dtype as ``x``)."""
        self._check_fitted()
        if not 0 <= k < len(self.temperatures_):
            raise InputError(
                f"exit {k} out of range: temperatures were fit for {len(self.temperatures_)} exits"
            )
        z = _as_logits(x, kind)
        return z / z.dtype.type(self.temperatures_[k])

    def describe(self) -> dict:
        """Fitted state as plain data (for reports and the curve's ``calibration`` column)."""
        out: dict = {"name": self.name}
        if hasattr(self, "temperatures_"):
            out["temperatures"] = [float(t) for t in self.temperatures_]
            out["nll_before"] = [float(v) for v in self.nll_before_]
            out["nll_after"] = [float(v) for v in self.nll_after_]
        return out


CALIBRATIONS: Registry[Any] = Registry("calibration", where="eebench policies")
"""Calibrations: callables that build a fresh, unfitted calibration (``fit(LogitSet)``,
then probabilities per exit). Register one with ``CALIBRATIONS.register("name", cls)``."""
CALIBRATIONS.register("temperature", TemperatureScaling)
CALIBRATIONS.register_lazy("mie", "eebench.policies.ensemble:ModelInternalEnsemble")
CALIBRATIONS.register_lazy("temperature+mie", "eebench.policies.ensemble:TemperatureMIE")
CALIBRATIONS.register_lazy("laplace", "eebench.policies.laplace:LaplaceCalibration")  # scipy
CALIBRATIONS.register_lazy("laplace+mie", "eebench.policies.ensemble:laplace_mie")  # Calibrated-DNN


def make_calibration(name: str | None, **options: Any) -> Any:
    """A fresh (unfitted) calibration by name with its constructor's options (e.g.
    ``make_calibration("mie", weights="uniform")``); ``None``/"none" means no calibration."""
    if name is None or (isinstance(name, str) and name.strip().lower() in ("", "none")):
        if options:
            raise InputError(f"calibration options {sorted(options)} given without a calibration")
        return None
    build = CALIBRATIONS[name]
    check_options("calibration", CALIBRATIONS.key(name), build, options)
    return build(**options)


def list_calibrations() -> list[str]:
    return ["none", *sorted(CALIBRATIONS)]
