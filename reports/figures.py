"""The report's figures: per estimator family, its variants against N (a row per problem, one
colour and marker per variant); per one-option sweep, the metrics against the swept value; the
bias²/variance bars; and rliable's own plots. Each is returned as a matplotlib Figure;
`png_data_uri` embeds one.

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
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402
from rliable import plot_utils  # noqa: E402

from reports.families import Axis  # noqa: E402
from reports.results import PLAIN_TARGET, at_headline  # noqa: E402
from reports.rliable_stats import STATISTICS  # noqa: E402

DPI = 90  # with palette PNGs the ~30 figures of the default report take ~1.3 MB of base64
PANEL_HEIGHT = 2.8  # inches
PANELS_PER_ROW = 3
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")  # 9: a period prime to tab20's 20 colours
MIN_FONT = 9  # points: every label of every figure, at 100% zoom
BIAS_COLOR, VARIANCE_COLOR = sns.color_palette("colorblind")[3], sns.color_palette("colorblind")[0]


@dataclass(frozen=True)
class VariantStyle:
    """One colour and marker per variant, the same in every figure."""

    variants: list[str]  # legend order
    colors: dict[str, tuple[float, float, float]]
    markers: dict[str, str]


def variant_style(variants: Sequence[str]) -> VariantStyle:
    # ≤ 10 variants: the colourblind palette; more: tab20, with markers cycling at a period (9) prime to the
    # colours' (20), so no two of the first 180 variants share both colour and marker.
    if len(variants) <= 10:
        palette = sns.color_palette("colorblind", len(variants))
    else:  # tab20 pairs a dark and a light shade of each hue: the ten dark first, so neighbours differ in hue
        pairs = sns.color_palette("tab20", 20)
        palette = [(pairs[0::2] + pairs[1::2])[i % 20] for i in range(len(variants))]
    return VariantStyle(list(variants), dict(zip(variants, palette)),
                        {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(variants)})


def style_subset(style: VariantStyle, variants: Sequence[str]) -> VariantStyle:
    """The same colours and markers for some of the variants (in `style`'s order): a variant keeps its colour in
    every figure of the report."""
    shown = [v for v in style.variants if v in set(variants)]
    return VariantStyle(shown, {v: style.colors[v] for v in shown}, {v: style.markers[v] for v in shown})


@contextmanager
def report_style() -> Iterator[None]:
    """Seaborn's whitegrid look with MIN_FONT-point text, for the duration of the block only."""
    sizes = {key: MIN_FONT for key in ("font.size", "axes.labelsize", "axes.titlesize", "xtick.labelsize",
                                        "ytick.labelsize", "legend.fontsize", "legend.title_fontsize")}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", rc=sizes), \
            plt.rc_context({"figure.dpi": DPI}):
        yield


PALETTE_COLOURS = 128  # a plot has a few colours and their antialiased blends: a palette PNG is ~3× smaller


def png_data_uri(fig: Figure) -> str:
    """The figure as a `data:image/png;base64,…` URI of a PALETTE_COLOURS-colour palette PNG (median cut, no
    dithering: the same pixels give the same bytes); the figure is closed."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    buffer.seek(0)
    palette = Image.open(buffer).convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
    encoded = io.BytesIO()
    palette.save(encoded, format="PNG", optimize=True)  # PIL writes no time or software chunk
    return "data:image/png;base64," + base64.b64encode(encoded.getvalue()).decode("ascii")


def _variant_legend(fig: Figure, style: VariantStyle, shown: Sequence[str], extra: Sequence[Line2D] = (),
                    markers: bool = True, title: str = "variant") -> None:
    """One legend for the whole figure, beside the panels (right, centred on their height)."""
    handles = [Line2D([], [], color=style.colors[v], marker=style.markers[v] if markers else None, label=v)
               for v in style.variants if v in shown]
    fig.legend(handles=[*handles, *extra], loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=title)


def _batch_size_axis(ax: plt.Axes, batch_sizes: Sequence[int]) -> None:
    """A log-scaled N axis labelled at the measured batch sizes."""
    ax.set_xscale("log")
    ax.set_xticks(list(batch_sizes))
    ax.set_xticklabels([str(n) for n in batch_sizes])
    ax.xaxis.set_minor_locator(NullLocator())


def _errorbar_line(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, color, marker: str,
                   hollow_when_biased: bool = False, joined: bool = True, linestyle: str = "-") -> None:
    """One series in one panel: the points (joined by a `linestyle` line unless `joined` is False: categorical
    values have no order to join), with error bars from `<y>_lo`/`<y>_hi` if present;
    with `hollow_when_biased`, points whose variant is declared biased there get hollow markers; points
    not `trustworthy` (reports.results.aggregate_repetitions) get a grey marker on top, in every panel."""
    data = data.sort_values(x)
    error = None
    if f"{y}_lo" in data:
        error = np.clip([data[y] - data[f"{y}_lo"], data[f"{y}_hi"] - data[y]], 0, None)
    ax.errorbar(data[x], data[y], yerr=error, color=color, marker=marker, markersize=4,
                linewidth=1.2 if joined else 0, linestyle=linestyle, capsize=2, elinewidth=0.8)
    if hollow_when_biased:
        biased = data[~data["declared_unbiased"].astype(bool)]
        ax.plot(biased[x], biased[y], linestyle="", marker=marker, markersize=4, markerfacecolor="white",
                markeredgecolor=color, zorder=3)
    if "trustworthy" in data:
        untrusted = data[~data["trustworthy"].astype(bool)]
        ax.plot(untrusted[x], untrusted[y], linestyle="", marker=marker, markersize=4, markerfacecolor=UNTRUSTED_GREY,
                markeredgecolor=UNTRUSTED_GREY, zorder=4)


UNTRUSTED_GREY = "0.6"
UNTRUSTED_HANDLE = Line2D([], [], linestyle="", marker="o", markersize=4, markerfacecolor=UNTRUSTED_GREY,
                          markeredgecolor=UNTRUSTED_GREY, label="grey: untrustworthy (findings: reliability)")


def _untrusted_handles(frame: pd.DataFrame) -> list[Line2D]:
    """The grey-marker legend entry, when the figure has an untrustworthy point."""
    return [UNTRUSTED_HANDLE] if "trustworthy" in frame and not frame["trustworthy"].astype(bool).all() else []


HOLLOW_HANDLE = Line2D([], [], linestyle="", marker="o", markersize=4, markerfacecolor="white",
                       markeredgecolor="0.3", label="hollow: declared biased")
PANEL_WIDTH = 1.3 * PANEL_HEIGHT

# (metric, axis label, log scale): the columns of a family figure and the rows of a sweep figure.
VARIANCE = ("variance_trace", "variance  tr Cov(ĝ)", True)
RELATIVE_BIAS = ("relative_bias", "relative bias\n‖E ĝ − target‖ / ‖target‖", False)
COSINE_TO_TARGET = ("cosine_mean", "mean cos(ĝ, its target)", False)
GRADIENT_COSINE_STYLE = ":"  # cos(ĝ, ∇J) beside the cosine to the target, for the variants whose target is not ∇J
GRADIENT_COSINE_HANDLE = Line2D([], [], linestyle=GRADIENT_COSINE_STYLE, color="0.3", marker="o", markersize=4,
                                label="dotted (cosine panels): cos(ĝ, ∇J)\nof a variant whose target is not ∇J")


def _gradient_cosine_line(ax: plt.Axes, data: pd.DataFrame, x: str, color, marker: str, joined: bool = True) -> bool:
    """Beside a series' cosine to its target, its cosine to ∇J (dotted) where the target is not ∇J (the natural
    gradient, an entropy bonus; where it is ∇J the two are one number); whether there was one to draw."""
    other = data[data["target"] != PLAIN_TARGET].dropna(subset=["gradient_cosine"])
    if other.empty:
        return False
    _errorbar_line(ax, other, x, "gradient_cosine", color, marker, joined=joined, linestyle=GRADIENT_COSINE_STYLE)
    return True
NONFINITE = ("nonfinite_fraction", "non-finite estimates\n(fraction)", False)
ACHIEVED_KL = ("info_behaviour_kl", "achieved KL(π_θ‖π_b)\nper step", False)


def family_figure(points: pd.DataFrame, style: VariantStyle) -> Figure:
    """One family's variants against N: a row per problem, columns variance (log-log, with a
    dashed ∝ 1/N line through the first variant's value at its smallest N), relative bias with
    CIs (hollow markers where the variant is declared biased) and cosine, each against the
    variant's own target."""
    problems = sorted(points["problem"].unique())
    columns = (VARIANCE, RELATIVE_BIAS, COSINE_TO_TARGET)
    fig, axes = plt.subplots(len(problems), len(columns), squeeze=False,
                             figsize=(PANEL_WIDTH * len(columns), PANEL_HEIGHT * len(problems)))
    shown = [v for v in style.variants if v in set(points["variant"])]
    to_gradient = False  # a dotted cos(ĝ, ∇J) drawn
    for row, problem in enumerate(problems):
        in_row = points[points["problem"] == problem]
        batch_sizes = sorted(in_row["batch_size"].unique())
        for col, (metric, ylabel, log_y) in enumerate(columns):
            ax = axes[row, col]
            _batch_size_axis(ax, batch_sizes)
            if log_y:
                ax.set_yscale("log", nonpositive="mask")
            for variant in shown:
                data = in_row[in_row["variant"] == variant]
                if len(data):
                    _errorbar_line(ax, data, "batch_size", metric, style.colors[variant], style.markers[variant],
                                   hollow_when_biased=metric == "relative_bias")
                    if metric == COSINE_TO_TARGET[0]:
                        to_gradient |= _gradient_cosine_line(ax, data, "batch_size", style.colors[variant],
                                                             style.markers[variant])
            if metric == "variance_trace":
                anchor = in_row[in_row["variant"] == next(v for v in shown if v in set(in_row["variant"]))]
                anchor = anchor.sort_values("batch_size")
                n = np.array(batch_sizes, dtype=float)
                n0, v0 = anchor["batch_size"].iloc[0], anchor[metric].iloc[0]
                ax.plot(n, v0 * n0 / n, linestyle="--", color="0.4", linewidth=1)
            ax.set_title(problem)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("batch size N" if row == len(problems) - 1 else "")
    fig.tight_layout()
    extra = [Line2D([], [], linestyle="--", color="0.4", label="∝ 1/N through the first variant")]
    if not points["declared_unbiased"].all():
        extra.append(HOLLOW_HANDLE)
    if to_gradient:
        extra.append(GRADIENT_COSINE_HANDLE)
    extra += _untrusted_handles(points)
    _variant_legend(fig, style, shown, extra)
    return fig


