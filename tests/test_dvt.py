"""DVT: official keys, shapes and logits, strict checkpoint loading, real early exit, costs.

The fixtures come from the official model classes, built outside this
repository: dvt_<config>_keys.json hold the state_dict keys and shapes of
blackfeather-wang/Dynamic-Vision-Transformer's DVT models (the three reuse
ablations of T2T-ViT-12 too) and of yitu-opensource/T2T-ViT's single models;
dvt_official_logits.json holds the official DVT models' logits for the
weights ``seeded_state`` makes from a fixture's key list and a seeded input.
Costs are compared with the DVT paper (Table 6 and the single-model rows).
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

import eebench.zoo.dvt  # noqa: F401  (registers the models)
from eebench.costs import ExitCosts, count_costs
from eebench.costs.fvcore_counter import count_fvcore
from eebench.zoo import CheckpointMismatchError, create_model
from eebench.zoo.base import TruncatedModel, run_exits
from eebench.zoo.dvt import DVT, Stage, T2TViT

FIXTURES = Path(__file__).parent / "fixtures"
OFF = dict(feature_reuse=False, relation_reuse=False)
# (model, options, fixture, key prefix of the fixture that the model equals)
KEY_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("dvt_t2t_vit_12", {}, "t2t_vit_12", ""),
    ("dvt_t2t_vit_12", OFF, "t2t_vit_12_no_reuse", ""),
    ("dvt_t2t_vit_12", {"relation_reuse": False}, "t2t_vit_12_feature_reuse_only", ""),
    ("dvt_t2t_vit_12", {"feature_reuse": False}, "t2t_vit_12_relation_reuse_only", ""),
    ("dvt_t2t_vit_14", {}, "t2t_vit_14", ""),
    ("dvt_deit_small", {}, "deit_small", ""),
    ("t2t_vit_12", {}, "static_t2t_vit_12", ""),
    ("t2t_vit_14", {}, "static_t2t_vit_14", ""),
    ("t2t_vit_12", {"token_grid": 7}, "t2t_vit_12_no_reuse", "less_less_token."),
    ("t2t_vit_12", {"token_grid": 10}, "t2t_vit_12_no_reuse", "less_token."),
    ("t2t_vit_12", {"token_grid": 14}, "t2t_vit_12_no_reuse", "normal_token."),
    ("t2t_vit_14", {"token_grid": 7}, "t2t_vit_14", "less_less_token."),
]
SMALL = dict(embed_dim=32, depth=2, num_heads=2)  # reduced widths for fast numeric tests


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _official(fixture: str, prefix: str = "") -> dict[str, list[int]]:
    keys = json.loads((FIXTURES / f"dvt_{fixture}_keys.json").read_text())["keys"]
    return {k[len(prefix) :]: v for k, v in keys.items() if k.startswith(prefix)}


def _meta(name: str, **kw: Any) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def _uninitialised(name: str, **kw: Any) -> nn.Module:
    """A model with real but unset CPU tensors: skips weight initialisation, which dominates
    building the full-size models; for counting costs or loading a state_dict right after."""
    return _meta(name, **kw).to_empty(device="cpu")


def seeded_state(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled weights for a key/shape list (norms near identity).

    tests/fixtures/dvt_official_logits.json was made with these weights.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in keys.items():
        if k.endswith(".bias"):
            sd[k] = 0.02 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # layer-norm scale
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("cls_token") or k.endswith("pos_embed"):
            sd[k] = 0.02 * torch.randn(shape, generator=g)
        elif k.endswith("kqv.weight"):
            # Small keys and queries keep the performer's exp(w.x - |x|^2 / 2) features far
            # from underflow, so that its attention (not only its value path) reaches the logits.
            sd[k] = 0.1 * torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif k.endswith(".w"):  # performer random features
            sd[k] = torch.randn(shape, generator=g)
        else:
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return sd


# ---------------------------------------------------------------- keys and checkpoints


@pytest.mark.parametrize(("name", "options", "fixture", "prefix"), KEY_CASES)
def test_state_dict_equals_official_keys_and_shapes(
    name: str, options: dict[str, Any], fixture: str, prefix: str
) -> None:
    ours = {k: list(v.shape) for k, v in _meta(name, **options).state_dict().items()}
    official = _official(fixture, prefix)
    assert set(ours) ^ set(official) == set()
    assert list(ours) == list(official)  # same order too
    assert ours == official


def test_fixtures_record_their_source() -> None:
    for _, _, fixture, _ in KEY_CASES:
        data = json.loads((FIXTURES / f"dvt_{fixture}_keys.json").read_text())
        repo = "yitu-opensource/T2T-ViT" if "static" in fixture else "Dynamic-Vision-Transformer"
        assert repo in data["source"] and "commit" in data["source"]


def test_switching_reuse_off_drops_exactly_the_reuse_modules() -> None:
    both = _official("t2t_vit_12")
    none = {k: list(v.shape) for k, v in _meta("dvt_t2t_vit_12", **OFF).state_dict().items()}
    dropped = set(both) - set(none)
    assert set(none) <= set(both)
    assert all("feature_resuse_mlp" in k or "relation_reuse_conv" in k for k in dropped)
    assert not any(k.startswith("less_less_token.") for k in dropped)  # stage 1 never reuses
    # Without feature reuse the block MLPs read dim, not dim + 48, channels.
    assert none["less_token.blocks.0.mlp.fc1.weight"] == [512, 256]
    assert both["less_token.blocks.0.mlp.fc1.weight"] == [512, 256 + 48]


def _dvt_checkpoint(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    # The layout of the released DVT checkpoints (inference.py reads these entries).
    return {
        "model_state_dict": sd,
        "flops": [0.4725e9, 1.4625e9, 3.4975e9],
        "anytime_classification": [70.1, 77.9, 79.7],
        "budgeted_batch_classification": [[1.0e9, 1.5e9], [76.0, 78.0]],
        "dynamic_threshold": torch.rand(59, 3, generator=torch.Generator().manual_seed(5)),
    }


def test_strict_load_of_an_official_dvt_checkpoint(tmp_path: Path) -> None:
    sd = seeded_state(_official("t2t_vit_12"), seed=3)
    path = tmp_path / "checkpoint.pth"
    torch.save(_dvt_checkpoint(sd), path)
    model = create_model("dvt_t2t_vit_12", checkpoint=str(path))
    got = model.state_dict()
    assert list(got) == list(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    # The fixed performer features travel in the checkpoint.
    w = "less_token.tokens_to_token.attention1.w"
    assert torch.equal(model.less_token.tokens_to_token.attention1.w, sd[w])


def test_strict_load_of_a_model_container_with_module_prefix(tmp_path: Path) -> None:
    sd = seeded_state(_official("static_t2t_vit_12"), seed=4)
    path = tmp_path / "t2t.pth"
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 309}, path)
    model = create_model("t2t_vit_12", checkpoint=str(path))
    assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    sd = seeded_state(_official("t2t_vit_12"), seed=3)
    renamed = "normal_token.blocks.3.feature_resuse_mlp.1.fc1.weight"
    sd["normal_token.blocks.3.feature_reuse_mlp.1.fc1.weight"] = sd.pop(renamed)
    sd["less_token.head.weight"] = torch.zeros(10, 256)
    path = tmp_path / "bad.pth"
    torch.save(_dvt_checkpoint(sd), path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("dvt_t2t_vit_12", checkpoint=str(path))
    text = str(err.value)
    assert renamed in text and "feature_reuse_mlp" in text and "less_token.head.weight" in text


def test_reuse_checkpoint_does_not_load_into_an_ablation_model(tmp_path: Path) -> None:
    path = tmp_path / "both.pth"
    torch.save(_dvt_checkpoint(seeded_state(_official("t2t_vit_12"))), path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("dvt_t2t_vit_12", checkpoint=str(path), relation_reuse=False)
    assert "relation_reuse_conv" in str(err.value)


# ---------------------------------------------------------------- logits


def _official_logits() -> dict[str, Any]:
    return json.loads((FIXTURES / "dvt_official_logits.json").read_text())


@pytest.mark.parametrize("case", list(_official_logits()["models"]))
def test_logits_equal_the_official_model(case: str) -> None:
    data = _official_logits()
    spec = data["models"][case]
    model = _uninitialised(
        spec["model"], feature_reuse=spec["feature_reuse"], relation_reuse=spec["relation_reuse"]
    ).eval()
    keys = json.loads((FIXTURES / spec["fixture"]).read_text())["keys"]
    model.load_state_dict(seeded_state(keys, seed=data["weight_seed"]))
    x = torch.randn(
        data["input_shape"], generator=torch.Generator().manual_seed(data["input_seed"])
    )
    with torch.no_grad():
        out = model(x)
    assert len(out) == len(spec["exits"]) == 3
    for got, want in zip(out, spec["exits"]):
        assert list(got.shape) == want["shape"]
        head = got[:, : len(want["head"][0])]
        torch.testing.assert_close(head, torch.tensor(want["head"]), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.sum(1), torch.tensor(want["row_sum"]), rtol=1e-4, atol=1e-3)


def test_reuse_changes_the_later_exits_only() -> None:
    models = _official_logits()["models"]
    first = [m["exits"][0]["head"] for m in models.values() if "t2t_vit_12" in m["fixture"]]
    later = [m["exits"][1]["head"] for m in models.values() if "t2t_vit_12" in m["fixture"]]
    assert len(first) == 4 and all(f == first[0] for f in first)
    assert len({json.dumps(h) for h in later}) == 4


# ---------------------------------------------------------------- early exit


@pytest.fixture(scope="module")
def small_models() -> dict[str, DVT]:
    torch.manual_seed(0)
    return {
        "t2t": create_model("dvt_t2t_vit_12", num_classes=5, **SMALL).eval(),
        "deit": create_model("dvt_deit_small", num_classes=5, **SMALL).eval(),
    }


@pytest.mark.parametrize("which", ["t2t", "deit"])
def test_forward_until_equals_forward_prefix(small_models: dict[str, DVT], which: str) -> None:
    model = small_models[which]
    assert model.exits == ["tokens7x7", "tokens10x10", "tokens14x14"]
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)
        assert [tuple(t.shape) for t in full] == [(2, 5)] * 3
        for k in range(3):
            part = model.forward_until(x, k)
            assert len(part) == k + 1
            assert all(torch.equal(a, b) for a, b in zip(part, full))


def test_later_transformers_never_run_before_their_exit(small_models: dict[str, DVT]) -> None:
    model = small_models["t2t"]
    fired: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: fired.append(name))
        for name, m in model.named_modules()
        if name.startswith(("less_token", "normal_token"))
    ]
    x = torch.randn(1, 3, 224, 224)
    try:
        with torch.no_grad():
            model.forward_until(x, 0)
            assert fired == []
            model.forward_until(x, 1)
            assert fired and not any(n.startswith("normal_token") for n in fired)
            # The reuse modules of stage 2 run in stage 2, not before its exit.
            assert "less_token.relation_reuse_conv" in fired
            assert "less_token.blocks.0.feature_resuse_mlp" in fired
    finally:
        for h in handles:
            h.remove()


# Every registered cascade, and each reuse setting (the reuse switches change what is carried).
COMPACTION_CASES: list[tuple[str, dict[str, Any]]] = [
    ("dvt_t2t_vit_12", {}),
    ("dvt_t2t_vit_12", OFF),
    ("dvt_t2t_vit_12", {"relation_reuse": False}),
    ("dvt_t2t_vit_12", {"feature_reuse": False}),
    ("dvt_t2t_vit_14", {}),
    ("dvt_t2t_vit_14", OFF),
    ("dvt_deit_small", {}),
    ("dvt_deit_small", OFF),
]
# Batch of 7: some leave at each exit; everyone leaves before the last; one sample goes on alone.
EXIT_PATTERNS = ([0, 2, 1, 0, 2, 0, 1], [1, 0, 1, 1, 0, 0, 1], [0, 0, 0, 2, 0, 0, 0])


def _seeded_small(name: str, **options: Any) -> DVT:
    """A reduced model with well-scaled weights, so that the reused features and relations
    (not only each stage's own tokens) move the later logits: a row mix-up would show."""
    model = create_model(name, num_classes=5, **SMALL, **options).eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state(shapes, seed=6))
    return model


