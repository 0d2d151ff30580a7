"""MCGA: the paper's block structure, strict checkpoints, real early exit, published costs.

MCGA has no official code or checkpoint, so there is no key fixture: the tests pin the
architecture of Section 3 of the paper (patch embeddings, block shortcuts, 3x3 and 5x5
depth-wise convolutions on all channels used as queries, 8 group tokens, spatial mixing,
one propagation attention per branch, fusion by projection and sum, the stage
configuration), check the parameter count within 3% of 10.3 M and the fvcore cost within
5% of 0.7 G, and exercise the multi-exit extension. Numeric tests run on reduced widths
and small images to stay fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import (  # noqa: F401  (one_torch_thread: module fixture)
    assert_bad_keep_masks_refused,
    assert_compaction,
    meta_model,
    one_torch_thread,
)

import eebench.zoo.mcga  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import count_fvcore
from eebench.zoo import CheckpointMismatchError, create_model, list_models
from eebench.zoo.base import run_exits
from eebench.zoo.mcga import (
    MCGA,
    GroupAttention,
    MCGAAttention,
    MCGABlock,
    Propagation,
    SpatialMixer,
)

PUBLISHED_PARAMS = 10.3e6
PUBLISHED_MACS = 0.7e9
SMALL = dict(channels=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), embed_dim=24)
EXTRA_HEAD_KEYS = {
    f"heads.stage{s}.{m}.{p}"
    for s in (2, 3)
    for m in ("norm", "pre_logits", "fc")
    for p in ("weight", "bias")
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def costs_mcga() -> ExitCosts:
    return count_costs(create_model("mcga"), cross_check=False)


def _small(name: str, seed: int = 0, **kw) -> MCGA:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, **{**SMALL, **kw})
    _randomise_norms(model, seed)
    return model.eval()


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Non-trivial norm affine parameters, so that a lost tensor shows."""
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def _image(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


def _block(dim: int = 16, heads: int = 2, seed: int = 0) -> MCGABlock:
    torch.manual_seed(seed)
    block = MCGABlock(dim, heads, 8, 4.0, 4.0, (3, 5))
    _randomise_norms(block, seed)
    return block.eval()


def _tok(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


# --- registry and the paper's configuration ------------------------------------------------


def test_registered_names_and_exits() -> None:
    assert list_models("mcga*") == ["mcga", "mcga_exits"]
    single, multi = meta_model("mcga"), meta_model("mcga_exits")
    assert single.exits == ["stage4"]
    assert multi.exits == ["stage2", "stage3", "stage4"]
    for model, name in ((single, "mcga"), (multi, "mcga_exits")):
        cfg = model.config
        assert cfg.name == name and cfg.num_classes == 1000
        assert cfg.input_size == (3, 224, 224) and cfg.cost_convention == "fvcore"
        assert "No official code or checkpoint" in cfg.checkpoint_note
    assert multi.config.arch["exit_stages"] == [2, 3, 4]
    assert single.config.arch["exit_stages"] == [4]


def test_stage_configuration_of_section_3_2() -> None:
    model = meta_model("mcga")
    widths, depths, heads = (32, 64, 128, 256), (2, 2, 6, 6), (2, 2, 4, 8)
    assert len(model.stages) == 4
    c_in = 3
    for i, stage in enumerate(model.stages):
        # Patch embedding: kernel = stride = patch size, strides 4, 8, 16, 32 in all.
        conv = stage.embed.conv
        p = 4 if i == 0 else 2
        assert conv.kernel_size == (p, p) and conv.stride == (p, p) and conv.padding == (0, 0)
        assert (conv.in_channels, conv.out_channels) == (c_in, widths[i])
        # Depth-wise between stages (one group per input channel); 3 -> 32 cannot be.
        assert conv.groups == (1 if i == 0 else c_in)
        assert len(stage.blocks) == depths[i]
        for block in stage.blocks:
            assert isinstance(block, MCGABlock)
            assert block.attn.group_attn.num_heads == heads[i]
            assert all(p.num_heads == heads[i] for p in block.attn.propagate)
            assert block.mlp.fc1.weight.shape == (4 * widths[i], widths[i])  # ratio 4
            assert block.mlp.fc2.weight.shape == (widths[i], 4 * widths[i])
            assert isinstance(block.mlp.act, nn.GELU)
        c_in = widths[i]
    head = model.heads["stage4"]
    assert head.pre_logits.weight.shape == (1280, 256)
    assert head.fc.weight.shape == (1000, 1280)


def test_mcga_attention_modules_follow_the_paper() -> None:
    model = meta_model("mcga")
    for i, stage in enumerate(model.stages):
        c = (32, 64, 128, 256)[i]
        for block in stage.blocks:
            attn = block.attn
            assert isinstance(attn, MCGAAttention)
            # Multi-scale convolutions: a 3x3 and a 5x5 depth-wise conv, each on all c
            # channels (no channel split), same padding.
            assert [dw.kernel_size for dw in attn.dw] == [(3, 3), (5, 5)]
            for dw in attn.dw:
                assert dw.in_channels == dw.out_channels == dw.groups == c
                assert dw.padding == (dw.kernel_size[0] // 2,) * 2 and dw.stride == (1, 1)
            # Group attention, eq. (3): 8 group tokens, W_Q, W_K, W_V of d x d, no bias,
            # no output projection.
            ga = attn.group_attn
            assert isinstance(ga, GroupAttention)
            assert ga.group_tokens.shape == (1, 8, c)
            assert {n: tuple(p.shape) for n, p in ga.named_parameters()} == {
                "group_tokens": (1, 8, c),
                "q.weight": (c, c),
                "k.weight": (c, c),
                "v.weight": (c, c),
            }
            # Spatial MLPMixer: an MLP across the 8 group tokens, shared by the channels.
            assert isinstance(attn.mixer, SpatialMixer)
            assert attn.mixer.mlp.fc1.weight.shape == (32, 8)
            assert attn.mixer.mlp.fc2.weight.shape == (8, 32)
            # Two propagation attentions, one per branch, each with its own K_M and V_M
            # and no query projection (the convolution output is the query).
            assert len(attn.propagate) == 2
            assert attn.propagate[0].k is not attn.propagate[1].k
            for prop in attn.propagate:
                assert isinstance(prop, Propagation)
                assert {n: tuple(p.shape) for n, p in prop.named_parameters()} == {
                    "k.weight": (c, c),
                    "v.weight": (c, c),
                }
            # Fusion: one linear projection per branch, summed.
            assert [tuple(f.weight.shape) for f in attn.fuse] == [(c, c), (c, c)]
    # Nothing else holds parameters in a block: no group channel MLP, no extra projection.
    owners = {k.rsplit(".", 1)[0] for k, _ in model.stages[2].blocks[0].named_parameters()}
    assert owners == {
        "norm1", "norm2", "mlp.fc1", "mlp.fc2",
        "attn.dw.0", "attn.dw.1",
        "attn.group_attn", "attn.group_attn.q", "attn.group_attn.k", "attn.group_attn.v",
        "attn.mixer.norm", "attn.mixer.mlp.fc1", "attn.mixer.mlp.fc2",
        "attn.propagate.0.k", "attn.propagate.0.v", "attn.propagate.1.k", "attn.propagate.1.v",
        "attn.fuse.0", "attn.fuse.1",
    }  # fmt: skip


def test_block_has_two_pre_norm_shortcuts() -> None:
    block = _block()
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        t = _tok(x)
        t = t + block.attn(block.norm1(t), 6, 5)
        t = t + block.mlp(block.norm2(t))
        # rebuilt by hand: the same operations, but tensors of other memory layouts may take
        # other kernels, so equal up to float32 rounding, not bit for bit
        torch.testing.assert_close(block(x), t.transpose(1, 2).reshape(2, 16, 6, 5),
                                   rtol=1e-5, atol=1e-5)
        # With both residual branches silenced the block is the identity.
        for lin in (*block.attn.fuse, block.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
        assert torch.equal(block(x), x)


def test_directions_of_the_attentions_and_the_fusion() -> None:
    block = _block(seed=1)
    attn = block.attn
    seen: dict[str, object] = {}

    def keep(label: str):
        return lambda m, args, out: seen.__setitem__(label, (args, out))

    for j, prop in enumerate(attn.propagate):
        prop.register_forward_hook(keep(f"prop{j}"))
    for j, fuse in enumerate(attn.fuse):
        fuse.register_forward_hook(keep(f"fuse{j}"))
    attn.group_attn.register_forward_hook(keep("ga"))
    attn.mixer.register_forward_hook(keep("mixer"))
    t = torch.randn(2, 7 * 9, 16)
    with torch.no_grad():
        out = attn(t, 7, 9)
        x_map = t.transpose(1, 2).reshape(2, 16, 7, 9)
        # Group attention: the 8 group tokens query the 63 image tokens -> 8 grouped features.
        assert seen["ga"][0][0] is t and seen["ga"][1].shape == (2, 8, 16)
        assert seen["mixer"][0][0] is seen["ga"][1]
        for j, dw in enumerate(attn.dw):
            query, groups = seen[f"prop{j}"][0]
            # Local queries: the branch's depth-wise output; keys/values: the mixed groups.
            torch.testing.assert_close(query, _tok(dw(x_map)), rtol=1e-5, atol=1e-5)
            assert groups is seen["mixer"][1]
            assert seen[f"prop{j}"][1].shape == (2, 63, 16)
            assert seen[f"fuse{j}"][0][0] is seen[f"prop{j}"][1]
        assert torch.equal(out, seen["fuse0"][1] + seen["fuse1"][1])
        # The local query is updated by the attention: with zero values it passes unchanged.
        prop = attn.propagate[0]
        q = torch.randn(2, 63, 16)
        prop.v.weight.zero_()
        assert torch.equal(prop(q, seen["mixer"][1]), q)


def test_group_attention_is_linear_in_the_tokens_and_mixer_mixes_groups() -> None:
    torch.manual_seed(2)
    ga = GroupAttention(16, 2, 8).eval()
    mixer = SpatialMixer(16, 8, 32).eval()
    with torch.no_grad():
        for n in (1, 10, 300):
            assert ga(torch.randn(3, n, 16)).shape == (3, 8, 16)
        # Each grouped feature is a convex combination of the image values (softmax over L).
        x = torch.randn(1, 50, 16)
        v = ga.v(x)
        g = ga(x)
        lo, hi = v.min(dim=1).values, v.max(dim=1).values
        assert bool(((g >= lo - 1e-5) & (g <= hi + 1e-5)).all())
        # Spatial mixing: changing one grouped feature changes the other seven.
        y = torch.randn(1, 8, 16)
        y2 = y.clone()
        y2[0, 0] += torch.randn(16)  # not a constant: LayerNorm would remove that
        assert not torch.isclose(mixer(y)[0, 1:], mixer(y2)[0, 1:]).all(dim=-1).any()


def test_global_context_flows_only_through_group_attention() -> None:
    # The depth-wise convolutions see 5x5 at most; a change in one corner reaches the far
    # corner only through group attention -> mixing -> propagation.
    block = _block(seed=3)
    x = torch.randn(1, 16, 12, 12)
    y = x.clone()
    y[0, :, 0, 0] += 3.0 * torch.randn(16)  # not a constant: LayerNorm would remove that
    with torch.no_grad():
        assert not torch.allclose(block(x)[0, :, 11, 11], block(y)[0, :, 11, 11])
        # With zero group-attention values the grouped features no longer depend on the
        # image: the far corner stays put, the near one still moves.
        block.attn.group_attn.v.weight.zero_()
        out_x, out_y = block(x), block(y)
    assert torch.equal(out_x[0, :, 11, 11], out_y[0, :, 11, 11])
    assert not torch.allclose(out_x[0, :, 1, 1], out_y[0, :, 1, 1])


def test_num_classes_override_changes_only_the_classifiers() -> None:
    base = {k: tuple(v.shape) for k, v in meta_model("mcga_exits").state_dict().items()}
    ten = {
        k: tuple(v.shape) for k, v in meta_model("mcga_exits", num_classes=10).state_dict().items()
    }
    assert base.keys() == ten.keys()
    diff = {k for k in base if base[k] != ten[k]}
    assert diff == {f"heads.stage{s}.fc.{p}" for s in (2, 3, 4) for p in ("weight", "bias")}
    assert ten["heads.stage3.fc.weight"] == (10, 1280)


# --- checkpoints ---------------------------------------------------------------------------


def test_mcga_state_dict_is_a_subset_of_mcga_exits() -> None:
    single = {k: tuple(v.shape) for k, v in meta_model("mcga").state_dict().items()}
    multi = {k: tuple(v.shape) for k, v in meta_model("mcga_exits").state_dict().items()}
    assert set(single) < set(multi)
    assert all(multi[k] == shape for k, shape in single.items())
    assert set(multi) - set(single) == EXTRA_HEAD_KEYS


def test_mcga_weights_load_into_the_backbone_and_last_head_of_mcga_exits() -> None:
    single = _small("mcga", seed=1)
    multi = _small("mcga_exits", seed=2)
    result = multi.load_state_dict(single.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == EXTRA_HEAD_KEYS
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
    renamed = "stages.2.blocks.1.attn.group_attn.k.weight"
    reshaped = "heads.stage3.fc.weight"
    sd["stages.2.blocks.1.attn.group_attn.k_renamed.weight"] = sd.pop(renamed)
    sd[reshaped] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("mcga_exits", checkpoint=str(path), num_classes=10, **SMALL)
    text = str(err.value)
    assert renamed in text and "k_renamed" in text and reshaped in text


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


# Real exits with a batch of 7: which exit each sample leaves at. Several leave at once;
# everyone leaves before the last exit; one sample goes on alone (exit 1 keeps every row).
EXIT_PATTERNS = [[0, 1, 2, 0, 0, 1, 2], [1, 0, 1, 1, 0, 0, 1], [0, 0, 0, 2, 0, 0, 0]]


def test_real_exits_slice_the_feature_map_to_the_samples_that_continue() -> None:
    model, x = _small("mcga_exits", seed=9), _image(size=64, batch=7)
    with torch.no_grad():
        full = model(x)
    for logits in full:  # every sample's logits differ, so a row mixed up would show
        gaps = (logits[:, None] - logits[None]).abs().amax(-1)
        assert gaps[~torch.eye(7, dtype=torch.bool)].min() > 1e-3 * logits.abs().max()
    for exit_at in EXIT_PATTERNS:
        assert_compaction(model, x, exit_at)


def test_later_stages_and_heads_run_only_for_the_samples_that_reach_them() -> None:
    model, x = _small("mcga_exits", seed=9), _image(size=64, batch=7)
    exit_at = torch.tensor(EXIT_PATTERNS[0])
    rows: dict[str, list[int]] = {}
    watched = {"stage3": model.stages[2], "stage4": model.stages[3],
               "head3": model.heads["stage3"], "head4": model.heads["stage4"]}
    for label, module in watched.items():
        module.register_forward_pre_hook(
            lambda m, args, label=label: rows.setdefault(label, []).append(args[0].shape[0])
        )
    with torch.no_grad():
        exits, _ = run_exits(model, x, lambda k, logits, alive: exit_at[alive] == k)
    assert exits.tolist() == exit_at.tolist()
    assert rows == {"stage3": [4], "head3": [4], "stage4": [2], "head4": [2]}


def test_a_bad_keep_mask_gets_a_clear_error() -> None:
    assert_bad_keep_masks_refused(_small("mcga_exits"), _image(batch=7))


def test_a_mask_that_keeps_nobody_leaves_empty_later_exits() -> None:
    # run_exits closes the generator instead; a caller that sends all-False gets empty logits.
    model = _small("mcga_exits")
    with torch.no_grad():
        gen = model.iter_exits(_image())
        next(gen)
        rest = [gen.send(torch.zeros(2, dtype=torch.bool))] + list(gen)
    assert [(k, tuple(t.shape)) for k, t in rest] == [(1, (0, 10)), (2, (0, 10))]


def _piece_macs(module: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        return count_fvcore(module, x).macs, module(x)


def test_cumulative_costs_are_the_sum_of_the_pieces_that_ran() -> None:
    # Count every piece on its own input; exit k must cost exactly the pieces before it.
    model = _small("mcga_exits", seed=8)
    costs = count_costs(model, input_size=64, cross_check=False)
    x = torch.zeros(1, 3, 64, 64)
    stage, head = [], {}
    for i, s in enumerate(model.stages):
        macs, x = _piece_macs(s, x)
        stage.append(macs)
        if f"stage{i + 1}" in model.heads:
            head[i + 1] = _piece_macs(model.heads[f"stage{i + 1}"], x)[0]
    expected = [
        stage[0] + stage[1] + head[2],
        sum(stage[:3]) + head[2] + head[3],
        sum(stage) + head[2] + head[3] + head[4],
    ]
    assert costs.macs == pytest.approx(expected, rel=0, abs=0.5)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base = n(model.stages[0]) + n(model.stages[1]) + n(model.heads["stage2"])
    assert costs.params[0] == base
    assert costs.params[1] == base + n(model.stages[2]) + n(model.heads["stage3"])
    assert costs.params[2] == n(model)


@pytest.mark.parametrize("name", ["mcga", "mcga_exits"])
def test_every_parameter_takes_part(name: str) -> None:
    # A parameter that never receives a gradient would inflate the parameter count
    # without being part of the network. 64x64 leaves stage 4 with 2x2 tokens: on a single
    # token the group attention's softmax is constant and its queries get no gradient.
    model = _small(name, seed=9).train()
    sum(out.square().mean() for out in model(_image(64))).backward()
    dead = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


# --- published costs -----------------------------------------------------------------------


def test_mcga_costs_match_the_published_numbers(costs_mcga: ExitCosts) -> None:
    assert costs_mcga.exit_names == ["stage4"] and costs_mcga.convention == "fvcore"
    assert costs_mcga.input_size == (3, 224, 224)
    assert abs(costs_mcga.params[0] - PUBLISHED_PARAMS) <= 0.03 * PUBLISHED_PARAMS
    assert abs(costs_mcga.macs[0] - PUBLISHED_MACS) <= 0.05 * PUBLISHED_MACS
    # The values the module docstring states.
    assert costs_mcga.params[0] == 10_296_264
    assert costs_mcga.macs[0] == pytest.approx(694.26e6, rel=1e-5)


def test_mcga_exits_adds_two_heads_to_mcga() -> None:
    # Parameters: the extra heads are LayerNorm + Linear(C, 1280) + Linear(1280, 1000).
    def n(name: str) -> int:
        return sum(p.numel() for p in meta_model(name).parameters())

    extra = sum(2 * c + (c * 1280 + 1280) + (1280 * 1000 + 1000) for c in (64, 128))
    assert n("mcga_exits") - n("mcga") == extra


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(exit_stages=(2, 3)), "last exit must follow stage 4"),
        (dict(exit_stages=(3, 2, 4)), "increasing order"),
        (dict(exit_stages=(0, 4)), "stage numbers 1..4"),
        (dict(num_heads=(2, 2, 3, 8)), "not divisible by num_heads 3"),
        (dict(kernel_sizes=(3, 4)), "distinct odd positive integers"),
        (dict(kernel_sizes=(3, 3)), "distinct odd positive integers"),
        (dict(kernel_sizes=()), "distinct odd positive integers"),
        (dict(channels=(32, 64, 128)), "channels must be 4 positive integers"),
        (dict(depths=(2, 2, 0, 6)), "depths must be 4 positive integers"),
        (dict(num_groups=0), "num_groups must be a positive integer"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(mlp_ratio=0), "mlp_ratio and group_mix_ratio must be > 0"),
        (dict(group_mix_ratio=-1), "mlp_ratio and group_mix_ratio must be > 0"),
        (dict(embed_dim=0), "embed_dim must be a positive integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        meta_model("mcga_exits", **overrides)


@pytest.mark.parametrize("knob", ["exit_stage", "group_mlp_ratio"])
def test_unknown_option_is_rejected(knob: str) -> None:
    with pytest.raises(TypeError, match=knob):
        meta_model("mcga", **{knob: 1})


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
