"""Model-internal ensembling (MIE, Meronen et al.): calibration quality on real logits, the
ensemble's predictions, policies scored on them, and temperature scaling before MIE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_data import SHARED_DATA

from eebench.errors import DataError
from eebench.evaluate import anytime_table, budgeted_curve, summarize
from eebench.policies import (
    CALIBRATIONS,
    TemperatureScaling,
    exit_correct,
    exit_predictions,
    make_calibration,
    make_policy,
)
from eebench.policies.ensemble import ModelInternalEnsemble, TemperatureMIE
from eebench.policies.scores import scores_and_predictions
from eebench.store.logitset import LogitSet
from eebench.store.splits import split_logitset


@pytest.fixture(scope="module")
def cifar() -> tuple[LogitSet, LogitSet]:
    path = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    z = np.load(path)
    ls = LogitSet(np.ascontiguousarray(np.swapaxes(z["logits"], 0, 1)), z["labels"],
                  np.array([1.0, 2.0, 3.5, 5.0, 7.0, 9.0]))
    return split_logitset(ls, val_fraction=0.5, seed=0)


@pytest.fixture(scope="module")
def mie(cifar: tuple[LogitSet, LogitSet]) -> ModelInternalEnsemble:
    return make_calibration("mie").fit(cifar[0])


def _softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ensemble64(ls: LogitSet, weights: np.ndarray) -> np.ndarray:
    """The rule written out in float64: running cost-weighted means of the softmaxes."""
    p = _softmax64(np.asarray(ls.logits, dtype=np.float64))
    cum = np.cumsum(p * weights[None, :, None], axis=1)
    return cum / np.cumsum(weights)[None, :, None]


def test_registered_and_described(mie: ModelInternalEnsemble, cifar) -> None:
    assert {"mie", "temperature+mie"} <= set(CALIBRATIONS)
    assert mie.changes_predictions and TemperatureMIE.changes_predictions
    d = mie.describe()
    val = cifar[0]
    assert d["name"] == "mie" and d["weights"] == "cost" and "cost" in d["rule"]
    assert d["exit_weights"] == pytest.approx((val.costs / val.costs[-1]).tolist())
    json.dumps(d)  # plain data
    uniform = ModelInternalEnsemble(weights="uniform").fit(val)
    assert uniform.exit_weights_.tolist() == [1.0] * val.num_exits
    with pytest.raises(ValueError, match="uniform"):
        ModelInternalEnsemble(weights="flops")


def test_mie_lowers_nll_of_later_exits(mie: ModelInternalEnsemble, cifar) -> None:
    val, test = cifar
    # validation, as recorded by fit; the first exit is its own ensemble
    assert mie.nll_after_[0] == pytest.approx(mie.nll_before_[0], rel=1e-6)
    assert (mie.nll_after_[1:] < mie.nll_before_[1:]).all()
    # test split, through the anytime table
    before, after = anytime_table(test), anytime_table(test, calibration=mie)
    assert (after.nll.to_numpy()[1:] < before.nll.to_numpy()[1:] - 1e-3).all()
    assert after.top1.tolist() == pytest.approx(exit_correct(test, mie).mean(axis=0).tolist())


def test_probabilities_and_predictions_are_the_ensembles(mie: ModelInternalEnsemble, cifar) -> None:
    _, test = cifar
    ref = _ensemble64(test, mie.exit_weights_)
    block = np.asarray(test.logits[:400], dtype=np.float32)
    probs = mie.block_probabilities(test, 0, 400, block.copy())
    np.testing.assert_allclose(probs, ref[:400], rtol=2e-5, atol=1e-7)
    # the first exit keeps its own distribution exactly
    p0 = np.exp(block[:, 0] - block[:, 0].max(-1, keepdims=True))
    np.testing.assert_array_equal(probs[:, 0], p0 / p0.sum(-1, keepdims=True))
    preds = exit_predictions(test, mie)
    top2 = np.sort(ref, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # float32 cannot flip these
    np.testing.assert_array_equal(preds[clear], ref.argmax(-1)[clear])
    raw = exit_predictions(test)
    assert (preds[:, 1:] != raw[:, 1:]).any(), "ensembling should change some predictions"
    _, kept = scores_and_predictions(test, "confidence", mie)
    np.testing.assert_array_equal(kept, preds)


def test_policy_with_mie_is_scored_on_ensemble_predictions(cifar) -> None:
    val, test = cifar
    # threshold 2 > any confidence: every sample reaches the last exit
    policy = make_policy("confidence", "sweep", calibration="mie", grid=[0.0, 2.0])
    curve = budgeted_curve(policy, val, test)
    ens_acc = exit_correct(test, policy.calibration_).mean(axis=0)
    raw_acc = exit_correct(test).mean(axis=0)
    assert ens_acc[-1] != raw_acc[-1]
    assert curve.test_acc.tolist() == [ens_acc[0], ens_acc[-1]]
    assert json.loads(curve.calibration.iloc[0])["name"] == "mie"
    np.testing.assert_array_equal(policy.correct(test), exit_correct(test, policy.calibration_))
    # the bootstrap reads the same predictions (else it refuses the points as not matching)
    s = summarize(curve, n_boot=20, test=test, points={policy.name: policy})
    assert np.isfinite(s.loc[s.metric == "mean_accuracy", "ci_low"]).all()
    # a geometric policy thresholds the ensemble's confidence
    geo = budgeted_curve(make_policy("confidence", calibration="mie", grid="msdnet"), val, test)
    assert len(geo) == 39 and geo.test_acc.between(0, 1).all()


def test_temperature_then_mie(cifar) -> None:
    val, test = cifar
    both = make_calibration("temperature+mie").fit(val)
    alone = TemperatureScaling().fit(val)
    np.testing.assert_array_equal(both.temperature_.temperatures_, alone.temperatures_)
    assert both.describe()["base"]["temperatures"] == alone.describe()["temperatures"]
    assert "temperatures" not in both.describe()  # only the ensemble's rule is top level
    block = np.asarray(test.logits[:300], dtype=np.float32)
    plain = ModelInternalEnsemble().fit(val)
    tempered = plain.combine(alone.block_probabilities(test, 0, 300, block.copy()))
    np.testing.assert_array_equal(both.block_probabilities(test, 0, 300, block.copy()), tempered)
    assert (both.nll_after_[1:] < both.nll_before_[1:]).all()


def test_mie_needs_costs_or_uniform_weights() -> None:
    rng = np.random.default_rng(0)
    ls = LogitSet(rng.normal(size=(50, 3, 4)).astype(np.float32), rng.integers(0, 4, 50),
                  [np.nan] * 3)
    with pytest.raises(DataError, match="uniform"):
        ModelInternalEnsemble().fit(ls)
    fitted = ModelInternalEnsemble(weights="uniform").fit(ls)
    with pytest.raises(ValueError, match="3 exits"):
        fitted.block_probabilities(ls, 0, 5, np.zeros((5, 2, 4), dtype=np.float32))
