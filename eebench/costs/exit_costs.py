"""Per-exit cumulative cost of a multi-exit model, the x axis of every curve.

Budgeted-batch results are only comparable when every model's exits are
priced the same way, and the papers disagree on how: fvcore misses fused
attention, hook counters miss everything outside their known modules, and
a trace that returns only the last logits drops the earlier heads. So the
cost of exit k is counted on ``TruncatedModel(model, k)``, which runs the
model up to exit k and returns every logit so far: earlier heads stay in the
count, later stages never run. The counting rule is a named *convention*,
recorded with the numbers, and an independent tool (ptflops) re-counts the
same runs so that a counting bug shows up as a disagreement.

This module imports torch only inside ``count_costs``, so that code which
merely reads or prints costs starts fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from eebench.costs.conventions import CONVENTIONS, CostConvention
from eebench.errors import InputError, InputTypeError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from eebench.zoo.base import MultiExitModel

_CHECK_NOTE = (
    "ptflops (ATen backend) counts convolutions and matrix products only, with biases; "
    "fused attention counts as its two matrix products, baddbmm as its batched matmul"
)


@dataclass
class ExitCosts:
    """Cumulative MACs and parameters of each exit of one model, in execution order.

    ``macs[k]`` and ``params[k]`` include everything that ran before exit k,
    the heads of the earlier exits included, because a sample that leaves at
    exit k has paid for them. ``params`` counts each parameter the run up to exit k
    read, once, however often it was read.
    """

    model: str
    exit_names: list[str]
    macs: list[float]
    params: list[int]
    convention: str
    input_size: tuple[int, int, int]
    check_macs: list[float] | None = None
    check_tool: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.exit_names)
        if len(self.macs) != n or len(self.params) != n:
            raise InputError(
                f"ExitCosts for {self.model!r}: {n} exit names but {len(self.macs)} MAC "
                f"counts and {len(self.params)} parameter counts; give one of each per exit"
            )
        if self.check_macs is not None and len(self.check_macs) != n:
            raise InputError(
                f"ExitCosts for {self.model!r}: {len(self.check_macs)} cross-check counts "
                f"for {n} exits"
            )

    def rel_diff(self) -> list[float] | None:
        """(check - macs) / macs per exit, or None without a cross-check."""
        if self.check_macs is None:
            return None
        return [
            (c - m) / m if m else (0.0 if c == m else math.inf)
            for c, m in zip(self.check_macs, self.macs)
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExitCosts:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)

    def to_frame(self) -> pd.DataFrame:
        """One row per exit: exit, exit_name, gmacs, mparams, check_gmacs, rel_diff."""
        import pandas as pd

        n = len(self.exit_names)
        rel = self.rel_diff()
        return pd.DataFrame(
            {
                "exit": list(range(n)),
                "exit_name": list(self.exit_names),
                "gmacs": [m / 1e9 for m in self.macs],
                "mparams": [p / 1e6 for p in self.params],
                "check_gmacs": (
                    [c / 1e9 for c in self.check_macs]
                    if self.check_macs is not None
                    else [math.nan] * n
                ),
                "rel_diff": rel if rel is not None else [math.nan] * n,
            }
        )


def format_costs_table(costs: ExitCosts) -> str:
    """A plain-text table for the terminal: one line per exit, then the notes."""
    big = max(costs.macs, default=0.0) >= 1e9
    unit, scale, digits = ("GMACs", 1e9, 3) if big else ("MMACs", 1e6, 2)
    c, h, w = costs.input_size
    convention = CONVENTIONS.get(costs.convention)  # None: a name no longer registered
    lines = [
        f"{costs.model}  input {c}x{h}x{w}  convention {costs.convention}  "
        + ("(MACs per image, as the paper's own counter charges each exit: see the notes)"
           if convention is not None and not convention.cumulative else
           "(MACs per image, cumulative, earlier heads included)")
    ]
    header = ["exit", "name", unit, "params (M)"]
    rel = costs.rel_diff()
    if costs.check_macs is not None:
        header += [f"check {unit}", "check diff"]
    rows = []
    for k, name in enumerate(costs.exit_names):
        row = [str(k), name, f"{costs.macs[k] / scale:.{digits}f}", f"{costs.params[k] / 1e6:.2f}"]
        if costs.check_macs is not None and rel is not None:
            row += [f"{costs.check_macs[k] / scale:.{digits}f}", f"{100 * rel[k]:+.2f}%"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = [r[0].rjust(widths[0]), r[1].ljust(widths[1])]
        cells += [x.rjust(wd) for x, wd in zip(r[2:], widths[2:])]
        return "  ".join(cells).rstrip()

    lines.append(fmt(header))
    lines.append("  ".join("-" * wd for wd in widths))
    lines.extend(fmt(r) for r in rows)
    if costs.check_tool:
        lines.append(f"check: {costs.check_tool}")
    lines.extend(f"note: {n}" for n in costs.notes)
    return "\n".join(lines)


def _resolve_input_size(
    model: MultiExitModel, input_size: tuple[int, ...] | list[int] | int | None
) -> tuple[int, int, int]:
    config_size = tuple(getattr(getattr(model, "config", None), "input_size", (3, 224, 224)))
    if input_size is None:
        size = config_size
    elif isinstance(input_size, int) and not isinstance(input_size, bool):
        size = (int(config_size[0]), input_size, input_size)
    elif isinstance(input_size, tuple | list) and len(input_size) in (2, 3):
        size = tuple(input_size)
        if len(size) == 2:
            size = (int(config_size[0]), *size)
    else:
        raise InputError(
            f"input_size must be (channels, height, width), (height, width), one int for a "
            f"square image, or None for the model's config.input_size; got {input_size!r}"
        )
    if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
        raise InputError(f"input_size must be three positive integers, got {size!r}")
    return size


def _params_read(root: nn.Module, x: torch.Tensor) -> int:
    """Parameters that a run of ``root`` on ``x`` actually reads, each once.

    Every torch function call is watched (a ``TorchFunctionMode``) and each parameter
    passed to one is counted: weights used through their module, through ``F.linear``
    in a parent's code (fused qkv in BEiT/EVA, MultiheadAttention's out_proj), indexed
    from a ParameterList (position embeddings) or read by a method such as a relative
    position table. Parameters of heads and stages that never run are never read.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    owned = {id(p): p.numel() for p in root.parameters()}
    read: set[int] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            if id(obj) in owned:
                read.add(id(obj))
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                visit(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                visit(o)

    class ParamReads(TorchFunctionMode):
        """Records parameters passed to any torch function."""

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            visit(args)
            visit(kwargs or {})
            return func(*args, **(kwargs or {}))

    with ParamReads():
        root(x)
    return sum(owned[i] for i in read)


def count_costs(
    model: MultiExitModel,
    input_size: tuple[int, int, int] | int | None = None,
    convention: str | None = None,
    cross_check: bool = True,
) -> ExitCosts:
    """Count cumulative MACs and parameters of every exit of ``model``.

    Each exit k is counted on ``TruncatedModel(model, k)`` with a batch of
    one zero image of ``input_size`` (default: ``model.config.input_size``;
    an int means a square image), in eval mode under ``torch.no_grad``.
    ``convention`` names the counting rules (a name of ``CONVENTIONS``; default: the
    model's ``config.cost_convention``, the one its paper used);
    ``cross_check`` re-counts each run with ptflops' ATen backend (a failure
    there is recorded in ``notes``, never raised). The model's training mode
    is restored afterwards.
    """
    import torch

    from eebench.zoo.base import MultiExitModel, TruncatedModel

    if not isinstance(model, MultiExitModel):
        raise InputTypeError(
            f"count_costs needs a MultiExitModel (eebench.zoo), got {type(model).__name__}; "
            "create one with eebench.zoo.create_model"
        )
    if convention is None:
        convention = getattr(getattr(model, "config", None), "cost_convention", "fvcore")
    rules: CostConvention = CONVENTIONS[convention]
    exits = list(model.exits)
    if not exits:
        raise InputError(f"{type(model).__name__} declares no exits; nothing to count")
    size = _resolve_input_size(model, input_size)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)

    rules.check(model)
    macs: list[float] = []
    params: list[int] = []
    check: list[float] | None = [] if cross_check else None
    check_tool: str | None = None
    notes: dict[str, None] = {}  # ordered set
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _mha_fastpath_disabled():
            for k in range(len(exits)):
                truncated = TruncatedModel(model, k)
                x = torch.zeros((1, *size), dtype=dtype, device=device)
                try:
                    result = rules.count(truncated, x)
                except Exception as exc:
                    raise RuntimeError(
                        f"counting exit {k} ({exits[k]!r}) of {name} at input "
                        f"{'x'.join(map(str, size))} under the {rules.name} convention failed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                macs.append(float(result.macs))
                params.append(_params_read(truncated, x))
                if k == len(exits) - 1:  # the last run contains every earlier one
                    notes.update(dict.fromkeys(result.notes))
                if check is not None:
                    from eebench.costs.ptflops_check import count_ptflops

                    value, tool, err = count_ptflops(TruncatedModel(model, k), size, x)
                    check_tool = tool
                    if value is None:
                        notes[f"cross-check disabled: {err}"] = None
                        check = None
                    else:
                        check.append(float(value))
    finally:
        model.train(was_training)
    if check is not None:
        notes[f"cross-check: {_CHECK_NOTE}"] = None
    return ExitCosts(
        model=name,
        exit_names=exits,
        macs=macs,
        params=params,
        convention=rules.name,
        input_size=size,
        check_macs=check,
        check_tool=check_tool if check is not None else None,
        notes=list(notes),
    )


class _mha_fastpath_disabled:
    """Switch off nn.MultiheadAttention's fused fast path while counting.

    The fast path runs the whole attention block as one ATen kernel
    (``_native_multi_head_attention``) that no counter sees into; the regular
    path runs its projections and products as ordinary, countable ops.
    """

    def __enter__(self) -> None:
        import torch

        self._mha = getattr(torch.backends, "mha", None)
        if self._mha is not None:
            self._was = self._mha.get_fastpath_enabled()
            self._mha.set_fastpath_enabled(False)

    def __exit__(self, *exc: object) -> None:
        if self._mha is not None:
            self._mha.set_fastpath_enabled(self._was)
