"""The report's "Findings": plain-language sentences generated from the numbers, never written by
hand, so they stay true when the results change.

Each finding is one string; findings come in sections `(heading, [finding, ...])`.
"""

from __future__ import annotations

import enum
import math
from typing import Iterable, Mapping, Sequence

import pandas as pd

from bench.metrics import NONFINITE_LIMIT, trust_flags
from reports.families import Axis, Family
from reports.results import (
    BIAS_TEST_LEVEL,
    PLAIN_TARGET,
    Sweep,
    at_headline,
    chance_of_rejections,
    target_order,
    variance_ratios,
)
from reports.rliable_stats import MSE_REDUCTION, RliableResults
from reports.verdict import bias_marker, identical

Section = tuple[str, list[str]]


def fmt(value: float) -> str:
    """Three significant digits, "n/a" for a missing value."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


MAX_DIGITS = 8  # significant digits an interval may need before its ends print apart


def fmt_ci(value: float, low: float, high: float) -> str:
    """"value [low, high]", just the value when the interval is undefined, and "value (no spread)" when it has zero
    width: every resample gave the same number, which is no evidence of precision. A narrow interval gets the
    digits its value and ends need to print apart ("0.9996 [0.9995, 0.9997]", never "1 [1, 1]")."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt(value)
    if identical(low, high):
        return f"{fmt(value)} (no spread)"
    def blurred(digits: int) -> bool:  # two different numbers that print the same
        texts = {x: f"{x:.{digits}g}" for x in (low, value, high)}
        return len(set(texts.values())) < len(texts)

    digits = 3
    while digits < MAX_DIGITS and blurred(digits):
        digits += 1
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def fmt_metric(row, metric: str) -> str:
    """`metric` of a row (a Series or an itertuples tuple) with its `<metric>_lo/_hi` interval."""
    return fmt_ci(getattr(row, metric), getattr(row, f"{metric}_lo"), getattr(row, f"{metric}_hi"))


class Reading(enum.StrEnum):
    """What a paired ratio (var(Y) / var(X), or later / earlier) and its 95% CI establish: decided once (`reading`,
    `paired_reading`), worded at the end (`ratio_words`, `untrusted_ratio`) and counted by it (the page's tallies)."""

    ABOVE = "above 1"  # the CI lies above 1
    BELOW = "below 1"
    FIXED_ABOVE = "exactly, above 1"  # the same ratio in every repetition, e.g. rloo = N/(N−1) × batch_mean
    FIXED_BELOW = "exactly, below 1"
    UNCLEAR = "includes 1"  # the CI straddles 1
    IDENTICAL = "identical"  # ratio and CI are 1 to float rounding
    NO_INTERVAL = "no interval"  # one repetition
    UNTRUSTWORTHY = "untrustworthy"  # X or Y over the non-finite limit or degenerate: not a finding
    NOT_ESTABLISHED = "not established"  # the side with the lower variance is heavy-tailed


