"""Scores and predictions computed block by block: the logit fast path against the softmax
path, block-size independence, the multi-exit scores, and the per-set result memory."""

from __future__ import annotations

import numpy as np
import pytest

from eebench.evaluate import budgeted_curve
from eebench.policies import TemperatureScaling, make_policy, score_cache
from eebench.policies import scores as S
from eebench.policies.scores import (
    exit_correct,
    exit_predictions,
    exit_scores,
    max_probability,
    negative_entropy,
    scores_and_predictions,
    softmax_parts,
    top2_margin,
)
from eebench.store.logitset import LogitSet
from eebench.store.splits import split_logitset

SINGLE = {"confidence": max_probability, "entropy": negative_entropy, "margin": top2_margin}


def _set(n: int, k: int, c: int, dtype: type, seed: int, kind: str = "logits") -> LogitSet:
    """Logits with saturated rows (exp underflows to 0), exact ties for the top class, and
    rows whose float32 confidence rounds to 1.0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, k, c))
    z[: n // 4] *= 30  # saturation
    if c > 1:
        z[n // 4 : n // 3, :, 1] = z[n // 4 : n // 3, :, 0] = z[n // 4 : n // 3].max(-1) + 1
    labels = rng.integers(0, c, n)
    if kind == "probabilities":
        p = np.exp(z - z.max(-1, keepdims=True))
        z = p / p.sum(-1, keepdims=True)
    return LogitSet(z.astype(dtype), labels, np.arange(1, k + 1.0), kind=kind)


def _reference(ls: LogitSet, fn, calibration=None) -> np.ndarray:
    """Per exit: softmax (or the stored probabilities), then the score of one exit."""
    dt = S.compute_dtype(ls.logits.dtype)
    out = np.empty((ls.num_samples, ls.num_exits), dtype=dt)
    for k in range(ls.num_exits):
        raw = np.asarray(ls.logits[:, k, :]).astype(dt)
        if calibration is not None:
            probs, _ = softmax_parts(calibration.transform(raw, k, ls.kind), False)
        elif ls.kind == "probabilities":
            probs = raw
        else:
            probs, _ = softmax_parts(raw, False)
        out[:, k] = fn(probs)
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("c", [1, 2, 3, 10, 257])
def test_fast_path_equals_softmax_path_bit_for_bit(dtype: type, c: int) -> None:
    # The fast path performs the same float operations on every element (exp(z - max),
    # the pairwise row sum, one IEEE division), only without materialising the softmax,
    # so the numbers must be identical, saturation ties included.
    ls = _set(240, 3, c, dtype, seed=c)
    for name, fn in SINGLE.items():
        got, preds = scores_and_predictions(ls, name)
        ref = _reference(ls, fn)
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref, err_msg=name)
        np.testing.assert_array_equal(preds, np.asarray(ls.logits).argmax(-1))
    conf = scores_and_predictions(ls, "confidence")[0]
    if dtype != np.float64:
        assert (conf == 1.0).sum() > 0, "saturated float32 confidences must stay exactly 1.0"


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_temperature_block_path_equals_per_exit_transform(kind: str) -> None:
    ls = _set(300, 4, 12, np.float32, seed=3, kind=kind)
    ts = TemperatureScaling().fit(ls)
    for name, fn in SINGLE.items():
        np.testing.assert_array_equal(
            scores_and_predictions(ls, name, ts)[0], _reference(ls, fn, ts), err_msg=name
        )
    # block probabilities are softmax(block logits), exit by exit the old transform
    block = np.asarray(ls.logits[:50], dtype=np.float32)
    probs = ts.block_probabilities(ls, 0, 50, block.copy())
    for k in range(ls.num_exits):
        ref, _ = softmax_parts(ts.transform(block[:, k], k, kind), False)
        np.testing.assert_array_equal(probs[:, k], ref)
    assert TemperatureScaling.changes_predictions is False
    np.testing.assert_array_equal(exit_predictions(ls, ts), exit_predictions(ls))


def test_probabilities_are_used_as_stored() -> None:
    p = np.array([[[0.5, 0.3, 0.1]], [[0.2, 0.2, 0.5]]], dtype=np.float32)  # sums 0.9
    ls = LogitSet(p, [0, 2], [1.0], kind="probabilities")
    assert exit_scores(ls, "confidence")[:, 0].tolist() == [np.float32(0.5), np.float32(0.5)]
    assert exit_scores(ls, "margin")[:, 0] == pytest.approx([0.2, 0.3])


def test_results_do_not_depend_on_the_block_size() -> None:
    ls = _set(203, 5, 30, np.float16, seed=9)
    for name in ("confidence", "entropy", "margin", "patience", "ensemble-confidence"):
        base = S._compute(ls, S.get_score(name), None, None)
        for rows in (1, 7, 64):
            got = S._compute(ls, S.get_score(name), None, rows)
            np.testing.assert_array_equal(got[0], base[0], err_msg=f"{name}, rows={rows}")
            np.testing.assert_array_equal(got[1], base[1])


def test_patience_counts_agreeing_exits_in_a_row() -> None:
    # predictions per exit: sample 0: 1 1 2 2 2; sample 1: 0 0 0 0 0; sample 2: 0 1 0 1 0
    preds = np.array([[1, 1, 2, 2, 2], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0]])
    z = np.full((3, 5, 3), -5.0, dtype=np.float32)
    for i in range(3):
        z[i, np.arange(5), preds[i]] = 5.0
    ls = LogitSet(z, [2, 0, 1], np.arange(1, 6.0))
    s, p = scores_and_predictions(ls, "patience")
    assert s.tolist() == [[1, 2, 1, 2, 3], [1, 2, 3, 4, 5], [1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(p, preds)
    assert S.score_is_integer("patience") and not S.score_is_integer("confidence")
    # "exit once the prediction has held for 2 exits": sample 0 leaves at exit 1, sample 2 never
    (pt,) = make_policy("patience", "sweep", grid=[2.0]).fit(ls).apply(ls)
    assert pt.exits.tolist() == [1, 1, 4]


def test_ensemble_confidence_keeps_each_exits_prediction() -> None:
    p = np.array([[[0.6, 0.4], [0.2, 0.8]], [[0.9, 0.1], [0.7, 0.3]]], dtype=np.float32)
    ls = LogitSet(p, [1, 0], [1.0, 2.0], kind="probabilities")
    s, preds = scores_and_predictions(ls, "ensemble-confidence")
    # exit 1 of sample 0: mean (0.4, 0.6) -> 0.6; sample 1: mean (0.8, 0.2) -> 0.8
    assert s[:, 0] == pytest.approx([0.6, 0.9]) and s[:, 1] == pytest.approx([0.6, 0.8])
    assert preds.tolist() == [[0, 1], [0, 0]]  # exit k's own arg-max, not the ensemble's


def test_multi_exit_scores_refuse_one_exit_at_a_time() -> None:
    with pytest.raises(ValueError, match="every exit"):
        S.get_score("patience")(np.ones((3, 4)) / 4)
    with pytest.raises(ValueError, match="ensemble-confidence, entropy, margin, patience"):
        S.get_score("patiense")


def test_results_are_kept_per_set_and_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ls = _set(120, 3, 6, np.float32, seed=2)
    calls = []
    real = S._compute
    monkeypatch.setattr(S, "_compute", lambda *a: calls.append(a[1]) or real(*a))
    s1, p1 = scores_and_predictions(ls, "confidence")
    s2, p2 = scores_and_predictions(ls, "confidence")
    assert s1 is s2 and p1 is p2 and len(calls) == 1
    assert not s1.flags.writeable and not p1.flags.writeable
    assert exit_scores(ls).flags.writeable and exit_correct(ls).flags.writeable
    # two temperature calibrations fit alike share one computation
    a, b = TemperatureScaling().fit(ls), TemperatureScaling().fit(ls)
    assert scores_and_predictions(ls, "entropy", a)[0] is scores_and_predictions(ls, "entropy", b)[0]
    assert len(calls) == 2
    # predictions are shared by every score without a prediction-changing calibration
    assert scores_and_predictions(ls, "margin")[1] is p1
    # replacing the logits forgets everything
    ls.logits = ls.logits * 2
    s3, _ = scores_and_predictions(ls, "confidence")
    assert s3 is not s1 and not np.array_equal(s3, s1)
    score_cache.clear(ls)
    assert scores_and_predictions(ls, "confidence")[0] is not s3


def test_budgeted_curve_scores_each_split_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ls = _set(600, 3, 8, np.float16, seed=5)
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    seen: list[int] = []
    real_scores, real_preds = S._compute, S._compute_predictions
    monkeypatch.setattr(S, "_compute", lambda *a: seen.append(id(a[0])) or real_scores(*a))
    monkeypatch.setattr(S, "_compute_predictions", lambda *a: pytest.fail("second pass"))
    for policy in (make_policy("confidence", grid="msdnet"), make_policy("confidence", "sweep")):
        budgeted_curve(policy, val, test)
    assert sorted(seen) == sorted([id(val), id(test)])
    monkeypatch.setattr(S, "_compute_predictions", real_preds)
