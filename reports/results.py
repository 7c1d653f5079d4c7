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

from bench.config import ReportSettings, Where, parse_report
from bench.metrics import METRICS_WITH_CI, flag_counts_text, trust_flags
from bench.store import (
    LOCK_FILE,
    META_FILE,
    ResultsStore,
    cell_file_id,
    failure_file_id,
    is_store_file,
    one_line,
)
from envs.spec import ConfigError
from reports.families import EstimatorTable, parse_tables

CELL_KEY = ["problem", "variant", "batch_size", "repetition"]
POINT_KEY = ["problem", "variant", "batch_size"]
BIAS_TEST_LEVEL = 0.01  # a bias test "rejects" below this p-value
CONFIDENCE = 0.95
COST_COLUMNS = ("seconds_per_estimate", "env_steps_per_estimate")
CI_COLUMNS = tuple(f"{m}_{end}" for m in METRICS_WITH_CI for end in ("lo", "hi"))
PLAIN_TARGET = "∇J"  # estimators.registry.Target().label, the policy gradient (not imported: that needs torch)
# gradient_cosine (cos to ∇J whatever the target) came after the first stored results; a cell file without it still
# loads: where the target is ∇J it is cosine_mean (the same number by construction, bench/metrics.py), elsewhere NaN.
GRADIENT_COSINE_COLUMNS = ("gradient_cosine", "gradient_cosine_lo", "gradient_cosine_hi")
REQUIRED_COLUMNS = frozenset({
    *CELL_KEY, "reps", *METRICS_WITH_CI, *CI_COLUMNS, *COST_COLUMNS, "bias_pvalue", "declared_unbiased",
    "heavy_tailed", "tail_kurtosis", "nonfinite", "reps_used", "estimator", "estimator_options", "estimator_info",
    "target",
}) - set(GRADIENT_COSINE_COLUMNS)
INFO_NUMBERS = ("behaviour_kl",)  # numbers of `estimator_info` the report shows, as columns info_<key>
# The type every cell file's columns must have for the report to use them (checked on the Parquet schema):
# a file that fails is skipped and named, never a pandas error halfway through the report.
NUMBER_COLUMNS = frozenset({*METRICS_WITH_CI, *CI_COLUMNS, *COST_COLUMNS, "bias_pvalue", "tail_kurtosis"})
INTEGER_COLUMNS = frozenset({"batch_size", "reps", "repetition", "nonfinite", "reps_used"})
BOOLEAN_COLUMNS = frozenset({"declared_unbiased", "heavy_tailed"})
TEXT_COLUMNS = frozenset({"problem", "variant", "estimator", "estimator_options", "estimator_info", "target"})
JSON_COLUMNS = ("estimator_options", "estimator_info")


