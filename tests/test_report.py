"""Reports: synthetic result files -> figures (PDF + PNG), tables (Markdown + LaTeX), index.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eebench.policies import make_policy
from eebench.report import (
    REQUIRED_FILES,
    budget_tables,
    build_report,
    cost_scale,
    default_budgets,
    ece_from_bins,
    plot_anytime,
    plot_budgeted,
    plot_exit_distribution,
    plot_reliability,
    published_label,
    reliability_table,
    summary_tables,
)
from eebench.report.figures import plot_calibration
from eebench.report.reliability import calibrated_reliability_tables
from eebench.report.style import policy_styles, short_policy_label
from eebench.report.tables import anytime_tables
from eebench.store.logitset import LogitSet

# ---------------------------------------------------------------- synthetic results

MODELS = {
    # name: (cumulative costs in MACs, per-exit top-1, exit names)
    "MSDNet": ([6.0e6, 12.0e6, 18.0e6, 24.0e6, 30.0e6], [0.60, 0.70, 0.76, 0.79, 0.80],
               ["block1", "block2", "block3", "block4", "block5"]),
    "ResNet + exits": ([10.0e6, 25.0e6, 40.0e6], [0.55, 0.71, 0.78], ["layer2", "layer3", "head"]),
}
LEARNED = {"confidence/geometric": 3.0, "entropy/geometric": 4.0, "confidence+temperature/geometric": 2.0}
T_GRID = np.linspace(0.0, 1.0, 12)


def _curve_points(costs: list[float], accs: list[float], power: float) -> tuple[np.ndarray, np.ndarray]:
    t = T_GRID
    cost = costs[0] + (costs[-1] - costs[0]) * t
    acc = accs[0] + (accs[-1] + 0.005 - accs[0]) * (1 - (1 - t) ** power)
    return cost, acc


def _fractions(k: int, t: float) -> np.ndarray:
    w = np.exp(-((np.arange(k) - t * (k - 1)) ** 2))
    return w / w.sum()


def _logitset(k: int, n: int = 400, c: int = 10, seed: int = 0) -> LogitSet:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    z = rng.normal(0, 1, size=(n, k, c))
    z[np.arange(n), :, labels] += np.linspace(0.5, 2.5, k)[None, :] * rng.random((n, 1)) * 2
    return LogitSet(z.astype(np.float32), labels, np.arange(1.0, k + 1.0))


def make_results(
    folder: Path,
    *,
    factor: float = 1.0,
    unit: str = "MACs",
    budgets: list[float] | None = None,
    skip: tuple[str, ...] = (),
) -> Path:
    """Write anytime/curves/summary/reliability/meta files of two models and six policies.

    Costs are MODELS' costs times ``factor``. entropy/geometric is the best learned
    policy everywhere (largest power); the oracle reaches the last exit at the lowest cost.
    """
    folder.mkdir(parents=True, exist_ok=True)
    anytime, curves, summary, rel = [], [], [], []
    for mi, (model, (costs, accs, names)) in enumerate(MODELS.items()):
        costs = [c * factor for c in costs]
        k = len(costs)
        for e in range(k):
            anytime.append({
                "model": model, "exit": e, "exit_name": names[e], "cost": costs[e], "top1": accs[e],
                "top5": min(1.0, accs[e] + 0.15), "nll": 1.6 - accs[e], "ece": 0.02 + 0.01 * abs(e - 1),
                "overthinking": 0.0 if e == k - 1 else 0.03 / (e + 1),
            })

        def row(policy: str, param: float, cost: float, acc: float, frac: np.ndarray,
                model: str = model) -> dict:
            r = {"model": model, "policy": policy, "param": param, "param_name": "q",
                 "val_acc": acc + 0.004, "val_cost": cost * 1.01, "test_acc": acc, "test_cost": cost}
            r.update({f"frac_{j}": float(f) for j, f in enumerate(frac)})
            r["thresholds"] = json.dumps([0.9] * (len(frac) - 1) + [None])
            if "bands" not in skip:  # narrow bootstrap bands: the curves' gaps are real
                r["test_acc_low"], r["test_acc_high"] = acc - BAND, acc + BAND
            return r

        for policy, power in LEARNED.items():
            x, y = _curve_points(costs, accs, power)
            for t, cx, ay in zip(T_GRID, x, y):
                curves.append(row(policy, float(t), float(cx), float(ay), _fractions(k, t)))
        for t in np.linspace(0, 1, 5):
            cx = costs[0] + (costs[-1] - costs[0]) * t
            curves.append(row("random", float(t), cx, accs[0] + (accs[-1] - accs[0]) * t, _fractions(k, t)))
        curves.append(row("oracle", 0.0, costs[0] * 1.3, 0.97, _fractions(k, 0.1)))
        for e in range(k):
            curves.append(row("static", float(e), costs[e], accs[e], np.eye(k)[e]))

        boot = "95% percentile bootstrap, 200 test resamples (seed 0), exits fixed per point"
        srows = []
        for policy in [*LEARNED, "random", "oracle"]:
            power = LEARNED.get(policy, 1.0)
            base = 0.70 + 0.01 * power if policy != "oracle" else float("nan")
            match = costs[-1] * (0.9 - 0.1 * power) if policy != "oracle" else costs[0] * 1.3
            for metric, at, value, unit_, interp, note, rng in [
                ("mean_accuracy", np.nan, base, "accuracy", True,
                 f"area under the test curve over cost [{costs[0]:g}, {costs[-1]:g}] / width",
                 (costs[0], costs[-1])),
                ("accuracy_at_cost", costs[1], base + 0.01, "accuracy", True, "linear interpolation",
                 (costs[1], costs[1])),
                ("cost_to_match_last_exit", np.nan, match, "cost", True, "first test cost reaching",
                 (np.nan, np.nan)),
                ("speedup_vs_last_exit", np.nan, costs[-1] / match, "x", True, "last exit cost / cost",
                 (np.nan, np.nan)),
            ]:
                srows.append({
                    "model": model, "policy": policy, "metric": metric, "at_cost": at, "value": value,
                    "ci_low": value * 0.98, "ci_high": value * 1.02, "unit": unit_,
                    "interpolated": interp, "note": f"{note}; {boot}",
                    # the schema columns the runner writes (tables read these, not the note)
                    "policy_kind": "oracle" if policy == "oracle" else
                                   "random" if policy == "random" else "learned",
                    "cost_lo": rng[0], "cost_hi": rng[1], "ci_level": 0.95, "n_boot": 200,
                    "boot_seed": 0,
                })
        summary += srows if "diffs" in skip else _paired_columns(srows)
        ls = _logitset(k, seed=mi)
        ls.exit_names = list(names)
        rel.append(reliability_table(ls, model=model, n_bins=10))
        if mi == 0 and "calibrated" not in skip:  # MSDNet: one calibrated policy
            fitted = {"confidence+temperature/geometric":
                      make_policy("confidence", calibration="temperature").fit(ls),
                      "confidence/geometric": make_policy("confidence").fit(ls)}
            rel += calibrated_reliability_tables(fitted, ls, model, n_bins=10)

    frames = {
        "anytime.csv": pd.DataFrame(anytime),
        "curves.csv": pd.DataFrame(curves),
        "summary.csv": pd.DataFrame(summary),
        "reliability.csv": pd.concat(rel, ignore_index=True),
    }
    for name, df in frames.items():
        if name not in skip:
            df.to_csv(folder / name, index=False)
    meta = {
        "suite": "synthetic", "title": "Synthetic report", "cost_unit": unit,
        "command": "eebench run suites/synthetic.toml --reports /tmp/r",
        "suite_file": "suites/synthetic.toml", "created": "2025-01-01T00:00:00+00:00",
        "versions": {"eebench": "0.1.0", "numpy": np.__version__}, "budgets": budgets,
    }
    if "meta.json" not in skip:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _paired_columns(rows: list[dict]) -> list[dict]:
    """diff_ref, diff_low, diff_high as summarize writes them: per metric, every policy
    against the best (the oracle aside), the best against the runner-up; the synthetic
    intervals are a quarter of the runner-up's gap wide on each side (clearly apart)."""
    higher = {"mean_accuracy": True, "accuracy_at_cost": True, "cost_to_match_last_exit": False,
              "speedup_vs_last_exit": True}
    out = [dict(r, diff_ref="", diff_low=np.nan, diff_high=np.nan) for r in rows]
    for metric, up in higher.items():
        group = [r for r in out if r["metric"] == metric and r["policy"] != "oracle"
                 and np.isfinite(r["value"])]
        group.sort(key=lambda r: -r["value"] if up else r["value"])
        best, runner = group[0], group[1]
        half = abs(best["value"] - runner["value"]) / 4
        for r in group:
            ref = runner if r is best else best
            d = r["value"] - ref["value"]
            r.update(diff_ref=ref["policy"], diff_low=d - half, diff_high=d + half)
    return out


