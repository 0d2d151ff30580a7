"""Confidence scores: one number per sample and exit, higher meaning "exit now".

A policy thresholds a score, so every score here is oriented the same way
(higher = more confident): the entropy score is the *negative* entropy.

The unit of work is a BLOCK of samples with ALL exits, ``ls.logits[start:stop]``,
which is one contiguous piece of the (N, K, C) cache (a memory map is read once,
front to back). A block is converted to the compute dtype (float32; float64 only
for float64 caches), calibrated (eebench.policies.calibration describes the
protocol), and turned into scores and predictions in one pass:
:func:`scores_and_predictions`. Its results are kept per LogitSet (see
eebench.policies.score_cache), so every policy that thresholds the same score
under the same fitted calibration shares one computation per split.

Float32 saturation is kept on purpose: confidences that round to exactly 1.0
tie, as they do in MSDNet's cached softmax, which the threshold rule's tie
handling depends on. The logit fast path computes exactly the float32 numbers
of ``max(softmax(z))`` without materialising the softmax: the top probability
is ``1 / sum(exp(z - max))`` (the top entry of ``exp(z - max)`` is exactly 1),
the margin is ``(1 - e2) / s`` read as ``1/s - e2/s`` with ``e2`` the second
largest ``exp(z - max)``; negative entropy divides in place and sums
``p log p`` as the probability path does, so all three are bit-identical to
scoring the softmax.

For ``kind="probabilities"`` caches without calibration the stored values are
used as they are (no renormalisation), exactly like the reference code that
takes ``max`` over cached softmax outputs.

Scores that read several exits of a sample (``patience``, ``ensemble-confidence``)
are :class:`MultiExitScore` objects; they get the whole (rows, K, C) block of
(calibrated) probabilities and the (rows, K) predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import eebench.policies.score_cache as score_cache
from eebench.errors import InputError, InputTypeError
from eebench.registry import Registry

if TYPE_CHECKING:
    from eebench.store.logitset import LogitSet

ScoreFn = Callable[[np.ndarray], np.ndarray]

_TINY = 1e-300
_CHUNK_ELEMENTS = 1 << 23  # about 32 MB of float32 per temporary (exit-by-exit chunks)
_BLOCK_ELEMENTS = 1 << 18  # about 1 MB of float32 per block: the temporaries stay in cache


class Calibration(Protocol):
    """What a fitted calibration offers to the score computation (see
    eebench.policies.calibration for the whole protocol).

    Optional extras: ``block_logits(ls, start, stop, block)`` (calibrated logits of a
    block, for calibrations that are a per-exit map of logits, so that the fast logit
    path applies), ``cache_key()`` (hashable, identifies the fitted state completely;
    without it results are shared only while the same calibration object is used).
    """

    name: str
    changes_predictions: bool

    def block_probabilities(
        self, ls: LogitSet, start: int, stop: int, block: np.ndarray
    ) -> np.ndarray:
        """(stop - start, K, C) calibrated probabilities of samples start:stop."""
        ...

    def describe(self) -> dict:
        ...


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 for float64 caches, float32 for everything else (float16, float32, ints)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def prediction_dtype(num_classes: int) -> np.dtype:
    """Smallest signed integer type that holds a class index."""
    for dt in (np.int8, np.int16, np.int32):
        if num_classes <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def chunk_rows(num_classes: int) -> int:
    """Samples per chunk so that one (rows, classes) temporary stays near 32 MB."""
    return max(1, _CHUNK_ELEMENTS // max(1, num_classes))


def block_rows(num_exits: int, num_classes: int, elements: int = _BLOCK_ELEMENTS) -> int:
    """Samples per block so that one (rows, exits, classes) temporary holds about
    ``elements`` values (small enough to stay in the CPU cache while it is worked on)."""
    return max(1, elements // max(1, num_exits * num_classes))


def iter_blocks(ls: LogitSet, rows: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, block)``: ``block`` is a private compute-dtype copy of
    ``ls.logits[start:stop]`` (all exits), which the caller may overwrite."""
    n, k, c = ls.logits.shape
    dt = compute_dtype(ls.logits.dtype)
    step = int(rows) if rows else block_rows(k, c)
    if step < 1:
        raise InputError(f"rows must be a positive number of samples per block, got {rows}")
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield start, stop, np.array(ls.logits[start:stop], dtype=dt)


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
    """Softmax over the last axis as ``exp(z - max) / sum`` (the formula of the
    frameworks), and log-softmax; ``z`` is left as it is."""
    m = z.max(axis=-1, keepdims=True)
    sh = z - m
    e = np.exp(sh)
    s = e.sum(axis=-1, keepdims=True)
    probs = e / s
    logp = (sh - np.log(s)) if need_logp else None
    return probs, logp


