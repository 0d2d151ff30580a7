"""MCGA: multi-scale depth-wise convolutions meet group attention (Vo et al.).

A four-stage hierarchical backbone (Section 3 of Vo et al., "Multi-scale Convolutions
Meet Group Attention for Dense Prediction Tasks"). No official code or checkpoint is
public, so the module is built from the paper's text alone. Below, each part of the paper's description is
followed by what this module does; "Choice" marks what the paper leaves open and what
we picked. Section numbers refer to the paper.

Overview (Section 3, Fig. 1)
----------------------------
* Four stages with strides 4, 8, 16 and 32; each is one patch embedding followed by a
  stack of MCGA blocks; average pooling and linear layers give the output.
  Here: ``stages[i] = Stage(PatchEmbed, blocks)`` with patch sizes 4, 2, 2, 2.
* The patch embedding is a depth-wise convolution with stride p, p the patch size.
  Here: a p x p convolution with stride p (non-overlapping patches) and
  ``groups = gcd(c_in, c_out)``. Between stages (C -> 2C) that is exactly a depth-wise
  convolution with two filters per input channel. Choice: the first embedding maps the
  3 image channels to 32, which no depth-wise convolution can do (32 is not a multiple
  of 3), so there ``gcd = 1`` makes it an ordinary 4x4/4 convolution (1.6 k parameters).
  Choice: a LayerNorm over channels follows each embedding, as in PVT, which the paper
  says it follows.
* Classifier. The paper pools and then applies linear layers (plural) that produce the
  scores and a final output embedding; it gives no width. Choice: the head is LayerNorm, global
  average pooling, ``Linear(C4, 1280)`` (the output embedding), GELU, and
  ``Linear(1280, classes)``. We read the plural as two layers because the network as
  described (below) counts 8.94 M parameters with a single linear classifier, 13% short
  of the published 10.3 M; the embedding layer closes that gap at 1.6 M MACs. The width
  1280 is MobileNetV2's last-layer width (MobileNetV2 is cited by the paper); it was
  not tuned, but it was chosen knowing the parameter target: every unit of width adds
  1257 parameters, so widths from about 1040 to 1530 would also land within 3% of
  10.3 M. The final LayerNorm is our choice (the blocks are pre-norm, so the last
  block's output is unnormalised, and PVT/Swin/DeiT normalise it before the head).

MCGA block (Section 3.1, Fig. 2)
--------------------------------
* LayerNorm, MCGA attention, LayerNorm, channel MLP, and two shortcuts:
  ``x = x + attn(LN(x))``, then ``x = x + MLP(LN(x))``.
* The channel MLP is FC, GELU, FC with expansion ratio 4 in every stage (Section 3.2,
  model configuration): hidden width ``4 d``.

MCGA attention (Section 3.2, Figs. 3 and 4); ``X`` is the normalised block input, L
tokens of d channels, ``X^r`` the same tokens as a d x H x W map:

* Multi-scale convolutions, eqs. (1)-(2): ``Q3 = DWConv3x3(X^r)`` and
  ``Q5 = DWConv5x5(X^r)``. Here: two depth-wise convolutions (one filter per channel,
  same padding, with bias), each on all d channels of the same input (no channel split).
  Their outputs are the queries of the propagation attentions and are not projected
  further: the paper names the convolution output itself the query. (The other reading,
  a linear query projection per branch, would add 2 d^2 MACs per image token: 0.797 G
  in all, 14% over the published 0.7 G.)
* Group attention, eq. (3): ``GA(T, X) = softmax(Q_G K_I^T / sqrt(d)) V_I`` with
  ``Q_G = T W_Q``, ``K_I = X W_K``, ``V_I = X W_V`` (d x d each) and G = 8 learnable
  group tokens ``T``. Here: exactly those three projections, without bias as written
  in eq. (3); one ``T`` of shape (8, d) per block. The output is the G x d grouped
  features; eq. (3) has no output projection and none is added. Multi-head, with the
  stage's head count (2, 2, 4, 8, which Section 3.2 gives for every group attention)
  splitting d. Choice: the usual per-head scale ``(d / heads) ** -0.5`` in place of
  ``d ** -0.5`` (a constant factor that the learned projections absorb).
* Feature propagation, Spatial MLPMixer: the grouped features are mixed across the G
  tokens (every grouped feature connected to all of them). Here: an MLP-Mixer
  token-mixing layer on the 8 tokens, ``M = Y + MLP_G(LN(Y)^T)^T``, with
  ``MLP_G = Linear(8, 32), GELU, Linear(32, 8)`` shared across channels. Choice: the
  hidden width ``4 G`` (the paper's MLP ratio 4; ``group_mix_ratio``), the LayerNorm and
  the shortcut, as in MLP-Mixer's token-mixing layer. MLP-Mixer's channel-mixing MLP is
  not part of a "spatial" mixer and is left out.
* Two propagation attentions, one per convolution branch: the mixed global features
  give key ``K_M`` and value ``V_M``; the 3x3 output ``Q3`` (respectively ``Q5``) is the
  query. Here: ``A_k = Q_k + softmax(Q_k K_M^T * s) V_M`` with ``K_M = M W_K^k`` and
  ``V_M = M W_V^k``. Choices: each branch has its own key and value projections (the
  paper speaks of two group attentions), without bias as in eq. (3), with the stage's
  heads; ``Q_k +`` keeps the local features and adds the global context (the paper
  describes the local features as updated by what their queries read from the global
  ones); without it the values would hold global features only and no local texture
  would pass the attention.
* Fusion: the two branch outputs are fused by linear projections and summation. Here:
  ``out = P3(A_3) + P5(A_5)`` with two ``Linear(d, d)`` (with bias; the sum of two biases
  is one redundant bias of d values per block, kept for symmetry).

Model configuration (Section 3.2)
---------------------------------
Channels 32, 64, 128, 256; blocks 2, 2, 6, 6; heads 2, 2, 4, 8; MLP ratio 4; 8 group
tokens (Section 3.2 and Introduction: 8 group tokens vs 3136 image tokens in stage 1).

Other choices: no position embeddings (the paper gives the depth-wise convolutions that
role); no dropout or drop-path (inference model); LayerNorm eps 1e-5; GELU everywhere;
linear layers initialised with a truncated normal (std 0.02) and zero bias, group tokens
likewise, convolutions He-normal (fan-out), norms identity. Normalisation is ImageNet's;
evaluation resizes bicubic with ``crop_pct = 0.875`` (the DeiT/PVT recipe the paper
trains with; it states only the 224x224 input). Any input of at least 32x32 works.

Costs at 224x224, counted by eebench's fvcore convention (one multiply-add counts one,
attention products included, elementwise operations not): the paper's "0.7 GFLOPs" is
read as 0.7 G multiply-accumulates under that convention, the paper's tool being
unknown. ``mcga``: 10,296,264 parameters (-0.04% vs 10.3 M) and 0.6943 GMACs (-0.8% vs
0.7 G). The MACs are dominated by the layers applied to all L image tokens (the channel
MLP, the group attention's K and V, the two fusion projections: 12 d^2 per token per
block, 617 M in all); the projections on the 8 group tokens (5 d^2 per group token per
block) cost 20 M, the attention products 25 M and the depth-wise convolutions 18 M.

Multi-exit extension (eebench's, not the paper's)
-------------------------------------------------
The paper's model has one exit: ``mcga``. ``mcga_exits`` is eebench's extension: the
same backbone with the same kind of head after stages 2, 3 and 4. Heads live in a
ModuleDict keyed by stage (``heads.stage4``), so ``mcga``'s state_dict is a subset of
``mcga_exits``' and its weights load into the backbone and last head of ``mcga_exits``
with ``strict=False``. ``iter_exits`` evaluates a head right after its stage, so
stopping at exit k runs no later stage; with a batch, a keep-mask sent after exit k slices
the stage's feature map (the only state carried between stages) to the samples that
continue, so later stages run on those alone. ``mcga_exits`` costs 0.190 / 0.441 / 0.697 GMACs
and 1.55 / 4.72 / 13.11 M parameters at its three exits (cumulative, earlier heads
included; every head has the 1280-wide output embedding).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import torch
from torch import nn

from eebench.errors import InputError
from eebench.zoo.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    MultiExitModel,
    check_keep,
    keep_rows,
)
from eebench.zoo.registry import register_model

NUM_STAGES = 4
#: Patch sizes of the four patch embeddings: strides 4, 8, 16 and 32 (Section 3).
PATCH_SIZES = (4, 2, 2, 2)
MIN_SIZE = 32


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


def _map(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


class PatchEmbed(nn.Module):
    """p x p convolution with stride p, as depth-wise as the widths allow, then LayerNorm.

    ``groups = gcd(c_in, c_out)``: depth-wise (two filters per channel) from C to 2C; an
    ordinary convolution from the 3 image channels.
    """

    def __init__(self, c_in: int, c_out: int, patch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, patch, patch, groups=math.gcd(c_in, c_out))
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return _map(self.norm(_tokens(x)), x.shape[2], x.shape[3])


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).transpose(1, 2)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float
) -> torch.Tensor:
    """Multi-head ``softmax(q k^T * scale) v`` on (B, N, C) tensors.

    Explicit matmuls, so that fvcore counts both products.
    """
    b, n, c = q.shape
    q, k, v = (_split_heads(t, heads) for t in (q, k, v))
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(b, n, c)


class GroupAttention(nn.Module):
    """Eq. (3): G learnable group tokens query all image tokens; output (B, G, d)."""

    def __init__(self, dim: int, num_heads: int, num_groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.group_tokens = nn.Parameter(torch.zeros(1, num_groups, dim))
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(self.group_tokens).expand(x.shape[0], -1, -1)
        return _attend(q, self.k(x), self.v(x), self.num_heads, self.scale)


class SpatialMixer(nn.Module):
    """MLP-Mixer token mixing across the G grouped features: ``y + MLP_G(LN(y)^T)^T``."""

    def __init__(self, dim: int, num_groups: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(num_groups, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.mlp(self.norm(y).transpose(1, 2)).transpose(1, 2)


class Propagation(nn.Module):
    """One branch's group attention back to the image tokens.

    The convolution output is the query as it is; the mixed group features give keys and
    values through this branch's own projections; the local query is updated by the
    result: ``q + softmax(q K_M^T * s) V_M``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)

    def forward(self, query: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        k, v = self.k(groups), self.v(groups)
        return query + _attend(query, k, v, self.num_heads, self.scale)


class MCGAAttention(nn.Module):
    """Multi-scale depth-wise convolutions as queries, group attention, spatial mixing,
    one propagation attention per convolution branch, fusion by projection and sum."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_groups: int,
        group_mix_ratio: float,
        kernel_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.kernel_sizes = list(kernel_sizes)
        self.dw = nn.ModuleList(nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim) for k in kernel_sizes)
        self.group_attn = GroupAttention(dim, num_heads, num_groups)
        self.mixer = SpatialMixer(dim, num_groups, max(1, round(num_groups * group_mix_ratio)))
        self.propagate = nn.ModuleList(Propagation(dim, num_heads) for _ in kernel_sizes)
        self.fuse = nn.ModuleList(nn.Linear(dim, dim) for _ in kernel_sizes)

    def forward(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        groups = self.mixer(self.group_attn(t))
        x_map = _map(t, h, w)
        out = None
        for dw, prop, fuse in zip(self.dw, self.propagate, self.fuse):
            branch = fuse(prop(_tokens(dw(x_map)), groups))
            out = branch if out is None else out + branch
        assert out is not None  # one branch per kernel size, and MCGA refuses an empty list
        return out


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
    """Section 3.1: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``, on a (B, C, H, W) map."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_groups: int,
        mlp_ratio: float,
        group_mix_ratio: float,
        kernel_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MCGAAttention(dim, num_heads, num_groups, group_mix_ratio, kernel_sizes)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        t = _tokens(x)
        t = t + self.attn(self.norm1(t), h, w)
        t = t + self.mlp(self.norm2(t))
        return _map(t, h, w)


class Stage(nn.Module):
    """One patch embedding, then the stage's blocks."""

    def __init__(self, embed: PatchEmbed, blocks: list[MCGABlock]) -> None:
        super().__init__()
        self.embed = embed
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(x))


