"""CHASE, checked against Section II of the paper point by point: the fusion wiring of Eq. 1 /
Table I (which tensors feed f and h), the scale discarding of Eq. 2, the transitions of Eq. 3,
CAM before f and h separately (Eq. 4), GAL only at the coarsest scale of the attention block(s),
exits every kappa layers (Sec. II-C); then the published costs, real early exit, and strict
checkpoints.

The wiring tests record, with forward hooks, the tensors every module receives and returns
during one run, and compare them with the concatenations the equations prescribe (exact
equality: the same tensors concatenated the same way). Everything but the ImageNet cost test
runs the 32x32 models.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import assert_compaction, meta_model, one_torch_thread  # noqa: F401

from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import KeepAlive, count_fvcore, flop_count_analysis
from eebench.train.trainer import multi_exit_loss
from eebench.zoo import CheckpointMismatchError, TruncatedModel, create_model, list_models
from eebench.zoo.chase import CAM, CHASE, GAL, ConvBNAct, Fusion, exit_positions

FAMILIES = {"chase_imagenet": 1000, "chase_cifar10": 10, "chase_cifar100": 100}
VARIANTS = ("", "_nocam", "_nogal", "_noattn", "_gal2")
ALL = [f + v for f in FAMILIES for v in VARIANTS]
EXITS = [
    "block1_layer2", "block1_layer4", "block2_layer0", "block2_layer2", "block2_layer4",
    "block3_layer0", "block3_layer2", "block3_layer4", "block3_layer6",
]  # fmt: skip
RES = (32, 16, 8)  # CIFAR scales

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cifar(name: str = "chase_cifar10", **kw) -> CHASE:
    torch.manual_seed(0)
    return create_model(name, **kw).eval()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def imagenet_costs() -> tuple[ExitCosts, dict[str, float]]:
    """fvcore costs at 224x224, counted once: every exit of the base model, and the last exit
    of three variants (one trace of the full run each, what count_costs counts for it)."""
    torch.manual_seed(0)
    base = count_costs(create_model("chase_imagenet"), cross_check=False)
    last = {}
    for variant in ("_gal2", "_nogal", "_noattn"):
        model = create_model("chase_imagenet" + variant).eval()
        with torch.no_grad():
            run = TruncatedModel(model, model.num_exits - 1)
            last[variant] = count_fvcore(run, torch.zeros(1, 3, 224, 224)).macs
    return base, last


# ------------------------------------------------------------------ registry and exits


def test_every_name_is_registered_with_its_ablation_switches() -> None:
    assert list_models("chase_*") == sorted(ALL)
    want_gal = {"": [2], "_nocam": [2], "_nogal": [], "_noattn": [], "_gal2": [1, 2]}
    for family, classes in FAMILIES.items():
        for variant in VARIANTS:
            model = meta_model(family + variant)
            assert type(model) is CHASE
            assert model.exits == EXITS
            cfg = model.config
            assert cfg.name == family + variant and cfg.cost_convention == "fvcore"
            assert cfg.num_classes == classes
            size = 224 if family == "chase_imagenet" else 32
            assert cfg.input_size == (3, size, size)
            assert cfg.arch["cam"] is (variant not in ("_nocam", "_noattn"))
            assert cfg.arch["gal_blocks"] == want_gal[variant]
            # Fig. 1: three scales, three blocks (two convolutional, one attention block)
            assert len(cfg.arch["gr_factor"]) == cfg.arch["n_blocks"] == 3
            assert (cfg.arch["layers"], cfg.arch["kappa"], cfg.arch["reduction"]) == (6, 2, 0.5)
            assert cfg.arch["cam_reduction"] == 2


def test_ablations_are_the_same_class_with_other_cam_and_gal_arguments() -> None:
    base = meta_model("chase_cifar10")
    keys = set(base.state_dict())
    for variant, changed in [
        ("_nocam", {"cam"}),
        ("_nogal", {"gal_blocks"}),
        ("_noattn", {"cam", "gal_blocks"}),
        ("_gal2", {"gal_blocks"}),
    ]:
        other = meta_model("chase_cifar10" + variant)
        a, b = base.config.arch, other.config.arch
        assert {k for k in a if a[k] != b[k]} == changed
        other_keys = set(other.state_dict())
        if variant == "_nocam":
            assert other_keys == {k for k in keys if ".cam_" not in k}
    same = meta_model("chase_cifar10", cam=False, gal_blocks=())
    assert list(same.state_dict()) == list(meta_model("chase_cifar10_noattn").state_dict())
    # GAL blocks count from the end, so a block-count override keeps each variant's meaning
    assert meta_model("chase_cifar10_gal2", n_blocks=2).config.arch["gal_blocks"] == [0, 1]
    assert meta_model("chase_cifar10", n_blocks=2).config.arch["gal_blocks"] == [1]


def test_exit_positions_follow_section_2c() -> None:
    assert exit_positions(3, 6, 2) == [
        (1, 2), (1, 4), (2, 0), (2, 2), (2, 4), (3, 0), (3, 2), (3, 4), (3, 6)
    ]  # fmt: skip
    assert exit_positions(3, 4, 3) == [(1, 3), (2, 2), (3, 1), (3, 4)]
    assert exit_positions(2, 4, 3) == [(1, 3), (2, 2), (2, 4)]  # kappa does not divide B*L
    assert exit_positions(1, 3, 3) == [(1, 3)]
    for blocks, layers, kappa in [(3, 6, 2), (3, 4, 3), (3, 4, 1), (3, 6, 5), (2, 5, 2)]:
        pos = exit_positions(blocks, layers, kappa)
        for k, (b, ell) in enumerate(pos[:-1], 1):
            assert (b - 1) * layers + ell == k * kappa  # an exit every kappa layers
            assert ell == (k * kappa) % layers  # the printed l_k
            # the printed b_k = ceil((k-1) kappa / L), read with blocks counted from 0,
            # agrees exactly when L/2 <= kappa < L (the docstring's claim)
            if layers / 2 <= kappa < layers:
                assert b - 1 == math.ceil((k - 1) * kappa / layers)
        assert pos[-1] == (blocks, layers)  # the last classifier reads the last layer
    assert exit_positions(3, 4, 1)[1] == (1, 2) and math.ceil(1 / 4) == 1  # 0-based reading fails


# ------------------------------------------------------------------ wiring (Eq. 1-4)


def _record(model: CHASE, x: torch.Tensor) -> tuple[dict[int, tuple], list[torch.Tensor]]:
    """Run ``model`` on ``x`` once; module id -> (inputs, output) of its call, plus logits."""
    seen: dict[int, tuple] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o: seen.__setitem__(id(mod), (i, o)))
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def _cat(pieces: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(pieces, dim=1)


def test_fusion_wiring_follows_eq1_and_table1() -> None:
    model = _cifar()
    seen, _ = _record(model, torch.randn(2, 3, 32, 32))

    def out(m: nn.Module) -> torch.Tensor:
        return seen[id(m)][1]

    def inp(m: nn.Module) -> torch.Tensor:
        return seen[id(m)][0][0]

    n_scales, layers = 3, model.layers_per_block
    x: dict[tuple[int, int, int], torch.Tensor] = {(0, 0, 0): out(model.stem)}  # (b, l, s)
    for b, block in enumerate(model.blocks):
        if b == 0:  # Eq. 1 at l = 0: the coarser scales of block 1 come from f alone
            for s, unit in enumerate(block.entry, 1):
                assert unit.h is None and unit.cam_h is None
                assert torch.equal(inp(unit.cam_f), x[(0, 0, s - 1)])
                assert torch.equal(inp(unit.f), out(unit.cam_f))
                x[(0, 0, s)] = out(unit)
        else:  # Eq. 3: x_{b,0}^s = T(stack of block b - 1 at scale s), for the kept scales
            assert len(block.transition) == n_scales - b
            for s, t in enumerate(block.transition, b):
                assert torch.equal(inp(t), _cat([x[(b - 1, i, s)] for i in range(layers + 1)]))
                x[(b, 0, s)] = out(t)
        for ell, units in enumerate(block.layers, 1):
            assert len(units) == n_scales - b  # Eq. 2: scales s < b are gone
            for s, unit in enumerate(units, b):
                parts = []
                if s == b:  # the finest scale alive: f(empty) = empty, no module at all
                    assert unit.f is None and unit.cam_f is None
                else:  # f reads the finer scale's x_{b,0..l}, its layer-l output included
                    fine = _cat([x[(b, i, s - 1)] for i in range(ell + 1)])
                    assert torch.equal(inp(unit.cam_f), fine)
                    assert torch.equal(inp(unit.f), out(unit.cam_f))
                    parts.append(out(unit.f))
                same = _cat([x[(b, i, s)] for i in range(ell)])  # h reads x_{b,0..l-1}
                if unit.cam_h is not None:
                    assert torch.equal(inp(unit.cam_h), same)
                    assert torch.equal(inp(unit.h), out(unit.cam_h))
                else:  # GAL takes the stack directly
                    assert isinstance(unit.h, GAL) and (b, s) == (2, 2)
                    assert torch.equal(inp(unit.h), same)
                parts.append(out(unit.h))
                assert torch.equal(out(unit), _cat(parts))  # f's channels, then h's
                x[(b, ell, s)] = out(unit)
    # Table I's example, spelled out for block 1, layer 2 (0-based b=0, l=2):
    unit = model.blocks[0].layers[1][1]
    assert torch.equal(inp(unit.cam_f), _cat([x[(0, 0, 0)], x[(0, 1, 0)], x[(0, 2, 0)]]))
    assert torch.equal(inp(unit.cam_h), _cat([x[(0, 0, 1)], x[(0, 1, 1)]]))
    # Exits read the coarsest scale: the dense stack inside a block, the transition between.
    for k, (b, ell) in enumerate(model.positions):
        stack = [x[(b - 1, i, 2)] for i in range(ell + 1)]
        want = stack[0] if ell == 0 else _cat(stack)
        assert torch.equal(inp(model.heads[k]), want), model.exits[k]


def test_discarded_scale_is_never_read() -> None:
    # Eq. 2: block b (1-based) keeps the scales s >= b. No module of block b may receive a
    # tensor at the resolution of a discarded scale, and the heads read only the coarsest.
    model = _cifar("chase_cifar10_gal2")
    sizes: list[tuple[str, int]] = []
    owners = {m: f"block{b}" for b, blk in enumerate(model.blocks) for m in blk.modules()}
    owners.update({h: "head" for h in model.heads})  # what the classifiers receive
    handles = []
    for m, tag in owners.items():
        def pre(mod, args, tag=tag) -> None:  # noqa: ANN001
            for a in args:
                for t in a if isinstance(a, list | tuple) else [a]:
                    # (1x1 maps are the squeezed channel descriptors of CAM)
                    if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] > 1:
                        sizes.append((tag, t.shape[-1]))
        handles.append(m.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    read = {tag: {r for t, r in sizes if t == tag} for tag in {t for t, _ in sizes}}
    assert read["block0"] == {32, 16, 8}
    assert read["block1"] == {16, 8}  # the transition and f of scale 3 read scale 2
    assert read["block2"] == {8}
    assert read["head"] == {8}  # the coarsest scale
    # structurally: one transition per kept scale, no f at the finest scale alive
    for b, blk in enumerate(model.blocks):
        assert all(units[0].f is None and units[0].cam_f is None for units in blk.layers)
        assert all(len(units) == 3 - b for units in blk.layers)
    with pytest.raises(ValueError, match="discards the finest scale"):
        meta_model("chase_cifar10", n_blocks=4)


def _first_conv(layer: nn.Module) -> nn.Conv2d:
    return next(m for m in layer.modules() if isinstance(m, nn.Conv2d))


def test_cam_sits_before_f_and_before_h_separately() -> None:
    model = meta_model("chase_cifar10")
    units = [u for u in model.modules() if isinstance(u, Fusion)]
    n_f = n_h = 0
    for u in units:
        if u.f is not None:
            assert isinstance(u.cam_f, CAM)
            assert u.cam_f.fc1.in_channels == _first_conv(u.f).in_channels  # f's input
            n_f += 1
        if isinstance(u.h, GAL):
            assert u.cam_h is None  # no CAM before the attention layer
        elif u.h is not None:
            assert isinstance(u.cam_h, CAM) and u.cam_h is not u.cam_f
            assert u.cam_h.fc1.in_channels == _first_conv(u.h).in_channels
            n_h += 1
    assert n_f == 2 + 6 * (2 + 1)  # entry f's, then f at scales 2-3 (block 1) and 3 (block 2)
    assert n_h == 6 * (3 + 2)  # h in the two convolutional blocks; block 3 is attention
    cams = [m for m in model.modules() if isinstance(m, CAM)]
    assert len(cams) == n_f + n_h  # nowhere else (not on a layer's output)
    cam = cams[0]
    c = cam.fc1.in_channels
    assert (cam.fc1.out_channels, cam.fc2.in_channels, cam.fc2.out_channels) == (c // 2, c // 2, c)
    assert cam.fc1.bias is not None and cam.fc2.bias is not None
    assert isinstance(cam.act, nn.GELU) and isinstance(cam.gate, nn.Sigmoid)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cam.modules())
    torch.manual_seed(0)
    cam = CAM(6).eval()
    t = torch.randn(2, 6, 5, 5)
    w = torch.sigmoid(cam.fc2(nn.functional.gelu(cam.fc1(t.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(cam(t), t * w)
    for name in ("chase_cifar10_nocam", "chase_cifar10_noattn"):
        assert not any(isinstance(m, CAM) for m in meta_model(name).modules())


def test_transitions_halve_each_kept_scale_and_between_block_exits_read_them() -> None:
    model = _cifar()
    for b, blk in enumerate(model.blocks[1:], 1):
        assert len(blk.transition) == 3 - b  # one per kept scale
        for t in blk.transition:
            assert isinstance(t, ConvBNAct) and t[0].kernel_size == (1, 1)
            assert isinstance(t[2], nn.GELU)
            assert t[0].out_channels == math.floor(0.5 * t[0].in_channels)
    seen, _ = _record(model, torch.randn(1, 3, 32, 32))
    between = [k for k, (_, ell) in enumerate(model.positions) if ell == 0]
    assert [model.exits[k] for k in between] == ["block2_layer0", "block3_layer0"]
    for k in between:
        b = model.positions[k][0] - 1
        assert seen[id(model.heads[k])][0][0] is seen[id(model.blocks[b].transition[-1])][1]


def test_gal_is_at_the_coarsest_scale_of_the_attention_blocks_only() -> None:
    def gal_places(name: str) -> list[tuple[int, int, int]]:
        model = meta_model(name)
        return [
            (b, ell, s)
            for b, blk in enumerate(model.blocks)
            for ell, units in enumerate(blk.layers, 1)
            for s, u in enumerate(units, b)
            if isinstance(u.h, GAL)
        ]

    assert gal_places("chase_cifar10") == [(2, ell, 2) for ell in range(1, 7)]
    assert gal_places("chase_cifar10_gal2") == [
        *[(1, ell, 2) for ell in range(1, 7)], *[(2, ell, 2) for ell in range(1, 7)]
    ]  # fmt: skip
    assert gal_places("chase_cifar10_nogal") == gal_places("chase_cifar10_noattn") == []
    assert len([m for m in meta_model("chase_imagenet").modules() if isinstance(m, GAL)]) == 6
    model = _cifar()
    gal = model.blocks[2].layers[0][0].h
    c = gal.qkv.in_features
    assert gal.cpe.groups == c and gal.cpe.kernel_size == (3, 3)  # depth-wise CPE
    assert gal.qkv.out_features == 3 * c and gal.norm.normalized_shape == (c,)
    assert gal.proj.out_features == 6 * 2 and gal.mlp is None  # the layer's growth, no MLP
    assert gal.heads == 2
    seen, _ = _record(model, torch.randn(2, 3, 32, 32))
    y = seen[id(gal)][1]
    assert y.shape == (2, 12, 8, 8)  # tokens reshaped back to a 2D map
    # the attention is a softmax over all 64 tokens: it mixes distant positions
    x = seen[id(gal)][0][0].clone()
    with torch.no_grad():
        base = gal(x)
        x[:, :, 0, 0] += 1.0
        moved = gal(x)
    assert not torch.allclose(moved[:, :, 7, 7], base[:, :, 7, 7])
    with_mlp = _cifar(gal_mlp_ratio=2.0)
    assert with_mlp.blocks[2].layers[0][0].h.mlp is not None
    with torch.no_grad():
        assert [t.shape for t in with_mlp(torch.randn(1, 3, 32, 32))] == [(1, 10)] * 9


# ------------------------------------------------------------------ running and stopping


def test_stopping_at_exit_k_runs_nothing_after_it() -> None:
    model = _cifar("chase_cifar10_gal2")
    leaves = [m for m in model.modules() if not list(m.children())]
    order: list[int] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(id(mod))) for m in leaves]
    x = torch.randn(1, 3, 32, 32)
    marks = []
    with torch.no_grad():
        for _k, _logits in model.iter_exits(x):
            marks.append(len(order))
    full = list(order)
    assert marks == sorted(marks) and len(marks) == model.num_exits
    for k in range(model.num_exits):
        order.clear()
        with torch.no_grad():
            model.forward_until(x, k)
        assert order == full[: marks[k]], model.exits[k]  # exactly the run up to exit k
        head_leaves = {id(m) for h in model.heads[k + 1 :] for m in h.modules()}
        assert not head_leaves & set(order)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("name", ["chase_cifar10", "chase_cifar100_gal2"])
def test_forward_until_equals_the_prefix_of_forward(name: str) -> None:
    model = _cifar(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert [tuple(t.shape) for t in full] == [(2, model.config.num_classes)] * 9
        assert not torch.equal(full[0], full[-1])
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_real_exit_slices_the_carried_stacks() -> None:
    model = _cifar("chase_cifar10_gal2")
    # leave inside block 1, after a transition (exit 2), inside the attention block, at the end
    assert_compaction(model, torch.randn(7, 3, 32, 32), [0, 2, 2, 5, 6, 8, 8])


def test_loss_of_eq5_is_the_trainer_default() -> None:
    model = _cifar().train()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 4, 7])
    logits = model(x)
    want = sum(nn.functional.cross_entropy(z, y) for z in logits)  # equal weights, mean over N
    torch.testing.assert_close(multi_exit_loss(logits, y), want)


# ------------------------------------------------------------------ costs


def test_imagenet_costs_meet_the_papers_numbers(
    imagenet_costs: tuple[ExitCosts, dict[str, float]],
) -> None:
    base, last = imagenet_costs
    assert base.convention == "fvcore" and base.input_size == (3, 224, 224)
    assert base.exit_names == EXITS
    assert base.macs[0] <= 0.315e9  # the budgeted curve reaches 62.35% at 0.3 GFLOPs
    assert base.macs[-2] == pytest.approx(2.15e9, rel=0.05)  # penultimate exit (Sec. III-B)
    assert base.macs[-1] == pytest.approx(2.6e9, rel=0.05)  # last exit
    assert last["_gal2"] == pytest.approx(3.19e9, rel=0.05)  # Sec. III-C, anytime
    # Sec. III-C quotes budgeted points at 1.91 G (no CAM, no GAL) and 1.94 G (CAM only):
    # a budgeted average never exceeds the last exit, so those models must reach them.
    assert last["_noattn"] >= 1.91e9 and last["_nogal"] >= 1.94e9
    # the numbers the module docstring reports (so the docstring cannot drift)
    assert [round(m / 1e9, 3) for m in base.macs] == [
        0.234, 0.461, 0.724, 1.004, 1.277, 1.576, 1.805, 2.150, 2.639
    ]  # fmt: skip
    assert {k: round(v / 1e9, 3) for k, v in last.items()} == {
        "_gal2": 3.139, "_nogal": 2.009, "_noattn": 1.994
    }  # fmt: skip
    assert all(a < b for a, b in zip(base.macs, base.macs[1:]))
    assert all(a < b for a, b in zip(base.params, base.params[1:]))


def test_cifar_exits_bracket_the_budgeted_points_and_costs_add_up() -> None:
    # Sec. III-A: 95% on CIFAR-10 at 2.7e7 and 79% on CIFAR-100 at 5.5e7 FLOPs (budgeted)
    model = create_model("chase_cifar100").eval()
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        first = count_fvcore(TruncatedModel(model, 0), x).macs
        by_module = flop_count_analysis(
            KeepAlive(TruncatedModel(model, model.num_exits - 1)), x
        ).by_module()
    assert first < 2.7e7 and by_module[""] > 5.5e7
    # the full run's cost is the sum of the stem, the blocks and the nine heads
    pre = "inner.model."
    parts = [f"{pre}stem", *(f"{pre}blocks.{b}" for b in range(3))]
    parts += [f"{pre}heads.{k}" for k in range(9)]
    assert by_module[""] == sum(by_module[p] for p in parts)
    # exit 1 pays the stem, the entry fusions, block 1's first two layers and head 1
    first_parts = [f"{pre}stem", f"{pre}blocks.0.entry", f"{pre}blocks.0.layers.0"]
    first_parts += [f"{pre}blocks.0.layers.1", f"{pre}heads.0"]
    assert first == sum(by_module[p] for p in first_parts)
    # The attention block's six GAL layers are counted with their attention products:
    # CPE 9C, LayerNorm 5C, qkv 3C^2, proj C*g per token, and 2 * N^2 * C for q k^T and a v.
    for i, units in enumerate(model.blocks[2].layers):
        gal = units[0].h
        c, g, n = gal.qkv.in_features, gal.proj.out_features, 64
        want = n * (9 * c + 5 * c + 3 * c * c + c * g) + 2 * n * n * c
        assert by_module[f"{pre}blocks.2.layers.{i}.0.h"] == want


# ------------------------------------------------------------------ training and checkpoints


def test_gradients_reach_every_parameter_the_last_exit_uses() -> None:
    model = _cifar().train()
    logits = model.forward_until(torch.randn(2, 3, 32, 32), model.num_exits - 1)[-1]
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    earlier_heads = {f"heads.{k}." for k in range(model.num_exits - 1)}
    for name, p in model.named_parameters():
        if any(name.startswith(h) for h in earlier_heads):
            assert p.grad is None, name
        else:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
            assert torch.isfinite(p.grad).all(), name


def _trained_state(name: str) -> dict[str, torch.Tensor]:
    """A state_dict unlike a fresh model's: seeded weights and batch-norm statistics moved."""
    torch.manual_seed(5)
    model = create_model(name).train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.state_dict()