def _log_probs(probs: np.ndarray, kind_tiny: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(probs, kind_tiny))


def calibrated_block(
    ls: LogitSet,
    start: int,
    stop: int,
    block: np.ndarray,
    calibration: Calibration | None,
    need_logp: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, log-probabilities or None) of a block, (rows, K, C) each.

    Without calibration: the softmax of logits, or the stored values of a cache of
    probabilities (their logarithm clipped at 1e-300, which float32 rounds to 0).
    Calibrations that offer ``block_logits`` go through the same softmax (so that
    log-probabilities are ``z - logsumexp(z)``, not the log of rounded probabilities);
    others give probabilities whose logarithm is clipped at the dtype's smallest normal.
    ``block`` may be overwritten.
    """
    if calibration is None:
        if ls.kind == "probabilities":
            return block, (_log_probs(block, _TINY) if need_logp else None)
        return softmax_parts(block, need_logp)
    if hasattr(calibration, "block_logits"):
        return softmax_parts(calibration.block_logits(ls, start, stop, block), need_logp)
    if hasattr(calibration, "block_probabilities"):
        probs = calibration.block_probabilities(ls, start, stop, block)
        if probs.shape != block.shape:
            raise InputError(
                f"calibration {getattr(calibration, 'name', calibration)!r} returned probabilities "
                f"of shape {probs.shape} for a block of shape {block.shape}"
            )
        tiny = float(np.finfo(probs.dtype).tiny)
        return probs, (_log_probs(probs, tiny) if need_logp else None)
    if hasattr(calibration, "transform"):  # per-exit calibrated logits (older protocol)
        z = np.stack(
            [calibration.transform(block[:, k], k, ls.kind) for k in range(block.shape[1])], axis=1
        )
        return softmax_parts(z, need_logp)
    raise InputTypeError(
        f"{type(calibration).__name__} is not a calibration: it has no block_probabilities "
        "(see eebench.policies.calibration)"
    )


def iter_probability_blocks(
    ls: LogitSet,
    calibration: Calibration | None = None,
    *,
    need_logp: bool = False,
    rows: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(start, stop, raw, probs, logp)`` per block of samples with all exits: ``raw`` is
    the block as stored (compute dtype), ``probs``/``logp`` its calibrated probabilities."""
    for start, stop, raw in iter_blocks(ls, rows):
        work = raw if (calibration is None and ls.kind == "logits") else raw.copy()
        probs, logp = calibrated_block(ls, start, stop, work, calibration, need_logp)
        yield start, stop, raw, probs, logp


def iter_exit_chunks(
    ls: LogitSet,
    calibration: Calibration | None = None,
    *,
    need_logp: bool = False,
    rows: int | None = None,
) -> Iterator[ExitChunk]:
    """Probabilities per exit and block of samples (a view of the block-wise computation;
    chunks come block by block, each block's exits in order)."""
    for start, stop, raw, probs, logp in iter_probability_blocks(
        ls, calibration, need_logp=need_logp, rows=rows
    ):
        for k in range(raw.shape[1]):
            yield ExitChunk(
                k, start, stop, raw[:, k], probs[:, k], None if logp is None else logp[:, k]
            )


# ---------------------------------------------------------------- score functions


