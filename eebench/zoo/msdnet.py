"""MSDNet (Huang et al., ICLR 2018) with the module tree of the official PyTorch release.

Users hold checkpoints trained with kalviny/MSDNet-PyTorch (and with IMTA and
L2W-DEN, which reuse its backbone), so our ``state_dict`` keys, shapes and key
order equal the official ones: ``blocks.<b>.<layer>...`` and
``classifier.<b>.m...`` / ``classifier.<b>.linear``. Official checkpoints are
saved from ``DataParallel`` with a ``module.`` prefix, which
``load_checkpoint`` strips. tests/fixtures/msdnet_*_keys.json hold the key and
shape lists of the official model class, and msdnet_official_logits.json the
official model's logits for seeded weights, which our forward reproduces.

Configurations are those of the official README commands on top of the
``args.py`` defaults (bottleneck on, reduction 0.5, prune "max", growth rate
6, factors 1-2-4): CIFAR anytime 7 blocks / even / step 2 / base 4; CIFAR
budgeted 5 blocks / lin_grow / step 1 / base 1; both with 16 initial channels
(``args.py`` defaults to 32; the README passes 16) and growth rate 6 (the
README relies on the default). ImageNet: 5 blocks, even, step = base = 4, 6 or
7, 32 channels, growth 16, factors 1-2-4-4 (four scales), a 7x7/2 stem
convolution *with* bias followed by a 3x3/2 max pool. CIFAR heads are 128
channels wide, ImageNet heads as wide as their input. The official code fixes
the class count by data set (10/100/1000); ``num_classes`` here changes only
the ``linear`` layers. Normalisation is that of the official
``dataloader.py``; ImageNet evaluation is Resize(256) + CenterCrop(224).

``iter_exits`` runs block b and then classifier b; nothing of block b+1 runs
before exit b is yielded, which is what real early exit does. With a batch,
the samples that leave at exit b are dropped from the per-scale feature maps
(the only state carried between blocks) before block b+1 runs. The official
model's ``forward`` has the same order, which is why the cumulative costs its
``op_counter.py`` records at each classifier include every earlier head.
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

# The official dataloader.py's values (they differ slightly from eebench.zoo.base.CIFAR_MEAN).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class ConvBasic(nn.Module):
    """conv (no bias) - BN - ReLU, kept under ``net`` as in the official keys."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBN(nn.Module):
    """Optional 1x1 bottleneck, then a 3x3 conv that keeps (normal) or halves (down) the size."""

    def __init__(self, c_in: int, c_out: int, down: bool, bottleneck: bool, bn_width: int):
        super().__init__()
        layers: list[nn.Module] = []
        inner = c_in
        if bottleneck:
            inner = min(c_in, bn_width * c_out)
            layers += [
                nn.Conv2d(c_in, inner, 1, 1, 0, bias=False),
                nn.BatchNorm2d(inner),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.Conv2d(inner, c_out, 3, 2 if down else 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNormal(nn.Module):
    """Dense growth at the finest kept scale: concat(x, conv(x))."""

    def __init__(self, c_in: int, c_out: int, bottleneck: bool, bn_width: int):
        super().__init__()
        self.conv_normal = ConvBN(c_in, c_out, False, bottleneck, bn_width)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[0], self.conv_normal(x[0])], dim=1)