def reading(ratio: float, low: float, high: float) -> Reading:
    """What a ratio and its 95% CI say, from the numbers alone (no trust flags): `ratio_words`' cases."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return Reading.NO_INTERVAL
    if all(identical(value, 1.0) for value in (ratio, low, high)):
        return Reading.IDENTICAL
    if identical(low, high):
        return Reading.FIXED_ABOVE if ratio > 1 else Reading.FIXED_BELOW
    if low > 1:
        return Reading.ABOVE
    if high < 1:
        return Reading.BELOW
    return Reading.UNCLEAR


def ratio_words(ratio: float, low: float, high: float, above: str, below: str, unclear: str, single: str) -> str:
    """A paired ratio and its 95% CI in words: `above` when the CI is above 1 ("cuts variance 3×
    [2.9, 3.1]"), `below` with the inverted ratio when it is below 1, `unclear` when it straddles 1,
    `single` when there is no interval (one repetition); "identical" when ratio and interval are 1 to float
    rounding, and "exactly r× in every repetition" when the interval has no width (a fixed relation between the
    two estimators, which no interval describes)."""
    said = reading(ratio, low, high)
    if said is Reading.NO_INTERVAL:
        return f"{single} {fmt(ratio)}× (one repetition: no interval)"
    if said is Reading.IDENTICAL:
        return f"{unclear}: identical to float rounding (ratio 1×)"
    if said is Reading.FIXED_ABOVE:
        return f"{above} exactly {fmt(ratio)}× in every repetition (a fixed ratio, not an interval)"
    if said is Reading.FIXED_BELOW:
        return f"{below} exactly {fmt(1 / ratio)}× in every repetition (a fixed ratio, not an interval)"
    if said is Reading.ABOVE:
        return f"{above} {fmt_ci(ratio, low, high).replace(' [', '× [', 1)}"
    if said is Reading.BELOW:
        return f"{below} {fmt_ci(1 / ratio, 1 / high, 1 / low).replace(' [', '× [', 1)}"
    return f"{unclear} ({fmt_ci(ratio, low, high).replace(' [', '× [', 1)})"


def ratio_phrase(ratio: float, low: float, high: float) -> str:
    """How X's variance compares with Y's, given ratio = var(Y) / var(X) and its 95% CI."""
    return ratio_words(ratio, low, high, "cuts variance", "raises variance", "no clear change in variance",
                       "variance ratio")


def distrust(row) -> Reading | None:
    """Reading.UNTRUSTWORTHY or NOT_ESTABLISHED for a paired ratio row of `reports.results.variance_ratios`
    (ratio = var(Y) / var(X)) that must not be read as a win, None when the numbers may speak (`reading`):
    - `invalid` (X or Y over the non-finite limit, or degenerate, in a repetition): the ratio compares
      the finite remainders, or collapsed estimates, not the estimators — stated, never called a change;
    - the side the interval favours (lower variance) is heavy-tailed: a heavy-tailed sample variance
      falls below the true one more often than not (the rare large estimates are missed), so exactly
      this direction can be an artefact — stated as not established. The other direction is kept (it
      understates the difference, if anything) with the heavy-tailed note the caller adds.
    Rows without the trust columns (older callers) are taken as trustworthy."""
    if bool(getattr(row, "invalid", False)):
        return Reading.UNTRUSTWORTHY
    defined = math.isfinite(row.ratio_lo) and math.isfinite(row.ratio_hi)
    favoured = "x" if defined and row.ratio_lo > 1 else "y" if defined and row.ratio_hi < 1 else None
    if favoured and bool(getattr(row, f"{favoured}_heavy_tailed", False)):
        return Reading.NOT_ESTABLISHED
    return None


def paired_reading(row) -> Reading:
    """What a variance_ratios row establishes: `distrust`'s reading, else the numbers' (`reading`)."""
    return distrust(row) or reading(row.ratio, row.ratio_lo, row.ratio_hi)


def untrusted_ratio(row, what: str = "variance") -> str | None:
    """The wording of a paired ratio row that must not be read as a win (`distrust`), or None when the usual words
    apply."""
    distrusted = distrust(row)
    if distrusted is None:
        return None
    flags = getattr(row, "flags", "") or ""
    numbers = f"{what} ratio {fmt_ci(row.ratio, row.ratio_lo, row.ratio_hi)}"
    if distrusted is Reading.UNTRUSTWORTHY:
        return f"{numbers}: not a finding, untrustworthy ({flags})"
    return f"{numbers}: not established, the lower {what} is heavy-tailed ({flags})"


def trusted_ratio_phrase(row) -> str:
    """ratio_phrase of a variance_ratios row, unless untrusted_ratio words it otherwise; a heavy-tailed
    side the words do not favour is noted."""
    guarded = untrusted_ratio(row)
    if guarded is not None:
        return guarded
    phrase = ratio_phrase(row.ratio, row.ratio_lo, row.ratio_hi)
    flags = getattr(row, "flags", "") or ""
    return f"{phrase} (flagged: {flags})" if flags else phrase


def variance_findings(ratios: pd.DataFrame, reference: str, headline: dict[str, int],
                      targets: Mapping[str, str], family_list: Sequence[Family]) -> Section:
    """Per problem at its headline N and per estimator family: the variance of every variant
    estimating the reference's target against the reference's (estimates of other targets have
    other scales)."""
    same_target = ratios["x"].map(targets).eq(targets.get(reference)) & ratios["x"].ne(reference)
    against_reference = at_headline(ratios[ratios["y"].eq(reference) & same_target], headline)
    items = []
    for problem, group in against_reference.groupby("problem", sort=True):
        for family in family_list:
            of_family = group[group["x"].isin(family.variants)]
            if of_family.empty:
                continue
            clauses = [f"{row.x} {trusted_ratio_phrase(row)}"
                       for row in of_family.sort_values(["ratio", "x"], ascending=[False, True]).itertuples()]
            items.append(f"{problem} (N={headline[problem]}), {family.title}: " + "; ".join(clauses) + ".")
    return (f"Variance against the reference, {reference}, of the variants estimating its target "
            f"{targets.get(reference, '')} (ratio = geometric mean over repetitions of the paired variance ratio, "
            "95% t-interval over repetitions)", items)


COMPARISON_COLUMNS = ["x", "y", "problem", "batch_size", "variance", "variance_reading", "x_relative_bias", "x_bias",
                      "mse_ratio", "flags"]


def comparison_table(ratios: pd.DataFrame, points: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                     headline: dict[str, int]) -> pd.DataFrame:
    """The configured pairs as a table (COMPARISON_COLUMNS), one row per (X, Y, problem) at the headline N: X's
    variance against Y's in words with its paired CI (trusted_ratio_phrase: a heavy-tailed or invalid side is
    never a win; float noise around 1 is "identical") and what it establishes (`variance_reading`: a Reading of
    var(Y) / var(X), "above 1" where X cuts variance), X's relative bias with its CI and bias marker, and
    MSE(X) / MSE(Y), so a variance cut bought with a bias shows beside it."""
    by_point = points.set_index(["problem", "batch_size", "variant"])
    records = []
    for x, y in dict.fromkeys(pairs):  # ordered and without repeats
        compared = at_headline(ratios[(ratios["x"] == x) & (ratios["y"] == y)], headline)
        for row in compared.itertuples():
            px, py = by_point.loc[(row.problem, row.batch_size, x)], by_point.loc[(row.problem, row.batch_size, y)]
            records.append({"x": x, "y": y, "problem": row.problem, "batch_size": row.batch_size,
                            "variance": trusted_ratio_phrase(row), "variance_reading": paired_reading(row),
                            "x_relative_bias": fmt_metric(px, "relative_bias"),
                            "x_bias": bias_marker(px) or "unbiased",
                            "mse_ratio": px.mse / py.mse if py.mse > 0 else math.nan, "flags": row.flags or ""})
    return pd.DataFrame(records, columns=COMPARISON_COLUMNS)


def pair_findings(comparisons: pd.DataFrame, rliable: RliableResults, pairs: Sequence[tuple[str, str]]) -> Section:
    """Each configured pair (X, Y): X's variance against Y's per problem (`comparisons`: comparison_table), and
    rliable's P(X > Y)."""
    items = [] if pairs else ["No pairs configured ([report] pairs in the sweep config)."]
    for x, y in dict.fromkeys(pairs):
        compared = comparisons[(comparisons["x"] == x) & (comparisons["y"] == y)]
        clauses = [f"{row.problem} (N={row.batch_size}) {row.variance}" for row in compared.itertuples()]
        items.append(f"{x} vs {y}: " + "; ".join(clauses) + ".")
        found = rliable.improvements[(rliable.improvements["x"] == x) & (rliable.improvements["y"] == y)]
        if len(found):
            row = found.sort_values("batch_size").iloc[-1]
            items.append(f"{x} vs {y}, across {row.num_tasks} problems at N={row.batch_size}: probability that "
                         f"a run of {x} beats one of {y} on {MSE_REDUCTION.title} = "
                         f"{fmt_ci(row.probability, row.lo, row.hi)} (rliable; 0.5 = no difference).")
    return "Configured comparisons", items


