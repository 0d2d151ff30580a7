"""Per-exit cumulative costs: hand-counted models under both conventions, the
earlier-heads bug, fused attention, the ptflops cross-check and the papers' numbers."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eebench.costs import CONVENTIONS, ExitCosts, count_costs, format_costs_table
from eebench.costs.fvcore_counter import flop_count_analysis
from eebench.zoo.base import ModelConfig, MultiExitModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Counting runs batch-1 forwards; on shared CPUs two OpenMP threads fighting other
    processes for cores can be 50x slower than one, so these tests use one and restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- tiny models


class TwoExitConv(MultiExitModel):
    """3x8x8 input; exit 0 after one conv, exit 1 after a strided conv. Counted by hand below."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        )
        self.head0 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        self.stage1 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head1 = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))
        self.exits = ["early", "final"]
        self.config = ModelConfig(name="two_exit_conv", num_classes=5, input_size=(3, 8, 8))

    def iter_exits(self, x):
        x = self.stem(x)
        yield 0, self.head0(x)
        x = self.stage1(x)
        yield 1, self.head1(x)


# Hand counts. Stem conv: Cin*Cout*k*k*Hout*Wout = 3*4*9*8*8; stage1 conv: 4*8*9*4*4.
STEM_CONV = 3 * 4 * 9 * 8 * 8  # 6912
STAGE1_CONV = 4 * 8 * 9 * 4 * 4  # 4608
# fvcore: BN (affine, eval) 2 per element; adaptive avg pool 1 per input element; linear
# weights only; ReLU, AvgPool2d and conv bias are not counted.
FV_HEAD0 = 4 * 8 * 8 + 4 * 5  # adaptive pool over 4x8x8 + linear 4->5 = 276
FV_EXIT0 = STEM_CONV + 2 * 4 * 8 * 8 + FV_HEAD0  # 7700
FV_EXIT1 = FV_EXIT0 + STAGE1_CONV + 32 * 5  # 12468
# msdnet: ReLU 1 per element; pools kernel area per output; linear weights + bias; BN nothing.
MS_EXIT0 = STEM_CONV + 4 * 8 * 8 + 4 * 8 * 8 + (4 * 5 + 5)  # 7449
MS_EXIT1 = MS_EXIT0 + STAGE1_CONV + 8 * 4 * 4 + 8 * 2 * 2 * 2 * 2 + (32 * 5 + 5)  # 12478
# Parameters: stem conv 108 + BN 8 + head0 25; stage1 conv 288 + 8; head1 165.
PARAMS_EXIT0 = 3 * 4 * 9 + 2 * 4 + (4 * 5 + 5)  # 141
PARAMS_EXIT1 = PARAMS_EXIT0 + (4 * 8 * 9 + 8) + (32 * 5 + 5)  # 602


def test_hand_counted_two_exit_model_fvcore() -> None:
    costs = count_costs(TwoExitConv())
    assert costs.convention == "fvcore"
    assert costs.exit_names == ["early", "final"]
    assert costs.input_size == (3, 8, 8)
    assert costs.macs == [FV_EXIT0, FV_EXIT1] == [7700, 12468]
    assert costs.params == [PARAMS_EXIT0, PARAMS_EXIT1] == [141, 602]
    assert any("aten::avg_pool2d x1" in n for n in costs.notes)


def test_hand_counted_two_exit_model_msdnet() -> None:
    costs = count_costs(TwoExitConv(), convention="msdnet")
    assert costs.macs == [MS_EXIT0, MS_EXIT1] == [7449, 12478]
    assert costs.params == [141, 602]
    assert not any(n.startswith("msdnet rules") for n in costs.notes)  # every module is known


