"""One sweep's results as the report sees them: loaded and checked, repetitions aggregated, ranked,
and paired variance ratios between variants.

Every function here is pure (a DataFrame in, a DataFrame out) so that figures, tables and findings
are all computed from the same numbers. A "row" is one finished cell (problem, variant, batch size
N, repetition); a "point" is one (problem, variant, N) with its repetitions aggregated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from bench.store import META_FILE, ResultsStore
from bench.sweep import METRICS_WITH_CI
from envs.spec import ConfigError
from reports.families import EstimatorTable, parse_tables

CELL_KEY = ["problem", "variant", "batch_size", "repetition"]
POINT_KEY = ["problem", "variant", "batch_size"]
BIAS_TEST_LEVEL = 0.01  # a bias test "rejects" below this p-value
CONFIDENCE = 0.95
COST_COLUMNS = ("seconds_per_estimate", "env_steps_per_estimate")
CI_COLUMNS = tuple(f"{m}_{end}" for m in METRICS_WITH_CI for end in ("lo", "hi"))
REQUIRED_COLUMNS = frozenset({
    *CELL_KEY, "reps", *METRICS_WITH_CI, *CI_COLUMNS, *COST_COLUMNS, "bias_pvalue", "declared_unbiased",
    "heavy_tailed", "tail_kurtosis", "nonfinite", "reps_used", "estimator", "estimator_options", "estimator_info",
    "target",
})
INFO_NUMBERS = ("behaviour_kl",)  # numbers of `estimator_info` the report shows, as columns info_<key>
REPORT_KEYS = ("reference_variant", "pairs", "bootstrap_reps", "seed")


@dataclass(frozen=True)
class ReportSettings:
    """The sweep config's [report] table."""

    reference_variant: str
    pairs: tuple[tuple[str, str], ...]  # (X, Y): does X improve on Y?
    bootstrap_reps: int
    seed: int


@dataclass(frozen=True)
class Sweep:
    """A loaded results folder."""

    name: str
    rows: pd.DataFrame  # one row per finished cell, sorted by CELL_KEY
    planned_cells: int  # how many cells the config expands to (finished or not)
    settings: ReportSettings
    tables: tuple[EstimatorTable, ...]  # the config's [[estimators]] tables

    @property
    def problems(self) -> list[str]:
        return sorted(self.rows["problem"].unique())

    @property
    def variants(self) -> list[str]:
        """Every variant, the reference first: it anchors colours, tables and ratios."""
        others = sorted(set(self.rows["variant"]) - {self.settings.reference_variant})
        return [self.settings.reference_variant, *others]

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(int(n) for n in self.rows["batch_size"].unique())


def load_sweep(results_dir: Path) -> Sweep:
    """Read a folder written by `pgvar sweep`; every problem with it is one ConfigError line."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir}: no such results folder")
    store = ResultsStore(results_dir)
    if not (results_dir / META_FILE).is_file():
        raise ConfigError(f"{results_dir}: no {META_FILE}; expected a folder written by `pgvar sweep`")
    if not store.finished():
        raise ConfigError(f"{results_dir}: no finished cells; run `pgvar sweep` first")
    try:
        meta = store.meta()
        config, planned = meta["config"], int(meta["cells"])
        report = config["report"]
        settings = ReportSettings(str(report["reference_variant"]), tuple(tuple(p) for p in report["pairs"]),
                                  int(report["bootstrap_reps"]), int(report["seed"]))
        tables = parse_tables(config["estimators"], config["batch_sizes"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{results_dir / META_FILE}: unreadable sweep metadata "
                          f"({type(err).__name__}: {err})") from None
    rows = store.read()
    missing = sorted(REQUIRED_COLUMNS - set(rows.columns))
    if missing:
        raise ConfigError(f"{results_dir}: results lack columns {', '.join(missing)}; rerun the sweep with this pgvar")
    duplicated = rows.duplicated(CELL_KEY)
    if duplicated.any():
        first = rows.loc[duplicated, CELL_KEY].iloc[0].to_dict()
        raise ConfigError(f"{results_dir}: two cells measure {first} (results of different configs mixed); "
                          "rerun the sweep with --fresh")
    variants = set(rows["variant"])
    for label in [settings.reference_variant, *(x for pair in settings.pairs for x in pair)]:
        if label not in variants:
            raise ConfigError(f"{results_dir}: report variant {label!r} has no finished cells; "
                              f"variants: {', '.join(sorted(variants))}")
    rows = rows.sort_values(CELL_KEY, kind="stable").reset_index(drop=True)
    return Sweep(str(config.get("name", results_dir.name)), rows, planned, settings, tables)


def aggregate_repetitions(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows → points: one row per (problem, variant, N).

    Each metric, its CI bounds and the cost are means over the repetitions, so `<metric>_lo/_hi`
    is the typical 95% CI of ONE repetition (M batches), not the CI of the mean of R repetitions.
    `bias_squared` is the mean of bias_norm², so bias_squared + variance_trace = mse wherever the
    bias estimate is not clamped at 0. Counts: `repetitions`, `bias_rejections` (p < 1%),
    `heavy_tailed` and `nonfinite` (summed), `estimates` (M summed over repetitions),
    `nonfinite_fraction` = nonfinite / estimates. `info_<key>`: the mean of a number the estimator
    reports in `estimator_info` (INFO_NUMBERS; NaN where it reports none). `estimator`, `target` and
    `estimator_options` describe the variant.
    """
    info = [json.loads(text) for text in rows["estimator_info"]]
    with_squares = rows.assign(bias_squared=rows["bias_norm"] ** 2,
                               bias_rejected=rows["bias_pvalue"] < BIAS_TEST_LEVEL,
                               **{f"info_{key}": [float(i.get(key, np.nan)) for i in info] for key in INFO_NUMBERS})
    grouped = with_squares.groupby(POINT_KEY, sort=True)
    means = grouped[[*METRICS_WITH_CI, *CI_COLUMNS, "bias_squared", *COST_COLUMNS,
                     *(f"info_{key}" for key in INFO_NUMBERS)]].mean()
    counts = grouped.agg(
        repetitions=("repetition", "size"), reps=("reps", "max"), estimates=("reps", "sum"),
        bias_rejections=("bias_rejected", "sum"), declared_unbiased=("declared_unbiased", "all"),
        heavy_tailed=("heavy_tailed", "sum"), max_tail_kurtosis=("tail_kurtosis", "max"),
        nonfinite=("nonfinite", "sum"), estimator=("estimator", "first"), target=("target", "first"),
        estimator_options=("estimator_options", "first"),
    )
    points = means.join(counts).reset_index()
    return points.assign(nonfinite_fraction=points["nonfinite"] / points["estimates"])