@pytest.mark.parametrize(("name", "options"), COMPACTION_CASES)
def test_real_exit_with_a_batch_computes_only_the_samples_that_go_on(
    name: str, options: dict[str, Any]
) -> None:
    model = _seeded_small(name, **options)
    x = torch.randn(7, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    for exit_at in EXIT_PATTERNS:
        assert_compaction(model, x, exit_at)


def test_nobody_reaching_the_last_exit_never_runs_its_transformer() -> None:
    model = _seeded_small("dvt_deit_small")
    fired: list[str] = []
    handle = model.normal_token.register_forward_pre_hook(lambda m, a: fired.append("ran"))
    x = torch.randn(7, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    target = torch.tensor(EXIT_PATTERNS[1])
    try:
        with torch.no_grad():
            exits, _ = run_exits(model, x, lambda k, logits, alive: target[alive] == k)
    finally:
        handle.remove()
    assert exits.tolist() == EXIT_PATTERNS[1] and fired == []


def test_a_bad_keep_mask_is_rejected(small_models: dict[str, DVT]) -> None:
    assert_bad_keep_masks_refused(small_models["t2t"], torch.randn(7, 3, 224, 224))


def test_counted_exit_cost_is_the_cost_of_the_truncated_run(small_models: dict[str, DVT]) -> None:
    model = small_models["t2t"]
    costs = count_costs(model, cross_check=False)
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for k in range(3):
            assert costs.macs[k] == count_fvcore(TruncatedModel(model, k), x).macs
    static = create_model("t2t_vit_12", num_classes=5, token_grid=7, **SMALL)
    assert costs.macs[0] == count_costs(static, cross_check=False).macs[0]
    assert costs.macs[0] < costs.macs[1] < costs.macs[2]


# ---------------------------------------------------------------- costs at 224 (paper numbers)


def _costs(name: str, **kw: Any) -> ExitCosts:
    return count_costs(_uninitialised(name, **kw), cross_check=False)


@pytest.fixture(scope="module")
def t2t12_costs() -> dict[tuple[bool, bool], list[float]]:
    out = {}
    for fr in (True, False):
        for rr in (True, False):
            c = _costs("dvt_t2t_vit_12", feature_reuse=fr, relation_reuse=rr)
            out[(fr, rr)] = [m / 1e9 for m in c.macs]
    return out


# DVT paper, Table 6: GMACs of the three exits of DVT (T2T-ViT-12) per reuse setting.
TABLE6 = {
    (True, True): (0.47, 1.46, 3.50),
    (False, False): (0.47, 1.37, 3.15),
    (True, False): (0.47, 1.43, 3.31),
    (False, True): (0.47, 1.41, 3.34),
}


@pytest.mark.parametrize(("reuse", "published"), TABLE6.items())
def test_dvt_t2t_vit_12_costs_match_table6(
    t2t12_costs: dict[tuple[bool, bool], list[float]],
    reuse: tuple[bool, bool],
    published: tuple[float, ...],
) -> None:
    for got, want in zip(t2t12_costs[reuse], published):
        assert abs(got - want) / want < 0.02, (reuse, t2t12_costs[reuse], published)


def test_static_t2t_vit_costs_and_params(t2t12_costs: dict[tuple[bool, bool], list[float]]) -> None:
    small = _costs("t2t_vit_12", token_grid=7)
    mid = _costs("t2t_vit_12", token_grid=10)
    full = _costs("t2t_vit_12")
    assert abs(small.macs[0] / 1e9 - 0.47) / 0.47 < 0.02
    assert abs(full.macs[0] / 1e9 - 1.78) / 1.78 < 0.02
    assert abs(full.params[0] / 1e6 - 6.9) < 0.05  # T2T-ViT README: 6.9M
    # Without reuse the cascade costs exactly its three single Transformers.
    none = t2t12_costs[(False, False)]
    singles = [small.macs[0], mid.macs[0], full.macs[0]]
    cumulative = [sum(singles[: k + 1]) / 1e9 for k in range(3)]
    assert none == pytest.approx(cumulative, rel=1e-9)
    t14 = _costs("t2t_vit_14")
    assert abs(t14.macs[0] / 1e9 - 4.8) / 4.8 < 0.02  # T2T-ViT README: 4.8G
    assert abs(t14.params[0] / 1e6 - 21.5) < 0.1


def test_dvt_t2t_vit_14_first_exit_is_a_7x7_t2t_vit_14() -> None:
    dvt = _costs("dvt_t2t_vit_14")
    single = _costs("t2t_vit_14", token_grid=7)
    assert dvt.macs[0] == single.macs[0]
    assert dvt.macs[0] < dvt.macs[1] < dvt.macs[2]


def test_dvt_deit_small_costs() -> None:
    both = _costs("dvt_deit_small")
    none = _costs("dvt_deit_small", **OFF)
    assert both.convention == "fvcore"
    # Paper: DeiT-S on 7x7 tokens 1.1 G (one decimal), on 14x14 tokens 4.6 G; timm's
    # deit_small_patch16_224 counts 4.608 G under the same convention.
    assert round(both.macs[0] / 1e9, 1) == 1.1
    alone_14 = (none.macs[2] - none.macs[1]) / 1e9
    assert abs(alone_14 - 4.608) / 4.608 < 0.001
    assert both.macs[1] > none.macs[1] and both.macs[2] > none.macs[2]


# ---------------------------------------------------------------- configuration and errors


def test_reuse_options_go_into_the_config() -> None:
    model = _meta("dvt_t2t_vit_12", feature_reuse=False)
    arch = model.config.arch
    assert arch["feature_reuse"] is False and arch["relation_reuse"] is True
    assert arch["embed_dim"] == 256 and arch["depth"] == 12 and arch["token_grids"] == [7, 10, 14]
    assert model.config.cost_convention == "fvcore"
    assert model.config.input_size == (3, 224, 224)
    assert "model_state_dict" in model.config.checkpoint_note
    static = _meta("t2t_vit_14", token_grid=10)
    assert isinstance(static, T2TViT) and static.config.arch["token_grid"] == 10
    assert static.exits == ["tokens10x10"]
    json.dumps(model.config.to_dict())  # the store's identity must serialise


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="token_grid must be one of"):
        _meta("t2t_vit_12", token_grid=16)
    with pytest.raises(TypeError, match="feature_reuse must be True or False"):
        _meta("dvt_t2t_vit_12", feature_reuse="yes")
    with pytest.raises(TypeError, match="unknown options"):
        _meta("dvt_deit_small", patch_size=8)
    with pytest.raises(ValueError, match="not divisible"):
        _meta("dvt_t2t_vit_12", embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="cannot reuse"):
        Stage("t2t_vit", 7, 32, 1, 2, 2.0, 5, feature_reuse=True)


def test_wrong_input_size_is_rejected(small_models: dict[str, DVT]) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        small_models["deit"](torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="224"):
        small_models["t2t"](torch.zeros(1, 1, 224, 224))