def _spaced_labels(axis: Axis, gap: float = 0.08) -> list[str]:
    """Tick labels of a number axis, blank where a value sits within `gap` of the axis span of the
    next labelled one (λ = 0.9, 0.95, 1 would overprint), keeping the largest value labelled."""
    where = np.log(axis.numbers) if axis.log_scale else np.array(axis.numbers)
    span = (where.max() - where.min()) or 1.0
    labels, last = [""] * len(where), np.inf
    for index in np.argsort(where, kind="stable")[::-1]:
        if last - where[index] >= gap * span:
            labels[index], last = f"{axis.numbers[index]:g}", where[index]
    return labels


def _value_axis(ax: plt.Axes, axis: Axis) -> None:
    """The swept values on x: at their numbers (log-scaled when they span ≥ 10×), else in config order."""
    positions = [axis.x(v) for v in axis.values]
    if axis.log_scale:
        ax.set_xscale("log")
    ax.set_xticks(positions)
    numeric = axis.numbers is not None
    ax.set_xticklabels(_spaced_labels(axis) if numeric else axis.values,
                       rotation=0 if numeric else 30, ha="center" if numeric else "right")
    ax.xaxis.set_minor_locator(NullLocator())
    if not numeric:
        ax.set_xlim(-0.4, len(positions) - 0.6)


