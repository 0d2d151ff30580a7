"""Last-layer Laplace calibration: what it fits on a known linear softmax model, that its
predictive is the stated formula, that it never does worse than no calibration on the
validation set, and that it says how to get features when a cache has none."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from eebench.errors import DataError
from eebench.policies.laplace import LaplaceCalibration
from eebench.store import LogitSet

D, C = 6, 4


def linear_softmax_set(n: int, scale: float, seed: int, k_exits: int = 2) -> LogitSet:
    """Features phi ~ N(0, I) and labels drawn from the true model softmax(W phi + b); exit k
    sees phi plus k features the true model ignores (width D + k), and its stored logits are
    ``scale`` times the true ones, i.e. the outputs of the last layer (scale [W, 0], scale b):
    overconfident for scale > 1, underconfident below."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(100).standard_normal((C, D))
    b = np.random.default_rng(200).standard_normal(C) * 0.5
    phi = rng.standard_normal((n, D))
    true = phi @ w.T + b
    u = rng.random(n)[:, None]
    labels = (u > np.cumsum(softmax(true, axis=1), axis=1)).sum(axis=1).clip(0, C - 1)
    feats = [np.hstack([phi, rng.standard_normal((n, k))]).astype(np.float32)
             for k in range(k_exits)]
    logits = np.repeat((scale * true)[:, None, :], k_exits, axis=1).astype(np.float32)
    return LogitSet(logits, labels, np.arange(1.0, k_exits + 1), features=feats)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-300))))


def calibrated(cal: LaplaceCalibration, ls: LogitSet) -> np.ndarray:
    return cal.block_probabilities(ls, 0, ls.num_samples, np.array(ls.logits, dtype=np.float32))


def naive_variances(ls: LogitSet, k: int, tau: float) -> np.ndarray:
    """var_c(x) from the full (C (D+1))^2 posterior covariance inv(U kron V), built from the
    formulas of the docstring without any eigendecomposition."""
    n = ls.num_samples
    pt = np.hstack([np.asarray(ls.features[k], dtype=np.float64), np.ones((n, 1))])
    p = softmax(np.asarray(ls.logits[:, k], dtype=np.float64), axis=1)
    a = pt.T @ pt / n
    b = (np.diag(p.sum(axis=0)) - p.T @ p) / n
    u = math.sqrt(n) * b + math.sqrt(tau) * np.eye(C)
    v = math.sqrt(n) * a + math.sqrt(tau) * np.eye(pt.shape[1])
    sigma = np.linalg.inv(np.kron(u, v))  # parameters ordered as W (C, D+1), row-major
    out = np.empty((n, C))
    for c in range(C):
        j = np.zeros((n, C * pt.shape[1]))
        j[:, c * pt.shape[1]:(c + 1) * pt.shape[1]] = pt  # d f_c / d vec(W)
        out[:, c] = np.einsum("ni,ij,nj->n", j, sigma, j)
    return out


def test_laplace_lowers_the_nll_of_an_overconfident_set_and_generalises() -> None:
    val, test = linear_softmax_set(1500, 3.0, 0), linear_softmax_set(1500, 3.0, 1)
    cal = LaplaceCalibration().fit(val)
    d = cal.describe()
    json.dumps(d)
    assert d["name"] == "laplace" and all(t is not None and t > 0 for t in d["prior_precisions"])
    for k in range(2):
        raw_val = nll(softmax(np.asarray(val.logits[:, k], dtype=np.float64), axis=1), val.labels)
        assert d["nll_before"][k] == pytest.approx(raw_val, rel=1e-9)
        assert d["nll_after"][k] < d["nll_before"][k] - 0.05
        # the reported NLL is the NLL of what block_probabilities returns
        assert nll(calibrated(cal, val)[:, k], val.labels) == pytest.approx(d["nll_after"][k],
                                                                             rel=1e-4)
        raw_test = -np.mean(log_softmax(np.asarray(test.logits[:, k], np.float64), axis=1)[
            np.arange(test.num_samples), test.labels])
        assert nll(calibrated(cal, test)[:, k], test.labels) < raw_test - 0.05


