"""Curves written by other early-exit code, read into the published-numbers schema.

People who already ran MSDNet, RANet, IMTA, L2W-DEN, Dynamic Perceiver,
calibrated-dnn, DVT or CF-ViT have their results in those projects' own
files. Re-running them to compare with a new model costs GPU days and may not
reproduce, so these readers turn the files into rows of the published-numbers
schema (``results/published/README.md``): the report overlays them beside the
curves measured here, drawn as outside numbers.

Each reader follows the official writer exactly, and says which file and
commit it follows, because the files carry no header and no unit: a number in
the wrong unit or column would draw a plausible-looking but false curve. When
a format does not fix its unit (``dynamic.txt``: raw MACs from MSDNet, RANet,
IMTA and L2W, GMACs from Dynamic Perceiver) the caller must say which; we do
not guess. Checkpoints are read with ``torch.load(weights_only=True)`` so that
importing a downloaded file cannot run code; torch is imported only there, to
keep ``eebench report`` fast.

Every reader returns a DataFrame with the columns of
``eebench.report.published.COLUMNS``: ``setting`` "anytime" (one row per exit,
``exit`` 1-based) and/or "budgeted" (one row per operating point, ``point``
"budget i"), ``gmacs`` in G, ``top1``/``top5`` in percent, ``source`` the
caller's label (default: the file name) and ``citation`` the imported path.

Each reader is registered in :data:`FORMATS` with the detector that recognises its
files, so ``import_curve`` and the command line know every format by name and a
new one is added by registering it. numpy is imported inside the readers: the
command line lists the format names without loading it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from eebench.costs.units import MAC_UNITS
from eebench.errors import EebenchError, InputError
from eebench.registry import Registry, normalize_name
from eebench.report.published import COLUMNS, DATASETS, NUMERIC, read_published_csv

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

COST_UNITS: dict[str, float] = {u.lower(): f / MAC_UNITS["GMACs"] for u, f in MAC_UNITS.items()}
"""Cost units of imported curves (any case) and their factor to GMACs."""
# After conversion, a cost outside this range (in G) is a unit mix-up, not a network:
# 1e-7 G = 100 MACs; 1e5 G is tens of times the largest published ImageNet classifiers.
PLAUSIBLE_GMACS = (1e-7, 1e5)
L2W_CSV = re.compile(r"^AnytimeResults.*\.csv$")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")
DVT_COST_KEYS = ("flops", "flop")  # DVT writes "flops", CF-ViT "flop"

DYNAMIC_UNIT_HELP = (
    "dynamic.txt does not record its cost unit: MSDNet, RANet, IMTA and L2W-DEN write raw "
    "MACs (cost_unit='macs'), Dynamic Perceiver writes GMACs (cost_unit='gmacs'); pass "
    "cost_unit= (CLI: --cost-unit macs|mmacs|gmacs)"
)


class ImportFormatError(EebenchError, ValueError):
    """A file that does not follow the format it is read as; the message names file and line."""


# ------------------------------------------------------------------ the formats

PROBE_BYTES = 4096  # detection reads this much of a file, once


@dataclass(frozen=True)
class FileProbe:
    """What detection reads of a path, once, for every format's detector: ``head`` holds
    the first bytes of a file (empty for a folder) and ``columns`` the whitespace-separated
    column counts of its first five complete, non-blank text lines (empty when not text)."""

    path: Path
    is_dir: bool
    head: bytes
    columns: frozenset[int]


@dataclass(frozen=True)
class ImportFormat:
    """A file format ``import_curve`` reads: ``read(path, *, source=, model=, dataset=, ...)``
    returns published-numbers rows; ``detect(probe)`` says whether a file is in this format
    (it may raise :class:`ImportFormatError` to explain why a file that looks like one of its
    files cannot be imported)."""

    name: str
    read: Callable[..., pd.DataFrame]
    detect: Callable[[FileProbe], bool]


FORMATS: Registry[ImportFormat] = Registry("import format", where="eebench import-curve --help")

Reader = TypeVar("Reader", bound=Callable[..., Any])


def import_format(name: str, *, detect: Callable[[FileProbe], bool]) -> Callable[[Reader], Reader]:
    """Register the decorated reader as the format ``name``, recognised by ``detect``."""

    def add(read: Reader) -> Reader:
        FORMATS.register(name, ImportFormat(normalize_name(name), read, detect))
        return read

    return add


# ------------------------------------------------------------------ helpers


def _unit_factor(cost_unit: str | None, what: str, hint: str = DYNAMIC_UNIT_HELP) -> float:
    if cost_unit is None:
        raise ImportFormatError(f"{what}: no cost unit given. {hint}")
    unit = str(cost_unit).strip().lower()
    if unit not in COST_UNITS:
        raise ImportFormatError(
            f"{what}: unknown cost unit {cost_unit!r}; use one of {', '.join(COST_UNITS)} "
            f"(raw multiply-accumulates, millions of them, or billions of them)"
        )
    return COST_UNITS[unit]


def _check_gmacs(gmacs: np.ndarray, cost_unit: str, what: str) -> None:
    import numpy as np

    lo, hi = PLAUSIBLE_GMACS
    if gmacs.size and (not np.all(np.isfinite(gmacs)) or np.any(gmacs <= 0)):
        raise ImportFormatError(f"{what}: costs must be positive finite numbers, got {gmacs.tolist()}")
    if gmacs.size and (gmacs.min() < lo or gmacs.max() > hi):
        others = [u for u in COST_UNITS if u != cost_unit.lower()]
        raise ImportFormatError(
            f"{what}: read as {cost_unit!r}, the costs span {gmacs.min():.3g} to {gmacs.max():.3g} "
            f"GMACs per image, which no classifier has; the file is probably in another unit "
            f"(one of {', '.join(others)}); pass the right cost_unit= (CLI: --cost-unit)"
        )


def _check_percent(values: np.ndarray, column: str, what: str) -> None:
    import numpy as np

    v = values[np.isfinite(values)]
    if v.size and (v.min() < 0 or v.max() > 100):
        raise ImportFormatError(
            f"{what}: {column} must be percentages in [0, 100], found {v.min():g} to {v.max():g}"
        )
    if v.size and v.max() <= 1.0:
        raise ImportFormatError(
            f"{what}: every {column} value is <= 1, but the official writers store percentages "
            f"(e.g. 75.3); this file holds fractions or is not in this format"
        )


def _read_table(path: Path, ncols: int, delimiter: str | None, layout: str) -> np.ndarray:
    """Rows of ``ncols`` numbers; blank lines skipped; errors name the line."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImportFormatError(f"{path}: not a text file; expected {layout}") from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(delimiter) if delimiter else line.split()
        if len(fields) != ncols:
            raise ImportFormatError(
                f"{path}:{lineno}: {len(fields)} column(s) where {ncols} were expected "
                f"({layout}); line: {line.strip()[:80]!r}"
            )
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise ImportFormatError(
                f"{path}:{lineno}: not all numbers ({layout}); line: {line.strip()[:80]!r}"
            ) from None
    if not rows:
        raise ImportFormatError(f"{path}: has no rows; expected {layout}")
    return np.asarray(rows, dtype=np.float64)


