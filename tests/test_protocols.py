"""The papers' evaluation protocols: thresholds fit on other outputs, tuned on the test set,
CF-ViT's eta = 1.0, and costs in units other than MACs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eebench.policies.solvers import SENTINEL, SweepSolver
from eebench.runner import run_suite
from eebench.schema import SuiteError
from eebench.suite import load_suite


def _npz(path, seed: int, n: int = 300, k: int = 3, c: int = 5) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(k, n, c)).astype(np.float32)
    for e in range(k):  # later exits are more often right
        logits[e, np.arange(n), labels] += 1.0 + e
    np.savez(path, logits=logits, labels=labels)


SUITE = """
[suite]
name = "{name}"

[[logits]]
label = "net"
source = "{source}"
costs = [1.0, 2.0, 3.0]
cost_unit = "{unit}"
{extra}

[[policies]]
score = "confidence"
solver = "sweep"
thresholds = [0.2, 0.5, 0.9]

[evaluate]
n_boot = 10
"""


def _run(tmp_path, name: str, unit: str = "MACs", extra: str = ""):
    src = tmp_path / "test.npz"
    if not src.exists():
        _npz(src, 0)
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE.format(name=name, source=src, unit=unit, extra=extra))
    out = run_suite(path, store_root=tmp_path / "store", results_root=tmp_path / "results",
                    reports_root=tmp_path / "reports", progress=False)
    curves = pd.read_csv(out.results_dir / "curves.csv")
    meta = json.loads((out.results_dir / "meta.json").read_text())
    return curves, meta, out


def test_tuned_on_test_is_marked_and_fits_on_every_sample(tmp_path) -> None:
    curves, meta, _ = _run(tmp_path, "ontest", extra="tune_on_test = true")
    sweep = curves[curves.policy == "confidence/sweep"]
    assert set(sweep["fit_on"]) == {"test set (tuned on the test set: no held-out split)"}
    assert meta["models"]["net"]["test_samples"] == meta["models"]["net"]["val_samples"] == 300
    # fitting set and test set are the same samples: validation and test numbers coincide
    assert np.array_equal(sweep["val_acc"], sweep["test_acc"])


def test_thresholds_fit_on_another_source(tmp_path) -> None:
    other = tmp_path / "train.npz"
    _npz(other, 1, n=200)
    curves, meta, _ = _run(tmp_path, "other", extra=f'fit_source = "{other}"')
    assert meta["models"]["net"]["val_samples"] == 200
    assert meta["models"]["net"]["test_samples"] == 300
    assert set(curves["fit_on"]) == {f"another source: {other}"}


def test_fit_source_of_another_model_is_refused(tmp_path) -> None:
    other = tmp_path / "train.npz"
    _npz(other, 1, n=200, k=4)
    with pytest.raises(SuiteError, match="same model"):
        _run(tmp_path, "bad", extra=f'fit_source = "{other}"')


def test_costs_in_milliseconds_are_kept_and_labelled(tmp_path) -> None:
    curves, meta, out = _run(tmp_path, "ms", unit="ms")
    assert meta["cost_unit"] == "ms"
    sweep = curves[curves.policy == "confidence/sweep"]
    assert sweep["test_cost"].between(1.0, 3.0).all()  # not multiplied into MACs
    costs = pd.read_csv(out.results_dir / "costs.csv")
    assert list(costs["cost"]) == [1.0, 2.0, 3.0] and set(costs["cost_unit"]) == {"ms"}
    assert costs["gmacs"].isna().all()
    assert "ms" in out.report_index.read_text()


def test_one_suite_one_cost_unit_and_one_fitting_rule(tmp_path) -> None:
    src = tmp_path / "a.npz"
    _npz(src, 0)
    text = SUITE.format(name="mixed", source=src, unit="ms", extra="") + f"""
[[logits]]
label = "other"
source = "{src}"
costs = [1.0, 2.0, 3.0]
cost_unit = "GMACs"
"""
    path = tmp_path / "mixed.toml"
    path.write_text(text)
    with pytest.raises(SuiteError, match="different units"):
        load_suite(path)
    path.write_text(SUITE.format(name="both", source=src, unit="MACs",
                                 extra='tune_on_test = true\nval_index = "x.npy"'))
    with pytest.raises(SuiteError, match="at most one of"):
        load_suite(path)


def test_cfvit_eta_one_sends_everyone_to_the_last_exit_even_when_saturated() -> None:
    scores = np.array([[1.0, 1.0], [0.4, 1.0], [1.0, 0.2]], dtype=np.float32)  # saturated
    sols = SweepSolver().solve(scores, np.ones((3, 2), bool), np.array([1.0, 2.0]))
    assert len(sols) == 101 and sols[-1].param == 1.0
    assert np.array_equal(sols[-1].thresholds, [SENTINEL, -SENTINEL])
    assert (sols[-1].fit_exits == 1).all()
    assert (sols[-2].fit_exits[[0, 2]] == 0).all()  # 0.99: the saturated samples leave early
    last = SweepSolver("0.5,last").solve(scores, np.ones((3, 2), bool), np.array([1.0, 2.0]))
    assert last[1].param == np.inf and (last[1].fit_exits == 1).all()
    with pytest.raises(ValueError, match="numbers or 'last'"):
        SweepSolver("0.5,lst").solve(scores, np.ones((3, 2), bool), np.array([1.0, 2.0]))


def test_report_says_which_outputs_fit_the_thresholds(tmp_path) -> None:
    _, _, out = _run(tmp_path, "marked", extra="tune_on_test = true")
    text = out.report_index.read_text()
    assert "**Tuned on the test set:**" in text and "net" in text
    _, _, out = _run(tmp_path, "plain")
    text = out.report_index.read_text()
    assert "Tuned on the test set" not in text and "fit on the validation split" in text


def test_nested_lists_are_not_a_q_grid() -> None:
    from policy_testing import synthetic_exits

    from eebench.policies import make_policy

    ls = synthetic_exits(200)
    for solver in ("geometric", "exact", "eenet"):
        with pytest.raises(ValueError, match="sweep solver's grid"):
            make_policy("confidence", solver, grid=[[0.5, 1.0], [2.0, 3.0]]).fit(ls)


def test_models_fit_on_their_training_split_outputs(tmp_path) -> None:
    path = tmp_path / "train_fit.toml"
    path.write_text("""
[suite]
name = "trainfit"

[data]
dataset = "digits"
splits = { train = 0.5, val = 0.2, test = 0.3 }

[[models]]
name = "timm/resnet10t"
label = "R"
overrides = { input_size = 16, exits = [2, 3, 4] }

[[policies]]
score = "confidence"
solver = "geometric"
grid = [0.5, 1.0, 2.0]

[evaluate]
n_boot = 5
fit_split = "train"
""")
    out = run_suite(path, store_root=tmp_path / "store", results_root=tmp_path / "results",
                    reports_root=tmp_path / "reports", progress=False)
    curves = pd.read_csv(out.results_dir / "curves.csv")
    assert set(curves["fit_on"]) == {"training split"}
    meta = json.loads((out.results_dir / "meta.json").read_text())
    train_key = meta["models"]["R"].get("fit_on")
    assert train_key == "training split"
    assert "fit on training split" in out.report_index.read_text()
