"""``eebench compare``: many policies on one logit source, no suite file, the same results
and report as the equivalent suite; and ``eebench suite schema``."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pandas as pd
import pytest
from shared_data import SHARED_DATA
from zoo_testing import one_torch_thread  # noqa: F401  (module fixture)

from eebench.cli import main
from eebench.compare import compare, source_name
from eebench.evaluate.sweep import FIT_ON
from eebench.report import build_report
from eebench.runner import run_suite
from eebench.store.logitstore import file_sha256
from eebench.suite import LOGITS, POLICY

SPECS = ("confidence/geometric,entropy/geometric,"
         "confidence+temperature/ga(population=16,generations=5),oracle,random")

EQUIVALENT = """
[suite]
name = "net"

[[logits]]
label = "net"
source = "{source}"
costs = [1.0, 2.0, 3.0, 4.0]
cost_unit = "GMACs"
val_fraction = 0.5
seed = 3

[[policies]]
score = "confidence"
solver = "geometric"

[[policies]]
score = "entropy"
solver = "geometric"

[[policies]]
score = "confidence"
calibration = "temperature"
solver = "ga"
population = 16
generations = 5

[[policies]]
solver = "oracle"

[[policies]]
solver = "random"

[evaluate]
n_boot = 10
budgets = [2e9, 3e9]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):  # noqa: F811
    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(0)
    n, k, c = 300, 4, 5
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(k, n, c)).astype(np.float32)
    for e in range(k):  # later exits are more often right
        logits[e, np.arange(n), labels] += 0.8 * (e + 1)
    source = root / "net.npz"
    np.savez(source, logits=logits, labels=labels)
    out = compare(source, SPECS, costs=[1, 2, 3, 4], cost_unit="GMACs", seed=3,
                  budgets=[2, 3], n_boot=10, out=root / "cmp", store_root=root / "store")
    suite_file = root / "net.toml"
    suite_file.write_text(EQUIVALENT.format(source=source))
    suite_out = run_suite(suite_file, store_root=root / "store", results_root=root / "results",
                          reports_root=root / "reports", progress=False)
    return root, source, out, suite_out


def test_compare_writes_results_report_and_results_json(runs) -> None:
    root, source, out, _ = runs
    res = root / "cmp" / "results"
    assert out.results_dir == res and out.report_index == root / "cmp" / "report" / "index.md"
    for f in ("curves.csv", "summary.csv", "anytime.csv", "reliability.csv", "costs.csv",
              "meta.json", "results.json", "suite.resolved.json"):
        assert (res / f).is_file(), f
    curves = pd.read_csv(res / "curves.csv")
    assert list(dict.fromkeys(curves["policy"])) == [
        "confidence/geometric", "entropy/geometric", "confidence+temperature/ga", "oracle",
        "random", "static"]
    assert set(curves["model"]) == {"net"}
    assert set(pd.read_csv(res / "summary.csv")["policy"]) >= {"confidence/geometric", "oracle"}
    index = out.report_index.read_text()
    assert "eebench compare" in index and "budgeted.png" in index

    meta = json.loads((res / "meta.json").read_text())
    assert meta["command"].startswith(f"eebench compare {source} --costs 1,2,3,4 --cost-unit GMACs")
    assert "confidence+temperature/ga(population=16,generations=5),oracle,random" in meta["command"]
    assert meta["budgets"] == [2e9, 3e9]  # --budgets in the unit of --costs, results in MACs

    record = json.loads((res / "results.json").read_text())
    assert record["schema_version"] == 1 and record["cost_unit"] == "MACs"
    assert record["dataset"] is None and "numpy" in record["versions"]
    assert "git" in record
    assert record["suite"] == json.loads((res / "suite.resolved.json").read_text())
    assert record["suite"]["policies"][4]["like"] == "confidence/geometric"  # the first learned
    tables = ("anytime", "costs", "curves", "reliability", "summary")
    assert record["files"] == {f: file_sha256(res / f) for f in (
        "suite.resolved.json", *(f"{t}.{ext}" for t in tables for ext in ("csv", "parquet")))}
    assert meta["files"]["results.json"] == file_sha256(res / "results.json")