def headline_batch_sizes(points: pd.DataFrame) -> dict[str, int]:
    """Per problem, the largest N at which the most variants were measured: where the report's
    per-problem tables, bars and findings compare all variants side by side."""
    counts = points.groupby(["problem", "batch_size"])["variant"].nunique().reset_index()
    best = counts[counts["variant"] == counts.groupby("problem")["variant"].transform("max")]
    return {problem: int(n) for problem, n in best.groupby("problem")["batch_size"].max().items()}


def at_headline(frame: pd.DataFrame, headline: dict[str, int]) -> pd.DataFrame:
    """The rows of a frame with `problem` and `batch_size` columns at each problem's headline N."""
    return frame[[headline.get(p) == n for p, n in zip(frame["problem"], frame["batch_size"])]]


def summary_table(points: pd.DataFrame) -> pd.DataFrame:
    """Variants ranked by MSE (bias² + variance, the total squared error) within each (problem, N,
    target): errors against different targets (∇J, an entropy-regularised gradient, a natural
    gradient) are not comparable. With variance, relative bias, cosine and MSE and their
    (single-repetition) 95% CIs, and the cost."""
    metrics = ["mse", "variance_trace", "relative_bias", "cosine_mean"]
    columns = ["problem", "target", "variant", "batch_size",
               *(f"{m}{suffix}" for m in metrics for suffix in ("", "_lo", "_hi")),
               "repetitions", "reps", "bias_rejections", "declared_unbiased", "heavy_tailed", "nonfinite", "estimates",
               "seconds_per_estimate"]
    table = points[columns].copy()
    ranks = table.groupby(["problem", "batch_size", "target"])["mse"].rank(method="min").astype("Int64")
    table.insert(3, "mse_rank", ranks)
    by_target = {"target": lambda column: column.map(target_order)}
    return table.sort_values(["problem", "batch_size", "target", "mse_rank", "variant"], kind="stable",
                             key=lambda column: by_target.get(column.name, lambda c: c)(column)).reset_index(drop=True)


def target_order(target: str) -> str:
    """Sort key of targets: ∇J, the plain gradient, first, then the others alphabetically."""
    return ("0" if target == "∇J" else "1") + target


RATIO_COLUMNS = ["problem", "batch_size", "x", "y", "repetitions", "ratio", "ratio_lo", "ratio_hi"]


def variance_ratios(rows: pd.DataFrame, comparisons: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """For each (X, Y) in `comparisons`, problem and N: the factor by which X cuts variance
    relative to Y, variance_trace(Y) / variance_trace(X).

    Repetitions are paired (both variants saw the same trajectories), so the ratio is taken per
    repetition and combined on the log scale: `ratio` = exp(mean_r log ratio_r), the geometric
    mean, with a 95% t-interval over the R repetitions (none when R = 1). The t-interval stays
    honest with the few repetitions a sweep has, where a bootstrap over R = 3 values would not.
    """
    variance = rows[CELL_KEY + ["variance_trace"]]
    records: list[dict[str, Any]] = []
    for x, y in dict.fromkeys(comparisons):  # ordered and without repeats
        paired = variance[variance["variant"] == x].merge(
            variance[variance["variant"] == y], on=["problem", "batch_size", "repetition"], suffixes=("_x", "_y"))
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero variance gives ±inf, dropped below
            log_ratio = np.log(paired["variance_trace_y"] / paired["variance_trace_x"])
        for (problem, batch_size), logs in log_ratio.groupby([paired["problem"], paired["batch_size"]], sort=True):
            logs = logs[np.isfinite(logs)].to_numpy()
            if logs.size == 0:
                continue
            centre, half_width = logs.mean(), np.nan
            if logs.size > 1:
                t = stats.t.ppf(0.5 + CONFIDENCE / 2, logs.size - 1)
                half_width = t * logs.std(ddof=1) / np.sqrt(logs.size)
            records.append({
                "problem": problem, "batch_size": int(batch_size), "x": x, "y": y, "repetitions": logs.size,
                "ratio": np.exp(centre), "ratio_lo": np.exp(centre - half_width),
                "ratio_hi": np.exp(centre + half_width),
            })
    return pd.DataFrame(records, columns=RATIO_COLUMNS)