def mse_findings(points: pd.DataFrame, headline: dict[str, int]) -> Section:
    """Per problem at its headline N and per target with ≥ 2 variants: the variant with the
    lowest MSE against that target and the runner-up, among the trustworthy points only (as in
    summary_table's rank); the untrustworthy ones are named with their reasons, never ranked."""
    items = []
    at_n = at_headline(points, headline)
    for (problem, target), group in at_n.groupby(["problem", "target"], sort=True):
        measured = group.dropna(subset=["mse"])
        trusted = (measured["trustworthy"].astype(bool) if "trustworthy" in measured
                   else pd.Series(True, index=measured.index))
        ranked = measured[trusted].sort_values(["mse", "variant"])
        left_out = measured[~trusted].sort_values("variant")
        untrusted = "; ".join(f"{r.variant} ({r.untrustworthy_reasons})" for r in left_out.itertuples())
        where = f"{problem} (N={headline[problem]}), target {target}"
        if len(ranked) < 2:
            if len(measured) >= 2 and untrusted:
                items.append(f"{where}: no lowest MSE established, fewer than two variants are trustworthy; "
                             f"untrustworthy, not ranked: {untrusted}.")
            continue
        best = ranked.iloc[0]
        text = f"{where}: lowest MSE {best.variant} {fmt_metric(best, 'mse')}"
        second = ranked.iloc[1]
        separated = best.mse_hi < second.mse_lo
        text += (f"; next {second.variant} {fmt_metric(second, 'mse')} — the CIs "
                 + ("do not overlap" if separated else "overlap, so the order is not established"))
        if untrusted:
            text += f"; untrustworthy, not ranked: {untrusted}"
        items.append(text + ".")
    return ("Lowest mean squared error (bias² + variance) against each target, among the trustworthy measurements",
            items)


