"""The fixed-θ verdict at the top of the report: per problem, the estimator to use at its headline batch size
(lowest MSE against ∇J among the measurements that can be trusted and are unbiased), with the variants the data
cannot separate from it, and the table behind the heat map of variance relative to vanilla REINFORCE.

A variant is *eligible* for a recommendation at a (problem, N) only if every repetition there is trustworthy
(bench.metrics: not heavy-tailed, not over the non-finite limit, not degenerate), it is declared unbiased for ∇J
and its bias test does not reject more often than chance gives (reports.results.rejects_beyond_chance; with
R = 3 repetitions, in two or more): a lower MSE bought with a bias, or read off a heavy-tailed
sample whose CI is too narrow, is never called a win. Such variants are named beside the recommendation when
their MSE is lower, with the reason. `ineligibility` is that rule over a measurement's flags, the one rliable's best
variant (reports.rliable_stats) is chosen by too.

Ties: an eligible variant whose MSE interval overlaps the recommended one's is "tied"; one whose MSE equals it
to IDENTICAL_RTOL (the same estimates computed by a different formula, e.g. reward-to-go and total return on a
one-step bandit) is "identical". Intervals are the single-repetition 95% CIs of reports.results, so a tie is
the conservative reading.
"""

from __future__ import annotations

import enum
import math
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from bench.metrics import flag_counts_text
from reports.results import PLAIN_TARGET, ZERO_WIDTH_RTOL, at_headline, rejects_beyond_chance

# Relative difference below which two MSEs are the same number: the page's one tolerance for "the same number", also
# what counts an interval as zero-width (reports.results.ZERO_WIDTH_RTOL). float64 summation-order noise is ~1e-16 per
# operation and the metrics sum a few thousand terms, so 1e-9 is far above rounding and far below any real
# difference an M = 200 measurement can resolve (its CIs are ~10% wide).
IDENTICAL_RTOL = ZERO_WIDTH_RTOL

VERDICT_COLUMNS = ["problem", "batch_size", "recommended", "mse", "mse_lo", "mse_hi", "mse_vs_reference",
                   "cost_vs_reference", "identical",
                   "tied", "not_eligible_lower", "measured", "eligible", "heavy_tailed_measurements",
                   "measurements", "relative_bias_resolution"]


def identical(a: float, b: float) -> bool:
    """The same value up to float rounding (IDENTICAL_RTOL)."""
    return math.isclose(a, b, rel_tol=IDENTICAL_RTOL, abs_tol=0.0)


class Why(enum.Enum):
    """A reason a measurement cannot be recommended or called a win (`ineligibility`)."""

    BIASED = enum.auto()  # declared biased for its target
    REJECTED = enum.auto()  # declared unbiased, but its bias test rejects beyond chance
    HEAVY_TAILED = enum.auto()  # its CI is too narrow
    EXCESS_NONFINITE = enum.auto()  # over the non-finite limit: its numbers are the finite remainder's
    DEGENERATE = enum.auto()  # collapsed estimates: nothing measured


BIAS_REASONS = (Why.BIASED, Why.REJECTED)


class Reason(NamedTuple):
    """One reason, with the repetitions where it holds: `count` of `repetitions` (0 of 0 for a declaration)."""

    why: Why
    count: int = 0
    repetitions: int = 0

    def text(self) -> str:
        """"biased", "unbiasedness test rejects 2/3", or a flag as bench.metrics.flag_counts_text words it."""
        if self.why is Why.BIASED:
            return "biased"
        if self.why is Why.REJECTED:
            return f"unbiasedness test rejects {self.count}/{self.repetitions}"
        flags = {Why.HEAVY_TAILED: (self.count, 0, 0), Why.EXCESS_NONFINITE: (0, self.count, 0),
                 Why.DEGENERATE: (0, 0, self.count)}[self.why]
        return flag_counts_text(*flags, self.repetitions)


