"""Registry, the timm attach adapter and strict checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from eebench.zoo import (
    CheckpointMismatchError,
    UnknownModelError,
    create_model,
    describe_model,
    list_models,
)
from eebench.zoo.checkpoint import state_dict_sha256, unwrap_state_dict


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError) as err:
        create_model("msdnet_cifar100_budjet")
    assert "msdnet_cifar100_budget" in str(err.value)


def test_list_models_pattern_and_family() -> None:
    names = list_models("msdnet_cifar*")
    assert "msdnet_cifar100_budget" in names and all(n.startswith("msdnet_cifar") for n in names)
    timm_names = list_models("timm/resnet1*")
    assert "timm/resnet18" in timm_names
    assert all(n.startswith("timm/resnet1") for n in timm_names)


def test_timm_attach_exits_and_truncation() -> None:
    torch.manual_seed(0)
    model = create_model("timm/resnet10t", num_classes=7, input_size=32, exits=[1, 3, 4]).eval()
    assert model.exits == ["stage1", "stage3", "stage4"]
    assert model.config.input_size == (3, 32, 32)
    assert model.config.name == "timm/resnet10t"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert [t.shape for t in full] == [torch.Size([2, 7])] * 3
        for k in range(3):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            for a, b in zip(part, full):
                assert torch.equal(a, b)


def test_timm_attach_stops_after_the_stage_of_the_exit() -> None:
    model = create_model("timm/resnet10t", num_classes=3, input_size=32, exits=[2, 3, 4]).eval()
    ran: list[str] = []
    for name, module in model.backbone.items():
        module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    with torch.no_grad():
        model.forward_until(torch.randn(1, 3, 32, 32), 0)
    assert "layer2" in ran and "layer3" not in ran and "layer4" not in ran


def test_timm_attach_bad_exits_are_explained() -> None:
    with pytest.raises(ValueError, match="out of range"):
        create_model("timm/resnet10t", exits=[2, 9])
    with pytest.raises(ValueError, match="strictly increasing"):
        create_model("timm/resnet10t", exits=[3, 2])
    with pytest.raises(ValueError, match="timm has no model"):
        create_model("timm/resnet_does_not_exist")


def test_describe_model_uses_meta_device() -> None:
    info = describe_model("timm/resnet18", num_classes=10)
    assert info["exits"] == 3 and info["num_classes"] == 10
    assert info["params_m"] > 10


def _tiny() -> torch.nn.Module:
    return create_model("timm/resnet10t", num_classes=4, input_size=32, exits=[3, 4])


def test_checkpoint_strict_load_unwraps_containers(tmp_path) -> None:
    src = _tiny()
    sd = {f"module.{k}": v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    dst = create_model("timm/resnet10t", num_classes=4, input_size=32, exits=[3, 4], checkpoint=str(path))
    assert state_dict_sha256(dst) == state_dict_sha256(src)


def test_checkpoint_mismatch_names_keys_and_shapes(tmp_path) -> None:
    sd = dict(_tiny().state_dict())
    dropped = next(iter(sd))
    del sd[dropped]
    sd["heads.0.fc.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("timm/resnet10t", num_classes=4, input_size=32, exits=[3, 4], checkpoint=str(path))
    text = str(err.value)
    assert dropped in text and "extra.weight" in text and "heads.0.fc.weight" in text


def test_unwrap_rejects_non_state_dict() -> None:
    with pytest.raises(CheckpointMismatchError, match="no tensors"):
        unwrap_state_dict({"epoch": 1, "arch": "x"})


def test_weights_hash_changes_with_one_value() -> None:
    a = _tiny()
    h = state_dict_sha256(a)
    with torch.no_grad():
        next(a.parameters()).view(-1)[0] += 1
    assert state_dict_sha256(a) != h
