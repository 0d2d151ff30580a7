"""CHASE: multi-scale dense early exits with channel attention (CAM) and a global attention
layer (GAL), after Addad, Lechervy and Jurie, "CHASE: Channel-Wise and Spatial Attention for
Early Exiting in Image Classification".

No code or checkpoint of CHASE has been released. This module follows Section II of the
paper (Eq. 1-5, Table I, the captions of Fig. 1 and 2) statement by statement; where the
paper is silent the choice is ours and is marked *choice* (or *reading*, where the text
admits two meanings). The paper's numbers are in ``results/published/chase.csv``.

Notation. Blocks b = 1..B, scales s = 1..S (1 the finest), layers l = 1..L of a block (the
paper's l_last). x_{b,l}^s is what layer l of block b *adds* at scale s (Eq. 1 concatenates
these pieces explicitly); x_{b,0}^s is the block's input at that scale. The code counts from
0 (``blocks[b - 1]``, ``stacks[s - 1]``) and keeps each scale's pieces in a list that is
concatenated where a layer reads it.

Stem (Sec. II; the stem of the authors' ICCVW 2023 paper [19]: four convolutions with strided
and depth-wise convolutions and a residual connection). It gives x_{1,0}^1.
  *choice*: 3x3 conv (stride 2 at ImageNet, 1 at CIFAR) - BN - GELU; depth-wise 3x3 - BN -
  GELU; 1x1 - BN, added to the first conv's output (the residual); 3x3 conv (stride 2 / 1) -
  BN - GELU. ImageNet 224 -> 56, CIFAR 32 -> 32; width ``channels * gr_factor[0]``.

Coarser scales of block 1. The paper defines only x_{1,0}^1. Eq. 1 at l = 0 reads
x_{1,0}^s = f_{1,0}^s(x_{1,0}^{s-1}) (h of an empty stack is empty), which is what we build.
  *choice*: f_{1,0}^s is one 3x3 stride-2 conv - BN - GELU to ``channels * gr_factor[s]``
  channels (MSDNet's first layer); CAM precedes it, since Eq. 4 replaces Eq. 1 everywhere.

Eq. 1 and Table I (fusion). x_{b,l}^s = f(cat_{i<=l} x_{b,i}^{s-1}) (+) h(cat_{i<l} x_{b,i}^s).
  f reads the finer scale's stack *with* its layer-l output x_{b,l}^{s-1}, so the scales of
  a layer run finest first; h reads this scale's stack up to layer l - 1. The output holds
  f's channels, then h's. f(empty) = empty: at the finest scale alive (Table I's s = 1 row,
  scale 0 being empty) the unit has no f module at all.
  *choices*: f = 1x1 conv - BN - GELU (bottleneck) then 3x3 stride-2 conv - BN - GELU; h the
  same with stride 1. This is MSDNet's layer: the fusion block of [19] is not described in
  this paper. Bottleneck width ``min(C_in, bn_factor * C_out)`` (f uses the finer scale's
  factor). Layer l adds ``growth_rate * gr_factor[s]`` channels at scale s, half from f and
  half from h when both exist, all from h otherwise. GELU everywhere, as the paper names it
  for CAM and T_b.

Eq. 2 (scale discarding). Block b keeps the scales s >= b, so B <= S (``n_blocks`` larger
  than ``len(gr_factor)`` is refused). The discarded scale's stack is dropped before block b
  runs and no module of block b reads it: no transition for it, no f at the new finest scale.

Eq. 3 (transition). x_{b+1,0}^s = T_b(x_{b,L}^s) for every kept scale s >= b + 1; T_b is a
  1x1 conv - BN - GELU to ``floor(0.5 * C)`` channels (``reduction = 0.5``).
  *reading*: T_b takes the whole dense stack cat_{i<=L} x_{b,i}^s, the map a layer at depth
  L + 1 would receive (Section II defines x_{b,l}^s as the map *input to* a layer). Applied to
  the last layer's new channels alone, the halving would drop the block's features and shrink
  the network at every block, contrary to its stated purpose (to stop the stack from growing).
  The classifier input x_{b_k,l_k}^S of Eq. 5 is read the same way.

Eq. 4 (CAM). CAM sits before f and before h, separately, on each one's concatenated input: one
  CAM module per f and per h, sized to that input. Squeeze and excitation: global average
  pooling, 1x1 conv C -> C // r with bias, GELU, 1x1 conv C // r -> C with bias, sigmoid,
  channel-wise product; r = 2; no batch norm.
  *choice*: no CAM before a GAL. The paper puts channel weighting in the convolutional stages
  and self-attention in the last one (Sec. I, II-B); attention weighs its inputs itself.

GAL (Sec. II-A, Fig. 1, Fig. 2b caption). Self-attention with conditional positional encoding,
  only in the final block, at the lowest resolution; Fig. 1 draws two convolution blocks and
  an *attention block* (S = 3).
  *reading*: GAL is a layer (Fig. 2 shows it beside the fusion block and CAM) and Sec. II-A
  presents self-attention as a substitute for convolutional layers, so the attention block is
  the final block with its same-scale h replaced by GAL: with B = S it keeps only the coarsest
  scale, f is empty, and every layer is x_{B,l}^S = GAL(cat_{i<l} x_{B,i}^S). The variant of
  Sec. III-C with "GAL in the last scale of the two final blocks" (``_gal2``) also replaces h
  at the coarsest scale of block B - 1, where f still brings in the finer scale.
  *choices*: a GAL layer is CPE (a depth-wise 3x3 conv with bias added to its input, as in
  CPVT [24]) -> LayerNorm over channels -> multi-head self-attention over the H*W tokens whose
  query/key/value keep the input width C (the O(HWC^2 + (HW)^2 C) of Sec. II-A) -> a linear
  projection to the layer's new channels. 4 heads at ImageNet, 2 at CIFAR. No MLP
  (``gal_mlp_ratio = 0``, the paper names none; a ratio > 0 adds a pre-norm MLP with a
  residual on the output). The tokens are reshaped to a 2D map before the dense concatenation
  and hence before the classifier (Sec. II-C).

Exits (Sec. II-C). K exits, one every kappa layers of the B blocks, the last on the last
  layer, each classifier g_k reading the coarsest scale S (s_max); an exit that falls between
  two blocks reads after the transition.
  Exit k < K sits after global layer k * kappa, at (b_k, l_k) with l_k = (k * kappa) mod L as
  printed; l_k = 0 means between blocks b_k - 1 and b_k, read at x_{b_k,0}^S =
  T_{b_k-1}(...). Only T of scale S runs before such an exit, the other scales' transitions
  right after it. The printed b_k = ceil((k - 1) * kappa / L) gives b_1 = 0 with blocks counted
  from 1 (counted from 0 it matches "every kappa layers" only for L/2 <= kappa < L); we use
  b_k = floor(k * kappa / L) + 1, which agrees with the printed l_k and the between-blocks
  rule. ``exit_positions`` lists (b_k, l_k); exit names are ``block{b_k}_layer{l_k}``. When
  kappa does not divide B * L the last exit still follows the last layer.
  *choices*: g_k = 3x3 stride-2 conv - BN - GELU twice (MSDNet's classifier), width
  ``head_width``, global average pooling, a linear layer.

Eq. 5 (loss). The sum over exits of the cross-entropy, equal weights, averaged over samples:
  ``eebench.train.multi_exit_loss`` with its defaults (``exit_weights=None``, no
  distillation) is exactly this, so training CHASE needs nothing specific to it.

Configuration (Section II gives no widths or depths; Section III constrains them). The
ImageNet budgeted curve reaches 0.3 GFLOPs, so the first exit costs at most that; the last two
exits cost 2.15 and 2.6 G (Sec. III-B), the gal2 model's last exit 3.19 G (Sec. III-C); and a
budgeted average cannot exceed a model's last exit, so the ablations quoted at 1.91 G (no CAM,
no GAL) and 1.94 G (CAM only) need last exits at least that dear. We counted a grid
analytically in the fvcore convention (S = 3 and B = 3 as in Fig. 1; L 3..9; kappa 2..5;
channels 16..64; growth 8..48; gr_factor = bn_factor among (1, 2, 2), (1, 2, 3), (1, 2, 4),
(1, 1, 2); head width 128..384 or the input's; no MLP), kept the configurations with a first
exit <= 0.3 G and exits evenly spaced (kappa dividing B * L), and ranked them by the worst
relative error on 2.15 / 2.6 / 3.19. Only gr_factor (1, 2, 2) with L = 6, kappa = 2 meets all
of this within 5% (the MSDNet factors (1, 2, 4) need an uneven last gap, L = 5 with kappa =
2); a finer grid there (channels 16..64 and growth 16..38 in steps of 2, head width 128..512
in steps of 32 or the input's) gave
the configuration below, the best one whose GAL widths 4 heads divide: 3 scales (56/28/14),
3 blocks of L = 6 layers, kappa = 2 (9 exits), ``channels = 28``, ``growth_rate = 26``,
gr_factor = bn_factor = (1, 2, 2), heads 416 wide, 4 GAL heads. fvcore (224x224, cumulative,
earlier heads included), in GMACs:

    chase_imagenet         0.234 0.461 0.724 1.004 1.277 1.576 1.805 2.150 2.639
    chase_imagenet_gal2    0.234 0.461 0.724 1.083 1.514 2.077 2.305 2.651 3.139
    chase_imagenet_nogal   ... (as chase_imagenet to exit 6)       1.697 1.841 2.009
    chase_imagenet_noattn  0.233 0.458 0.717 0.995 1.267 1.563 1.684 1.827 1.994

so 2.15 (+0.0%), 2.6 (+1.5%) and 3.19 (-1.6%), and the ablations reach 1.94 / 1.91 G.
``cost_convention = "fvcore"``.

CIFAR (not in Section II; *choice*, not the paper's): the same layout (S = 3 at 32/16/8,
B = 3, L = 6, kappa = 2) with MSDNet's CIFAR widths, ``channels = 16``, ``growth_rate = 6``,
128-wide heads, 2 GAL heads: 9.5 ... 63.0 MMACs (CIFAR-10), so the first exit lies far below
the 2.7e7 and 5.5e7 FLOPs budgeted points of Sec. III-A and the last above them.

Other choices. The model takes any input size (CPE needs no position table, the heads pool
globally); ``config.input_size`` (224 or 32) is the size costs refer to. ImageNet, CIFAR-10 and
CIFAR-100 normalisation statistics; ImageNet evaluation with Resize(256) and CenterCrop(224)
(``crop_pct = 0.875``, bilinear). Initialisation: He-normal convolutions (fan-out), BN and LN
as identity, zero biases, truncated-normal (std 0.02) linear layers. The state_dict keys are
our own (``stem``, ``blocks.{b}.entry|transition|layers``, ``heads``).

Execution. ``iter_exits`` does only what the next exit needs: every scale of the layers up to
l_k (scale S at layer l needs scale S - 1 at layer l, and so on down to the finest), and
before a between-blocks exit only the transition of scale S. The per-scale stacks are the only
state carried from one exit to the next; a keep-mask sent after an exit (real early exit with a
batch, ``run_exits``) slices them, so the samples that left are not computed further.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import torch
from torch import nn

from eebench.errors import InputError
from eebench.zoo.base import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    MultiExitModel,
    check_keep,
    keep_rows,
)
from eebench.zoo.registry import register_model

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class ConvBNAct(nn.Sequential):
    """conv (no bias) - BN - GELU: the unit every CHASE convolution path is made of."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class Stem(nn.Module):
    """Four convolutions: strided 3x3, depth-wise 3x3 and pointwise 1x1 (residual), strided 3x3.

    The residual pair refines the first feature map at no change of shape, so
    the cheap depth-wise path adds spatial context without costing resolution.
    """

    def __init__(self, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(3, c_out, 3, stride)
        self.conv2 = ConvBNAct(c_out, c_out, 3, 1, groups=c_out)
        self.conv3 = nn.Sequential(nn.Conv2d(c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.conv4 = ConvBNAct(c_out, c_out, 3, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x + self.conv3(self.conv2(x))
        return self.conv4(x)


class CAM(nn.Module):
    """Channel attention of Eq. 4: squeeze and excitation (reduction r, GELU, no BN, sigmoid)
    on the concatenated input of one f or h, re-weighting its channels before the layer."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def _bottleneck_conv(c_in: int, c_out: int, stride: int, bn_width: int) -> nn.Sequential:
    """1x1 bottleneck then 3x3 conv (stride 2 for f, 1 for h), each conv - BN - GELU."""
    inner = min(c_in, bn_width * c_out)
    return nn.Sequential(ConvBNAct(c_in, inner, 1, 1), ConvBNAct(inner, c_out, 3, stride))


class GAL(nn.Module):
    """Global attention layer: conditional positional encoding, then multi-head self-attention
    over the H*W tokens, in the place of a same-scale convolution h (``c_in`` -> ``c_out``).

    The CPE (a depth-wise 3x3 conv added to its input) gives the tokens their
    position from the content around them, so the layer needs no fixed-size
    position table. Query, key and value keep the input's width (the paper's
    O(HWC^2 + (HW)^2 C)); the output projection gives the layer's ``c_out`` new
    channels, which the dense stack concatenates as it would an h output. The
    products are written as explicit matmuls so that fvcore counts them.
    """

    def __init__(self, c_in: int, c_out: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (c_in // heads) ** -0.5
        self.cpe = nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in)
        self.norm = nn.LayerNorm(c_in)
        self.qkv = nn.Linear(c_in, 3 * c_in)
        self.proj = nn.Linear(c_in, c_out)
        self.mlp: nn.Sequential | None = None
        if mlp_ratio > 0:
            hidden = max(1, round(mlp_ratio * c_out))
            self.mlp = nn.Sequential(
                nn.LayerNorm(c_out), nn.Linear(c_out, hidden), nn.GELU(), nn.Linear(hidden, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe(x)
        b, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, d)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, h * w, c))
        if self.mlp is not None:
            out = out + self.mlp(out)
        return out.transpose(1, 2).reshape(b, -1, h, w)  # back to a 2D feature map


class Fusion(nn.Module):
    """One x_{b,l}^s of Eq. 1/4: ``f(CAM(cat(fine))) (+) h(CAM(cat(same)))``.

    ``fine`` is the finer scale's stack x_{b,0..l}^{s-1} (its layer-l output
    included), ``same`` this scale's stack x_{b,0..l-1}^s. A missing f or h is
    the empty set of Eq. 1 (f at the finest scale alive, h at l = 0), and the
    empty set is never read: the unit has no module for it.
    """

    def __init__(
        self,
        f: nn.Module | None,
        h: nn.Module | None,
        cam_f: CAM | None,
        cam_h: CAM | None,
    ) -> None:
        super().__init__()
        self.cam_f, self.f, self.cam_h, self.h = cam_f, f, cam_h, h

    def forward(
        self, fine: Sequence[torch.Tensor] | None, same: Sequence[torch.Tensor] | None
    ) -> torch.Tensor:
        parts = []
        for cam, layer, stack in ((self.cam_f, self.f, fine), (self.cam_h, self.h, same)):
            if layer is None:
                continue
            assert stack is not None  # a set with a module is always given (see the docstring)
            t = torch.cat(list(stack), dim=1) if len(stack) > 1 else stack[0]
            parts.append(layer(cam(t) if cam is not None else t))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class Block(nn.Module):
    """Block b: what makes x_{b,0} (block 1: the l = 0 fusions that build the coarser scales
    from the stem; later blocks: the transition T_{b-1} of each kept scale), then its layers,
    each a list of fusions over the scales it keeps, finest first."""

    def __init__(
        self,
        entry: Sequence[Fusion] | None,
        transition: Sequence[nn.Module] | None,
        layers: Sequence[Sequence[Fusion]],
    ) -> None:
        super().__init__()
        self.entry = nn.ModuleList(entry) if entry is not None else None
        self.transition = nn.ModuleList(transition) if transition is not None else None
        self.layers = nn.ModuleList(nn.ModuleList(units) for units in layers)


class Head(nn.Module):
    """Exit classifier g_k on the coarsest scale: two 3x3 stride-2 conv - BN - GELU, global
    average pooling, a linear layer."""

    def __init__(self, c_in: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNAct(c_in, width, 3, 2), ConvBNAct(width, width, 3, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(self.convs(x)), 1))


def exit_positions(n_blocks: int, layers: int, kappa: int) -> list[tuple[int, int]]:
    """(b_k, l_k) of every exit, 1-based as in Section II-C: an exit every ``kappa`` layers,
    the last on the last layer. An exit that falls between blocks b and b + 1 is
    (b + 1, 0): it reads x_{b+1,0} = T_b(...), after the transition."""
    total = n_blocks * layers
    where = [p * kappa for p in range(1, total // kappa + 1)]
    if where[-1] != total:
        where.append(total)
    out = []
    for p in where:
        b, ell = divmod(p, layers)
        out.append((b + 1, ell) if p < total else (n_blocks, layers))
    return out


class CHASE(MultiExitModel):
    """Multi-scale dense early-exit network with CAM before each f and h and GAL in the
    coarsest scale of chosen blocks.

    ``cam`` and ``gal_blocks`` are the ablation switches of the paper's Figure 5; the
    registered variants are this class with different values of them.
    """

    def __init__(
        self,
        num_classes: int,
        imagenet: bool,
        n_blocks: int = 3,
        layers: int = 6,
        kappa: int = 2,
        channels: int = 28,
        growth_rate: int = 26,
        gr_factor: Sequence[int] = (1, 2, 2),
        bn_factor: Sequence[int] = (1, 2, 2),
        reduction: float = 0.5,
        cam: bool = True,
        cam_reduction: int = 2,
        gal_blocks: Sequence[int] | None = None,
        gal_heads: int = 4,
        gal_mlp_ratio: float = 0.0,
        head_width: int | None = 416,
        name: str = "",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if gal_blocks is None:
            gal_blocks = (n_blocks - 1,) if isinstance(n_blocks, int) else ()
        gal_set = _check_args(
            num_classes, n_blocks, layers, kappa, channels, growth_rate, gr_factor, bn_factor,
            reduction, cam, cam_reduction, gal_blocks, gal_heads, gal_mlp_ratio, head_width,
        )  # fmt: skip
        n = len(gr_factor)
        gr, bnf = list(gr_factor), list(bn_factor)
        last = n - 1
        self.n_scales = n
        self.layers_per_block = layers
        self.kappa = kappa
        self.positions = exit_positions(n_blocks, layers, kappa)

        def cam_of(c: int) -> CAM | None:
            return CAM(c, cam_reduction) if cam else None

        def head_for(c: int) -> Head:
            return Head(c, head_width if head_width is not None else c, num_classes)

        # Channels of each scale's dense stack, updated as the network is built in run order.
        cs = [0] * n
        cs[0] = channels * gr[0]
        self.stem = Stem(cs[0], 2 if imagenet else 1)
        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        between = {b for b, ell in self.positions if ell == 0}  # exits after a transition
        inside = {(b, ell) for b, ell in self.positions if ell > 0}
        for b in range(n_blocks):  # 0-based here; the paper's block b + 1
            entry = transition = None
            if b == 0:
                entry = []
                for s in range(1, n):
                    entry.append(Fusion(ConvBNAct(cs[s - 1], channels * gr[s], 3, 2), None,
                                        cam_of(cs[s - 1]), None))  # fmt: skip
                    cs[s] = channels * gr[s]
            else:
                transition = []
                for s in range(b, n):
                    c_new = math.floor(reduction * cs[s])
                    transition.append(ConvBNAct(cs[s], c_new, 1, 1))
                    cs[s] = c_new
                cs[b - 1] = 0  # Eq. 2: the finest scale of the previous block is gone
                if b + 1 in between:
                    self.heads.append(head_for(cs[last]))
            block_layers = []
            for ell in range(1, layers + 1):
                units = []
                for s in range(b, n):
                    g = growth_rate * gr[s]
                    has_f = s > b
                    out_h = g // 2 if has_f else g
                    f = cam_f = None
                    if has_f:
                        f = _bottleneck_conv(cs[s - 1], g // 2, 2, bnf[s - 1])
                        cam_f = cam_of(cs[s - 1])
                    h: nn.Module
                    cam_h: CAM | None
                    if s == last and b in gal_set:
                        if cs[s] % gal_heads:
                            raise InputError(
                                f"GAL in block {b} (layer {ell}) sees {cs[s]} channels, which "
                                f"{gal_heads} heads do not divide; choose gal_heads among the "
                                f"divisors of {cs[s]} or change channels/growth_rate"
                            )
                        h, cam_h = GAL(cs[s], out_h, gal_heads, gal_mlp_ratio), None
                    else:
                        h, cam_h = _bottleneck_conv(cs[s], out_h, 1, bnf[s]), cam_of(cs[s])
                    units.append(Fusion(f, h, cam_f, cam_h))
                    cs[s] += g
                block_layers.append(units)
                if (b + 1, ell) in inside:
                    self.heads.append(head_for(cs[last]))
            self.blocks.append(Block(entry, transition, block_layers))
        self._init_weights()
        self.exits = [f"block{b}_layer{ell}" for b, ell in self.positions]
        size = 224 if imagenet else 32
        self.config = ModelConfig(
            name=name,
            num_classes=num_classes,
            input_size=(3, size, size),
            mean=tuple(mean),
            std=tuple(std),
            interpolation="bilinear",
            crop_pct=0.875 if imagenet else 1.0,
            arch={
                "imagenet": imagenet,
                "n_blocks": n_blocks,
                "layers": layers,
                "kappa": kappa,
                "channels": channels,
                "growth_rate": growth_rate,
                "gr_factor": gr,
                "bn_factor": bnf,
                "reduction": reduction,
                "cam": cam,
                "cam_reduction": cam_reduction,
                "gal_blocks": sorted(gal_set),
                "gal_heads": gal_heads,
                "gal_mlp_ratio": gal_mlp_ratio,
                "head_width": head_width,
            },
            checkpoint_note="no official CHASE checkpoint exists; state_dicts saved from this "
            "module load strictly (a DataParallel 'module.' prefix is stripped)",
            cost_convention="fvcore",
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.config.name or 'CHASE'} takes RGB image batches of shape (N, 3, H, W), "
                f"got {tuple(x.shape)}; input size is {self.config.input_size}"
            )
        n, last = self.n_scales, self.n_scales - 1
        # stacks[s] holds the pieces x_{b,0..l}^s of the current block, concatenated where a
        # layer reads them; they are the only state carried from one exit to the next.
        stacks: list[list[torch.Tensor]] = [[] for _ in range(n)]
        stacks[0] = [self.stem(x)]
        k = 0
        for b, block in enumerate(self.blocks):
            assert isinstance(block, Block)  # __init__ builds self.blocks of Blocks
            if block.entry is not None:  # x_{1,0}^s = f(CAM(x_{1,0}^{s-1})): Eq. 1 at l = 0
                for s, unit in zip(range(1, n), block.entry):
                    stacks[s] = [unit(stacks[s - 1], None)]
            else:
                assert block.transition is not None  # every block but the first has one
                stacks[b - 1] = []  # Eq. 2: the finest scale is discarded
                transition = dict(zip(range(b, n), block.transition))
                # T of the coarsest scale first: an exit between blocks reads it (Eq. 3).
                for s in [last, *range(b, last)]:
                    t = stacks[s]
                    stacks[s] = [transition[s](torch.cat(t, dim=1) if len(t) > 1 else t[0])]
                    if s == last and self.positions[k] == (b + 1, 0):
                        logits = self.heads[k](stacks[last][0])
                        keep = check_keep((yield k, logits), logits.shape[0])
                        stacks = keep_rows(stacks, keep)
                        k += 1
            for ell, units in enumerate(block.layers, 1):
                assert isinstance(units, nn.ModuleList)  # Block keeps each layer's fusions in one
                for s, unit in zip(range(b, n), units):  # finest first: f reads x_{b,l}^{s-1}
                    stacks[s].append(unit(stacks[s - 1] if s > b else None, stacks[s]))
                if self.positions[k] == (b + 1, ell):
                    logits = self.heads[k](torch.cat(stacks[last], dim=1))
                    keep = check_keep((yield k, logits), logits.shape[0])
                    if k < self.num_exits - 1:
                        stacks = keep_rows(stacks, keep)
                    k += 1


def _check_args(
    num_classes: int,
    n_blocks: int,
    layers: int,
    kappa: int,
    channels: int,
    growth_rate: int,
    gr_factor: Sequence[int],
    bn_factor: Sequence[int],
    reduction: float,
    cam: bool,
    cam_reduction: int,
    gal_blocks: Sequence[int],
    gal_heads: int,
    gal_mlp_ratio: float,
    head_width: int | None,
) -> set[int]:
    def positive(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")

    for arg, value in [
        ("num_classes", num_classes),
        ("n_blocks", n_blocks),
        ("layers", layers),
        ("kappa", kappa),
        ("channels", channels),
        ("cam_reduction", cam_reduction),
        ("gal_heads", gal_heads),
    ]:
        positive(arg, value)
    if head_width is not None:
        positive("head_width", head_width)
    positive("growth_rate", growth_rate)
    if growth_rate % 2:
        raise InputError(
            f"growth_rate must be even (a scale with a finer neighbour splits its growth "
            f"between f and h), got {growth_rate}"
        )
    if (
        isinstance(gr_factor, str | int)
        or isinstance(bn_factor, str | int)
        or len(gr_factor) < 1
        or len(gr_factor) != len(bn_factor)
    ):
        raise InputError(
            f"gr_factor and bn_factor need one entry per scale, got {gr_factor!r} and {bn_factor!r}"
        )
    for f in [*gr_factor, *bn_factor]:
        positive("every gr_factor/bn_factor entry", f)
    if n_blocks > len(gr_factor):
        raise InputError(
            f"n_blocks={n_blocks} exceeds the {len(gr_factor)} scales: each block after the "
            f"first discards the finest scale (Eq. 2), so give at most {len(gr_factor)} blocks "
            "or more scales (gr_factor/bn_factor)"
        )
    if kappa > n_blocks * layers:
        raise InputError(
            f"kappa={kappa} exceeds the {n_blocks * layers} layers ({n_blocks} blocks of "
            f"{layers}); an exit every kappa layers needs kappa <= n_blocks * layers"
        )
    if not 0 < reduction <= 1:
        raise InputError(f"reduction must be in (0, 1] (0.5 halves the channels), got {reduction}")
    if (
        isinstance(gal_mlp_ratio, bool)
        or not isinstance(gal_mlp_ratio, int | float)
        or not (gal_mlp_ratio >= 0)
    ):
        raise InputError(
            f"gal_mlp_ratio must be a number >= 0 (0 leaves GAL without an MLP), "
            f"got {gal_mlp_ratio!r}"
        )
    if not isinstance(cam, bool):
        raise InputError(f"cam must be True or False, got {cam!r}")
    if isinstance(gal_blocks, str | int) or not all(
        isinstance(b, int) and not isinstance(b, bool) for b in gal_blocks
    ):
        raise InputError(
            f"gal_blocks must be a sequence of 0-based block indices (0..{n_blocks - 1}), e.g. "
            f"({n_blocks - 1},) for GAL in the last block; got {gal_blocks!r}"
        )
    bad = [b for b in gal_blocks if not 0 <= b < n_blocks]
    if bad:
        raise InputError(
            f"gal_blocks {list(gal_blocks)} names blocks {bad} outside 0..{n_blocks - 1} "
            f"(the model has {n_blocks} blocks)"
        )
    if len(set(gal_blocks)) != len(gal_blocks):
        raise InputError(f"gal_blocks lists a block twice: {list(gal_blocks)}")
    return set(gal_blocks)


# The ablations of Figure 5 and Section III-C, as constructor arguments; GAL blocks count
# from the end so that an ``n_blocks`` override keeps their meaning.
VARIANTS: dict[str, dict[str, Any]] = {
    "": {"cam": True, "gal_last": 1},
    "_nocam": {"cam": False, "gal_last": 1},
    "_nogal": {"cam": True, "gal_last": 0},
    "_noattn": {"cam": False, "gal_last": 0},
    "_gal2": {"cam": True, "gal_last": 2},
}


def _build(defaults: dict[str, Any], variant: str, overrides: dict[str, Any]) -> CHASE:
    kw = {**defaults, "cam": VARIANTS[variant]["cam"], **overrides}
    if "gal_blocks" not in overrides:
        n, last = kw["n_blocks"], VARIANTS[variant]["gal_last"]
        kw["gal_blocks"] = tuple(range(max(0, n - last), n)) if isinstance(n, int) else ()
    return CHASE(**kw)


IMAGENET_DEFAULTS: dict[str, Any] = dict(
    imagenet=True,
    n_blocks=3,
    layers=6,
    kappa=2,
    channels=28,
    growth_rate=26,
    gr_factor=(1, 2, 2),
    bn_factor=(1, 2, 2),
    gal_heads=4,
    gal_mlp_ratio=0.0,
    head_width=416,
)

CIFAR_DEFAULTS: dict[str, Any] = dict(
    imagenet=False,
    n_blocks=3,
    layers=6,
    kappa=2,
    channels=16,
    growth_rate=6,
    gr_factor=(1, 2, 2),
    bn_factor=(1, 2, 2),
    gal_heads=2,
    gal_mlp_ratio=0.0,
    head_width=128,
)


def _imagenet(name: str, num_classes: int, variant: str, **overrides: Any) -> CHASE:
    defaults = dict(IMAGENET_DEFAULTS, num_classes=num_classes, name=name,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD)  # fmt: skip
    return _build(defaults, variant, overrides)


def _cifar(name: str, num_classes: int, variant: str, **overrides: Any) -> CHASE:
    c100 = name.startswith("chase_cifar100")
    defaults = dict(CIFAR_DEFAULTS, num_classes=num_classes, name=name,
                    mean=CIFAR100_MEAN if c100 else CIFAR_MEAN,
                    std=CIFAR100_STD if c100 else CIFAR_STD)  # fmt: skip
    return _build(defaults, variant, overrides)


@register_model
def chase_imagenet(num_classes: int = 1000, **overrides: Any) -> CHASE:
    """ImageNet CHASE: CAM before every convolutional f and h, GAL in the last block."""
    return _imagenet("chase_imagenet", num_classes, "", **overrides)


@register_model
def chase_imagenet_nocam(num_classes: int = 1000, **overrides: Any) -> CHASE:
    """Figure 5 ablation: ImageNet CHASE without CAM (GAL only)."""
    return _imagenet("chase_imagenet_nocam", num_classes, "_nocam", **overrides)


@register_model
def chase_imagenet_nogal(num_classes: int = 1000, **overrides: Any) -> CHASE:
    """Figure 5 ablation: ImageNet CHASE without GAL (CAM only)."""
    return _imagenet("chase_imagenet_nogal", num_classes, "_nogal", **overrides)


@register_model
def chase_imagenet_noattn(num_classes: int = 1000, **overrides: Any) -> CHASE:
    """Figure 5 ablation: ImageNet CHASE without CAM and without GAL."""
    return _imagenet("chase_imagenet_noattn", num_classes, "_noattn", **overrides)


@register_model
def chase_imagenet_gal2(num_classes: int = 1000, **overrides: Any) -> CHASE:
    """Section III-C variant: GAL in the coarsest scale of the two final blocks."""
    return _imagenet("chase_imagenet_gal2", num_classes, "_gal2", **overrides)


@register_model
def chase_cifar10(num_classes: int = 10, **overrides: Any) -> CHASE:
    """CIFAR-10 CHASE, CAM and GAL (our configuration: the paper gives no CIFAR widths)."""
    return _cifar("chase_cifar10", num_classes, "", **overrides)


@register_model
def chase_cifar10_nocam(num_classes: int = 10, **overrides: Any) -> CHASE:
    """CIFAR-10 CHASE without CAM (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar10_nocam", num_classes, "_nocam", **overrides)


@register_model
def chase_cifar10_nogal(num_classes: int = 10, **overrides: Any) -> CHASE:
    """CIFAR-10 CHASE without GAL (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar10_nogal", num_classes, "_nogal", **overrides)


@register_model
def chase_cifar10_noattn(num_classes: int = 10, **overrides: Any) -> CHASE:
    """CIFAR-10 CHASE without CAM and GAL (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar10_noattn", num_classes, "_noattn", **overrides)


@register_model
def chase_cifar10_gal2(num_classes: int = 10, **overrides: Any) -> CHASE:
    """CIFAR-10 CHASE with GAL in the two final blocks (our CIFAR counterpart)."""
    return _cifar("chase_cifar10_gal2", num_classes, "_gal2", **overrides)


@register_model
def chase_cifar100(num_classes: int = 100, **overrides: Any) -> CHASE:
    """CIFAR-100 CHASE, CAM and GAL (our configuration: the paper gives no CIFAR widths)."""
    return _cifar("chase_cifar100", num_classes, "", **overrides)


@register_model
def chase_cifar100_nocam(num_classes: int = 100, **overrides: Any) -> CHASE:
    """CIFAR-100 CHASE without CAM (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar100_nocam", num_classes, "_nocam", **overrides)


@register_model
def chase_cifar100_nogal(num_classes: int = 100, **overrides: Any) -> CHASE:
    """CIFAR-100 CHASE without GAL (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar100_nogal", num_classes, "_nogal", **overrides)


@register_model
def chase_cifar100_noattn(num_classes: int = 100, **overrides: Any) -> CHASE:
    """CIFAR-100 CHASE without CAM and GAL (our CIFAR counterpart of a Figure 5 ablation)."""
    return _cifar("chase_cifar100_noattn", num_classes, "_noattn", **overrides)


@register_model
def chase_cifar100_gal2(num_classes: int = 100, **overrides: Any) -> CHASE:
    """CIFAR-100 CHASE with GAL in the two final blocks (our CIFAR counterpart)."""
    return _cifar("chase_cifar100_gal2", num_classes, "_gal2", **overrides)
