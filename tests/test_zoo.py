"""Registry and strict checkpoint loading (the timm adapter itself: test_timm_attach.py)."""

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


def test_describe_model_uses_meta_device() -> None:
    info = describe_model("timm/resnet18", num_classes=10)
    assert info["exits"] == 4 and info["num_classes"] == 10
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
