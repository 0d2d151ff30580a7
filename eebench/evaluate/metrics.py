"""The anytime protocol: one row per exit, every sample forced to exit there.

Accuracies are fractions in [0, 1]. Two ECE rules are offered because the
field uses two and they disagree on saturated models:

- ``"standard"``: ``bins`` equal-width bins over [0, 1] (15 by default),
  each bin [lo, hi) except the last, which also holds confidences of exactly 1.0.
- ``"calibrated-dnn"``: the rule of Meronen et al.'s code (AaltoML/calibrated-dnn,
  ``calc_bins``): edges ``linspace(0.1, 1, bins)`` (10 by default) and
  ``np.digitize``; bin 0 is [0, 0.1). Confidences of exactly 1.0 (or more)
  get index ``bins`` and fall outside every bin: they are dropped, and the
  bin weights are normalised by the samples that remain. With many float32
  confidences that round to 1.0 this variant can differ a lot from the standard one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from eebench.errors import InputError
from eebench.policies.scores import Calibration, iter_probability_blocks
from eebench.store.logitset import check_logitset

if TYPE_CHECKING:
    import pandas as pd

    from eebench.store.logitset import LogitSet

ECE_VARIANTS = ("standard", "calibrated-dnn")


def expected_calibration_error(
    confidence: np.ndarray,
    correct: np.ndarray,
    bins: int | None = None,
    variant: str = "standard",
) -> float:
    """ECE of top-1 confidences against correctness (see the module docstring for the rules)."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    corr = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != corr.shape:
        raise InputError(f"{conf.size} confidences but {corr.size} correctness values")
    if variant == "standard":
        nb = 15 if bins is None else int(bins)
        if nb < 1:
            raise InputError(f"ECE needs at least one bin, got {nb}")
        edges = np.linspace(0.0, 1.0, nb + 1)
        idx = np.searchsorted(edges[1:-1], conf, side="right")
        keep = np.ones(conf.shape, dtype=bool)
    elif variant == "calibrated-dnn":
        nb = 10 if bins is None else int(bins)
        if nb < 1:
            raise InputError(f"ECE needs at least one bin, got {nb}")
        idx = np.digitize(conf, np.linspace(0.1, 1, nb))
        keep = idx < nb
    else:
        raise InputError(f"unknown ECE variant {variant!r}; known: {', '.join(ECE_VARIANTS)}")
    idx, conf_k, corr_k = idx[keep], conf[keep], corr[keep]
    total = idx.size
    if total == 0:
        return float("nan")
    size = np.bincount(idx, minlength=nb).astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf_k, minlength=nb)
    sum_corr = np.bincount(idx, weights=corr_k, minlength=nb)
    nz = size > 0
    gap = np.abs(sum_corr[nz] / size[nz] - sum_conf[nz] / size[nz])
    return float(np.sum(size[nz] / total * gap))


def anytime_table(
    ls: LogitSet,
    ece_bins: int | None = None,
    ece_variant: str = "standard",
    calibration: Calibration | None = None,
) -> pd.DataFrame:
    """One row per exit: exit, exit_name, cost, top1, top5, nll, ece, overthinking.

    ``overthinking`` is the fraction of samples right at this exit and wrong
    at the last one. ``calibration`` (fitted) changes nll and ece; a calibration
    that changes predictions (``changes_predictions``, e.g. model-internal
    ensembling) also changes top1, top5 and overthinking, which then rank the
    calibrated probabilities. Without one, ranks come from the stored outputs.
    """
    import pandas as pd

    check_logitset(ls, "the set")
    if ece_variant not in ECE_VARIANTS:
        raise InputError(f"unknown ECE variant {ece_variant!r}; known: {', '.join(ECE_VARIANTS)}")
    n, k_exits, c = ls.logits.shape
    if n == 0:
        raise InputError("cannot evaluate an empty set")
    labels = ls.labels
    conf = np.empty((n, k_exits))
    correct = np.empty((n, k_exits), dtype=bool)
    top5 = np.empty((n, k_exits), dtype=bool)
    logp_y = np.empty((n, k_exits))
    top = min(5, c)
    changes = calibration is not None and bool(getattr(calibration, "changes_predictions", False))
    for start, stop, raw, probs, logp in iter_probability_blocks(ls, calibration, need_logp=True):
        sl = slice(start, stop)
        y = labels[sl]
        at_y = np.broadcast_to(y[:, None, None], (stop - start, k_exits, 1))
        ranked = probs if changes else raw
        ranked_y = np.take_along_axis(ranked, at_y, axis=-1)
        correct[sl] = ranked.argmax(axis=-1) == y[:, None]
        top5[sl] = (ranked > ranked_y).sum(axis=-1) < top
        conf[sl] = probs.max(axis=-1)
        logp_y[sl] = np.take_along_axis(logp, at_y, axis=-1)[..., 0]
    last = correct[:, -1]
    rows_out = []
    for k in range(k_exits):
        rows_out.append(
            {
                "exit": k,
                "exit_name": ls.exit_names[k],
                "cost": float(ls.costs[k]),
                "top1": float(correct[:, k].mean()),
                "top5": float(top5[:, k].mean()),
                "nll": float(-logp_y[:, k].mean()),
                "ece": expected_calibration_error(conf[:, k], correct[:, k], ece_bins, ece_variant),
                "overthinking": float((correct[:, k] & ~last).mean()),
            }
        )
    return pd.DataFrame(rows_out)
