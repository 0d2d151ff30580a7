"""MCGA: the specified architecture, strict checkpoints, real early exit, published costs.

MCGA has no official code or checkpoint, so there is no key fixture: instead the
tests pin the specification (widths, depths, heads, 8 group tokens, 3x3 and 5x5
depth-wise kernels), show that the group attention really propagates global
context, round-trip checkpoints strictly, and check the costs against the
published 10.3 M parameters and 0.7 GMACs (within 10%). Numeric tests run on
reduced widths and 32x32 images to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import one_torch_thread  # noqa: F401  (module fixture)

import eebench.zoo.mcga  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import count_fvcore
from eebench.zoo import CheckpointMismatchError, create_model, list_models
from eebench.zoo.mcga import MCGA, MCGABlock

PUBLISHED_PARAMS = 10.3e6
PUBLISHED_MACS = 0.7e9
TOLERANCE = 0.10
SMALL = dict(channels=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def costs_mcga() -> ExitCosts:
    return count_costs(create_model("mcga"), cross_check=False)


@pytest.fixture(scope="module")
def costs_exits() -> ExitCosts:
    return count_costs(create_model("mcga_exits"), cross_check=False)


def _meta(name: str, **kw) -> MCGA:
    with torch.device("meta"):
        return create_model(name, **kw)


def _small(name: str, seed: int = 0, **kw) -> MCGA:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, **{**SMALL, **kw})
    _randomise_norms(model, seed)
    return model.eval()


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, so that a lost tensor shows."""
    g = torch.Generator().manual_seed(seed + 100)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def _image(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


# --- registry and specification ---------------------------------------------------------


def test_registered_names_and_exits() -> None:
    assert list_models("mcga*") == ["mcga", "mcga_exits"]
    single, multi = _meta("mcga"), _meta("mcga_exits")
    assert single.exits == ["stage4"]
    assert multi.exits == ["stage2", "stage3", "stage4"]
    for model, name in ((single, "mcga"), (multi, "mcga_exits")):
        cfg = model.config
        assert cfg.name == name and cfg.num_classes == 1000
        assert cfg.input_size == (3, 224, 224) and cfg.cost_convention == "fvcore"
        assert "No official code or checkpoint" in cfg.checkpoint_note
    assert multi.config.arch["exit_stages"] == [2, 3, 4]
    assert single.config.arch["exit_stages"] == [4]


def test_architecture_follows_the_specification() -> None:
    model = _meta("mcga")
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    widths, depths, heads = (32, 64, 128, 256), (2, 2, 6, 6), (2, 2, 4, 8)
    for i, stage in enumerate(model.stages):
        assert len(stage.blocks) == depths[i]
        assert (stage.downsample is None) == (i == 0)
        c = widths[i]
        for j, block in enumerate(stage.blocks):
            assert isinstance(block, MCGABlock)
            p = f"stages.{i}.blocks.{j}"
            assert sd[f"{p}.group_tokens"] == (1, 8, c)  # 8 group tokens
            assert block.gather.num_heads == heads[i] and block.scatter.num_heads == heads[i]
            kernels = sorted(conv.kernel_size[0] for conv in block.local.dw)
            assert kernels == [3, 5]
            assert all(conv.groups == conv.in_channels for conv in block.local.dw)  # depth-wise
            assert sd[f"{p}.mlp.fc1.weight"] == (4 * c, c)  # MLP ratio 4
            assert sd[f"{p}.group_mix.fc1.weight"] == (32, 8)  # mixes across the 8 groups
            assert sd[f"{p}.gather.kv.weight"] == (2 * c, c)
            assert sd[f"{p}.scatter.q.weight"] == (c, c)
    assert sd["heads.stage4.fc.weight"] == (1000, 256)
    assert [k for k in sd if k.startswith("heads.")] == [
        "heads.stage4.norm.weight",
        "heads.stage4.norm.bias",
        "heads.stage4.fc.weight",
        "heads.stage4.fc.bias",
    ]


def test_group_attention_propagates_global_context() -> None:
    # The depth-wise convolutions see 5x5 at most; a change in one corner reaches the far
    # corner only through gather -> group tokens -> propagation back.
    torch.manual_seed(0)
    block = MCGABlock(16, 2, 8, 4.0, 4.0, 1.5, (3, 5)).eval()
    x = torch.randn(1, 16, 12, 12)
    y = x.clone()
    y[0, :, 0, 0] += 3.0
    with torch.no_grad():
        out_x, out_y = block(x), block(y)
    assert not torch.allclose(out_x[0, :, 11, 11], out_y[0, :, 11, 11])
    # Without the cross attentions the far corner would not move: zero both output
    # projections and the change stays local.
    with torch.no_grad():
        for attn in (block.gather, block.scatter):
            attn.proj.weight.zero_()
            attn.proj.bias.zero_()
        out_x, out_y = block(x), block(y)
    assert torch.equal(out_x[0, :, 11, 11], out_y[0, :, 11, 11])
    assert not torch.allclose(out_x[0, :, 1, 1], out_y[0, :, 1, 1])


def test_num_classes_override_changes_only_the_classifiers() -> None:
    base = {k: tuple(v.shape) for k, v in _meta("mcga_exits").state_dict().items()}
    ten = {k: tuple(v.shape) for k, v in _meta("mcga_exits", num_classes=10).state_dict().items()}
    assert base.keys() == ten.keys()
    diff = {k for k in base if base[k] != ten[k]}
    assert diff == {f"heads.stage{s}.fc.{p}" for s in (2, 3, 4) for p in ("weight", "bias")}
    assert ten["heads.stage3.fc.weight"] == (10, 128)


# --- checkpoints ---------------------------------------------------------------------------


def test_mcga_state_dict_is_a_subset_of_mcga_exits() -> None:
    single = {k: tuple(v.shape) for k, v in _meta("mcga").state_dict().items()}
    multi = {k: tuple(v.shape) for k, v in _meta("mcga_exits").state_dict().items()}
    assert set(single) < set(multi)
    assert all(multi[k] == shape for k, shape in single.items())
    extra = set(multi) - set(single)
    assert extra == {
        f"heads.stage{s}.{m}.{p}"
        for s in (2, 3)
        for m in ("norm", "fc")
        for p in ("weight", "bias")
    }


def test_mcga_weights_load_into_the_backbone_and_last_head_of_mcga_exits() -> None:
    single = _small("mcga", seed=1)
    multi = _small("mcga_exits", seed=2)
    result = multi.load_state_dict(single.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == {
        f"heads.stage{s}.{m}.{p}"
        for s in (2, 3)
        for m in ("norm", "fc")
        for p in ("weight", "bias")
    }
    x = _image()
    with torch.no_grad():
        (ref,) = single(x)
        outs = multi(x)
    assert len(outs) == 3
    assert torch.equal(outs[-1], ref)


@pytest.mark.parametrize("name", ["mcga", "mcga_exits"])
@pytest.mark.parametrize("layout", ["model", "module_prefix"])
def test_strict_round_trip_of_a_checkpoint(tmp_path: Path, name: str, layout: str) -> None:
    source = _small(name, seed=3)
    sd = source.state_dict()
    if layout == "model":
        payload: dict = {"model": sd, "epoch": 300}
    else:
        payload = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    loaded = create_model(name, checkpoint=str(path), num_classes=10, **SMALL).eval()
    got = loaded.state_dict()
    assert got.keys() == sd.keys()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    x = _image()
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x)):
            assert torch.equal(a, b)


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    sd = _small("mcga_exits", seed=4).state_dict()
    renamed = "stages.2.blocks.1.gather.kv.weight"
    reshaped = "heads.stage3.fc.weight"
    sd["stages.2.blocks.1.gather.kv_renamed.weight"] = sd.pop(renamed)
    sd[reshaped] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("mcga_exits", checkpoint=str(path), num_classes=10, **SMALL)
    text = str(err.value)
    assert renamed in text and "kv_renamed" in text and reshaped in text


