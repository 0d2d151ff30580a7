"""Confidence scores: one number per sample and exit, higher meaning "exit now".

A policy thresholds a score, so every score here is oriented the same way
(higher = more confident): the entropy score is the *negative* entropy.
Probabilities are computed exit by exit in chunks of samples, in float32 when
the cache is float32 (float64 only for float64 caches). That keeps memory
bounded for ImageNet-size memory maps, and it keeps the float32 saturation of
the published code: confidences that round to exactly 1.0 tie, as they do in
MSDNet's cached softmax, which the threshold rule's tie handling depends on.

For ``kind="probabilities"`` caches without calibration the stored values are
used as they are (no renormalisation), exactly like the reference code that
takes ``max`` over cached softmax outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from eebench.policies._registry import lookup

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

ScoreFn = Callable[[np.ndarray], np.ndarray]

_TINY = 1e-300
_CHUNK_ELEMENTS = 1 << 23  # about 32 MB of float32 per temporary


class Calibration(Protocol):
    """What a fitted calibration offers to the score computation."""

    def transform(self, x: np.ndarray, k: int, kind: str) -> np.ndarray:
        """Calibrated logits (anything softmax turns into probabilities) of exit ``k``."""
        ...


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64 caches, float32 for everything else (float16, float32, ints)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def chunk_rows(num_classes: int) -> int:
    """Samples per chunk so that one (rows, classes) temporary stays near 32 MB."""
    return max(1, _CHUNK_ELEMENTS // max(1, num_classes))


@dataclass
class ExitChunk:
    """Outputs of exit ``k`` for samples ``start:stop``."""

    k: int
    start: int
    stop: int
    raw: np.ndarray
    probs: np.ndarray
    logp: np.ndarray | None


def softmax_parts(z: np.ndarray, need_logp: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax as ``exp(z - max) / sum`` (the formula of the frameworks), and log-softmax."""
    m = z.max(axis=1, keepdims=True)
    sh = z - m
    e = np.exp(sh)
    s = e.sum(axis=1, keepdims=True)
    probs = e / s
    logp = (sh - np.log(s)) if need_logp else None
    return probs, logp


def iter_exit_chunks(
    ls: LogitSet,
    calibration: Calibration | None = None,
    *,
    need_logp: bool = False,
    rows: int | None = None,
) -> Iterator[ExitChunk]:
    """Probabilities exit by exit, in chunks of samples (memory maps are read piecewise)."""
    n, num_exits, c = ls.logits.shape
    dt = compute_dtype(ls.logits.dtype)
    step = rows or chunk_rows(c)
    for k in range(num_exits):
        for start in range(0, n, step):
            stop = min(n, start + step)
            raw = np.asarray(ls.logits[start:stop, k, :]).astype(dt, copy=False)
            if calibration is not None:
                probs, logp = softmax_parts(calibration.transform(raw, k, ls.kind), need_logp)
            elif ls.kind == "probabilities":
                probs = raw
                logp = np.log(np.maximum(raw, _TINY)) if need_logp else None
            else:
                probs, logp = softmax_parts(raw, need_logp)
            yield ExitChunk(k, start, stop, raw, probs, logp)


# ---------------------------------------------------------------- score functions


def max_probability(probs: np.ndarray) -> np.ndarray:
    """Maximum softmax probability (MSDNet, RANet, DVT, ...)."""
    return probs.max(axis=1)


def negative_entropy(probs: np.ndarray) -> np.ndarray:
    """``sum p log p`` (minus the entropy), so that higher means more confident; 0 log 0 = 0."""
    pos = probs > 0
    plogp = np.where(pos, probs * np.log(np.where(pos, probs, 1)), 0)
    return plogp.sum(axis=1)


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability (equals the top-1 probability with one class)."""
    c = probs.shape[1]
    if c < 2:
        return probs[:, 0].copy()
    top = np.partition(probs, c - 2, axis=1)[:, c - 2 :]
    return top[:, 1] - top[:, 0]


SCORES: dict[str, ScoreFn] = {
    "confidence": max_probability,
    "entropy": negative_entropy,
    "margin": top2_margin,
}


def get_score(name: str) -> ScoreFn:
    """The score function registered as ``name``."""
    return lookup("score", name, SCORES)


def list_scores() -> list[str]:
    return sorted(SCORES)


# ---------------------------------------------------------------- whole sets


def exit_predictions(ls: LogitSet) -> np.ndarray:
    """(N, K) int64 arg-max class of every exit (temperature cannot change it)."""
    n, num_exits, c = ls.logits.shape
    out = np.empty((n, num_exits), dtype=np.int64)
    step = chunk_rows(c * num_exits)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = np.asarray(ls.logits[start:stop]).argmax(axis=2)
    return out


def exit_correct(ls: LogitSet) -> np.ndarray:
    """(N, K) bool: is exit k's top-1 prediction of sample i right."""
    return exit_predictions(ls) == ls.labels[:, None]


def exit_scores(
    ls: LogitSet, score: str | ScoreFn = "confidence", calibration: Calibration | None = None
) -> np.ndarray:
    """(N, K) scores of every sample at every exit, in the compute dtype of the cache."""
    fn = get_score(score) if isinstance(score, str) else score
    n, num_exits, _ = ls.logits.shape
    out = np.empty((n, num_exits), dtype=compute_dtype(ls.logits.dtype))
    for ch in iter_exit_chunks(ls, calibration):
        out[ch.start : ch.stop, ch.k] = fn(ch.probs)
    return out
