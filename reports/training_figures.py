"""The Training section's figures: sample-efficiency curves (IQM of the normalized score against training samples,
drawn by rliable's plot_sample_efficiency_curve) and final score against the learning rate. The aggregate
intervals and performance profiles reuse reports/figures.py's rliable plots. Figures only draw: every number comes
from reports/training.py's tables."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from rliable import plot_utils

from reports.figures import PANEL_HEIGHT, VariantStyle, _variant_legend
from reports.training import SCORE_FLOOR


def _grid(problems: list[str], batch_sizes: list[int]) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(len(problems), len(batch_sizes), figsize=(3.6 * len(batch_sizes),
                                                                       PANEL_HEIGHT * len(problems)),
                             squeeze=False, sharey=True)
    return fig, axes


def _panels(frame: pd.DataFrame):
    """The figure and, per non-empty (problem, N) panel of a grid with a row per problem and a column per N, (is it
    the lowest shown panel of its column, the leftmost of its row, its axes, its rows of `frame`); a panel of a
    problem the sweep ran at other batch sizes only is hidden, and the axis labels go to the panels shown."""
    problems, batch_sizes = sorted(set(frame["problem"])), sorted(set(frame["batch_size"]))
    fig, axes = _grid(problems, batch_sizes)
    cells = {key: group for key, group in frame.groupby(["problem", "batch_size"])}
    shown = [[(p, n) in cells for n in batch_sizes] for p in problems]  # [problem][N]

    def panels():
        for i, problem in enumerate(problems):
            for j, batch_size in enumerate(batch_sizes):
                if not shown[i][j]:
                    axes[i, j].set_visible(False)
                    continue
                axes[i, j].set_title(f"{problem}, N={batch_size}", fontsize="medium")
                bottom = not any(shown[k][j] for k in range(i + 1, len(problems)))
                left = not any(shown[i][:j])
                if left:  # sharey hides the tick labels of every column but the first, which may be hidden here
                    axes[i, j].tick_params(labelleft=True)
                yield bottom, left, axes[i, j], cells[(problem, batch_size)]

    return fig, panels()


def sample_efficiency_figure(curves: pd.DataFrame, style: VariantStyle) -> Figure:
    """A panel per (problem, N): each arm's IQM normalized score against training samples at its selected
    learning rate, with its 95% pointwise bootstrap band. `curves`: reports.training.CURVE_COLUMNS."""
    fig, panels = _panels(curves)
    for bottom, left, ax, at in panels:
        for arm in [a for a in style.variants if a in set(at["arm"])]:
            of_arm = at[at["arm"] == arm].sort_values("samples")
            low = of_arm["lo"].fillna(of_arm["iqm"]).to_numpy()
            high = of_arm["hi"].fillna(of_arm["iqm"]).to_numpy()
            plot_utils.plot_sample_efficiency_curve(
                of_arm["samples"].to_numpy(), {arm: of_arm["iqm"].to_numpy()}, {arm: (low, high)},
                algorithms=[arm], colors=style.colors, ax=ax, xlabel="training trajectories" if bottom else "",
                ylabel="IQM normalized score" if left else "", labelsize="medium", ticklabelsize="medium",
                marker=style.markers[arm], linewidth=1.2)
        ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.8)
    fig.tight_layout()
    _variant_legend(fig, style, sorted(set(curves["arm"])), title="estimator")
    return fig


def learning_rate_figure(lr_curves: pd.DataFrame, selected: pd.DataFrame, style: VariantStyle) -> Figure:
    """A panel per (problem, N): IQM final score (all seeds, 95% bootstrap bars) against the learning rate (log
    axis), a line per arm; a ring marks the split-half selected learning rate."""
    fig, panels = _panels(lr_curves)
    for bottom, left, ax, at in panels:
        problem, batch_size = at["problem"].iloc[0], at["batch_size"].iloc[0]
        for arm in [a for a in style.variants if a in set(at["arm"])]:
            of_arm = at[at["arm"] == arm].sort_values("lr")
            error = np.clip([(of_arm["iqm"] - of_arm["lo"]).fillna(0), (of_arm["hi"] - of_arm["iqm"]).fillna(0)],
                            0, None)
            ax.errorbar(of_arm["lr"], of_arm["iqm"], yerr=error, color=style.colors[arm],
                        marker=style.markers[arm], markersize=4, linewidth=1.2, capsize=2, elinewidth=0.8)
            chosen = selected[(selected["problem"] == problem) & (selected["arm"] == arm)
                              & (selected["batch_size"] == batch_size)]
            if len(chosen):
                lr = float(chosen["lr"].iloc[0])
                y = of_arm.loc[of_arm["lr"] == lr, "iqm"]
                ax.plot([lr], [float(y.iloc[0])] if len(y) else [np.nan], linestyle="", marker="o",
                        markersize=10, markerfacecolor="none", markeredgecolor=style.colors[arm], zorder=4)
        ax.set_xscale("log")
        ax.axhline(1.0, color="0.4", linestyle="--", linewidth=0.8)
        ax.axhline(SCORE_FLOOR, color="0.6", linestyle=":", linewidth=0.8)
        if bottom:
            ax.set_xlabel("learning rate")
        if left:
            ax.set_ylabel("IQM final normalized score")
    fig.tight_layout()
    ring = Line2D([], [], linestyle="", marker="o", markersize=8, markerfacecolor="none", markeredgecolor="0.3",
                  label="ring: selected lr (even seeds)")
    _variant_legend(fig, style, sorted(set(lr_curves["arm"])), extra=[ring], title="estimator")
    return fig