@pytest.mark.parametrize("wrap", ["model", "module_prefix"])
def test_state_dict_round_trips_strictly(tmp_path: Path, wrap: str) -> None:
    sd = _trained_state("chase_cifar100")
    path = tmp_path / "chase.pth"
    if wrap == "model":
        torch.save({"model": sd, "epoch": 3}, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    torch.manual_seed(99)
    model = create_model("chase_cifar100", checkpoint=str(path))
    got = model.state_dict()
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    reference = create_model("chase_cifar100").eval()
    reference.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), reference(x)))


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    sd = _trained_state("chase_cifar10")
    renamed = "blocks.2.layers.5.0.h.qkv.weight"
    reshaped = "heads.2.linear.weight"
    sd["blocks.2.layers.5.0.h.qkv_renamed.weight"] = sd.pop(renamed)
    sd[reshaped] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("chase_cifar10", checkpoint=str(path))
    text = str(err.value)
    assert renamed in text and "qkv_renamed" in text and reshaped in text
    nocam = tmp_path / "nocam.pth"
    torch.save(create_model("chase_cifar10_nocam").state_dict(), nocam)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys.*\.cam_[fh]\.fc1"):
        create_model("chase_cifar10", checkpoint=str(nocam))


def test_num_classes_override_changes_only_the_linear_layers() -> None:
    a = {k: v.shape for k, v in meta_model("chase_cifar100").state_dict().items()}
    b = {k: v.shape for k, v in meta_model("chase_cifar100", num_classes=7).state_dict().items()}
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {
        f"heads.{h}.linear.{p}" for h in range(9) for p in ("weight", "bias")
    }
    assert b["heads.8.linear.weight"] == (7, 128)