BAND = 0.001  # half-width of the synthetic curves' bootstrap bands

# budgets (MACs) of the MMAC build: MSDNet's learned operating points lie at
# 6e6 + 24e6 * i / 11, so EXACT is a measured point (no dagger), 15e6 lies between two
# points (dagger), and 35e6 lies beyond MSDNet's last exit (30e6) but inside ResNet's (40e6).
EXACT = 6.0e6 + 24.0e6 * T_GRID[3]
BUDGETS = [EXACT, 15.0e6, 35.0e6]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rep")
    res = make_results(root / "results" / "synthetic", budgets=BUDGETS)
    index = build_report(res, root / "reports" / "synthetic")
    return index, res


# ---------------------------------------------------------------- reliability table


def test_reliability_table_hand_made_example() -> None:
    probs = np.array(
        [
            [[0.90, 0.05, 0.05], [0.2, 0.7, 0.1]],  # label 0: exit 0 right (.9)
            [[0.95, 0.03, 0.02], [0.1, 0.8, 0.1]],  # label 1: exit 0 wrong (.95)
            [[0.50, 0.30, 0.20], [0.6, 0.3, 0.1]],  # label 0: right (.5)
            [[0.40, 0.35, 0.25], [0.3, 0.3, 0.4]],  # label 2: wrong (.4)
            [[1.00, 0.00, 0.00], [0.9, 0.05, 0.05]],  # label 0: right (1.0, kept in last bin)
            [[0.35, 0.33, 0.32], [0.1, 0.1, 0.8]],  # label 0: right (.35)
        ]
    )
    ls = LogitSet(probs, np.array([0, 1, 0, 2, 0, 0]), [1.0, 2.0], kind="probabilities",
                  exit_names=["a", "b"])
    tab = reliability_table(ls, model="m", n_bins=4)
    assert list(tab.columns) == ["model", "exit", "exit_name", "bin_low", "bin_high", "count",
                                 "mean_confidence", "accuracy"]
    assert len(tab) == 8 and (tab.model == "m").all()
    assert tab.groupby("exit")["count"].sum().tolist() == [6, 6]
    e0 = tab[tab.exit == 0].reset_index(drop=True)
    assert e0["exit_name"].tolist() == ["a"] * 4
    assert e0["bin_low"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert e0["count"].tolist() == [0, 2, 1, 3]
    assert np.isnan(e0.loc[0, "accuracy"]) and np.isnan(e0.loc[0, "mean_confidence"])
    assert e0.loc[1, "accuracy"] == pytest.approx(0.5)  # .4 wrong, .35 right
    assert e0.loc[1, "mean_confidence"] == pytest.approx(0.375)
    assert e0.loc[2, "accuracy"] == pytest.approx(1.0)
    assert e0.loc[3, "accuracy"] == pytest.approx(2 / 3)  # .9 right, .95 wrong, 1.0 right
    assert e0.loc[3, "mean_confidence"] == pytest.approx((0.9 + 0.95 + 1.0) / 3)
    # exit 1: predictions 1,1,0,2,0,2 -> right for samples 1,2,3,4
    e1 = tab[tab.exit == 1]
    assert (e1["count"] * e1["accuracy"].fillna(0)).sum() == pytest.approx(4)
    expected_ece = (2 * abs(0.5 - 0.375) + 1 * abs(1 - 0.5) + 3 * abs(2 / 3 - 0.95)) / 6
    assert ece_from_bins(e0) == pytest.approx(expected_ece)


def test_reliability_ece_matches_anytime_ece() -> None:
    from eebench.evaluate import anytime_table

    ls = _logitset(4, n=1000, seed=3)
    tab = reliability_table(ls, model="x", n_bins=15)
    ece = [ece_from_bins(tab[tab.exit == k]) for k in range(4)]
    assert ece == pytest.approx(anytime_table(ls, ece_bins=15)["ece"].tolist(), abs=1e-9)


def test_reliability_table_bad_input() -> None:
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table(_logitset(2), model="m", n_bins=0)
    with pytest.raises(TypeError, match="LogitSet"):
        reliability_table(np.zeros((3, 2, 2)), model="m")


# ---------------------------------------------------------------- units


def test_cost_scale_choice() -> None:
    s = cost_scale("MACs", [5e6, 9.99e7])
    assert (s.label, s.factor) == ("MMACs", 1e6) and s.axis_label() == "cost (MMACs)"
    g = cost_scale("MACs", [5e6, 1.0e8])
    assert (g.label, g.factor) == ("GMACs", 1e9)
    assert float(g(2.5e9)) == pytest.approx(2.5)
    assert "FLOPs" in g.note
    u = cost_scale("ms", [1.0, 2.0])
    assert u.axis_label() == "cost (ms)" and u.factor == 1.0 and "FLOPs" not in u.note
    with pytest.raises(ValueError, match="GMACs"):
        u.from_gmacs([1.0])
    with pytest.raises(ValueError, match="cost_unit"):
        cost_scale("", [1.0])


def test_axis_labels_follow_the_unit(tmp_path: Path) -> None:
    res = make_results(tmp_path / "g", factor=100.0)  # 0.6 .. 4 GMACs
    any_ = pd.read_csv(res / "anytime.csv")
    fig = plot_anytime(any_, "MACs")
    assert fig.axes[0].get_xlabel() == "cumulative cost per image (GMACs)"
    x = fig.axes[0].lines[0].get_xdata()
    assert x[-1] == pytest.approx(3.0)  # 30e6 * 100 MACs
    fig = plot_anytime(pd.read_csv(make_results(tmp_path / "m") / "anytime.csv"), "MACs")
    assert fig.axes[0].get_xlabel() == "cumulative cost per image (MMACs)"
    assert fig.axes[0].lines[0].get_xdata()[-1] == pytest.approx(30.0)
    fig = plot_anytime(any_, "ms")
    assert fig.axes[0].get_xlabel() == "cumulative cost per image (ms)"


# ---------------------------------------------------------------- the whole report


def _png_text(path: Path) -> bytes:
    return path.read_bytes()[:4096]


def test_build_report_writes_every_figure(report: tuple[Path, Path]) -> None:
    index, _ = report
    out = index.parent
    for stem, width_in in [("anytime", 3.4), ("budgeted", 7.0), ("exit_distribution", 7.0),
                           ("reliability", 7.0), ("calibration", 7.0)]:
        pdf, png = out / f"{stem}.pdf", out / f"{stem}.png"
        assert pdf.is_file() and png.is_file(), stem
        head = pdf.read_bytes()
        assert head.startswith(b"%PDF") and b"Matplotlib" in head and pdf.stat().st_size > 8000
        raw = png.read_bytes()
        assert raw.startswith(b"\x89PNG") and b"Matplotlib" in _png_text(png), stem
        assert png.stat().st_size > 30_000, stem
        from PIL import Image

        with Image.open(png) as im:
            w, h = im.size
            assert w == pytest.approx(width_in * 250, abs=2), stem
            assert h > 300
            px = np.asarray(im.convert("L"))
        assert px.std() > 20 and (px < 128).mean() > 0.005, f"{stem} looks blank"


def test_index_references_every_file(report: tuple[Path, Path]) -> None:
    index, _ = report
    out = index.parent
    text = index.read_text()
    files = sorted(p.name for p in out.iterdir() if p.name != "index.md")
    assert len(files) == 5 * 2 + 3 * 2 * 2  # 5 figures, 3 tables x 2 models, both formats
    for name in files:
        assert f"({name})" in text, f"index.md does not link {name}"
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (out / target).is_file(), f"index.md links a missing file {target}"
    for stem in ("anytime", "budgeted", "exit_distribution", "reliability", "calibration"):
        assert "![" in text and f"]({stem}.png)" in text and f"[{stem}.pdf]({stem}.pdf)" in text
    assert "eebench run suites/synthetic.toml --reports /tmp/r" in text
    assert "`suites/synthetic.toml`" in text
    assert "MMACs" in text and "FLOPs" in text
    assert "Not in this report" not in text
    # every table is inline (its Markdown) and its LaTeX linked
    for tex in out.glob("*.tex"):
        md = (out / f"{tex.stem}.md").read_text().split("\n\n", 1)[1]
        assert md.strip().splitlines()[0] in text


def test_budget_table_marks_best_interpolation_and_range(report: tuple[Path, Path]) -> None:
    index, _ = report
    md = (index.parent / "budgets-msdnet.md").read_text()
    tex = (index.parent / "budgets-msdnet.tex").read_text()
    # header: budgets in MMACs
    assert "| policy | @ 12.5455 MMACs | @ 15.0 MMACs | @ 35.0 MMACs |" in md
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    x, y = _curve_points(*MODELS["MSDNet"][:2], LEARNED["entropy/geometric"])
    at_exact = 100 * y[3]
    at_15 = 100 * np.interp(15.0e6, x, y)
    ent = rows["entropy/geometric"].split(" | ")
    assert ent[1] == f"**{at_exact:.2f}**"  # an operating point: bold, no dagger
    assert ent[2] == f"**{at_15:.2f}**†"  # between points: dagger
    assert ent[3].rstrip(" |") == "—"  # 35 MMACs: beyond MSDNet's 30 MMACs
    conf = rows["confidence/geometric"].split(" | ")
    assert "**" not in conf[1] and "**" not in conf[2]
    assert "oracle" not in rows and "static" in rows and "random" in rows
    assert "† interpolated linearly" in md and "outside the policy's cost range" in md
    assert "oracle (knows the labels" in md
    # LaTeX: booktabs, bold and dagger in the same cells
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrr}"):
        assert rule in tex
    tex_row = next(line for line in tex.splitlines() if line.startswith("entropy/geometric"))
    cells = [c.strip() for c in tex_row.rstrip("\\ ").split("&")]
    assert cells[1] == rf"\textbf{{{at_exact:.2f}}}"
    assert cells[2] == rf"\textbf{{{at_15:.2f}}}\textsuperscript{{\dag}}"
    assert cells[3] == "---"
    # the other model: 35 MMACs lies inside its range (10 .. 40), where entropy (78.48) and
    # confidence (78.38) are closer than their bands (+-0.1 each): nobody is bold there
    md2 = (index.parent / "budgets-resnet-exits.md").read_text()
    ent2 = next(line for line in md2.splitlines() if line.startswith("| entropy/geometric"))
    assert ent2.split(" | ")[1].startswith("**")
    assert ent2.split(" | ")[3].startswith("78.48†")
    body = [ln for ln in md2.splitlines() if ln.startswith("| ")][2:]
    assert not any("**" in ln.split(" | ")[3] for ln in body)
    assert "a column without bold has no policy ahead" in md2


