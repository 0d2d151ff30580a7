"""Dynamic Perceiver: official keys and logits, strict loading, real early exit, published costs.

The fixtures come from the official code (LeapLabTHU/Dynamic_Perceiver,
commit 0d2a629) run outside this repository: dynperceiver_<config>_keys.json
hold the state_dict keys and shapes of the official ``DynPerceiver`` built with
the README's arguments, dynperceiver_official_logits.json the official model's
logits for the weights ``seeded_state`` makes from a key list and a seeded
input. The published per-exit costs are the numbers of the official code at
224x224: its analytic counter (``forward_calc_flops``, written to flops.txt) for
RegNetY and MobileNetV3, fvcore on the model built with ``exit=i`` for ResNet;
the ``dynperceiver`` cost convention reproduces both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import (  # noqa: F401  (one_torch_thread: module fixture)
    assert_bad_keep_masks_refused,
    assert_compaction,
    meta_model,
    one_torch_thread,
    seeded_state,
)

import eebench.zoo.dynperceiver  # noqa: F401  (registers the models)
from eebench.costs import count_costs
from eebench.zoo import CheckpointMismatchError, create_model
from eebench.zoo.base import run_exits
from eebench.zoo.dynperceiver import DynPerceiver

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {
    "dynperceiver_regnety_800m": "regnety_800m",
    "dynperceiver_mobilenetv3_075": "mobilenetv3_075",
    "dynperceiver_resnet50_0375": "resnet50_0375",
}
OFFICIAL_NAMES = {
    "dynperceiver_regnety_800m": "reg800m_perceiver_t128",
    "dynperceiver_mobilenetv3_075": "mobilenetV3_0x75_perceiver_t128",
    "dynperceiver_resnet50_0375": "resnet50_0375_perceiver_t128",
}
# GMACs per exit at 224x224. RegNetY and MobileNetV3: the official analytic counter
# (DynPerceiver.forward_calc_flops -> flops.txt). ResNet: the official code has no analytic
# counter; its dyn_flops() runs fvcore on the model built with exit=i (a trace that returns
# only exit i's logits, so work that feeds no returned output is dropped).
OFFICIAL_GMACS = {
    "dynperceiver_regnety_800m": [0.459052672, 1.0648832, 1.227629456, 1.29801488],
    "dynperceiver_mobilenetv3_075": [0.097687392, 0.181993488, 0.206852448, 0.266409648],
    "dynperceiver_resnet50_0375": [0.631826276, 1.022663404, 1.022276368, 1.20646536],
}
# The official forward_calc_flops called on one 160x160 input (its counts follow the shapes).
OFFICIAL_GMACS_160 = {
    "dynperceiver_regnety_800m": [0.28457536, 0.661664768, 0.744612368, 0.781712288],
    "dynperceiver_mobilenetv3_075": [0.062796384, 0.11997096, 0.13354608, 0.16502328],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seeded_state_dp(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """The shared seeded weights, latents and relative position biases drawn from N(0, 1)."""
    return seeded_state(keys, seed, lambda k: k == "latent" or k.endswith("relative_position_bias"))


def _fixture(short: str) -> dict:
    return json.loads((FIXTURES / f"dynperceiver_{short}_keys.json").read_text())


def _official(short: str) -> dict[str, list[int]]:
    return _fixture(short)["keys"]


# -- (a) keys and shapes ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "short"), CASES.items())
def test_state_dict_equals_official_keys_shapes_and_order(name: str, short: str) -> None:
    ours = {k: list(v.shape) for k, v in meta_model(name).state_dict().items()}
    official = _official(short)
    assert set(ours) ^ set(official) == set()
    assert list(ours) == list(official)  # same order too
    assert ours == official


@pytest.mark.parametrize(("name", "short"), CASES.items())
def test_fixtures_record_their_source_and_the_readme_arguments(name: str, short: str) -> None:
    data = _fixture(short)
    assert "LeapLabTHU/Dynamic_Perceiver" in data["source"] and "commit" in data["source"]
    assert OFFICIAL_NAMES[name] in data["source"]
    args = data["args"]
    assert args["SA_widening_factor"] == 4 and args["spatial_reduction"] is True
    assert all(args[f] for f in ("with_x2z", "with_z2x", "with_dwc", "with_last_CA", "with_isc"))
    arch = meta_model(name).config.arch
    assert arch["depth_factor"] == args["depth_factor"]
    assert arch["num_latents"] == 128 and arch["sa_widening_factor"] == 4
    assert _official(short)["latent"][0] == 128


def test_num_classes_override_changes_only_the_class_layers() -> None:
    ours = {
        k: list(v.shape)
        for k, v in meta_model("dynperceiver_mobilenetv3_075", num_classes=10).state_dict().items()
    }
    official = _official("mobilenetv3_075")
    diff = {k for k in ours if ours[k] != official[k]}
    assert diff == {
        "early_classifier3.weight",
        "early_classifier3.bias",
        "classifier_att.weight",
        "classifier_att.bias",
        "isc3.0.weight",
        "isc4.0.weight",
        "classifier_cnn.3.weight",
        "classifier_cnn.3.bias",
        "classifier_merge.4.weight",
        "classifier_merge.4.bias",
    }
    assert ours["classifier_merge.4.weight"][0] == 10 and ours["isc3.0.weight"][1] == 10


# -- (b) strict loading -------------------------------------------------------------------


def _fake_official_checkpoint(path: Path, short: str, prefix: str = "") -> dict:
    sd = seeded_state_dp(_official(short), seed=3)
    sd = {k: (torch.tensor(11) if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    # The official utils.save_model writes model, optimizer, epoch, scaler, args and model_ema.
    payload = {
        "model": {f"{prefix}{k}": v for k, v in sd.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 299,
        "model_ema": ema,
    }
    torch.save(payload, path)
    return sd


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("dynperceiver_mobilenetv3_075", ""), ("dynperceiver_resnet50_0375", "module.")],
)
def test_strict_load_of_an_official_layout_checkpoint(tmp_path: Path, name: str, prefix: str):
    path = tmp_path / "checkpoint-best.pth"
    sd = _fake_official_checkpoint(path, CASES[name], prefix)
    model = create_model(name, checkpoint=str(path))
    got = model.state_dict()
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)  # 'model', not 'model_ema'
    assert model.isc3[1].num_batches_tracked.item() == 11


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    sd = seeded_state_dp(_official("mobilenetv3_075"), seed=1)
    renamed = "cross_att3_x2z.cross_attn.attention.relative_position_bias"
    sd["cross_att3_x2z.cross_attn.attention.rpb"] = sd.pop(renamed)
    sd["token_mixer.1.1.weight"] = torch.zeros(16, 63)
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("dynperceiver_mobilenetv3_075", checkpoint=str(path))
    text = str(err.value)
    assert renamed in text and "cross_att3_x2z.cross_attn.attention.rpb" in text
    assert "token_mixer.1.1.weight" in text and "(16, 63)" in text


# -- logits equal the official model's ----------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_logits_equal_the_official_model(name: str) -> None:
    data = json.loads((FIXTURES / "dynperceiver_official_logits.json").read_text())
    case = data["models"][name]
    model = create_model(name).eval()
    model.load_state_dict(seeded_state_dp(_official(CASES[name]), seed=data["weight_seed"]))
    g = torch.Generator().manual_seed(data["input_seed"])
    x = torch.randn(data["input_shape"], generator=g)
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(case["exits"]) == 4
    for got, want in zip(out, case["exits"]):
        assert got.shape == tuple(want["shape"])
        head, want_head = got[:, : len(want["head"][0])], torch.tensor(want["head"])
        # Seeded random weights give the CNN exits logits in the hundreds or thousands; float32
        # summation order (thread count) moves them by ~1e-6 of that scale.
        scale = want_head.abs().max().item()
        torch.testing.assert_close(head, want_head, rtol=1e-4, atol=1e-4 + 2e-5 * scale)
        sums = torch.tensor(want["row_sum"])
        torch.testing.assert_close(got.sum(1), sums, rtol=1e-4, atol=1e-3 + 1e-4 * scale)


# -- (c) iter_exits / forward_until --------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_forward_until_is_a_prefix_of_forward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=20).eval()
    assert model.exits == ["early3", "attention", "cnn", "merged"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        assert [tuple(t.shape) for t in full] == [(2, 20)] * 4
        assert not torch.equal(full[0], full[-1])
        for k in range(4):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


# -- (d) the work really stops ------------------------------------------------------------

# Which exit first needs each top-level part (CNN stages are mapped per backbone below).
_GROUPS = {
    0: [
        "dwc1_x2z",
        "dwc2_x2z",
        "dwc3_x2z",
        "cross_att1_x2z",
        "cross_att2_x2z",
        "cross_att3_x2z",
        "cross_att2_z2x",
        "cross_att3_z2x",
        "self_att1",
        "self_att2",
        "self_att3",
        "token_mixer.0",
        "token_mixer.1",
        "token_expander.0",
        "token_expander.1",
        "early_classifier3",
    ],
    1: [
        "token_mixer.2",
        "token_expander.2",
        "cross_att4_z2x",
        "dwc4_x2z",
        "cross_att4_x2z",
        "self_att4",
        "isc3",
        "classifier_att",
    ],
    2: ["classifier_cnn"],
    3: ["last_cross_att_z2x", "isc4", "classifier_merge"],
}


def _groups(model: DynPerceiver) -> dict[int, list[str]]:
    groups = {k: list(v) for k, v in _GROUPS.items()}
    if hasattr(model, "cnn_body"):  # RegNet: stem + one Sequential of four stages
        stages = [f"cnn_body.block{i}" for i in range(1, 5)]
    else:
        stages = [f"cnn_body_stage{i}" for i in range(1, 5)]
    groups[0] += ["cnn_stem", stages[0], stages[1]]
    groups[1].append(stages[2])  # CNN stage 3 runs after exit 0 (it feeds only exits 1+)
    groups[2].append(stages[3])
    return groups


@pytest.mark.parametrize("name", list(CASES))
def test_stopping_at_exit_k_runs_no_module_of_later_exits(name: str) -> None:
    model = create_model(name).eval()
    groups = _groups(model)
    exit_of: dict[int, int] = {}  # id(module with own parameters) -> exit that first needs it
    for k, prefixes in groups.items():
        for prefix in prefixes:
            for m in model.get_submodule(prefix).modules():
                if any(True for _ in m.parameters(recurse=False)):
                    exit_of[id(m)] = k
    owned = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    assert {id(m) for m in owned} - {id(model)} == set(exit_of)  # every part is mapped
    ran: set[int] = set()
    for m in owned:
        m.register_forward_hook(lambda mod, i, o: ran.add(id(mod)))
    x = torch.randn(1, 3, 64, 64)
    for k in range(4):
        ran.clear()
        with torch.no_grad():
            model.forward_until(x, k)
        assert ran == {i for i, e in exit_of.items() if e <= k}, k


# Real exits with a batch of 7 (a size no other tensor has as its first dimension): which
# exit each sample leaves at. Several leave at once; everyone leaves before the last exit
# (the generator is closed after ``cnn``); one sample goes on alone from ``early3`` to the
# end (exits 1 and 2 keep every row).
EXIT_PATTERNS = [
    [0, 2, 0, 3, 1, 0, 3],
    [2, 1, 2, 0, 1, 2, 2],
    [0, 0, 3, 0, 0, 0, 0],
]
# Small inputs, one not a multiple of 32 (odd feature maps, ca_pooling upsampling).
SMALL_SIZE = {
    "dynperceiver_regnety_800m": 64,
    "dynperceiver_mobilenetv3_075": 48,
    "dynperceiver_resnet50_0375": 64,
}


def _seeded(name: str) -> DynPerceiver:
    model = create_model(name).eval()
    model.load_state_dict(seeded_state_dp(_official(CASES[name]), seed=5))
    return model


def _batch(name: str, n: int = 7) -> torch.Tensor:
    size = SMALL_SIZE[name]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("name", list(CASES))
def test_real_exits_slice_every_carried_state_to_the_samples_that_continue(name: str) -> None:
    model, x = _seeded(name), _batch(name)
    with torch.no_grad():
        full = model(x)
    for logits in full:  # every sample's logits differ, so a row mixed up would show
        gaps = (logits[:, None] - logits[None]).abs().amax(-1)
        assert gaps[~torch.eye(7, dtype=torch.bool)].min() > 1e-3 * logits.abs().max()
    for exit_at in EXIT_PATTERNS:
        assert_compaction(model, x, exit_at)


@pytest.mark.parametrize("name", list(CASES))
def test_each_part_runs_only_for_the_samples_that_reach_its_exit(name: str) -> None:
    # CNN stage 3 only for samples past early3, CNN stage 4 only for those past attention (a
    # sample leaving at attention does not pay for the cnn exit's backbone), the merged head
    # only for those past cnn.
    model, x = _seeded(name), _batch(name)
    exit_at = torch.tensor(EXIT_PATTERNS[0])
    exit_of = {id(m): k for k, prefixes in _groups(model).items() for prefix in prefixes
               for m in model.get_submodule(prefix).modules()}
    seen: dict[int, set[int]] = {k: set() for k in range(4)}

    def hook(mod: nn.Module, args: tuple) -> None:
        seen[exit_of[id(mod)]].add(args[0].shape[0])

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if id(m) in exit_of and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.no_grad():
            exits, _ = run_exits(model, x, lambda k, logits, alive: exit_at[alive] == k)
    finally:
        for h in handles:
            h.remove()
    assert exits.tolist() == exit_at.tolist()
    assert seen == {k: {int((exit_at >= k).sum())} for k in range(4)}  # {7}, {4}, {3}, {2}


def test_a_bad_keep_mask_gets_a_clear_error() -> None:
    name = "dynperceiver_mobilenetv3_075"
    assert_bad_keep_masks_refused(_seeded(name), _batch(name))


@pytest.mark.parametrize("name", list(CASES))
def test_a_mask_that_keeps_nobody_leaves_empty_later_exits(name: str) -> None:
    # run_exits closes the generator instead; a caller that sends all-False gets empty logits.
    model = create_model(name).eval()
    with torch.no_grad():
        gen = model.iter_exits(torch.randn(2, 3, 32, 32))
        next(gen)
        rest = [gen.send(torch.zeros(2, dtype=torch.bool))] + list(gen)
    assert [(k, tuple(t.shape)) for k, t in rest] == [(k, (0, 1000)) for k in (1, 2, 3)]


def _pool_inputs(model: DynPerceiver, x: torch.Tensor) -> tuple[list[int], list[int]]:
    sizes: dict[str, list[int]] = {"ca": [], "avg": []}
    hooks = [
        model.ca_pooling.register_forward_hook(lambda m, i, o: sizes["ca"].append(i[0].numel())),
        model.avgpool.register_forward_hook(lambda m, i, o: sizes["avg"].append(i[0].numel())),
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sizes["ca"], sizes["avg"]


def test_cumulative_cost_of_exit_k_is_the_work_of_exits_up_to_k() -> None:
    from eebench.costs.fvcore_counter import flop_count_analysis

    model = create_model("dynperceiver_regnety_800m").eval()
    x = torch.zeros(1, 3, 64, 64)
    costs = count_costs(model, input_size=64, convention="fvcore", cross_check=False)
    # Independent of the truncated runs: fvcore's per-module totals of one full forward,
    # grouped by the exit that first needs each module. Adaptive pooling counts one MAC per
    # input element: ca_pooling runs for stages 1-3 (exit 0) and 4 (exit 1); avgpool runs
    # for the CNN exit and again for the merged exit.
    with torch.no_grad():
        by_module = flop_count_analysis(model, x).by_module()
    ca, avg = _pool_inputs(model, x)
    assert len(ca) == 4 and len(avg) == 2
    per_exit = [sum(by_module[p] for p in _groups(model)[k]) for k in range(4)]
    per_exit[0] += sum(ca[:3])
    per_exit[1] += ca[3]
    per_exit[2] += avg[0]
    per_exit[3] += avg[1]
    assert by_module[""] == sum(per_exit)  # nothing left unassigned
    cumulative = [sum(per_exit[: k + 1]) for k in range(4)]
    assert costs.macs == [float(c) for c in cumulative]
    assert all(a < b for a, b in zip(costs.macs, costs.macs[1:]))


# -- (e) published costs at 224x224 ---------------------------------------------------------


@pytest.fixture(scope="module")
def costs_224() -> dict:
    """Each model's costs in its default convention, and RegNetY's in fvcore's."""
    out = {name: count_costs(create_model(name), cross_check=False) for name in CASES}
    regnet = create_model("dynperceiver_regnety_800m")
    out["fvcore"] = count_costs(regnet, convention="fvcore", cross_check=False)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_default_convention_reproduces_the_official_costs(costs_224: dict, name: str) -> None:
    costs = costs_224[name]
    assert costs.convention == "dynperceiver"
    assert costs.exit_names == ["early3", "attention", "cnn", "merged"]
    gmacs = [m / 1e9 for m in costs.macs]
    if name == "dynperceiver_resnet50_0375":
        # fvcore counts the official einsums through numpy's einsum_path, whose printed flop
        # count keeps four digits: the official runs differ from exact counts by < 1e-6.
        assert gmacs == pytest.approx(OFFICIAL_GMACS[name], rel=1e-6)
        # The official exit=2 trace drops the latent stage 4 and the earlier heads.
        assert gmacs[2] < gmacs[1]
        assert "only this exit's logits" in costs.notes[0]
    else:
        assert gmacs == pytest.approx(OFFICIAL_GMACS[name], rel=1e-12)  # the same integers
        assert costs.notes[0].endswith("classifier_att, early_classifier3, isc3, isc4")
    total = sum(p.numel() for p in create_model(name).parameters())
    assert costs.params[-1] == total


