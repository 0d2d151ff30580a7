"""Any timm model as a multi-exit model: splitting, real early stopping, own head, costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zoo_testing import one_torch_thread  # noqa: F401  (fixture)

from eebench.cli import main as cli_main
from eebench.costs import count_costs
from eebench.costs.fvcore_counter import flop_count_analysis
from eebench.zoo import create_model, describe_model
from eebench.zoo.timm_attach import TimmAttachedExits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small inputs keep each model to milliseconds; models built for one size get it as img_size.
MODELS: dict[str, int] = {
    "resnet18": 64,
    "convnext_atto": 64,
    "regnety_002": 64,
    "efficientnet_b0": 64,
    "mobilenetv3_small_100": 64,
    "deit_tiny_patch16_224": 32,
    "vit_small_patch16_224": 32,
    "swin_tiny_patch4_window7_224": 64,
    "mobilevitv2_050": 64,
    # beyond the list: rotary tables passed to every block, attention-bias tokens without a
    # class token, a plain chain of named top-level modules, register tokens + mean pooling
    "eva02_tiny_patch14_224": 28,
    "levit_128s": 64,
    "inception_v3": 75,
    "vit_little_patch16_reg4_gap_256": 32,
    "fastvit_t8": 64,
}
COSTED = ["resnet18", "efficientnet_b0", "swin_tiny_patch4_window7_224", "mobilevitv2_050"]
_BUILT: dict[str, TimmAttachedExits] = {}


def built(name: str) -> TimmAttachedExits:
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = create_model(f"timm/{name}", num_classes=10, input_size=MODELS[name]).eval()  # type: ignore[assignment]
    return _BUILT[name]


def image(model: TimmAttachedExits, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *model.config.input_size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", MODELS)
def test_every_exit_is_a_truncation_and_the_last_is_the_model(name: str) -> None:
    model = built(name)
    assert model.num_exits >= 2 and model.config.arch["own_head"]
    x = image(model)
    with torch.no_grad():
        full = model(x)
        assert [t.shape for t in full] == [torch.Size([2, 10])] * model.num_exits
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))
        # the last exit is the backbone's own head on the same weights: same computation
        assert torch.equal(full[-1], model.backbone(x))


@pytest.mark.parametrize("name", MODELS)
def test_later_units_never_run(name: str) -> None:
    model = built(name)
    units = model.trunk
    ran: list[str] = []
    watched = {u: model.backbone.get_submodule(u) for u in units}
    watched.update((f"post:{p}", model.backbone.get_submodule(p)) for p in model._post)
    handles = [m.register_forward_hook(lambda *a, n=n: ran.append(n)) for n, m in watched.items()]
    try:
        with torch.no_grad():
            model.forward_until(image(model, 1), 0)
            first = list(ran)
            ran.clear()
            model.forward_until(image(model, 1), 1)
    finally:
        for h in handles:
            h.remove()
    assert first == units[: units.index(model.exits[0]) + 1]
    assert ran == units[: units.index(model.exits[1]) + 1]
    assert units[-1] not in first and not any(r.startswith("post:") for r in first)


@pytest.mark.parametrize("name", COSTED)
def test_costs_grow_per_exit_and_end_at_the_backbone_plus_heads(name: str) -> None:
    model = built(name)
    costs = count_costs(model, cross_check=False)
    assert all(a < b for a, b in zip(costs.macs, costs.macs[1:]))
    x = torch.zeros(1, *model.config.input_size)
    head_inputs: list[tuple[nn.Module, torch.Tensor]] = []
    handles = [
        h.register_forward_hook(lambda m, i, o: head_inputs.append((m, i[0]))) for h in model.heads
    ]
    with torch.no_grad():
        model(x)
        for h in handles:
            h.remove()
        plain = flop_count_analysis(model.backbone, x).total()
        heads = sum(flop_count_analysis(m, i).total() for m, i in head_inputs)
    # the last exit pays for the whole backbone, counted as fvcore counts it alone, plus
    # every earlier head; nothing else
    assert costs.macs[-1] == plain + heads
    assert heads < 0.05 * plain
    assert costs.params[-1] == sum(p.numel() for p in model.parameters())


def test_deit_small_costs_its_published_4_61_gmacs_from_the_cli(capsys) -> None:
    assert cli_main(["costs", "timm/deit_small_patch16_224", "--no-check", "--json"]) == 0
    import json

    costs = json.loads(capsys.readouterr().out)
    assert costs["exit_names"] == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert costs["macs"][-1] / 1e9 == pytest.approx(4.61, rel=0.01)
    # every block costs the same, so the exits sit at a quarter, half, ... of the network
    assert costs["macs"][0] / costs["macs"][-1] == pytest.approx(0.26, abs=0.01)


def test_default_exits_and_choosing_them() -> None:
    deit = built("deit_tiny_patch16_224")
    assert deit.exits == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert built("resnet18").exits == ["layer1", "layer2", "layer3", "layer4"]
    assert built("efficientnet_b0").exits == ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]
    vit = create_model("timm/deit_tiny_patch16_224", num_classes=3, input_size=32, exits=[0, 7, 11])
    assert vit.exits == ["blocks.0", "blocks.7", "blocks.11"]
    named = create_model(
        "timm/efficientnet_b0", num_classes=3, input_size=32, exits=["blocks.3", "blocks.5"]
    )
    assert named.exits == ["blocks.3", "blocks.5"] and not named.config.arch["own_head"]
    assert len(named.heads) == 2  # the backbone's head never runs: both exits are ours
    # integers index timm's feature_info: ResNet's 0 is the stem's activation, 1..4 its layers
    res = create_model("timm/resnet10t", num_classes=3, input_size=32, exits=[0, 1, 3, 4])
    assert res.exits == ["act1", "layer1", "layer3", "layer4"] and len(res.heads) == 3
    with pytest.raises(ValueError, match="own_head=True needs the last exit after"):
        create_model("timm/resnet10t", input_size=32, exits=[1, 3], own_head=True)


def test_heads_pool_the_class_token_or_the_patch_tokens() -> None:
    torch.manual_seed(0)
    kw = {"num_classes": 4, "input_size": 32, "exits": [1, 11]}
    tok = create_model("timm/deit_tiny_patch16_224", **kw).eval()
    avg = create_model("timm/deit_tiny_patch16_224", token_pool="avg", **kw).eval()
    avg.load_state_dict(tok.state_dict())
    seen: list[torch.Tensor] = []
    tok.backbone.blocks[1].register_forward_hook(lambda m, i, o: seen.append(o))
    x = image(tok)
    with torch.no_grad():
        logits_tok = tok.forward_until(x, 0)[0]
        logits_avg = avg.forward_until(x, 0)[0]
        head = tok.heads[0]
        h = seen[0]
        assert torch.equal(logits_tok, head.fc(head.norm(h[:, 0])))
        assert torch.allclose(logits_avg, head.fc(head.norm(h[:, 1:].mean(1))), atol=1e-6)
    # the head's norm is a fresh copy of the model's own final norm
    assert isinstance(head.norm, nn.LayerNorm) and head.norm.eps == tok.backbone.norm.eps


def test_own_head_off_and_other_head_kinds() -> None:
    kw = {"num_classes": 5, "input_size": 32, "exits": [3, 4]}
    ours = create_model("timm/resnet10t", own_head=False, head="linear", **kw).eval()
    assert len(ours.heads) == 2 and not ours.config.arch["own_head"]
    conv = create_model("timm/resnet10t", head="conv", **kw).eval()
    with torch.no_grad():
        assert [t.shape for t in conv(torch.randn(2, 3, 32, 32))] == [torch.Size([2, 5])] * 2
    with pytest.raises(ValueError, match="spatial feature maps"):
        create_model("timm/deit_tiny_patch16_224", head="conv", input_size=32)


def test_training_mode_survives_the_structure_check() -> None:
    model = create_model("timm/resnet10t", num_classes=3, input_size=32)
    assert all(m.training for m in model.modules())
    with torch.no_grad():
        assert len(model(torch.randn(2, 3, 32, 32))) == model.num_exits


def test_meta_device_description_for_a_vit() -> None:
    info = describe_model("timm/vit_small_patch16_224", num_classes=10)
    assert info["exits"] == 4 and info["input_size"] == "3x224x224"
    assert 21 < info["params_m"] < 24


def test_bad_requests_fail_with_one_clear_line() -> None:
    cases = [
        ({"exits": [2, 9]}, "out of range"),
        ({"exits": [3, 2]}, "strictly increasing"),
        ({"exits": ["nope"]}, "not a unit the network can stop after"),
        ({"pretrained": True}, "pretrained_file=PATH"),
        ({"head": "mlp"}, "head must be one of"),
        ({"token_pool": "cls"}, "token_pool must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            create_model("timm/resnet10t", input_size=32, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="timm has no model"):
        create_model("timm/resnet_does_not_exist")
    with pytest.raises(ValueError, match="no class token"):
        create_model(
            "timm/vit_tiny_patch16_224",
            input_size=32,
            class_token=False,
            global_pool="avg",
            token_pool="token",
        )


def test_models_that_cannot_be_split_say_what_would_work() -> None:
    # PiT's stages hand (tokens, class tokens) pairs to each other: no tensor a head could read
    with pytest.raises(ValueError, match="models that work include resnet18") as err:
        create_model("timm/pit_ti_224", input_size=32)
    assert "\n" not in str(err.value)
    # CaiT's class-attention blocks run outside the trunk: its own head cannot end an exit
    with pytest.raises(ValueError, match="own_head=False"):
        create_model("timm/cait_xxs24_224", input_size=32)
    cait = create_model("timm/cait_xxs24_224", input_size=32, own_head=False, num_classes=3)
    with torch.no_grad():
        assert len(cait(torch.randn(1, 3, 32, 32))) == 4


def test_pretrained_file_loads_local_timm_weights(tmp_path) -> None:
    import timm

    torch.manual_seed(3)
    source = timm.create_model("resnet10t", num_classes=1000)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model = create_model("timm/resnet10t", num_classes=10, input_size=32, pretrained_file=str(path))
    got = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):  # a 1000-class classifier cannot serve 10 classes
            assert torch.equal(got[key], value), key
    assert got["fc.weight"].shape == (10, 512)
    with pytest.raises(ValueError, match="does not exist"):
        create_model("timm/resnet10t", pretrained_file=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("name", ["resnet18", "eva02_tiny_patch14_224"])
def test_a_keep_mask_sent_after_an_exit_drops_those_rows_from_later_exits(name: str) -> None:
    model = built(name)
    x = image(model, 3)
    keep = torch.tensor([True, False, True])
    with torch.no_grad():
        full = model(x)
        gen = model.iter_exits(x)
        k, first = next(gen)
        assert k == 0 and torch.equal(first, full[0])
        k, second = gen.send(keep)
        rest = [second] + [logits for _, logits in gen]
    assert k == 1 and len(rest) == model.num_exits - 1
    for got, want in zip(rest, full[1:]):
        assert got.shape[0] == 2
        # two rows instead of three: the same per-sample arithmetic, up to batched kernels
        assert torch.allclose(got, want[keep], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bool keep-mask"):
        gen = model.iter_exits(x)
        next(gen)
        gen.send(torch.tensor([1, 0, 1]))
