"""MSDNet: official key/shape fixtures, strict checkpoint loading, real early exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eebench.zoo import CheckpointMismatchError, create_model

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {
    "msdnet_cifar100_budget": "cifar100_budget",
    "msdnet_cifar100_anytime": "cifar100_anytime",
    "msdnet_imagenet_step4": "imagenet_step4",
    "msdnet_imagenet_step6": "imagenet_step6",
    "msdnet_imagenet_step7": "imagenet_step7",
}


def _official(fixture: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"msdnet_{fixture}_keys.json").read_text())["keys"]


def _meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize(("name", "fixture"), CASES.items())
def test_state_dict_equals_official_keys_and_shapes(name: str, fixture: str) -> None:
    ours = {k: list(v.shape) for k, v in _meta(name).state_dict().items()}
    official = _official(fixture)
    assert list(ours) == list(official)  # same keys, same order
    assert ours == official


def test_num_classes_override_changes_only_the_linear_layers() -> None:
    ours = {k: list(v.shape) for k, v in _meta("msdnet_cifar100_budget", num_classes=10).state_dict().items()}
    official = _official("cifar100_budget")
    diff = {k for k in ours if ours[k] != official[k]}
    assert diff and all(".linear." in k for k in diff)
    assert {k: v for k, v in _meta("msdnet_cifar10_budget").state_dict().items()}.keys() == ours.keys()


def _fake_official_checkpoint(path: Path, fixture: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in _official(fixture).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        else:
            sd[k] = torch.randn(shape, generator=g)
    torch.save({"epoch": 300, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    return sd


def test_strict_load_of_an_official_layout_checkpoint(tmp_path) -> None:
    path = tmp_path / "model_best.pth.tar"
    sd = _fake_official_checkpoint(path, "cifar100_budget")
    model = create_model("msdnet_cifar100_budget", checkpoint=str(path))
    got = model.state_dict()
    for k in ("blocks.0.0.layers.0.net.0.weight", "classifier.4.linear.weight"):
        assert torch.equal(got[k], sd[k])


def test_mismatched_checkpoint_names_the_keys(tmp_path) -> None:
    path = tmp_path / "ckpt.pth"
    sd = _fake_official_checkpoint(path, "cifar100_budget")
    dropped = "blocks.1.0.layers.0.conv_normal.net.0.weight"
    assert dropped in sd
    del sd[dropped]
    sd["classifier.0.linear.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("msdnet_cifar100_budget", checkpoint=str(path))
    assert dropped in str(err.value) and "classifier.0.linear.weight" in str(err.value)


@pytest.mark.parametrize("name", ["msdnet_cifar100_budget", "msdnet_cifar10_anytime"])
def test_iter_exits_prefix_equals_forward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert len(full) == model.num_exits == len(model.exits)
        assert all(t.shape == (2, model.config.num_classes) for t in full)
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_stopping_at_exit_k_runs_no_later_block() -> None:
    model = create_model("msdnet_cifar100_budget").eval()
    ran: set[int] = set()
    for b, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, i, o, b=b: ran.add(b))
    for b, head in enumerate(model.classifier):
        head.register_forward_hook(lambda m, i, o, b=b: ran.add(100 + b))
    with torch.no_grad():
        model.forward_until(torch.randn(1, 3, 32, 32), 1)
    assert ran == {0, 1, 100, 101}


def test_imagenet_forward_shapes() -> None:
    model = create_model("msdnet_imagenet_step4").eval()
    assert model.config.input_size == (3, 224, 224)
    with torch.no_grad():
        out = model.forward_until(torch.randn(1, 3, 224, 224), 0)
    assert out[0].shape == (1, 1000)