def gradient_cosine_findings(points: pd.DataFrame) -> Section:
    """Per (problem, N) and variant whose target is not ∇J (the natural gradient, an entropy bonus): its mean cosine
    to ∇J (gradient_cosine) beside its cosine to its own target, and where it stands among the trustworthy ∇J
    estimators' cosines to ∇J there: the range, and how many it is above or below with the intervals apart (the
    rest overlap: not separated). An untrustworthy point says so; one without the cosine (results stored before it
    was measured, or no finite estimate) is named."""
    items = []
    others = points["target"] != PLAIN_TARGET
    for (problem, batch_size), group in points[others | points["gradient_cosine"].notna()].groupby(
            ["problem", "batch_size"], sort=True):
        plain = group[(group["target"] == PLAIN_TARGET) & group["trustworthy"].astype(bool)].dropna(
            subset=["gradient_cosine"]).sort_values(["gradient_cosine", "variant"])
        if len(plain):
            low, high = plain.iloc[0], plain.iloc[-1]
            among = (f"the {len(plain)} trustworthy ∇J estimators there range from {fmt(low.gradient_cosine)} "
                     f"({low.variant}) to {fmt(high.gradient_cosine)} ({high.variant})")
        for r in group[group["target"] != PLAIN_TARGET].sort_values("variant").itertuples():
            where = f"{problem} (N={batch_size}), {r.variant}"
            if not math.isfinite(r.gradient_cosine):
                items.append(f"{where}: no cosine to ∇J (results stored before it was measured: rerun the sweep with "
                             "--fresh; or no finite estimate).")
                continue
            text = f"{where}: cos to ∇J {fmt_metric(r, 'gradient_cosine')}, cos to its target {r.target} " \
                   f"{fmt_metric(r, 'cosine_mean')}"
            if len(plain):
                above = int((plain["gradient_cosine_hi"] < r.gradient_cosine_lo).sum())
                below = int((plain["gradient_cosine_lo"] > r.gradient_cosine_hi).sum())
                text += f"; {among}: it is above {above} and below {below} of them, CIs apart"
            else:
                text += "; no trustworthy ∇J estimator there to compare with"
            if not r.trustworthy:
                text += f" (untrustworthy: {r.untrustworthy_reasons})"
            items.append(text + ".")
    if not items:
        items.append("Every variant estimates ∇J: its cosine to ∇J is its cosine to its target (summary tables).")
    return ("Cosine to ∇J of the variants with another target, beside the ∇J estimators' (mean over estimates of "
            "cos(ĝ, ∇J), single-repetition 95% t-interval averaged over repetitions; for a ∇J estimator it is its "
            "cosine to its target)", items)