@pytest.mark.parametrize("name", list(OFFICIAL_GMACS_160))
def test_the_analytic_rules_follow_the_input_size(name: str) -> None:
    costs = count_costs(create_model(name), input_size=160, cross_check=False)
    assert [m / 1e9 for m in costs.macs] == pytest.approx(OFFICIAL_GMACS_160[name], rel=1e-12)


def test_fvcore_counts_more_than_the_official_counter(costs_224: dict) -> None:
    costs = costs_224["fvcore"]
    gmacs = [m / 1e9 for m in costs.macs]
    official = OFFICIAL_GMACS["dynperceiver_regnety_800m"]
    gaps = [(g - o) / o for g, o in zip(gmacs, official)]
    # Measured: 0.4698 / 1.0806 / 1.2456 / 1.3167 GMACs, +2.35% / +1.47% / +1.46% / +1.44%:
    # fvcore also counts batch and layer norms, the RegNet squeeze-excitation layers and
    # the earlier heads, which the analytic counter leaves out.
    assert all(0 < gap < 0.03 for gap in gaps), gaps
    assert gmacs == pytest.approx([0.46983, 1.08058, 1.24557, 1.31668], abs=1e-5)
    assert [p / 1e6 for p in costs.params] == pytest.approx(
        [3.089, 14.796, 18.598, 21.798], abs=1e-3
    )
    assert costs.params == costs_224["dynperceiver_regnety_800m"].params  # same modules ran


