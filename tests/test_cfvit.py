"""CF-ViT: official keys/shapes and logits, token selection, strict loading, real early exit.

The fixtures come from the official model class (ChenMnZ/CF-ViT,
``deit/models_deit.py``) built outside this repository: cfvit_<config>_keys.json
hold its state_dict keys and shapes, cfvit_official_logits.json its logits and
chosen fine patches for the weights that ``seeded_state`` makes from a key list
and a seeded input (informative selection on, as in the official evaluation).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from zoo_testing import (  # noqa: F401  (module fixture)
    assert_bad_keep_masks_refused,
    assert_compaction,
    one_torch_thread,
)

import eebench.zoo.cfvit  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import count_fvcore
from eebench.zoo import CheckpointMismatchError, create_model
from eebench.zoo.base import TruncatedModel, run_exits
from eebench.zoo.cfvit import CFViT, fine_patch_index

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {"cfvit_deit_small": "deit_small", "cfvit_deit_small_9x9": "deit_small_9x9"}
# A narrow CF-ViT for fast numeric tests (the token grids and the selection stay the real ones).
SMALL: dict[str, Any] = dict(embed_dim=48, depth=5, num_heads=2, num_classes=7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _official(fixture: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"cfvit_{fixture}_keys.json").read_text())["keys"]


def _meta(name: str, **kw: Any) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def seeded_state(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic weights for a key/shape list, scaled so that attention is far from uniform
    and the two exits disagree (an all-0.02 initialisation would hide selection errors)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in keys.items():
        if len(shape) == 1 and k.endswith(".weight"):  # layer-norm scale
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith(".bias"):
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        elif k == "cls_token" or k.startswith("pos_embed_list"):
            sd[k] = 0.5 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    return sd


# ---------------------------------------------------------------- keys, shapes, checkpoints


@pytest.mark.parametrize(("name", "fixture"), CASES.items())
def test_state_dict_equals_official_keys_and_shapes(name: str, fixture: str) -> None:
    ours = {k: list(v.shape) for k, v in _meta(name).state_dict().items()}
    official = _official(fixture)
    assert set(ours) ^ set(official) == set()
    assert list(ours) == list(official)  # same order too
    assert ours == official


def test_fixtures_record_their_source() -> None:
    for fixture in CASES.values():
        data = json.loads((FIXTURES / f"cfvit_{fixture}_keys.json").read_text())
        assert "ChenMnZ/CF-ViT" in data["source"] and "commit" in data["source"]
        assert data["args"]["embed_dim"] == 384 and data["args"]["depth"] == 12
    assert _official("deit_small")["pos_embed_list.1"] == [1, 197, 384]
    assert _official("deit_small_9x9")["pos_embed_list.0"] == [1, 82, 384]


def test_num_classes_override_changes_only_the_head() -> None:
    ours = {
        k: list(v.shape) for k, v in _meta("cfvit_deit_small", num_classes=10).state_dict().items()
    }
    official = _official("deit_small")
    assert {k for k in ours if ours[k] != official[k]} == {"head.weight", "head.bias"}
    assert ours["head.weight"] == [10, 384]


def _official_checkpoint(fixture: str, seed: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    sd = seeded_state(_official(fixture), seed=seed)
    # What the released .pth files hold (README): the weights under "model", plus results.
    payload = {
        "model": sd,
        "flop": [1.1, 4.0],
        "anytime_classification": [75.5, 80.8],
        "budgeted_batch_classification": [[1.1, 4.0], [75.5, 80.8]],
    }
    return payload, sd


def test_strict_load_of_an_official_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "cf_deit_small_7x7.pth"
    payload, sd = _official_checkpoint("deit_small", seed=3)
    torch.save(payload, path)
    model = create_model("cfvit_deit_small", checkpoint=str(path))
    got = model.state_dict()
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_strict_load_with_a_module_prefix(tmp_path: Path) -> None:
    path = tmp_path / "ddp.pth"
    sd = seeded_state(_official("deit_small_9x9"), seed=4)
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    model = create_model("cfvit_deit_small_9x9", checkpoint=str(path))
    assert torch.equal(model.pos_embed_list[1], sd["pos_embed_list.1"])
    assert torch.equal(model.reuse_block[1].fc2.weight, sd["reuse_block.1.fc2.weight"])


def test_mismatched_checkpoints_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    payload, sd = _official_checkpoint("deit_small", seed=5)
    sd["reuse_block.1.fc3.weight"] = sd.pop("reuse_block.1.fc1.weight")
    sd["head.bias"] = torch.zeros(999)
    torch.save(payload, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("cfvit_deit_small", checkpoint=str(path))
    text = str(err.value)
    assert "reuse_block.1.fc1.weight" in text and "reuse_block.1.fc3.weight" in text
    assert "head.bias" in text
    # a 7x7 checkpoint is not a 9x9 model: the position embeddings differ
    payload, _ = _official_checkpoint("deit_small", seed=5)
    torch.save(payload, path)
    with pytest.raises(CheckpointMismatchError, match="pos_embed_list.0"):
        create_model("cfvit_deit_small_9x9", checkpoint=str(path))


# ---------------------------------------------------------------- numerics vs the official code


def _official_logits() -> dict[str, Any]:
    return json.loads((FIXTURES / "cfvit_official_logits.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_selection_equal_the_official_model(name: str) -> None:
    data = _official_logits()
    case = data["models"][name]
    model = create_model(name).eval()
    model.load_state_dict(seeded_state(_official(CASES[name]), seed=data["weight_seed"]))
    g = torch.Generator().manual_seed(data["input_seed"])
    x = torch.randn(case["input_shape"], generator=g)
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(case["exits"]) == 2
    for got, want in zip(out, case["exits"]):
        assert got.shape == tuple(want["shape"])
        head = got[:, : len(want["head"][0])]
        torch.testing.assert_close(head, torch.tensor(want["head"]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.sum(1), torch.tensor(want["row_sum"]), rtol=1e-5, atol=1e-3)
        assert got.argmax(1).tolist() == want["argmax"]
    assert not torch.equal(out[0].argmax(1), out[1].argmax(1))  # the exits really differ
    assert model.last_selection is not None
    chosen = fine_patch_index(model.last_selection, model.coarse_grid)
    assert chosen.tolist() == case["important_index"]


def test_fine_patch_index_follows_the_official_order() -> None:
    # coarse (row 1, col 1) of 7x7 covers fine (2,2),(2,3),(3,2),(3,3) of 14x14: 30, 31, 44, 45;
    # coarse 48 (6, 6) covers 180, 181, 194, 195. All top-left patches come first.
    idx = fine_patch_index(torch.tensor([[8, 48, 0]]), 7)
    assert idx.tolist() == [[30, 180, 0, 31, 181, 1, 44, 194, 14, 45, 195, 15]]
    nine = fine_patch_index(torch.arange(81).view(1, 81), 9)
    assert sorted(nine[0].tolist()) == list(range(324))


# ---------------------------------------------------------------- early exit and options


def _small(name: str = "cfvit_deit_small", seed: int = 0, **kw: Any) -> CFViT:
    torch.manual_seed(seed)
    model = create_model(name, **{**SMALL, **kw}).eval()
    model.load_state_dict(seeded_state({k: list(v.shape) for k, v in model.state_dict().items()}))
    return model


@pytest.mark.parametrize("name", sorted(CASES))
def test_iter_exits_prefix_equals_forward(name: str) -> None:
    model = _small(name)
    side = model.config.input_size[-1]
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    assert model.exits == ["coarse", "fine"]
    with torch.no_grad():
        full = model(x)
        assert [tuple(t.shape) for t in full] == [(2, 7), (2, 7)]
        assert not torch.equal(full[0], full[1])
        for k in range(model.num_exits):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def _fine_lengths(model: CFViT, x: torch.Tensor, k: int) -> list[int]:
    """Token counts seen by the first encoder, per call, when running to exit k."""
    lengths: list[int] = []
    h = model.blocks[0].register_forward_hook(lambda m, i, o: lengths.append(i[0].shape[1]))
    try:
        with torch.no_grad():
            model.forward_until(x, k)
    finally:
        h.remove()
    return lengths


def test_stopping_at_the_coarse_exit_runs_nothing_of_the_fine_pass() -> None:
    model = _small()
    calls: list[str] = []
    for name, m in model.named_modules():
        if name and not isinstance(m, nn.ModuleList | nn.ParameterList):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        model.forward_until(x, 0)
    assert not any(c.startswith("reuse_block") for c in calls)
    assert calls.count("patch_embed") == 1 and calls.count("blocks.4") == 1
    assert calls.count("head") == 1 and calls.count("norm") == 1
    calls.clear()
    with torch.no_grad():
        model.forward_until(x, 1)
    assert calls.count("reuse_block") == 1 and calls.count("patch_embed") == 2
    assert calls.count("blocks.4") == 2 and calls.count("head") == 2
    # coarse: 1 + 49 tokens; fine: 1 + 4 * ceil(0.5 * 49) + (49 - 25) = 125
    assert _fine_lengths(model, x, 1) == [50, 125]


def test_alpha_and_beta_change_what_the_fine_pass_sees() -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    base = _small()
    with torch.no_grad():
        ref = base(x)
    chosen = base.last_selection
    assert chosen is not None
    wide = _small(alpha=0.7)
    assert wide.config.arch["alpha"] == 0.7 and wide.num_selected == 35
    assert _fine_lengths(wide, x, 1) == [50, 1 + 4 * 35 + 14]
    assert _fine_lengths(_small(alpha=1.0), x, 1) == [50, 197]
    with torch.no_grad():
        out = wide(x)
    assert torch.equal(out[0], ref[0]) and not torch.equal(out[1], ref[1])
    # beta = 0: only the last encoder's class attention decides
    last = _small(beta=0.0)
    with torch.no_grad():
        last(x)
    assert last.last_selection is not None and not torch.equal(last.last_selection, chosen)
    assert _fine_lengths(_small("cfvit_deit_small_9x9"), torch.randn(1, 3, 288, 288), 1) == [
        82,
        1 + 4 * 41 + 40,
    ]


# Batch of 7: several leave at the coarse exit, the rest at the fine one; one sample goes on alone.
EXIT_PATTERNS = ([0, 1, 0, 0, 1, 0, 1], [0, 0, 0, 1, 0, 0, 0])


def _run_exits(model: CFViT, x: torch.Tensor, exit_at: list[int]) -> torch.Tensor:
    target = torch.tensor(exit_at)
    with torch.no_grad():
        exits, _ = run_exits(model, x, lambda k, logits, alive: target[alive] == k)
    return exits


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_exit_with_a_batch_computes_only_the_samples_that_go_on(name: str) -> None:
    model = _small(name)
    side = model.config.input_size[-1]
    x = torch.randn(7, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(x)
    full_selection = model.last_selection
    assert full_selection is not None
    for exit_at in EXIT_PATTERNS:
        assert_compaction(model, x, exit_at)
        # the fine pass chose its patches from the class attention of its own samples
        going_on = torch.tensor(exit_at) == 1
        _run_exits(model, x, exit_at)
        assert torch.equal(model.last_selection, full_selection[going_on])


def test_everyone_leaving_at_the_coarse_exit_runs_nothing_of_the_fine_pass() -> None:
    model = _small()
    fired: list[str] = []
    handle = model.reuse_block.register_forward_pre_hook(lambda m, a: fired.append("ran"))
    try:
        exits = _run_exits(model, torch.randn(7, 3, 224, 224), [0] * 7)
    finally:
        handle.remove()
    assert exits.tolist() == [0] * 7 and fired == []


def test_a_bad_keep_mask_is_rejected() -> None:
    assert_bad_keep_masks_refused(_small(), torch.randn(7, 3, 224, 224))


# ---------------------------------------------------------------- costs (fvcore convention)


def _analytic_macs(tokens: int, dim: int = 384, depth: int = 12) -> float:
    """Linear layers (12 N C^2) and the two attention products (2 N^2 C) of one pass."""
    return depth * (12 * tokens * dim * dim + 2 * tokens * tokens * dim)


@pytest.fixture(scope="module")
def costs() -> dict[str, ExitCosts]:
    with torch.device("cpu"):
        return {n: count_costs(create_model(n), cross_check=False) for n in sorted(CASES)}


def test_published_costs_at_224(costs: dict[str, ExitCosts]) -> None:
    c = costs["cfvit_deit_small"]
    assert c.convention == "fvcore" and c.input_size == (3, 224, 224)
    # paper: coarse 1.1 GFLOPs (MACs), coarse + fine at alpha 0.5: 4.0 G
    assert c.macs[0] == pytest.approx(1.10e9, rel=0.02)
    assert c.macs[1] == pytest.approx(4.0e9, rel=0.02)


@pytest.mark.parametrize(("name", "grid"), [("cfvit_deit_small", 7), ("cfvit_deit_small_9x9", 9)])
def test_costs_agree_with_the_token_counts(
    costs: dict[str, ExitCosts], name: str, grid: int
) -> None:
    n = grid * grid
    fine_tokens = 1 + 4 * math.ceil(n / 2) + (n - math.ceil(n / 2))
    embed = 3 * 16 * 16 * 384
    coarse = _analytic_macs(n + 1) + n * embed + 384 * 1000
    fine = _analytic_macs(fine_tokens) + 4 * n * embed + 2 * n * 384 * 1536 + 384 * 1000
    got = costs[name].macs
    # what the formula leaves out (layer norms, upsampling) is well under 1%
    assert got[0] == pytest.approx(coarse, rel=0.01) and got[0] > coarse
    assert got[1] == pytest.approx(coarse + fine, rel=0.01) and got[1] > coarse + fine


def test_cost_of_an_exit_is_the_cost_of_the_truncated_run(costs: dict[str, ExitCosts]) -> None:
    model = create_model("cfvit_deit_small", **SMALL)
    c = count_costs(model, cross_check=False)
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for k in range(2):
            assert c.macs[k] == count_fvcore(TruncatedModel(model, k), x).macs
    assert c.macs[0] < c.macs[1]
    wide = count_costs(create_model("cfvit_deit_small", alpha=0.7, **SMALL), cross_check=False)
    assert wide.macs[0] == c.macs[0] and wide.macs[1] > c.macs[1]
    assert costs["cfvit_deit_small"].params[1] > costs["cfvit_deit_small"].params[0]


# ---------------------------------------------------------------- configs and errors


def test_configs_follow_the_official_pipeline() -> None:
    seven = _meta("cfvit_deit_small").config
    nine = _meta("cfvit_deit_small_9x9", alpha=0.7).config
    assert seven.input_size == (3, 224, 224) and nine.input_size == (3, 288, 288)
    assert seven.interpolation == "bicubic" and seven.crop_pct == 0.875
    assert seven.mean == (0.485, 0.456, 0.406) and seven.std == (0.229, 0.224, 0.225)
    assert seven.arch["coarse_input"] == 112 and nine.arch["coarse_input"] == 144
    assert seven.arch["alpha"] == 0.5 and seven.arch["beta"] == 0.99 and nine.arch["alpha"] == 0.7
    assert seven.name == "cfvit_deit_small" and seven.cost_convention == "fvcore"
    assert "'model'" in seven.checkpoint_note


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"alpha": 0.0}, ValueError, r"alpha .* \(0, 1\]"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": "0.5"}, ValueError, "alpha"),
        ({"beta": 1.0}, ValueError, r"beta .* \[0, 1\)"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"coarse_grid": 9}, ValueError, "cfvit_deit_small_9x9"),
        ({"depth": 3}, ValueError, "depth"),
        ({"num_heads": 5}, ValueError, "divisible"),
        ({"gamma": 1}, TypeError, "gamma"),
    ],
)
def test_bad_options_get_clear_errors(kw: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _meta("cfvit_deit_small", **kw)


def test_wrong_input_sizes_get_clear_errors() -> None:
    model = _small("cfvit_deit_small_9x9")
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(N, 3, 288, 288\)"):
        model(torch.randn(1, 3, 224, 224))
    with torch.no_grad(), pytest.raises(ValueError, match="config.input_size"):
        model(torch.randn(3, 288, 288))