def bias_findings(rows: pd.DataFrame) -> Section:
    """The bias test at the 1% level against each variant's own target, held against each
    declaration: per declared-biased variant, where it is detected; per (variant, problem) declared
    unbiased, a warning when it rejects more often than chance allows; and, per target, the
    declared-unbiased rest in one line."""
    # Untrustworthy measurements (see reliability_findings) are left out here: heavy-tailed ones have
    # optimistic p-values; over the non-finite limit the test is of the finite remainder, not the estimator;
    # degenerate ones have no p-value (NaN) at all.
    flagged = trust_flags(rows)
    tested = rows[flagged["trustworthy"]].dropna(subset=["bias_pvalue"])
    tested = tested.assign(rejected=tested["bias_pvalue"] < BIAS_TEST_LEVEL)
    counts = tested.groupby(["target", "declared_unbiased", "variant", "problem"], sort=True).agg(
        n=("rejected", "size"), k=("rejected", "sum"), reps=("reps", "max"),
    ).reset_index()
    counts["p_chance"] = [chance_of_rejections(k, n) for k, n in zip(counts["k"], counts["n"])]
    unbiased = counts[counts["declared_unbiased"]]
    # Bonferroni over the (variant, problem) groups, so the warnings together fire by chance < 1%.
    warn_level = BIAS_TEST_LEVEL / max(len(unbiased), 1)
    items = []
    for target in sorted(counts["target"].unique(), key=target_order):
        of_target = counts[counts["target"] == target]
        for variant, tally in of_target[~of_target["declared_unbiased"]].groupby("variant", sort=True):
            detected = [f"{r.problem} {r.k}/{r.n}" for r in tally.itertuples() if r.k > 0]
            missed = [f"{r.problem} {r.k}/{r.n}" for r in tally.itertuples() if r.k == 0]
            parts = [f"detected on {', '.join(detected)}"] if detected else []
            if missed:
                parts.append(f"not on {', '.join(missed)}, where its bias is below what M={tally['reps'].max()} "
                             "batches can detect")
            items.append(f"{variant} (declared biased for {target}; rejections/measurements): {'; '.join(parts)}.")
        declared = unbiased[unbiased["target"] == target]
        suspicious = declared["p_chance"] < warn_level
        for r in declared[suspicious].itertuples():
            items.append(f"WARNING {r.variant} on {r.problem}: declared UNBIASED for {target}, yet the test rejects "
                         f"in {r.k} of {r.n} measurements (chance alone gives that many with probability "
                         f"{r.p_chance:.2g}, below {warn_level:.2g} = 1% over {len(unbiased)} groups): check the "
                         "estimator.")
        rest = declared[~suspicious]
        if len(rest):
            n, k = int(rest["n"].sum()), int(rest["k"].sum())
            others = " (apart from the warnings above)" if suspicious.any() else ""
            p_chance = chance_of_rejections(k, n)
            verdict = ("consistent with no bias" if p_chance >= BIAS_TEST_LEVEL else
                       f"more than chance gives (probability {p_chance:.2g}): a small bias somewhere")
            items.append(f"Against {target}, the declared-unbiased variants{others} ({rest['variant'].nunique()}): "
                         f"{k} rejection{'' if k == 1 else 's'} in {n} measurements ({n * BIAS_TEST_LEVEL:.2g} "
                         f"expected by chance at the 1% level), {verdict}.")
    return (f"Bias test (H0: E ĝ = the variant's target, rejected at p < {BIAS_TEST_LEVEL:g}; measurements flagged "
            f"neither heavy-tailed, over {NONFINITE_LIMIT:.0%} non-finite nor degenerate; variants of one "
            "(problem, N, repetition) share trajectories, so their rejections are "
            "correlated)", items)


