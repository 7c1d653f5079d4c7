"""The report's "Findings": plain-language sentences generated from the numbers, never written by
hand, so they stay true when the results change.

Each finding is one string; findings come in sections `(heading, [finding, ...])`.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
from scipy import stats

from reports.results import BIAS_TEST_LEVEL, Sweep, at_headline
from reports.rliable_stats import SCORES, RliableResults

Section = tuple[str, list[str]]


def fmt(value: float) -> str:
    """Three significant digits, "n/a" for a missing value."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def fmt_ci(value: float, low: float, high: float) -> str:
    """"value [low, high]", or just the value when the interval is undefined."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def fmt_metric(row, metric: str) -> str:
    """`metric` of a row (a Series or an itertuples tuple) with its `<metric>_lo/_hi` interval."""
    return fmt_ci(getattr(row, metric), getattr(row, f"{metric}_lo"), getattr(row, f"{metric}_hi"))


def ratio_phrase(ratio: float, low: float, high: float) -> str:
    """How X's variance compares with Y's, given ratio = var(Y) / var(X) and its 95% CI."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"variance ratio {fmt(ratio)}× (one repetition: no interval)"
    if low > 1:
        return f"cuts variance {fmt(ratio)}× [{fmt(low)}, {fmt(high)}]"
    if high < 1:
        return f"raises variance {fmt(1 / ratio)}× [{fmt(1 / high)}, {fmt(1 / low)}]"
    return f"no clear change in variance ({fmt(ratio)}× [{fmt(low)}, {fmt(high)}])"


def variance_findings(ratios: pd.DataFrame, reference: str, headline: dict[str, int]) -> Section:
    """Per problem at its headline N: every variant's variance against the reference's."""
    against_reference = at_headline(ratios[(ratios["y"] == reference) & (ratios["x"] != reference)], headline)
    items = []
    for problem, group in against_reference.groupby("problem", sort=True):
        clauses = [f"{row.x} {ratio_phrase(row.ratio, row.ratio_lo, row.ratio_hi)}"
                   for row in group.sort_values(["ratio", "x"], ascending=[False, True]).itertuples()]
        items.append(f"{problem} (N={headline[problem]}): " + "; ".join(clauses) + ".")
    return (f"Variance against the reference, {reference} (ratio = geometric mean over repetitions of the paired "
            "variance ratio, 95% t-interval over repetitions)", items)


def pair_findings(ratios: pd.DataFrame, rliable: RliableResults, pairs: Sequence[tuple[str, str]],
                  headline: dict[str, int]) -> Section:
    """Each configured pair (X, Y): X's variance against Y's per problem, and rliable's P(X > Y)."""
    headline_ratios = at_headline(ratios, headline)
    items = [] if pairs else ["No pairs configured ([report] pairs in the sweep config)."]
    for x, y in pairs:
        compared = headline_ratios[(headline_ratios["x"] == x) & (headline_ratios["y"] == y)]
        clauses = [f"{row.problem} (N={row.batch_size}) {ratio_phrase(row.ratio, row.ratio_lo, row.ratio_hi)}"
                   for row in compared.itertuples()]
        items.append(f"{x} vs {y}: " + "; ".join(clauses) + ".")
        for score in SCORES:
            found = rliable.improvements[(rliable.improvements["score"] == score.column)
                                         & (rliable.improvements["x"] == x) & (rliable.improvements["y"] == y)]
            if len(found):
                row = found.sort_values("batch_size").iloc[-1]
                items.append(f"{x} vs {y}, across {row.num_tasks} problems at N={row.batch_size}: probability that "
                             f"a run of {x} beats one of {y} on {score.title} = "
                             f"{fmt_ci(row.probability, row.lo, row.hi)} (rliable; 0.5 = no difference).")
    return "Configured comparisons", items


def mse_findings(points: pd.DataFrame, headline: dict[str, int]) -> Section:
    """Per problem at its headline N: the variant with the lowest MSE and the runner-up."""
    items = []
    for problem, group in at_headline(points, headline).groupby("problem", sort=True):
        ranked = group.dropna(subset=["mse"]).sort_values(["mse", "variant"])
        if ranked.empty:
            continue
        best = ranked.iloc[0]
        text = f"{problem} (N={headline[problem]}): lowest MSE {best.variant} {fmt_metric(best, 'mse')}"
        if len(ranked) > 1:
            second = ranked.iloc[1]
            separated = best.mse_hi < second.mse_lo
            text += (f"; next {second.variant} {fmt_metric(second, 'mse')} — the CIs "
                     + ("do not overlap" if separated else "overlap, so the order is not established"))
        items.append(text + ".")
    return "Lowest mean squared error (bias² + variance)", items


def _chance_of_rejections(k: int, n: int) -> float:
    """P(at least k of n independent tests reject at the 1% level) when every null hypothesis holds."""
    return float(stats.binom.sf(k - 1, n, BIAS_TEST_LEVEL)) if k else 1.0