def test_summary_table_best_and_oracle(report: tuple[Path, Path]) -> None:
    index, _ = report
    md = (index.parent / "summary-msdnet.md").read_text()
    tex = (index.parent / "summary-msdnet.tex").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    assert header == ["policy", "mean acc. (%)", "acc. (%) @ 12.0 MMACs",
                      "cost to match last exit (MMACs)", "speedup vs last exit (×)"]
    rows = {ln.split(" | ")[0].lstrip("| "): [c.strip() for c in ln.strip("|").split("|")]
            for ln in lines[1:]}
    ent = rows["entropy/geometric"]
    # mean accuracy 0.74 -> 74.00 [72.52, 75.48], the best: bold
    assert ent[1] == "**74.00 [72.52, 75.48]**"
    assert ent[2].startswith("**75.00") and ent[2].endswith("†")
    # cost to match: lower is better; entropy 30e6 * 0.5 = 15 MMACs beats the others,
    # the oracle's 7.8 MMACs is not marked
    assert ent[3].startswith("**15.0")
    assert not rows["oracle"][3].startswith("**") and rows["oracle"][3].startswith("7.80")
    assert rows["oracle"][1] == "—"
    assert ent[4].startswith("**2.00")
    assert not rows["oracle"][4].startswith("**")
    assert not any(c.startswith("**") for c in rows["confidence/geometric"][1:])
    assert "95% percentile bootstrap" in md and "[6.00, 30.0] MMACs" in md
    assert r"\textbf{74.00 [72.52, 75.48]}" in tex and r"speedup vs last exit ($\times$)" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_anytime_table_best_per_column(report: tuple[Path, Path]) -> None:
    index, _ = report
    md = (index.parent / "anytime-msdnet.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0] == ("| exit | cost (MMACs) | top-1 (%) | top-5 (%) | NLL | ECE (%) "
                        "| overthinking (%) |")
    last = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert last[:3] == ["4: block5", "30.0", "**80.00**"]
    assert last[4] == "**0.800**"  # lowest NLL at the last exit
    second = [c.strip() for c in lines[2].strip("|").split("|")]
    assert second[0] == "1: block2" and second[5] == "**2.00**"  # lowest ECE at exit 1
    assert not any("**" in c for c in (last[1], last[6]))  # cost, overthinking: not marked
    tex = (index.parent / "anytime-msdnet.tex").read_text()
    assert r"top-1 (\%)" in tex and r"\textbf{80.00}" in tex