class ConvDownNormal(nn.Module):
    """Dense growth at a coarser scale: concat(same, strided conv(finer), conv(same))."""

    def __init__(
        self, c_fine: int, c_same: int, c_out: int, bottleneck: bool, bw_fine: int, bw_same: int
    ):
        super().__init__()
        self.conv_down = ConvBN(c_fine, c_out // 2, True, bottleneck, bw_fine)
        self.conv_normal = ConvBN(c_same, c_out // 2, False, bottleneck, bw_same)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[1], self.conv_down(x[0]), self.conv_normal(x[1])], dim=1)


class FirstLayer(nn.Module):
    """The stem: one feature map per scale, each computed from the previous one."""

    def __init__(self, c_in: int, channels: int, gr_factor: Sequence[int], imagenet: bool):
        super().__init__()
        self.layers = nn.ModuleList()
        c0 = channels * gr_factor[0]
        if imagenet:
            self.layers.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c0, 7, 2, 3),  # the official stem conv keeps its bias
                    nn.BatchNorm2d(c0),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1),
                )
            )
        else:
            self.layers.append(ConvBasic(c_in, c0, 3, 1, 1))
        prev = c0
        for g in gr_factor[1:]:
            self.layers.append(ConvBasic(prev, channels * g, 3, 2, 1))
            prev = channels * g

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class MSDLayer(nn.Module):
    """One multi-scale dense layer; drops the finest scales when ``out_scales < in_scales``."""

    def __init__(
        self, c_in: int, growth: int, cfg: dict[str, Any], in_scales: int, out_scales: int
    ):
        super().__init__()
        n = len(cfg["gr_factor"])
        gr, bn, bott = cfg["gr_factor"], cfg["bn_factor"], cfg["bottleneck"]
        self.discard = in_scales - out_scales
        self.out_scales = out_scales
        first = n - out_scales  # index of the finest scale this layer still produces
        self.layers = nn.ModuleList()
        if self.discard > 0:
            self.layers.append(
                ConvDownNormal(
                    c_in * gr[first - 1],
                    c_in * gr[first],
                    growth * gr[first],
                    bott,
                    bn[first - 1],
                    bn[first],
                )
            )
        else:
            self.layers.append(ConvNormal(c_in * gr[first], growth * gr[first], bott, bn[first]))
        for s in range(first + 1, n):
            self.layers.append(
                ConvDownNormal(
                    c_in * gr[s - 1], c_in * gr[s], growth * gr[s], bott, bn[s - 1], bn[s]
                )
            )

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.discard > 0:
            pairs = [[x[s - 1], x[s]] for s in range(1, self.out_scales + 1)]
        else:
            pairs = [[x[0]]] + [[x[s - 1], x[s]] for s in range(1, self.out_scales)]
        return [layer(p) for layer, p in zip(self.layers, pairs)]


