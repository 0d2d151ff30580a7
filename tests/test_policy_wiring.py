"""Every new policy is reachable with the same names from Python, the CLI and a suite."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eebench.cli import main
from eebench.policies import make_policy
from eebench.policies.eenet import EENetPolicy
from eebench.policies.risk import RiskControlSolver
from eebench.runner import run_suite
from eebench.schema import SuiteError
from eebench.suite import load_suite


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    n, k, c = 2000, 4, 10
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(k, n, c)).astype(np.float32)
    for e in range(k):
        hit = rng.random(n) < 0.5 + 0.12 * e
        logits[e, np.arange(n)[hit], labels[hit]] += 2.5 + 0.5 * e
    path = tmp_path_factory.mktemp("npz") / "net.npz"
    np.savez(path, logits=logits, labels=labels, costs=np.array([1.0, 2.0, 3.0, 4.0]))
    return str(path)


def test_make_policy_builds_risk_and_eenet() -> None:
    p = make_policy("confidence", "risk", epsilon=[0.01, 0.05], delta=0.2, bound="hb")
    assert isinstance(p._solver, RiskControlSolver)
    assert p._solver.epsilon == [0.01, 0.05] and p._solver.delta == 0.2
    e = make_policy(solver="eenet", budgets=[2.0, 3.0], seed=3, epochs=5, hidden=4)
    assert isinstance(e, EENetPolicy) and e.get_params()["epochs"] == 5
    with pytest.raises(ValueError, match="has no option .budgets."):
        make_policy("confidence", "risk", budgets=[2.0])
    with pytest.raises(ValueError, match="no option 'population'"):
        make_policy(solver="eenet", population=4)
    with pytest.raises(ValueError, match="drop the calibration"):
        make_policy(solver="eenet", calibration="temperature")
    with pytest.raises(ValueError, match="epsilon"):
        make_policy("confidence", "risk", epsilon=1.5)


def _sweep(args: list[str], tmp_path, capsys) -> pd.DataFrame:
    out = tmp_path / "curve.csv"
    assert main(["sweep", *args, "--out", str(out)]) == 0
    capsys.readouterr()
    return pd.read_csv(out)


def test_cli_sweep_with_risk_control_and_eenet(npz, tmp_path, capsys) -> None:
    risk = _sweep([npz, "--solver", "risk", "--epsilon", "0.01,0.05", "--delta", "0.1",
                   "--val-fraction", "0.5", "--seed", "0"], tmp_path, capsys)
    assert list(risk["param_name"]) == ["epsilon", "epsilon"]
    assert list(risk["param"]) == [0.01, 0.05]
    assert (risk["test_cost"] <= 4.0).all() and risk["test_cost"].iloc[1] <= risk["test_cost"].iloc[0]
    eenet = _sweep([npz, "--solver", "eenet", "--budgets", "2,3", "--option", "epochs=30",
                    "--val-fraction", "0.5", "--seed", "0"], tmp_path, capsys)
    assert list(eenet["param"]) == [2.0, 3.0]
    assert (eenet["val_cost"] <= eenet["param"] + 4.0 / 1000).all()


def test_cli_sweep_fits_on_another_source_or_on_the_test_set(npz, tmp_path, capsys) -> None:
    on_test = _sweep([npz, "--tune-on-test", "--solver", "sweep", "--grid", "0.5,0.9,last"],
                     tmp_path, capsys)
    assert (on_test["fit_on"] == "test set (tuned on the test set: no held-out split)").all()
    assert np.array_equal(on_test["val_acc"], on_test["test_acc"])
    assert on_test["test_cost"].iloc[-1] == 4.0  # 'last': every sample to the last exit
    other = _sweep([npz, "--fit-source", npz, "--solver", "geometric", "--grid", "msdnet"],
                   tmp_path, capsys)
    assert (other["fit_on"] == f"another source: {npz}").all()


def test_suite_runs_risk_and_eenet_with_their_options(npz, tmp_path) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(f"""
[suite]
name = "wired"

[[logits]]
label = "net"
source = "{npz}"

[[policies]]
solver = "risk"
epsilon = [0.02, 0.05]
delta = 0.1
bound = "binomial"

[[policies]]
solver = "eenet"
budgets = [2.0, 3.0]
epochs = 20
hidden = 8

[evaluate]
n_boot = 5
""")
    out = run_suite(suite, store_root=tmp_path / "store", results_root=tmp_path / "res",
                    reports_root=tmp_path / "rep", progress=False)
    curves = pd.read_csv(out.results_dir / "curves.csv")
    assert (curves["policy"] == "confidence/risk").sum() == 2
    assert (curves["policy"] == "eenet").sum() == 2
    resolved = json.loads((out.results_dir / "suite.resolved.json").read_text())
    assert resolved["policies"][1]["epochs"] == 20
    suite.write_text(suite.read_text().replace("epochs = 20", "epoch = 20"))
    with pytest.raises(SuiteError, match="epoch"):
        load_suite(suite)


def test_cli_sweep_with_laplace_needs_a_store_entry_with_features(tmp_path, npz, capsys) -> None:
    import torch

    from eebench.store import LogitStore, extract_logits
    from eebench.zoo import create_model

    torch.manual_seed(0)
    model = create_model("timm/resnet10t", num_classes=4, input_size=16).eval()
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 16, 16, generator=g),
                                          torch.randint(0, 4, (64,), generator=g))
    store = LogitStore(tmp_path / "store")
    identity = {"model": "resnet10t", "weights_sha256": "0" * 64, "dataset": "random",
                "split": "all"}
    key = extract_logits(model, data, store, identity, costs=[1.0, 2.0, 3.0, 4.0],
                         batch_size=32, progress=False, features=True)
    store.rename(key, "withfeat")
    for cal in ("laplace", "laplace+mie"):
        curve = _sweep(["store:withfeat", "--store", str(tmp_path / "store"), "--calibration",
                        cal, "--grid", "msdnet"], tmp_path, capsys)
        assert len(curve) and curve["calibration"].str.contains(cal.split("+")[0]).all()
    # an .npz holds no features: one clear line, exit 2
    assert main(["sweep", npz, "--calibration", "laplace"]) == 2
    err = capsys.readouterr().err
    assert "features" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