def ineligibility(declared_unbiased: bool, bias_rejections: int, heavy_tailed: int, excess_nonfinite: int,
                  degenerate: int, repetitions: int) -> tuple[Reason, ...]:
    """Why a measurement cannot be recommended or called a win, () if it can: the one rule of the verdict (per point)
    and of rliable's best variant (per variant and problem). The arguments count the measurement's independently
    seeded `repetitions`: the bias test's rejections (p < BIAS_TEST_LEVEL) and each trust flag (bench.metrics).

    Reasons, in this order: declared biased; else declared unbiased but the test rejects in more repetitions than
    chance gives (reports.results.rejects_beyond_chance: R = 3, two or more); then each flag raised in any
    repetition — heavy-tailed (the MSE is read off a sample whose tails dominate, its CI too narrow), over the
    non-finite limit or degenerate (the numbers are not the estimator's)."""
    reasons = []
    if not declared_unbiased:
        reasons.append(Reason(Why.BIASED))
    elif rejects_beyond_chance(int(bias_rejections), int(repetitions)):
        reasons.append(Reason(Why.REJECTED, int(bias_rejections), int(repetitions)))
    for why, count in ((Why.HEAVY_TAILED, heavy_tailed), (Why.EXCESS_NONFINITE, excess_nonfinite),
                       (Why.DEGENERATE, degenerate)):
        if count:
            reasons.append(Reason(why, int(count), int(repetitions)))
    return tuple(reasons)


def point_ineligibility(point) -> tuple[Reason, ...]:
    """`ineligibility` of a point (a row of reports.results.aggregate_repetitions)."""
    return ineligibility(point.declared_unbiased, point.bias_rejections, point.heavy_tailed, point.excess_nonfinite,
                         point.degenerate, point.repetitions)


def reasons_text(reasons: Iterable[Reason]) -> str:
    """Reasons as one line: "biased, heavy-tailed 1/3" ("" for none)."""
    return ", ".join(reason.text() for reason in reasons)


def bias_marker(point) -> str:
    """The bias part of a point's ineligibility: "biased", "unbiasedness test rejects k/R" or ""."""
    return reasons_text(r for r in point_ineligibility(point) if r.why in BIAS_REASONS)


def fixed_theta_verdicts(points: pd.DataFrame, headline: dict[str, int], reference: str,
                         rows: pd.DataFrame) -> pd.DataFrame:
    """One row per problem at its headline N (VERDICT_COLUMNS): the eligible variant with the lowest MSE against
    ∇J (`recommended`, "" when none is eligible), its MSE and CI, its MSE over the reference variant's
    (`mse_vs_reference`, NaN without the reference) and the same at equal compute time (`cost_vs_reference`: MSE ×
    seconds per estimate, over the reference's; an estimator twice as slow must halve the MSE to break even), the eligible variants `identical` to it or `tied` with it
    (overlapping CIs), the ineligible ones with a lower MSE and why (`not_eligible_lower`: (variant, its reasons)
    pairs in MSE order; `verdict_csv` words them), how many of the
    (problem, N)'s measurements (`rows`, one per cell) are heavy-tailed, and the smallest relative bias its
    reference can resolve (`relative_bias_resolution`: 0 for an exact ∇J; for a sampled one the largest over the
    cells of bias_resolution / ‖g̃‖, bench/metrics.py)."""
    records = []
    plain = at_headline(points[points["target"] == PLAIN_TARGET], headline)
    for problem, at_n in plain.groupby("problem", sort=True):
        batch_size = headline[problem]
        at_n = at_n.dropna(subset=["mse"]).sort_values(["mse", "variant"], kind="stable")
        why = {r.variant: point_ineligibility(r) for r in at_n.itertuples()}
        eligible = at_n[[not why[v] for v in at_n["variant"]]]
        cells = rows[(rows["problem"] == problem) & (rows["batch_size"] == batch_size)]
        record = {"problem": problem, "batch_size": batch_size, "recommended": "", "mse": np.nan, "mse_lo": np.nan,
                  "mse_hi": np.nan, "mse_vs_reference": np.nan, "cost_vs_reference": np.nan, "identical": "", "tied": "", "not_eligible_lower": (),
                  "measured": len(at_n), "eligible": len(eligible),
                  "heavy_tailed_measurements": int(cells["heavy_tailed"].sum()), "measurements": len(cells),
                  "relative_bias_resolution": _relative_resolution(cells)}
        if len(eligible):
            best = eligible.iloc[0]
            others = eligible.iloc[1:]
            same = [r.variant for r in others.itertuples() if identical(r.mse, best.mse)]
            tied = [r.variant for r in others.itertuples()
                    if r.variant not in same and r.mse_lo <= best.mse_hi and best.mse_lo <= r.mse_hi]
            lower = at_n[(at_n["mse"] < best.mse) & ~at_n["variant"].isin(eligible["variant"])]
            vanilla = at_n[at_n["variant"] == reference]
            if len(vanilla):
                ref = vanilla.iloc[0]
                record.update(mse_vs_reference=float(best.mse / ref.mse), cost_vs_reference=float(
                    best.mse * best.seconds_per_estimate / (ref.mse * ref.seconds_per_estimate)))
            record.update(recommended=best.variant, mse=best.mse, mse_lo=best.mse_lo, mse_hi=best.mse_hi,
                          identical="; ".join(same), tied="; ".join(tied),
                          not_eligible_lower=tuple((r.variant, why[r.variant]) for r in lower.itertuples()))
        records.append(record)
    return pd.DataFrame(records, columns=VERDICT_COLUMNS)


