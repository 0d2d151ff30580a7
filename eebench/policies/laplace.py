"""Last-layer Laplace calibration of every exit, after Calibrated-DNN (Meronen et al., "Fixing
Overconfidence in Dynamic Neural Networks", WACV 2024).

Why: an exit's softmax is a point estimate of its last layer, and it is as confident on an
unusual image as on a typical one. Treating that layer's weights as uncertain (a Laplace
approximation: a Gaussian around the trained weights whose precision is the curvature of the
likelihood plus a prior) widens the predictive distribution where the features are unlike
those the curvature was measured on, by an amount that differs per sample and per class. A
temperature cannot do that; it is also why the top-1 prediction may change
(``changes_predictions``), and why this needs the per-exit features the store keeps when an
extraction asks for them.

Our setting has no training set: the stored logits are the MAP outputs ``f = W phi + b``, the
cache holds ``phi``, and both the curvature and the prior are fitted on the validation
LogitSet given to ``fit`` (``n`` samples). Per exit, with ``phi~ = [phi, 1]`` (the bias is the
weight of a constant feature) and ``p_i = softmax(f_i)``::

    A = 1/n sum_i phi~_i phi~_i^T                      (D+1, D+1)
    B = 1/n sum_i (diag(p_i) - p_i p_i^T)              (C, C)
    U = sqrt(n) B + sqrt(tau) I,   V = sqrt(n) A + sqrt(tau) I
    s(x) = phi~^T V^-1 phi~,       var_c(x) = s(x) (U^-1)_cc
    p_c(x) = softmax_c( f_c / sqrt(1 + pi/8 var_c(x)) )

The generalised Gauss-Newton matrix of the softmax likelihood with respect to the last layer
is ``sum_i (diag p_i - p_i p_i^T) kron phi~_i phi~_i^T``; Kronecker-factoring it as
``n B kron A`` (K-FAC) and spreading the isotropic prior precision ``tau`` over the two
factors (``U kron V``, the damping Calibrated-DNN uses too) keeps the posterior covariance a
Kronecker product, so a sample's logit covariance is the scalar ``s(x)`` times one (C, C)
matrix per exit: cheap for ImageNet's 1000 classes, where the exact ``n B kron A + tau I``
would need C x (D+1) terms per sample and per candidate ``tau``. The predictive is the probit
approximation of the softmax-Gaussian integral (deterministic and exactly ``softmax(f)`` at
zero variance) rather than Calibrated-DNN's Monte Carlo average, so calibrated outputs are
reproducible bit for bit. With the eigendecompositions of ``A`` and ``B`` computed once, each
candidate ``tau`` costs one matrix-vector product per block, so ``tau`` (one per exit) is
chosen by validation NLL over a log grid: 0.5-decade steps over 20 decades placed by the mean
``|phi~|^2`` (large ``tau`` is zero variance; the grid extends downwards while its lowest point
is the best), then 0.05-decade steps around the best.
The variance only ever softens; when no ``tau`` lowers an exit's validation NLL below the
uncalibrated softmax (T = 1), that exit is left unchanged (its prior precision is reported as
None).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import DataError, InputError
from eebench.policies.estimator import Estimator

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

_TINY = 1e-300
_PI_8 = math.pi / 8
_FIT_ELEMENTS = 1 << 22  # values of one (rows, grid, classes) temporary while fitting
_HOW = ("extract with features: `features = true` in the suite's [suite] table, or "
        "`eebench extract SUITE --features`")


def _as_logits(x: np.ndarray, kind: str) -> np.ndarray:
    return np.log(np.maximum(x, _TINY)) if kind == "probabilities" else x


def _augment(phi: np.ndarray) -> np.ndarray:
    """``[phi, 1]`` in float64."""
    out = np.empty((phi.shape[0], phi.shape[1] + 1), dtype=np.float64)
    out[:, :-1] = phi
    out[:, -1] = 1.0
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def require_features(ls: LogitSet, who: str = "the laplace calibration") -> list[np.ndarray]:
    """``ls.features``, or a one-line DataError saying how to get them."""
    if ls.features is None:
        raise DataError(f"{who} needs each exit's pre-logit features and this cache has none; "
                        f"{_HOW}")
    return ls.features


class LaplaceCalibration(Estimator):
    """Per-exit last-layer Laplace with the probit predictive (see the module docstring).

    After ``fit``: ``prior_precisions_`` (K,) (``inf`` where the exit is left unchanged),
    ``nll_before_``/``nll_after_`` (K,) on the validation set, and per exit the factors the
    predictive needs: ``feature_maps_[k]`` (D_k+1, D_k+1) with ``s(x) = |phi~ M|^2`` (None
    for unchanged exits) and ``class_variances_[k]`` (C,), the diagonal of ``U^-1``.
    """

    name = "laplace"
    changes_predictions = True

    def __init__(self, span_decades: tuple[float, float] = (-14.0, 6.0), coarse_step: float = 0.5,
                 fine_step: float = 0.05) -> None:
        lo, hi = span_decades
        if not (lo < hi and coarse_step > 0 and 0 < fine_step <= coarse_step):
            raise InputError(
                f"need span_decades low < high and 0 < fine_step <= coarse_step, got "
                f"{span_decades}, {coarse_step}, {fine_step}"
            )
        self.span_decades = (float(lo), float(hi))
        self.coarse_step = float(coarse_step)
        self.fine_step = float(fine_step)

    # ------------------------------------------------------------ fitting

    def fit(self, ls: LogitSet) -> LaplaceCalibration:
        feats = require_features(ls)
        if ls.num_samples == 0:
            raise InputError("cannot fit the laplace calibration on an empty validation set")
        k_exits = ls.num_exits
        taus = np.full(k_exits, np.inf)
        before, after = np.empty(k_exits), np.empty(k_exits)
        maps: list[np.ndarray | None] = []
        class_vars: list[np.ndarray] = []
        for k in range(k_exits):
            tau, nb, na, fmap, cvar = self._fit_exit(ls, k, feats[k])
            taus[k], before[k], after[k] = tau, nb, na
            maps.append(fmap)
            class_vars.append(cvar)
        self.prior_precisions_ = taus
        self.nll_before_ = before
        self.nll_after_ = after
        self.feature_maps_ = maps
        self.class_variances_ = class_vars
        h = hashlib.sha256()
        for m, v in zip(maps, class_vars, strict=True):
            h.update(b"none" if m is None else np.ascontiguousarray(m).tobytes())
            h.update(np.ascontiguousarray(v).tobytes())
        self.state_sha256_ = h.hexdigest()
        return self

    def _rows(self, ls: LogitSet, k: int, phi_all: np.ndarray, step: int):
        """(rows slice, logits (b, C) float64, phi~ (b, D+1)) block by block."""
        n = ls.num_samples
        for s in range(0, n, step):
            e = min(n, s + step)
            f = _as_logits(np.asarray(ls.logits[s:e, k, :], dtype=np.float64), ls.kind)
            yield slice(s, e), f, _augment(np.asarray(phi_all[s:e], dtype=np.float64))

    def _fit_exit(self, ls: LogitSet, k: int, phi_all: np.ndarray):
        n, c = ls.num_samples, ls.num_classes
        d1 = phi_all.shape[1] + 1
        labels = ls.labels
        step = max(1, (1 << 22) // max(c, d1))
        a = np.zeros((d1, d1))
        psum = np.zeros(c)
        ptp = np.zeros((c, c))
        nll0 = 0.0
        sq_norm = 0.0
        for rows, f, pt in self._rows(ls, k, phi_all, step):
            a += pt.T @ pt
            sq_norm += float((pt * pt).sum())
            m = f.max(axis=1, keepdims=True)
            e = np.exp(f - m)
            se = e.sum(axis=1, keepdims=True)
            p = e / se
            psum += p.sum(axis=0)
            ptp += p.T @ p
            lse = (m + np.log(se))[:, 0]
            nll0 += float((lse - f[np.arange(len(f)), labels[rows]]).sum())
        a /= n
        b = (np.diag(psum) - ptp) / n
        nll0 /= n
        av, aq = np.linalg.eigh((a + a.T) / 2)
        bv, bq = np.linalg.eigh((b + b.T) / 2)
        av, bv = np.clip(av, 0, None), np.clip(bv, 0, None)
        bq2 = bq * bq  # (U^-1)_cc = sum_i bq[c, i]^2 / (sqrt(n) bv_i + sqrt(tau))
        rn = math.sqrt(n)

        def nll_grid(log_taus: np.ndarray) -> np.ndarray:
            root = np.sqrt(10.0 ** log_taus)  # (G,)
            w = 1.0 / (rn * av[:, None] + root[None, :])  # (D+1, G)
            u = (bq2 @ (1.0 / (rn * bv[:, None] + root[None, :]))).T  # (G, C)
            g = len(log_taus)
            total = np.zeros(g)
            rows_per = max(1, _FIT_ELEMENTS // (g * c))
            for rows, f, pt in self._rows(ls, k, phi_all, min(step, rows_per)):
                s = ((pt @ aq) ** 2) @ w  # (b, G)
                kappa = 1.0 / np.sqrt(1.0 + _PI_8 * s[:, :, None] * u[None, :, :])
                z = f[:, None, :] * kappa  # (b, G, C)
                zm = z.max(axis=2, keepdims=True)
                lse = (zm + np.log(np.exp(z - zm).sum(axis=2, keepdims=True)))[:, :, 0]
                y = labels[rows]
                total += (lse - z[np.arange(len(y)), :, y]).sum(axis=0)
            return total / n

        center = math.log10(max(sq_norm / n, _TINY))
        lo, hi = self.span_decades
        coarse = center + np.arange(lo, hi + self.coarse_step / 2, self.coarse_step)
        nll_c = nll_grid(coarse)
        for _ in range(3):  # the best prior is weaker than the grid reaches: look further down
            if int(np.argmin(nll_c)) != 0:
                break
            lower = coarse[0] - (hi - lo) + np.arange(0, hi - lo, self.coarse_step)
            coarse, nll_c = np.concatenate([lower, coarse]), np.concatenate([nll_grid(lower), nll_c])
        best = int(np.argmin(nll_c))
        fine = coarse[best] + np.arange(-self.coarse_step, self.coarse_step + self.fine_step / 2,
                                        self.fine_step)
        nll_f = nll_grid(fine)
        j = int(np.argmin(nll_f))
        log_tau, nll1 = float(fine[j]), float(nll_f[j])
        if nll_c[best] < nll1:
            log_tau, nll1 = float(coarse[best]), float(nll_c[best])
        if not nll1 < nll0:  # the variance can only soften: keep T = 1 when that does not help
            return math.inf, nll0, nll0, None, np.zeros(c)
        root = math.sqrt(10.0 ** log_tau)
        fmap = aq / np.sqrt(rn * av + root)[None, :]
        cvar = bq2 @ (1.0 / (rn * bv + root))
        return 10.0 ** log_tau, nll0, nll1, fmap, cvar

    # ------------------------------------------------------------ applying

    def _check_fitted(self, ls: LogitSet) -> list[np.ndarray]:
        if not hasattr(self, "prior_precisions_"):
            raise RuntimeError("LaplaceCalibration is not fitted; call fit(validation_set) first")
        feats = require_features(ls)
        if ls.num_exits != len(self.prior_precisions_):
            raise DataError(f"the laplace calibration was fit for {len(self.prior_precisions_)} "
                            f"exits, these outputs have {ls.num_exits}")
        for k, m in enumerate(self.feature_maps_):
            if m is not None and feats[k].shape[1] + 1 != m.shape[0]:
                raise DataError(
                    f"exit {k}: features of width {feats[k].shape[1]}, but the laplace "
                    f"calibration was fit on width {m.shape[0] - 1}; fit and apply it on "
                    "outputs of the same model"
                )
        return feats

    def logit_variances(self, ls: LogitSet, k: int, start: int, stop: int) -> np.ndarray | None:
        """(stop-start, C) predictive logit variances of exit ``k``; None where unchanged."""
        feats = self._check_fitted(ls)
        fmap = self.feature_maps_[k]
        if fmap is None:
            return None
        pt = _augment(np.asarray(feats[k][start:stop], dtype=np.float64))
        s = ((pt @ fmap) ** 2).sum(axis=1)
        return s[:, None] * self.class_variances_[k][None, :]

    def scaled_logits(self, ls: LogitSet, start: int, stop: int, block: np.ndarray) -> np.ndarray:
        """(stop-start, K, C) probit-scaled logits ``f_c / sqrt(1 + pi/8 var_c(x))`` of samples
        start:stop, whose softmax is the calibrated predictive (for a cache of probabilities,
        their logarithm is scaled). Overwrites ``block`` for caches of logits.

        Not offered as ``block_logits``: the score code's fast logit path for calibrations
        with that method does not take predictions from the calibrated logits, and this
        calibration changes predictions."""
        self._check_fitted(ls)
        if block.ndim != 3 or block.shape[1] != len(self.prior_precisions_) \
                or block.shape[0] != stop - start:
            raise InputError(
                f"a block of shape {block.shape} for rows {start}:{stop} and a calibration fit on "
                f"{len(self.prior_precisions_)} exits; apply it to outputs of the same model"
            )
        z = _as_logits(block, ls.kind)
        for k in range(z.shape[1]):
            var = self.logit_variances(ls, k, start, stop)
            if var is not None:
                z[:, k, :] *= (1.0 / np.sqrt(1.0 + _PI_8 * var)).astype(z.dtype)
        return z

    def block_probabilities(self, ls: LogitSet, start: int, stop: int,
                            block: np.ndarray) -> np.ndarray:
        """(stop-start, K, C) Laplace predictive (probit approximation) of samples start:stop:
        ``softmax(scaled_logits)``; ``block`` may be overwritten."""
        return _softmax(self.scaled_logits(ls, start, stop, block))

    def cache_key(self) -> tuple[str, str]:
        if not hasattr(self, "state_sha256_"):
            raise RuntimeError("LaplaceCalibration is not fitted; call fit(validation_set) first")
        return (self.name, self.state_sha256_)

    def describe(self) -> dict[str, Any]:
        """Fitted state as plain data: per exit the prior precision (None: left unchanged,
        Laplace did not lower the validation NLL) and the validation NLL before and after."""
        out: dict[str, Any] = {"name": self.name}
        if hasattr(self, "prior_precisions_"):
            out["prior_precisions"] = [None if not math.isfinite(t) else float(t)
                                       for t in self.prior_precisions_]
            out["nll_before"] = [float(v) for v in self.nll_before_]
            out["nll_after"] = [float(v) for v in self.nll_after_]
        return out