# ---------------------------------------------------------------- figures


def test_published_overlay(tmp_path: Path) -> None:
    res = make_results(tmp_path / "p", factor=100.0)
    anytime = pd.read_csv(res / "anytime.csv")
    curves = pd.read_csv(res / "curves.csv")
    published = pd.DataFrame(
        {
            "source": ["Huang et al. 2018"] * 3 + ["Paper B"] * 2,
            "model": ["MSDNet"] * 3 + ["Other net"] * 2,
            "setting": ["anytime"] * 3 + ["budgeted"] * 2,
            "gmacs": [0.6, 1.8, 3.0, 1.0, 2.0],
            "top1": [61.0, 75.0, 79.5, 65.0, 72.0],
        }
    )
    plain = plot_anytime(anytime, "MACs")
    fig = plot_anytime(anytime, "MACs", published=published)
    ax = fig.axes[0]
    assert len(ax.lines) == len(plain.axes[0].lines) + 1
    pub = [ln for ln in ax.lines if ln.get_label() == published_label("MSDNet", "Huang et al. 2018")]
    assert len(pub) == 1
    line = pub[0]
    assert line.get_linestyle() == ":" and line.get_markerfacecolor() == "none"
    assert line.get_xdata().tolist() == pytest.approx([0.6, 1.8, 3.0])  # GMACs
    assert line.get_ydata().tolist() == pytest.approx([61.0, 75.0, 79.5])
    measured = [ln for ln in ax.lines if ln.get_label() == "MSDNet"][0]
    assert measured.get_linestyle() == "-" and measured.get_markerfacecolor() != "none"
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "MSDNet (published, Huang et al. 2018)" in legend_texts
    assert "Other net (published, Paper B)" not in legend_texts  # a budgeted row

    # budgeted: "Other net" matches no measured model, so it appears in both panels
    fig = plot_budgeted(curves, "MACs", published=published)
    panels = [a for a in fig.axes if a.get_visible()]
    assert len(panels) == 2
    for a in panels:
        labels = [ln.get_label() for ln in a.lines]
        assert labels.count("Other net (published, Paper B)") == 1
    # the overlay needs costs in MACs
    with pytest.raises(ValueError, match="GMACs"):
        plot_anytime(anytime, "ms", published=published)
    with pytest.raises(ValueError, match="setting"):
        plot_anytime(anytime, "MACs", published=published.assign(setting="dynamic"))
    with pytest.raises(ValueError, match="percent"):
        plot_anytime(anytime, "MACs", published=published.assign(top1=0.7))
    # and through build_report
    index = build_report(res, tmp_path / "out", published=published)
    assert "papers' numbers in grey" in index.read_text()


