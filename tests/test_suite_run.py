"""A whole suite end to end on the embedded data set, and its reuse of weights and logits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from eebench.runner import run_suite

SUITE = """
[suite]
name = "tiny"
description = "a tiny suite for the tests"

[data]
dataset = "digits"
splits = { train = 0.6, val = 0.2, test = 0.2 }

[[models]]
name = "timm/resnet10t"
label = "R10t"
overrides = { input_size = 32, exits = [2, 3, 4] }
[models.train]
epochs = 1
lr = 0.05

[[policies]]
score = "confidence"
solver = "geometric"
grid = "msdnet"

[[policies]]
score = "entropy"
calibration = "temperature"
solver = "geometric"
grid = [0.5, 1.0, 2.0]

[[policies]]
solver = "oracle"

[[policies]]
solver = "random"

[evaluate]
n_boot = 20
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    suite = root / "tiny.toml"
    suite.write_text(SUITE)
    kw = dict(store_root=root / "store", results_root=root / "results", reports_root=root / "reports",
              progress=False)
    first = run_suite(suite, **kw)
    return root, suite, kw, first


def test_results_and_report_are_written(tiny_run) -> None:
    root, _, _, out = tiny_run
    res = out.results_dir
    for f in ("anytime.csv", "curves.csv", "summary.csv", "reliability.csv", "costs.csv",
              "meta.json", "suite.resolved.json"):
        assert (res / f).is_file(), f
    anytime = pd.read_csv(res / "anytime.csv")
    assert list(anytime["exit"]) == [0, 1, 2] and (anytime["cost"].diff().dropna() > 0).all()
    curves = pd.read_csv(res / "curves.csv")
    policies = set(curves["policy"])
    assert {"confidence/geometric", "entropy+temperature/geometric", "oracle", "random", "static"} <= policies
    assert (curves["policy"] == "confidence/geometric").sum() == 39
    assert (curves["policy"] == "entropy+temperature/geometric").sum() == 3
    # costs in the curves are MACs from the counter, not exit indices
    costs = pd.read_csv(res / "costs.csv")
    assert costs["gmacs"].iloc[-1] * 1e9 == pytest.approx(anytime["cost"].iloc[-1], rel=1e-6)
    index = out.report_index.read_text()
    for stem in ("anytime", "budgeted", "exit_distribution", "reliability"):
        assert (out.report_index.parent / f"{stem}.pdf").is_file()
        assert f"{stem}.png" in index
    meta = json.loads((res / "meta.json").read_text())
    assert meta["models"]["R10t"]["weights"] == "trained"


def test_second_run_reuses_weights_and_logits(tiny_run, monkeypatch) -> None:
    root, suite, kw, first = tiny_run
    import eebench.train as train

    def boom(*a, **k):
        raise AssertionError("the second run must not train")

    monkeypatch.setattr(train, "train_multi_exit", boom)
    before = pd.read_csv(first.results_dir / "curves.csv")
    second = run_suite(suite, **kw)
    meta = json.loads((second.results_dir / "meta.json").read_text())
    assert meta["models"]["R10t"]["weights"] == "trained (cached)"
    after = pd.read_csv(second.results_dir / "curves.csv")
    pd.testing.assert_frame_equal(before, after)
    store_entries = [p for p in (root / "store").iterdir() if len(p.name) == 64]
    assert len(store_entries) == 2  # val and test, extracted once