def bias_findings(rows: pd.DataFrame) -> Section:
    """The bias test at the 1% level, held against each declaration: per declared-biased variant,
    where it is detected; per (variant, problem) declared unbiased, a warning when it rejects more
    often than chance allows; and the declared-unbiased rest in one line."""
    # Heavy-tailed measurements have optimistic p-values (see reliability_findings): left out here.
    tested = rows[~rows["heavy_tailed"]].dropna(subset=["bias_pvalue"])
    tested = tested.assign(rejected=tested["bias_pvalue"] < BIAS_TEST_LEVEL)
    counts = tested.groupby(["declared_unbiased", "variant", "problem"], sort=True).agg(
        n=("rejected", "size"), k=("rejected", "sum"), reps=("reps", "max"),
    ).reset_index()
    counts["p_chance"] = [_chance_of_rejections(k, n) for k, n in zip(counts["k"], counts["n"])]
    items = []
    for variant, tally in counts[~counts["declared_unbiased"]].groupby("variant", sort=True):
        detected = [f"{r.problem} {r.k}/{r.n}" for r in tally.itertuples() if r.k > 0]
        missed = [f"{r.problem} {r.k}/{r.n}" for r in tally.itertuples() if r.k == 0]
        parts = [f"detected on {', '.join(detected)}"] if detected else []
        if missed:
            parts.append(f"not on {', '.join(missed)}, where its bias is below what M={tally['reps'].max()} "
                         "batches can detect")
        items.append(f"{variant} (declared biased; rejections/measurements): {'; '.join(parts)}.")
    unbiased = counts[counts["declared_unbiased"]]
    # Bonferroni over the (variant, problem) groups, so the warnings together fire by chance < 1%.
    warn_level = BIAS_TEST_LEVEL / max(len(unbiased), 1)
    suspicious = unbiased["p_chance"] < warn_level
    for r in unbiased[suspicious].itertuples():
        items.append(f"WARNING {r.variant} on {r.problem}: declared UNBIASED, yet the test rejects in {r.k} of {r.n} "
                     f"measurements (chance alone gives that many with probability {r.p_chance:.2g}, below "
                     f"{warn_level:.2g} = 1% over {len(unbiased)} groups): check the estimator.")
    rest = unbiased[~suspicious]
    if len(rest):
        n, k = int(rest["n"].sum()), int(rest["k"].sum())
        others = " (apart from the warnings above)" if suspicious.any() else ""
        p_chance = _chance_of_rejections(k, n)
        verdict = ("consistent with no bias" if p_chance >= BIAS_TEST_LEVEL else
                   f"more than chance gives (probability {p_chance:.2g}): a small bias somewhere")
        items.append(f"Declared-unbiased variants{others}: {k} rejection{'' if k == 1 else 's'} in {n} measurements "
                     f"({n * BIAS_TEST_LEVEL:.2g} expected by chance at the 1% level), {verdict}.")
    return (f"Bias test (H0: E ĝ = ∇J, rejected at p < {BIAS_TEST_LEVEL:g}; measurements not flagged heavy-tailed; "
            "variants of one (problem, N, repetition) share trajectories, so their rejections are correlated)", items)


def reliability_findings(rows: pd.DataFrame) -> Section:
    """Measurements whose CIs should not be trusted (heavy tails), per problem, and non-finite
    estimates."""
    items = []
    heavy = rows[rows["heavy_tailed"]]
    for problem, group in heavy.groupby("problem", sort=True):
        sizes = ", ".join(str(n) for n in sorted(group["batch_size"].unique()))
        variants = ", ".join(f"{variant} ({len(g)})" for variant, g in group.groupby("variant", sort=True))
        items.append(f"{problem}: {len(group)} of {int((rows['problem'] == problem).sum())} measurements are "
                     f"heavy-tailed (N = {sizes}; tail kurtosis up to {fmt(group['tail_kurtosis'].max())}), "
                     f"whose CIs are too narrow and bias p-values optimistic (raise N or M): {variants}.")
    if heavy.empty:
        items.append("No measurement is flagged heavy-tailed: the normal-approximation CIs apply.")
    nonfinite = rows[rows["nonfinite"] > 0]
    for (variant, problem, batch_size), group in nonfinite.groupby(["variant", "problem", "batch_size"], sort=True):
        items.append(f"{variant} on {problem} at N={batch_size}: {int(group['nonfinite'].sum())} non-finite "
                     f"estimates of {int(group['reps'].sum())}, excluded from every metric.")
    if nonfinite.empty:
        items.append("No non-finite estimates.")
    return "Reliability of the measurements", items


def coverage_findings(sweep: Sweep) -> Section:
    """How much of the sweep the report covers."""
    rows = sweep.rows
    items = [f"{len(rows)} of {sweep.planned_cells} cells finished"
             + (" (a partial sweep: every number covers the finished cells only)." if len(rows) < sweep.planned_cells
                else ".")]
    for variant in sweep.variants:
        missing = sorted(set(sweep.batch_sizes) - set(rows.loc[rows["variant"] == variant, "batch_size"]))
        if missing:
            items.append(f"{variant} was not measured at N = {', '.join(map(str, missing))} "
                         "(does not apply, or not run).")
    return "Coverage", items


def all_findings(sweep: Sweep, points: pd.DataFrame, ratios: pd.DataFrame, rliable: RliableResults,
                 headline: dict[str, int]) -> list[Section]:
    """Every findings section, in the order the report shows them."""
    return [
        variance_findings(ratios, sweep.settings.reference_variant, headline),
        pair_findings(ratios, rliable, sweep.settings.pairs, headline),
        mse_findings(points, headline),
        bias_findings(sweep.rows),
        reliability_findings(sweep.rows),
        coverage_findings(sweep),
    ]


def findings_text(sections: Sequence[Section]) -> str:
    """The sections as plain text, for findings.txt."""
    return "\n\n".join(f"{heading}\n" + "\n".join(f"- {item}" for item in items) for heading, items in sections) + "\n"