@dataclass(frozen=True)
class Sweep:
    """A loaded results folder."""

    name: str
    rows: pd.DataFrame  # one row per finished cell, sorted by CELL_KEY
    planned_cells: int  # how many cells the config expands to (finished or not)
    settings: ReportSettings
    tables: tuple[EstimatorTable, ...]  # the config's [[estimators]] tables
    # What the report shows on its first screen, each item one line naming a file:
    unreadable: tuple[str, ...] = ()  # "<file>: why" of files skipped: corrupt cells, foreign files, folders
    stale: tuple[str, ...] = ()  # cell files of cells the recorded sweep does not plan (an older config's), left out
    failed: tuple[str, ...] = ()  # "<problem / variant / N / repetition>: error" of planned cells that raised
    notes: tuple[str, ...] = ()  # anything else the reader should know about how the rows were chosen

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
    """Read a folder written by `pgvar sweep`: only the cells of the sweep recorded in its _sweep.json.

    A folder that cannot be used at all (missing, no readable _sweep.json, no readable cell of the sweep, a
    configured report variant without cells) is one ConfigError line. A single file that cannot be used is
    skipped and named in `unreadable` (a truncated, empty or foreign Parquet file, a column of the wrong type,
    a file or folder `pgvar sweep` never writes); cell files of cells the recorded sweep does not plan (an
    older, larger config) are left out and named in `stale`; planned cells that raised are in `failed`.
    No pyarrow, pandas or OS exception escapes."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"{results_dir}: " + ("not a folder" if results_dir.exists() else "no such results folder"))
    store = ResultsStore(results_dir)
    if not (results_dir / META_FILE).is_file():
        raise ConfigError(f"{results_dir}: no {META_FILE}; expected a folder written by `pgvar sweep`")
    try:
        entries = sorted(results_dir.iterdir())
    except OSError as err:
        raise ConfigError(f"{results_dir}: cannot list it ({err.strerror or err})") from None
    if not any(cell_file_id(path.name) for path in entries):
        failures = sum(bool(failure_file_id(path.name)) for path in entries)
        raise ConfigError(f"{results_dir}: no finished cells; run `pgvar sweep` first"
                          + (f" ({failures} failed: see its _failed-*.json)" if failures else ""))
    try:
        meta = store.meta()
        config = meta["config"]
        settings = parse_report(Where("config"), config["report"])  # through the parser the sweep used
        tables = parse_tables(config["estimators"], config["batch_sizes"], meta.get("table_variants"),
                              config.get("problems", ()))
        recorded = meta.get("cell_ids")
        if recorded is not None and (not isinstance(recorded, list) or not all(isinstance(i, str) for i in recorded)):
            raise TypeError("cell_ids is not a list of cell ids")
        planned = len(dict.fromkeys(recorded)) if recorded is not None else int(meta["cells"])
        name = str(config.get("name", results_dir.name))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
            ConfigError) as err:
        raise ConfigError(f"{results_dir / META_FILE}: unreadable sweep metadata "
                          f"({type(err).__name__}: {one_line(err)})") from None
    plan = None if recorded is None else set(recorded)

    unreadable, stale, failures, cell_ids = [], [], {}, []
    for path in entries:
        cell_id, failure_id = cell_file_id(path.name), failure_file_id(path.name)
        if path.name == META_FILE or path.name == LOCK_FILE or (path.name.startswith(".") and is_store_file(path.name)):
            continue  # the config, the lock, a temporary file of a sweep still running or killed
        if cell_id is not None and (plan is None or cell_id in plan):
            cell_ids.append(cell_id)
        elif cell_id is not None:
            stale.append(path.name)
        elif failure_id is not None:
            if plan is None or failure_id in plan:
                failures[failure_id] = path
        else:
            unreadable.append(f"{path.name}: {'a folder' if path.is_dir() else 'a file'} `pgvar sweep` does not "
                              "write (ignored)")

    frames = []
    for cell_id in cell_ids:
        try:
            frames.append(_cell_frame(store, cell_id))
        except ValueError as err:
            unreadable.append(f"{store.cell_path(cell_id).name}: {err}")
    finished = {str(frame["cell_id"].iloc[0]) for frame in frames}
    failed = []
    for cell_id, path in sorted(failures.items()):
        if cell_id in finished:
            continue  # recomputed since (a record the rerun could not remove): the cell is finished
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            failed.append(f"{record['problem']} / {record['variant']} / N={record['batch_size']} / repetition "
                          f"{record['repetition']}: {one_line(record['error'])} ({path.name})")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            unreadable.append(f"{path.name}: unreadable failure record ({type(err).__name__}: {one_line(err)})")

    if not frames:
        why = (f"{len(unreadable)} unreadable, first {unreadable[0]}" if unreadable else
               f"{len(stale)} cell files of another config, e.g. {stale[0]}")
        raise ConfigError(f"{results_dir}: none of the {planned} planned cells is finished and readable ({why})")
    try:
        rows = pd.concat(frames, ignore_index=True)
    except Exception as err:  # noqa: BLE001 - every frame was checked; this would be a bug, still one line
        raise ConfigError(f"{results_dir}: cannot combine the cell files ({type(err).__name__}: {one_line(err)})") from None
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
    notes = () if plan is not None else (
        f"{META_FILE} predates recorded cell ids (written by an older pgvar): every cell file in the folder is read",)
    return Sweep(name, rows, planned, settings, tables, tuple(unreadable), tuple(stale), tuple(failed), notes)


def _cell_frame(store: ResultsStore, cell_id: str) -> pd.DataFrame:
    """One cell file as a one-row DataFrame, or ValueError (one line) saying why the report cannot use it: it does
    not read back whole, lacks a column the report needs, or has one of the wrong type."""
    import pyarrow as pa

    table = store.read_cell(cell_id)
    missing = sorted(REQUIRED_COLUMNS - set(table.column_names))
    if missing:
        raise ValueError(f"lacks columns {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} (another schema, "
                         "or written by an older pgvar: rerun the sweep)")
    kinds = [(NUMBER_COLUMNS, lambda t: (pa.types.is_integer(t) or pa.types.is_floating(t)), "a number"),
             (INTEGER_COLUMNS, pa.types.is_integer, "an integer"), (BOOLEAN_COLUMNS, pa.types.is_boolean, "a boolean"),
             (TEXT_COLUMNS, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "text")]
    for columns, accepts, kind in kinds:
        for column in sorted(columns & set(table.column_names)):  # all but the optional GRADIENT_COSINE_COLUMNS
            field = table.schema.field(column)
            if not accepts(field.type):
                raise ValueError(f"column {column} is {field.type}, expected {kind}")
            if column not in NUMBER_COLUMNS and table.column(column).null_count:
                raise ValueError(f"column {column} is null")
    try:
        frame = table.to_pandas()
        for column in JSON_COLUMNS:
            if not isinstance(json.loads(frame[column].iloc[0]), dict):
                raise ValueError(f"column {column} is not a JSON object")
    except Exception as err:  # noqa: BLE001 - pyarrow conversion or a JSON column that is not JSON
        raise ValueError(f"unusable values ({type(err).__name__}: {one_line(err)})") from None
    if GRADIENT_COSINE_COLUMNS[0] not in frame:
        plain = frame["target"] == PLAIN_TARGET
        for column in GRADIENT_COSINE_COLUMNS:
            frame[column] = frame[column.replace("gradient_cosine", "cosine_mean")].where(plain).astype(float)
    return frame


def point_flags(rows: pd.DataFrame) -> pd.DataFrame:
    """What decides whether a point may be recommended (reports.verdict.ineligibility), counted over its
    repetitions: (problem, variant, batch_size) → `repetitions`, `declared_unbiased` (in every one),
    `bias_rejections` (p < BIAS_TEST_LEVEL), and the repetitions flagged `heavy_tailed`, `excess_nonfinite` and
    `degenerate` (bench.metrics.trust_flags, derived where older rows lack them)."""
    flagged = trust_flags(rows).assign(bias_rejected=rows["bias_pvalue"] < BIAS_TEST_LEVEL)
    return flagged.groupby(POINT_KEY, sort=True).agg(
        repetitions=("repetition", "size"), declared_unbiased=("declared_unbiased", "all"),
        bias_rejections=("bias_rejected", "sum"), heavy_tailed=("heavy_tailed", "sum"),
        excess_nonfinite=("excess_nonfinite", "sum"), degenerate=("degenerate", "sum"))


# aggregate_repetitions' counts, in aggregated.csv's order
POINT_COUNT_COLUMNS = ["repetitions", "reps", "estimates", "bias_rejections", "declared_unbiased", "heavy_tailed",
                       "max_tail_kurtosis", "nonfinite", "estimator", "target", "estimator_options", "excess_nonfinite",
                       "degenerate", "untrustworthy"]


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

    Trust (bench.metrics.trust_flags, derived for results written before the flags were stored):
    `excess_nonfinite`, `degenerate` and `untrustworthy` count the repetitions so flagged; a point is
    `trustworthy` only if every repetition is, `invalid` if any repetition has more than 5% non-finite
    estimates or collapsed estimates (its numbers then do not describe the estimator at all), and
    `untrustworthy_reasons` says which flags and in how many repetitions ("" when trustworthy).
    """
    rows = trust_flags(rows)
    info = [json.loads(text) for text in rows["estimator_info"]]
    with_squares = rows.assign(bias_squared=rows["bias_norm"] ** 2,
                               **{f"info_{key}": [float(i.get(key, np.nan)) for i in info] for key in INFO_NUMBERS})
    grouped = with_squares.groupby(POINT_KEY, sort=True)
    means = grouped[[*METRICS_WITH_CI, *CI_COLUMNS, "bias_squared", *COST_COLUMNS,
                     *(f"info_{key}" for key in INFO_NUMBERS)]].mean()
    counts = grouped.agg(
        reps=("reps", "max"), estimates=("reps", "sum"), max_tail_kurtosis=("tail_kurtosis", "max"),
        nonfinite=("nonfinite", "sum"), estimator=("estimator", "first"), target=("target", "first"),
        estimator_options=("estimator_options", "first"),
        untrustworthy=("trustworthy", lambda trusted: int((~trusted).sum())),
    ).join(point_flags(rows))[POINT_COUNT_COLUMNS]
    points = means.join(counts).reset_index()
    reasons = [flag_counts_text(*flags) for flags in zip(points["heavy_tailed"], points["excess_nonfinite"],
                                                         points["degenerate"], points["repetitions"])]
    return points.assign(nonfinite_fraction=points["nonfinite"] / points["estimates"],
                         trustworthy=points["untrustworthy"].eq(0),
                         invalid=(points["excess_nonfinite"] + points["degenerate"]).gt(0),
                         untrustworthy_reasons=reasons)