def test_compare_equals_the_equivalent_suite_file(runs) -> None:
    root, _, out, suite_out = runs
    for name in ("curves.csv", "anytime.csv", "costs.csv", "reliability.csv"):
        ours = pd.read_csv(out.results_dir / name)
        theirs = pd.read_csv(suite_out.results_dir / name)
        assert list(ours.columns) == list(theirs.columns), name
        for col in ours.columns:  # the same computation: equal, not merely close
            pd.testing.assert_series_equal(ours[col], theirs[col], check_exact=True, obj=col)
    ours = json.loads((out.results_dir / "suite.resolved.json").read_text())
    theirs = json.loads((suite_out.results_dir / "suite.resolved.json").read_text())
    ours["suite"]["description"] = theirs["suite"]["description"]
    assert ours == theirs
    # a suite run writes results.json too, and `eebench report` checks it like every file
    assert (suite_out.results_dir / "results.json").is_file()
    (suite_out.results_dir / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="results.json"):
        build_report(suite_out.results_dir, root / "again")


def test_bad_specs_and_options_fail_in_one_line_through_the_cli(runs, capsys) -> None:
    root, source, _, _ = runs
    out = root / "bad"
    for specs, words in [
        ("confidence/geometric,confidence/ga(pop=3)",
         "the ga solver has no option 'pop'; it accepts: grid, budgets, population, generations"),
        ("confidence/geometrik", "unknown solver 'geometrik'"),
        ("confidence/geometric,random(like=entropy/geometric)", "like must name a learned policy"),
        ("confidence/ga(population=8),confidence/ga(population=16)",
         "two policies go by the label 'confidence/ga'"),
        ("confidence/geometric,,oracle", "an empty spec"),
    ]:
        rc = main(["compare", str(source), "--costs", "1,2,3,4", "--policies", specs,
                   "--out", str(out), "--store", str(root / "store")])
        err = capsys.readouterr().err
        assert rc == 2, specs
        assert err.startswith("eebench compare: error: ") and err.count("\n") == 1, err
        assert words in err, err
    assert not out.exists()  # nothing was written for a bad comparison


def test_compare_from_the_cli_with_repeated_policies(runs, capsys, monkeypatch) -> None:
    root, source, _, _ = runs
    out = root / "cli"
    argv = ["compare", str(source), "--costs", "1,2,3,4", "--policies", "confidence/geometric",
            "--policies", "patience/sweep(grid=[1,2,3]),oracle", "--tune-on-test",
            "--n-boot", "5", "--out", str(out), "--store", str(root / "store")]
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/eebench", *argv])
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    curves = pd.read_csv(out / "results" / "curves.csv")
    assert list(dict.fromkeys(curves["policy"])) == ["confidence/geometric", "patience/sweep",
                                                     "oracle", "static"]
    assert set(curves["fit_on"]) == {FIT_ON["test"]}
    meta = json.loads((out / "results" / "meta.json").read_text())
    assert meta["command"] == "eebench " + " ".join(shlex.quote(a) for a in argv)


def test_source_name() -> None:
    assert source_name("../shared/data/logits/cnn6exit-cifar10.npz") == "cnn6exit-cifar10"
    assert source_name("store:my net") == "my-net"
    assert source_name("store:/..") == "compare"


CNN = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"


@pytest.mark.skipif(not CNN.is_file(), reason=f"{CNN} is not here (developers' shared data)")
def test_compare_on_real_logits(tmp_path, capsys, one_torch_thread) -> None:  # noqa: F811
    out = tmp_path / "cnn"
    rc = main(["compare", str(CNN), "--costs", "1,2,3,4,5,6", "--policies",
               "confidence/geometric,eenet,confidence+mie/geometric", "--n-boot", "5",
               "--out", str(out), "--store", str(tmp_path / "store")])
    assert rc == 0, capsys.readouterr().err
    curves = pd.read_csv(out / "results" / "curves.csv")
    assert set(curves["policy"]) == {"confidence/geometric", "eenet", "confidence+mie/geometric",
                                     "static"}
    assert set(curves["model"]) == {"cnn6exit-cifar10"}
    assert (out / "report" / "index.md").is_file()


def test_suite_schema_lists_every_key(capsys) -> None:
    assert main(["suite", "schema"]) == 0
    text = capsys.readouterr().out
    keys = {line.split()[0] for line in text.splitlines()[1:]}
    assert {f"policies[].{k}" for k in POLICY.fields} <= keys
    assert {f"logits[].{k}" for k in LOGITS.fields} <= keys
    assert {"suite.name", "models[].train.epochs", "evaluate.n_boot", "speed.batch_sizes"} <= keys
    line = next(ln for ln in text.splitlines() if ln.startswith("policies[].solver "))
    assert "string" in line and '"geometric"' in line and "one of: eenet, exact, ga" in line
    assert main(["suite", "schema", "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "| key | type | default | description |" and md[1] == "|---|---|---|---|"
    assert "| `logits[].source` | string | required | .npz file of logits and labels, or a " \
           "store entry |" in md
    assert len(md) == len(text.splitlines()) + 1
