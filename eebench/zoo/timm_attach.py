"""Any timm backbone as a multi-exit model, by attaching heads after chosen stages.

Researchers often want a quick multi-exit baseline on an architecture nobody
has published an early-exit version of. timm already knows where each
backbone's stages end (``feature_info``); we walk its feature extractor module
by module, so ``iter_exits`` really stops after the stage that feeds exit k.
Only backbones whose feature extractor is a plain module sequence (most CNNs:
ResNet, ResNeXt, RegNet, ConvNeXt, ...) can be walked this
way; others fail with a clear message.

Every exit, the last included, is a head of ours (``linear``: global average
pooling + linear; ``conv``: two 3x3 conv-BN-ReLU layers, the second strided,
then pooling + linear, as MSDNet's classifiers). ``pretrained`` loads timm's
weights from the local Hugging Face cache only; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from eebench.zoo.base import ModelConfig, MultiExitModel
from eebench.zoo.registry import register_family


class LinearHead(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class ConvHead(nn.Module):
    """Two 3x3 conv-BN-ReLU layers (the second strided), pooling and a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.head = LinearHead(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


HEADS = {"linear": LinearHead, "conv": ConvHead}


class TimmAttachedExits(MultiExitModel):
    """A timm feature extractor with a classifier head after each chosen stage."""

    def __init__(
        self,
        timm_name: str,
        exits: Sequence[int] | None = None,
        num_classes: int = 1000,
        head: str = "linear",
        input_size: int | Sequence[int] | None = None,
        pretrained: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        import timm

        if timm_name not in timm.list_models() and timm_name.split(".")[0] not in timm.list_models():
            import difflib

            hint = difflib.get_close_matches(timm_name, timm.list_models(), n=5)
            raise ValueError(
                f"timm has no model {timm_name!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else "")
            )
        if head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
        probe = timm.create_model(timm_name, pretrained=False, features_only=True, in_chans=in_chans)
        n_stages = len(probe.feature_info)
        if exits is None:
            exits = list(range(max(0, n_stages - 3), n_stages))
        exits = [int(e) for e in exits]
        if not exits or sorted(set(exits)) != exits:
            raise ValueError(f"exits must be strictly increasing stage indices, got {exits}")
        if exits[0] < 0 or exits[-1] >= n_stages:
            raise ValueError(
                f"{timm_name} has {n_stages} feature stages (0..{n_stages - 1}); "
                f"exits {exits} are out of range"
            )
        self.backbone = timm.create_model(
            timm_name,
            pretrained=pretrained,
            features_only=True,
            out_indices=tuple(exits),
            in_chans=in_chans,
            pretrained_cfg_overlay={"file": None} if not pretrained else None,
        )
        if not isinstance(self.backbone, nn.ModuleDict):
            raise ValueError(
                f"timm builds {timm_name}'s feature extractor as {type(self.backbone).__name__}, "
                "which cannot be stopped stage by stage; choose a CNN backbone "
                "(resnet*, resnext*, regnet*, convnext*, ...)"
            )
        channels = self.backbone.feature_info.channels()
        self.return_layers = list(self.backbone.return_layers)  # module names, in order
        self.heads = nn.ModuleList(HEADS[head](c, num_classes) for c in channels)
        self.exit_stages = exits
        self.exits = [f"stage{e}" for e in exits]
        cfg = self.backbone.pretrained_cfg if hasattr(self.backbone, "pretrained_cfg") else {}
        if input_size is None:
            size = tuple(cfg.get("input_size", (3, 224, 224)))
        elif isinstance(input_size, int):
            size = (in_chans, input_size, input_size)
        else:
            size = tuple(input_size)
            if len(size) == 2:
                size = (in_chans, *size)
        self.config = ModelConfig(
            name=f"timm/{timm_name}",
            num_classes=num_classes,
            input_size=size,  # type: ignore[arg-type]
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=cfg.get("interpolation", "bilinear"),
            crop_pct=cfg.get("crop_pct", 0.875),
            arch={"timm_name": timm_name, "exits": exits, "head": head, "in_chans": in_chans},
            checkpoint_note="backbone.* follows timm's features_only module names; heads.k.* are ours",
        )

    def iter_exits(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        k = 0
        for name, module in self.backbone.items():
            x = module(x)
            if name == self.return_layers[k]:
                yield k, self.heads[k](x)
                k += 1
                if k == len(self.heads):
                    return


def _create(timm_name: str, **kwargs: Any) -> TimmAttachedExits:
    return TimmAttachedExits(timm_name, **kwargs)


def _list(pattern: str) -> list[str]:
    import timm

    return list(timm.list_models(pattern or "*"))


register_family("timm/", _create, _list)
