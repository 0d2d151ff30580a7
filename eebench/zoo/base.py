"""The one model interface every architecture in the zoo implements.

Caching all exits and really exiting early are the same loop seen from two
ends: ``iter_exits`` yields exit by exit and does only the work the next exit
needs, so a caller that stops iterating has stopped computing. ``forward``
is that loop run to the end, which keeps caching, cost counting and latency
measurement on one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from eebench.errors import InputError

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
    #: The recipe and history of a training checkpoint (set by ``eebench.train.load_trained``).
    train_info: dict[str, Any]

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def iter_exits(self, x: torch.Tensor) -> Generator[tuple[int, torch.Tensor], Any, None]:
        """Yield ``(k, logits_k)`` for k = 0..K-1, computing only what exit k needs.

        Real early exit with a batch: after receiving exit k's logits, a caller may
        ``send`` a boolean keep-mask over the rows it just received (``True`` = this
        sample continues). The model then slices every piece of state it carries to the
        kept rows and computes the next exits for those samples only; the logits it
        yields next have one row per kept sample, in the same order. Sending ``None``
        (what a ``for`` loop does) keeps every row. Implementations read the mask with
        ``keep = yield k, logits`` and apply it with ``keep_rows``. See ``run_exits``.
        """
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


def keep_rows(state: Any, keep: torch.Tensor | None) -> Any:
    """``state`` with every tensor sliced to the kept rows (dim 0), through nested lists,
    tuples and dicts; non-tensors pass through. ``None`` keeps everything.

    ``keep`` is a bool mask or row indices. A mask is turned into indices once (one host
    synchronisation on a GPU, not one per tensor), and a mask that keeps every row
    returns ``state`` untouched (no copy). Carried state must be batch-first for this to
    be right: a model whose state is not (e.g. sequence-first attention tensors) slices
    that piece itself.
    """
    if keep is None:
        return state
    if keep.dtype == torch.bool:
        if bool(keep.all()):
            return state
        keep = keep.nonzero().squeeze(1)
    return _take_rows(state, keep)


def _take_rows(state: Any, rows: torch.Tensor) -> Any:
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device)) if state.dim() else state
    if isinstance(state, list):
        return [_take_rows(s, rows) for s in state]
    if isinstance(state, tuple):
        return tuple(_take_rows(s, rows) for s in state)
    if isinstance(state, dict):
        return {k: _take_rows(v, rows) for k, v in state.items()}
    return state


def check_keep(keep: Any, rows: int) -> torch.Tensor | None:
    """The keep-mask a caller sent into ``iter_exits``, checked: a bool tensor of ``rows``."""
    if keep is None:
        return None
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != (rows,):
        raise InputError(
            f"iter_exits expects a bool keep-mask of shape ({rows},) (one entry per row of the "
            f"logits just yielded), got {getattr(keep, 'dtype', type(keep).__name__)} of shape "
            f"{tuple(getattr(keep, 'shape', ()))}"
        )
    return keep


ExitDecision = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def run_exits(
    model: MultiExitModel, x: torch.Tensor, decide: ExitDecision
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on the batch ``x`` with real exits; returns (exit index (N,), logits at
    that exit (N, C)).

    After each exit k, ``decide(k, logits_k, alive)`` gets the logits of the samples still
    in the network and their positions in ``x`` (``alive``), and returns a bool mask over
    those rows: True = the sample leaves here. The rest continue with the network sliced
    to them (the keep-mask protocol of ``iter_exits``); the last exit takes everyone left,
    and once nobody is left the generator is closed, so nothing more is computed.
    """
    n = x.shape[0]
    gen = model.iter_exits(x)
    alive = torch.arange(n, device=x.device)
    exit_index = torch.full((n,), model.num_exits - 1, dtype=torch.long, device=x.device)
    out: torch.Tensor | None = None
    k, logits = next(gen)
    try:
        while True:
            if out is None:
                out = logits.new_empty((n, *logits.shape[1:]))
            last = k == model.num_exits - 1
            stop = torch.ones(len(alive), dtype=torch.bool, device=x.device) if last else decide(
                k, logits, alive
            )
            stop = stop.to(device=logits.device, dtype=torch.bool)
            out[alive[stop]] = logits[stop]
            exit_index[alive[stop]] = k
            keep = ~stop
            if last or not bool(keep.any()):
                break
            alive = alive[keep]
            k, logits = gen.send(keep)
    finally:
        gen.close()
    assert out is not None
    return exit_index, out


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