def test_earlier_head_is_counted_though_the_last_exit_never_uses_it() -> None:
    """A trace that returns only the last logits drops head0: ours is larger by head0's cost."""
    model = TwoExitConv().eval()

    class LastOnly(nn.Module):
        def __init__(self, m: MultiExitModel) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[-1]

    with torch.no_grad():
        naive = flop_count_analysis(LastOnly(model), torch.zeros(1, 3, 8, 8)).total()
    ours = count_costs(model, cross_check=False).macs[-1]
    assert ours - naive == FV_HEAD0 == 276


def test_work_that_only_later_exits_read_is_charged_to_the_exit_that_ran_it() -> None:
    """Exit 0 computes a side branch that only exit 1 reads (as MSDNet's finer scales): a run
    up to exit 0 pays for it, though no exit-0 output depends on it (a plain trace drops it)."""

    class SideBranch(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1, bias=False)
            self.side = nn.Conv2d(3, 2, 1, bias=False)
            self.head0 = nn.Sequential(nn.Flatten(), nn.Linear(4 * 16, 2, bias=False))
            self.head1 = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 2, bias=False))
            self.exits = ["e0", "e1"]
            self.config = ModelConfig(name="side", num_classes=2, input_size=(3, 4, 4))

        def iter_exits(self, x):
            h, s = self.a(x), self.side(x)
            yield 0, self.head0(h)
            yield 1, self.head1(s)

    a, side, head0, head1 = 3 * 4 * 16, 3 * 2 * 16, 64 * 2, 32 * 2
    for convention in [c for c in CONVENTIONS if c != "dynperceiver"]:  # Dyn-Perceiver only
        costs = count_costs(SideBranch(), convention=convention)
        assert costs.macs == [a + side + head0, a + side + head0 + head1], convention
        assert costs.check_macs == costs.macs


def test_cumulative_params_include_earlier_heads_and_shared_modules_once() -> None:
    class SharedHead(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1, bias=False)
            self.b = nn.Conv2d(3, 3, 1, bias=False)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
            self.unused = nn.Linear(1000, 1000)  # never runs: never counted
            self.exits = ["a", "b"]
            self.config = ModelConfig(name="shared", num_classes=2, input_size=(3, 4, 4))

        def iter_exits(self, x):
            x = self.a(x)
            yield 0, self.head(x)
            x = self.b(x)
            yield 1, self.head(x)  # the same head runs again

    costs = count_costs(SharedHead(), convention="msdnet", cross_check=False)
    conv, head = 3 * 3 * 16, 48 * 2 + 2
    assert costs.params == [9 + 98, 9 + 98 + 9]  # the shared head's parameters once
    assert costs.macs == [conv + head, 2 * conv + 2 * head]  # but its ops on every run


class ParameterListModel(MultiExitModel):
    """Position embeddings in a ParameterList (as CF-ViT keeps them): read, never called."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.pos = nn.ParameterList([nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(5, 4))])
        self.exits = ["only"]
        self.config = ModelConfig(name="plist", num_classes=4, input_size=(1, 3, 4))

    def iter_exits(self, x):
        yield 0, self.block(x[:, 0] + self.pos[0]).mean(1)


def test_parameters_count_when_read_not_when_owned() -> None:
    # pos[0] is read (indexed, never called); pos[1] belongs to the model but is never read
    costs = count_costs(ParameterListModel(), cross_check=False)
    assert costs.params == [4 * 4 + 4 + 3 * 4]


class FusedQkvModel(MultiExitModel):
    """A parent that reads its child's weight through F.linear (fused qkv, as BEiT and EVA)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.later = nn.Linear(12, 2)
        self.exits = ["a", "b"]
        self.config = ModelConfig(name="qkv", num_classes=2, input_size=(1, 3, 4))

    def iter_exits(self, x):
        h = torch.nn.functional.linear(x[:, 0, 0], self.qkv.weight, self.qkv.bias)  # no module call
        yield 0, h[:, :2]
        yield 1, self.later(h)


def test_weights_read_without_calling_their_module_are_counted() -> None:
    costs = count_costs(FusedQkvModel(), convention="msdnet", cross_check=False)
    assert costs.params == [4 * 12 + 12, 4 * 12 + 12 + 12 * 2 + 2]