SWEEP_PANELS_PER_ROW = 4  # problems side by side in a sweep figure; more wrap into another block of rows


def sweep_figure(frame: pd.DataFrame, axis: Axis, style: VariantStyle) -> Figure:
    """Metrics against one swept option: a column per problem (at one N each, in the panel titles;
    wrapped SWEEP_PANELS_PER_ROW to a block), rows variance (log), relative bias with CIs (hollow markers:
    declared biased) and cosine to the target, and, when the sweep has them, the fraction of
    non-finite estimates and the achieved behaviour KL (dashed: the requested value). A line per
    table (`series`). `frame`: one row per (problem, series, value) with the points' metrics and `x`."""
    problems = sorted(frame["problem"].unique())
    metrics = [VARIANCE, RELATIVE_BIAS, COSINE_TO_TARGET]
    if frame["nonfinite"].gt(0).any():  # an all-zero row would be an empty panel
        metrics.append(NONFINITE)
    if frame["info_behaviour_kl"].notna().any():
        metrics.append(ACHIEVED_KL)
    columns = min(len(problems), SWEEP_PANELS_PER_ROW)
    blocks = -(-len(problems) // columns)
    fig, axes = plt.subplots(blocks * len(metrics), columns, squeeze=False,
                             figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * blocks * len(metrics)))
    for ax in axes[(blocks - 1) * len(metrics):, len(problems) - (blocks - 1) * columns:].flat:
        ax.set_visible(False)  # the last block's unused columns
    shown = [s for s in style.variants if s in set(frame["series"])]
    to_gradient = False  # a dotted cos(ĝ, ∇J) drawn
    for i, problem in enumerate(problems):
        in_column = frame[frame["problem"] == problem]
        block, col = divmod(i, columns)
        for row, (metric, ylabel, log_y) in enumerate(metrics):
            ax = axes[block * len(metrics) + row, col]
            _value_axis(ax, axis)
            if log_y or (metric == ACHIEVED_KL[0] and axis.log_scale):
                ax.set_yscale("log", nonpositive="mask")
            for series in shown:
                data = in_column[in_column["series"] == series]
                if len(data):
                    _errorbar_line(ax, data, "x", metric, style.colors[series], style.markers[series],
                                   hollow_when_biased=metric == RELATIVE_BIAS[0], joined=axis.numbers is not None)
                    if metric == COSINE_TO_TARGET[0]:
                        to_gradient |= _gradient_cosine_line(ax, data, "x", style.colors[series],
                                                             style.markers[series], joined=axis.numbers is not None)
            if metric == ACHIEVED_KL[0] and axis.kind == "kl":
                ax.plot(axis.numbers, axis.numbers, linestyle="--", color="0.4", linewidth=1)
            ax.set_title(f"{problem}, N={int(in_column['batch_size'].iloc[0])}")
            ax.set_ylabel(ylabel if col == 0 else "")
            ax.set_xlabel(axis.title if row == len(metrics) - 1 else "")
    fig.tight_layout()
    extra = [HOLLOW_HANDLE] if not frame["declared_unbiased"].all() else []
    extra += [GRADIENT_COSINE_HANDLE] if to_gradient else []
    extra += _untrusted_handles(frame)
    if ACHIEVED_KL in metrics and axis.kind == "kl":
        extra.append(Line2D([], [], linestyle="--", color="0.4", label="requested KL"))
    _variant_legend(fig, style, shown, extra, title="table")
    return fig


