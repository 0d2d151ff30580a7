"""Importing other projects' curve files: each format is written here the way its official
writer writes it (same format strings, same numpy/torch calls), read back into
published-numbers rows, and drawn by the report; malformed files fail with the file,
the line and what to do."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eebench.report.imported import (
    FORMATS,
    ImportFormatError,
    detect_format,
    import_curve,
    read_calibrated_dnn,
    read_dvt_checkpoint,
    read_dynamic_txt,
    read_l2w,
    write_imported,
)
from eebench.report.published import COLUMNS, load_published

# MSDNet-like budgeted points: accuracy (%) and expected cost in raw MACs
MSD_ACC = [56.634, 63.912, 68.05, 71.32, 74.24]
MSD_MACS = [339_123_456.0, 512_000_000.5, 701_234_567.0, 950_000_000.0, 1_364_000_000.0]


def _write_dynamic_txt(path: Path, accs, costs) -> Path:
    """As MSDNet/RANet/L2W/Dyn-Perceiver adaptive_inference.py: '{}\\t{}\\n'.format(acc, cost)."""
    import torch

    with open(path, "w") as fout:
        for a, c in zip(accs, costs):
            exp_flops = torch.tensor(c, dtype=torch.float64)
            fout.write("{}\t{}\n".format(a, exp_flops.item()))  # noqa: UP032 (the writer's call)
    return path


def test_dynamic_txt_in_raw_macs(tmp_path: Path) -> None:
    path = _write_dynamic_txt(tmp_path / "dynamic.txt", MSD_ACC, MSD_MACS)
    df = read_dynamic_txt(path, cost_unit="macs", model="MSDNet", dataset="imagenet")
    assert list(df.columns) == list(COLUMNS)
    assert (df["setting"] == "budgeted").all()
    assert df["gmacs"].tolist() == pytest.approx([c / 1e9 for c in MSD_MACS])
    assert df["top1"].tolist() == pytest.approx(MSD_ACC)
    assert df["point"].tolist() == [f"budget {i}" for i in range(1, 6)]
    assert (df["source"] == "dynamic.txt").all() and (df["citation"] == str(path)).all()
    assert (df["model"] == "MSDNet").all() and (df["dataset"] == "imagenet").all()
    assert df["exit"].isna().all() and not df["from_figure"].any()
    assert df["note"].str.contains("macs").all()


def test_dynamic_txt_of_dynamic_perceiver_in_gmacs(tmp_path: Path) -> None:
    gm = [0.21, 0.35, 0.52, 0.71]
    path = _write_dynamic_txt(tmp_path / "dynamic.txt", [70.1, 73.5, 75.9, 77.2], gm)
    df = import_curve(path, cost_unit="GMACs", source="dynperceiver-local")
    assert df["gmacs"].tolist() == pytest.approx(gm)
    assert (df["source"] == "dynperceiver-local").all()
    assert (df["model"] == "dynperceiver-local").all()  # model defaults to the source


def test_dynamic_txt_needs_the_unit_and_refuses_unknown_or_implausible_ones(tmp_path: Path) -> None:
    path = _write_dynamic_txt(tmp_path / "dynamic.txt", MSD_ACC, MSD_MACS)
    with pytest.raises(ImportFormatError, match=r"no cost unit.*cost_unit='gmacs'.*--cost-unit"):
        import_curve(path)
    with pytest.raises(ImportFormatError, match=r"unknown cost unit 'flops'.*macs, mmacs, gmacs"):
        import_curve(path, cost_unit="flops")
    with pytest.raises(ImportFormatError, match=r"read as 'gmacs'.*probably in another unit"):
        import_curve(path, cost_unit="gmacs")  # raw MACs read as G: 1.4e9 G per image
    with pytest.raises(ImportFormatError, match=r"read as 'mmacs'.*one of macs, gmacs"):
        import_curve(path, cost_unit="mmacs")
    in_m = _write_dynamic_txt(tmp_path / "dynamic_m.txt", MSD_ACC, [c / 1e6 for c in MSD_MACS])
    assert import_curve(in_m, cost_unit="mmacs")["gmacs"].max() == pytest.approx(1.364)


def test_dynamic_txt_bad_rows_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.txt"
    path.write_text("56.6\t339123456.0\n63.9\t512000000.0\t7\n")
    with pytest.raises(ImportFormatError, match=r"dynamic.txt:2: 3 column\(s\) where 2"):
        read_dynamic_txt(path, cost_unit="macs")
    path.write_text("56.6\t339123456.0\nnan-ish\t512000000.0\n")
    with pytest.raises(ImportFormatError, match=r"dynamic.txt:2: not all numbers"):
        read_dynamic_txt(path, cost_unit="macs")
    path.write_text("0.566\t339123456.0\n0.639\t512000000.0\n")
    with pytest.raises(ImportFormatError, match=r"<= 1.*percentages"):
        read_dynamic_txt(path, cost_unit="macs")
    path.write_text("\n\n")
    with pytest.raises(ImportFormatError, match="has no rows"):
        read_dynamic_txt(path, cost_unit="macs")
    with pytest.raises(FileNotFoundError):
        read_dynamic_txt(tmp_path / "absent.txt", cost_unit="macs")


def _write_calibrated(path: Path, n: int = 4) -> tuple[np.ndarray, ...]:
    """As calibrated-dnn adaptive_inference.py: acc_test a float (%), nlpd and acc5 0-d
    tensors, ECE a numpy float, exp_flops.item(); tab separated, no header."""
    import torch

    acc = np.linspace(70.0, 76.0, n)
    nlpd = np.linspace(1.3, 0.95, n)
    ece = np.linspace(0.02, 0.05, n)
    acc5 = np.linspace(89.0, 92.5, n)
    macs = np.linspace(4.0e8, 1.2e9, n)
    with open(path, "w") as fout:
        for i in range(n):
            acc_test = int(acc[i] * 500) * 100.0 / 50000
            t_nlpd = torch.tensor(nlpd[i], dtype=torch.float32)
            t_acc5 = torch.tensor(acc5[i], dtype=torch.float32)
            exp_flops = torch.tensor(macs[i], dtype=torch.float32)
            fout.write("{}\t{}\t{}\t{}\t{}\n".format(  # noqa: UP032 (the writer's call)
                acc_test, t_nlpd, np.float64(ece[i]), t_acc5, exp_flops.item()))
    return acc, nlpd, ece, acc5, macs


def test_calibrated_dnn_five_columns(tmp_path: Path) -> None:
    path = tmp_path / "dynamic_MIE.txt"
    acc, nlpd, ece, acc5, macs = _write_calibrated(path)
    df = import_curve(path, dataset="cifar100")  # detected by its 5 columns; unit fixed: MACs
    assert (df["setting"] == "budgeted").all() and len(df) == 4
    assert df["top1"].tolist() == pytest.approx(acc, abs=0.01)
    assert df["top5"].tolist() == pytest.approx(acc5, abs=1e-4)
    assert df["gmacs"].tolist() == pytest.approx(macs / 1e9, rel=1e-6)
    assert "NLPD 1.3, ECE 0.02 " in df["note"].iloc[0]
    assert "NLPD 0.95, ECE 0.05 " in df["note"].iloc[3]
    # a 5-column file whose third column is not an ECE fraction is refused
    bad = tmp_path / "bad.txt"
    bad.write_text("75.0\t0.9\t3.5\t92.0\t1000000.0\n")
    with pytest.raises(ImportFormatError, match=r"column 3 \(ECE\)"):
        read_calibrated_dnn(bad)
    bad.write_text("75.0\t0.9\t0.03\t92.0\n")
    with pytest.raises(ImportFormatError, match=r"bad.txt:1: 4 column\(s\) where 5"):
        read_calibrated_dnn(bad)


def _write_l2w(folder: Path, set_name: str = "test_final") -> tuple[np.ndarray, list[float]]:
    """As L2W-DEN tools/main_imagenet_DDP.py: np.savetxt(flops.txt, [f/1e6]) and
    np.savetxt(AnytimeResults_on_all_<set>.csv, [loss, acc1, acc5], fmt='%6.4f', delimiter=',')."""
    folder.mkdir(parents=True, exist_ok=True)
    n_flops = [339_900_000.0, 685_500_000.0, 1_008_400_000.0, 1_254_000_000.0, 1_360_000_000.0]
    np.savetxt(folder / "flops.txt", [f / 1e6 for f in n_flops])
    arr = np.array([[1.71, 58.48, 81.35], [1.29, 66.21, 86.9], [1.13, 70.1, 89.4],
                    [1.05, 72.3, 90.7], [1.0, 73.61, 91.5]])
    np.savetxt(folder / f"AnytimeResults_on_all_{set_name}.csv", arr, fmt="%6.4f", delimiter=",")
    return arr, n_flops


def test_l2w_anytime_rows_from_csv_and_flops(tmp_path: Path) -> None:
    arr, n_flops = _write_l2w(tmp_path / "run")
    csv = tmp_path / "run" / "AnytimeResults_on_all_test_final.csv"
    for df in (import_curve(csv), import_curve(tmp_path / "run"), read_l2w(csv, model="L2W-DEN")):
        assert (df["setting"] == "anytime").all()
        assert df["exit"].tolist() == [1, 2, 3, 4, 5]
        assert df["gmacs"].tolist() == pytest.approx([f / 1e9 for f in n_flops])
        assert df["top1"].tolist() == pytest.approx(arr[:, 1])
        assert df["top5"].tolist() == pytest.approx(arr[:, 2])
        assert (df["source"] == csv.name).all() and (df["citation"] == str(csv)).all()
        assert "cross-entropy 1.7100" in df["note"].iloc[0]


def test_l2w_errors(tmp_path: Path) -> None:
    arr, _ = _write_l2w(tmp_path / "run")
    csv = tmp_path / "run" / "AnytimeResults_on_all_test_final.csv"
    np.savetxt(tmp_path / "run" / "flops.txt", [339.9, 685.5, 1008.4])
    with pytest.raises(ImportFormatError, match="5 exit rows but .* 3 costs"):
        read_l2w(csv)
    (tmp_path / "run" / "flops.txt").rename(tmp_path / "costs.txt")
    with pytest.raises(FileNotFoundError, match=r"flops.txt.*--flops"):
        read_l2w(csv)
    np.savetxt(tmp_path / "costs.txt", [339.9, 685.5, 1008.4, 1254.0, 1360.0])
    assert import_curve(csv, flops_path=tmp_path / "costs.txt")["gmacs"].iloc[-1] == pytest.approx(1.36)
    _write_l2w(tmp_path / "run", set_name="test")  # a second CSV: the folder is ambiguous
    with pytest.raises(ImportFormatError, match="exactly one AnytimeResults"):
        read_l2w(tmp_path / "run")
    np.savetxt(csv, arr[:, :2], fmt="%6.4f", delimiter=",")
    with pytest.raises(ImportFormatError, match=r"csv:1: 2 column\(s\) where 3"):
        read_l2w(csv)
    with pytest.raises(ImportFormatError, match="holds per-exit costs only"):
        import_curve(tmp_path / "run" / "flops.txt")


DVT_FLOPS = [0.6161, 1.3095, 2.2567]  # G, cumulative per exit (T2T-ViT-12-like)


def _dvt_checkpoint(path: Path, **extra) -> Path:
    """The entries DVT's README lists and inference.py reads (values as inference.py makes
    them: python floats, a [costs, accs] list, a (points, exits) threshold tensor)."""
    import torch

    ck = {
        "model_state_dict": OrderedDict(w=torch.zeros(3, 2)),
        "flops": list(DVT_FLOPS),
        "anytime_classification": [69.1, 75.3, 78.02],
        "budgeted_batch_classification": [[0.7, 1.0, 1.4, 1.9], [71.0, 74.9, 77.1, 78.0]],
        "dynamic_threshold": torch.tensor([[0.9, 0.8, -1e8], [0.8, 0.7, -1e8],
                                           [0.6, 0.5, -1e8], [0.4, 0.3, -1e8]]),
    }
    ck.update(extra)
    torch.save(ck, path)
    return path


def test_dvt_checkpoint_anytime_and_budgeted(tmp_path: Path) -> None:
    path = _dvt_checkpoint(tmp_path / "dvt_t2t12.pth.tar")
    df = import_curve(path, model="DVT (T2T-ViT-12)", dataset="imagenet")
    any_ = df[df["setting"] == "anytime"]
    bud = df[df["setting"] == "budgeted"]
    assert any_["exit"].tolist() == [1, 2, 3]
    assert any_["gmacs"].tolist() == pytest.approx(DVT_FLOPS)
    assert any_["top1"].tolist() == pytest.approx([69.1, 75.3, 78.02])
    assert bud["gmacs"].tolist() == pytest.approx([0.7, 1.0, 1.4, 1.9])
    assert bud["top1"].tolist() == pytest.approx([71.0, 74.9, 77.1, 78.0])
    assert "dynamic_threshold [0.9, 0.8, -1e+08]" in bud["note"].iloc[0]
    assert (df["citation"] == str(path)).all()


def test_cfvit_checkpoint_with_flop_key_tensors_and_args_namespace(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "cf_deit_s.pth"
    torch.save({
        "model": OrderedDict(w=torch.zeros(2)),
        "args": argparse.Namespace(model="cf_deit_small", coarse_stage_size=7),
        "flop": torch.tensor([1.1, 4.0]),
        "anytime_classification": [torch.tensor(73.8), torch.tensor(80.8)],
        "budgeted_batch_classification": [[1.2, 2.5, 4.0], [75.0, 79.9, 80.8]],
    }, path)
    df = read_dvt_checkpoint(path)
    assert df.loc[df["setting"] == "anytime", "gmacs"].tolist() == pytest.approx([1.1, 4.0])
    assert df.loc[df["setting"] == "anytime", "top1"].tolist() == pytest.approx([73.8, 80.8])
    assert (df["setting"] == "budgeted").sum() == 3
    assert not df["note"].str.contains("dynamic_threshold").any()


class _NotAllowed:
    """A class the weights-only unpickler does not know."""


def test_checkpoint_errors(tmp_path: Path) -> None:
    import torch

    unsafe = _dvt_checkpoint(tmp_path / "unsafe.pth", extra_object=_NotAllowed())
    with pytest.raises(ImportFormatError, match=r"refused to load.*_NotAllowed.*weights_only=True"):
        import_curve(unsafe)
    no_cost = tmp_path / "no_cost.pth"
    torch.save({"anytime_classification": [70.0, 75.0]}, no_cost)
    with pytest.raises(ImportFormatError, match=r"'flops'.*'flop'.*keys anytime_classification"):
        read_dvt_checkpoint(no_cost)
    no_results = tmp_path / "no_results.pth"
    torch.save({"flops": DVT_FLOPS, "model_state_dict": {}}, no_results)
    with pytest.raises(ImportFormatError, match="no results.*anytime_classification"):
        read_dvt_checkpoint(no_results)
    short = _dvt_checkpoint(tmp_path / "short.pth", anytime_classification=[70.0, 75.0])
    with pytest.raises(ImportFormatError, match="2 exits but 'flops' has 3"):
        read_dvt_checkpoint(short)
    bad_bud = _dvt_checkpoint(tmp_path / "bad_bud.pth", budgeted_batch_classification=[[1.0]])
    with pytest.raises(ImportFormatError, match=r"two-item list \[costs, accuracies\]"):
        read_dvt_checkpoint(bad_bud)
    not_dict = tmp_path / "list.pth"
    torch.save([1.0, 2.0], not_dict)
    with pytest.raises(ImportFormatError, match="expected a checkpoint dictionary"):
        read_dvt_checkpoint(not_dict)
    junk = tmp_path / "junk.pth"
    junk.write_text("hello\n")
    with pytest.raises(ImportFormatError, match="not a readable torch.save file"):
        read_dvt_checkpoint(junk)


def test_format_detection(tmp_path: Path) -> None:
    _write_l2w(tmp_path / "run")
    assert detect_format(tmp_path / "run") == "l2w"
    assert detect_format(tmp_path / "run" / "AnytimeResults_on_all_test_final.csv") == "l2w"
    dyn = _write_dynamic_txt(tmp_path / "dynamic.txt", MSD_ACC, MSD_MACS)
    assert detect_format(dyn) == "dynamic_txt"
    _write_calibrated(tmp_path / "cal.txt")
    assert detect_format(tmp_path / "cal.txt") == "calibrated_dnn"
    ck = _dvt_checkpoint(tmp_path / "model.bin.unknown")  # no telling suffix: zip magic
    assert detect_format(ck) == "dvt_checkpoint"
    odd = tmp_path / "odd.txt"
    odd.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ImportFormatError, match=r"cannot tell the format.*--format"):
        import_curve(odd)
    with pytest.raises(ValueError, match="unknown import format 'msdnet'.*Known: calibrated_dnn"):
        import_curve(dyn, "msdnet", cost_unit="macs")
    with pytest.raises(ValueError, match="dataset 'imagenet1k' is not one of"):
        import_curve(dyn, "dynamic_txt", cost_unit="macs", dataset="imagenet1k")
    assert set(FORMATS) == {"dynamic_txt", "l2w", "calibrated_dnn", "dvt_checkpoint"}


def test_written_csv_loads_as_published_numbers(tmp_path: Path) -> None:
    dyn = _write_dynamic_txt(tmp_path / "dynamic.txt", MSD_ACC, MSD_MACS)
    df = import_curve(dyn, cost_unit="macs", source="msdnet-mine", model="MSDNet",
                      dataset="imagenet")
    out = write_imported(df, tmp_path / "local" / "msdnet-mine.csv")
    back = load_published([str(out)])
    assert back["gmacs"].tolist() == pytest.approx(df["gmacs"].tolist())
    assert back["top1"].tolist() == pytest.approx(MSD_ACC)
    with pytest.raises(ValueError, match="named by their source"):
        write_imported(df, tmp_path / "other.csv")
    with pytest.raises(ValueError, match="need a dataset"):
        write_imported(import_curve(dyn, cost_unit="macs", source="x"), tmp_path / "x.csv")


def test_imported_frames_draw_in_the_report_figures(tmp_path: Path) -> None:
    from eebench.report.figures import plot_anytime, plot_budgeted

    _write_l2w(tmp_path / "run")
    l2w = import_curve(tmp_path / "run", model="L2W-DEN")
    dvt = import_curve(_dvt_checkpoint(tmp_path / "dvt.pth"), model="DVT")
    pub = pd.concat([l2w, dvt], ignore_index=True)
    measured = pd.DataFrame({"model": ["ours", "ours"], "exit": [1, 2],
                             "cost": [0.5e9, 1.1e9], "top1": [0.70, 0.76]})
    fig = plot_anytime(measured, "MACs", published=pub)
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert any("L2W-DEN (published" in t for t in labels)
    assert any("DVT (published" in t for t in labels)
    empty = pd.DataFrame({"model": [], "policy": [], "test_acc": [], "test_cost": []})
    fig = plot_budgeted(empty, "MACs", published=dvt)
    xs = fig.axes[0].lines[0].get_xdata()
    assert np.asarray(xs, dtype=float).tolist() == pytest.approx([0.7, 1.0, 1.4, 1.9])


def test_module_does_not_import_torch() -> None:
    code = "import sys, eebench.report.imported; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
