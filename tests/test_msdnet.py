"""MSDNet: official keys/shapes and logits, strict checkpoint loading, real early exit.

The fixtures come from the official model class (kalviny/MSDNet-PyTorch) built
outside this repository: msdnet_<config>_keys.json hold its state_dict keys and
shapes, msdnet_official_logits.json its logits for the weights that
``seeded_state`` makes from a fixture's key list and a seeded input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo_testing import (  # noqa: F401
    assert_bad_keep_masks_refused,
    assert_compaction,
    assert_keeping_everyone_changes_nothing,
    meta_model,
    one_torch_thread,
    seeded_state,
)

from eebench.zoo import CheckpointMismatchError, create_model
from eebench.zoo.msdnet import MSDNet

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {
    "msdnet_cifar100_budget": "cifar100_budget",
    "msdnet_cifar100_anytime": "cifar100_anytime",
    "msdnet_imagenet_step4": "imagenet_step4",
    "msdnet_imagenet_step6": "imagenet_step6",
    "msdnet_imagenet_step7": "imagenet_step7",
}
CIFAR = {
    "msdnet_cifar100_budget": (100, 5),
    "msdnet_cifar100_anytime": (100, 7),
    "msdnet_cifar10_budget": (10, 5),
    "msdnet_cifar10_anytime": (10, 7),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _official(fixture: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"msdnet_{fixture}_keys.json").read_text())["keys"]






@pytest.mark.parametrize(("name", "fixture"), CASES.items())
def test_state_dict_equals_official_keys_and_shapes(name: str, fixture: str) -> None:
    ours = {k: list(v.shape) for k, v in meta_model(name).state_dict().items()}
    official = _official(fixture)
    assert set(ours) ^ set(official) == set()
    assert list(ours) == list(official)  # same order too
    assert ours == official


def test_fixtures_record_their_source() -> None:
    for fixture in CASES.values():
        data = json.loads((FIXTURES / f"msdnet_{fixture}_keys.json").read_text())
        assert "kalviny/MSDNet-PyTorch" in data["source"] and "commit" in data["source"]
        assert data["args"]["prune"] == "max" and data["args"]["reduction"] == 0.5


def test_num_classes_override_changes_only_the_linear_layers() -> None:
    ours = {
        k: list(v.shape)
        for k, v in meta_model("msdnet_cifar100_budget", num_classes=10).state_dict().items()
    }
    official = _official("cifar100_budget")
    diff = {k for k in ours if ours[k] != official[k]}
    assert diff == {f"classifier.{b}.linear.{p}" for b in range(5) for p in ("weight", "bias")}
    assert ours["classifier.4.linear.weight"] == [10, 128]
    cifar10 = {k: list(v.shape) for k, v in meta_model("msdnet_cifar10_budget").state_dict().items()}
    assert cifar10 == ours


def _fake_official_checkpoint(path: Path, fixture: str) -> dict[str, torch.Tensor]:
    sd = seeded_state(_official(fixture), seed=3)
    sd = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    # The official main.py saves {"epoch", "arch", "state_dict", ...} from a DataParallel.
    payload = {
        "epoch": 300,
        "arch": "msdnet",
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
    }
    torch.save(payload, path)
    return sd


@pytest.mark.parametrize("name", ["msdnet_cifar100_budget", "msdnet_cifar100_anytime"])
def test_strict_load_of_an_official_layout_checkpoint(tmp_path: Path, name: str) -> None:
    path = tmp_path / "model_best.pth.tar"
    sd = _fake_official_checkpoint(path, CASES[name])
    model = create_model(name, checkpoint=str(path))
    got = model.state_dict()
    assert got.keys() == sd.keys()
    for k in ("blocks.0.0.layers.0.net.0.weight", "classifier.4.linear.weight"):
        assert torch.equal(got[k], sd[k])
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert model.blocks[0][0].layers[0].net[1].num_batches_tracked.item() == 7


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    sd = _fake_official_checkpoint(path, "cifar100_budget")
    dropped = "blocks.1.0.layers.0.conv_normal.net.0.weight"
    assert dropped in sd
    del sd[dropped]
    sd["classifier.0.linear.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("msdnet_cifar100_budget", checkpoint=str(path))
    text = str(err.value)
    assert dropped in text and "classifier.0.linear.weight" in text


def _official_logits() -> dict:
    return json.loads((FIXTURES / "msdnet_official_logits.json").read_text())


@pytest.mark.parametrize(
    "name", ["msdnet_cifar100_budget", "msdnet_cifar100_anytime", "msdnet_imagenet_step4"]
)
def test_logits_equal_the_official_model(name: str) -> None:
    data = _official_logits()
    case = data["models"][name]
    model = create_model(name).eval()
    model.load_state_dict(seeded_state(_official(CASES[name]), seed=data["weight_seed"]))
    g = torch.Generator().manual_seed(data["input_seed"])
    x = torch.randn(case["input_shape"], generator=g)
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(case["exits"]) == model.num_exits
    for got, want in zip(out, case["exits"]):
        assert got.shape == tuple(want["shape"])
        head = got[:, : len(want["head"][0])]
        torch.testing.assert_close(head, torch.tensor(want["head"]), rtol=1e-4, atol=1e-4)
        sums = got.sum(1)
        torch.testing.assert_close(sums, torch.tensor(want["row_sum"]), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sorted(CIFAR))
def test_iter_exits_prefix_equals_forward_and_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    classes, n_exits = CIFAR[name]
    assert model.exits == [f"block{b + 1}" for b in range(n_exits)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert len(full) == model.num_exits == n_exits
        assert all(t.shape == (2, classes) for t in full)
        assert not torch.equal(full[0], full[-1])
        seen = []
        for k, logits in model.iter_exits(x):
            seen.append(logits)
            assert len(seen) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(seen, full))
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_num_classes_override_changes_the_output_width() -> None:
    model = create_model("msdnet_cifar100_anytime", num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape) for t in out] == [(1, 7)] * 7
    assert model.config.num_classes == 7


@pytest.mark.parametrize("name", ["msdnet_cifar100_budget", "msdnet_cifar10_anytime"])
def test_stopping_at_exit_k_runs_no_module_of_later_blocks(name: str) -> None:
    model = create_model(name).eval()
    owner: dict[nn.Module, str] = {}
    for b, (block, head) in enumerate(zip(model.blocks, model.classifier)):
        # ModuleLists are containers that are never called themselves
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
        # every module of blocks and heads 0..k ran, and not one module of a later block or head
        assert {i for _, i in ran} == {id(m) for m, tag in owner.items() if tag in expected}
        assert len(ran) == len(set(ran))  # each ran once
        # forward hooks fire on return: block 0, head 0, block 1, head 1, ...
        tops = [t for t, i in ran if i in {id(m) for m in [*model.blocks, *model.classifier]}]
        assert tops == [t for b in range(k + 1) for t in (f"block{b}", f"head{b}")]


def test_configs_follow_the_official_data_pipeline() -> None:
    c100 = meta_model("msdnet_cifar100_budget").config
    c10 = meta_model("msdnet_cifar10_anytime").config
    inet = meta_model("msdnet_imagenet_step6").config
    assert c100.input_size == c10.input_size == (3, 32, 32)
    assert c100.crop_pct == c10.crop_pct == 1.0
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert c10.mean == (0.4914, 0.4824, 0.4467) and c10.std == (0.2471, 0.2435, 0.2616)
    assert inet.input_size == (3, 224, 224) and inet.crop_pct == 0.875
    assert inet.mean == (0.485, 0.456, 0.406) and inet.std == (0.229, 0.224, 0.225)
    assert c100.arch["step_mode"] == "lin_grow" and c10.arch["n_blocks"] == 7
    assert inet.arch["step"] == inet.arch["base"] == 6 and inet.arch["gr_factor"] == [1, 2, 4, 4]
    assert "module." in c100.checkpoint_note
    assert c100.name == "msdnet_cifar100_budget"


def test_bad_arguments_and_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="step_mode"):
        create_model("msdnet_cifar100_budget", step_mode="linear")
    with pytest.raises(ValueError, match="prune"):
        create_model("msdnet_cifar100_budget", prune="none")
    with pytest.raises(ValueError, match="one entry per scale"):
        create_model("msdnet_cifar100_budget", bn_factor=(1, 2))
    with pytest.raises(ValueError, match="n_blocks"):
        create_model("msdnet_cifar100_budget", n_blocks=0)
    model = create_model("msdnet_cifar100_budget").eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
    with torch.no_grad(), pytest.raises(ValueError, match="config.input_size"):
        model(torch.randn(1, 3, 64, 64))


def test_prune_min_matches_the_official_layout_and_runs() -> None:
    # Not a published configuration, but the official code supports it; keep it faithful.
    model = MSDNet(
        n_blocks=3,
        step_mode="even",
        step=2,
        base=2,
        channels=8,
        growth_rate=4,
        gr_factor=(1, 2, 4),
        bn_factor=(1, 2, 4),
        num_classes=10,
        imagenet=False,
        prune="min",
    ).eval()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours.items()) == list(_official("prune_min_small").items())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape) for t in out] == [(1, 10)] * 3


# Real early exit with a batch (compaction) -----------------------------------------------------

# Each configuration family at a fraction of its width: the carried state has the same layout.
SMALL = dict(channels=8, growth_rate=4, num_classes=5)
COMPACTION = [
    ("msdnet_cifar100_anytime", SMALL, 32),
    ("msdnet_cifar10_budget", SMALL, 32),
    ("msdnet_imagenet_step4", SMALL, 224),
    ("msdnet_cifar10_budget", dict(SMALL, prune="min"), 32),  # transitions at fixed depths
]


def exit_patterns(n_exits: int) -> list[list[int]]:
    """Per-sample exits for a batch of 7 (needs at least 5 exits)."""
    last = n_exits - 1
    return [
        # nobody leaves at exit 1, three leave together at exit 2, one sample runs on alone
        [last, 0, 2, last - 1, 2, 2, 0],
        # everyone has left before the last exit, so the run stops there
        [0, last - 1, 1, 1, last // 2, last - 1, last // 2],
    ]


@pytest.mark.parametrize(
    ("name", "kw", "size"),
    COMPACTION,
    ids=["cifar-anytime", "cifar-budget", "imagenet", "prune-min"],
)
def test_samples_that_exit_are_dropped_and_the_rest_match_the_full_run(
    name: str, kw: dict, size: int
) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    x = torch.randn(7, 3, size, size)
    for exit_at in exit_patterns(model.num_exits):
        assert_compaction(model, x, exit_at)


def test_keep_masks_are_checked_and_keeping_everyone_changes_nothing() -> None:
    torch.manual_seed(0)
    model = create_model("msdnet_cifar10_budget", **SMALL).eval()
    x = torch.randn(3, 3, 32, 32)
    assert_keeping_everyone_changes_nothing(model, x)
    assert_bad_keep_masks_refused(model, x)
