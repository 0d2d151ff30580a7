"""RANet (Yang et al., CVPR 2020) with the module tree of the official PyTorch release.

RANet runs one sub-network per input resolution, coarsest first: an easy
image leaves after the cheap low-resolution sub-network, and each finer
sub-network fuses (``conv_up``) the per-layer features of the sub-network
before it, so later exits reuse earlier work. Users hold checkpoints trained
with yangle15/RANet-pytorch, so our ``state_dict`` keys, shapes and key order
equal the official ones: ``scale_flows.<s>.<b>...``, ``classifier.<k>...``,
then ``FirstLayer.layers...``. The official ``main.py`` saves
``{"state_dict": ...}`` from a ``DataParallel``; ``load_checkpoint`` unwraps it
and strips the ``module.`` prefix. tests/fixtures/ranet_*_keys.json hold the
official key and shape lists, ranet_official_logits.json the official model's
logits for seeded weights, which our forward reproduces.

Configurations. The official README and the training scripts disagree; the
registered models follow the scripts (what the authors ran), on top of the
``args.py`` defaults (``--nBlocks 2 --block-step 2 --compress-factor 0.25
--reduction 0.5 --nChannels 16 --growthRate 6``, ``bnAfter`` always on):

- ``ranet_imagenet`` follows ``train_imagenet.sh``: ``--growthRate 16 --step 8
  --stepmode even --scale-list 1-2-3-4 --grFactor 4-2-1-1 --bnFactor 4-2-1-1``,
  so 16 initial channels (the default). The README's ImageNet command instead
  passes ``--nChannels 32`` and ``--grFactor 4-2-2-1 --bnFactor 4-2-2-1``.
- ``ranet_cifar10`` follows ``train_cifar.sh``: ``--data cifar10 --step 4
  --stepmode even --scale-list 1-2-3-3 --grFactor 4-2-1-1 --bnFactor 4-2-1-1``
  (four sub-networks, the two finest both at 32x32; 8 exits). The README's
  CIFAR command instead passes ``--step 2 --stepmode lg --scale-list 1-2-3
  --grFactor 4-2-1 --bnFactor 4-2-1 --nChannels 16`` (three sub-networks,
  6 exits).
- ``ranet_cifar100`` is ``train_cifar.sh`` with ``--data cifar100`` (the script
  trains CIFAR-10 only; the code builds the same network with 100 classes).

Any of the README's variants is one ``create_model`` override away
(``channels=32, gr_factor=(4, 2, 2, 1), bn_factor=(4, 2, 2, 1)``).
Normalisation is that of the official ``dataloader.py``; ImageNet evaluation
is Resize(256) + CenterCrop(224). The official code fixes the class count by
data set; ``num_classes`` here changes only the ``linear`` layers.

Execution order. The official ``forward`` runs sub-network 1 (lowest
resolution) block by block, evaluating a classifier after each of its
blocks, then sub-network 2, and so on; ``iter_exits`` does the same and stops
when the caller stops. That order computes nothing an exit does not need: the
stem is one chain from the finest to the coarsest resolution (the coarsest
map, which exit 0 reads, comes last), and the first exit of sub-network s
follows its fusion blocks, which read every block of sub-network s-1. Only the
earlier exits' heads are extra, and a sample that left at exit k paid for
those. With a batch, the samples that leave at an exit are dropped from all
that later exits read: the current feature map, the per-layer features the
next finer sub-network will fuse, and the stem maps of the finer
sub-networks. Costs follow the ``msdnet`` convention: RANet's ``op_counter.py`` is
MSDNet's (the only difference is a ``model.eval()`` call); neither counts the
bilinear ``F.interpolate`` calls of the fusion layers nor the concatenations.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
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
from eebench.zoo.msdnet import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    ClassifierModule,
    ConvBasic,
    ConvBN,
)
from eebench.zoo.registry import register_model


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # The official fusion resamples with bilinear, align_corners=True, even to the same size.
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class ConvNormal(nn.Module):
    """Dense growth within one resolution: concat(x, conv(x))."""

    def __init__(self, c_in: int, growth: int, bn_width: int):
        super().__init__()
        self.conv_normal = ConvBN(c_in, growth, False, True, bn_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv_normal(x)], dim=1)


class ConvUpNormal(nn.Module):
    """Dense growth that also reads the coarser sub-network's feature of the same depth.

    Of the ``growth`` new channels, ``floor(growth * compress)`` come from the
    coarser feature (``conv_up``, then resampled) and the rest from this
    resolution (``conv_normal``, strided when the block halves the resolution);
    the input itself is resampled to the new size and kept, as in a dense layer.
    """

    def __init__(
        self,
        c_in: int,
        c_low: int,
        growth: int,
        bn_width: int,
        bn_width_low: int,
        compress: float,
        down: bool,
    ):
        super().__init__()
        c_up = math.floor(growth * compress)
        self.conv_up = ConvBN(c_low, c_up, False, True, bn_width_low)
        self.conv_normal = ConvBN(c_in, growth - c_up, down, True, bn_width)

    def forward(self, low: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        new = self.conv_normal(x)
        size = new.shape[-2:]
        return torch.cat([_resize(x, size), _resize(self.conv_up(low), size), new], dim=1)


class BlockNormal(nn.Module):
    """A dense block of one sub-network that no finer sub-network has to wait for."""

    fuses = False

    def __init__(self, c_in: int, growth: int, n_layers: int, bn_width: int, c_trans: int | None):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvNormal(c_in + i * growth, growth, bn_width) for i in range(n_layers)
        )
        if c_trans is not None:
            self.trans = ConvBasic(c_in + n_layers * growth, c_trans, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = [x]
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        if hasattr(self, "trans"):
            x = self.trans(x)
        return x, outs


class BlockUpNormal(nn.Module):
    """A fusion block: each layer also reads the coarser sub-network's layer of the same depth.

    ``outs`` (the block input and every layer's output, before the transition)
    is what the next finer sub-network's fusion block of the same index reads.
    """

    fuses = True

    def __init__(
        self,
        c_in: int,
        c_low: Sequence[int],
        growth: int,
        n_layers: int,
        bn_width: int,
        bn_width_low: int,
        compress: float,
        down: bool,
        c_trans: int | None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvUpNormal(
                c_in + i * growth,
                c_low[i],
                growth,
                bn_width,
                bn_width_low,
                compress,
                down and i == n_layers - 1,
            )
            for i in range(n_layers)
        )
        c_out = c_in + n_layers * growth
        self.conv_last = ConvBasic(c_low[n_layers], math.floor(c_out * compress), 1, 1, 0)
        if c_trans is not None:
            self.trans = ConvBasic(c_out + math.floor(c_out * compress), c_trans, 1, 1, 0)

    def forward(
        self, x: torch.Tensor, low: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = [x]
        for i, layer in enumerate(self.layers):
            x = layer(low[i], x)
            outs.append(x)
        x = torch.cat([x, _resize(self.conv_last(low[len(self.layers)]), x.shape[-2:])], dim=1)
        if hasattr(self, "trans"):
            x = self.trans(x)
        return x, outs


class FirstLayer(nn.Module):
    """The stem: a chain from the finest resolution down; returns the maps coarsest first."""

    def __init__(
        self, channels: int, gr_factor: Sequence[int], scale_list: Sequence[int], imagenet: bool
    ):
        super().__init__()
        widths = [channels * g for g in reversed(gr_factor)]
        scales = list(reversed(scale_list))
        self.layers = nn.ModuleList()
        if imagenet:
            self.layers.append(
                nn.Sequential(
                    nn.Conv2d(3, widths[0], 7, 2, 3),  # the official stem conv keeps its bias
                    nn.BatchNorm2d(widths[0]),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1),
                )
            )
        else:
            self.layers.append(ConvBasic(3, widths[0], 3, 1, 1))
        for i in range(1, len(widths)):
            stride = 1 if scales[i] == scales[i - 1] else 2
            self.layers.append(ConvBasic(widths[i - 1], widths[i], 3, stride, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out[::-1]


def block_layers(block: int, step: int, step_mode: str) -> int:
    """Layers in the ``block``-th block (1-based) of every sub-network: ``step`` or ``step*block``."""
    return step if step_mode == "even" else step * block


class RANet(MultiExitModel):
    """Resolution adaptive network: sub-networks from low to high resolution, exits in each."""

    def __init__(
        self,
        n_blocks: int,
        block_step: int,
        step: int,
        step_mode: str,
        channels: int,
        growth_rate: int,
        gr_factor: Sequence[int],
        bn_factor: Sequence[int],
        scale_list: Sequence[int],
        num_classes: int,
        imagenet: bool,
        compress_factor: float = 0.25,
        reduction: float = 0.5,
        name: str = "",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        _check_args(
            n_blocks,
            block_step,
            step,
            step_mode,
            channels,
            growth_rate,
            gr_factor,
            bn_factor,
            scale_list,
            num_classes,
            compress_factor,
            reduction,
        )
        gr, bn, scales = list(gr_factor), list(bn_factor), list(scale_list)
        n_scales = len(scales)
        # Blocks per sub-network, cumulative starts: sub-network s has blocks_end[s + 1] blocks,
        # the first blocks_end[s] of them fusion blocks (one per block of sub-network s - 1).
        blocks_end = [0] + [n_blocks + block_step * s for s in range(n_scales)]
        self.scale_flows = nn.ModuleList()
        self.classifier = nn.ModuleList()
        self.FirstLayer = FirstLayer(channels, gr, scales, imagenet)
        self._head_after: list[list[bool]] = []
        exits: list[str] = []
        low_outs: list[list[int]] = []  # channels of each block's `outs` in sub-network s - 1
        for s in range(n_scales):
            flow = nn.ModuleList()
            c = channels * gr[s]
            growth = growth_rate * gr[s]
            n_flow = blocks_end[s + 1]
            trans_at = {math.floor((i + 1) * n_flow / scales[s]) for i in range(scales[s] - 1)}
            down_at = _down_blocks(blocks_end, s, scales[s])
            outs_ch: list[list[int]] = []
            heads: list[bool] = []
            for b in range(1, n_flow + 1):
                n_layers = block_layers(b, step, step_mode)
                outs = [c + i * growth for i in range(n_layers + 1)]
                if b > blocks_end[s]:
                    c_out = outs[-1]
                else:
                    c_out = outs[-1] + math.floor(outs[-1] * compress_factor)
                c_trans = math.floor(reduction * c_out) if b in trans_at else None
                _check_width(c_trans, c_out, s, b)
                if b > blocks_end[s]:
                    block: nn.Module = BlockNormal(c, growth, n_layers, bn[s], c_trans)
                else:
                    block = BlockUpNormal(
                        c,
                        low_outs[b - 1],
                        growth,
                        n_layers,
                        bn[s],
                        bn[s - 1],
                        compress_factor,
                        b in down_at,
                        c_trans,
                    )
                flow.append(block)
                c = c_trans if c_trans is not None else c_out
                outs_ch.append(outs)
                heads.append(b > blocks_end[s])
                if b > blocks_end[s]:
                    width = c if imagenet else 128
                    self.classifier.append(ClassifierModule(c, width, num_classes))
                    exits.append(f"subnet{s + 1}_block{b}")
            low_outs = outs_ch
            self.scale_flows.append(flow)
            self._head_after.append(heads)
        # The official code initialises the sub-networks and heads, not the stem.
        for m in [*self.scale_flows.modules(), *self.classifier.modules()]:
            _init_module(m)
        self.exits = exits
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
                "n_blocks": n_blocks,
                "block_step": block_step,
                "step": step,
                "step_mode": step_mode,
                "channels": channels,
                "growth_rate": growth_rate,
                "gr_factor": gr,
                "bn_factor": bn,
                "scale_list": scales,
                "compress_factor": compress_factor,
                "reduction": reduction,
                "imagenet": imagenet,
            },
            checkpoint_note="keys equal yangle15/RANet-pytorch's RANet (models/RANet.py); the "
            "official main.py saves {'state_dict': ...} from DataParallel, whose 'module.' "
            "prefix is stripped",
            cost_convention="msdnet",
        )

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.config.name or 'RANet'} takes RGB image batches of shape (N, 3, H, W), "
                f"got {tuple(x.shape)}; input size is {self.config.input_size}"
            )
        stems = self.FirstLayer(x)  # coarsest first: stems[0] starts sub-network 0
        low: list[list[torch.Tensor]] = []
        last = self.num_exits - 1
        k = 0
        for s, flow in enumerate(self.scale_flows):
            assert isinstance(flow, nn.ModuleList)  # __init__ builds one per sub-network
            h, stems = stems[0], stems[1:]
            # Every block's `outs`, for the next finer sub-network's fusion blocks (if any).
            outs: list[list[torch.Tensor]] = []
            feeds_next = s + 1 < len(self.scale_flows)
            for b, block in enumerate(flow):
                if block.fuses:
                    h, o = block(h, low[b])
                else:
                    h, o = block(h)
                    low = []  # the fusion blocks come first and are done: free what they read
                if feeds_next:
                    outs.append(o)
                if self._head_after[s][b]:
                    logits = self.classifier[k]([h])
                    keep = check_keep((yield k, logits), len(logits))
                    if k < last:
                        # Exits follow the fusion blocks, so `low` is spent: what later exits
                        # read is this block's output, this sub-network's `outs` and the
                        # stems of the finer sub-networks.
                        h, outs, stems = keep_rows((h, outs, stems), keep)
                    k += 1
            low = outs


def _down_blocks(blocks_end: list[int], s: int, scale: int) -> set[int]:
    """Fusion blocks of sub-network s whose last layer halves the resolution.

    The official rule: the block indices among the last ``scale - 1`` entries of
    ``blocks_end[: s + 1]``, i.e. the last block of each coarser sub-network,
    so that a sub-network at scale ``scale`` reaches the coarsest resolution
    by the time it takes over. (For ``scale == 1`` the official slice ``[-0:]``
    means the whole list; with a valid scale list that only happens for s = 0,
    which has no fusion blocks.)
    """
    ends = blocks_end[: s + 1]
    return set(ends[max(0, len(ends) - (scale - 1)) :] if scale > 1 else ends)


def _init_module(m: nn.Module) -> None:
    # He-normal convolutions (fan-out), BN to identity, zero linear biases, as the official code.
    if isinstance(m, nn.Conv2d):
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)


def _check_width(c_trans: int | None, c_out: int, s: int, b: int) -> None:
    if c_trans is not None and c_trans < 1:
        raise InputError(
            f"the transition after block {b} of sub-network {s + 1} would keep {c_trans} of "
            f"{c_out} channels; raise reduction or the widths"
        )


def _check_args(
    n_blocks: int,
    block_step: int,
    step: int,
    step_mode: str,
    channels: int,
    growth_rate: int,
    gr_factor: Sequence[int],
    bn_factor: Sequence[int],
    scale_list: Sequence[int],
    num_classes: int,
    compress_factor: float,
    reduction: float,
) -> None:
    if step_mode not in ("even", "lg"):
        raise InputError(
            f"step_mode must be 'even' (step layers per block) or 'lg' (step * b layers in "
            f"block b), got {step_mode!r}"
        )
    if n_blocks < 1 or block_step < 0 or step < 1:
        raise InputError(
            f"need n_blocks >= 1, block_step >= 0 and step >= 1; got n_blocks={n_blocks}, "
            f"block_step={block_step}, step={step}"
        )
    if channels < 1 or growth_rate < 1 or num_classes < 1:
        raise InputError(
            f"channels, growth_rate and num_classes must be >= 1, got {channels}, "
            f"{growth_rate}, {num_classes}"
        )
    scales = list(scale_list)
    if not (len(scales) == len(gr_factor) == len(bn_factor)) or not scales:
        raise InputError(
            f"scale_list, gr_factor and bn_factor need one entry per sub-network, got "
            f"{scales}, {list(gr_factor)} and {list(bn_factor)}"
        )
    if scales[0] != 1 or any(b - a not in (0, 1) for a, b in zip(scales, scales[1:])):
        raise InputError(
            f"scale_list must start at 1 (the coarsest resolution) and grow by 0 or 1 per "
            f"sub-network, since the stem halves the resolution once per step; got {scales}"
        )
    if min(gr_factor) < 1 or min(bn_factor) < 1:
        raise InputError(
            f"gr_factor and bn_factor entries must be >= 1, got {list(gr_factor)} and "
            f"{list(bn_factor)}"
        )
    if not 0 < reduction <= 1:
        raise InputError(f"reduction must be in (0, 1], got {reduction}")
    if not 0 < compress_factor < 1:
        raise InputError(f"compress_factor must be in (0, 1), got {compress_factor}")
    if len(scales) > 1 and math.floor(growth_rate * min(gr_factor[1:]) * compress_factor) < 1:
        raise InputError(
            f"growth_rate * gr_factor * compress_factor must reach 1 in every fusing "
            f"sub-network (the channels taken from the coarser one); got growth_rate="
            f"{growth_rate}, gr_factor={list(gr_factor)}, compress_factor={compress_factor}"
        )


_BASE: dict[str, Any] = dict(n_blocks=2, block_step=2, compress_factor=0.25, reduction=0.5)


def _cifar(name: str, num_classes: int, **overrides: Any) -> RANet:
    mean, std = (
        (CIFAR100_MEAN, CIFAR100_STD) if name == "ranet_cifar100" else (CIFAR10_MEAN, CIFAR10_STD)
    )
    kw: dict[str, Any] = dict(
        _BASE,
        step=4,
        step_mode="even",
        channels=16,
        growth_rate=6,
        gr_factor=(4, 2, 1, 1),
        bn_factor=(4, 2, 1, 1),
        scale_list=(1, 2, 3, 3),
        num_classes=num_classes,
        imagenet=False,
        name=name,
        mean=mean,
        std=std,
    )
    kw.update(overrides)
    return RANet(**kw)


@register_model
def ranet_imagenet(num_classes: int = 1000, **overrides: Any) -> RANet:
    """ImageNet as in train_imagenet.sh: 4 sub-networks (56/28/14/7 px), 8 exits."""
    kw: dict[str, Any] = dict(
        _BASE,
        step=8,
        step_mode="even",
        channels=16,
        growth_rate=16,
        gr_factor=(4, 2, 1, 1),
        bn_factor=(4, 2, 1, 1),
        scale_list=(1, 2, 3, 4),
        num_classes=num_classes,
        imagenet=True,
        name="ranet_imagenet",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    kw.update(overrides)
    return RANet(**kw)


@register_model
def ranet_cifar10(num_classes: int = 10, **overrides: Any) -> RANet:
    """CIFAR-10 as in train_cifar.sh: 4 sub-networks (8/16/32/32 px), 8 exits."""
    return _cifar("ranet_cifar10", num_classes, **overrides)


@register_model
def ranet_cifar100(num_classes: int = 100, **overrides: Any) -> RANet:
    """CIFAR-100: train_cifar.sh's network with --data cifar100 (100 classes)."""
    return _cifar("ranet_cifar100", num_classes, **overrides)