class ExitHead(nn.Module):
    """LayerNorm, global average pooling, output embedding (Linear, GELU), classifier."""

    def __init__(self, dim: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pre_logits = nn.Linear(dim, embed_dim)
        self.act = nn.GELU()
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.norm(_tokens(x)).mean(dim=1)
        return self.fc(self.act(self.pre_logits(pooled)))


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
        kernel_sizes: Sequence[int] = (3, 5),
        embed_dim: int = 1280,
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
            kernel_sizes,
            embed_dim,
            exit_stages,
        )
        stages = []
        for i in range(NUM_STAGES):
            c_in = channels[i - 1] if i > 0 else 3
            blocks = [
                MCGABlock(
                    channels[i], num_heads[i], num_groups, mlp_ratio, group_mix_ratio, kernel_sizes
                )
                for _ in range(depths[i])
            ]
            stages.append(Stage(PatchEmbed(c_in, channels[i], PATCH_SIZES[i]), blocks))
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleDict(
            {f"stage{s}": ExitHead(channels[s - 1], embed_dim, num_classes) for s in exit_stages}
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
                kernel_sizes=kernel_sizes,
                embed_dim=embed_dim,
                exit_stages=exit_stages,
            ),
            checkpoint_note=(
                "No official code or checkpoint exists; the state_dict keys are this module's "
                "own (stages.<i>.embed, stages.<i>.blocks.<j>, heads.stage<s>). The heads are "
                "keyed by stage, so a single-exit checkpoint holds a subset of a multi-exit "
                "one's keys."
            ),
            cost_convention="fvcore",
        )
        self._exit_after = {s - 1: k for k, s in enumerate(exit_stages)}
        self.apply(_init_weights)

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.config.name} expects images of shape (batch, 3, height, width), got "
                f"{tuple(x.shape)}; add a batch dimension or convert the images to RGB"
            )
        if x.shape[-2] < MIN_SIZE or x.shape[-1] < MIN_SIZE:
            raise InputError(
                f"{self.config.name} needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                f"(its four patch embeddings reduce the resolution 32-fold), got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the images (the model was designed "
                f"for {self.config.input_size[1]}x{self.config.input_size[2]})"
            )
        for i, stage in enumerate(self.stages):
            x = stage(x)
            k = self._exit_after.get(i)
            if k is None:
                continue
            logits = self.heads[self.exits[k]](x)
            keep = check_keep((yield k, logits), logits.shape[0])
            if i < NUM_STAGES - 1:
                x = keep_rows(x, keep)  # the feature map is all a later stage reads


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
    elif isinstance(m, GroupAttention):
        nn.init.trunc_normal_(m.group_tokens, std=0.02)


def _validate(
    num_classes: int,
    channels: list[int],
    depths: list[int],
    num_heads: list[int],
    num_groups: int,
    mlp_ratio: float,
    group_mix_ratio: float,
    kernel_sizes: list[int],
    embed_dim: int,
    exit_stages: list[int],
) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    for what, seq in (("channels", channels), ("depths", depths), ("num_heads", num_heads)):
        if len(seq) != NUM_STAGES or not all(isinstance(v, int) and v > 0 for v in seq):
            raise InputError(
                f"{what} must be {NUM_STAGES} positive integers, one per stage; got {seq!r}"
            )
    for i, (c, h) in enumerate(zip(channels, num_heads)):
        if c % h:
            raise InputError(
                f"stage {i + 1}: channels {c} are not divisible by num_heads {h}; pick a head "
                "count that divides the width"
            )
    if not isinstance(num_groups, int) or num_groups < 1:
        raise InputError(f"num_groups must be a positive integer, got {num_groups!r}")
    if not mlp_ratio > 0 or not group_mix_ratio > 0:
        raise InputError(
            f"mlp_ratio and group_mix_ratio must be > 0; got {mlp_ratio!r}, {group_mix_ratio!r}"
        )
    if (
        not kernel_sizes
        or not all(isinstance(k, int) and k > 0 and k % 2 for k in kernel_sizes)
        or len(set(kernel_sizes)) != len(kernel_sizes)
    ):
        raise InputError(
            "kernel_sizes must be distinct odd positive integers (same-size padding, one "
            f"branch each), got {kernel_sizes!r}"
        )
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise InputError(f"embed_dim must be a positive integer, got {embed_dim!r}")
    if (
        not exit_stages
        or not all(isinstance(s, int) and 1 <= s <= NUM_STAGES for s in exit_stages)
        or sorted(set(exit_stages)) != exit_stages
    ):
        raise InputError(
            f"exit_stages must be distinct stage numbers 1..{NUM_STAGES} in increasing order, "
            f"got {exit_stages!r}"
        )
    if exit_stages[-1] != NUM_STAGES:
        raise InputError(
            f"the last exit must follow stage {NUM_STAGES} (a stage after the last exit would "
            f"never run); got exit_stages={exit_stages!r}"
        )


def _build(name: str, exits: tuple[int, ...], num_classes: int, **overrides: Any) -> MCGA:
    kw: dict[str, Any] = dict(num_classes=num_classes, exit_stages=exits, name=name)
    kw.update(overrides)
    return MCGA(**kw)


@register_model
def mcga(num_classes: int = 1000, **overrides: Any) -> MCGA:
    """The paper's MCGA: one exit after stage 4."""
    return _build("mcga", (4,), num_classes, **overrides)


@register_model
def mcga_exits(num_classes: int = 1000, **overrides: Any) -> MCGA:
    """eebench's multi-exit extension: mcga's backbone with heads after stages 2, 3 and 4."""
    return _build("mcga_exits", (2, 3, 4), num_classes, **overrides)