def _spans_decades(values: pd.Series) -> bool:
    """Positive values spanning more than 10×: a log axis."""
    positive = values[values > 0]
    return len(positive) > 1 and positive.max() > 10 * positive.min()


def _stacked_bars(data: pd.DataFrame, style: VariantStyle, **_) -> None:
    """Horizontal bars of one panel: bias² then variance stacked, a tick at the measured MSE; when the MSEs span
    more than 10×, a log axis with the MSE bar and the bias² bar (thinner, on top) each from a common floor
    (stacked lengths mean nothing on a log axis)."""
    ax = plt.gca()
    rows = np.array([style.variants.index(v) for v in data["variant"]])
    if _spans_decades(data["mse"]):
        floor = data.loc[data["mse"] > 0, "mse"].min() / 3
        ax.set_xscale("log")
        ax.barh(rows, data["mse"] - floor, left=floor, color=VARIANCE_COLOR, height=0.7)
        bias = data["bias_squared"].where(data["bias_squared"] > floor)
        ax.barh(rows, bias - floor, left=floor, color=BIAS_COLOR, height=0.35)
    else:
        ax.barh(rows, data["bias_squared"], color=BIAS_COLOR, height=0.7)
        ax.barh(rows, data["variance_trace"], left=data["bias_squared"], color=VARIANCE_COLOR, height=0.7)
    ax.scatter(data["mse"], rows, marker="|", color="black", s=120, zorder=3)
    for row, total, bias_squared in zip(rows, data["mse"], data["bias_squared"]):
        share = bias_squared / total if total > 0 else np.nan
        ax.annotate(f" {total:.3g} ({share:.0%} bias²)", (max(total, bias_squared), row), va="center",
                    fontsize=MIN_FONT)