def test_configs() -> None:
    c10, c100, inet = (
        meta_model(n).config for n in ("chase_cifar10", "chase_cifar100", "chase_imagenet")
    )
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c100.mean == (0.5071, 0.4865, 0.4409)
    assert c10.crop_pct == c100.crop_pct == 1.0 and inet.crop_pct == 0.875
    assert inet.mean == (0.485, 0.456, 0.406) and inet.std == (0.229, 0.224, 0.225)
    assert inet.arch["channels"] == 28 and inet.arch["growth_rate"] == 26
    assert inet.arch["gr_factor"] == inet.arch["bn_factor"] == [1, 2, 2]
    assert inet.arch["gal_heads"] == 4 and inet.arch["gal_mlp_ratio"] == 0.0
    assert inet.arch["head_width"] == 416
    assert "no official" in inet.checkpoint_note and "module." in inet.checkpoint_note


def test_bad_arguments_and_inputs_get_clear_errors() -> None:
    cases = [
        ({"gal_blocks": (3,)}, r"outside 0\.\.2"),
        ({"gal_blocks": 2}, "sequence of 0-based block indices"),
        ({"gal_blocks": (2, 2)}, "twice"),
        ({"cam": "yes"}, "cam must be True or False"),
        ({"gal_heads": 7}, "heads do not divide"),
        ({"growth_rate": 5}, "growth_rate must be even"),
        ({"bn_factor": (1, 2)}, "one entry per scale"),
        ({"n_blocks": 0}, "n_blocks must be a positive integer"),
        ({"n_blocks": 4}, "exceeds the 3 scales"),
        ({"kappa": 19}, "kappa=19 exceeds the 18 layers"),
        ({"layers": 0}, "layers must be a positive integer"),
        ({"gal_mlp_ratio": -1}, "gal_mlp_ratio"),
        ({"reduction": 0}, "reduction"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            meta_model("chase_cifar10", **kw)
    with pytest.raises(KeyError, match="chase_cifar10"):
        create_model("chase_cifar1O")
    model = meta_model("chase_cifar10")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32, device="meta"))
