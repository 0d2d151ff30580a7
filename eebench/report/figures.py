"""The report's figures, drawn from result frames: anytime curves, budgeted-batch curves
with bootstrap bands, exit distributions of every learned policy, and reliability
diagrams before and after calibration.

Every function returns a matplotlib Figure made without pyplot (no global
state, no GUI backend) in the style of eebench.report.style; ``save_figure``
writes it as PDF and PNG. A model keeps its colour in every figure of a report,
a policy its colour and marker in every figure of every report
(eebench.report.style.policy_styles), and the baselines keep one look
everywhere: the oracle is a black star, random exits a grey dashed line, static
exits white squares. Numbers from papers (``published``) are drawn hollow, grey
and dotted so that nobody can mistake them for numbers measured here.

Legends go below the panels, in as many columns as fit the figure's width;
when the full policy names would make the legend tall next to the panels, the
legend uses short labels and the figure records the key to them in its
``eebench_label_key`` attribute (the report prints it beside the figure).

The figures a report shows are registered in :data:`FIGURES` (name = file stem,
with the heading and the function that draws the figure from the loaded results
and writes its caption), so a new report figure is one registered function.
"""

from __future__ import annotations

import json
import math
import textwrap
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from eebench.errors import InputError, InputTypeError
from eebench.registry import Registry, normalize_name
from eebench.report.frames import (
    ANYTIME_COLUMNS,
    CURVE_COLUMNS,
    RELIABILITY_REQUIRED,
    check_published,
    learned_policies,
    ordered,
    policy_kind,
    policy_kinds,
    require_columns,
)
from eebench.report.reliability import calibrated_rows, ece_from_bins, raw_rows
from eebench.report.style import (
    BASELINE_GREY,
    DOUBLE_COLUMN_IN,
    LINE_MARKERS,
    ORACLE_MARKER,
    PUBLISHED_GREY,
    PUBLISHED_MARKERS,
    SINGLE_COLUMN_IN,
    STATIC_MARKER,
    CostScale,
    abbreviation_key,
    cost_scale,
    new_figure,
    palette,
    paper_style,
    policy_styles,
    short_policy_label,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from eebench.report.index import ReportInputs, Results

MAX_MARKERS_PER_LINE = 10
SPARSE_BIN_SHARE = 0.01  # reliability bins with fewer samples than this share are drawn light
SPARSE_ALPHA = 0.35
RANDOM_DASHES = ("--", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1)))
BAND_ALPHA = 0.12  # bootstrap bands of up to 4 policies; more policies get lighter bands
LEGEND_MAX_SHARE = 0.4  # a legend taller than this share of the panels switches to short labels
STATIC_LABEL = "static exits"


LABEL_KEY = "eebench_label_key"
"""Figure attribute with what a figure's short legend labels stand for ("" when none)."""


def _constrained(fig: Figure) -> Any:
    """The figure's constrained-layout engine (``new_figure`` always makes one)."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    engine = fig.get_layout_engine()
    if not isinstance(engine, ConstrainedLayoutEngine):
        raise InputTypeError("expected a figure from new_figure (constrained layout)")
    return engine


def published_label(model: str, source: str) -> str:
    """The legend label of a published series."""
    return f"{model} (published, {source})"


def model_colors(models: Sequence[str]) -> dict[str, Any]:
    """One colour per model, in the given order (the same in every figure of a report)."""
    return dict(zip(models, palette(len(models))))


def _scale_for(scale: CostScale | None, cost_unit: str, *costs: Any) -> CostScale:
    if scale is not None:
        return scale
    vals = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in costs])
    return cost_scale(cost_unit, vals)


def _legend_below(
    fig: Figure,
    axes: Sequence[Axes],
    ncols: int | None,
    axes_height: float,
    short: Mapping[str, str] | None = None,
    first: Sequence[str] = (),
) -> None:
    """One legend for all panels, outside under them, duplicate labels once.

    The legend is measured with the Agg renderer: it takes as many columns as fit
    the figure's width (at most ``ncols``; None: no limit), wrapping labels only
    when one column is too wide. When ``short`` (label -> short label) is given and
    the legend would be taller than ``LEGEND_MAX_SHARE`` of the panels, the short
    labels are used and ``fig.eebench_label_key`` says what they stand for. Labels in
    ``first`` lead the legend. The figure then grows by the legend's height so that
    the panels keep ``axes_height`` inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    setattr(fig, LABEL_KEY, "")
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    if not seen:
        fig.set_figheight(axes_height)
        return
    seen = {**{lab: seen[lab] for lab in first if lab in seen}, **seen}
    renderer = FigureCanvasAgg(fig).get_renderer()
    handles, labels = list(seen.values()), list(seen)
    leg = _fit_legend(fig, handles, labels, ncols, renderer)
    height = leg.get_window_extent(renderer).height / fig.dpi
    if short and height > LEGEND_MAX_SHARE * axes_height:
        short_labels = [short.get(lab, lab) for lab in labels]
        if short_labels != labels:
            leg.remove()
            leg = _fit_legend(fig, handles, short_labels, ncols, renderer)
            height = leg.get_window_extent(renderer).height / fig.dpi
            setattr(fig, LABEL_KEY, abbreviation_key(lab for lab in labels if lab in short))
    fig.set_figheight(axes_height + height + 0.06)