def test_cross_check_agrees_on_the_tiny_model() -> None:
    costs = count_costs(TwoExitConv())
    # ptflops counts convolutions and linear layers with biases, nothing else.
    assert costs.check_macs == [STEM_CONV + 25, STEM_CONV + 25 + STAGE1_CONV + 8 * 16 + 165]
    rel = costs.rel_diff()
    assert rel is not None and rel[0] == pytest.approx((6937 - 7700) / 7700)
    assert costs.check_tool is not None and costs.check_tool.startswith("ptflops")
    assert count_costs(TwoExitConv(), cross_check=False).check_macs is None


class TinyAttention(MultiExitModel):
    """The image is the query (batch 1, 2 heads, Lq 5, d 4); key (Lk 7) and value (dv 3) are
    parameters; the logits are the attention output. Only the attention does MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.randn(1, 2, 7, 4))
        self.v = nn.Parameter(torch.randn(1, 2, 7, 3))
        self.exits = ["attn"]
        self.config = ModelConfig(name="tiny_attention", num_classes=30, input_size=(2, 5, 4))

    def iter_exits(self, x):
        yield 0, F.scaled_dot_product_attention(x, self.k, self.v).flatten(1)


def test_fused_attention_counts_its_two_matmuls() -> None:
    costs = count_costs(TinyAttention())
    expected = 1 * 2 * 5 * 7 * 4 + 1 * 2 * 5 * 7 * 3  # Q @ K^T + attn @ V = 490
    assert costs.macs == [expected]
    assert costs.check_macs == [expected]  # ptflops sees the fused kernel the same way
    assert costs.params == [2 * 7 * 4 + 2 * 7 * 3]
    # Hook-based MSDNet rules cannot see a functional product: zero, and said so.
    ms = count_costs(TinyAttention(), convention="msdnet", cross_check=False)
    assert ms.macs == [0]
    assert any("scaled_dot_product_attention x1" in n for n in ms.notes)


def test_multihead_attention_fast_path_is_counted_and_restored() -> None:
    class MHA(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.exits = ["attn"]
            self.config = ModelConfig(name="mha", num_classes=40, input_size=(1, 5, 8))

        def iter_exits(self, x):
            t = x[:, 0]  # (1, 5 tokens, 8)
            yield 0, self.attn(t, t, t, need_weights=False)[0].flatten(1)

    before = torch.backends.mha.get_fastpath_enabled()
    costs = count_costs(MHA())
    assert torch.backends.mha.get_fastpath_enabled() == before
    in_proj, attention, out_proj = 5 * 8 * 24, 2 * 5 * 5 * 4 * 2, 5 * 8 * 8
    assert costs.macs == [in_proj + attention + out_proj]
    assert costs.params == [sum(p.numel() for p in MHA().parameters())]  # out_proj included


def test_baddbmm_counts_as_its_batched_matmul() -> None:
    """MultiheadAttention with weights and a mask runs Q @ K^T as baddbmm (fvcore skips it)."""

    class MaskedMHA(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.exits = ["attn"]
            self.config = ModelConfig(name="masked", num_classes=40, input_size=(1, 5, 8))

        def iter_exits(self, x):
            t = x[:, 0]
            mask = torch.zeros(5, 5)
            yield 0, self.attn(t, t, t, need_weights=True, attn_mask=mask)[0].flatten(1)

    costs = count_costs(MaskedMHA())
    assert costs.macs == [5 * 8 * 24 + 2 * 5 * 5 * 4 * 2 + 5 * 8 * 8]
    assert costs.check_macs == [costs.macs[0] + 5 * 24 + 5 * 8]  # ptflops adds the biases


# --------------------------------------------------------------------------- timm


class PlainTimm(MultiExitModel):
    """A plain timm classifier as a one-exit model."""

    def __init__(self, name: str) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model(name, pretrained=False)
        self.exits = ["final"]
        self.config = ModelConfig(name=name, num_classes=1000)

    def iter_exits(self, x):
        yield 0, self.net(x)


def test_deit_small_counts_the_published_4_61_gmacs() -> None:
    costs = count_costs(PlainTimm("deit_small_patch16_224"))
    assert costs.macs[0] / 1e9 == pytest.approx(4.61, rel=0.01)
    # Plain fvcore misses the 12 fused attention blocks (6 heads, 197 tokens, d 64).
    attention = 12 * 2 * 6 * 197 * 197 * 64
    assert costs.macs[0] - attention == pytest.approx(4.25e9, rel=0.01)
    assert costs.params[0] == pytest.approx(22.05e6, rel=0.001)
    assert costs.rel_diff()[0] == pytest.approx(0.0, abs=0.005)  # ptflops agrees
    assert any("aten::gelu" in n for n in costs.notes)
    assert not any(n.startswith("WARNING") for n in costs.notes)


def test_resnet18_is_1_82_gmacs() -> None:
    costs = count_costs(PlainTimm("resnet18"))
    assert costs.macs[0] / 1e9 == pytest.approx(1.82, rel=0.005)
    assert costs.params[0] == 11_689_512
    ms = count_costs(PlainTimm("resnet18"), convention="msdnet", cross_check=False)
    assert ms.macs[0] / 1e9 == pytest.approx(1.82, rel=0.005)


# --------------------------------------------------------------------------- API


def test_unknown_convention_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        count_costs(TwoExitConv(), convention="flops")
    msg = str(err.value)
    assert "'flops'" in msg and all(name in msg for name in CONVENTIONS)


def test_input_size_forms_and_errors() -> None:
    class AnySize(MultiExitModel):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
            self.exits = ["only"]
            self.config = ModelConfig(name="any_size", num_classes=4, input_size=(3, 8, 8))

        def iter_exits(self, x):
            yield 0, self.net(x)

    model = AnySize()
    per_pixel = 3 * 4 * 9 + 4  # conv MACs + adaptive pooling, per output pixel
    assert count_costs(model, cross_check=False).macs == [per_pixel * 64]
    square = count_costs(model, 16, cross_check=False)
    assert square.input_size == (3, 16, 16) and square.macs == [per_pixel * 256]
    assert count_costs(model, (3, 16, 16), cross_check=False).macs == [per_pixel * 256]
    assert count_costs(model, (16, 8), cross_check=False).input_size == (3, 16, 8)
    with pytest.raises(ValueError, match="input_size"):
        count_costs(model, (1, 2, 3, 4))
    with pytest.raises(TypeError, match="MultiExitModel"):
        count_costs(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"exit 1 \('final'\) of two_exit_conv at input 3x16x16"):
        count_costs(TwoExitConv(), 16)  # head1's linear layer only fits 8x8 inputs


def test_training_mode_is_restored() -> None:
    model = TwoExitConv().train()
    count_costs(model, cross_check=False)
    assert model.training and model.stem[1].training


def test_ptflops_failure_becomes_a_note() -> None:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    class HatesDispatchModes(TwoExitConv):
        def iter_exits(self, x):
            if _get_current_dispatch_mode() is not None:
                raise RuntimeError("this model cannot run under a dispatch mode")
            yield from super().iter_exits(x)

    costs = count_costs(HatesDispatchModes())
    assert costs.macs == [FV_EXIT0, FV_EXIT1]
    assert costs.check_macs is None and costs.check_tool is None and costs.rel_diff() is None
    assert any("cross-check disabled" in n and "dispatch mode" in n for n in costs.notes)


def test_frame_dict_and_table() -> None:
    costs = count_costs(TwoExitConv())
    frame = costs.to_frame()
    assert list(frame.columns) == [
        "exit",
        "exit_name",
        "gmacs",
        "mparams",
        "check_gmacs",
        "rel_diff",
    ]
    assert frame["gmacs"].tolist() == [7700 / 1e9, 12468 / 1e9]
    assert frame["exit_name"].tolist() == ["early", "final"]
    again = ExitCosts.from_dict(costs.to_dict())
    assert again == costs and costs.to_dict()["input_size"] == [3, 8, 8]
    table = format_costs_table(costs)
    assert "two_exit_conv" in table and "final" in table and "0.01" in table  # MMACs
    assert "note:" in table and "check" in table
    no_check = count_costs(TwoExitConv(), cross_check=False)
    assert math.isnan(no_check.to_frame()["rel_diff"][0])
    with pytest.raises(ValueError, match="exit names"):
        ExitCosts("m", ["a"], [1.0, 2.0], [1], "fvcore", (3, 8, 8))


def test_importing_costs_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, eebench.costs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- MSDNet

# Cumulative MMACs per exit under MSDNet's own counter (the papers' numbers; ours match
# op_counter.py run on the official model to the MAC).
MSDNET_MMACS = {
    "msdnet_cifar100_budget": [6.86, 14.35, 27.54, 41.71, 58.48],
    "msdnet_cifar100_anytime": [15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94],
    "msdnet_imagenet_step4": [339.90, 685.46, 1008.16, 1254.47, 1360.53],
    "msdnet_imagenet_step7": [615.69, 1436.39, 2283.21, 2967.42, 3253.79],
}


def _mmacs(costs: ExitCosts) -> list[float]:
    return [m / 1e6 for m in costs.macs]


@pytest.mark.parametrize("name", ["msdnet_cifar100_budget", "msdnet_cifar100_anytime"])
def test_msdnet_cifar_costs_match_the_papers(name: str) -> None:
    from eebench.zoo import create_model

    model = create_model(name)
    ms = count_costs(model, convention="msdnet", cross_check=False)
    assert ms.input_size == (3, 32, 32)
    assert _mmacs(ms) == pytest.approx(MSDNET_MMACS[name], rel=0.005)
    assert not any(n.startswith("msdnet rules") for n in ms.notes)  # every module is known
    fv = count_costs(model, convention="fvcore")
    assert _mmacs(fv) == pytest.approx(MSDNET_MMACS[name], rel=0.02)
    assert fv.params == ms.params
    rel = fv.rel_diff()
    assert rel is not None and all(abs(r) < 0.03 for r in rel)  # ptflops agrees


def test_msdnet_imagenet_costs_and_params_match_the_papers() -> None:
    from eebench.zoo import create_model

    step4 = count_costs(
        create_model("msdnet_imagenet_step4"), convention="msdnet", cross_check=False
    )
    assert step4.input_size == (3, 224, 224)
    assert _mmacs(step4) == pytest.approx(MSDNET_MMACS["msdnet_imagenet_step4"], rel=0.01)
    step7 = count_costs(
        create_model("msdnet_imagenet_step7"), convention="msdnet", cross_check=False
    )
    assert _mmacs(step7) == pytest.approx(MSDNET_MMACS["msdnet_imagenet_step7"], rel=0.01)
    mparams = [p / 1e6 for p in step7.params]
    assert mparams == pytest.approx([8.76, 20.15, 31.73, 41.86, 62.31], rel=0.01)


# --------------------------------------------------------------------------- dynperceiver


def test_dynperceiver_convention_is_listed_and_refuses_other_models(capsys) -> None:
    from eebench.cli import main

    assert "forward_calc_flops" in CONVENTIONS["dynperceiver"].description
    assert main(["costs", "--list-conventions"]) == 0
    assert "\ndynperceiver: The per-exit costs" in "\n" + capsys.readouterr().out
    with pytest.raises(ValueError, match=r"prices Dynamic Perceiver models only .* TwoExitConv"):
        count_costs(TwoExitConv(), convention="dynperceiver")
