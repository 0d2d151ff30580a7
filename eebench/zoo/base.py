"""The one model interface every architecture in the zoo implements.

Caching all exits and really exiting early are the same loop seen from two
ends: ``iter_exits`` yields exit by exit and does only the work the next exit
needs, so a caller that stops iterating has stopped computing. ``forward``
is that loop run to the end, which keeps caching, cost counting and latency
measurement on one code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ModelConfig:
    """What a caller needs to feed a model and to identify it.

    ``arch`` holds the constructor arguments that determine the architecture
    (they enter the logit store's identity); ``checkpoint_note`` says how an
    official checkpoint maps onto this module; ``cost_convention`` names the
    counting rules its paper's published costs follow (``eebench.costs.CONVENTIONS``),
    the default of ``count_costs`` for this model.
    """

    name: str
    num_classes: int
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    arch: dict[str, Any] = field(default_factory=dict)
    checkpoint_note: str = ""
    cost_convention: str = "fvcore"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


class MultiExitModel(nn.Module):
    """Base class: subclasses set ``exits`` and ``config`` and implement ``iter_exits``."""

    exits: list[str]
    config: ModelConfig

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def iter_exits(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(k, logits_k)`` for k = 0..K-1, computing only what exit k needs."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [logits for _, logits in self.iter_exits(x)]

    def forward_until(self, x: torch.Tensor, exit_index: int) -> list[torch.Tensor]:
        """Logits of exits 0..exit_index, stopping the network after exit_index."""
        if not 0 <= exit_index < self.num_exits:
            raise IndexError(
                f"exit_index {exit_index} out of range for {self.num_exits} exits {self.exits}"
            )
        out = []
        for k, logits in self.iter_exits(x):
            out.append(logits)
            if k == exit_index:
                break
        return out


class TruncatedModel(nn.Module):
    """Runs a multi-exit model up to one exit and returns every logit so far.

    Cost counters trace this wrapper: returning all earlier logits keeps the
    earlier heads in the traced graph, and stopping at the exit keeps later
    stages out of it, so a trace of it counts exactly the cumulative cost.
    """

    def __init__(self, model: MultiExitModel, exit_index: int) -> None:
        super().__init__()
        self.model = model
        self.exit_index = exit_index

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_until(x, self.exit_index))