def reliability_findings(rows: pd.DataFrame) -> Section:
    """Measurements not to be trusted, per problem: heavy tails (CIs too narrow), then more than
    NONFINITE_LIMIT non-finite estimates and degenerate (collapsed) estimates, whose numbers do not
    describe the estimator (bench/metrics.py)."""
    items = []
    flagged = trust_flags(rows)
    heavy = rows[flagged["heavy_tailed"]]
    for problem, group in heavy.groupby("problem", sort=True):
        sizes = ", ".join(str(n) for n in sorted(group["batch_size"].unique()))
        variants = ", ".join(f"{variant} ({len(g)})" for variant, g in group.groupby("variant", sort=True))
        items.append(f"{problem}: {len(group)} of {int((rows['problem'] == problem).sum())} measurements are "
                     f"heavy-tailed (N = {sizes}; tail kurtosis up to {fmt(group['tail_kurtosis'].max())}), "
                     f"whose CIs are too narrow and bias p-values optimistic (raise N or M): {variants}.")
    if heavy.empty:
        items.append("No measurement is flagged heavy-tailed: the normal-approximation CIs apply.")
    invalid = {
        f"have more than {NONFINITE_LIMIT:.0%} of their estimates non-finite, so their metrics are those of the "
        "finite remainder, not of the estimator": flagged["excess_nonfinite"],
        "are degenerate: every finite estimate negligible against the target or all identical (e.g. importance "
        "weights that underflowed), so there is nothing to measure; no CI or p-value is given": flagged["degenerate"],
    }
    for what, mask in invalid.items():
        for problem, group in rows[mask].groupby("problem", sort=True):
            sizes = ", ".join(str(n) for n in sorted(group["batch_size"].unique()))
            variants = ", ".join(f"{variant} ({len(g)})" for variant, g in group.groupby("variant", sort=True))
            items.append(f"{problem}: {len(group)} of {int((rows['problem'] == problem).sum())} measurements {what} "
                         f"(N = {sizes}); never ranked or counted as a win: {variants}.")
    if not (flagged["excess_nonfinite"] | flagged["degenerate"]).any():
        items.append(f"No measurement has more than {NONFINITE_LIMIT:.0%} non-finite estimates or degenerate ones.")
    return "Reliability of the measurements", items


