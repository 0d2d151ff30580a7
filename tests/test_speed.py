"""Real early exit measured: operating points, agreement with the simulated policy, the report.

Nothing here asserts a time: speed targets live in ``nox -s bench``. The tests check that
every sample leaves where the policy on cached logits sends it, that exit fractions are
met, and that every field of the report is there and consistent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from zoo_testing import one_torch_thread  # noqa: F401

from eebench.cli import main
from eebench.costs import count_costs
from eebench.costs.speed import (
    SPEED_COLUMNS,
    ExitRule,
    measure_speed,
    thresholds_for_fractions,
)
from eebench.errors import DataError
from eebench.zoo import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"warmup": 0, "repeats": 1}


def test_thresholds_for_fractions_send_exactly_those_fractions() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((200, 4))
    t = thresholds_for_fractions(scores, [0.5, 0.2, 0.1, 0.2])
    from eebench.policies.assignment import assign_exits

    counts = np.bincount(assign_exits(scores, t), minlength=4)
    assert counts.tolist() == [100, 40, 20, 40]
    # each threshold lies strictly between the scores it separates (no float ties)
    remaining = np.ones(200, bool)
    for k in range(3):
        s = scores[remaining, k]
        assert not np.isclose(s, t[k], rtol=0, atol=1e-12).any()
        remaining &= ~(scores[:, k] >= t[k])


@pytest.mark.parametrize(("fractions", "match"), [
    ([0.5, 0.5], "2 exit fractions for 4"), ([0.5, 0.2, 0.1, 0.1], "sum to 1"),
    ([1.2, -0.2, 0, 0], ">= 0"),
])
def test_bad_exit_fractions(fractions, match) -> None:
    with pytest.raises(DataError, match=match):
        thresholds_for_fractions(np.zeros((10, 4)), fractions)


@pytest.fixture(scope="module")
def msdnet():
    torch.manual_seed(0)
    model = create_model("msdnet_cifar10_budget").eval()
    return model, count_costs(model, cross_check=False).macs


@pytest.mark.parametrize("name", ["msdnet", "timm"])
def test_real_exits_agree_with_the_simulated_policy(msdnet, name) -> None:
    if name == "msdnet":
        model, costs = msdnet
        fractions = [0.4, 0.2, 0.1, 0.1, 0.2]
        x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    else:
        torch.manual_seed(0)
        model = create_model("timm/resnet18", num_classes=10, input_size=32).eval()
        costs = count_costs(model, cross_check=False).macs
        fractions = [0.5, 0.25, 0.0, 0.25]
        x = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    report = measure_speed(model, x, exit_fractions=fractions, costs=costs,
                           batch_sizes=[1, 5, 24], **FAST)
    df = report.to_frame()
    assert list(df.columns[: len(SPEED_COLUMNS) + 1]) == ["model", *SPEED_COLUMNS]
    assert df["batch_size"].tolist() == [1, 5, 24]
    assert (df["exit_agreement"] == 1.0).all() and report.disagreements == []
    got = json.loads(df["exit_fractions"].iloc[0])
    # counts are rounded cumulatively, so they add up to the 24 samples
    want = np.diff(np.concatenate([[0], np.floor(np.cumsum(fractions) * 24 + 0.5)])) / 24
    assert np.allclose(got, want, atol=1e-6)
    mean_cost = float(np.dot(want, costs))
    assert df["mean_cost"].iloc[0] == pytest.approx(mean_cost)
    assert df["predicted_speedup"].iloc[0] == pytest.approx(costs[-1] / mean_cost)
    assert np.allclose(df["realised"], df["measured_speedup"] / df["predicted_speedup"])
    for col in ("throughput", "full_throughput", "latency_p50_ms", "latency_p95_ms",
                "latency_p99_ms", "full_latency_ms"):
        assert (df[col] > 0).all(), col
    assert (df["latency_p50_ms"] <= df["latency_p99_ms"]).all()
    assert len(report.exit_latency_ms) == model.num_exits
    assert report.hardware["cpu_cores"] and report.hardware["torch_threads"] == 1
    assert report.settings["score"] == "confidence"


def test_a_rule_from_thresholds_and_temperatures_matches_its_simulation(msdnet) -> None:
    model, costs = msdnet
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    rule = ExitRule(np.array([0.3, 0.35, 0.4, 0.45, -np.inf]), "entropy",
                    temperatures=np.array([1.5, 1.2, 1.0, 0.9, 1.0]))
    rule.thresholds[:4] = -1.6  # negative entropy: exit when the entropy is below 1.6 nats
    report = measure_speed(model, x, rule, costs=costs, batch_sizes=[4], **FAST)
    assert report.rows[0]["exit_agreement"] == 1.0


def test_one_operating_point_is_required(msdnet) -> None:
    model, costs = msdnet
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(DataError, match="exactly one operating point"):
        measure_speed(model, x, costs=costs)
    with pytest.raises(DataError, match="3 costs"):
        measure_speed(model, x, exit_fractions=[1, 0, 0, 0, 0], costs=[1, 2, 3])
    with pytest.raises(DataError, match="batch sizes"):
        measure_speed(model, x, exit_fractions=[1, 0, 0, 0, 0], costs=costs, batch_sizes=[0])


def test_cli_speed_json_has_every_field(capsys) -> None:
    code = main(["speed", "msdnet_cifar10_budget", "--exit-fractions", "0.5,0.2,0.1,0.1,0.1",
                 "--batch-size", "1,8", "--samples", "16", "--threads", "1", "--warmup", "0",
                 "--repeats", "1", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    rows = report["rows"]
    assert [r["batch_size"] for r in rows] == [1, 8]
    for r in rows:
        for key in ("batch_size", "predicted_speedup", "measured_speedup", "realised",
                    "exit_agreement", "throughput", "latency_p50_ms", "latency_p95_ms",
                    "latency_p99_ms"):
            assert key in r, key
        assert r["exit_agreement"] == 1.0
    assert report["hardware"]["torch_threads"] == 1


def test_cli_speed_refuses_two_operating_points(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["speed", "msdnet_cifar10_budget", "--exit-fractions", "1,0,0,0,0",
              "--thresholds", "0.5,0.5,0.5,0.5"])
    assert "not allowed with argument" in capsys.readouterr().err
