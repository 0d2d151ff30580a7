"""Ablation tables: variants x budgets, signed deltas with arrows against a reference row,
from measured curves (read at common costs) and from published ablation rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from eebench.cli import main
from eebench.report.ablation import (
    ablation_from_curves,
    ablation_from_published,
    ablation_table,
    delta_text,
)
from eebench.report.published import COLUMNS
from eebench.report.style import cost_scale


def test_delta_text_signs_and_arrows() -> None:
    assert delta_text(75.34, 74.1) == "75.3 (↑1.2)"
    assert delta_text(73.9, 74.1) == "73.9 (↓0.2)"
    assert delta_text(74.1, 74.1) == "74.1 (±0.0)"


def _values() -> pd.DataFrame:
    return pd.DataFrame({
        "variant": ["full", "full", "w/o CAM", "w/o CAM", "w/o GAL", "w/o GAL"],
        "budget": ["1 G", "2 G"] * 3,
        "top1": [70.0, 75.0, 68.5, 75.2, 69.0, float("nan")],
    })


def test_table_puts_reference_first_with_deltas_and_bold_best() -> None:
    t = ablation_table(_values(), "full", variants=["w/o CAM", "full", "w/o GAL"])
    md = t.to_markdown()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| variant | 1 G | 2 G |"
    assert lines[1] == "| full | **70.0** | 75.0 |"
    assert lines[2] == "| w/o CAM | 68.5 (↓1.5) | **75.2 (↑0.2)** |"
    assert lines[3] == "| w/o GAL | 69.0 (↓1.0) | — |"
    tex = t.to_latex()
    assert r"68.5 ($\downarrow$1.5)" in tex and r"\textbf{75.2 ($\uparrow$0.2)}" in tex


def test_bad_reference_and_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="reference 'ful'"):
        ablation_table(_values(), "ful")
    dup = pd.concat([_values(), _values().iloc[:1]])
    with pytest.raises(ValueError, match="two values for variant 'full'"):
        ablation_table(dup, "full")


def test_from_curves_reads_each_variant_at_the_budgets() -> None:
    curves = pd.DataFrame({
        "model": ["A"] * 3 + ["B"] * 3,
        "policy": ["p"] * 6,
        "test_cost": [1e9, 2e9, 3e9, 1e9, 2e9, 3e9],
        "test_acc": [0.6, 0.7, 0.8, 0.5, 0.6, 0.9],
    })
    scale = cost_scale("MACs", curves["test_cost"])
    vals = ablation_from_curves(curves, [1.5e9, 3e9, 4e9], scale, policy="p")
    a = vals[vals["variant"] == "A"]
    assert a["top1"].iloc[0] == pytest.approx(65.0)
    assert bool(a["interpolated"].iloc[0]) and not bool(a["interpolated"].iloc[1])
    assert pd.isna(a["top1"].iloc[2])  # outside the curve: never extrapolated
    t = ablation_table(vals, "A")
    assert "55.0 (↓10.0)†" in t.to_markdown()
    with pytest.raises(ValueError, match="no curve of policy 'q'"):
        ablation_from_curves(curves, [1e9], scale, policy="q")


def test_cli_ablation_from_published_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = []
    for model, acc in (("CHASE", 76.2), ("CHASE w/o CAM", 75.4)):
        r = dict.fromkeys(COLUMNS, "")
        r.update(source="demo", citation="Demo, Figure 5", model=model, dataset="imagenet",
                 setting="ablation", point="budget 1", top1=acc, from_figure="false")
        rows.append(r)
    pub = tmp_path / "pub"
    pub.mkdir()
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(pub / "demo.csv", index=False)
    monkeypatch.setenv("EEBENCH_PUBLISHED", str(pub))
    assert main(["ablation", "--published", "demo", "--reference", "CHASE", "--out", str(tmp_path)]) == 0
    assert "75.4 (↓0.8)" in capsys.readouterr().out
    assert (tmp_path / "ablation.tex").is_file() and (tmp_path / "ablation.md").is_file()
    values = ablation_from_published(pd.read_csv(pub / "demo.csv"), "demo")
    assert values["budget"].tolist() == ["budget 1", "budget 1"]


def test_cli_ablation_of_the_shipped_chase_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    # The README's example: Section III-C of CHASE as a table against the full model.
    monkeypatch.delenv("EEBENCH_PUBLISHED", raising=False)
    assert main(["ablation", "--published", "chase", "--reference", "CHASE", "--out", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| variant | budgeted, quoted point | anytime, last exit |"
    assert lines[1] == "| CHASE | 81.2 | 81.3 |"
    assert lines[2] == "| CHASE w/o CAM and GAL | 79.7 (↓1.5) | — |"  # "a decline of more than 1.5%"
    assert lines[3] == "| CHASE, GAL in the two final blocks | **81.6 (↑0.3)** | **81.6 (↑0.3)** |"
    assert (tmp_path / "ablation.md").is_file()