def test_resnet_fvcore_convention_keeps_the_work_a_cnn_exit_has_paid_for() -> None:
    from eebench.costs.fvcore_counter import count_fvcore
    from eebench.zoo.base import TruncatedModel

    model = create_model("dynperceiver_resnet50_0375").eval()
    with torch.no_grad():
        cnn_exit = count_fvcore(TruncatedModel(model, 2), torch.zeros(1, 3, 224, 224)).macs / 1e9
    # A sample leaving at the CNN exit has run the latent stage 4 and the earlier heads, which
    # the fvcore convention keeps and the official exit=2 trace (dynperceiver) drops.
    official = OFFICIAL_GMACS["dynperceiver_resnet50_0375"]
    assert cnn_exit == pytest.approx(1.13774, abs=1e-5) and cnn_exit > official[1] > official[2]


# -- (f) bad arguments ----------------------------------------------------------------------


def test_bad_arguments_and_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        create_model("dynperceiver_regnety_800m", backbone="vgg16")
    with pytest.raises(ValueError, match="depth_factor needs four"):
        create_model("dynperceiver_regnety_800m", depth_factor=(1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 8"):
        create_model("dynperceiver_regnety_800m", num_latents=100)
    with torch.device("meta"), pytest.raises(ValueError, match="not divisible by 7 heads"):
        create_model("dynperceiver_regnety_800m", num_sa_heads=(1, 2, 4, 7))
    model = create_model("dynperceiver_mobilenetv3_075").eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with torch.no_grad(), pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 16, 16))


def test_config_follows_the_official_evaluation_pipeline() -> None:
    cfg = meta_model("dynperceiver_resnet50_0375").config
    assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.875
    assert cfg.interpolation == "bicubic"
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.cost_convention == "dynperceiver" and "model_ema" in cfg.checkpoint_note
    assert cfg.arch["backbone"] == "resnet50_0375" and cfg.arch["depth_factor"] == [1, 1, 1, 1]