def nonfinite_findings(points: pd.DataFrame) -> Section:
    """Per variant, how many of its estimates were non-finite (inf or NaN, e.g. an importance
    ratio that overflowed) and where; every variant without any is counted in a last line."""
    items = []
    for variant, group in points.groupby("variant", sort=True):
        bad = group[group["nonfinite"] > 0]
        if bad.empty:
            continue
        where = ", ".join(f"{r.problem} N={r.batch_size} {r.nonfinite}/{r.estimates}"
                          + (f" (over the {NONFINITE_LIMIT:.0%} limit in a repetition: untrustworthy)"
                             if getattr(r, "excess_nonfinite", 0) else "") for r in bad.itertuples())
        total, estimates = int(group["nonfinite"].sum()), int(group["estimates"].sum())
        items.append(f"{variant}: {total} of {estimates} estimates non-finite ({total / estimates:.2%}): {where}.")
    clean = points.groupby("variant")["nonfinite"].sum().eq(0).sum()
    if items:
        items.append(f"The other {clean} variants: no non-finite estimate.")
    else:
        items.append(f"No non-finite estimate in any of the {clean} variants.")
    return ("Non-finite estimates (counted, never dropped silently: every metric is over a measurement's finite "
            "estimates only, so where some overflowed the variance shown understates the estimator's)", items)


def _change(ratio: pd.Series | None, what: str) -> str:
    """"variance rises 3.1× [2.9, 3.3]" from a paired ratio row (ratio = later / earlier), unless
    untrusted_ratio words it otherwise."""
    if ratio is None:
        return f"{what}: no paired measurement"
    guarded = untrusted_ratio(ratio, what)
    if guarded is not None:
        return guarded
    return ratio_words(ratio.ratio, ratio.ratio_lo, ratio.ratio_hi, f"{what} rises", f"{what} falls",
                       f"{what} shows no clear change", f"{what} changes")


def _bias_trend(first, last) -> str:
    if bool(getattr(first, "invalid", False)) or bool(getattr(last, "invalid", False)):
        return "is not comparable (untrustworthy, below)"
    if last.relative_bias_hi < first.relative_bias_lo:
        return "falls"
    if last.relative_bias_lo > first.relative_bias_hi:
        return "rises"
    return "shows no clear change"


def sweep_findings(sweeps: Sequence[tuple[Axis, pd.DataFrame]], rows: pd.DataFrame) -> Section:
    """One line per (table, problem) of each one-option sweep at the N of its figure (`sweeps`:
    each axis with its points at that N, see reports.families.axis_points): relative bias from the
    first swept value to the last with CIs, the variance change between them (paired ratio over
    repetitions) and the cosine; with more than two values, every value's bias and variance
    relative to the first; the achieved behaviour KL, non-finite counts and heavy-tailed
    measurements where there are any."""
    items = []
    for axis, frame in sweeps:
        frame = frame.assign(order=[axis.values.index(v) for v in frame["value"]])
        frame = frame.sort_values(["table", "problem", "order"], kind="stable")
        firsts = frame.groupby(["table", "problem"], sort=False).head(1).set_index(["table", "problem"])["variant"]
        ratios = variance_ratios(rows, {(firsts[(r.table, r.problem)], r.variant) for r in frame.itertuples()})
        ratios = ratios.set_index(["problem", "batch_size", "x", "y"])
        for (_, problem), data in frame.groupby(["table", "problem"], sort=False):
            if len(data) < 2:
                continue
            first, last = data.iloc[0], data.iloc[-1]

            def ratio_to(point):
                key = (problem, point.batch_size, first.variant, point.variant)
                return ratios.loc[key] if key in ratios.index else None

            text = (f"{first.series} on {problem} (N={first.batch_size}), {axis.option} {first.value} → {last.value}: "
                    f"relative bias {_bias_trend(first, last)} from {fmt_metric(first, 'relative_bias')} to "
                    f"{fmt_metric(last, 'relative_bias')} while {_change(ratio_to(last), 'variance')}; cosine "
                    f"{fmt(first.cosine_mean)} → {fmt(last.cosine_mean)}")
            if len(data) > 2:
                each = [f"{p.value}: bias {fmt(p.relative_bias)}, variance ×"
                        + fmt(ratio.ratio if (ratio := ratio_to(p)) is not None else math.nan)
                        for p in data.itertuples()]
                text += f" (each {axis.option}: {'; '.join(each)})"
            if data["info_behaviour_kl"].notna().any():
                text += f"; achieved KL {' → '.join(fmt(k) for k in data['info_behaviour_kl'])}"
            if axis.kind == "kl" or data["nonfinite"].gt(0).any():
                counts = " → ".join(f"{p.nonfinite}/{p.estimates}" for p in data.itertuples())
                text += f"; non-finite estimates {counts}"
            heavy = [f"{p.value} {p.heavy_tailed}/{p.repetitions}" for p in data.itertuples() if p.heavy_tailed]
            if heavy:
                text += f"; heavy-tailed, so CIs too narrow, at {', '.join(heavy)} repetitions"
            invalid = [f"{p.value} ({p.untrustworthy_reasons})" for p in data.itertuples()
                       if getattr(p, "invalid", False)]
            if invalid:
                text += (f"; untrustworthy (over the non-finite limit or degenerate: the numbers are not the "
                         f"estimator's) at {', '.join(invalid)}")
            items.append(text + ".")
    heading = ("Sweeps of one option (at the N of each sweep's figure; variance change = paired ratio to the first "
               "value, 95% t-interval over repetitions)")
    return heading, items or ["No [[estimators]] table sweeps a single option."]


