"""A solver added by one decorated class is usable everywhere a built-in one is: make_policy,
a suite's [[policies]] table, a policy spec, `eebench sweep`, `eebench compare` and the
listings, with every one of its options and no other edit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from policy_testing import synthetic_exits

from eebench.cli import main
from eebench.errors import UnknownNameError
from eebench.policies import make_policy
from eebench.policies.assignment import assign_exits
from eebench.policies.estimator import Estimator
from eebench.policies.solvers import SOLVERS, Solution
from eebench.policies.spec import build_policy, parse_policy_spec
from eebench.schema import SuiteError
from eebench.suite import validate_suite


class QuantileSolver(Estimator):
    """Exit k's threshold is the ``quantile`` of exit k's validation scores, plus ``offset``;
    ``points`` operating points spread the quantile down to a tenth of it."""

    name = "quantile"

    def __init__(self, quantile: float = 0.5, offset: float = 0.0, points: int = 1) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
        self.quantile, self.offset, self.points = quantile, offset, points

    def solve(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[Solution]:
        out = []
        for q in np.linspace(self.quantile, self.quantile / 10, self.points):
            t = np.quantile(scores[:, :-1], 1 - q, axis=0) + self.offset
            t = np.append(t, -np.inf)
            out.append(Solution(float(q), "quantile", t, assign_exits(scores, t)))
        return out


@pytest.fixture
def quantile_solver():
    SOLVERS.register("quantile", QuantileSolver)
    yield QuantileSolver
    SOLVERS.unregister("quantile")


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> str:
    ls = synthetic_exits(n=1200, k=4)
    path = tmp_path_factory.mktemp("npz") / "net.npz"
    np.savez(path, logits=np.asarray(ls.logits).transpose(1, 0, 2), labels=ls.labels,
             costs=ls.costs)
    return str(path)


def test_make_policy_takes_every_option(quantile_solver) -> None:
    ls = synthetic_exits(n=1000, k=4)
    p = make_policy("margin", "Quantile", quantile=0.3, offset=0.01, points=2).fit(ls)
    assert p._solver.get_params() == {"quantile": 0.3, "offset": 0.01, "points": 2}
    assert repr(p._solver) == "QuantileSolver(quantile=0.3, offset=0.01, points=2)"
    points = p.apply(ls)
    assert [pt.param for pt in points] == pytest.approx([0.3, 0.03])
    # about 30% of the samples still in play leave at exit 0 (scores are continuous)
    assert np.mean(points[0].exits == 0) == pytest.approx(0.3, abs=0.05)
    with pytest.raises(ValueError, match=r"has no option 'ofset' \(did you mean 'offset'\?\); "
                                         r"it accepts: quantile, offset, points"):
        make_policy("confidence", "quantile", ofset=0.1)


def test_a_suite_and_a_spec_take_it_with_its_options(quantile_solver, npz) -> None:
    raw = {"logits": [{"label": "net", "source": npz}],
           "policies": [{"solver": "quantile", "score": "entropy", "quantile": 0.2,
                         "points": 3}, {"solver": "random"}]}
    suite = validate_suite(raw, "s.toml", name="s")
    table = suite["policies"][0]
    assert (table["quantile"], table["points"], table["offset"]) == (0.2, 3, None)
    assert table == parse_policy_spec("entropy/quantile(quantile=0.2,points=3)")
    assert suite["policies"][1]["like"] == "entropy/quantile"  # a learned policy to copy
    policy = build_policy(table, suite["policies"])
    assert policy._solver.get_params() == {"quantile": 0.2, "offset": 0.0, "points": 3}
    bad = {**raw, "policies": [{"solver": "quantile", "quantil": 0.2}]}
    with pytest.raises(SuiteError, match=r"s.toml: unknown key 'policies\[0\].quantil' "
                                         r"\(did you mean 'policies\[0\].quantile'\?\)"):
        validate_suite(bad, "s.toml", name="s")
    bad = {**raw, "policies": [{"solver": "quantile", "population": 8}]}
    with pytest.raises(SuiteError, match=r"'policies\[0\].population': the quantile solver has "
                                         r"no option 'population'; it accepts: quantile, "
                                         r"offset, points, label"):
        validate_suite(bad, "s.toml", name="s")
    bad = {**raw, "policies": [{"solver": "quantile", "quantile": 1.5}]}
    with pytest.raises(SuiteError, match=r"policies\[0\]: quantile must lie in \(0, 1\)"):
        validate_suite(bad, "s.toml", name="s")


def test_the_cli_sweeps_compares_and_lists_it(quantile_solver, npz, tmp_path, capsys) -> None:
    out = tmp_path / "curve.csv"
    assert main(["sweep", npz, "--solver", "quantile", "--option", "quantile=0.4",
                 "--option", "points=2", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 2
    assert main(["compare", npz, "--policies", "confidence/quantile(quantile=0.4),oracle",
                 "--out", str(tmp_path / "cmp")]) == 0
    results = json.loads((tmp_path / "cmp" / "results" / "results.json").read_text())
    assert results["suite"]["policies"][0]["solver"] == "quantile"
    assert results["suite"]["policies"][0]["quantile"] == 0.4
    curves = pd.read_csv(tmp_path / "cmp" / "results" / "curves.csv")
    assert "confidence/quantile" in set(curves["policy"])
    capsys.readouterr()
    assert main(["policies"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["solver", "quantile", "quantile=0.5,", "offset=0.0,", "points=1"] in listed
    assert main(["sweep", npz, "--solver", "quantile", "--option", "quantil=0.4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it accepts: quantile, offset, points" in err


def test_unregistered_names_fail_with_close_matches(quantile_solver) -> None:
    SOLVERS.unregister("quantile")
    try:
        with pytest.raises(UnknownNameError, match="unknown solver 'quantile'"):
            make_policy("confidence", "quantile")
    finally:
        SOLVERS.register("quantile", QuantileSolver)


def test_calibration_options_reach_the_calibration(npz) -> None:
    """A calibration's constructor options are set beside its name in a suite table and by
    keyword from Python; a name it does not take fails with the ones it takes."""
    from eebench.policies.calibration import make_calibration

    assert make_calibration("mie", weights="uniform").weights == "uniform"
    with pytest.raises(ValueError, match=r"calibration 'mie' has no option 'weight' \(did you "
                                         r"mean 'weights'\?\); it accepts: weights, base"):
        make_calibration("mie", weight="uniform")
    p = make_policy("confidence", "geometric", calibration="temperature+mie",
                    calibration_options={"weights": "uniform", "bounds": [0.1, 10.0]})
    assert p.calibration.weights == "uniform" and p.calibration.bounds == [0.1, 10.0]
    assert p.name == "confidence+temperature+mie/geometric[msdnet]"
    raw = {"logits": [{"label": "net", "source": npz}],
           "policies": [{"calibration": "mie", "calibration_options": {"weights": "uniform"}}]}
    suite = validate_suite(raw, "s.toml", name="s")
    policy = build_policy(suite["policies"][0], suite["policies"])
    assert policy.calibration.weights == "uniform"
    bad = {**raw, "policies": [{"calibration": "mie", "calibration_options": {"wieghts": 1}}]}
    with pytest.raises(SuiteError, match=r"s.toml: policies\[0\]: calibration 'mie' has no "
                                         r"option 'wieghts'"):
        validate_suite(bad, "s.toml", name="s")
    bad = {**raw, "policies": [{"calibration_options": {"weights": "uniform"}}]}
    with pytest.raises(SuiteError, match="options given, but no calibration"):
        validate_suite(bad, "s.toml", name="s")


def test_calibrations_and_baselines_describe_themselves_by_their_parameters() -> None:
    from eebench.policies.calibration import make_calibration

    mie = make_calibration("mie", weights="uniform")
    assert mie.get_params() == {"weights": "uniform", "base": None}
    assert repr(mie) == "ModelInternalEnsemble(weights='uniform')"
    assert repr(make_calibration("temperature")) == "TemperatureScaling()"
    rnd = make_policy("confidence", "random", seed=3)
    assert rnd.get_params()["seed"] == 3 and rnd.get_params()["base"].get_params()["solver"] \
        == "geometric"
    assert repr(make_policy(solver="oracle")) == "OraclePolicy()"