def test_budgeted_figure_baselines_and_fonts(report: tuple[Path, Path]) -> None:
    import matplotlib.text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _, res = report
    curves = pd.read_csv(res / "curves.csv")
    fig = plot_budgeted(curves, "MACs")
    ax = fig.axes[0]
    by_label = {ln.get_label(): ln for ln in ax.lines}
    assert by_label["oracle"].get_marker() == "*" and len(by_label["oracle"].get_xdata()) == 1
    assert by_label["random"].get_linestyle() == "--"
    static = by_label["static exits"]
    assert static.get_linestyle() == "None" and len(static.get_xdata()) == 5
    assert static.get_markerfacecolor() == "white" and static.get_marker() == "s"
    markers = [by_label[p].get_marker() for p in LEARNED]
    colors = [by_label[p].get_color() for p in LEARNED]
    assert len(set(markers)) == len(markers) and len(set(colors)) == len(colors)
    # one light band per learned policy, around its line
    bands = list(ax.collections)
    assert len(bands) == len(LEARNED)
    for p, band in zip(LEARNED, bands):
        assert np.allclose(band.get_facecolor()[0][:3], by_label[p].get_color()[:3])
        ys = band.get_paths()[0].vertices[:, 1]
        y = by_label[p].get_ydata()
        assert ys.min() == pytest.approx(y.min() - 100 * BAND) and ys.max() == pytest.approx(
            y.max() + 100 * BAND)
    any_fig = plot_anytime(pd.read_csv(res / "anytime.csv"), "MACs")
    rel = pd.read_csv(res / "reliability.csv")
    for f in (fig, any_fig, plot_reliability(rel), plot_calibration(rel),
              plot_exit_distribution(curves, "MACs")):
        FigureCanvasAgg(f).draw()  # outside the report style: sizes must stick
        sizes = [t.get_fontsize() for t in f.findobj(matplotlib.text.Text) if t.get_text()]
        assert sizes and min(sizes) >= 7


def _panels(fig) -> dict[tuple[str, str], object]:
    """(model, policy title) -> axes of an exit-distribution figure."""
    out = {}
    for sf in fig.subfigs:
        model = sf._suptitle.get_text()
        for ax in sf.axes:
            if ax.get_visible():
                out[(model, ax.get_title(loc="left"))] = ax
    return out


def test_exit_distribution_every_learned_policy(report: tuple[Path, Path]) -> None:
    _, res = report
    curves = pd.read_csv(res / "curves.csv")
    fig = plot_exit_distribution(curves, "MACs")
    panels = _panels(fig)
    # every learned policy of every model has a panel; baselines have none. Three panels a
    # row leave no room for "confidence+temperature/geometric": every title is short then
    assert set(panels) == {(m, short_policy_label(p)) for m in MODELS for p in LEARNED}
    assert "T = temperature scaling" in fig.eebench_label_key
    ax = panels[("MSDNet", "ent/geo")]
    # 5 exits stacked (ResNet: 3, frac_3 and frac_4 are NaN there); the stack tops at 100%
    assert len(ax.collections) == 5
    assert len(panels[("ResNet + exits", "ent/geo")].collections) == 3
    top = ax.collections[-1].get_paths()[0].vertices
    assert top[:, 1].max() == pytest.approx(100.0)
    sub = curves[(curves.model == "MSDNet") & (curves.policy == "entropy/geometric")]
    lowest = ax.collections[0].get_paths()[0].vertices
    assert lowest[:, 1].max() == pytest.approx(100 * sub.frac_0.max())
    # the panel shows the policy's marker in its colour, as in the budgeted figure
    budgeted = {ln.get_label(): ln for ln in plot_budgeted(curves, "MACs").axes[0].lines}
    mark = next(ln for ln in ax.lines if ln.get_label() == "_marker")
    assert mark.get_marker() == budgeted["entropy/geometric"].get_marker()
    assert mark.get_color() == budgeted["entropy/geometric"].get_color()
    # a policy with few operating points is drawn as bars of 100% each
    few = curves[(curves.policy != "entropy/geometric") | (curves.param.isin([0.0, 1.0]))]
    ax = _panels(plot_exit_distribution(few, "MACs"))[("MSDNet", "ent/geo")]
    tops = {}
    for p in ax.patches:
        tops[round(p.get_x(), 6)] = max(tops.get(round(p.get_x(), 6), 0), p.get_y() + p.get_height())
    assert len(tops) == 2 and np.allclose(list(tops.values()), 100.0)
    # one policy on request
    one = _panels(plot_exit_distribution(curves, "MACs", policy="entropy/geometric"))
    assert set(one) == {(m, "entropy/geometric") for m in MODELS}
    with pytest.raises(ValueError, match="no model has operating points"):
        plot_exit_distribution(curves, "MACs", policy="nope")
    only_baselines = curves[curves.policy.isin(["oracle", "random", "static"])]
    with pytest.raises(ValueError, match="no learned policy"):
        plot_exit_distribution(only_baselines, "MACs")


