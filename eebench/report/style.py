"""One look for every figure, sized for a two-column paper, and one rule for cost units.

Figures are drawn at their printed size (3.4 in for one column, 7 in for two)
so that a font size set here is the size a reader sees in print: nothing is
scaled down by LaTeX. Every text is at least 7 pt. Colours come from
seaborn's colour-blind palette, and every line also has its own marker so that
a greyscale print still tells lines apart.

Costs in MACs are shown in GMACs, or in MMACs when every cost is below
0.1 GMACs, so that axis ticks and table cells stay short. Both the figures and
the tables of one report use the same scale (``CostScale``), chosen once from
all measured costs. The papers of this field call MACs "FLOPs"; the report
says so next to every figure and table that shows a cost.

matplotlib and seaborn are imported inside the functions: ``eebench report``
and ``import eebench.report`` stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
            raise ValueError(
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
        raise ValueError(f"cost_unit must be a non-empty string such as 'MACs', got {unit!r}")
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

    with matplotlib.rc_context(paper_rc()):
        yield


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colour-blind-safe colours; grey and yellow (low contrast on white) come last."""
    import seaborn as sns

    base = list(sns.color_palette("colorblind"))
    order = [0, 1, 2, 3, 4, 5, 9, 6, 8, 7]
    cols = [base[i] for i in order]
    return [cols[i % len(cols)] for i in range(n)]


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
