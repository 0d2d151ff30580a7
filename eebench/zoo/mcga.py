"""MCGA: a hybrid backbone of multi-scale depth-wise convolutions and group attention.

MCGA ("Multi-scale Convolutions Meet Group Attention") is one of this project's seed
papers. We know of no public code or checkpoint, and we could not find the paper's text
in the reference corpora (searched "pages", "docs" and "code"). This module is built from
the issue's specification:

    the 4-stage hybrid backbone (channels 32-64-128-256, blocks 2-2-6-6, heads 2-2-4-8,
    8 group tokens, MLP ratio 4, multi-scale 3x3 and 5x5 depth-wise convolutions, group
    attention, spatial MLP mixing of group tokens, propagation back by cross attention):
    `mcga` as a static single-exit model (published: 10.3 M parameters, 0.7 GMACs at
    224; within 10%) and `mcga_exits` with heads after stages 2, 3 and 4.

Where the specification is silent we made the choices below, so that anyone comparing
against the paper can see what we assumed.

Stem. Two 3x3 stride-2 convolutions (3 -> 16 -> 32 channels), each followed by BN and
GELU: 224 -> 56, so stages 1-4 run at 56, 28, 14 and 7 (stride 4, 8, 16, 32).

Downsampling. Stages 2-4 begin with a 2x2 stride-2 convolution (no bias) from the previous
width to the stage's width, then BN: non-overlapping patch merging written as a
convolution, as in ConvNeXt. A 3x3 stride-2 convolution would cost 24 M MACs more (and
0.2 M parameters more); we chose 2x2 to stay near the published 0.7 GMACs.

Block (every stage, every block, on a (B, C, H, W) map; N = H*W feature tokens):

1. Multi-scale local mixing: ``x = x + cat(dw3x3(a), dw5x5(b))`` where ``(a, b)`` is
   ``BN(x)`` split into two channel halves (MixConv-style: each depth-wise kernel size
   sees half of the channels; the convolutions have biases). There is no activation and
   no 1x1 projection here; the block's MLP mixes channels. A 1x1 projection after the
   depth-wise convolutions costs 51 M MACs (and 0.5 M parameters); with it and 3x3
   downsampling a first draft counted 0.785 GMACs, 12% over, so we left it out.
2. Group attention (gather): each block owns 8 learnable group tokens ``g`` (1, 8, C),
   initialised with a truncated normal (std 0.02). ``g = g + CA(LN(g), LN(tokens))``:
   the group tokens are the queries and the N feature tokens the keys and values.
3. Spatial MLP mixing of the group tokens: ``g = g + MLP_G(LN(g)^T)^T``, an MLP-Mixer
   token-mixing MLP across the 8 group tokens (8 -> 32 -> 8, ``group_mix_ratio = 4``,
   GELU), shared by all channels.
4. Group channel MLP: ``g = g + MLP_C(LN(g))`` with hidden width ``1.5 C``
   (``group_mlp_ratio = 1.5``), the channel half of a Mixer layer, on the 8 group
   tokens only. The specification does not name it. We added it because without it the
   literal widths give 8.60 M parameters, 1.7 M (16.5%) short of 10.3 M; acting on 8 tokens
   only, it adds 1.52 M parameters but only 12 M MACs. The ratio 1.5 was picked to land
   near the published parameter count. ``group_mlp_ratio = 0`` removes it.
5. Propagation back: ``tokens = tokens + CA(LN(tokens), LN(g))``: the feature tokens
   query the mixed group tokens.
6. MLP: ``tokens = tokens + MLP(LN(tokens))``, hidden ``4 C`` (MLP ratio 4), GELU.

CA is multi-head cross attention with the stage's head count (2-2-4-8, head width 16 in
stage 1 and 32 after): a query projection, one key-value projection, and an output
projection, all linear with bias; ``softmax(q k^T / sqrt(d)) v`` is written as explicit
matmuls so fvcore counts both products. There are no position embeddings: the
depth-wise convolutions carry position, as in CPVT's conditional encodings. There is no
dropout or drop-path (inference-only model). LayerNorms use eps 1e-5.

Heads. A head is LayerNorm over channels, global average pooling of the tokens, and a
linear classifier. ``mcga`` has one head after stage 4; ``mcga_exits`` has heads after
stages 2, 3 and 4. Heads live in a ModuleDict keyed by stage (``heads.stage4``), so the
stage-4 head has the same keys in both models. ``mcga``'s state_dict is therefore a
subset of ``mcga_exits``' (the extra keys are ``heads.stage2.*`` and ``heads.stage3.*``),
and ``mcga`` weights load into ``mcga_exits``' backbone and last head with
``load_state_dict(..., strict=False)``. ``iter_exits`` runs the stem, then stage by stage,
and evaluates a head right after its stage, so stopping at exit k runs no later stage.

Costs. These are fvcore counts at 224x224 (cost_convention "fvcore"), cumulative, with
earlier heads included and 1000 classes.

* ``mcga``: 721.3 M MACs (+3.0% vs 0.7 G) and 10.12 M parameters (-1.7% vs 10.3 M).
* ``mcga_exits``: 202.0 M MACs / 0.29 M parameters at exit 0 (stage 2), 455.9 M / 2.36 M
  at exit 1 (stage 3), and 721.9 M / 10.32 M at exit 2 (stage 4).

Other choices. Normalisation is ImageNet's. Evaluation uses bicubic resizing and
``crop_pct = 0.875``, the usual recipe for hybrid backbones trained with timm/DeiT
recipes. Any input of at least 32x32 works; the four stages need the resolution.
Initialisation: linear layers get a truncated normal (std 0.02) and zero bias;
convolutions get He-normal (fan-out); norms are identity. The state_dict keys are our
own: no official checkpoint exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from eebench.zoo.base import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, MultiExitModel
from eebench.zoo.registry import register_model

NUM_STAGES = 4
MIN_SIZE = 32


class ConvStem(nn.Sequential):
    """Two strided 3x3 conv-BN-GELU layers: 224 -> 56 before the first stage."""

    def __init__(self, c_out: int) -> None:
        c_mid = max(1, c_out // 2)
        super().__init__(
            nn.Conv2d(3, c_mid, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c_mid),
            nn.GELU(),
            nn.Conv2d(c_mid, c_out, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class Downsample(nn.Module):
    """Strided 3x3 conv and BN between stages: half the resolution, the next stage's width."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 2, 2, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class MultiScaleConv(nn.Module):
    """Local mixing: BN, then depth-wise convs of several kernel sizes, one per channel slice.

    Slicing the channels (MixConv) gives several receptive fields at the cost of one.
    """

    def __init__(self, dim: int, kernel_sizes: Sequence[int]) -> None:
        super().__init__()
        n = len(kernel_sizes)
        self.splits = [dim // n + (1 if i < dim % n else 0) for i in range(n)]
        self.norm = nn.BatchNorm2d(dim)
        self.dw = nn.ModuleList(
            nn.Conv2d(c, c, k, 1, k // 2, groups=c) for c, k in zip(self.splits, kernel_sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(self.norm(x), self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.dw, parts)], dim=1)


class CrossAttention(nn.Module):
    """Multi-head attention of one token set (queries) over another (keys and values).

    The two products are explicit matmuls so that fvcore counts them.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, lq, c = queries.shape
        lk = context.shape[1]
        h = self.num_heads
        q = self.q(queries).reshape(b, lq, h, c // h).transpose(1, 2)
        kv = self.kv(context).reshape(b, lk, 2, h, c // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, lq, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear - GELU - Linear along the last dimension."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MCGABlock(nn.Module):
    """Multi-scale conv, group attention (gather, mix, propagate back) and an MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_groups: int,
        mlp_ratio: float,
        group_mix_ratio: float,
        group_mlp_ratio: float,
        kernel_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.local = MultiScaleConv(dim, kernel_sizes)
        self.group_tokens = nn.Parameter(torch.zeros(1, num_groups, dim))
        self.norm_groups = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.gather = CrossAttention(dim, num_heads)
        self.norm_mix = nn.LayerNorm(dim)
        self.group_mix = Mlp(num_groups, max(1, round(num_groups * group_mix_ratio)))
        if group_mlp_ratio > 0:
            self.norm_group_mlp = nn.LayerNorm(dim)
            self.group_mlp = Mlp(dim, max(1, round(dim * group_mlp_ratio)))
        else:
            self.norm_group_mlp = None
            self.group_mlp = None
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.scatter = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x + self.local(x)
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        g = self.group_tokens.expand(b, -1, -1)
        g = g + self.gather(self.norm_groups(g), self.norm_tokens(t))
        g = g + self.group_mix(self.norm_mix(g).transpose(1, 2)).transpose(1, 2)
        if self.group_mlp is not None:
            g = g + self.group_mlp(self.norm_group_mlp(g))
        t = t + self.scatter(self.norm_query(t), self.norm_context(g))
        t = t + self.mlp(self.norm_mlp(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class Stage(nn.Module):
    """Optional downsampling, then the stage's blocks."""

    def __init__(self, downsample: nn.Module | None, blocks: list[MCGABlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class ExitHead(nn.Module):
    """LayerNorm over channels, global average pooling, linear classifier."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(x.flatten(2).transpose(1, 2))
        return self.fc(t.mean(dim=1))


class MCGA(MultiExitModel):
    """The four-stage MCGA backbone with classification heads after chosen stages."""

    def __init__(
        self,
        num_classes: int = 1000,
        channels: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (2, 2, 6, 6),
        num_heads: Sequence[int] = (2, 2, 4, 8),
        num_groups: int = 8,
        mlp_ratio: float = 4.0,
        group_mix_ratio: float = 4.0,
        group_mlp_ratio: float = 1.5,
        kernel_sizes: Sequence[int] = (3, 5),
        exit_stages: Sequence[int] = (4,),
        name: str = "mcga",
    ) -> None:
        super().__init__()
        channels, depths, num_heads = list(channels), list(depths), list(num_heads)
        kernel_sizes, exit_stages = list(kernel_sizes), list(exit_stages)
        _validate(
            num_classes,
            channels,
            depths,
            num_heads,
            num_groups,
            mlp_ratio,
            group_mix_ratio,
            group_mlp_ratio,
            kernel_sizes,
            exit_stages,
        )
        self.stem = ConvStem(channels[0])
        stages = []
        for i in range(NUM_STAGES):
            down = Downsample(channels[i - 1], channels[i]) if i > 0 else None
            blocks = [
                MCGABlock(
                    channels[i],
                    num_heads[i],
                    num_groups,
                    mlp_ratio,
                    group_mix_ratio,
                    group_mlp_ratio,
                    kernel_sizes,
                )
                for _ in range(depths[i])
            ]
            stages.append(Stage(down, blocks))
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleDict(
            {f"stage{s}": ExitHead(channels[s - 1], num_classes) for s in exit_stages}
        )
        self.exits = [f"stage{s}" for s in exit_stages]
        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, 224, 224),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bicubic",
            crop_pct=0.875,
            arch=dict(
                channels=channels,
                depths=depths,
                num_heads=num_heads,
                num_groups=num_groups,
                mlp_ratio=mlp_ratio,
                group_mix_ratio=group_mix_ratio,
                group_mlp_ratio=group_mlp_ratio,
                kernel_sizes=kernel_sizes,
                exit_stages=exit_stages,
            ),
            checkpoint_note=(
                "No official code or checkpoint exists; the state_dict keys are this module's "
                "own (stem, stages.<i>.downsample, stages.<i>.blocks.<j>, heads.stage<s>). "
                "The heads are keyed by stage, so a single-exit checkpoint holds a subset of "
                "a multi-exit one's keys."
            ),
            cost_convention="fvcore",
        )
        self._exit_after = {s - 1: k for k, s in enumerate(exit_stages)}
        self.apply(_init_weights)

    def iter_exits(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.config.name} expects images of shape (batch, 3, height, width), got "
                f"{tuple(x.shape)}; add a batch dimension or convert the images to RGB"
            )
        if x.shape[-2] < MIN_SIZE or x.shape[-1] < MIN_SIZE:
            raise ValueError(
                f"{self.config.name} needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                f"(four stages halve the resolution after a stride-4 stem), got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the images (the model was designed "
                f"for {self.config.input_size[1]}x{self.config.input_size[2]})"
            )
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            k = self._exit_after.get(i)
            if k is not None:
                yield k, self.heads[self.exits[k]](x)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, MCGABlock):
        nn.init.trunc_normal_(m.group_tokens, std=0.02)


def _validate(
    num_classes: int,
    channels: list[int],
    depths: list[int],
    num_heads: list[int],
    num_groups: int,
    mlp_ratio: float,
    group_mix_ratio: float,
    group_mlp_ratio: float,
    kernel_sizes: list[int],
    exit_stages: list[int],
) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    for what, seq in (("channels", channels), ("depths", depths), ("num_heads", num_heads)):
        if len(seq) != NUM_STAGES or not all(isinstance(v, int) and v > 0 for v in seq):
            raise ValueError(
                f"{what} must be {NUM_STAGES} positive integers, one per stage; got {seq!r}"
            )
    for i, (c, h) in enumerate(zip(channels, num_heads)):
        if c % h:
            raise ValueError(
                f"stage {i + 1}: channels {c} are not divisible by num_heads {h}; pick a head "
                "count that divides the width"
            )
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
    if mlp_ratio <= 0 or group_mix_ratio <= 0 or group_mlp_ratio < 0:
        raise ValueError(
            "mlp_ratio and group_mix_ratio must be > 0 and group_mlp_ratio >= 0; got "
            f"{mlp_ratio!r}, {group_mix_ratio!r}, {group_mlp_ratio!r}"
        )
    if not kernel_sizes or not all(isinstance(k, int) and k > 0 and k % 2 for k in kernel_sizes):
        raise ValueError(
            f"kernel_sizes must be odd positive integers (same-size padding), got {kernel_sizes!r}"
        )
    if min(channels) < len(kernel_sizes):
        raise ValueError(
            f"each stage needs at least one channel per kernel size; channels {channels} vs "
            f"{len(kernel_sizes)} kernel sizes"
        )
    if (
        not exit_stages
        or not all(isinstance(s, int) and 1 <= s <= NUM_STAGES for s in exit_stages)
        or sorted(set(exit_stages)) != exit_stages
    ):
        raise ValueError(
            f"exit_stages must be distinct stage numbers 1..{NUM_STAGES} in increasing order, "
            f"got {exit_stages!r}"
        )
    if exit_stages[-1] != NUM_STAGES:
        raise ValueError(
            f"the last exit must follow stage {NUM_STAGES} (a stage after the last exit would "
            f"never run); got exit_stages={exit_stages!r}"
        )


def _build(name: str, exits: tuple[int, ...], num_classes: int, **overrides: Any) -> MCGA:
    kw: dict[str, Any] = dict(num_classes=num_classes, exit_stages=exits, name=name)
    kw.update(overrides)
    return MCGA(**kw)


@register_model
def mcga(num_classes: int = 1000, **overrides: Any) -> MCGA:
    """Static MCGA: one exit after stage 4."""
    return _build("mcga", (4,), num_classes, **overrides)


@register_model
def mcga_exits(num_classes: int = 1000, **overrides: Any) -> MCGA:
    """MCGA with exits after stages 2, 3 and 4 (the last head is mcga's)."""
    return _build("mcga_exits", (2, 3, 4), num_classes, **overrides)
