"""Suites that draw the papers' numbers: published rows alone (no model run), and published
rows beside a curve measured from cached or imported logits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from shared_data import SHARED_DATA

from eebench.report.published import COLUMNS
from eebench.runner import run_suite
from eebench.schema import SuiteError
from eebench.suite import load_suite

CNN6 = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"
REPO = Path(__file__).resolve().parents[1]


def _pub(folder: Path) -> Path:
    rows = []
    for model, pts in (("NetA", [(1.0, 70.0), (2.0, 74.0)]), ("NetB", [(1.5, 71.0), (2.5, 73.5)])):
        for i, (g, acc) in enumerate(pts, start=1):
            r = dict.fromkeys(COLUMNS, "")
            r.update(source="demo", citation="Demo et al., Table 5", model=model, dataset="cifar10",
                     setting="budgeted", point=f"budget {i}", gmacs=g, top1=acc, from_figure="false")
            rows.append(r)
    r = dict(rows[0], setting="anytime", exit=1, point="", citation="Demo et al., Table 2")
    rows.append(r)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def _suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cmp.toml"
    path.write_text(body)
    return path


def test_published_only_suite_renders_without_a_model_run(tmp_path: Path) -> None:
    csv = _pub(tmp_path / "pub")
    suite = _suite(tmp_path, f"""
[report]
title = "Demo Table 5 redrawn"
published = ["{csv}"]
published_citation = "Table 5"
""")
    out = run_suite(suite, store_root=tmp_path / "store", results_root=tmp_path / "results",
                    reports_root=tmp_path / "reports", progress=False)
    pub = pd.read_csv(out.results_dir / "published.csv")
    assert sorted(set(pub["model"])) == ["NetA", "NetB"] and set(pub["setting"]) == {"budgeted"}
    assert pd.read_csv(out.results_dir / "curves.csv").empty
    index = out.report_index.read_text()
    assert "Published numbers drawn in the figures" in index and "Demo et al., Table 5" in index
    assert (out.report_index.parent / "budgeted.png").stat().st_size > 10_000
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.npy"))


@pytest.mark.skipif(not CNN6.is_file(), reason=f"shared data absent ({CNN6})")
def test_measured_logits_are_drawn_beside_the_published_curves(tmp_path: Path) -> None:
    csv = _pub(tmp_path / "pub")
    suite = _suite(tmp_path, f"""
[[logits]]
label = "CNN-6 (measured)"
source = "{CNN6}"
costs = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
cost_unit = "GMACs"
val_fraction = 0.5
seed = 0

[[policies]]
score = "confidence"
solver = "geometric"
grid = "msdnet"

[report]
published = ["{csv}"]
""")
    out = run_suite(suite, store_root=tmp_path / "store", results_root=tmp_path / "results",
                    reports_root=tmp_path / "reports", progress=False)
    curves = pd.read_csv(out.results_dir / "curves.csv")
    assert set(curves["model"]) == {"CNN-6 (measured)"}
    learned = curves[curves["policy"] == "confidence/geometric"]
    assert len(learned) == 39
    assert learned["test_cost"].between(0.5e9, 3e9).all()
    anytime = pd.read_csv(out.results_dir / "anytime.csv")
    assert anytime["top1"].round(3).tolist()[-1] == pytest.approx(0.774, abs=0.02)
    assert anytime["cost"].tolist() == [0.5e9, 1e9, 1.5e9, 2e9, 2.5e9, 3e9]
    pub = pd.read_csv(out.results_dir / "published.csv")
    assert set(pub["setting"]) == {"budgeted", "anytime"}
    index = out.report_index.read_text()
    assert "budgeted.png" in index and "anytime.png" in index and "Published numbers" in index


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[report]\ntitle = 'x'\n", "nothing to do"),
        ("[report]\npublished = ['no_such_paper']\n", "unknown published source"),
        ("[[logits]]\nlabel = 'x'\nsource = 'a.npz'\n[[policies]]\nsolver='oracle'\n"
         "[report]\npublished_dataset = 'imagenet'\n", "need report.published"),
        ("[[models]]\nname = 'msdnet_cifar10_budget'\n[[policies]]\nsolver='oracle'\n", "need a \\[data\\]"),
        ("[[logits]]\nlabel = 'x'\nsource = 'a.npz'\ncost_unit = 'flops'\n[[policies]]\nsolver='oracle'\n",
         "cost_unit"),
        ("[[logits]]\nlabel = 'x'\nsource = 'a.npz'\n", "policies"),
    ],
)
def test_comparison_suite_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suite(_suite(tmp_path, body))


def test_env_vars_in_paths_are_expanded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EEBENCH_TEST_LOGITS", str(tmp_path))
    suite = load_suite(_suite(tmp_path, """
[[logits]]
label = "x"
source = "${EEBENCH_TEST_LOGITS}/a.npz"
[[policies]]
solver = "oracle"
"""))
    assert suite["logits"][0]["source"] == f"{tmp_path}/a.npz"


def test_dvt_table5_suite_redraws_the_comparison_from_published_numbers(tmp_path: Path) -> None:
    out = run_suite(REPO / "suites" / "dvt_table5.toml", store_root=tmp_path / "store",
                    results_root=tmp_path / "results", reports_root=tmp_path / "reports", progress=False)
    pub = pd.read_csv(out.results_dir / "published.csv")
    assert set(pub["model"]) == {"MSDNet", "IMTA-MSDNet", "RANet", "DVT (T2T-ViT-12)"}
    assert pub.groupby("model").size().eq(6).all()
    assert pub["citation"].str.contains("Table 5").all()
    dvt = pub[pub["model"] == "DVT (T2T-ViT-12)"].sort_values("gmacs")
    assert dvt["top1"].iloc[0] > pub[pub["model"] == "RANet"]["top1"].min()
    assert (out.report_index.parent / "budgeted.pdf").is_file()
    assert "Table 5" in out.report_index.read_text()


@pytest.mark.skipif(not CNN6.is_file(), reason=f"shared data absent ({CNN6})")
def test_dvt_table5_suite_with_imported_real_logits(tmp_path: Path) -> None:
    text = (REPO / "suites" / "dvt_table5.toml").read_text()
    suite = _suite(tmp_path, text + f"""
[[logits]]
label = "CNN-6 (real logits, costs assumed)"
source = "{CNN6}"
costs = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
cost_unit = "GMACs"

[[policies]]
score = "confidence"
solver = "geometric"
grid = "dvt"
""")
    out = run_suite(suite, store_root=tmp_path / "store", results_root=tmp_path / "results",
                    reports_root=tmp_path / "reports", progress=False)
    curves = pd.read_csv(out.results_dir / "curves.csv")
    learned = curves[curves["policy"] == "confidence/geometric"]
    assert len(learned) == 59  # DVT's q grid
    assert learned["test_acc"].between(0.5, 0.8).all()
    assert len(pd.read_csv(out.results_dir / "published.csv")) == 24
    assert (out.report_index.parent / "budgeted.png").is_file()