def max_probability(probs: np.ndarray) -> np.ndarray:
    """Maximum softmax probability (MSDNet, RANet, DVT, ...), over the last axis."""
    return probs.max(axis=-1)


def negative_entropy(probs: np.ndarray) -> np.ndarray:
    """``sum p log p`` (minus the entropy), so that higher means more confident; 0 log 0 = 0."""
    pos = probs > 0
    plogp = np.where(pos, probs * np.log(np.where(pos, probs, 1)), 0)
    return plogp.sum(axis=-1)


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability (equals the top-1 probability with one class)."""
    c = probs.shape[-1]
    if c < 2:
        return probs[..., 0].copy()
    top = np.partition(probs, c - 2, axis=-1)[..., c - 2 :]
    return top[..., 1] - top[..., 0]


@dataclass(frozen=True)
class MultiExitScore:
    """A score that reads several exits of a sample at once.

    ``fn(probs, predictions)`` gets the (rows, K, C) calibrated probabilities (None
    when ``needs_probabilities`` is False) and the (rows, K) predictions, and returns
    (rows, K) scores. ``integer``: the score takes whole-number values only.
    """

    name: str
    fn: Callable[[np.ndarray | None, np.ndarray], np.ndarray]
    needs_probabilities: bool
    integer: bool = False

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        raise InputError(
            f"score {self.name!r} reads every exit of a sample, not one exit's probabilities; "
            "compute it with eebench.policies.scores.scores_and_predictions (or exit_scores)"
        )


def patience_counts(probs: np.ndarray | None, predictions: np.ndarray) -> np.ndarray:
    """PABEE's patience, counting the exit itself.

    At exit k: the number of consecutive exits ending at k whose prediction equals
    exit k's (1 at the first exit, and wherever the prediction just changed). A
    threshold p therefore reads "exit once the prediction has stayed the same for p
    consecutive exits"; PABEE's patience t (changes-free steps after the first
    prediction) is the threshold t + 1. Values are whole numbers in the compute dtype.
    """
    n, k = predictions.shape
    dt = probs.dtype if probs is not None else np.float32
    out = np.ones((n, k), dtype=dt)
    for j in range(1, k):
        same = predictions[:, j] == predictions[:, j - 1]
        out[same, j] = out[same, j - 1] + 1
    return out


def ensemble_confidence(probs: np.ndarray | None, predictions: np.ndarray) -> np.ndarray:
    """Cumulative-ensemble confidence: at exit k the top probability of the uniform
    mean of the (calibrated) probabilities of exits 1..k.

    Only the score is ensembled: the prediction of exit k stays exit k's own (unless a
    calibration changes predictions, e.g. ``mie``, whose predictions are then used).
    The running sum is accumulated in exit order in the compute dtype.
    """
    assert probs is not None
    k = probs.shape[1]
    out = np.empty(probs.shape[:2], dtype=probs.dtype)
    running = probs[:, 0].copy()
    out[:, 0] = running.max(axis=-1)
    for j in range(1, k):
        running += probs[:, j]
        out[:, j] = running.max(axis=-1)
    out /= np.arange(1, k + 1, dtype=probs.dtype)  # max(sum / j) == max(sum) / j exactly
    return out


PATIENCE = MultiExitScore("patience", patience_counts, needs_probabilities=False, integer=True)
ENSEMBLE_CONFIDENCE = MultiExitScore(
    "ensemble-confidence", ensemble_confidence, needs_probabilities=True
)

SCORES: Registry[ScoreFn | MultiExitScore] = Registry("score", where="eebench policies")
"""Exit scores: a function of one exit's probabilities (N, C) -> (N,), or a MultiExitScore
that reads exits 0..k. Register one with ``SCORES.register("name", fn)``."""
SCORES.register("confidence", max_probability)
SCORES.register("entropy", negative_entropy)
SCORES.register("margin", top2_margin)
SCORES.register("patience", PATIENCE)
SCORES.register("ensemble-confidence", ENSEMBLE_CONFIDENCE)

#: built-in single-exit scores that are computed straight from logits (bit-identical)
_LOGIT_FAST: dict[Any, str] = {
    max_probability: "confidence",
    negative_entropy: "entropy",
    top2_margin: "margin",
}


def get_score(name: str) -> ScoreFn | MultiExitScore:
    """The score registered as ``name`` (a function of one exit's probabilities, or a
    MultiExitScore)."""
    return SCORES[name]


def list_scores() -> list[str]:
    return SCORES.names()


def score_is_integer(score: str | ScoreFn | MultiExitScore) -> bool:
    """True for scores with whole-number values only (their thresholds are integers)."""
    fn = get_score(score) if isinstance(score, str) else score
    return bool(getattr(fn, "integer", False))


# ---------------------------------------------------------------- block computation


def _logit_scores(z: np.ndarray, which: str, top: np.ndarray | None) -> np.ndarray:
    """(rows, K) ``which`` score of logits ``z`` (rows, K, C), overwriting ``z``.

    ``top``: the arg-max of ``z`` over classes when known (saves a pass for the margin).
    """
    m = z.max(axis=-1, keepdims=True)
    np.subtract(z, m, out=z)
    if which == "margin" and top is None:
        top = z.argmax(axis=-1)
    np.exp(z, out=z)  # e, with e == 1 exactly at every arg-max
    s = z.sum(axis=-1)
    one = z.dtype.type(1)
    if which == "confidence" or (which == "margin" and z.shape[-1] < 2):
        return one / s
    if which == "entropy":
        np.divide(z, s[..., None], out=z)  # the probabilities
        # log(max(p, smallest subnormal)) is log p wherever p > 0, and 0 * finite = 0 where
        # p == 0 (a -0.0 that cannot change the sum, which always holds the top entry's
        # term), so the sum is bit for bit that of sum(where(p > 0, p log p, 0))
        plogp = np.maximum(z, np.finfo(z.dtype).smallest_subnormal)
        np.log(plogp, out=plogp)
        np.multiply(z, plogp, out=plogp)
        return plogp.sum(axis=-1)
    # margin: drop one arg-max entry (value 1); the largest left is the runner-up
    assert top is not None  # found above when not given
    flat = z.reshape(-1, z.shape[-1])
    flat[np.arange(flat.shape[0]), top.reshape(-1)] = -one
    second = flat.max(axis=-1).reshape(s.shape)
    return one / s - second / s


def _resolve_score(score: str | ScoreFn | MultiExitScore) -> tuple[str | None, Any]:
    if isinstance(score, str):
        fn = get_score(score)
        return SCORES.key(score), fn
    if isinstance(score, MultiExitScore):
        return (score.name if SCORES.get(score.name) is score else None), score
    if callable(score):
        return None, score
    raise InputTypeError(f"score must be a name or a function of probabilities, got {type(score).__name__}")


def _changes(calibration: Any) -> bool:
    return calibration is not None and bool(getattr(calibration, "changes_predictions", False))


def _compute(
    ls: LogitSet, fn: Any, calibration: Any, rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    n, k, c = ls.logits.shape
    dt = compute_dtype(ls.logits.dtype)
    scores = np.empty((n, k), dtype=dt)
    preds = np.empty((n, k), dtype=prediction_dtype(c))
    changes = _changes(calibration)
    multi = isinstance(fn, MultiExitScore)
    fast = None if multi else _LOGIT_FAST.get(fn)
    logits_cal = calibration is not None and hasattr(calibration, "block_logits")
    for start, stop, block in iter_blocks(ls, rows):
        sl = slice(start, stop)
        top = None
        if not changes:
            top = block.argmax(axis=-1)
            preds[sl] = top
            if multi and not fn.needs_probabilities:
                scores[sl] = fn.fn(None, preds[sl])
                continue
        if fast is not None and calibration is None and ls.kind == "logits":
            scores[sl] = _logit_scores(block, fast, top)
            continue
        if fast is not None and logits_cal and not changes:
            z = calibration.block_logits(ls, start, stop, block)
            scores[sl] = _logit_scores(z, fast, None)
            continue
        probs, _ = calibrated_block(ls, start, stop, block, calibration)
        if changes:
            preds[sl] = probs.argmax(axis=-1)
        if multi:
            scores[sl] = fn.fn(probs, preds[sl])
        elif fast is not None:
            scores[sl] = fn(probs)
        else:  # a user's function of one exit's (rows, C) probabilities
            scores[sl] = np.stack([fn(probs[:, j]) for j in range(k)], axis=1)
    return scores, preds


def _compute_predictions(ls: LogitSet, calibration: Any, rows: int | None) -> np.ndarray:
    n, k, c = ls.logits.shape
    preds = np.empty((n, k), dtype=prediction_dtype(c))
    changes = _changes(calibration)
    for start, stop, block in iter_blocks(ls, rows):
        if changes:
            probs, _ = calibrated_block(ls, start, stop, block, calibration)
            preds[start:stop] = probs.argmax(axis=-1)
        else:
            preds[start:stop] = block.argmax(axis=-1)
    return preds


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def scores_and_predictions(
    ls: LogitSet,
    score: str | ScoreFn | MultiExitScore = "confidence",
    calibration: Calibration | None = None,
    *,
    rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, K) in the compute dtype, predictions (N, K) small int) in one pass.

    Predictions are the arg-max of the calibrated probabilities when
    ``calibration.changes_predictions`` is true, else every exit's raw arg-max. Results
    of registered scores are kept for ``ls`` (keyed by score and fitted calibration) and
    returned read-only: copy them before writing. ``rows`` sets the block size (the
    results do not depend on it).
    """
    name, fn = _resolve_score(score)
    cache = score_cache.cache_for(ls) if name is not None else None
    cal_key = score_cache.calibration_key(calibration)
    pred_key = ("predictions", cal_key if _changes(calibration) else None)
    if cache is not None and cal_key is not None:
        hit = cache.get(("scores", name, cal_key))
        if hit is not None:
            return hit, cache[pred_key]
    s, p = _compute(ls, fn, calibration, rows)
    s, p = _frozen(s), _frozen(p)
    if cache is not None and cal_key is not None:
        cache[("scores", name, cal_key)] = s
        cache.setdefault(pred_key, p)
        p = cache[pred_key]
    return s, p