def bias_variance_bars(points: pd.DataFrame, headline: dict[str, int], style: VariantStyle) -> Figure:
    """A panel per problem at its headline N: per variant, bias² (= mean bias_norm²) and variance
    (variance_trace) stacked, whose total is the MSE; the tick marks the measured MSE."""
    bars = at_headline(points, headline)
    bars = bars.assign(panel=[f"{p}\nN={n}" for p, n in zip(bars["problem"], bars["batch_size"])])
    panels = sorted(bars["panel"].unique())
    height = 0.3 * len(style.variants) + 1.0
    width = 3.4 + 0.07 * max(map(len, style.variants))  # the bars and the variant labels left of them
    grid = sns.FacetGrid(bars, col="panel", col_order=panels, col_wrap=min(len(panels), PANELS_PER_ROW),
                         sharex=False, sharey=True, height=height, aspect=width / height)
    for ax in grid.axes.flat:
        ax.set_yticks(range(len(style.variants)))
        ax.set_yticklabels(style.variants)
        ax.set_ylim(len(style.variants) - 0.5, -0.5)
        ax.grid(False, axis="y")
    grid.map_dataframe(_stacked_bars, style=style)
    for ax in grid.axes.flat:  # room for the labels right of the bars
        low, high = ax.get_xlim()
        if ax.get_xscale() == "log":
            ax.set_xlim(low, high * 30)
        else:  # four ticks at most, in scientific notation beyond 10⁴: tick labels never run together
            ax.set_xlim(0, 1.8 * high)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    grid.set_titles("{col_name}")
    grid.set_axis_labels("MSE  ‖ĝ − target‖²", "")
    grid.figure.legend(handles=[Patch(color=BIAS_COLOR, label="bias²"), Patch(color=VARIANCE_COLOR, label="variance"),
                                Line2D([], [], marker="|", color="black", linestyle="", markersize=10,
                                       label="measured MSE")],
                       loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
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


HEATMAP_ROW = 0.25  # inches per variant row: 9-pt labels fit
HEATMAP_COLUMN = 1.1  # inches per problem column: ~15 characters of a 9-pt label
HEATMAP_LIMIT = 3.0  # the colour scale spans 10^±3; beyond it the colour saturates (the label keeps the value)
CHAR_WIDTH, LINE_HEIGHT = 0.07, 0.16  # inches of a 9-pt character and line: the margins the labels need


def _wrapped(text: str, width: int = 15) -> str:
    """`text` broken at spaces into lines of at most `width` characters (a longer word keeps its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def relative_variance_heatmap(cells: pd.DataFrame, variants: Sequence[str], problems: Sequence[str],
                              headline: dict[str, int], reference: str) -> Figure:
    """Estimators × problems at each problem's headline N: colour = log10 of the variance over the reference's
    (paired ratio; blue = less variance), the ratio printed in the cell; a "b" where the variant is declared
    biased, a "!" where it is declared unbiased but the bias test rejects, a grey hatch where a repetition is
    heavy-tailed or invalid (its CIs are too narrow, or its numbers not the estimator's). Blank: not measured at
    that N. `cells`: reports.verdict.relative_variance_table."""
    rows = [v for v in variants if v in set(cells["variant"])]
    columns = [_wrapped(f"{p} N={headline[p]}") for p in problems]
    left = 0.2 + CHAR_WIDTH * max(map(len, rows))
    top = 0.15 + LINE_HEIGHT * max(c.count("\n") + 1 for c in columns)
    right, bottom = 1.45, 0.45
    width, height = left + HEATMAP_COLUMN * len(problems) + right, top + HEATMAP_ROW * len(rows) + bottom
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, HEATMAP_COLUMN * len(problems) / width,
                       HEATMAP_ROW * len(rows) / height))
    bar = fig.add_axes(((width - right + 0.1) / width, bottom / height, 0.15 / width,
                        HEATMAP_ROW * len(rows) / height))
    values = np.full((len(rows), len(problems)), np.nan)
    index = {(r.variant, r.problem): r for r in cells.itertuples()}
    for i, variant in enumerate(rows):
        for j, problem in enumerate(problems):
            if (variant, problem) in index:
                values[i, j] = np.log10(index[(variant, problem)].relative_variance)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.94")
    mesh = ax.pcolormesh(np.ma.masked_invalid(np.clip(values, -HEATMAP_LIMIT, HEATMAP_LIMIT)), cmap=cmap,
                         vmin=-HEATMAP_LIMIT, vmax=HEATMAP_LIMIT, edgecolors="white", linewidth=0.5)
    for i, variant in enumerate(rows):
        for j, problem in enumerate(problems):
            cell = index.get((variant, problem))
            if cell is None:
                continue
            mark = "b" if cell.biased else "!" if cell.test_rejects else ""
            dark = abs(values[i, j]) > 0.6 * HEATMAP_LIMIT
            ax.text(j + 0.5, i + 0.5, f"{cell.relative_variance:.2g}{' ' + mark if mark else ''}", ha="center",
                    va="center", fontsize=9, color="white" if dark else "black",
                    fontweight="bold" if mark else "normal")
            if cell.heavy_tailed or cell.invalid:
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="////", edgecolor="0.45", linewidth=0))
    ax.set_xticks(np.arange(len(problems)) + 0.5)
    ax.set_xticklabels(columns, fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks(np.arange(len(rows)) + 0.5)
    ax.set_yticklabels(rows, fontsize=9)
    ax.set_ylim(len(rows), 0)
    ax.grid(False)
    ticks = range(-int(HEATMAP_LIMIT), int(HEATMAP_LIMIT) + 1)
    colorbar = fig.colorbar(mesh, cax=bar, ticks=list(ticks))
    colorbar.ax.set_yticklabels([f"{10.0 ** k:g}" for k in ticks], fontsize=9)
    colorbar.set_label(f"variance / {_wrapped(reference, 30)}'s", fontsize=9)
    handles = [Patch(facecolor="white", edgecolor="0.45", hatch="////", label="heavy-tailed (CI too narrow)"),
               Line2D([], [], linestyle="", marker="$b$", color="black", label="declared biased"),
               Line2D([], [], linestyle="", marker="$!$", color="black", label="unbiasedness test rejects"),
               Patch(facecolor="0.94", label="not measured at this N")]
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(left / width, 0), ncol=4, frameon=False,
               fontsize=9, borderaxespad=0.1)
    return fig