def _frame(
    rows: Sequence[dict[str, Any]],
    *,
    source: str,
    citation: str,
    model: str,
    dataset: str | None,
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    if dataset is not None and dataset not in DATASETS:
        raise InputError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    base: dict[str, Any] = {c: "" for c in COLUMNS}
    base.update({c: np.nan for c in NUMERIC})
    base.update(source=source, citation=citation, model=model, dataset=dataset or "",
                from_figure=False)
    df = pd.DataFrame([{**base, **r} for r in rows], columns=list(COLUMNS))
    for c in NUMERIC:
        df[c] = df[c].astype("float64")
    df["from_figure"] = df["from_figure"].astype(bool)
    return df


def _labels(path: Path, source: str | None, model: str | None) -> tuple[str, str]:
    src = source if source is not None else path.name
    return src, (model if model is not None else src)


# ------------------------------------------------------------------ dynamic.txt


@import_format("dynamic_txt", detect=lambda probe: probe.columns == {2})
def read_dynamic_txt(
    path: str | os.PathLike[str],
    *,
    cost_unit: str | None = None,
    source: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Budgeted-batch points of an MSDNet-family ``dynamic.txt`` (one "budgeted" row per line).

    Layout, as the official writers produce it: one line per budget,
    ``'{}\\t{}\\n'.format(acc_test, exp_flops.item())``, no header; accuracy in
    percent (``acc * 100.0 / n_sample``), cost the expected cumulative cost per
    test image. Writers read: kalviny/MSDNet-PyTorch@f654595270cef1f7555a82af41c38d6f581e7e16
    ``adaptive_inference.py`` (raw MACs from ``flops.pth``),
    yangle15/RANet-pytorch@be0f25a2286160bc612181507cb44a3ff2cd0e46 ``adaptive_inference.py``
    (raw MACs), LeapLabTHU/L2W-DEN@c49d5753afaaf8b22f1adcfcae526b13396e6778
    ``tools/adaptive_inference.py`` (``dynamic_test_*.txt``, raw MACs from ``flops.pth``),
    LeapLabTHU/Dynamic_Perceiver@0d2a6299ded1515f31efdddb453b5d429202e806
    ``adaptive_inference.py`` (GMACs: costs from ``flops.txt``, saved as ``flops / 1e9``).
    The unit differs between writers, so ``cost_unit`` ("macs", "mmacs",
    "gmacs") is required.
    """
    path = Path(path)
    factor = _unit_factor(cost_unit, str(path))
    table = _read_table(path, 2, None, "dynamic.txt: 'accuracy<TAB>cost' per budget, no header")
    acc, cost = table[:, 0], table[:, 1]
    _check_percent(acc, "accuracy (column 1)", str(path))
    gmacs = cost * factor
    _check_gmacs(gmacs, str(cost_unit), str(path))
    src, mdl = _labels(path, source, model)
    rows = [
        {
            "setting": "budgeted",
            "point": f"budget {i + 1}",
            "gmacs": float(g),
            "top1": float(a),
            "note": f"imported from an MSDNet-style dynamic.txt, line {i + 1}; cost unit "
            f"{str(cost_unit).lower()} as given by the importer",
        }
        for i, (a, g) in enumerate(zip(acc, gmacs))
    ]
    return _frame(rows, source=src, citation=str(path), model=mdl, dataset=dataset)


# ------------------------------------------------------------------ calibrated-dnn


@import_format("calibrated_dnn", detect=lambda probe: probe.columns == {5})
def read_calibrated_dnn(
    path: str | os.PathLike[str],
    *,
    cost_unit: str | None = "macs",
    source: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Budgeted-batch points of a calibrated-dnn (Meronen et al.) ``dynamic*.txt``.

    Writer: AaltoML/calibrated-dnn@da011d2bc46645e7f737c26b893c25978c5e7e08
    ``adaptive_inference.py``, ``dynamic_evaluate``: one line per budget (39, q = p/20),
    ``'{}\\t{}\\t{}\\t{}\\t{}\\n'.format(acc_test, nlpd, ECE, acc5, exp_flops.item())``,
    no header. ``acc_test`` and ``acc5`` are percentages, ``nlpd`` the mean
    negative log predictive density, ``ECE`` a fraction (10 bins from
    ``linspace(0.1, 1, 10)`` with ``digitize``: confidences of exactly 1.0 are
    dropped), and the cost the expected cumulative count of ``op_counter.py``
    (``multi_add = 1``: raw MACs, plus ReLU, pooling and bias counts), hence the
    default ``cost_unit="macs"``. NLPD and ECE go into ``note``.
    """
    import numpy as np

    path = Path(path)
    factor = _unit_factor(cost_unit, str(path), "calibrated-dnn writes raw MACs: cost_unit='macs'")
    layout = "calibrated-dnn: 'acc<TAB>nlpd<TAB>ece<TAB>acc5<TAB>cost' per budget, no header"
    table = _read_table(path, 5, None, layout)
    acc, nlpd, ece, acc5, cost = table.T
    _check_percent(acc, "accuracy (column 1)", str(path))
    _check_percent(acc5, "top-5 accuracy (column 4)", str(path))
    if np.any((ece < 0) | (ece > 1)):
        raise ImportFormatError(
            f"{path}: column 3 (ECE) must be a fraction in [0, 1], found {ece.min():g} to "
            f"{ece.max():g}; is this really a calibrated-dnn file (acc nlpd ece acc5 cost)?"
        )
    gmacs = cost * factor
    _check_gmacs(gmacs, str(cost_unit), str(path))
    src, mdl = _labels(path, source, model)
    rows = [
        {
            "setting": "budgeted",
            "point": f"budget {i + 1}",
            "gmacs": float(gmacs[i]),
            "top1": float(acc[i]),
            "top5": float(acc5[i]),
            "note": f"imported from a calibrated-dnn dynamic file, line {i + 1}; "
            f"NLPD {nlpd[i]:.6g}, ECE {ece[i]:.6g} (calibrated-dnn ECE: 10 bins, confidence "
            f"1.0 dropped); cost unit {str(cost_unit).lower()}",
        }
        for i in range(len(acc))
    ]
    return _frame(rows, source=src, citation=str(path), model=mdl, dataset=dataset)


# ------------------------------------------------------------------ L2W-DEN


def _l2w_csv(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    found = sorted(p for p in path.iterdir() if L2W_CSV.match(p.name))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ImportFormatError(
            f"{path}: expected exactly one AnytimeResults_*.csv (L2W-DEN writes "
            f"AnytimeResults_on_all_<set>.csv), found {names}; give the file itself"
        )
    return found[0]


def _is_l2w(probe: FileProbe) -> bool:
    """An L2W-DEN run folder or its AnytimeResults_*.csv; its flops.txt alone is refused."""
    if probe.is_dir:
        if any(L2W_CSV.match(q.name) for q in probe.path.iterdir()):
            return True
        raise ImportFormatError(
            f"{probe.path} is a folder without an AnytimeResults_*.csv; give the file to import"
        )
    if probe.path.name == "flops.txt":
        raise ImportFormatError(
            f"{probe.path} holds per-exit costs only; import the AnytimeResults_*.csv beside it "
            f"(format 'l2w'), which reads flops.txt too"
        )
    return bool(L2W_CSV.match(probe.path.name))


@import_format("l2w", detect=_is_l2w)
def read_l2w(
    path: str | os.PathLike[str],
    *,
    flops_path: str | os.PathLike[str] | None = None,
    cost_unit: str | None = "mmacs",
    source: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Anytime rows (one per exit) of an L2W-DEN run: ``AnytimeResults_*.csv`` + ``flops.txt``.

    ``path`` is the CSV or the run folder holding exactly one of them;
    ``flops.txt`` is taken from beside the CSV unless ``flops_path`` is given.
    Writers: LeapLabTHU/L2W-DEN@c49d5753afaaf8b22f1adcfcae526b13396e6778
    ``tools/main_imagenet_DDP.py`` (and ``main_cifar_DDP.py``, ``eval_imagenet.py``):
    ``validate`` saves ``np.savetxt(f'{train_url}/AnytimeResults_on_all_{set_name}.csv',
    array, fmt='%6.4f', delimiter=',')`` with one row per exit and columns
    ``loss, acc1, acc5`` (accuracies in percent, ``tools/utils.py accuracy``),
    no header; the start of ``main`` saves ``np.savetxt('flops.txt', n_flops_m)``,
    one cumulative per-exit cost per line in millions of MACs (``f / 1e6`` of
    the MSDNet-style ``measure_model`` counts), hence ``cost_unit="mmacs"``.
    The cross-entropy of each exit goes into ``note``.
    """
    import numpy as np

    csv = _l2w_csv(Path(path))
    flops = Path(flops_path) if flops_path is not None else csv.parent / "flops.txt"
    if not flops.is_file():
        raise FileNotFoundError(
            f"{flops} does not exist: L2W-DEN's per-exit costs are in flops.txt beside "
            f"{csv.name}; pass flops_path= (CLI: --flops PATH) if it lies elsewhere"
        )
    factor = _unit_factor(cost_unit, str(flops), "L2W-DEN flops.txt holds MMACs: cost_unit='mmacs'")
    table = _read_table(csv, 3, ",", "L2W-DEN AnytimeResults: 'loss,acc1,acc5' per exit, no header")
    costs = _read_table(flops, 1, None, "L2W-DEN flops.txt: one cumulative cost (MMACs) per exit")
    if len(costs) != len(table):
        raise ImportFormatError(
            f"{csv} has {len(table)} exit rows but {flops} has {len(costs)} costs; they must come "
            f"from the same run"
        )
    loss, acc1, acc5 = table.T
    _check_percent(acc1, "acc1 (column 2)", str(csv))
    _check_percent(acc5, "acc5 (column 3)", str(csv))
    gmacs = costs[:, 0] * factor
    _check_gmacs(gmacs, str(cost_unit), str(flops))
    if np.any(np.diff(gmacs) < 0):
        raise ImportFormatError(
            f"{flops}: costs must be cumulative (non-decreasing over exits), got {costs[:, 0].tolist()}"
        )
    src, mdl = _labels(csv, source, model)
    rows = [
        {
            "setting": "anytime",
            "exit": float(k + 1),
            "gmacs": float(gmacs[k]),
            "top1": float(acc1[k]),
            "top5": float(acc5[k]),
            "note": f"imported from L2W-DEN {csv.name} row {k + 1} (cross-entropy {loss[k]:.4f}) "
            f"and {flops.name} line {k + 1} ({str(cost_unit).lower()})",
        }
        for k in range(len(table))
    ]
    return _frame(rows, source=src, citation=str(csv), model=mdl, dataset=dataset)


# ------------------------------------------------------------------ DVT / CF-ViT checkpoints


def _load_weights_only(path: Path) -> Any:
    import argparse
    import pickle

    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (or is not a file)")
    # CF-ViT's training script stores its argparse.Namespace under "args"; a Namespace only
    # sets attributes, so it is allowed too. Everything else outside tensors and plain
    # containers is refused.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|$)", text)
        why = found.group(1) if found else text[:300]
        raise ImportFormatError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers "
            f"({why}), and eebench reads checkpoints with torch.load(weights_only=True) so that "
            f"a file cannot run code. If you trust the file, keep only its result entries: "
            f"ck = torch.load(p, weights_only=False); torch.save({{k: ck[k] for k in "
            f"('flops', 'flop', 'anytime_classification', 'budgeted_batch_classification') "
            f"if k in ck}}, 'curves.pth'), then import curves.pth"
        ) from None
    except Exception as exc:  # torch raises KeyError, RuntimeError, EOFError... on non-checkpoints
        raise ImportFormatError(
            f"{path}: not a readable torch.save file ({type(exc).__name__}: {exc})"
        ) from exc


def _floats(value: Any, what: str) -> np.ndarray:
    """A list/tuple of numbers or 0-d tensors, or a 1-d tensor, as float64."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().reshape(-1).tolist()
    if not isinstance(value, (list, tuple)):
        raise ImportFormatError(f"{what} must be a list of numbers, got {type(value).__name__}")
    out = []
    for v in value:
        try:
            out.append(float(v))
        except (TypeError, ValueError, RuntimeError):
            raise ImportFormatError(
                f"{what} must be a list of numbers, has an element of type {type(v).__name__}"
            ) from None
    if not out:
        raise ImportFormatError(f"{what} is empty")
    return np.asarray(out, dtype=np.float64)


def _is_checkpoint(probe: FileProbe) -> bool:
    """A torch.save file: zip or pickle magic, or a checkpoint's file suffix."""
    return not probe.is_dir and (
        probe.head.startswith((b"PK\x03\x04", b"\x80"))
        or probe.path.name.endswith(CHECKPOINT_SUFFIXES)
    )


@import_format("dvt_checkpoint", detect=_is_checkpoint)
def read_dvt_checkpoint(
    path: str | os.PathLike[str],
    *,
    cost_unit: str | None = "gmacs",
    source: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Anytime and budgeted rows from a DVT or CF-ViT checkpoint's result entries.

    Writers: blackfeather-wang/Dynamic-Vision-Transformer@22cc8951af0db59acdd414ba35dd87d6d793c868
    (``README.md`` "What are contained in the checkpoints", ``inference.py``) and
    ChenMnZ/CF-ViT@84a05ddaccfce646973a6bbe1fff6c4575761d6c (``README.md``,
    ``dynamic_inference.py``, which adds the result entries and re-saves the
    checkpoint). Keys: ``flops`` (DVT) or ``flop`` (CF-ViT), the cost of exiting
    at each exit (cumulative; "GFLOPs" in the READMEs, meaning multiply-adds,
    hence ``cost_unit="gmacs"``); ``anytime_classification``, top-1 % of each
    exit; ``budgeted_batch_classification = [costs, accs]``, the expected cost
    (same unit as ``flops``) and top-1 % per operating point (DVT: 59 budgets
    q = p/20; CF-ViT: thresholds 0.00..0.99); DVT's ``dynamic_threshold``
    (points x exits) goes into the budgeted rows' ``note``. Either result
    entry may be absent; at least one must be there. Loaded with
    ``torch.load(map_location="cpu", weights_only=True)``.
    """
    import numpy as np

    path = Path(path)
    factor = _unit_factor(cost_unit, str(path), "DVT/CF-ViT store GMACs: cost_unit='gmacs'")
    ck = _load_weights_only(path)
    if not isinstance(ck, dict):
        raise ImportFormatError(
            f"{path}: expected a checkpoint dictionary (DVT/CF-ViT), got {type(ck).__name__}"
        )
    keys = ", ".join(map(str, ck)) or "none"
    cost_keys = [k for k in DVT_COST_KEYS if k in ck]
    if not cost_keys:
        raise ImportFormatError(
            f"{path}: no per-exit costs: DVT checkpoints carry 'flops', CF-ViT ones 'flop'; "
            f"this one has keys {keys}"
        )
    flops = _floats(ck[cost_keys[0]], f"{path}: '{cost_keys[0]}'")
    if len(cost_keys) == 2 and not np.array_equal(flops, _floats(ck["flop"], f"{path}: 'flop'")):
        raise ImportFormatError(f"{path}: 'flops' and 'flop' differ; keep the right one")
    has_any = "anytime_classification" in ck
    has_bud = "budgeted_batch_classification" in ck
    if not (has_any or has_bud):
        raise ImportFormatError(
            f"{path}: no results: expected 'anytime_classification' and/or "
            f"'budgeted_batch_classification' (written by DVT inference.py or CF-ViT "
            f"dynamic_inference.py); this one has keys {keys}"
        )
    src, mdl = _labels(path, source, model)
    unit = str(cost_unit).lower()
    rows: list[dict[str, Any]] = []
    gmacs = flops * factor
    _check_gmacs(gmacs, unit, f"{path}: '{cost_keys[0]}'")
    if has_any:
        acc = _floats(ck["anytime_classification"], f"{path}: 'anytime_classification'")
        if len(acc) != len(flops):
            raise ImportFormatError(
                f"{path}: 'anytime_classification' has {len(acc)} exits but '{cost_keys[0]}' "
                f"has {len(flops)}"
            )
        _check_percent(acc, "'anytime_classification'", str(path))
        rows += [
            {
                "setting": "anytime",
                "exit": float(k + 1),
                "gmacs": float(gmacs[k]),
                "top1": float(acc[k]),
                "note": f"imported from checkpoint entries '{cost_keys[0]}'[{k}] ({unit}) and "
                f"'anytime_classification'[{k}]",
            }
            for k in range(len(acc))
        ]
    if has_bud:
        bud = ck["budgeted_batch_classification"]
        what = f"{path}: 'budgeted_batch_classification'"
        if not isinstance(bud, (list, tuple)) or len(bud) != 2:
            raise ImportFormatError(f"{what} must be a two-item list [costs, accuracies]")
        bcost = _floats(bud[0], f"{what}[0] (costs)") * factor
        bacc = _floats(bud[1], f"{what}[1] (accuracies)")
        if len(bcost) != len(bacc):
            raise ImportFormatError(f"{what}: {len(bcost)} costs but {len(bacc)} accuracies")
        _check_gmacs(bcost, unit, f"{what}[0]")
        _check_percent(bacc, "accuracies", what)
        thresholds = _thresholds(ck.get("dynamic_threshold"), len(bacc), len(flops))
        rows += [
            {
                "setting": "budgeted",
                "point": f"budget {i + 1}",
                "gmacs": float(bcost[i]),
                "top1": float(bacc[i]),
                "note": f"imported from checkpoint entry 'budgeted_batch_classification', point "
                f"{i + 1} ({unit})" + (f"; dynamic_threshold {thresholds[i]}" if thresholds else ""),
            }
            for i in range(len(bacc))
        ]
    return _frame(rows, source=src, citation=str(path), model=mdl, dataset=dataset)


def _thresholds(value: Any, n_points: int, n_exits: int) -> list[str] | None:
    """DVT's per-point thresholds as text, when they match the curve's shape."""
    import numpy as np

    if value is None or not hasattr(value, "shape") or tuple(value.shape) != (n_points, n_exits):
        return None
    arr = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value)
    return ["[" + ", ".join(f"{t:.6g}" for t in row) + "]" for row in arr]


# ------------------------------------------------------------------ dispatch


def _probe(path: Path) -> FileProbe:
    if path.is_dir():
        return FileProbe(path, True, b"", frozenset())
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open("rb") as fh:
        head = fh.read(PROBE_BYTES)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    lines = text.splitlines()
    if len(head) == PROBE_BYTES:  # the last line may be cut
        lines = lines[:-1]
    lines = [ln for ln in lines if ln.strip()]
    # the writers separate columns by tabs
    return FileProbe(path, False, head, frozenset(len(ln.split()) for ln in lines[:5]))


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` when exactly one format recognises it; else a clear error."""
    probe = _probe(Path(path))
    found = [name for name, fmt in FORMATS.items() if fmt.detect(probe)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ImportFormatError(
            f"{probe.path} could be read as {' or '.join(found)}; pass format= (CLI: --format)"
        )
    raise ImportFormatError(
        f"cannot tell the format of {probe.path}; pass format= one of {', '.join(FORMATS)} "
        f"(CLI: --format)"
    )


def import_curve(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    cost_unit: str | None = None,
    source: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
    flops_path: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read another project's curve file into published-numbers rows.

    ``format`` is a name of ``FORMATS``, or None to detect it (an L2W
    ``AnytimeResults_*.csv`` or its folder, a torch checkpoint, a 2-column
    ``dynamic.txt``, a 5-column calibrated-dnn file). ``cost_unit`` ("macs",
    "mmacs", "gmacs") is required for ``dynamic_txt`` and overrides the unit
    the other writers fix (calibrated-dnn: macs, L2W flops.txt: mmacs,
    DVT/CF-ViT: gmacs). ``source`` labels the series (default: the file name),
    ``model`` names the model (default: ``source``); ``dataset``, when given,
    must be one of ``DATASETS``. ``flops_path`` (L2W only) is the ``flops.txt``
    when it does not lie beside the CSV.
    """
    fmt = FORMATS[detect_format(path) if format is None else format]
    kw: dict[str, Any] = {"source": source, "model": model, "dataset": dataset}
    if cost_unit is not None:
        kw["cost_unit"] = cost_unit
    if flops_path is not None:
        import inspect

        takes = [n for n, f in FORMATS.items() if "flops_path" in inspect.signature(f.read).parameters]
        if fmt.name not in takes:
            raise InputError(
                f"flops_path is for the {' and '.join(map(repr, takes))} format only, "
                f"not {fmt.name!r}"
            )
        kw["flops_path"] = flops_path
    return fmt.read(path, **kw)


def write_imported(frame: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Save imported rows as a published-numbers CSV that ``load_published([out])`` and
    ``eebench report --published OUT.csv`` read; the file is read back and validated."""
    out = Path(out)
    if out.suffix != ".csv":
        raise InputError(f"{out}: the output must be a .csv file")
    bad = sorted(set(frame["source"].astype(str)) - {out.stem})
    if bad:
        raise InputError(
            f"{out}: published files are named by their source; the rows say {bad}, so name the "
            f"file {bad[0]}.csv or import with source={out.stem!r}"
        )
    if frame["dataset"].astype(str).eq("").any():
        raise InputError(
            f"{out}: published rows need a dataset ({', '.join(DATASETS)}); import with dataset="
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.loc[:, list(COLUMNS)].to_csv(out, index=False)
    read_published_csv(out)
    return out