class ParallelModule(nn.Module):
    """One module per scale (the transition layers' 1x1 convolutions), stored under ``m``."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        self.m = nn.ModuleList(modules)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m(t) for m, t in zip(self.m, x)]


class ClassifierModule(nn.Module):
    """Two strided 3x3 ConvBasic layers and 2x2 average pooling on the coarsest scale, then linear."""

    def __init__(self, c_in: int, width: int, num_classes: int):
        super().__init__()
        self.m = nn.Sequential(
            ConvBasic(c_in, width, 3, 2, 1), ConvBasic(width, width, 3, 2, 1), nn.AvgPool2d(2)
        )
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        feats = torch.flatten(self.m(x[-1]), 1)
        if feats.shape[1] != self.linear.in_features:
            raise InputError(
                f"an exit head expects {self.linear.in_features} pooled features but got "
                f"{feats.shape[1]} from a {tuple(x[-1].shape[-2:])} coarsest-scale map; feed "
                "images of the model's config.input_size (32x32 for the CIFAR models, 224x224 "
                "for the ImageNet ones)"
            )
        return self.linear(feats)


def layer_steps(n_blocks: int, step_mode: str, step: int, base: int) -> list[int]:
    """Layers per block: ``base`` first, then ``step`` (even) or ``step * b + 1`` (lin_grow)."""
    return [base] + [step if step_mode == "even" else step * b + 1 for b in range(1, n_blocks)]


class MSDNet(MultiExitModel):
    """Multi-scale dense network: one classifier after each of ``n_blocks`` blocks."""

    def __init__(
        self,
        n_blocks: int,
        step_mode: str,
        step: int,
        base: int,
        channels: int,
        growth_rate: int,
        gr_factor: Sequence[int],
        bn_factor: Sequence[int],
        num_classes: int,
        imagenet: bool,
        bottleneck: bool = True,
        reduction: float = 0.5,
        prune: str = "max",
        name: str = "",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        _check_args(n_blocks, step_mode, step, base, gr_factor, bn_factor, num_classes, prune)
        cfg = {"gr_factor": list(gr_factor), "bn_factor": list(bn_factor), "bottleneck": bottleneck}
        n_scales = len(gr_factor)
        steps = layer_steps(n_blocks, step_mode, step, base)
        total = sum(steps)
        self.blocks = nn.ModuleList()
        self.classifier = nn.ModuleList()
        c = channels
        done = 0
        for b in range(n_blocks):
            layers: list[nn.Module] = []
            if b == 0:
                layers.append(FirstLayer(3, channels, gr_factor, imagenet))
            for _ in range(steps[b]):
                done += 1
                if prune == "max":
                    # Scales are dropped finest first, evenly over the network's depth.
                    interval = math.ceil(total / n_scales)
                    in_s = n_scales - math.floor(max(0, done - 2) / interval)
                    out_s = n_scales - math.floor((done - 1) / interval)
                else:
                    # Keep every scale as long as the remaining depth can still use it.
                    in_s = min(n_scales, total - done + 2)
                    out_s = min(n_scales, total - done + 1)
                layers.append(MSDLayer(c, growth_rate, cfg, in_s, out_s))
                c += growth_rate
                if prune == "max":
                    transition = in_s > out_s
                else:
                    transition = done in (math.floor(total / 3), math.floor(2 * total / 3))
                if transition and reduction > 0:
                    c_new = math.floor(reduction * c)
                    first = n_scales - out_s
                    layers.append(
                        ParallelModule(
                            [
                                ConvBasic(
                                    c * gr_factor[first + i], c_new * gr_factor[first + i], 1, 1, 0
                                )
                                for i in range(out_s)
                            ]
                        )
                    )
                    c = c_new
            self.blocks.append(nn.Sequential(*layers))
            c_last = c * gr_factor[-1]
            width = c_last if imagenet else 128
            self.classifier.append(ClassifierModule(c_last, width, num_classes))
        self._init_weights()
        self.exits = [f"block{b + 1}" for b in range(n_blocks)]
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
                "step_mode": step_mode,
                "step": step,
                "base": base,
                "channels": channels,
                "growth_rate": growth_rate,
                "gr_factor": list(gr_factor),
                "bn_factor": list(bn_factor),
                "bottleneck": bottleneck,
                "reduction": reduction,
                "prune": prune,
                "imagenet": imagenet,
            },
            checkpoint_note="keys equal kalviny/MSDNet-PyTorch's MSDNet (models/msdnet.py); "
            "a DataParallel 'module.' prefix is stripped",
            cost_convention="msdnet",
        )

    def _init_weights(self) -> None:
        # The official initialisation: He-normal convolutions (fan-out), BN to identity, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(
                f"{self.config.name or 'MSDNet'} takes RGB image batches of shape (N, 3, H, W), "
                f"got {tuple(x.shape)}; input size is {self.config.input_size}"
            )
        # The only state carried from exit to exit is one feature map per scale still in use.
        feats: Any = x
        last = self.num_exits - 1
        for k, (block, head) in enumerate(zip(self.blocks, self.classifier)):
            feats = block(feats)
            logits = head(feats)
            keep = check_keep((yield k, logits), len(logits))
            if k < last:
                feats = keep_rows(feats, keep)


def _check_args(
    n_blocks: int,
    step_mode: str,
    step: int,
    base: int,
    gr_factor: Sequence[int],
    bn_factor: Sequence[int],
    num_classes: int,
    prune: str,
) -> None:
    if step_mode not in ("even", "lin_grow"):
        raise InputError(f"step_mode must be 'even' or 'lin_grow', got {step_mode!r}")
    if prune not in ("max", "min"):
        raise InputError(f"prune must be 'max' or 'min', got {prune!r}")
    if n_blocks < 1 or base < 1 or step < (1 if step_mode == "even" else 0):
        raise InputError(
            f"need n_blocks >= 1, base >= 1 and step >= 1 ('even') or >= 0 ('lin_grow'); "
            f"got n_blocks={n_blocks}, base={base}, step={step}"
        )
    if len(gr_factor) < 1 or len(gr_factor) != len(bn_factor):
        raise InputError(
            f"gr_factor and bn_factor need one entry per scale, got {list(gr_factor)} and "
            f"{list(bn_factor)}"
        )
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")


def _cifar(name: str, anytime: bool, num_classes: int, **overrides: Any) -> MSDNet:
    if anytime:
        kw: dict[str, Any] = dict(n_blocks=7, step_mode="even", step=2, base=4)
    else:
        kw = dict(n_blocks=5, step_mode="lin_grow", step=1, base=1)
    if name.startswith("msdnet_cifar100"):
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    else:
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    kw.update(
        channels=16,
        growth_rate=6,
        gr_factor=(1, 2, 4),
        bn_factor=(1, 2, 4),
        num_classes=num_classes,
        imagenet=False,
        name=name,
        mean=mean,
        std=std,
    )
    kw.update(overrides)
    return MSDNet(**kw)


def _imagenet(name: str, step: int, num_classes: int, **overrides: Any) -> MSDNet:
    kw: dict[str, Any] = dict(
        n_blocks=5,
        step_mode="even",
        step=step,
        base=step,
        channels=32,
        growth_rate=16,
        gr_factor=(1, 2, 4, 4),
        bn_factor=(1, 2, 4, 4),
        num_classes=num_classes,
        imagenet=True,
        name=name,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    kw.update(overrides)
    return MSDNet(**kw)


@register_model
def msdnet_cifar100_anytime(num_classes: int = 100, **overrides: Any) -> MSDNet:
    """CIFAR anytime setting: 7 blocks, even steps of 2, base 4 (official README)."""
    return _cifar("msdnet_cifar100_anytime", True, num_classes, **overrides)


@register_model
def msdnet_cifar100_budget(num_classes: int = 100, **overrides: Any) -> MSDNet:
    """CIFAR budgeted-batch setting: 5 blocks, lin_grow, step 1, base 1 (official README)."""
    return _cifar("msdnet_cifar100_budget", False, num_classes, **overrides)


@register_model
def msdnet_cifar10_anytime(num_classes: int = 10, **overrides: Any) -> MSDNet:
    """CIFAR-10 anytime setting (as the CIFAR-100 one, 10 classes, CIFAR-10 normalisation)."""
    return _cifar("msdnet_cifar10_anytime", True, num_classes, **overrides)


@register_model
def msdnet_cifar10_budget(num_classes: int = 10, **overrides: Any) -> MSDNet:
    """CIFAR-10 budgeted setting (as the CIFAR-100 one, 10 classes, CIFAR-10 normalisation)."""
    return _cifar("msdnet_cifar10_budget", False, num_classes, **overrides)


@register_model
def msdnet_imagenet_step4(num_classes: int = 1000, **overrides: Any) -> MSDNet:
    """ImageNet, 5 blocks, step = base = 4 (the README's pre-trained model)."""
    return _imagenet("msdnet_imagenet_step4", 4, num_classes, **overrides)


@register_model
def msdnet_imagenet_step6(num_classes: int = 1000, **overrides: Any) -> MSDNet:
    """ImageNet, 5 blocks, step = base = 6."""
    return _imagenet("msdnet_imagenet_step6", 6, num_classes, **overrides)


@register_model
def msdnet_imagenet_step7(num_classes: int = 1000, **overrides: Any) -> MSDNet:
    """ImageNet, 5 blocks, step = base = 7."""
    return _imagenet("msdnet_imagenet_step7", 7, num_classes, **overrides)