def _fit_legend(fig: Figure, handles: list, labels: list[str], ncols: int | None,
                renderer: Any) -> Any:
    """The widest legend (most columns, then least wrapping) that fits the figure's width."""
    room = fig.get_figwidth() - 0.1
    top = len(labels) if ncols is None else max(1, min(ncols, len(labels)))
    leg = None
    for wrap in (None, 60, 45, 32, 24, 16):
        texts = labels if wrap is None else [textwrap.fill(t, wrap) for t in labels]
        for nc in range(top, 0, -1):
            if leg is not None:
                leg.remove()
            # balanced rows: as few rows as nc columns allow, spread evenly
            rows = math.ceil(len(labels) / nc)
            nc = math.ceil(len(labels) / rows)
            leg = fig.legend(handles, texts, loc="outside lower center", ncols=nc,
                             handlelength=1.6, handletextpad=0.5, columnspacing=0.9)
            if leg.get_window_extent(renderer).width / fig.dpi <= room:
                return leg
    return leg


def _draw_published(ax: Axes, pub: pd.DataFrame, scale: CostScale, markers: dict) -> None:
    """Draw published series (rows of one setting), one hollow marker shape per series."""
    for key, sub in pub.groupby(_series_keys(pub), sort=False):
        sub = sub.sort_values("gmacs")
        ax.plot(
            scale.from_gmacs(sub["gmacs"]),
            sub["top1"].to_numpy(dtype=np.float64),
            linestyle=":",
            color=PUBLISHED_GREY,
            marker=markers[key],
            markerfacecolor="none",
            markeredgecolor=PUBLISHED_GREY,
            markeredgewidth=0.8,
            linewidth=1.0,
            label=_series_label(pub, key),
            zorder=1.5,
        )


def _series_keys(pub: pd.DataFrame) -> list[str]:
    """What makes one published line: a model of one paper, on one data set, from one table
    or figure. Points of different data sets or tables are never joined."""
    return [c for c in ("source", "model", "dataset", "citation") if c in pub.columns]


def _series_label(pub: pd.DataFrame, key: tuple) -> str:
    """The model and paper, plus the data set (and the table) where the figure has several."""
    fields = dict(zip(_series_keys(pub), key))
    label = published_label(str(fields["model"]), str(fields["source"]))
    if "dataset" in fields and pub["dataset"].nunique() > 1:
        label = label[:-1] + f", {fields['dataset']})"
    if "citation" in fields:
        same = pub[(pub["source"] == fields["source"]) & (pub["model"] == fields["model"])]
        if same["citation"].nunique() > 1:
            label = label[:-1] + f", {str(fields['citation']).rsplit(',', 1)[-1].strip()})"
    return label


def _published_markers(pub: pd.DataFrame) -> dict:
    """The same marker for a published series in every panel."""
    keys = list(pub.groupby(_series_keys(pub), sort=False).groups)
    return {k: PUBLISHED_MARKERS[i % len(PUBLISHED_MARKERS)] for i, k in enumerate(keys)}


def _published_rows(published: pd.DataFrame | None, setting: str) -> pd.DataFrame | None:
    if published is None:
        return None
    pub = check_published(published)
    pub = pub[pub["setting"].astype(str) == setting]
    return pub if len(pub) else None


# ---------------------------------------------------------------- (1) anytime


def plot_anytime(
    anytime: pd.DataFrame,
    cost_unit: str = "MACs",
    *,
    published: pd.DataFrame | None = None,
    scale: CostScale | None = None,
    models: Sequence[str] | None = None,
) -> Figure:
    """Top-1 accuracy (%) against cumulative cost per image, one line per model, a marker
    per exit; ``published`` rows with setting "anytime" are overlaid in grey."""
    require_columns(anytime, ANYTIME_COLUMNS, "the anytime frame")
    models = list(models) if models is not None else ordered(anytime["model"])
    scale = _scale_for(scale, cost_unit, anytime["cost"])
    pub = _published_rows(published, "anytime")
    colors = model_colors(models)
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, 2.3)
        ax = fig.add_subplot()
        for i, m in enumerate(models):
            df = anytime[anytime["model"].astype(str) == m].sort_values("exit")
            if df.empty:
                continue
            ax.plot(
                scale(df["cost"]),
                100 * df["top1"].to_numpy(dtype=np.float64),
                marker=LINE_MARKERS[i % len(LINE_MARKERS)],
                color=colors[m],
                label=m,
                zorder=2,
            )
        if pub is not None:
            _draw_published(ax, pub, scale, _published_markers(pub))
        ax.set_xlabel(scale.axis_label("cumulative cost per image"))
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_xlim(left=0)
        _legend_below(fig, [ax], 2, 2.3)
    return fig


# ---------------------------------------------------------------- (2) budgeted batch


def _facet_grid(n: int) -> tuple[int, int]:
    if n <= 1:
        return 1, 1
    ncols = 2 if n in (2, 4) else 3
    return math.ceil(n / ncols), ncols


def random_dash(name: str) -> Any:
    """The dash pattern of a random baseline, the same for a name in every figure
    (plain ``random`` is dashed)."""
    if str(name).strip().lower() == "random":
        return RANDOM_DASHES[0]
    return RANDOM_DASHES[zlib.crc32(str(name).encode("utf-8")) % len(RANDOM_DASHES)]