def coverage_findings(sweep: Sweep, by_table: pd.DataFrame) -> Section:
    """How much of the sweep the report covers, and the variants missing at batch sizes their
    [[estimators]] tables ask for (grouped by the missing N). `by_table`: which tables produce
    each variant (reports.families.variants_by_table)."""
    rows = sweep.rows
    items = [f"{len(rows)} of {sweep.planned_cells} cells finished"
             + (" (a partial sweep: every number covers the finished cells only)." if len(rows) < sweep.planned_cells
                else ".")]
    configured: dict[str, set[int]] = {}
    for variant, table in zip(by_table["variant"], by_table["table"]):
        configured.setdefault(variant, set()).update(sweep.tables[table].batch_sizes)
    missing: dict[tuple[int, ...], list[str]] = {}
    for variant in sweep.variants:
        measured = set(rows.loc[rows["variant"] == variant, "batch_size"])
        absent = tuple(sorted(configured.get(variant, set(sweep.batch_sizes)) - measured))
        if absent:
            missing.setdefault(absent, []).append(variant)
    for absent, variants in missing.items():
        items.append(f"Not measured at N = {', '.join(map(str, absent))} (does not apply, or not run): "
                     f"{'; '.join(variants)}.")
    return "Coverage", items


PAIRS = "pairs"  # the key of the configured pairs' section, which the page shows as tables (comparison_table)


def all_findings(sweep: Sweep, points: pd.DataFrame, ratios: pd.DataFrame, comparisons: pd.DataFrame,
                 rliable: RliableResults, headline: dict[str, int], sweeps: Sequence[tuple[Axis, pd.DataFrame]],
                 by_table: pd.DataFrame, family_list: Sequence[Family]) -> dict[str, Section]:
    """Every findings section by a short key (PAIRS: the configured pairs, from `comparisons`), in the order
    findings.txt gives them."""
    targets = dict(zip(points["variant"], points["target"]))
    return {
        "variance": variance_findings(ratios, sweep.settings.reference_variant, headline, targets, family_list),
        PAIRS: pair_findings(comparisons, rliable, sweep.settings.pairs),
        "mse": mse_findings(points, headline),
        "gradient_cosine": gradient_cosine_findings(points),
        "sweeps": sweep_findings(sweeps, sweep.rows),
        "bias": bias_findings(sweep.rows),
        "nonfinite": nonfinite_findings(points),
        "reliability": reliability_findings(sweep.rows),
        "coverage": coverage_findings(sweep, by_table),
    }


def findings_text(sections: Iterable[Section]) -> str:
    """The sections as plain text, for findings.txt."""
    return "\n\n".join(f"{heading}\n" + "\n".join(f"- {item}" for item in items) for heading, items in sections) + "\n"
