"""The report's figures: seaborn facet grids (one panel per problem, one colour and marker per
variant) and rliable's own plots, each returned as a matplotlib Figure; `png_data_uri` embeds one.

Figures only draw: every number comes from the tables of `reports.results` and
`reports.rliable_stats`. Style settings are applied inside `report_style()` so the caller's
matplotlib rcParams are left as they were.
"""

from __future__ import annotations

import base64
import io
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # reports are written headless (CI, servers, `pgvar report` over ssh)

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402
from rliable import plot_utils  # noqa: E402

from reports.results import at_headline  # noqa: E402
from reports.rliable_stats import STATISTICS  # noqa: E402

DPI = 90  # keeps ~20 figures well under 10 MB of base64
PANEL_HEIGHT = 2.8  # inches
PANELS_PER_ROW = 3
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
BIAS_COLOR, VARIANCE_COLOR = sns.color_palette("colorblind")[3], sns.color_palette("colorblind")[0]


@dataclass(frozen=True)
class VariantStyle:
    """One colour and marker per variant, the same in every figure."""

    variants: list[str]  # legend order
    colors: dict[str, tuple[float, float, float]]
    markers: dict[str, str]


def variant_style(variants: Sequence[str]) -> VariantStyle:
    # ≤ 10 variants: the colourblind palette; more: tab20, with markers cycling at a different
    # period so neighbouring colours never share a marker too.
    palette = sns.color_palette("colorblind" if len(variants) <= 10 else "tab20", len(variants))
    return VariantStyle(list(variants), dict(zip(variants, palette)),
                        {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(variants)})