def test_reliability_figure_titles_show_ece(report: tuple[Path, Path]) -> None:
    _, res = report
    rel = pd.read_csv(res / "reliability.csv")
    fig = plot_reliability(rel)
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 5 + 3
    raw = rel[rel.policy.isna()]  # the calibrated policy's rows are drawn elsewhere
    e = ece_from_bins(raw[(raw.model == "MSDNet") & (raw.exit == 2)])
    assert visible[2].get_title() == f"2: block3\nECE {100 * e:.1f}%"


# ---------------------------------------------------------------- defaults and failures


def test_default_budgets_within_learned_range(tmp_path: Path) -> None:
    res = make_results(tmp_path / "d", factor=100.0)
    curves = pd.read_csv(res / "curves.csv")
    scale = cost_scale("MACs", curves.test_cost)
    df = curves[curves.model == "MSDNet"]
    budgets, sentence = default_budgets(df, scale)
    assert len(budgets) == 5
    assert budgets[0] >= 0.6e9 - 1 and budgets[-1] <= 3.0e9 + 1
    assert np.all(np.diff(budgets) > 0)
    assert "[0.600, 3.00] GMACs" in sentence
    tab = budget_tables(curves, scale)[0]
    assert tab.columns[1:] == ["@ 0.600 GMACs", "@ 1.20 GMACs", "@ 1.80 GMACs", "@ 2.40 GMACs",
                               "@ 3.00 GMACs"]
    # the ends are operating points (no dagger), the middle ones are interpolated
    ent = next(r for r in tab.rows if r[0].text == "entropy/geometric")
    assert [c.dagger for c in ent[1:]] == [False, True, True, True, False]
    index = build_report(res, tmp_path / "out")  # meta budgets null -> defaults
    text = index.read_text()
    assert "evenly spaced costs" in text and "GMACs" in text and "MMACs" not in text


def test_user_cost_unit(tmp_path: Path) -> None:
    res = make_results(tmp_path / "u", factor=1e-6, unit="ms")
    index = build_report(res, tmp_path / "out")
    text = index.read_text()
    assert "cost (ms)" in text and "FLOPs" not in text
    t = summary_tables(pd.read_csv(res / "summary.csv"), cost_scale("ms", [1.0]))[0]
    assert "cost to match last exit (ms)" in t.columns


def test_missing_required_file_is_named(tmp_path: Path) -> None:
    for name in REQUIRED_FILES:
        res = make_results(tmp_path / name.replace(".", "_"), skip=(name,))
        with pytest.raises(FileNotFoundError, match=re.escape(name)) as err:
            build_report(res, tmp_path / "out")
        assert "eebench run" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "out")


def test_optional_files_skipped_with_a_note(tmp_path: Path) -> None:
    res = make_results(tmp_path / "o", skip=("reliability.csv", "summary.csv"))
    index = build_report(res, tmp_path / "out")
    text = index.read_text()
    assert "## Not in this report" in text
    assert "reliability.csv is absent" in text and "summary.csv is absent" in text
    assert not (tmp_path / "out" / "reliability.png").exists()
    assert (tmp_path / "out" / "budgeted.png").is_file()
    assert not list((tmp_path / "out").glob("summary-*"))
    # a rebuild from the same results gives the same files (no dates inside the PDFs)
    build_report(res, tmp_path / "again")
    for f in (tmp_path / "out").iterdir():
        if f.name != "index.md":
            assert f.read_bytes() == (tmp_path / "again" / f.name).read_bytes(), f.name


def test_bad_results_fail_clearly(tmp_path: Path) -> None:
    res = make_results(tmp_path / "b")
    curves = pd.read_csv(res / "curves.csv")
    curves.assign(test_acc=curves.test_acc * 100).to_csv(res / "curves.csv", index=False)
    with pytest.raises(ValueError, match="fractions"):
        build_report(res, tmp_path / "out")
    curves.drop(columns=["test_cost"]).to_csv(res / "curves.csv", index=False)
    with pytest.raises(ValueError, match="test_cost"):
        build_report(res, tmp_path / "out")
    curves.to_csv(res / "curves.csv", index=False)
    meta = json.loads((res / "meta.json").read_text())
    (res / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "cost_unit"}))
    with pytest.raises(ValueError, match="cost_unit"):
        build_report(res, tmp_path / "out")
    (res / "meta.json").write_text(json.dumps({**meta, "budgets": "cheap"}))
    with pytest.raises(ValueError, match="budgets"):
        build_report(res, tmp_path / "out")


def test_default_report_folder_from_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = make_results(tmp_path / "results" / "synthetic", skip=("reliability.csv",))
    monkeypatch.chdir(tmp_path)
    index = build_report(res)
    assert index.resolve() == (tmp_path / "reports" / "synthetic" / "index.md").resolve()


def test_summary_table_short_metric_names() -> None:
    """The short names (auc, acc_at_cost with its cost in cost_lo == cost_hi, ...) read the
    same way."""
    rows = []
    for pol, auc, match in [("a/geometric", 0.70, 2.0e9), ("b/geometric", 0.72, 2.5e9)]:
        rows += [
            {"model": "m", "policy": pol, "metric": "auc", "value": auc, "ci_low": auc - 0.01,
             "ci_high": auc + 0.01, "unit": "accuracy", "note": ""},
            {"model": "m", "policy": pol, "metric": "acc_at_cost", "value": auc + 0.01,
             "ci_low": np.nan, "ci_high": np.nan, "unit": "accuracy", "interpolated": True,
             "cost_lo": 1.5e9, "cost_hi": 1.5e9, "note": "interpolated at cost 1500000000"},
            {"model": "m", "policy": pol, "metric": "cost_to_match_last", "value": match,
             "ci_low": match * 0.9, "ci_high": match * 1.1, "unit": "cost", "note": ""},
        ]
    t = summary_tables(pd.DataFrame(rows), cost_scale("MACs", [1e9]))[0]
    assert t.columns == ["policy", "mean acc. (%)", "acc. (%) @ 1.50 GMACs",
                         "cost to match last exit (GMACs)"]
    a, b = t.rows
    # no paired columns (older results): the own intervals decide; [71, 73] touches [69, 71]
    assert b[1].text == "72.00 [71.00, 73.00]" and not b[1].bold and not a[1].bold
    assert b[2].text == "73.00" and b[2].dagger and not b[2].bold  # no interval: not marked
    assert a[3].text == "2.00 [1.80, 2.20]" and a[3].bold and not b[3].bold  # lower cost wins
    assert "a column without bold has no policy ahead" in "\n".join(t.notes)