def chance_of_rejections(k: int, n: int) -> float:
    """P(at least k of n independent bias tests reject at BIAS_TEST_LEVEL) when every null hypothesis holds."""
    return float(stats.binom.sf(k - 1, n, BIAS_TEST_LEVEL)) if k else 1.0


def rejects_beyond_chance(k: int, n: int) -> bool:
    """Whether k rejections in n repetitions of an unbiased estimator are more than chance gives at the 1% level
    (R = 3: two or more rejections, false-positive rate 3e-4 per point; one in three happens 3% of the time)."""
    return chance_of_rejections(k, n) < BIAS_TEST_LEVEL


def headline_batch_sizes(points: pd.DataFrame) -> dict[str, int]:
    """Per problem, the largest N at which the most variants were measured: where the report's
    per-problem tables, bars and findings compare all variants side by side."""
    counts = points.groupby(["problem", "batch_size"])["variant"].nunique().reset_index()
    best = counts[counts["variant"] == counts.groupby("problem")["variant"].transform("max")]
    return {problem: int(n) for problem, n in best.groupby("problem")["batch_size"].max().items()}


def at_headline(frame: pd.DataFrame, headline: dict[str, int]) -> pd.DataFrame:
    """The rows of a frame with `problem` and `batch_size` columns at each problem's headline N."""
    # A boolean array, not a list: an empty list would select no columns of an empty frame.
    at_n = np.array([headline.get(p) == n for p, n in zip(frame["problem"], frame["batch_size"])], dtype=bool)
    return frame[at_n]


