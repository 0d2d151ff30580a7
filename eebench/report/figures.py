"""The report's figures, drawn from result frames: anytime curves, budgeted-batch curves,
exit distributions per operating point, and reliability diagrams.

Every function returns a matplotlib Figure made without pyplot (no global
state, no GUI backend) in the style of eebench.report.style; ``save_figure``
writes it as PDF and PNG. A model keeps its colour in every figure, and the
baselines keep one look everywhere: the oracle is a black star, random exits a
grey dashed line, static exits squares in the model's colour. Numbers from
papers (``published``) are drawn hollow, grey and dotted so that nobody can
mistake them for numbers measured here.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.report.frames import (
    ANYTIME_COLUMNS,
    CURVE_COLUMNS,
    RELIABILITY_REQUIRED,
    check_published,
    learned_policies,
    ordered,
    policy_kind,
    require_columns,
)
from eebench.report.reliability import ece_from_bins
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
    cost_scale,
    format_cost,
    new_figure,
    palette,
    paper_style,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_MARKERS_PER_LINE = 10
SPARSE_BIN_SHARE = 0.01  # reliability bins with fewer samples than this share are drawn light
SPARSE_ALPHA = 0.35
RANDOM_DASHES = ("--", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1)))


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


def _legend_below(fig: Figure, axes: Sequence[Axes], ncols: int, axes_height: float) -> None:
    """One legend for all panels, outside under them, duplicate labels once.

    The legend is measured with the Agg renderer: columns are dropped (and
    labels wrapped) until it fits the figure's width, then the figure grows
    by the legend's height so that the panels keep ``axes_height`` inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    if not seen:
        fig.set_figheight(axes_height)
        return
    renderer = FigureCanvasAgg(fig).get_renderer()
    room = fig.get_figwidth() - 0.1
    handles, labels = list(seen.values()), list(seen)
    leg = None
    for wrap in (None, 60, 45, 32, 24):
        texts = labels if wrap is None else [textwrap.fill(t, wrap) for t in labels]
        for nc in range(max(1, min(ncols, len(labels))), 0, -1):
            if leg is not None:
                leg.remove()
            leg = fig.legend(handles, texts, loc="outside lower center", ncols=nc)
            if leg.get_window_extent(renderer).width / fig.dpi <= room:
                break
        if leg.get_window_extent(renderer).width / fig.dpi <= room:
            break
    height = leg.get_window_extent(renderer).height / fig.dpi
    fig.set_figheight(axes_height + height + 0.06)


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

    Learned policies are coloured lines with markers; ``random`` is a grey dashed
    line, the oracle a black star, static exits squares in the model's colour
    (as in the anytime figure). ``published`` rows with setting "budgeted" are
    drawn in the panel of the model of the same name, and in every panel when
    no measured model has that name. ``policies`` restricts (and orders) the policies.
    """
    import pandas as pd

    require_columns(curves, CURVE_COLUMNS, "the curves frame")
    all_models = list(models) if models is not None else ordered(curves["model"])
    panel_models = [m for m in all_models if (curves["model"].astype(str) == m).any()]
    pub = _published_rows(published, "budgeted")
    if not panel_models and pub is None:
        raise ValueError(f"the curves frame has no rows for the models {all_models}")
    scale = _scale_for(scale, cost_unit, curves["test_cost"])
    pub_markers = _published_markers(pub) if pub is not None else {}
    pols = list(policies) if policies is not None else ordered(curves["policy"])
    learned = [p for p in pols if policy_kind(p) == "learned"]
    mcolors = model_colors(all_models)
    pcolors = dict(zip(learned, palette(len(all_models) + len(learned))[len(all_models):]))
    pmarkers = {p: LINE_MARKERS[i % len(LINE_MARKERS)] for i, p in enumerate(learned)}
    randoms = [p for p in pols if policy_kind(p) == "random"]
    pdashes = {p: RANDOM_DASHES[i % len(RANDOM_DASHES)] for i, p in enumerate(randoms)}

    nrows, ncols = _facet_grid(max(1, len(panel_models)))
    width = SINGLE_COLUMN_IN if ncols == 1 else DOUBLE_COLUMN_IN
    legend_cols = 2 if ncols == 1 else 3 if ncols == 2 else 4
    with paper_style():
        fig = new_figure(width, 2.3 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        used = []
        for idx, m in enumerate(panel_models):
            ax = axes[idx // ncols][idx % ncols]
            used.append(ax)
            df = curves[curves["model"].astype(str) == m]
            for p in pols:
                sub = df[df["policy"] == p].sort_values("test_cost")
                if sub.empty:
                    continue
                x = scale(sub["test_cost"])
                y = 100 * sub["test_acc"].to_numpy(dtype=np.float64)
                kind = policy_kind(p)
                if kind == "learned":
                    ax.plot(
                        x, y, color=pcolors[p], marker=pmarkers[p], label=p, zorder=2,
                        markevery=max(1, math.ceil(len(x) / MAX_MARKERS_PER_LINE)),
                    )
                elif kind == "random":
                    ax.plot(
                        x, y, color=BASELINE_GREY, linestyle=pdashes[p], linewidth=1.0, label=p,
                        zorder=1.8,
                    )
                elif kind == "oracle":
                    ax.plot(
                        x, y, linestyle="none", marker=ORACLE_MARKER, markersize=9, color="black",
                        markeredgecolor="white", markeredgewidth=0.4, label=p, zorder=3,
                    )
                else:  # static exits
                    ax.plot(
                        x, y, linestyle="none", marker=STATIC_MARKER, markersize=4.5,
                        color=mcolors[m], markeredgecolor="black", markeredgewidth=0.5,
                        label=f"static exits, {m}", zorder=3,
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
        _legend_below(fig, used, legend_cols, 2.3 * nrows)
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
    learned = learned_policies(curves["policy"].astype(str))
    if not learned:
        raise ValueError(
            "the curves hold no learned policy (only oracle/random/static); name one with policy="
        )
    return learned[0]


def plot_exit_distribution(
    curves: pd.DataFrame,
    cost_unit: str = "MACs",
    *,
    policy: str | None = None,
    scale: CostScale | None = None,
    models: Sequence[str] | None = None,
    anytime: pd.DataFrame | None = None,
) -> Figure:
    """Stacked bars of the share of test samples leaving at each exit, one bar per operating
    point of ``policy`` (default: the first learned policy), in order of mean test cost;
    one row of bars per model. ``anytime`` (optional) supplies exit names."""
    require_columns(curves, CURVE_COLUMNS, "the curves frame")
    frac_cols = sorted(
        (c for c in curves.columns if c.startswith("frac_") and c[5:].isdigit()),
        key=lambda c: int(c[5:]),
    )
    if not frac_cols:
        raise ValueError("the curves frame has no frac_0 .. frac_{K-1} columns of exit fractions")
    policy = policy or default_policy(curves)
    models = list(models) if models is not None else ordered(curves["model"])
    picked = []
    for m in models:
        df = curves[(curves["model"].astype(str) == m) & (curves["policy"] == policy)]
        if not df.empty:
            picked.append((m, df.sort_values("test_cost")))
    if not picked:
        raise ValueError(
            f"no model has operating points of policy {policy!r}; "
            f"policies present: {ordered(curves['policy'])}"
        )
    scale = _scale_for(scale, cost_unit, curves["test_cost"])
    import seaborn as sns

    with paper_style():
        fig = new_figure(DOUBLE_COLUMN_IN, 0.35 + 1.75 * len(picked))
        axes = fig.subplots(len(picked), 1, squeeze=False)[:, 0]
        for ax, (m, df) in zip(axes, picked):
            used = [c for c in frac_cols if df[c].notna().any()]
            k = len(used)
            fr = 100 * df[used].fillna(0.0).to_numpy(dtype=np.float64)
            pos = np.arange(len(df))
            colors = sns.color_palette("viridis", k)
            names = _exit_names(anytime, m, k)
            bottom = np.zeros(len(df))
            for j in range(k):
                ax.bar(pos, fr[:, j], bottom=bottom, width=0.82, color=colors[j], label=names[j],
                       linewidth=0)
                bottom += fr[:, j]
            step = max(1, math.ceil(len(df) / 16))
            ticks = pos[::step]
            ax.set_xticks(ticks)
            ax.set_xticklabels(
                [format_cost(float(v)) for v in scale(df["test_cost"].to_numpy())[::step]]
            )
            ax.set_xlim(-0.6, len(df) - 0.4)
            ax.set_ylim(0, 100)
            ax.set_ylabel("test samples (%)")
            ax.set_title(f"{m}: {policy}")
            ax.grid(axis="x", visible=False)
            ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), title="exit", reverse=True)
        axes[-1].set_xlabel(
            f"operating points, labelled by mean test cost per image ({scale.label})"
        )
    return fig


# ---------------------------------------------------------------- (4) reliability


def plot_reliability(
    reliability: pd.DataFrame, *, models: Sequence[str] | None = None
) -> Figure:
    """Reliability diagrams: one small panel per exit (columns) and model (rows), bars of
    accuracy per confidence bin against the diagonal, the exit's ECE in the panel title.
    Bins holding less than 1% of an exit's samples are drawn light: their accuracy is noise."""
    require_columns(reliability, RELIABILITY_REQUIRED, "the reliability frame")
    models = list(models) if models is not None else ordered(reliability["model"])
    models = [m for m in models if (reliability["model"].astype(str) == m).any()]
    if not models:
        raise ValueError("the reliability frame has no rows for the requested models")
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
        fig.get_layout_engine().set(w_pad=0.09, wspace=0.0)
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
        raise ValueError("no speed row matches an operating point of the curves (model, policy, param)")
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