def test_anytime_tables_without_optional_columns() -> None:
    df = pd.DataFrame({"model": ["a", "a"], "exit": [0, 1], "cost": [1e9, 2e9], "top1": [0.5, 0.6]})
    t = anytime_tables(df, cost_scale("MACs", df.cost))[0]
    assert t.columns == ["exit", "cost (GMACs)", "top-1 (%)"]
    assert t.rows[1][2].bold and not t.rows[0][2].bold


def test_import_is_light() -> None:
    # What makes a start slow is which modules load, not this machine's speed: assert that.
    code = (
        "import sys; import eebench.report; "
        "bad = [m for m in ('torch', 'timm', 'matplotlib', 'seaborn', 'pandas') if m in sys.modules]; "
        "print(bad); assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- uncertainty and comparability

TEN = ["confidence/geometric", "entropy/geometric", "confidence+temperature/geometric",
       "confidence/ga", "eenet", "confidence+mie/geometric",
       "confidence+temperature+mie/geometric", "confidence/risk", "margin/geometric",
       "my custom policy"]


def _ten_policy_curves(models: dict[str, tuple[float, float, int]]) -> pd.DataFrame:
    """Ten learned policies (with bands), random, oracle and static per model."""
    rows = []
    for m, (c0, c1, k) in models.items():
        t = np.linspace(0, 1, 15)
        for i, p in enumerate(TEN):
            acc = 0.6 + 0.2 * (1 - (1 - t) ** (1.5 + 0.25 * i))
            for tt, a in zip(t, acc):
                r = {"model": m, "policy": p, "param": tt, "test_acc": a,
                     "test_cost": c0 + (c1 - c0) * tt, "test_acc_low": a - 0.01,
                     "test_acc_high": a + 0.01}
                r.update({f"frac_{j}": f for j, f in enumerate(_fractions(k, tt))})
                rows.append(r)
        for tt in (0.0, 0.5, 1.0):
            rows.append({"model": m, "policy": "random", "param": tt, "test_acc": 0.6 + 0.2 * tt,
                         "test_cost": c0 + (c1 - c0) * tt})
        rows.append({"model": m, "policy": "oracle", "param": 0.0, "test_acc": 0.95,
                     "test_cost": c0 * 1.2})
    return pd.DataFrame(rows)


def test_policy_keeps_its_colour_and_marker_everywhere(report: tuple[Path, Path]) -> None:
    _, res = report
    curves = pd.read_csv(res / "curves.csv")

    def look(fig, policy: str) -> tuple:
        ln = next(ln for ln in fig.axes[0].lines if ln.get_label() == policy)
        return tuple(np.round(ln.get_color(), 6)), ln.get_marker()

    # two figures of different policy sets (two reports): the same look for a policy
    few = curves[curves.policy.isin(["entropy/geometric", "random", "static"])]
    ten = _ten_policy_curves({"MSDNet": (6e6, 30e6, 5)})
    for p in ("entropy/geometric", "confidence+temperature/geometric"):
        a = look(plot_budgeted(curves, "MACs"), p)
        assert look(plot_budgeted(ten, "MACs"), p) == a
        if p in set(few.policy):
            assert look(plot_budgeted(few, "MACs"), p) == a
    # the calibration figure draws a calibrated policy in its own look as well
    rel = pd.read_csv(res / "reliability.csv")
    cal = plot_calibration(rel)
    line = next(ln for ln in cal.axes[0].lines if ln.get_label().startswith("after"))
    p = "confidence+temperature/geometric"
    assert (tuple(np.round(line.get_color(), 6)), line.get_marker()) == look(
        plot_budgeted(curves, "MACs"), p)
    # names outside the table: a stable hash, the same in another process (no hash salt)
    mine = policy_styles(["my custom policy"])["my custom policy"]
    assert policy_styles(["my custom policy", "confidence/geometric"])["my custom policy"] == mine
    code = ("from eebench.report.style import policy_styles as s; "
            "print(s(['my custom policy'])['my custom policy'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == repr(mine)
    # ten policies in one figure: no two share colour and marker, the first nine no colour
    st = policy_styles(TEN)
    pairs = [(s.color, s.marker) for s in st.values()]
    assert len(set(pairs)) == 10 and len({s.color for s in list(st.values())[:9]}) == 9


def test_legend_of_ten_policies_sits_below_the_axes() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for models, width in (({"MSDNet": (6e6, 30e6, 5)}, 3.4),
                          ({"MSDNet": (6e6, 30e6, 5), "ResNet": (10e6, 40e6, 3)}, 7.0)):
        fig = plot_budgeted(_ten_policy_curves(models), "MACs")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # the layout as saved
        renderer = canvas.get_renderer()
        assert fig.get_figwidth() == pytest.approx(width)
        (leg,) = fig.legends
        lb = leg.get_window_extent(renderer)
        fb = fig.bbox
        assert lb.x0 >= fb.x0 - 1 and lb.x1 <= fb.x1 + 1 and lb.y0 >= fb.y0 - 1
        panels = [ax for ax in fig.axes if ax.get_visible()]
        for ax in panels:
            tight = ax.get_tightbbox(renderer)  # axes with tick labels and axis label
            assert lb.y1 <= tight.y0 + 0.5, "the legend overlaps a panel"
            assert lb.height < ax.bbox.height, "the legend dwarfs the panel"
        texts = [t.get_text() for t in leg.get_texts()]
        assert len(texts) == 10 + 2 and all(t for t in texts)
        assert len({round(t.get_window_extent(renderer).y0) for t in leg.get_texts()}) <= 6
        if width == 3.4:  # one column of a paper: short labels and their key
            assert "conf+T+MIE/geo" in texts and "my custom policy" in texts
            assert "MIE = model-internal ensembling" in fig.eebench_label_key


def test_best_is_marked_only_when_the_paired_bootstrap_says_so() -> None:
    from eebench.evaluate import anytime_table, budgeted_curve, summarize
    from eebench.policies import StaticPolicy
    from eebench.store.splits import split_logitset

    ls = _logitset(4, n=3000, seed=5)
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    geo, twin, static = make_policy("confidence"), make_policy("confidence"), StaticPolicy()
    parts = [budgeted_curve(geo, val, test), budgeted_curve(twin, val, test).assign(policy="twin"),
             budgeted_curve(static, val, test)]
    scale = cost_scale("MACs", [1.0])

    def bold(curve: pd.DataFrame, points: dict) -> dict[str, bool]:
        s = summarize(curve, anytime_table(test), n_boot=100, seed=0, test=test, points=points)
        t = summary_tables(s.assign(model="m"), scale)[0]
        assert t.columns[1] == "mean acc. (%)"
        return {r[0].text: r[1].bold for r in t.rows}

    # thresholds clearly beat static exits: the paired interval excludes zero although the
    # two own intervals overlap
    marked = bold(pd.concat([parts[0], parts[2]]), {geo.name: geo, "static": static})
    assert marked == {geo.name: True, "static": False}
    # the same policy under two names is a statistical tie: nothing is bold
    tied = bold(pd.concat(parts), {geo.name: geo, "twin": twin, "static": static})
    assert not any(tied.values())


def test_reliability_rows_per_calibration(tmp_path: Path) -> None:
    from eebench.report.reliability import calibrated_reliability_table, raw_rows

    ls = _logitset(3, n=600, seed=4)
    ls = LogitSet(ls.logits * 3.0, ls.labels, ls.costs)  # over-confident exits
    fitted = {
        "confidence/geometric": make_policy("confidence").fit(ls),
        "confidence+temperature/geometric": make_policy("confidence", calibration="temperature").fit(ls),
        "entropy+temperature/geometric": make_policy("entropy", calibration="temperature").fit(ls),
        "confidence+mie/geometric": make_policy("confidence", calibration="mie").fit(ls),
        "random": make_policy("confidence", "random", calibration="temperature").fit(ls),
    }
    raw = reliability_table(ls, model="MSDNet", n_bins=10)
    cal = calibrated_reliability_tables(fitted, ls, "MSDNet", n_bins=10)
    assert [c.policy.iloc[0] for c in cal] == [
        "confidence+temperature/geometric", "entropy+temperature/geometric",
        "confidence+mie/geometric"]  # not the uncalibrated one, not the random baseline
    assert [c.calibration.iloc[0] for c in cal] == ["temperature", "temperature", "mie"]
    for c in cal:
        assert list(c.columns[:8]) == list(raw.columns) and len(c) == len(raw)
        assert c.groupby("exit")["count"].sum().tolist() == [600] * 3
    # temperature scaling fit on these outputs calibrates them
    t = cal[0]
    for k in range(3):
        assert ece_from_bins(t[t.exit == k]) < ece_from_bins(raw[raw.exit == k])
    # model-internal ensembling is scored on its own (ensembled) predictions
    mie = cal[2]
    hits = fitted["confidence+mie/geometric"].correct(ls).sum(axis=0)
    got = [(g["count"] * g["accuracy"].fillna(0)).sum() for _, g in mie.groupby("exit")]
    assert got == pytest.approx(hits.tolist())
    assert calibrated_reliability_table(fitted["confidence/geometric"], ls, "m") is None
    with pytest.raises(ValueError, match="name"):
        calibrated_reliability_table(fitted["confidence+mie/geometric"], ls, "m", "none")
    # written and read back as the runner does: raw rows keep an empty policy
    frame = pd.concat([raw, *cal], ignore_index=True)
    res = make_results(tmp_path / "r", skip=("reliability.csv",))
    frame.to_csv(res / "reliability.csv", index=False)
    index = build_report(res, tmp_path / "out")
    from eebench.report import load_results

    rel = load_results(res).reliability
    assert (rel.policy == "").sum() == len(raw)
    assert len(raw_rows(rel)) == len(raw)
    # one row per model and calibration: the two temperature policies share theirs
    fig = plot_calibration(rel)
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_visible() and ax.get_ylabel()]
    assert rows == ["MSDNet\ntemperature\naccuracy", "MSDNet\nmie\naccuracy"]
    text = index.read_text()
    assert "temperature: confidence+temperature/geometric, entropy+temperature/geometric" in text
    assert (tmp_path / "out" / "calibration.png").is_file()


def test_old_results_still_draw(tmp_path: Path) -> None:
    """Results written before bands, paired differences and calibrated reliability rows."""
    res = make_results(tmp_path / "old", skip=("bands", "diffs", "calibrated"))
    curves = pd.read_csv(res / "curves.csv")
    assert "test_acc_low" not in curves.columns
    fig = plot_budgeted(curves, "MACs")
    assert not fig.axes[0].collections  # no band
    index = build_report(res, tmp_path / "out")
    text = index.read_text()
    assert "light bands" not in text and not (tmp_path / "out" / "calibration.png").exists()
    assert (tmp_path / "out" / "budgeted.png").is_file()
    # without paired columns the own intervals decide: mean accuracy [72.52, 75.48] and
    # [71.54, 74.46] overlap (no bold), cost to match [14.7, 15.3] and [17.6, 18.4] do not
    md = (tmp_path / "out" / "summary-msdnet.md").read_text()
    ent = next(ln for ln in md.splitlines() if ln.startswith("| entropy/geometric"))
    cells = [c.strip() for c in ent.strip("|").split("|")]
    assert cells[1] == "74.00 [72.52, 75.48]" and cells[3] == "**15.0 [14.7, 15.3]**"