def summary_table(points: pd.DataFrame) -> pd.DataFrame:
    """Variants ranked by MSE (bias² + variance, the total squared error) within each (problem, N,
    target): errors against different targets (∇J, an entropy-regularised gradient, a natural
    gradient) are not comparable. With variance, relative bias, cosine to the target and to ∇J
    (gradient_cosine: comparable across targets) and MSE and their (single-repetition) 95% CIs, and the cost.

    Only trustworthy points are ranked: an untrustworthy one (heavy-tailed, over the non-finite limit or
    degenerate in any repetition; see aggregate_repetitions) has no `mse_rank` (NA, listed after the
    ranked ones) and says why in `untrustworthy_reasons`: its MSE is either not the estimator's or has
    an interval too narrow to order it by."""
    metrics = ["mse", "variance_trace", "relative_bias", "cosine_mean", "gradient_cosine"]
    columns = ["problem", "target", "variant", "batch_size",
               *(f"{m}{suffix}" for m in metrics for suffix in ("", "_lo", "_hi")),
               "repetitions", "reps", "bias_rejections", "declared_unbiased", "heavy_tailed", "nonfinite", "estimates",
               "seconds_per_estimate", "trustworthy", "untrustworthy_reasons"]
    table = points[columns].copy()
    ranked = table[table["trustworthy"]]
    ranks = ranked.groupby(["problem", "batch_size", "target"])["mse"].rank(method="min").astype("Int64")
    table.insert(3, "mse_rank", ranks.reindex(table.index))
    by_target = {"target": lambda column: column.map(target_order)}
    return table.sort_values(["problem", "batch_size", "target", "mse_rank", "variant"], kind="stable",
                             key=lambda column: by_target.get(column.name, lambda c: c)(column)).reset_index(drop=True)