def test_single_exit_checkpoint_does_not_strict_load_into_mcga_exits(tmp_path: Path) -> None:
    path = tmp_path / "mcga.pth"
    torch.save({"model": _small("mcga").state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"heads\.stage2"):
        create_model("mcga_exits", checkpoint=str(path), num_classes=10, **SMALL)


# --- early exit ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mcga", "mcga_exits"])
def test_forward_until_equals_forward(name: str) -> None:
    model = _small(name, seed=5)
    x = _image()
    with torch.no_grad():
        full = model(x)
        assert len(full) == model.num_exits
        assert all(t.shape == (2, 10) for t in full)
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_stopping_at_an_exit_runs_no_later_stage() -> None:
    model = _small("mcga_exits", seed=6)
    fired: list[str] = []
    watched = {
        "stage3": model.stages[2],
        "stage4": model.stages[3],
        "head3": model.heads["stage3"],
        "head4": model.heads["stage4"],
    }
    for label, module in watched.items():
        module.register_forward_hook(lambda m, i, o, label=label: fired.append(label))
    with torch.no_grad():
        model.forward_until(_image(), 0)
        assert fired == []
        model.forward_until(_image(), 1)
        assert fired == ["stage3", "head3"]
        fired.clear()
        model(_image())
        assert fired == ["stage3", "head3", "stage4", "head4"]


def _piece_macs(module: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        return count_fvcore(module, x).macs, module(x)


def test_cumulative_costs_are_the_sum_of_the_pieces_that_ran() -> None:
    # Count every piece on its own input; exit k must cost exactly the pieces before it.
    model = _small("mcga_exits", seed=8)
    costs = count_costs(model, input_size=64, cross_check=False)
    x = torch.zeros(1, 3, 64, 64)
    stem, x = _piece_macs(model.stem, x)
    stage, head = [], {}
    for i, s in enumerate(model.stages):
        macs, x = _piece_macs(s, x)
        stage.append(macs)
        if f"stage{i + 1}" in model.heads:
            head[i + 1] = _piece_macs(model.heads[f"stage{i + 1}"], x)[0]
    expected = [
        stem + stage[0] + stage[1] + head[2],
        stem + sum(stage[:3]) + head[2] + head[3],
        stem + sum(stage) + head[2] + head[3] + head[4],
    ]
    assert costs.macs == pytest.approx(expected, rel=0, abs=0.5)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base = n(model.stem) + n(model.stages[0]) + n(model.stages[1]) + n(model.heads["stage2"])
    assert costs.params[0] == base
    assert costs.params[1] == base + n(model.stages[2]) + n(model.heads["stage3"])
    assert costs.params[2] == n(model)


def test_exit_cost_at_224_is_that_of_a_network_without_later_stages(
    costs_exits: ExitCosts,
) -> None:
    # A model that physically ends after stage 2 and its head must cost what exit 0 costs.
    model = create_model("mcga_exits").eval()
    cut = nn.Sequential(model.stem, model.stages[0], model.stages[1], model.heads["stage2"])
    with torch.no_grad():
        macs = count_fvcore(cut, torch.zeros(1, 3, 224, 224)).macs
    assert costs_exits.macs[0] == macs
    assert costs_exits.params[0] == sum(p.numel() for p in cut.parameters())
    assert costs_exits.macs[0] < costs_exits.macs[1] < costs_exits.macs[2]


@pytest.mark.parametrize("name", ["mcga", "mcga_exits"])
def test_every_parameter_takes_part(name: str) -> None:
    # A parameter that never receives a gradient would inflate the parameter count
    # without being part of the network. 64x64 leaves stage 4 with 2x2 tokens: on a single
    # token the gather attention's softmax is constant and its queries get no gradient.
    model = _small(name, seed=9).train()
    sum(out.square().mean() for out in model(_image(64))).backward()
    dead = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


# --- published costs -----------------------------------------------------------------------


def test_mcga_costs_match_the_published_numbers(costs_mcga: ExitCosts) -> None:
    assert costs_mcga.exit_names == ["stage4"] and costs_mcga.convention == "fvcore"
    assert costs_mcga.input_size == (3, 224, 224)
    assert abs(costs_mcga.params[0] - PUBLISHED_PARAMS) <= TOLERANCE * PUBLISHED_PARAMS
    assert abs(costs_mcga.macs[0] - PUBLISHED_MACS) <= TOLERANCE * PUBLISHED_MACS
    # The values measured when the widths were chosen (module docstring).
    assert costs_mcga.macs[0] == pytest.approx(721.34e6, rel=1e-4)
    assert costs_mcga.params[0] == pytest.approx(10.12e6, rel=1e-3)


def test_mcga_exits_costs(costs_mcga: ExitCosts, costs_exits: ExitCosts) -> None:
    assert costs_exits.exit_names == ["stage2", "stage3", "stage4"]
    assert [round(m / 1e6, 1) for m in costs_exits.macs] == [202.0, 455.9, 721.9]
    assert [round(p / 1e6, 2) for p in costs_exits.params] == [0.29, 2.36, 10.32]
    # The last exit is mcga plus the two earlier heads (LayerNorm + pooling + linear).
    heads = 64 * 1000 + 128 * 1000  # their linear layers' MACs
    norms = 5 * (784 * 64 + 196 * 128)  # fvcore: affine layer norm, 5 per input element
    assert costs_exits.macs[2] - costs_mcga.macs[0] == heads + norms
    extra = (64 * 1000 + 1000 + 2 * 64) + (128 * 1000 + 1000 + 2 * 128)
    assert costs_exits.params[2] - costs_mcga.params[0] == extra


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(exit_stages=(2, 3)), "last exit must follow stage 4"),
        (dict(exit_stages=(3, 2, 4)), "increasing order"),
        (dict(exit_stages=(0, 4)), "stage numbers 1..4"),
        (dict(num_heads=(2, 2, 3, 8)), "not divisible by num_heads 3"),
        (dict(kernel_sizes=(3, 4)), "odd positive integers"),
        (dict(channels=(32, 64, 128)), "channels must be 4 positive integers"),
        (dict(depths=(2, 2, 0, 6)), "depths must be 4 positive integers"),
        (dict(num_groups=0), "num_groups must be a positive integer"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(mlp_ratio=0), "mlp_ratio and group_mix_ratio must be > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _meta("mcga_exits", **overrides)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="exit_stage"):
        _meta("mcga", exit_stage=(4,))


def test_bad_inputs_raise_clear_errors() -> None:
    model = _small("mcga")
    with pytest.raises(ValueError, match=r"at least 32x32 pixels .*got 16x16"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(IndexError, match="out of range"):
        model.forward_until(_image(), 1)