def test_the_predictive_is_the_stated_kronecker_probit_formula() -> None:
    ls = linear_softmax_set(300, 3.0, 2)
    cal = LaplaceCalibration().fit(ls)
    probs = calibrated(cal, ls)
    for k in range(2):
        tau = cal.prior_precisions_[k]
        var = naive_variances(ls, k, tau)
        np.testing.assert_allclose(cal.logit_variances(ls, k, 0, ls.num_samples), var, rtol=1e-7)
        f = np.asarray(ls.logits[:, k], dtype=np.float64)
        scaled = f / np.sqrt(1 + math.pi / 8 * var)
        # float32 softmax of float32 inputs against float64: a few ulps of float32
        np.testing.assert_allclose(probs[:, k], softmax(scaled, axis=1), rtol=1e-5, atol=1e-7)
        # top-1 changes only through the per-class variance scaling: where it moves, the
        # scaled logits say so, and the predicted class is never one the scaling does not favour
        pred = probs[:, k].argmax(axis=1)
        sure = np.sort(scaled, axis=1)[:, -1] - np.sort(scaled, axis=1)[:, -2] > 1e-4
        np.testing.assert_array_equal(pred[sure], scaled.argmax(axis=1)[sure])
        # a sub-rows block gives the same rows
        block = np.array(ls.logits[10:20], dtype=np.float32)
        np.testing.assert_array_equal(cal.block_probabilities(ls, 10, 20, block), probs[10:20])


def test_an_underconfident_set_is_left_as_it_is() -> None:
    ls = linear_softmax_set(800, 0.3, 3)
    cal = LaplaceCalibration().fit(ls)
    d = cal.describe()
    assert d["prior_precisions"] == [None, None]
    assert d["nll_after"] == d["nll_before"]
    probs = calibrated(cal, ls)
    np.testing.assert_allclose(probs, softmax(np.asarray(ls.logits, np.float64), axis=2),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(probs.argmax(axis=2), np.asarray(ls.logits).argmax(axis=2))


def test_never_worse_than_no_calibration_on_validation() -> None:
    for scale, seed in ((0.5, 4), (1.0, 5), (1.5, 6), (6.0, 7)):
        ls = linear_softmax_set(400, scale, seed)
        d = LaplaceCalibration().fit(ls).describe()
        for before, after in zip(d["nll_before"], d["nll_after"], strict=True):
            assert after <= before


def test_without_features_it_says_how_to_get_them() -> None:
    ls = linear_softmax_set(50, 2.0, 8)
    bare = LogitSet(ls.logits, ls.labels, ls.costs)
    with pytest.raises(DataError) as err:
        LaplaceCalibration().fit(bare)
    msg = str(err.value)
    assert "\n" not in msg and "features = true" in msg and "--features" in msg
    cal = LaplaceCalibration().fit(ls)
    with pytest.raises(DataError, match="features = true"):
        cal.block_probabilities(bare, 0, 5, np.array(bare.logits[:5]))
    assert cal.cache_key() == LaplaceCalibration().fit(ls).cache_key()


def test_fits_a_store_entry_extracted_with_features(tmp_path) -> None:
    import torch
    from test_store import BATCH, CHUNK, TinyDataset, TinyExitModel, tiny_identity

    from eebench.store import LogitStore, extract_logits

    torch.set_num_threads(1)
    store = LogitStore(tmp_path)
    model = TinyExitModel()  # N(0, 1) weights on random images: logits of size ~10, labels random
    key = extract_logits(model, TinyDataset(n=200), store, tiny_identity(model), costs=[1, 2],
                         batch_size=BATCH * 8, chunk_size=CHUNK * 8, progress=False,
                         features=True)
    ls = store.get(key)
    cal = LaplaceCalibration().fit(ls)
    d = cal.describe()
    assert all(a < b for a, b in zip(d["nll_after"], d["nll_before"], strict=True))
    probs = np.concatenate([
        cal.block_probabilities(ls, s, min(s + 64, 200), np.array(ls.logits[s:s + 64]))
        for s in range(0, 200, 64)])
    assert probs.shape == (200, 2, 4)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, rtol=1e-5)


def test_the_grid_reaches_further_down_when_its_lowest_prior_is_best() -> None:
    ls = linear_softmax_set(600, 6.0, 9)
    wide = LaplaceCalibration().fit(ls)
    narrow = LaplaceCalibration(span_decades=(-3.0, 6.0)).fit(ls)  # the best lies below -3
    center = math.log10(np.mean((np.asarray(ls.features[0], np.float64) ** 2).sum(axis=1) + 1))
    assert math.log10(narrow.prior_precisions_[0]) < center - 3
    np.testing.assert_allclose(narrow.nll_after_, wide.nll_after_, rtol=1e-3)
    with pytest.raises(ValueError, match="span_decades"):
        LaplaceCalibration(span_decades=(1.0, -1.0))


def test_scores_read_the_calibrated_predictive_block_by_block() -> None:
    from eebench.policies.scores import scores_and_predictions

    val, test = linear_softmax_set(300, 4.0, 10), linear_softmax_set(200, 4.0, 11)
    cal = LaplaceCalibration().fit(val)
    conf, pred = scores_and_predictions(test, "confidence", cal, rows=7)
    probs = calibrated(cal, test)
    np.testing.assert_allclose(conf, probs.max(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(pred, probs.argmax(axis=2))