def predictions(
    ls: LogitSet, calibration: Calibration | None = None, *, rows: int | None = None
) -> np.ndarray:
    """(N, K) read-only small-int predictions (see scores_and_predictions), kept for ``ls``."""
    cache = score_cache.cache_for(ls)
    cal_key = score_cache.calibration_key(calibration)
    key = ("predictions", cal_key if _changes(calibration) else None)
    if cache is not None and cal_key is not None and key in cache:
        return cache[key]
    p = _frozen(_compute_predictions(ls, calibration, rows))
    if cache is not None and cal_key is not None:
        cache[key] = p
    return p


def correctness(ls: LogitSet, calibration: Calibration | None = None) -> np.ndarray:
    """(N, K) bool: is exit k's prediction of sample i right (from the kept predictions)."""
    return predictions(ls, calibration) == ls.labels[:, None]


# ---------------------------------------------------------------- whole sets (public, copies)


def exit_predictions(ls: LogitSet, calibration: Calibration | None = None) -> np.ndarray:
    """(N, K) int64 arg-max class of every exit (of the calibrated probabilities when the
    calibration changes predictions; temperature cannot)."""
    return predictions(ls, calibration).astype(np.int64)


def exit_correct(ls: LogitSet, calibration: Calibration | None = None) -> np.ndarray:
    """(N, K) bool: is exit k's top-1 prediction of sample i right."""
    return correctness(ls, calibration)


def exit_scores(
    ls: LogitSet,
    score: str | ScoreFn | MultiExitScore = "confidence",
    calibration: Calibration | None = None,
) -> np.ndarray:
    """(N, K) scores of every sample at every exit, in the compute dtype of the cache."""
    return scores_and_predictions(ls, score, calibration)[0].copy()
