"""One look for every figure, sized for a two-column paper, and one rule for cost units.

Figures are drawn at their printed size (3.4 in for one column, 7 in for two)
so that a font size set here is the size a reader sees in print: nothing is
scaled down by LaTeX. Every text is at least 7 pt. Colours come from
seaborn's colour-blind palette, and every line also has its own marker so that
a greyscale print still tells lines apart.

A policy has one colour and one marker in every figure of every report
(``policy_styles``): the common policies have fixed entries in ``POLICY_STYLES``,
any other name gets a style from a stable hash of the name (CRC-32, not Python's
salted ``hash``), moved to a free colour only when it would share one with another
policy of the same figure. Grey is left to the random baselines and black to the
oracle. Legends that would crowd a figure use short policy labels
(``short_policy_label``), whose abbreviations ``abbreviation_key`` spells out.

Costs in MACs are shown in GMACs, or in MMACs when every cost is below
0.1 GMACs, so that axis ticks and table cells stay short. Both the figures and
the tables of one report use the same scale (``CostScale``), chosen once from
all measured costs. The papers of this field call MACs "FLOPs"; the report
says so next to every figure and table that shows a cost.

matplotlib and seaborn are imported inside the functions: ``eebench report``
and ``import eebench.report`` stay fast.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SINGLE_COLUMN_IN = 3.4
DOUBLE_COLUMN_IN = 7.0
PNG_DPI = 250
MIN_FONT_PT = 7.0

# distinct markers for lines; "*" (oracle) and "s" (static exits) are kept for baselines
LINE_MARKERS = ("o", "^", "v", "D", "P", "<", ">", "h", "p", "X")
PUBLISHED_MARKERS = ("o", "s", "^", "D", "v", "<", ">", "h")
ORACLE_MARKER = "*"
STATIC_MARKER = "s"
BASELINE_GREY = "0.35"
PUBLISHED_GREY = "0.45"

MACS_NOTE = "MACs are multiply-accumulates, which the papers of this field call FLOPs."

# colour-blind palette indices for policies, most distinct first; 7 (grey) is the baselines'
POLICY_COLOR_ORDER = (0, 1, 2, 3, 4, 9, 5, 6, 8)
# fixed (colour slot in POLICY_COLOR_ORDER, marker) of the policies most suites compare;
# no two entries share both colour and marker
POLICY_STYLES: dict[str, tuple[int, str]] = {
    "confidence/geometric": (0, "o"),
    "entropy/geometric": (1, "^"),
    "confidence+temperature/geometric": (2, "v"),
    "confidence/ga": (3, "D"),
    "eenet": (4, "P"),
    "confidence+mie/geometric": (5, "<"),
    "confidence+temperature+mie/geometric": (6, ">"),
    "confidence/risk": (7, "h"),
    "margin/geometric": (8, "p"),
    "confidence+laplace/geometric": (0, "X"),
    "confidence+laplace+mie/geometric": (1, "X"),
    "entropy+temperature/geometric": (2, "X"),
    "confidence/exact": (3, "o"),
    "confidence/sweep": (4, "^"),
    "patience/geometric": (5, "v"),
    "ensemble-confidence/geometric": (6, "D"),
    "confidence+temperature/ga": (7, "P"),
    "entropy/ga": (8, "<"),
}
# short forms of the parts of a policy name (score+calibration/solver), for legends
ABBREVIATIONS = {
    "confidence": "conf",
    "entropy": "ent",
    "margin": "marg",
    "patience": "pat",
    "ensemble-confidence": "ens-conf",
    "temperature": "T",
    "laplace": "Lap",
    "mie": "MIE",
    "geometric": "geo",
    "exact": "exact",
    "sweep": "sweep",
    "ga": "GA",
    "risk": "risk",
}
ABBREVIATION_MEANING = {
    "conf": "maximum softmax confidence",
    "ent": "entropy",
    "marg": "top-2 margin",
    "pat": "patience",
    "ens-conf": "ensemble confidence",
    "T": "temperature scaling",
    "Lap": "Laplace approximation",
    "MIE": "model-internal ensembling",
    "geo": "geometric budgets",
    "GA": "genetic algorithm",
}


def _is_macs(unit: str) -> bool:
    return unit.strip().lower() == "macs"


@dataclass(frozen=True)
class CostScale:
    """How costs in ``unit`` are displayed: divided by ``factor`` and named ``label``."""

    unit: str
    factor: float
    label: str

    @property
    def is_macs(self) -> bool:
        return _is_macs(self.unit)

    def __call__(self, values: Any) -> Any:
        """Costs in ``unit`` -> costs in the display unit (``label``)."""
        return np.asarray(values, dtype=np.float64) / self.factor

    def axis_label(self, what: str = "cost") -> str:
        """``"<what> (GMACs)"``, or ``"<what> (<unit>)"`` for a user unit."""
        return f"{what} ({self.label})"

    def from_gmacs(self, gmacs: Any) -> np.ndarray:
        """Published costs, given in GMACs, in the display unit."""
        if not self.is_macs:
            raise InputError(
                f"published numbers are given in GMACs but this report's costs are in "
                f"{self.unit!r}; an overlay needs results measured in MACs (cost_unit 'MACs')"
            )
        return np.asarray(gmacs, dtype=np.float64) * 1e9 / self.factor

    @property
    def note(self) -> str:
        """One sentence for captions and table footnotes."""
        if self.is_macs:
            return f"Costs in {self.label} per image; {MACS_NOTE}"
        return f"Costs in {self.label} per image."


def cost_scale(unit: str, costs: Iterable[float]) -> CostScale:
    """The display scale for costs in ``unit``.

    MACs become GMACs, or MMACs when every (finite) cost is below 0.1 G, and stay MACs
    below 0.1 M (costs given as relative units); any other unit is shown as given.
    """
    if not isinstance(unit, str) or not unit.strip():
        raise InputError(f"cost_unit must be a non-empty string such as 'MACs', got {unit!r}")
    if not _is_macs(unit):
        return CostScale(unit=unit, factor=1.0, label=unit.strip())
    arr = np.asarray(list(costs), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    top = float(np.max(np.abs(arr))) if arr.size else np.inf
    if top < 0.1e6:  # costs given in small units (exit indices, relative costs)
        return CostScale(unit=unit, factor=1.0, label="MACs")
    if top < 0.1e9:
        return CostScale(unit=unit, factor=1e6, label="MMACs")
    return CostScale(unit=unit, factor=1e9, label="GMACs")


def format_cost(value: float) -> str:
    """A cost in display units, short and without exponent notation."""
    if not np.isfinite(value):
        return "—"
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def paper_rc() -> dict[str, Any]:
    """rcParams of the report style: seaborn "paper" context and "whitegrid" axes, enlarged
    so that every text is at least 7 pt at printed size, with embedded TrueType fonts."""
    import seaborn as sns
    from cycler import cycler

    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("whitegrid"))
    rc.update(
        sns.plotting_context(
            "paper",
            rc={
                "font.size": 8,
                "axes.labelsize": 8,
                "axes.titlesize": 8,
                "xtick.labelsize": 7,
                "ytick.labelsize": 7,
                "legend.fontsize": 7,
                "legend.title_fontsize": 7,
                "lines.linewidth": 1.1,
                "lines.markersize": 4,
                "axes.linewidth": 0.6,
                "grid.linewidth": 0.4,
                "xtick.major.width": 0.6,
                "ytick.major.width": 0.6,
                "patch.linewidth": 0.4,
            },
        )
    )
    rc.update(
        {
            "figure.titlesize": 8,
            "figure.labelsize": 8,
            "font.family": "sans-serif",
            "axes.prop_cycle": cycler(color=sns.color_palette("colorblind")),
            "axes.edgecolor": "0.25",
            "grid.color": "0.88",
            "legend.frameon": False,
            "legend.handlelength": 1.8,
            "legend.columnspacing": 1.0,
            "legend.borderaxespad": 0.3,
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "savefig.dpi": PNG_DPI,
            "figure.dpi": 100,
        }
    )
    return rc


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply the report style for the duration of a block, leaving global rcParams untouched."""
    import matplotlib

    rc: Any = paper_rc()  # matplotlib's stubs type keys as a Literal of every rc name
    with matplotlib.rc_context(rc):
        yield


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colour-blind-safe colours; grey and yellow (low contrast on white) come last."""
    import seaborn as sns

    base = list(sns.color_palette("colorblind"))
    order = [0, 1, 2, 3, 4, 5, 9, 6, 8, 7]
    cols = [base[i] for i in order]
    return [cols[i % len(cols)] for i in range(n)]


@dataclass(frozen=True)
class PolicyStyle:
    """How one policy is drawn: its line and marker colour, and its marker."""

    color: tuple[float, float, float]
    marker: str


def _policy_colors() -> list[tuple[float, float, float]]:
    import seaborn as sns

    base = list(sns.color_palette("colorblind"))
    return [tuple(base[i]) for i in POLICY_COLOR_ORDER]


def _base_name(name: str) -> str:
    """The name without a grid suffix (``confidence/geometric[msdnet]``), lower case."""
    return re.sub(r"\[[^\]]*\]$", "", str(name).strip()).lower()


def _combo(t: int) -> tuple[int, int]:
    """The t-th (colour slot, marker index) of a probe sequence that visits every pair once."""
    nc, nm = len(POLICY_COLOR_ORDER), len(LINE_MARKERS)
    c = t % nc
    return c, (t // nc + 3 * c) % nm


def _preferred(name: str) -> tuple[int, int]:
    """(probe start, fixed) of a name: its table entry or its CRC-32 slot."""
    fixed = POLICY_STYLES.get(_base_name(name))
    if fixed is not None:
        c, m = fixed[0], LINE_MARKERS.index(fixed[1])
        return next(t for t in range(len(POLICY_COLOR_ORDER) * len(LINE_MARKERS))
                    if _combo(t) == (c, m)), 1
    return zlib.crc32(str(name).encode("utf-8")) % (len(POLICY_COLOR_ORDER) * len(LINE_MARKERS)), 0


def policy_style(name: str) -> PolicyStyle:
    """The colour and marker of ``name`` on its own (a figure with several policies uses
    ``policy_styles``, which gives this style unless two policies would share a colour)."""
    return policy_styles([name])[str(name)]


def policy_styles(names: Sequence[str]) -> dict[str, PolicyStyle]:
    """A colour and marker per policy name, the same for a name in every figure.

    Names of ``POLICY_STYLES`` take their fixed style, other names the style their
    CRC-32 picks. Within one call no two names share a colour and marker, and, up to
    the number of colours, no two share a colour: the name that comes later (table
    names first, in table order; then other names in sorted order) moves along its
    own probe sequence to the first free one.
    """
    colors = _policy_colors()
    unique = list(dict.fromkeys(str(n) for n in names))
    table = list(POLICY_STYLES)

    def rank(n: str) -> tuple[int, int, str]:
        b = _base_name(n)
        return (0, table.index(b), n) if b in POLICY_STYLES else (1, 0, n)

    total = len(POLICY_COLOR_ORDER) * len(LINE_MARKERS)
    used_colors: set[int] = set()
    used_pairs: set[tuple[int, int]] = set()
    out: dict[str, PolicyStyle] = {}
    for n in sorted(unique, key=rank):
        start, _ = _preferred(n)
        free_color = len(used_colors) < len(POLICY_COLOR_ORDER)
        pick = None
        for t in range(start, start + total):
            c, m = _combo(t % total)
            if (c, m) not in used_pairs and (not free_color or c not in used_colors):
                pick = (c, m)
                break
        if pick is None:  # more names than colour-marker pairs: share the preferred one
            pick = _combo(start)
        used_colors.add(pick[0])
        used_pairs.add(pick)
        out[n] = PolicyStyle(colors[pick[0]], LINE_MARKERS[pick[1]])
    return {n: out[n] for n in unique}


def short_policy_label(name: str) -> str:
    """A policy name with its known parts abbreviated: ``confidence+temperature/geometric``
    -> ``conf+T/geo``; names that are not ``score[+calibration]/solver`` stay as they are."""
    text = str(name)
    m = re.fullmatch(r"([A-Za-z0-9_+\-]+)/([A-Za-z0-9_\-]+)(\[[^\]]*\])?", text.strip())
    if not m:
        return text
    score = "+".join(ABBREVIATIONS.get(part, part) for part in m.group(1).split("+"))
    return f"{score}/{ABBREVIATIONS.get(m.group(2), m.group(2))}{m.group(3) or ''}"


def abbreviation_key(names: Iterable[str]) -> str:
    """One sentence spelling out the abbreviations ``short_policy_label`` uses for ``names``
    ("" when none is used)."""
    used: dict[str, None] = {}
    for n in names:
        short = short_policy_label(n)
        if short == str(n):
            continue
        for tok in re.split(r"[+/\[\]]", short):
            if tok in ABBREVIATION_MEANING:
                used[tok] = None
    if not used:
        return ""
    return "Short labels: " + "; ".join(f"{k} = {ABBREVIATION_MEANING[k]}" for k in used) + "."


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` (at ``PNG_DPI``); returns both paths.

    The PDF carries no creation date, so rebuilding a report from the same
    results gives the same files.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png = stem.with_suffix(".pdf"), stem.with_suffix(".png")
    with paper_style():
        fig.savefig(pdf, format="pdf", metadata={"CreationDate": None, "Creator": "eebench report"})
        fig.savefig(png, format="png", dpi=PNG_DPI)
    return pdf, png