def verdict_csv(verdicts: pd.DataFrame) -> pd.DataFrame:
    """verdict.csv: the verdicts with `not_eligible_lower` worded "a (biased); b (heavy-tailed 1/3)"."""
    return verdicts.assign(not_eligible_lower=[
        "; ".join(f"{variant} ({reasons_text(reasons)})" for variant, reasons in lower)
        for lower in verdicts["not_eligible_lower"]])


def _relative_resolution(cells: pd.DataFrame) -> float:
    """max over cells of bias_resolution / reference_norm (NaN when the rows do not carry them)."""
    if not {"bias_resolution", "reference_norm"} <= set(cells.columns) or cells.empty:
        return np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((cells["bias_resolution"] / cells["reference_norm"]).max())


HEATMAP_COLUMNS = ["problem", "batch_size", "variant", "relative_variance", "relative_variance_lo",
                   "relative_variance_hi", "biased", "test_rejects", "heavy_tailed", "invalid"]


def relative_variance_table(points: pd.DataFrame, ratios: pd.DataFrame, headline: dict[str, int],
                            reference: str) -> pd.DataFrame:
    """The heat map's cells (HEATMAP_COLUMNS): per problem at its headline N and variant estimating ∇J, its
    variance over the reference's, var(X) / var(reference) — the inverse of reports.results.variance_ratios'
    paired ratio (geometric mean over repetitions, 95% t-interval), 1 without an interval for the reference itself —
    and its flags:
    declared biased, declared unbiased but the bias test rejects beyond chance, heavy-tailed in a repetition,
    invalid (over the non-finite limit or degenerate)."""
    plain = at_headline(points[points["target"] == PLAIN_TARGET], headline)
    paired = ratios[ratios["y"] == reference].set_index(["problem", "batch_size", "x"])
    records = []
    for r in plain.itertuples():
        if r.variant == reference:
            value, low, high = 1.0, np.nan, np.nan  # the reference itself: exactly 1, no interval to show
        elif (r.problem, r.batch_size, r.variant) in paired.index:
            ratio = paired.loc[(r.problem, r.batch_size, r.variant)]
            value, low, high = 1 / ratio.ratio, 1 / ratio.ratio_hi, 1 / ratio.ratio_lo
        else:
            continue
        records.append({"problem": r.problem, "batch_size": r.batch_size, "variant": r.variant,
                        "relative_variance": value, "relative_variance_lo": low, "relative_variance_hi": high,
                        "biased": not r.declared_unbiased,
                        "test_rejects": any(reason.why is Why.REJECTED for reason in point_ineligibility(r)),
                        "heavy_tailed": bool(r.heavy_tailed > 0), "invalid": bool(r.invalid)})
    return pd.DataFrame(records, columns=HEATMAP_COLUMNS)
