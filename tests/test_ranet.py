"""RANet: official keys/shapes, logits and op_counter costs; strict loading; real early exit.

The fixtures come from the official model class (yangle15/RANet-pytorch,
models/RANet.py) built outside this repository: ranet_<config>_keys.json
hold its state_dict keys and shapes (ranet_cifar10_readme_keys.json for the
README's CIFAR command, which exercises the 'lg' step mode and three
sub-networks), ranet_official_logits.json its logits for the weights that
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

import eebench.zoo.ranet  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.msdnet_counter import module_ops
from eebench.zoo import CheckpointMismatchError, create_model
from eebench.zoo.ranet import RANet

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["ranet_imagenet", "ranet_cifar10", "ranet_cifar100"]
COMMIT = "be0f25a2286160bc612181507cb44a3ff2cd0e46"

# Per-exit cumulative MACs and parameters printed by the official op_counter.py
# (measure_model(model, H, W); RANet's copy of MSDNet's counter) on the official
# RANet(args) of yangle15/RANet-pytorch commit be0f25a, args = args.py defaults plus
# the flags of train_imagenet.sh (224x224) / train_cifar.sh (32x32; --data cifar100
# for CIFAR-100), run on the CPU with a zero image of batch 1.
OFFICIAL_COSTS = {
    "ranet_imagenet": (
        [168066600, 520465424, 731890809, 903794197,
         1052251864, 1118803728, 1589013903, 1680979979],
        [8090920, 33314832, 42982814, 58901892, 63997294, 70852502, 78532931, 87972617],
    ),
    "ranet_cifar10": (
        [15814410, 31283220, 44655390, 50358312, 60654578, 63647996, 90173958, 94904592],
        [470442, 1073780, 1476756, 1868414, 2165612, 2453494, 2871636, 3261830],
    ),
    "ranet_cifar100": (
        [15826020, 31306440, 44690220, 50404752, 60712628, 63717656, 90255228, 94997472],
        [482052, 1097000, 1511586, 1914854, 2223662, 2523154, 2952906, 3354710],
    ),
}  # fmt: skip
EXITS = [
    "subnet1_block1",
    "subnet1_block2",
    "subnet2_block3",
    "subnet2_block4",
    "subnet3_block5",
    "subnet3_block6",
    "subnet4_block7",
    "subnet4_block8",
]
README_CIFAR = dict(step=2, step_mode="lg", gr_factor=(4, 2, 1), bn_factor=(4, 2, 1))
README_CIFAR["scale_list"] = (1, 2, 3)
# The ImageNet layout at a fraction of its width, for fast numeric tests at 224x224.
TINY_IMAGENET = dict(channels=2, growth_rate=4, num_classes=5)
# The CIFAR layouts at a fraction of their width, for the same reason.
TINY_CIFAR = dict(channels=4, growth_rate=4, num_classes=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_keys.json").read_text())


def _official(name: str) -> dict[str, list[int]]:
    return _fixture(name)["keys"]




def _shapes(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]




# (a) keys and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_official_keys_and_shapes_in_order(name: str) -> None:
    ours = _shapes(meta_model(name))
    official = list(_official(name).items())
    assert {k for k, _ in ours} ^ {k for k, _ in official} == set()
    assert ours == official  # same keys, shapes and order


def test_readme_cifar_command_matches_the_official_layout() -> None:
    # The README's CIFAR command ('lg' steps, three sub-networks) is one override away.
    model = meta_model("ranet_cifar10", **README_CIFAR)
    assert _shapes(model) == list(_official("ranet_cifar10_readme").items())
    assert model.exits == EXITS[:6]


def test_fixtures_record_their_source_and_script() -> None:
    for name in NAMES:
        data = _fixture(name)
        assert f"yangle15/RANet-pytorch commit {COMMIT}" in data["source"]
        script = "train_imagenet.sh" if name == "ranet_imagenet" else "train_cifar.sh"
        assert script in data["source"]
        assert data["args"]["step"] == (8 if name == "ranet_imagenet" else 4)
        assert data["args"]["grFactor"] == "4-2-1-1"
    assert _fixture("ranet_cifar100")["args"]["data"] == "cifar100"


def test_num_classes_override_changes_only_the_linear_layers() -> None:
    ours = dict(_shapes(meta_model("ranet_cifar100", num_classes=10)))
    official = _official("ranet_cifar100")
    diff = {k for k in ours if ours[k] != official[k]}
    assert diff == {f"classifier.{k}.linear.{p}" for k in range(8) for p in ("weight", "bias")}
    assert ours["classifier.7.linear.weight"] == [10, 128]
    assert ours == _official("ranet_cifar10")


# (b) strict loading --------------------------------------------------------------------------


def _official_layout_checkpoint(path: Path, name: str, wrap: str) -> dict[str, torch.Tensor]:
    sd = seeded_state(_official(name), seed=3)
    sd = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    if wrap == "module":  # the official main.py: {"state_dict": DataParallel state_dict, ...}
        payload: dict = {"epoch": 299, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        payload = {"model": sd}
    torch.save(payload, path)
    return sd


@pytest.mark.parametrize(
    ("name", "wrap"), [("ranet_cifar10", "module"), ("ranet_cifar100", "model")]
)
def test_strict_load_of_an_official_layout_checkpoint(tmp_path: Path, name: str, wrap: str) -> None:
    path = tmp_path / "model_best.pth.tar"
    sd = _official_layout_checkpoint(path, name, wrap)
    model = create_model(name, checkpoint=str(path))
    got = model.state_dict()
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert model.FirstLayer.layers[0].net[1].num_batches_tracked.item() == 7


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    sd = _official_layout_checkpoint(path, "ranet_cifar10", "module")
    renamed = "scale_flows.1.0.layers.0.conv_up.net.0.weight"
    sd[renamed.replace("conv_up", "conv_upp")] = sd.pop(renamed)
    reshaped = "classifier.3.linear.weight"
    sd[reshaped] = torch.zeros(3, 3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("ranet_cifar10", checkpoint=str(path))
    text = str(err.value)
    assert renamed in text and "conv_upp" in text and reshaped in text


# Logits against the official model ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_the_official_model(name: str) -> None:
    data = json.loads((FIXTURES / "ranet_official_logits.json").read_text())
    case = data["models"][name]
    model = create_model(name).eval()
    model.load_state_dict(seeded_state(_official(name), seed=data["weight_seed"]))
    x = torch.randn(
        case["input_shape"], generator=torch.Generator().manual_seed(data["input_seed"])
    )
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(case["exits"]) == model.num_exits
    for got, want in zip(out, case["exits"]):
        assert got.shape == tuple(want["shape"])
        head = got[:, : len(want["head"][0])]
        torch.testing.assert_close(head, torch.tensor(want["head"]), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.sum(1), torch.tensor(want["row_sum"]), rtol=1e-4, atol=1e-3)


# (c) forward_until is a prefix of forward ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "size"),
    [
        ("ranet_cifar100", {}, 32),
        ("ranet_cifar10", README_CIFAR, 32),
        ("ranet_imagenet", TINY_IMAGENET, 224),
    ],
)
def test_forward_until_equals_a_prefix_of_forward(name: str, kw: dict, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        full = model(x)
        classes = model.config.num_classes
        assert len(full) == model.num_exits and all(t.shape == (2, classes) for t in full)
        assert not torch.equal(full[0], full[-1])
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


# (d) the work really stops -------------------------------------------------------------------


def _tags(model: RANet) -> dict[nn.Module, str]:
    """Every called module -> 'stem', 'flow<s>.<b>' or 'head<k>'."""
    owner: dict[nn.Module, str] = {}
    for m in model.FirstLayer.modules():
        owner[m] = "stem"
    for s, flow in enumerate(model.scale_flows):
        for b, block in enumerate(flow):
            owner.update({m: f"flow{s}.{b}" for m in block.modules()})
    for k, head in enumerate(model.classifier):
        owner.update({m: f"head{k}" for m in head.modules()})
    return {m: t for m, t in owner.items() if not isinstance(m, nn.ModuleList)}


def _needed(k: int) -> set[str]:
    # Exits 2s and 2s+1 sit after blocks 2s and 2s+1 (0-based) of sub-network s
    # (block counts 2, 4, 6, 8); the fusion blocks of s read every block of s - 1.
    s, last = divmod(k, 2)
    blocks = {f"flow{t}.{b}" for t in range(s) for b in range(2 * t + 2)}
    blocks |= {f"flow{s}.{b}" for b in range(2 * s + last + 1)}
    return {"stem"} | blocks | {f"head{j}" for j in range(k + 1)}


@pytest.mark.parametrize("name", ["ranet_cifar10"])
def test_stopping_at_exit_k_runs_nothing_of_later_blocks_or_heads(name: str) -> None:
    model = create_model(name).eval()
    owner = _tags(model)
    ran: list[tuple[str, int]] = []
    for m, tag in owner.items():
        m.register_forward_hook(lambda mod, i, o, tag=tag: ran.append((tag, id(mod))))
    x = torch.randn(1, 3, 32, 32)
    for k in range(model.num_exits):
        ran.clear()
        with torch.no_grad():
            model.forward_until(x, k)
        expected = _needed(k)
        assert {t for t, _ in ran} == expected
        # every module of the needed parts ran, exactly once, and nothing else did
        assert sorted(i for _, i in ran) == sorted(id(m) for m, t in owner.items() if t in expected)
    # the official order: sub-network by sub-network, a head after each of its exit blocks
    ran.clear()
    with torch.no_grad():
        model(x)
    tops = {id(m) for m in [model.FirstLayer, *model.classifier]}
    tops |= {id(b) for flow in model.scale_flows for b in flow}
    order = [t for t, i in ran if i in tops]
    assert order[:5] == ["stem", "flow0.0", "head0", "flow0.1", "head1"]
    assert order[5:9] == ["flow1.0", "flow1.1", "flow1.2", "head2"]
    assert order[-2:] == ["flow3.7", "head7"]


@pytest.fixture(scope="module")
def costs() -> dict[str, ExitCosts]:
    torch.set_num_threads(1)
    return {name: count_costs(create_model(name), cross_check=False) for name in NAMES}


def test_exit_cost_is_the_cost_of_the_modules_a_truncated_run_executes(
    costs: dict[str, ExitCosts],
) -> None:
    model = create_model("ranet_cifar10").eval()
    total = [0.0]

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        ops = module_ops(mod, inputs, output)
        assert ops is not None, f"msdnet rules do not know {type(mod).__name__}"
        total[0] += ops

    for m in model.modules():
        if next(m.children(), None) is None:
            m.register_forward_hook(hook)
    x = torch.zeros(1, 3, 32, 32)
    for k in range(model.num_exits):
        total[0] = 0.0
        with torch.no_grad():
            model.forward_until(x, k)
        assert total[0] == costs["ranet_cifar10"].macs[k]
    macs = costs["ranet_cifar10"].macs
    assert all(a < b for a, b in zip(macs, macs[1:]))


# (e) costs equal the official op_counter ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_costs_equal_the_official_op_counter(costs: dict[str, ExitCosts], name: str) -> None:
    got = costs[name]
    macs, params = OFFICIAL_COSTS[name]
    assert got.convention == "msdnet"
    assert got.exit_names == EXITS
    assert got.macs == [float(m) for m in macs]  # exact, not just within 1%
    assert got.params == params
    assert not any("not counted" in n for n in got.notes)


# Configuration and (f) bad input -------------------------------------------------------------


def test_configs_follow_the_official_scripts_and_data_pipeline() -> None:
    inet, c10, c100 = (meta_model(n).config for n in NAMES)
    assert inet.input_size == (3, 224, 224) and inet.crop_pct == 0.875
    assert inet.mean == (0.485, 0.456, 0.406) and inet.std == (0.229, 0.224, 0.225)
    assert c10.input_size == c100.input_size == (3, 32, 32)
    assert c10.crop_pct == c100.crop_pct == 1.0
    assert c10.mean == (0.4914, 0.4824, 0.4467) and c10.std == (0.2471, 0.2435, 0.2616)
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert inet.arch["channels"] == 16 and inet.arch["growth_rate"] == 16
    assert inet.arch["step"] == 8 and inet.arch["scale_list"] == [1, 2, 3, 4]
    assert c10.arch["step"] == 4 and c10.arch["scale_list"] == [1, 2, 3, 3]
    assert c10.arch["gr_factor"] == c10.arch["bn_factor"] == [4, 2, 1, 1]
    assert inet.cost_convention == c10.cost_convention == "msdnet"
    assert "module." in inet.checkpoint_note and inet.name == "ranet_imagenet"
    assert c100.num_classes == 100 and c10.num_classes == 10 and inet.num_classes == 1000


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"step_mode": "linear"}, "step_mode"),
        ({"scale_list": (1, 3, 3, 3)}, "scale_list must start at 1"),
        ({"scale_list": (2, 2, 3, 3)}, "scale_list must start at 1"),
        ({"gr_factor": (4, 2, 1)}, "one entry per sub-network"),
        ({"compress_factor": 1.0}, "compress_factor"),
        ({"compress_factor": 0.01}, "growth_rate \\* gr_factor \\* compress_factor"),
        ({"reduction": 0.0}, "reduction"),
        ({"step": 0}, "step >= 1"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_get_clear_errors(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        meta_model("ranet_cifar10", **kw)


def test_bad_inputs_get_clear_errors() -> None:
    model = create_model("ranet_cifar10").eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
    with torch.no_grad(), pytest.raises(ValueError, match="config.input_size"):
        model(torch.randn(1, 3, 64, 64))


# Real early exit with a batch (compaction) -----------------------------------------------------


def exit_patterns(n_exits: int) -> list[list[int]]:
    """Per-sample exits for a batch of 7 (needs at least 5 exits); with two exits per
    sub-network, odd exits end one and the next exit first runs the fusion blocks."""
    last = n_exits - 1
    return [
        # nobody leaves at exit 1, three leave together at exit 2, one sample runs on alone
        [last, 0, 2, last - 1, 2, 2, 0],
        # everyone has left before the last exit, so the run stops there
        [0, last - 1, 1, 1, last // 2, last - 1, last // 2],
    ]


@pytest.mark.parametrize(
    ("name", "kw", "size"),
    [
        ("ranet_imagenet", TINY_IMAGENET, 224),
        ("ranet_cifar10", TINY_CIFAR, 32),
        ("ranet_cifar100", TINY_CIFAR, 32),
        ("ranet_cifar10", dict(README_CIFAR, **TINY_CIFAR), 32),
    ],
    ids=["imagenet", "cifar10", "cifar100", "cifar10-readme"],
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
    model = create_model("ranet_cifar10", **TINY_CIFAR).eval()
    x = torch.randn(3, 3, 32, 32)
    assert_keeping_everyone_changes_nothing(model, x)
    assert_bad_keep_masks_refused(model, x)