def target_order(target: str) -> str:
    """Sort key of targets: ∇J, the plain gradient, first, then the others alphabetically."""
    return ("0" if target == PLAIN_TARGET else "1") + target


RATIO_COLUMNS = ["problem", "batch_size", "x", "y", "repetitions", "ratio", "ratio_lo", "ratio_hi"]


def variance_ratios(rows: pd.DataFrame, comparisons: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """For each (X, Y) in `comparisons`, problem and N: the factor by which X cuts variance
    relative to Y, variance_trace(Y) / variance_trace(X).

    Repetitions are paired (both variants saw the same trajectories), so the ratio is taken per
    repetition and combined on the log scale: `ratio` = exp(mean_r log ratio_r), the geometric
    mean, with a 95% t-interval over the R repetitions (none when R = 1). The t-interval stays
    honest with the few repetitions a sweep has, where a bootstrap over R = 3 values would not.

    Trust of the two points (bench.metrics.trust_flags; no flag where the rows lack the columns):
    `x_heavy_tailed` / `y_heavy_tailed` when X / Y is heavy-tailed in a repetition, `invalid` when
    either has more than 5% non-finite or collapsed estimates in one (the ratio then compares no
    estimators), and `flags`, the flagged side(s) as "<variant>: heavy-tailed 1/3" ("" when both are
    trustworthy). The ratio itself is computed the same either way; the findings decide its wording.
    """
    by_point = trust_flags(rows).groupby(["problem", "batch_size", "variant"]).agg(
        heavy=("heavy_tailed", "sum"), excess=("excess_nonfinite", "sum"), degenerate=("degenerate", "sum"),
        repetitions=("repetition", "size"))

    def point_flags(problem, batch_size, variant) -> tuple[bool, bool, str]:
        heavy, excess, degenerate, repetitions = by_point.loc[(problem, batch_size, variant)]
        text = flag_counts_text(heavy, excess, degenerate, repetitions)
        return bool(heavy), bool(excess or degenerate), f"{variant}: {text}" if text else ""

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
            sides = [point_flags(problem, batch_size, variant) for variant in (x, y)]
            records.append({
                "problem": problem, "batch_size": int(batch_size), "x": x, "y": y, "repetitions": logs.size,
                "ratio": np.exp(centre), "ratio_lo": np.exp(centre - half_width),
                "ratio_hi": np.exp(centre + half_width),
                "x_heavy_tailed": sides[0][0], "y_heavy_tailed": sides[1][0],
                "invalid": sides[0][1] or sides[1][1], "flags": "; ".join(side[2] for side in sides if side[2]),
            })
    return pd.DataFrame(records, columns=[*RATIO_COLUMNS, "x_heavy_tailed", "y_heavy_tailed", "invalid", "flags"])


ZERO_WIDTH_RTOL = 1e-9  # ends closer than this (relative) are one number: float rounding, not an interval


def zero_width_intervals(frame: pd.DataFrame) -> int:
    """How many intervals of a table have zero width: finite `<x>_lo` and `<x>_hi` equal to ZERO_WIDTH_RTOL over
    every such column pair (and `lo`, `hi`). Such an interval says only that the resamples did not differ, not that
    the value is known."""
    pairs = [(c, f"{c[:-3]}_hi") for c in frame.columns if c.endswith("_lo") and f"{c[:-3]}_hi" in frame.columns]
    if {"lo", "hi"} <= set(frame.columns):
        pairs.append(("lo", "hi"))
    count = 0
    for low, high in pairs:
        lo, hi = (pd.to_numeric(frame[c], errors="coerce").astype(float) for c in (low, high))
        same = np.isclose(lo, hi, rtol=ZERO_WIDTH_RTOL, atol=0.0)
        count += int((np.isfinite(lo) & np.isfinite(hi) & same).sum())
    return count
