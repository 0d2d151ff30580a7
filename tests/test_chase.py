"""CHASE: the issue's costs, the Figure 5 ablations, strict checkpoints, real early exit.

CHASE has no official code or checkpoint, so there is no key fixture. Instead these
tests check three things. The ImageNet model's last two exits cost what the issue
gives (2.6 and 2.15 GMACs under fvcore, each within 10%). The ablations are the same
class with other ``cam`` / ``gal_blocks`` values and are priced in the expected
order. And a state_dict saved from one model loads strictly into a fresh one, while
a wrong one fails and names the key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import one_torch_thread  # noqa: F401  (module fixture)

import eebench.zoo.chase  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import KeepAlive, flop_count_analysis
from eebench.zoo import CheckpointMismatchError, TruncatedModel, create_model, list_models
from eebench.zoo.chase import CHASE

FAMILIES = {"chase_imagenet": 1000, "chase_cifar10": 10, "chase_cifar100": 100}
VARIANTS = ("", "_nocam", "_nogal", "_gal2")
ALL = [f + v for f in FAMILIES for v in VARIANTS]
IMAGENET = [f"chase_imagenet{v}" for v in VARIANTS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta(name: str, **kw) -> CHASE:
    with torch.device("meta"):
        return create_model(name, **kw)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def imagenet_costs() -> dict[str, ExitCosts]:
    """Per-exit costs at 224x224 of the base model and its three ablations, counted once."""
    out = {}
    for name in IMAGENET:
        torch.manual_seed(0)
        out[name] = count_costs(create_model(name), cross_check=False)
    return out


def test_every_name_is_registered_with_five_exits() -> None:
    assert list_models("chase_*") == sorted(ALL)
    want_gal = {"": [4], "_nocam": [4], "_nogal": [], "_gal2": [3, 4]}
    for family, classes in FAMILIES.items():
        for variant in VARIANTS:
            name = family + variant
            model = _meta(name)
            assert type(model) is CHASE
            assert model.exits == [f"block{b}" for b in range(1, 6)]
            cfg = model.config
            assert cfg.name == name and cfg.cost_convention == "fvcore"
            assert cfg.num_classes == classes
            size = 224 if family == "chase_imagenet" else 32
            assert cfg.input_size == (3, size, size)
            assert cfg.arch["cam"] is (variant != "_nocam")
            assert cfg.arch["gal_blocks"] == want_gal[variant]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ablations_are_the_same_class_with_other_cam_and_gal_arguments(family: str) -> None:
    base = _meta(family)
    keys = set(base.state_dict())
    for variant, changed in [
        ("_nocam", {"cam"}),
        ("_nogal", {"gal_blocks"}),
        ("_gal2", {"gal_blocks"}),
    ]:
        other = _meta(family + variant)
        arch_a, arch_b = base.config.arch, other.config.arch
        assert {k for k in arch_a if arch_a[k] != arch_b[k]} == changed
        other_keys = set(other.state_dict())
        if variant == "_nocam":
            assert other_keys == {k for k in keys if ".cam." not in k}
            assert len(keys - other_keys) > 100  # one CAM per scale per layer
        elif variant == "_nogal":
            assert keys - other_keys == {k for k in keys if k.startswith("blocks.4.gal.")}
            assert not other_keys - keys
        else:
            assert other_keys - keys == {k for k in other_keys if k.startswith("blocks.3.gal.")}
            assert not keys - other_keys
    # The ablation switches are plain constructor arguments: an override gives the same model.
    same = _meta(family, cam=False)
    assert list(same.state_dict()) == list(_meta(family + "_nocam").state_dict())


def test_gal2_counts_its_blocks_from_the_end() -> None:
    assert _meta("chase_cifar10_gal2", n_blocks=3).config.arch["gal_blocks"] == [1, 2]
    assert _meta("chase_cifar10", n_blocks=3).config.arch["gal_blocks"] == [2]
    assert _meta("chase_cifar10", gal_blocks=(0, 2)).config.arch["gal_blocks"] == [0, 2]


def test_attention_only_gal_has_no_mlp_and_runs() -> None:
    torch.manual_seed(0)
    model = create_model("chase_cifar10", gal_mlp_ratio=0).eval()
    keys = set(model.state_dict())
    assert "blocks.4.gal.qkv.weight" in keys and not any(".gal.mlp." in k for k in keys)
    assert {k for k in _meta("chase_cifar10").state_dict() if k not in keys} == {
        k for k in _meta("chase_cifar10").state_dict() if ".gal.mlp." in k
    }
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape) for t in out] == [(1, 10)] * 5


def test_imagenet_last_exits_cost_what_the_issue_gives(
    imagenet_costs: dict[str, ExitCosts],
) -> None:
    costs = imagenet_costs["chase_imagenet"]
    assert costs.convention == "fvcore" and costs.input_size == (3, 224, 224)
    assert costs.macs[-1] == pytest.approx(2.6e9, rel=0.10)
    assert costs.macs[-2] == pytest.approx(2.15e9, rel=0.10)
    # the numbers the module docstring reports (so the docstring cannot drift)
    gmacs = [round(m / 1e9, 3) for m in costs.macs]
    assert gmacs == [0.654, 1.341, 1.961, 2.165, 2.626]
    assert all(a < b for a, b in zip(costs.macs, costs.macs[1:]))
    assert all(a < b for a, b in zip(costs.params, costs.params[1:]))


def test_ablation_costs_are_ordered(imagenet_costs: dict[str, ExitCosts]) -> None:
    base = imagenet_costs["chase_imagenet"]
    nocam = imagenet_costs["chase_imagenet_nocam"]
    nogal = imagenet_costs["chase_imagenet_nogal"]
    gal2 = imagenet_costs["chase_imagenet_gal2"]
    for what in ("macs", "params"):
        b, c, n, g = (getattr(x, what) for x in (base, nocam, nogal, gal2))
        assert all(x < y for x, y in zip(c, b))  # CAM runs in every layer of every block
        assert n[:4] == b[:4] and n[4] < b[4]  # GAL only in the last block
        assert g[:3] == b[:3] and g[3] > b[3] and g[4] > b[4]  # and GAL in block 3 too
        assert n[4] < b[4] < g[4]


@pytest.mark.parametrize("name", ["chase_cifar10", "chase_cifar100_gal2"])
def test_forward_until_equals_the_prefix_of_forward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert [tuple(t.shape) for t in full] == [(2, model.config.num_classes)] * 5
        assert not torch.equal(full[0], full[-1])
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_scales_are_dropped_between_blocks() -> None:
    def sizes(name: str, side: int) -> list[list[int]]:
        model = _meta(name)
        seen: list[list[int]] = []
        for block in model.blocks:
            block.register_forward_hook(lambda m, i, o: seen.append([t.shape[-1] for t in o]))
        model(torch.zeros(1, 3, side, side, device="meta"))
        return seen

    assert sizes("chase_imagenet", 224) == [[56, 28, 14, 7], [28, 14, 7], [14, 7], [7], [7]]
    assert sizes("chase_cifar10", 32) == [[32, 16, 8], [16, 8], [8], [8], [8]]


def test_stopping_at_exit_k_runs_no_module_of_later_blocks() -> None:
    model = create_model("chase_cifar10_gal2").eval()
    owner: dict[nn.Module, str] = {}
    for b, (block, head) in enumerate(zip(model.blocks, model.heads)):
        owner.update({m: f"block{b}" for m in block.modules() if not isinstance(m, nn.ModuleList)})
        owner.update({m: f"head{b}" for m in head.modules() if not isinstance(m, nn.ModuleList)})
    ran: list[tuple[str, int]] = []
    for m, tag in owner.items():
        m.register_forward_hook(lambda mod, i, o, tag=tag: ran.append((tag, id(mod))))
    x = torch.randn(1, 3, 32, 32)
    for k in range(model.num_exits):
        ran.clear()
        with torch.no_grad():
            model.forward_until(x, k)
        expected = {f"block{b}" for b in range(k + 1)} | {f"head{b}" for b in range(k + 1)}
        assert {i for _, i in ran} == {id(m) for m, tag in owner.items() if tag in expected}
        assert len(ran) == len(set(ran))
        tops = [t for t, i in ran if i in {id(m) for m in [*model.blocks, *model.heads]}]
        assert tops == [t for b in range(k + 1) for t in (f"block{b}", f"head{b}")]


def test_cumulative_cost_is_the_cost_of_the_modules_up_to_the_exit() -> None:
    # count_costs prices exit k on a truncated run; an independent per-module breakdown of
    # the full run must give the same number when summed over stem, blocks and heads 0..k.
    model = create_model("chase_cifar10_gal2")
    costs = count_costs(model, cross_check=False)
    model.eval()
    with torch.no_grad():
        by_module = flop_count_analysis(
            KeepAlive(TruncatedModel(model, model.num_exits - 1)), torch.zeros(1, 3, 32, 32)
        ).by_module()
    pre = "inner.model."
    stem = by_module[pre + "stem"] + by_module[pre + "stem_scales"]
    assert stem > 0
    for k in range(model.num_exits):
        parts = [by_module[f"{pre}blocks.{b}"] + by_module[f"{pre}heads.{b}"] for b in range(k + 1)]
        assert costs.macs[k] == stem + sum(parts)
    assert costs.macs[-1] == by_module[""]
    # The last exit's run of GAL is counted: attention matmuls and all its linear layers.
    gal = by_module[pre + "blocks.4.gal"]
    c = model.blocks[4].gal.proj.in_features
    tokens = 8 * 8
    expected = tokens * (3 * c * c + c * c + 2 * 4 * c * c) + 2 * tokens * tokens * c + 9 * c * 64
    # plus its two affine layer norms: fvcore's norm_flop_counter prices them 5 per element
    assert gal == expected + 2 * 5 * tokens * c


def test_gradients_reach_every_parameter_the_last_exit_uses() -> None:
    torch.manual_seed(0)
    model = create_model("chase_cifar10").train()
    x = torch.randn(2, 3, 32, 32)
    logits = model.forward_until(x, model.num_exits - 1)[-1]
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    unused = {
        n
        for n, _ in model.named_parameters()
        if n.split(".")[:2] in [["heads", str(b)] for b in range(4)]
    }
    assert unused  # the earlier heads
    for name, p in model.named_parameters():
        if name in unused:
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
    renamed = "blocks.4.gal.qkv.weight"
    reshaped = "heads.2.linear.weight"
    sd["blocks.4.gal.qkv_renamed.weight"] = sd.pop(renamed)
    sd[reshaped] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("chase_cifar10", checkpoint=str(path))
    text = str(err.value)
    assert renamed in text and "qkv_renamed" in text and reshaped in text
    # An ablation's checkpoint does not load into the base model: the CAM keys are missing.
    nocam = tmp_path / "nocam.pth"
    torch.save(create_model("chase_cifar10_nocam").state_dict(), nocam)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys.*\.cam\.fc1"):
        create_model("chase_cifar10", checkpoint=str(nocam))


def test_num_classes_override_changes_only_the_linear_layers() -> None:
    a = {k: v.shape for k, v in _meta("chase_cifar100").state_dict().items()}
    b = {k: v.shape for k, v in _meta("chase_cifar100", num_classes=7).state_dict().items()}
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {
        f"heads.{h}.linear.{p}" for h in range(5) for p in ("weight", "bias")
    }
    assert b["heads.4.linear.weight"] == (7, 128)


def test_configs() -> None:
    c10, c100, inet = (
        _meta(n).config for n in ("chase_cifar10", "chase_cifar100", "chase_imagenet")
    )
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c100.mean == (0.5071, 0.4865, 0.4409)
    assert c10.crop_pct == c100.crop_pct == 1.0 and inet.crop_pct == 0.875
    assert inet.mean == (0.485, 0.456, 0.406) and inet.std == (0.229, 0.224, 0.225)
    assert inet.arch["channels"] == 40 and inet.arch["growth_rate"] == 24
    assert inet.arch["gal_mlp_ratio"] == 4.0 and inet.arch["reduction"] == 0.5
    assert "no official" in inet.checkpoint_note and "module." in inet.checkpoint_note


def test_bad_arguments_and_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        _meta("chase_cifar10", gal_blocks=(5,))
    with pytest.raises(ValueError, match="sequence of block indices"):
        _meta("chase_cifar10", gal_blocks=4)
    with pytest.raises(ValueError, match="twice"):
        _meta("chase_cifar10", gal_blocks=(4, 4))
    with pytest.raises(ValueError, match="cam must be True or False"):
        _meta("chase_cifar10", cam="yes")
    with pytest.raises(ValueError, match="heads do not divide"):
        _meta("chase_cifar10", gal_heads=7)
    with pytest.raises(ValueError, match="growth_rate must be even"):
        _meta("chase_cifar10", growth_rate=5)
    with pytest.raises(ValueError, match="one entry per scale"):
        _meta("chase_cifar10", bn_factor=(1, 2))
    with pytest.raises(ValueError, match="n_blocks must be a positive integer"):
        _meta("chase_cifar10", n_blocks=0)
    with pytest.raises(ValueError, match="gal_mlp_ratio"):
        _meta("chase_cifar10", gal_mlp_ratio=-1)
    with pytest.raises(ValueError, match="reduction"):
        _meta("chase_cifar10", reduction=0)
    with pytest.raises(KeyError, match="chase_cifar10"):
        create_model("chase_cifar1O")
    model = _meta("chase_cifar10")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32, device="meta"))
