"""`eebench verify`: published costs (pass, and fail naming the row when a published value
is perturbed by 5%), strict checkpoint checks, and the accuracy check's plumbing (what is
missing is named; a reproduced number passes, a perturbed one fails)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from fake_cifar import write_cifar10

from eebench.cli import main
from eebench.report.published import COLUMNS, load_published
from eebench.verify import MissingInputsError, verify_accuracy, verify_costs

# The official MSDNet op_counter's step-4 numbers (MMACs), as in results/published/msdnet.csv.
STEP4 = [339.90, 685.46, 1008.16, 1254.47, 1360.53]


def _row(**kw: object) -> dict[str, object]:
    base = dict.fromkeys(COLUMNS, "")
    base.update(source="msdnet", citation="kalviny/MSDNet-PyTorch op_counter.py", model="MSDNet",
                dataset="imagenet", from_figure="false")
    base.update(kw)
    return base


def _published(folder: Path, rows: list[dict[str, object]], name: str = "msdnet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(folder / f"{name}.csv", index=False)
    return folder


def _step4_rows(scale_exit: int | None = None) -> list[dict[str, object]]:
    rows = []
    for k, m in enumerate(STEP4, start=1):
        g = m / 1000 * (1.05 if k == scale_exit else 1.0)
        rows.append(_row(zoo_model="msdnet_imagenet_step4", setting="cost", exit=k, gmacs=g,
                         convention="msdnet"))
    return rows


def test_verify_costs_passes_on_the_published_msdnet_costs(tmp_path: Path, capsys) -> None:
    folder = _published(tmp_path / "pub", _step4_rows())
    assert main(["verify", "costs", "--published-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "all 5 published costs reproduced" in out


def test_verify_costs_fails_naming_the_row_perturbed_by_5_percent(tmp_path: Path, capsys) -> None:
    folder = _published(tmp_path / "pub", _step4_rows(scale_exit=3))
    assert main(["verify", "costs", "--published-dir", str(folder), "--csv", str(tmp_path / "v.csv")]) == 1
    err = capsys.readouterr().err
    assert "1 of 5 published costs FAILED" in err
    assert "msdnet_imagenet_step4" in err and "exit 3 GMACs" in err
    result = pd.read_csv(tmp_path / "v.csv")
    assert result["status"].tolist() == ["pass", "pass", "FAIL", "pass", "pass"]
    assert result.loc[2, "rel_diff"] == pytest.approx(-0.05 / 1.05, abs=1e-4)


def test_verify_costs_compares_parameters_and_reports_missing_models(tmp_path: Path) -> None:
    rows = [
        _row(zoo_model="msdnet_imagenet_step4", setting="cost", exit=5, gmacs=1.36053,
             params_m=999.0, convention="msdnet"),
        _row(zoo_model="no_such_model", setting="static", gmacs=1.0),
    ]
    result = verify_costs(load_published(root=_published(tmp_path / "pub", rows)), progress=False)
    by = {(r.zoo_model, r.quantity): r.status for r in result.itertuples()}
    assert by[("msdnet_imagenet_step4", "GMACs")] == "pass"
    assert by[("msdnet_imagenet_step4", "params (M)")] == "FAIL"
    assert by[("no_such_model", "GMACs")] == "missing model"


def test_verify_checkpoint_strict_pass_and_named_failure(tmp_path: Path, capsys) -> None:
    from eebench.zoo import create_model

    model = create_model("msdnet_cifar10_budget")
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, good)
    assert main(["verify", "checkpoint", "msdnet_cifar10_budget", str(good)]) == 0
    out = capsys.readouterr().out
    assert "loaded strictly" in out and "weights_sha256" in out
    sd = model.state_dict()
    first = next(iter(sd))
    sd["renamed.weight"] = sd.pop(first)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    assert main(["verify", "checkpoint", "msdnet_cifar10_budget", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and first in err and "renamed.weight" in err


# ---------------------------------------------------------------- accuracy

SUITE = """
[data]
dataset = "cifar10"
params = {{ root = "{root}" }}
batch_size = 8

[[models]]
name = "msdnet_cifar10_budget"
checkpoint = "{ckpt}"
"""


def test_verify_accuracy_names_everything_missing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("EEBENCH_TEST_ROOT", raising=False)
    suite = tmp_path / "acc.toml"
    suite.write_text(SUITE.format(root="${EEBENCH_TEST_ROOT}", ckpt=str(tmp_path / "absent.pth")))
    with pytest.raises(MissingInputsError) as err:
        verify_accuracy(suite)
    msg = str(err.value)
    assert "EEBENCH_TEST_ROOT" in msg and "--data-root" in msg
    assert "absent.pth does not exist" in msg
    assert main(["verify", "accuracy", str(suite)]) == 3
    assert "missing" in capsys.readouterr().err


def test_verify_accuracy_reproduces_and_fails_on_perturbed_numbers(tmp_path: Path, monkeypatch, capsys) -> None:
    from eebench.zoo import create_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = write_cifar10(tmp_path / "data", test_ids=list(range(100, 112)),
                         test_labels=[i % 10 for i in range(12)])
    ckpt = tmp_path / "msd.pth"
    torch.save(create_model("msdnet_cifar10_budget").state_dict(), ckpt)
    suite = tmp_path / "acc.toml"
    suite.write_text(SUITE.format(root=root, ckpt=ckpt))
    probe = [_row(source="demo", zoo_model="msdnet_cifar10_budget", dataset="cifar10", setting="anytime",
                  exit=k, gmacs=0.01 * k, top1=50.0) for k in (1, 5)]
    first = verify_accuracy(suite, published=load_published(root=_published(tmp_path / "probe", probe, "demo")),
                            store_root=tmp_path / "store", progress=False)
    ours = first["ours"].tolist()
    assert len(ours) == 2 and all(0 <= v <= 100 for v in ours)
    rows = [dict(r, top1=round(v, 4)) for r, v in zip(probe, ours)]
    rows[1]["top1"] = min(100.0, ours[1] + 5) if ours[1] < 95 else ours[1] - 5
    monkeypatch.setenv("EEBENCH_PUBLISHED", str(_published(tmp_path / "pub", rows, name="demo")))
    code = main(["verify", "accuracy", str(suite), "--store", str(tmp_path / "store")])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert "1 of 2 published accuracies not reproduced" in captured.err
    assert "pass" in captured.out and "FAIL" in captured.out


@pytest.mark.accuracy
@pytest.mark.skipif(
    not (os.environ.get("EEBENCH_IMAGENET") and os.environ.get("EEBENCH_CHECKPOINTS")),
    reason="set EEBENCH_IMAGENET (ImageNet val folder) and EEBENCH_CHECKPOINTS (folder of the "
    "official checkpoints) to reproduce the published ImageNet accuracies",
)
def test_published_imagenet_accuracies_are_reproduced() -> None:
    suite = Path(__file__).resolve().parents[1] / "suites" / "verify_imagenet.toml"
    result = verify_accuracy(suite)
    failed = result[result["status"] != "pass"]
    assert failed.empty, failed.to_string()


def test_every_shipped_published_cost_is_reproduced(capsys) -> None:
    # Counts every zoo model that results/published gives a cost for (about 25 s on 2 cores).
    assert main(["verify", "costs"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "published costs reproduced within tolerance" in out
    for model in ("msdnet_imagenet_step7", "ranet_imagenet", "dvt_t2t_vit_12", "cfvit_deit_small",
                  "dynperceiver_regnety_800m", "chase_imagenet", "mcga"):
        assert model in out