def _band(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) accuracy band (in %) of one policy's rows sorted by cost, or None when
    the rows carry no band (results written before bands existed, or n_boot = 0)."""
    if "test_acc_low" not in sub.columns or "test_acc_high" not in sub.columns:
        return None
    lo = sub["test_acc_low"].to_numpy(dtype=np.float64)
    hi = sub["test_acc_high"].to_numpy(dtype=np.float64)
    if not (np.isfinite(lo).any() and np.isfinite(hi).any()):
        return None
    return 100 * lo, 100 * hi


def has_bands(curves: pd.DataFrame) -> bool:
    """Whether the curves carry bootstrap accuracy bands for some learned policy."""
    if "test_acc_low" not in curves.columns or "test_acc_high" not in curves.columns:
        return False
    kinds = policy_kinds(curves, "curves")
    learned = curves["policy"].astype(str).map(kinds) == "learned"
    return bool(np.isfinite(curves.loc[learned, "test_acc_low"].to_numpy(dtype=np.float64)).any())


def plot_budgeted(
    curves: pd.DataFrame,
    cost_unit: str = "MACs",
    *,
    published: pd.DataFrame | None = None,
    scale: CostScale | None = None,
    models: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
) -> Figure:
    """Test top-1 (%) against mean test cost, one panel per model and one line per policy.

    Learned policies are lines with markers in their own colour (the same in every
    report), with their bootstrap band (``test_acc_low`` .. ``test_acc_high``, when
    the curves have it) drawn light around the line; ``random`` is a grey dashed
    line, the oracle a black star, static exits white squares. ``published`` rows
    with setting "budgeted" are drawn in the panel of the model of the same name,
    and in every panel when no measured model has that name. ``policies`` restricts
    (and orders) the policies.
    """
    import pandas as pd

    require_columns(curves, CURVE_COLUMNS, "the curves frame")
    all_models = list(models) if models is not None else ordered(curves["model"])
    panel_models = [m for m in all_models if (curves["model"].astype(str) == m).any()]
    pub = _published_rows(published, "budgeted")
    if not panel_models and pub is None:
        raise InputError(f"the curves frame has no rows for the models {all_models}")
    scale = _scale_for(scale, cost_unit, curves["test_cost"])
    pub_markers = _published_markers(pub) if pub is not None else {}
    pols = list(policies) if policies is not None else ordered(curves["policy"])
    kinds = policy_kinds(curves, "curves")
    learned = [p for p in pols if kinds.get(p, policy_kind(p)) == "learned"]
    styles = policy_styles(learned)
    # overlapping bands add up: the more policies, the lighter each band
    band_alpha = min(BAND_ALPHA, BAND_ALPHA * 2 / math.sqrt(max(1, len(learned))))

    nrows, ncols = _facet_grid(max(1, len(panel_models)))
    width = SINGLE_COLUMN_IN if ncols == 1 else DOUBLE_COLUMN_IN
    with paper_style():
        fig = new_figure(width, 2.3 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        used = []
        for idx, m in enumerate(panel_models):
            ax = axes[idx // ncols][idx % ncols]
            used.append(ax)
            df = curves[curves["model"].astype(str) == m]
            for p in pols:
                sub = df[df["policy"] == p].sort_values("test_cost", kind="stable")
                if sub.empty:
                    continue
                x = scale(sub["test_cost"])
                y = 100 * sub["test_acc"].to_numpy(dtype=np.float64)
                kind = kinds.get(p, policy_kind(p))
                if kind == "learned":
                    st = styles[p]
                    band = _band(sub)
                    if band is not None:
                        ax.fill_between(x, band[0], band[1], color=st.color, alpha=band_alpha,
                                        linewidth=0, zorder=1.2)
                    ax.plot(
                        x, y, color=st.color, marker=st.marker, label=p, zorder=2,
                        markevery=max(1, math.ceil(len(x) / MAX_MARKERS_PER_LINE)),
                    )
                elif kind == "random":
                    ax.plot(
                        x, y, color=BASELINE_GREY, linestyle=random_dash(p), linewidth=1.0,
                        label=p, zorder=1.8,
                    )
                elif kind == "oracle":
                    ax.plot(
                        x, y, linestyle="none", marker=ORACLE_MARKER, markersize=9, color="black",
                        markeredgecolor="white", markeredgewidth=0.4, label=p, zorder=3,
                    )
                else:  # static exits
                    ax.plot(
                        x, y, linestyle="none", marker=STATIC_MARKER, markersize=4.5,
                        color="white", markeredgecolor="black", markeredgewidth=0.7,
                        label=STATIC_LABEL, zorder=3,
                    )
            if pub is not None:
                here = pub[pub["model"].astype(str) == m]
                orphan = pub[~pub["model"].astype(str).isin(panel_models)]
                show = pd.concat([here, orphan]) if len(orphan) else here
                if len(show):
                    _draw_published(ax, show, scale, pub_markers)
            ax.set_title(textwrap.fill(m, 40 if ncols > 2 else 60))
            if ncols > 2:
                ax.locator_params(axis="x", nbins=5)
            if idx // ncols == nrows - 1 or idx + ncols >= len(panel_models):
                ax.set_xlabel(scale.axis_label("mean cost per test image"))
            if idx % ncols == 0:
                ax.set_ylabel("test top-1 accuracy (%)")
        if not panel_models:  # published numbers only
            ax = axes[0][0]
            used.append(ax)
            _draw_published(ax, pub, scale, pub_markers)
            ax.set_title("published results")
            ax.set_xlabel(scale.axis_label("mean cost per test image"))
            ax.set_ylabel("test top-1 accuracy (%)")
        for j in range(max(1, len(panel_models)), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        _legend_below(fig, used, None, 2.3 * nrows,
                      short={p: short_policy_label(p) for p in pols})
    return fig


# ---------------------------------------------------------------- (3) exit distributions


def _exit_names(anytime: pd.DataFrame | None, model: str, k: int) -> list[str]:
    names = [f"exit {j}" for j in range(k)]
    if anytime is not None and "exit_name" in anytime.columns:
        df = anytime[anytime["model"].astype(str) == model]
        for _, r in df.iterrows():
            j = int(r["exit"])
            if 0 <= j < k and isinstance(r["exit_name"], str):
                names[j] = f"{j}: {r['exit_name']}"
    return names


def default_policy(curves: pd.DataFrame) -> str:
    """The first learned policy of the curves (the suite's first policy, usually)."""
    learned = learned_policies(curves["policy"].astype(str), policy_kinds(curves, "curves"))
    if not learned:
        raise InputError(
            "the curves hold no learned policy (only oracle/random/static); name one with policy="
        )
    return learned[0]


EXIT_PANEL_COLS = 5  # most policies per row of the exit-distribution figure (7 in wide)
FEW_POINTS = 4  # policies with fewer operating points get bars, not areas


def _frac_columns(curves: pd.DataFrame) -> list[str]:
    return sorted(
        (c for c in curves.columns if c.startswith("frac_") and c[5:].isdigit()),
        key=lambda c: int(c[5:]),
    )


def plot_exit_distribution(
    curves: pd.DataFrame,
    cost_unit: str = "MACs",
    *,
    policy: str | None = None,
    policies: Sequence[str] | None = None,
    scale: CostScale | None = None,
    models: Sequence[str] | None = None,
    anytime: pd.DataFrame | None = None,
) -> Figure:
    """Where the test samples leave, for every learned policy: one small panel per model
    and policy, the share of samples at each exit stacked against the mean test cost of
    the operating point (between two points, the shares of mixing them).

    Every learned policy is drawn unless ``policies`` (or the single ``policy``) names
    the ones to draw. One block of panels per model, titled with the model, with the
    exits' legend at its right; panels of a model share their axes. ``anytime``
    (optional) supplies exit names.
    """
    require_columns(curves, CURVE_COLUMNS, "the curves frame")
    frac_cols = _frac_columns(curves)
    if not frac_cols:
        raise InputError("the curves frame has no frac_0 .. frac_{K-1} columns of exit fractions")
    if policy is not None and policies is not None:
        raise InputError("give policy= (one) or policies= (several), not both")
    if policies is not None:
        wanted = [str(p) for p in policies]
    elif policy is not None:
        wanted = [str(policy)]
    else:
        wanted = learned_policies(curves["policy"].astype(str), policy_kinds(curves, "curves"))
        if not wanted:
            default_policy(curves)  # raises: no learned policy
    models = list(models) if models is not None else ordered(curves["model"])
    blocks: list[tuple[str, list[tuple[str, pd.DataFrame]]]] = []
    for m in models:
        dm = curves[curves["model"].astype(str) == m]
        panels = [(p, dm[dm["policy"] == p].sort_values("test_cost", kind="stable"))
                  for p in wanted]
        panels = [(p, df) for p, df in panels if not df.empty]
        if panels:
            blocks.append((m, panels))
    if not blocks:
        raise InputError(
            f"no model has operating points of policy {', '.join(map(repr, wanted))}; "
            f"policies present: {ordered(curves['policy'])}"
        )
    scale = _scale_for(scale, cost_unit, curves["test_cost"])
    styles = policy_styles(wanted)
    most = max(len(panels) for _, panels in blocks)
    ncols = math.ceil(most / math.ceil(most / EXIT_PANEL_COLS))  # fewest rows, balanced
    budget = 34 if ncols <= 2 else 24 if ncols == 3 else 18 if ncols == 4 else 14
    titles = {p: p for p in wanted}
    if any(len(p) > budget for p in wanted):  # one rule for all panels: all short
        titles = {p: textwrap.fill(short_policy_label(p), budget) for p in wanted}
    panel_h = 1.25
    panel_w = (DOUBLE_COLUMN_IN - 1.2) / ncols  # about: the exits' legend takes the rest
    rows_of = [math.ceil(len(panels) / ncols) for _, panels in blocks]
    heights = [0.42 + panel_h * r + 0.32 for r in rows_of]  # title, panels, tick labels
    import seaborn as sns

    with paper_style():
        fig = new_figure(DOUBLE_COLUMN_IN, sum(heights))
        subs = fig.subfigures(len(blocks), 1, height_ratios=heights, squeeze=False)[:, 0]
        for sf, (m, panels), nrows in zip(subs, blocks, rows_of):
            axes = sf.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
            k = max(
                (max((j for j, c in enumerate(frac_cols) if df[c].notna().any()), default=0)
                 for _, df in panels),
                default=0,
            ) + 1
            colors = sns.color_palette("viridis", k)
            names = _exit_names(anytime, m, k)
            span = np.concatenate([scale(df["test_cost"].to_numpy()) for _, df in panels])
            width = 0.025 * float(np.ptp(span)) if np.ptp(span) > 0 else 1.0
            pad = width if any(len(df) < FEW_POINTS for _, df in panels) else 0.0
            for i, (p, df) in enumerate(panels):
                ax = axes[i // ncols][i % ncols]
                x = scale(df["test_cost"].to_numpy())
                fr = 100 * df[frac_cols[:k]].fillna(0.0).to_numpy(dtype=np.float64)
                if len(df) < FEW_POINTS:  # a few points: one stacked bar each
                    bottom = np.zeros(len(df))
                    for j in range(k):
                        ax.bar(x, fr[:, j], bottom=bottom, width=width, color=colors[j],
                               label=names[j], linewidth=0)
                        bottom += fr[:, j]
                else:
                    ax.stackplot(x, fr.T, colors=colors, labels=names, linewidth=0)
                ax.set_ylim(0, 100)
                ax.set_xlim(float(span.min()) - pad, float(span.max()) + pad)
                # the title starts 11 pt right of the panel's edge, after the marker
                ax.set_title(titles[p], loc="left", x=11 / 72 / panel_w)
                _title_marker(ax, styles[p])
                ax.grid(axis="both", visible=False)
                ax.locator_params(axis="x", nbins=5)
                if i % ncols == 0:
                    ax.set_ylabel("samples (%)")
                if i + ncols >= len(panels):
                    ax.xaxis.set_tick_params(labelbottom=True)
            for j in range(len(panels), nrows * ncols):
                axes[j // ncols][j % ncols].set_visible(False)
            sf.supxlabel(scale.axis_label("mean test cost per image"), fontsize=8)
            sf.suptitle(m, fontsize=8, fontweight="bold")
            handles, labels = axes[0][0].get_legend_handles_labels()
            keep = [(h, lab) for h, lab in zip(handles, labels) if not lab.startswith("_")]
            sf.legend([h for h, _ in keep][::-1], [lab for _, lab in keep][::-1],
                      loc="outside right upper", title="exit")
        if any(titles[p] != p for p in wanted):
            setattr(fig, LABEL_KEY, abbreviation_key(wanted))
    return fig


def _title_marker(ax: Axes, style: Any) -> None:
    """The policy's marker in its colour left of the panel title (on the title's last
    line), so that a panel is matched to its line in the budgeted figure at a glance."""
    import matplotlib
    from matplotlib.transforms import offset_copy

    pad = float(matplotlib.rcParams["axes.titlepad"])
    size = float(ax.title.get_fontsize())
    tr = offset_copy(ax.transAxes, fig=cast("Figure", ax.figure), x=4.0, y=pad + 0.4 * size, units="points")
    ax.plot([0.0], [1.0], transform=tr, marker=style.marker, color=style.color,
            markeredgecolor="black", markeredgewidth=0.3, markersize=5, clip_on=False,
            linestyle="none", label="_marker", zorder=5)


# ---------------------------------------------------------------- (4) reliability


def plot_reliability(
    reliability: pd.DataFrame, *, models: Sequence[str] | None = None
) -> Figure:
    """Reliability diagrams of the raw outputs: one small panel per exit (columns) and model
    (rows), bars of accuracy per confidence bin against the diagonal, the exit's ECE in the
    panel title. Bins holding less than 1% of an exit's samples are drawn light: their
    accuracy is noise. Rows of calibrated policies are left to ``plot_calibration``."""
    require_columns(reliability, RELIABILITY_REQUIRED, "the reliability frame")
    reliability = raw_rows(reliability)
    models = list(models) if models is not None else ordered(reliability["model"])
    models = [m for m in models if (reliability["model"].astype(str) == m).any()]
    if not models:
        raise InputError("the reliability frame has no rows for the requested models")
    colors = model_colors(models)
    exits = {
        m: sorted(int(e) for e in reliability.loc[reliability["model"].astype(str) == m, "exit"].unique())
        for m in models
    }
    kmax = max(len(v) for v in exits.values())
    panel = min(1.45, (DOUBLE_COLUMN_IN - 0.5) / kmax)
    width = max(SINGLE_COLUMN_IN, min(DOUBLE_COLUMN_IN, panel * kmax + 0.5))
    with paper_style():
        fig = new_figure(width, (panel + 0.45) * len(models) + 0.2)
        _constrained(fig).set(w_pad=0.09, wspace=0.0)
        axes = fig.subplots(len(models), kmax, squeeze=False)
        for i, m in enumerate(models):
            dm = reliability[reliability["model"].astype(str) == m]
            for j in range(kmax):
                ax = axes[i][j]
                if j >= len(exits[m]):
                    ax.set_visible(False)
                    continue
                e = exits[m][j]
                b = dm[dm["exit"].astype(int) == e].sort_values("bin_low")
                nz = b[b["count"] > 0]
                share = nz["count"].to_numpy(dtype=np.float64) / max(1.0, float(b["count"].sum()))
                for sparse, alpha in ((False, 1.0), (True, SPARSE_ALPHA)):
                    sel = nz[(share < SPARSE_BIN_SHARE) == sparse]
                    ax.bar(
                        sel["bin_low"], sel["accuracy"], width=(sel["bin_high"] - sel["bin_low"]),
                        align="edge", color=colors[m], alpha=alpha, edgecolor="white",
                        linewidth=0.3, zorder=2,
                    )
                ax.plot([0, 1], [0, 1], linestyle="--", color=BASELINE_GREY, linewidth=0.8, zorder=3)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_aspect("equal")
                ax.set_xticks([0, 0.5, 1])
                ax.set_yticks([0, 0.5, 1])
                ax.set_xticklabels(["0", ".5", "1"])
                ax.set_yticklabels(["0", ".5", "1"] if j == 0 else [])
                name = b["exit_name"].iloc[0] if "exit_name" in b.columns and len(b) else None
                label = f"{e}: {name}" if isinstance(name, str) else f"exit {e}"
                ax.set_title(f"{label}\nECE {100 * ece_from_bins(b):.1f}%")
                if j == 0:
                    ax.set_ylabel(f"{textwrap.fill(m, 24)}\naccuracy")
                if i == len(models) - 1 or j >= len(exits.get(models[min(i + 1, len(models) - 1)], [])):
                    ax.set_xlabel("confidence")
    return fig


def _exit_bins(df: pd.DataFrame, e: int) -> pd.DataFrame:
    return df[df["exit"].astype(int) == e].sort_values("bin_low")


def calibration_groups(reliability: pd.DataFrame, model: str) -> list[tuple[str, list[str]]]:
    """(row label, policies) of one model's calibrated rows: policies whose rows are the
    same bins (the same calibration fit on the same outputs) share one row, labelled by
    the calibration's name."""
    cal = calibrated_rows(reliability)
    cal = cal[cal["model"].astype(str) == model]
    groups: list[tuple[tuple, str, list[str]]] = []
    for p in ordered(cal["policy"]):
        rows = cal[cal["policy"].astype(str) == p].sort_values(["exit", "bin_low"])
        key = tuple(rows["count"].astype(int)) + tuple(np.round(rows["accuracy"].fillna(-1), 12))
        name = str(rows["calibration"].iloc[0]) if "calibration" in rows.columns else p
        for k, label, members in groups:
            if k == key and label == name:
                members.append(p)
                break
        else:
            groups.append((key, name, [p]))
    return [(label, members) for _, label, members in groups]


def plot_calibration(
    reliability: pd.DataFrame, *, models: Sequence[str] | None = None
) -> Figure:
    """Reliability before and after calibration: one row per model and calibration (policies
    with the same fitted calibration share a row), one panel per exit. The raw outputs are
    light grey bars, the calibrated ones a line of the policy's colour and marker through
    (mean confidence, accuracy) of each bin; the panel title gives the ECE before -> after.
    Bins holding less than 1% of the exit's samples are left out of the line."""
    require_columns(reliability, (*RELIABILITY_REQUIRED, "policy"), "the reliability frame")
    raw = raw_rows(reliability)
    models = list(models) if models is not None else ordered(reliability["model"])
    rows: list[tuple[str, str, list[str]]] = []
    for m in models:
        for label, members in calibration_groups(reliability, m):
            rows.append((m, label, members))
    if not rows:
        raise InputError(
            "the reliability frame has no rows of a calibrated policy (policy column empty "
            "everywhere): re-run the suite with a policy that calibrates, e.g. "
            "calibration = \"temperature\""
        )
    styles = policy_styles(ordered(p for _, _, members in rows for p in members))
    cal = calibrated_rows(reliability)
    exits = {
        m: sorted(int(e) for e in reliability.loc[reliability["model"].astype(str) == m, "exit"]
                  .unique())
        for m, _, _ in rows
    }
    kmax = max(len(exits[m]) for m, _, _ in rows)
    panel = min(1.45, (DOUBLE_COLUMN_IN - 0.55) / kmax)
    width = max(SINGLE_COLUMN_IN, min(DOUBLE_COLUMN_IN, panel * kmax + 0.55))
    with paper_style():
        fig = new_figure(width, (panel + 0.45) * len(rows) + 0.2)
        _constrained(fig).set(w_pad=0.09, wspace=0.0)
        axes = fig.subplots(len(rows), kmax, squeeze=False)
        for i, (m, label, members) in enumerate(rows):
            p = members[0]
            st = styles[p]
            dr = raw[raw["model"].astype(str) == m]
            dc = cal[(cal["model"].astype(str) == m) & (cal["policy"].astype(str) == p)]
            for j in range(kmax):
                ax = axes[i][j]
                if j >= len(exits[m]):
                    ax.set_visible(False)
                    continue
                e = exits[m][j]
                b = _exit_bins(dr, e)
                c = _exit_bins(dc, e)
                nz = b[b["count"] > 0]
                raw_share = nz["count"].to_numpy(dtype=np.float64) / max(1.0, float(b["count"].sum()))
                for sparse, alpha in ((False, 1.0), (True, SPARSE_ALPHA)):
                    sel = nz[(raw_share < SPARSE_BIN_SHARE) == sparse]
                    ax.bar(sel["bin_low"], sel["accuracy"], width=(sel["bin_high"] - sel["bin_low"]),
                           align="edge", color="0.78", alpha=alpha, edgecolor="white",
                           linewidth=0.3, zorder=2, label="before (raw outputs)")
                share = c["count"].to_numpy(dtype=np.float64) / max(1.0, float(c["count"].sum()))
                cz = c[(c["count"] > 0) & (share >= SPARSE_BIN_SHARE)]
                ax.plot(cz["mean_confidence"], cz["accuracy"], color=st.color, marker=st.marker,
                        markersize=3.2, linewidth=1.0, zorder=4, label=f"after {label}")
                ax.plot([0, 1], [0, 1], linestyle="--", color=BASELINE_GREY, linewidth=0.8,
                        zorder=3)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_aspect("equal")
                ax.set_xticks([0, 0.5, 1])
                ax.set_yticks([0, 0.5, 1])
                ax.set_xticklabels(["0", ".5", "1"])
                ax.set_yticklabels(["0", ".5", "1"] if j == 0 else [])
                name = b["exit_name"].iloc[0] if "exit_name" in b.columns and len(b) else None
                head = f"{e}: {name}" if isinstance(name, str) else f"exit {e}"
                ax.set_title(
                    f"{head}\nECE {100 * ece_from_bins(b):.1f}→{100 * ece_from_bins(c):.1f}%"
                )
                if j == 0:
                    ax.set_ylabel(f"{textwrap.fill(m, 22)}\n{textwrap.fill(label, 22)}\naccuracy")
                if i == len(rows) - 1 or j >= len(exits[rows[i + 1][0]]):
                    ax.set_xlabel("confidence")
        _legend_below(fig, [ax for r in axes for ax in r if ax.get_visible()], None,
                      fig.get_figheight(), first=["before (raw outputs)"])
    return fig


# ---------------------------------------------------------------- (5) real early exit


SPEED_REQUIRED = ("model", "batch_size", "predicted_speedup", "measured_speedup", "throughput")


def plot_speedup(speed: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Measured against MACs-predicted speed-up, one point per model, operating point and
    batch size; the diagonal is "the MACs were right". A model keeps its colour, a batch
    size its marker, so batch 1 and batched runs of the same point sit side by side."""
    require_columns(speed, SPEED_REQUIRED, "the speed frame")
    models = list(models) if models is not None else ordered(speed["model"])
    colors = model_colors(models)
    sizes = sorted({int(b) for b in speed["batch_size"]})
    markers = {b: LINE_MARKERS[i % len(LINE_MARKERS)] for i, b in enumerate(sizes)}
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        top = float(np.nanmax(speed[["predicted_speedup", "measured_speedup"]].to_numpy())) * 1.08
        ax.plot([1, top], [1, top], color=BASELINE_GREY, linestyle="--", linewidth=0.8,
                label="measured = predicted", zorder=1)
        for m in models:
            for b in sizes:
                df = speed[(speed["model"].astype(str) == m) & (speed["batch_size"] == b)]
                if df.empty:
                    continue
                ax.plot(df["predicted_speedup"], df["measured_speedup"], linestyle="none",
                        marker=markers[b], color=colors[m], markeredgecolor="black",
                        markeredgewidth=0.4, label=f"{m}, batch {b}", zorder=2)
        ax.set_xlabel("speed-up predicted from MACs (×)")
        ax.set_ylabel("measured speed-up (×)")
        ax.set_xlim(left=1)
        ax.set_ylim(bottom=min(1.0, float(np.nanmin(speed["measured_speedup"])) * 0.95))
        _legend_below(fig, [ax], 2, 2.4)
    return fig


def plot_latency_curves(speed: pd.DataFrame, curves: pd.DataFrame,
                        models: Sequence[str] | None = None) -> Figure:
    """Test accuracy against measured time per image with real exits: the budgeted curve
    with latency, not MACs, as the cost axis, one line per model and batch size."""
    import pandas as pd

    require_columns(speed, (*SPEED_REQUIRED, "policy", "param"), "the speed frame")
    require_columns(curves, (*CURVE_COLUMNS, "param"), "the curves frame")
    acc = curves[["model", "policy", "param", "test_acc"]].astype({"model": str, "policy": str})
    df = pd.merge(speed.astype({"model": str, "policy": str}), acc, on=["model", "policy", "param"],
                  how="inner")
    if df.empty:
        raise InputError("no speed row matches an operating point of the curves (model, policy, param)")
    df["ms_per_image"] = 1000.0 / df["throughput"]
    models = list(models) if models is not None else ordered(df["model"])
    colors = model_colors(models)
    sizes = sorted({int(b) for b in df["batch_size"]})
    styles = {b: ("-", "--", ":", "-.")[i % 4] for i, b in enumerate(sizes)}
    markers = {b: LINE_MARKERS[i % len(LINE_MARKERS)] for i, b in enumerate(sizes)}
    with paper_style():
        fig = new_figure(SINGLE_COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        for m in models:
            for b in sizes:
                sub = df[(df["model"] == m) & (df["batch_size"] == b)].sort_values("ms_per_image")
                if sub.empty:
                    continue
                ax.plot(sub["ms_per_image"], 100 * sub["test_acc"], linestyle=styles[b],
                        marker=markers[b], color=colors[m], label=f"{m}, batch {b}")
        ax.set_xlabel("measured time per image (ms, real exits)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_xlim(left=0)
        _legend_below(fig, [ax], 2, 2.4)
    return fig


# ------------------------------------------------------------------ the figures of a report


@dataclass(frozen=True)
class Drawn:
    """A figure drawn for a report, with the line index.md shows under its heading."""

    figure: Figure
    caption: str


@dataclass(frozen=True)
class ReportFigure:
    """A figure every report draws when its results allow. ``draw(inputs)`` returns the
    :class:`Drawn` figure, a reason it is left out (index.md lists it under "Not in this
    report"), or None when there is nothing to say (an optional measurement that was not
    made). Reports draw their figures by increasing ``order``; ``name`` is the file stem."""

    name: str
    heading: str
    order: int
    draw: Callable[[ReportInputs], Drawn | str | None]


FIGURES: Registry[ReportFigure] = Registry("report figure", where="eebench.report.FIGURES")

DrawFn = Callable[["ReportInputs"], "Drawn | str | None"]


def report_figure(name: str, heading: str, *, order: int) -> Callable[[DrawFn], DrawFn]:
    """Register the decorated function as the report figure ``name`` (its file stem)."""

    def add(draw: DrawFn) -> DrawFn:
        FIGURES.register(name, ReportFigure(normalize_name(name), heading, order, draw))
        return draw

    return add


def fit_sets(curves: pd.DataFrame) -> dict[str, str]:
    """model -> what fit its thresholds (the curves' ``fit_on`` column; results written
    before it existed were fit on the validation split)."""
    if "fit_on" not in curves.columns:
        return {}
    return {str(m): str(f) for m, f in zip(curves["model"], curves["fit_on"]) if isinstance(f, str)}


def _fit_text(curves: pd.DataFrame) -> str:
    kinds = set(fit_sets(curves).values())
    if not kinds or kinds == {"validation split"}:
        return "the validation split"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "; ".join(f"{m}: {f}" for m, f in fit_sets(curves).items())


def _band_text(res: Results) -> str:
    """What the budgeted figure's bands are, with the bootstrap settings of the suite."""
    ev: dict[str, Any] = {}
    try:
        ev = json.loads((res.folder / "suite.resolved.json").read_text()).get("evaluate") or {}
    except (OSError, ValueError, AttributeError):
        pass
    n_boot, seed = ev.get("n_boot"), ev.get("seed")
    settings = (f", {n_boot} test resamples, seed {seed}"
                if isinstance(n_boot, int) and isinstance(seed, int) else "")
    return (f"95% percentile bootstrap interval of each operating point's test accuracy (exits "
            f"fixed, test samples resampled{settings}; the same resamples for every policy of a "
            "model)")


def _calibration_members(reliability: pd.DataFrame, models: Sequence[str]) -> str:
    parts = []
    for m in models:
        for label, members in calibration_groups(reliability, m):
            parts.append(f"{m}, {label}: {', '.join(members)}")
    return "; ".join(parts)


@report_figure("anytime", "Anytime accuracy", order=10)
def _anytime_figure(inputs: ReportInputs) -> Drawn:
    fig = plot_anytime(inputs.res.anytime, inputs.unit, published=inputs.published,
                       scale=inputs.scale, models=inputs.models)
    return Drawn(
        fig,
        "Test top-1 accuracy when every sample leaves at the same exit, against the "
        "cumulative cost of reaching that exit; one line per model, one marker per exit"
        + ("; papers' numbers in grey (hollow markers, dotted)." if inputs.published is not None
           else "."),
    )


@report_figure("budgeted", "Budgeted-batch accuracy", order=20)
def _budgeted_figure(inputs: ReportInputs) -> Drawn:
    curves = inputs.res.curves
    fig = plot_budgeted(curves, inputs.unit, published=inputs.published, scale=inputs.scale,
                        models=inputs.models)
    return Drawn(
        fig,
        "Test top-1 accuracy against mean test cost per image for each exit policy "
        f"(thresholds fit on {_fit_text(curves)}); one panel per model"
        + (f"; light bands: {_band_text(inputs.res)}" if has_bands(curves) else "")
        + ". A policy has the same colour and marker in every figure and report. Oracle: "
        "black star; random exits: grey dashed; static exits: white squares.",
    )


@report_figure("exit_distribution", "Exit distributions", order=30)
def _exit_distribution_figure(inputs: ReportInputs) -> Drawn | str:
    curves = inputs.res.curves
    if not (inputs.exit_policy
            or learned_policies(curves["policy"], policy_kinds(curves, "curves"))):
        return "curves.csv holds no learned policy."
    if not _frac_columns(curves):
        return "curves.csv has no frac_k columns."
    fig = plot_exit_distribution(curves, inputs.unit, policy=inputs.exit_policy,
                                 scale=inputs.scale, models=inputs.models,
                                 anytime=inputs.res.anytime)
    which = inputs.exit_policy or "every learned policy"
    return Drawn(
        fig,
        f"Share of test samples leaving at each exit for {which} (one panel per model and "
        "policy, the policy's marker beside its name), stacked against the mean test cost "
        "of the operating point.",
    )


@report_figure("speedup", "Real early exit: measured against predicted speed-up", order=40)
def _speedup_figure(inputs: ReportInputs) -> Drawn | None:
    if inputs.speed is None:  # suites without a [speed] section
        return None
    return Drawn(
        plot_speedup(inputs.speed, models=inputs.models),
        "Speed-up measured with real exits (the network stops for samples that leave; "
        "batches shed them) against the speed-up the exits' MACs predict, per model, "
        "operating point and batch size; on the dashed line the MACs were right.",
    )


@report_figure("latency_curves", "Budgeted accuracy against measured time", order=50)
def _latency_figure(inputs: ReportInputs) -> Drawn | None:
    if inputs.speed is None:
        return None
    return Drawn(
        plot_latency_curves(inputs.speed, inputs.res.curves, models=inputs.models),
        "Test accuracy of the timed operating points against measured time per image "
        "with real exits, one line per model and batch size.",
    )


@report_figure("reliability", "Reliability diagrams", order=60)
def _reliability_figure(inputs: ReportInputs) -> Drawn | str:
    rel = inputs.res.reliability
    if rel is None:
        return "reliability.csv is absent from the results."
    if rel.empty:
        return "reliability.csv has no rows."
    return Drawn(
        plot_reliability(rel, models=inputs.models),
        "Per exit (columns) and model (rows): test accuracy per bin of maximum softmax "
        "probability against the diagonal of perfect calibration; ECE in each title; light "
        "bars hold less than 1% of the exit's samples.",
    )


@report_figure("calibration", "Reliability before and after calibration", order=70)
def _calibration_figure(inputs: ReportInputs) -> Drawn | None:
    rel = inputs.res.reliability
    if rel is None or rel.empty or "policy" not in rel.columns or calibrated_rows(rel).empty:
        return None  # the reliability figure already says why when the file is missing
    return Drawn(
        plot_calibration(rel, models=inputs.models),
        "Per exit (columns), model and calibration (rows): test accuracy per bin of "
        "maximum probability of the raw outputs (grey bars) and of the calibrated "
        "policy (line in the policy's colour, bins with at least 1% of the samples); "
        "ECE before → after in each title. Policies sharing a calibration share a "
        "row: " + _calibration_members(rel, inputs.models) + ".",
    )