@contextmanager
def report_style() -> Iterator[None]:
    """Seaborn's whitegrid look with small fonts, for the duration of the block only."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"), plt.rc_context({"figure.dpi": DPI}):
        yield


def png_data_uri(fig: Figure) -> str:
    """The figure as a `data:image/png;base64,…` URI; the figure is closed."""
    buffer = io.BytesIO()
    # No "Software" metadata: the bytes then depend only on the pixels.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _variant_legend(fig: Figure, style: VariantStyle, shown: Sequence[str], extra: Sequence[Line2D] = (),
                    markers: bool = True) -> None:
    """One legend for the whole figure, right of the panels."""
    handles = [Line2D([], [], color=style.colors[v], marker=style.markers[v] if markers else None, label=v)
               for v in style.variants if v in shown]
    fig.legend(handles=[*handles, *extra], loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False,
               title="variant")


def _batch_size_axis(ax: plt.Axes, batch_sizes: Sequence[int]) -> None:
    """A log-scaled N axis labelled at the measured batch sizes."""
    ax.set_xscale("log")
    ax.set_xticks(list(batch_sizes))
    ax.set_xticklabels([str(n) for n in batch_sizes])
    ax.xaxis.set_minor_locator(NullLocator())


def _errorbar_line(data: pd.DataFrame, x: str, y: str, color, label: str, marker: str) -> None:
    """One variant in one panel: the points joined, with error bars from `<y>_lo`/`<y>_hi` if present."""
    data = data.sort_values(x)
    error = None
    if f"{y}_lo" in data:
        error = np.clip([data[y] - data[f"{y}_lo"], data[f"{y}_hi"] - data[y]], 0, None)
    plt.gca().errorbar(data[x], data[y], yerr=error, color=color, label=label, marker=marker, markersize=4,
                       linewidth=1.2, capsize=2, elinewidth=0.8)


def metric_vs_batch_size(points: pd.DataFrame, metric: str, ylabel: str, style: VariantStyle, log_y: bool,
                         one_over_n_from: str | None = None) -> Figure:
    """`metric` against N, a panel per problem, a line per variant; error bars where the points
    have `<metric>_lo/_hi`. `one_over_n_from`: a variant whose smallest-N value anchors a dashed
    ∝ 1/N line in every panel (how a plain Monte Carlo average's variance falls)."""
    problems = sorted(points["problem"].unique())
    shown = [v for v in style.variants if v in set(points["variant"])]
    grid = sns.FacetGrid(points, col="problem", col_order=problems, col_wrap=min(len(problems), PANELS_PER_ROW),
                         hue="variant", hue_order=shown, palette=style.colors,
                         hue_kws={"marker": [style.markers[v] for v in shown]},
                         sharey=False, height=PANEL_HEIGHT, aspect=1.3)
    extra = []
    for problem, ax in grid.axes_dict.items():
        in_panel = points[points["problem"] == problem]
        batch_sizes = sorted(in_panel["batch_size"].unique())
        _batch_size_axis(ax, batch_sizes)
        if log_y:
            ax.set_yscale("log", nonpositive="mask")
        anchor = in_panel[in_panel["variant"] == one_over_n_from].sort_values("batch_size")
        if len(anchor):
            n = np.array(batch_sizes, dtype=float)
            n0, v0 = anchor["batch_size"].iloc[0], anchor[metric].iloc[0]
            ax.plot(n, v0 * n0 / n, linestyle="--", color="0.4", linewidth=1)
            extra = [Line2D([], [], linestyle="--", color="0.4", label=f"∝ 1/N from {one_over_n_from}")]
    # Scales are set before drawing so that seaborn's final layout pass sees the real tick labels.
    grid.map_dataframe(_errorbar_line, x="batch_size", y=metric)
    grid.set_titles("{col_name}")
    grid.set_axis_labels("batch size N", ylabel)
    _variant_legend(grid.figure, style, shown, extra)
    return grid.figure


def _stacked_bars(data: pd.DataFrame, style: VariantStyle, **_) -> None:
    """Horizontal bars of one panel: bias² then variance, a tick at the measured MSE."""
    ax = plt.gca()
    rows = np.array([style.variants.index(v) for v in data["variant"]])
    ax.barh(rows, data["bias_squared"], color=BIAS_COLOR, height=0.7)
    ax.barh(rows, data["variance_trace"], left=data["bias_squared"], color=VARIANCE_COLOR, height=0.7)
    ax.scatter(data["mse"], rows, marker="|", color="black", s=120, zorder=3)
    for row, total, bias_squared in zip(rows, data["mse"], data["bias_squared"]):
        share = bias_squared / total if total > 0 else np.nan
        ax.annotate(f" {total:.3g} ({share:.0%} bias²)", (max(total, bias_squared), row), va="center", fontsize=6.5)


def bias_variance_bars(points: pd.DataFrame, headline: dict[str, int], style: VariantStyle) -> Figure:
    """A panel per problem at its headline N: per variant, bias² (= mean bias_norm²) and variance
    (variance_trace) stacked, whose total is the MSE; the tick marks the measured MSE."""
    bars = at_headline(points, headline)
    bars = bars.assign(panel=[f"{p}\nN={n}" for p, n in zip(bars["problem"], bars["batch_size"])])
    panels = sorted(bars["panel"].unique())
    height = 0.3 * len(style.variants) + 1.0
    grid = sns.FacetGrid(bars, col="panel", col_order=panels, col_wrap=min(len(panels), PANELS_PER_ROW),
                         sharex=False, sharey=True, height=height, aspect=4.0 / height)
    for ax in grid.axes.flat:
        ax.set_yticks(range(len(style.variants)))
        ax.set_yticklabels(style.variants)
        ax.set_ylim(len(style.variants) - 0.5, -0.5)
        ax.grid(False, axis="y")
    grid.map_dataframe(_stacked_bars, style=style)
    for ax in grid.axes.flat:
        ax.set_xlim(0, 1.45 * ax.get_xlim()[1])  # room for the labels right of the bars
    grid.set_titles("{col_name}")
    grid.set_axis_labels("MSE  ‖ĝ − ∇J‖²", "")
    grid.figure.legend(handles=[Patch(color=BIAS_COLOR, label="bias²"), Patch(color=VARIANCE_COLOR, label="variance"),
                                Line2D([], [], marker="|", color="black", linestyle="", markersize=10,
                                       label="measured MSE")],
                       loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    return grid.figure


def interval_estimates(intervals: pd.DataFrame, style: VariantStyle, xlabel: str) -> Figure:
    """rliable's interval plot of IQM, median, mean and optimality gap for one score and N.
    `intervals`: [variant, statistic, estimate, lo, hi]."""
    variants = [v for v in style.variants if v in set(intervals["variant"])]
    wide = intervals.pivot(index="variant", columns="statistic")
    points = {v: wide.loc[v, "estimate"][list(STATISTICS)].to_numpy() for v in variants}
    bounds = {v: np.stack([wide.loc[v, end][list(STATISTICS)].to_numpy() for end in ("lo", "hi")]) for v in variants}
    row_height = 0.45
    fig, axes = plot_utils.plot_interval_estimates(
        points, bounds, metric_names=STATISTICS, algorithms=variants, colors=style.colors, xlabel=xlabel,
        subfigure_width=3.2, row_height=row_height,
        # rliable places the label in figure coordinates; keep it ~0.6 in below the axes whatever the height.
        xlabel_y_coordinate=0.11 - 0.6 / (row_height * len(variants)))
    for ax in np.ravel(axes):
        ax.grid(False, axis="y")
    return fig


def performance_profile(profiles: pd.DataFrame, style: VariantStyle, xlabel: str) -> Figure:
    """rliable's performance profile with its bootstrap band. `profiles`: [variant, tau, fraction, lo, hi]."""
    variants = [v for v in style.variants if v in set(profiles["variant"])]
    by_variant = {v: profiles[profiles["variant"] == v] for v in variants}
    taus = by_variant[variants[0]]["tau"].to_numpy()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    plot_utils.plot_performance_profiles(
        {v: frame["fraction"].to_numpy() for v, frame in by_variant.items()}, taus,
        performance_profile_cis={v: (frame["lo"].to_numpy(), frame["hi"].to_numpy())
                                 for v, frame in by_variant.items()},
        colors=style.colors, ax=ax, xlabel=xlabel, ylabel="fraction of runs × problems > τ",
        labelsize="medium", ticklabelsize="medium")
    ax.axvline(0, color="0.4", linestyle="--", linewidth=1)
    fig.tight_layout()
    _variant_legend(fig, style, variants, markers=False)
    return fig
