"""Aggregate statistics across problems with rliable (Agarwal et al. 2021): tasks are problems,
runs are repetitions, and each score is higher-is-better.

Only over genuinely independent runs: rliable's stratified bootstrap resamples runs, so with a handful
of repetitions, each the average of M batches, its intervals collapse to the spread of three nearly
equal numbers (often zero width) and say nothing. So the fixed-θ analysis is per estimator family
(reports.families), over the measurements with at least MIN_RUNS independently seeded repetitions
(a sweep gives a block of its [[estimators]] tables `repetitions = 10`, bench.config) on at least
MIN_TASKS problems at one N (`qualify`); a family short of that is listed with why. The score is the
MSE (bias² + variance) against the reference variant's, so a biased variant's variance cut does
not count as an improvement; below the rule, the report's intervals come from the M batches of each
measurement, and rliable over training runs is reports/training.py's.

rliable's stratified bootstrap draws from numpy's GLOBAL random state (it ignores `random_state`
in places), so every bootstrap call here runs inside `seeded_global_rng`: seeded from the
report seed, then the caller's global state is restored. Each variant (and each pair) is
bootstrapped in its own seeded call, so adding a variant to a sweep does not move the others'
intervals.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

from bench.metrics import trust_flags
from reports.results import ReportSettings, point_flags
from reports.verdict import Reason, point_ineligibility, reasons_text

MIN_RUNS = 10  # independently seeded repetitions of a measurement below which it is not an rliable run
MIN_TASKS = 3  # problems a family must share at one N (with MIN_RUNS repetitions each) to be aggregated across
STATISTICS = ("IQM", "Median", "Mean", "Optimality gap")  # the order of `_aggregates`' output
PROFILE_POINTS = 41  # thresholds τ of a performance profile


@dataclass(frozen=True)
class Score:
    """A higher-is-better score of one measurement."""

    column: str  # in `score_frame`
    title: str
    gamma: float  # optimality gap = gamma − mean(min(score, gamma)): how far below `gamma` on average
    gamma_meaning: str


# The one score of the fixed-θ analysis: aggregates, probability of improvement and profiles are on MSE (bias² +
# variance), since on variance alone a biased variant wins (the batch-mean baseline's O(1/N) bias buys it a smaller
# variance).
MSE_REDUCTION = Score("mse_reduction", "MSE reduction vs the reference (nats)", 0.0,
                      "γ = 0, the reference's MSE: the gap is how much worse than the reference a variant is on "
                      "average (0 if never worse)")


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run a block with numpy's global RNG seeded with `seed`, then restore the caller's state."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def score_frame(rows: pd.DataFrame, reference_variant: str) -> pd.DataFrame:
    """Rows → scores: [problem, variant, batch_size, repetition, mse_reduction], mse_reduction = −log(mse / the
    reference variant's mse at the same problem, N and repetition) (paired by common random numbers: every variant of
    a repetition saw the same trajectories). Non-finite scores become NaN, and so do the scores of measurements over
    the non-finite limit or degenerate (bench/metrics.py: their numbers are not the estimator's), and every variant's
    where the reference's is: rliable then leaves those runs out (see `invalid_notes`). Heavy-tailed measurements keep
    their scores (rliable resamples runs, not a measurement's own CI) but are never called a win (`ineligible_where`)."""
    key = ["problem", "batch_size", "repetition"]
    flagged = trust_flags(rows)
    rows = rows.assign(mse=rows["mse"].mask(flagged["excess_nonfinite"] | flagged["degenerate"]))
    reference = rows.loc[rows["variant"] == reference_variant, key + ["mse"]]
    paired = rows[key + ["variant", "mse"]].merge(reference, on=key, how="left", suffixes=("", "_reference"))
    with np.errstate(divide="ignore", invalid="ignore"):
        mse_reduction = -np.log(paired["mse"] / paired["mse_reference"])
    scores = paired.assign(mse_reduction=mse_reduction)[["problem", "variant", "batch_size", "repetition",
                                                          "mse_reduction"]]
    return scores.replace([np.inf, -np.inf], np.nan)


@dataclass(frozen=True)
class ScoreMatrices:
    """rliable's input for one score at one N."""

    score_dict: dict[str, np.ndarray]  # variant → [num_runs, num_tasks]; empty when rliable cannot work
    tasks: list[str]  # problems, the columns of every matrix
    notes: list[str]  # what was left out and why


def score_matrices(scores: pd.DataFrame, score: Score, batch_size: int, variants: Sequence[str]) -> ScoreMatrices:
    """One {variant: [num_runs, num_tasks]} dict from the score frame at batch size N.

    Problems where the score is undefined for every variant (e.g. cosine with ∇J = 0) are left
    out, then variants not measured on every remaining problem, then runs (repetitions) with a
    missing task, then variants left with < 2 runs. rliable needs ≥ 2 tasks (and runs to resample);
    otherwise the dict is empty and a note says why.
    """
    where = f"{score.title} at N={batch_size}"
    at_n = scores[scores["batch_size"] == batch_size]
    notes = []
    defined = at_n.groupby("problem")[score.column].apply(lambda s: s.notna().any())
    for problem in defined.index[~defined]:
        notes.append(f"{where}: problem {problem} left out (score undefined for every variant)")
    tasks = sorted(defined.index[defined])
    if len(tasks) < 2:
        notes.append(f"{where}: rliable aggregates across problems (tasks) and needs ≥ 2; "
                     f"only {len(tasks)} problem(s) have this score defined, so no aggregate statistics")
        return ScoreMatrices({}, tasks, notes)
    wide = at_n[at_n["problem"].isin(tasks)].pivot(index=["variant", "repetition"], columns="problem",
                                                   values=score.column).reindex(columns=tasks)
    score_dict, not_everywhere, few_runs = {}, [], []
    for variant in variants:
        if variant not in wide.index.get_level_values("variant"):
            continue
        per_run = wide.loc[variant]
        if per_run.isna().all().any():
            not_everywhere.append(variant)
            continue
        complete = per_run.dropna()
        if len(complete) < 2:
            few_runs.append(variant)
            continue
        if len(complete) < len(per_run):
            notes.append(f"{where}: {variant}: {len(per_run) - len(complete)} incomplete repetition(s) left out")
        score_dict[variant] = complete.to_numpy(dtype=float)
    # One note per reason: a sweep of many estimators, each on a few problems, leaves out dozens.
    if not_everywhere:
        notes.append(f"{where}: left out, not measured on every problem: {'; '.join(not_everywhere)}")
    if few_runs:
        notes.append(f"{where}: left out, fewer than 2 repetitions measured on every problem: {'; '.join(few_runs)}")
    if not score_dict:
        notes.append(f"{where}: no variant has ≥ 2 repetitions (runs) on every problem, so no aggregate statistics")
    return ScoreMatrices(score_dict, tasks, notes)


def _aggregates(gamma: float):
    """[num_runs, num_tasks] → [4] in STATISTICS order, with rliable's estimators."""
    def aggregate(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_median(scores),
                         metrics.aggregate_mean(scores), metrics.aggregate_optimality_gap(scores, gamma)])
    return aggregate


def aggregate_intervals(score_dict: Mapping[str, np.ndarray], gamma: float, reps: int, seed: int) -> pd.DataFrame:
    """IQM, median, mean and optimality gap (at `gamma`) of each variant's [num_runs, num_tasks]
    scores with 95% stratified-bootstrap (percentile) intervals over runs.
    → [variant, num_runs, statistic, estimate, lo, hi]"""
    records = []
    for variant, scores in score_dict.items():
        with seeded_global_rng(seed):
            points, intervals = rly.get_interval_estimates({variant: scores}, _aggregates(gamma), reps=reps)
        for i, statistic in enumerate(STATISTICS):
            records.append({"variant": variant, "num_runs": scores.shape[0], "statistic": statistic,
                            "estimate": points[variant][i], "lo": intervals[variant][0, i],
                            "hi": intervals[variant][1, i]})
    return pd.DataFrame(records, columns=["variant", "num_runs", "statistic", "estimate", "lo", "hi"])


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's probability of improvement of X over Y from [num_runs_x, num_tasks] and
    [num_runs_y, num_tasks] scores: per task, the fraction of (run of X, run of Y) pairs where X
    scores higher, ties counting half (Mann–Whitney U / (n_x n_y)), averaged over tasks.

    The same number as `rliable.metrics.probability_of_improvement` (tests/test_report.py checks
    it), which makes one scipy call per task: inside a 2000-resample bootstrap that overhead alone
    took ~20 s per pair, so a sweep's report took minutes; this vectorised form takes milliseconds.
    """
    x, y = scores_x[:, None, :], scores_y[None, :, :]  # [num_runs_x, 1, num_tasks], [1, num_runs_y, num_tasks]
    per_task = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(per_task.mean())


def improvement_probabilities(score_dict: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], reps: int,
                              seed: int) -> pd.DataFrame:
    """P(X > Y) (`probability_of_improvement`) for the pairs with both variants in `score_dict`,
    with rliable's 95% bootstrap intervals resampling each variant's runs independently.
    → [x, y, probability, lo, hi]"""
    records = []
    for x, y in pairs:
        if x not in score_dict or y not in score_dict:
            continue
        key = f"{x} > {y}"
        with seeded_global_rng(seed):
            points, intervals = rly.get_interval_estimates({key: [score_dict[x], score_dict[y]]},
                                                           probability_of_improvement, reps=reps)
        low, high = np.ravel(intervals[key])
        records.append({"x": x, "y": y, "probability": float(points[key]), "lo": low, "hi": high})
    return pd.DataFrame(records, columns=["x", "y", "probability", "lo", "hi"])


def profile_thresholds(score_dict: Mapping[str, np.ndarray]) -> np.ndarray:
    """PROFILE_POINTS thresholds τ spanning every score in the dict."""
    every = np.concatenate([m.ravel() for m in score_dict.values()])
    low, high = float(every.min()), float(every.max())
    pad = 0.05 * (high - low) or 0.5
    return np.linspace(low - pad, high + pad, PROFILE_POINTS)


def performance_profiles(score_dict: Mapping[str, np.ndarray], taus: np.ndarray, reps: int, seed: int) -> pd.DataFrame:
    """rliable's score distribution: the fraction of (run, task) scores above each τ, with 95%
    bootstrap intervals. → [variant, tau, fraction, lo, hi]"""
    frames = []
    for variant, scores in score_dict.items():
        with seeded_global_rng(seed):
            profiles, cis = rly.create_performance_profile({variant: scores}, taus, reps=reps)
        frames.append(pd.DataFrame({"variant": variant, "tau": taus, "fraction": profiles[variant],
                                    "lo": cis[variant][0], "hi": cis[variant][1]}))
    return concat(frames, ["variant", "tau", "fraction", "lo", "hi"])


INTERVAL_COLUMNS = ["score", "batch_size", "num_tasks", "gamma", "variant", "num_runs", "statistic", "estimate", "lo",
                    "hi"]
IMPROVEMENT_COLUMNS = ["score", "batch_size", "num_tasks", "x", "y", "probability", "lo", "hi"]
PROFILE_COLUMNS = ["score", "batch_size", "variant", "tau", "fraction", "lo", "hi"]


@dataclass(frozen=True)
class Qualification:
    """Whether a family enters the fixed-θ rliable analysis, where, and why not."""

    family: str
    batch_size: int | None  # the N of its aggregates; None when it does not qualify
    tasks: tuple[str, ...] = ()  # the problems (rliable's tasks)
    variants: tuple[str, ...] = ()  # compared: ≥ MIN_RUNS repetitions on every task, scored against the reference
    why: str = ""  # one line: why it does not qualify ("" when it does)
    left_out: tuple[str, ...] = ()  # its variants not compared, each with why

    @property
    def qualifies(self) -> bool:
        return not self.why


def run_counts(rows: pd.DataFrame) -> pd.Series:
    """(variant, problem, batch_size) → the number of independently seeded repetitions measured."""
    return rows.groupby(["variant", "problem", "batch_size"])["repetition"].nunique()


def qualify(title: str, variants: Sequence[str], runs: pd.Series, targets: Mapping[str, str],
            reference: str) -> Qualification:
    """The rule: a family is compared at the N where the most problems have ≥ MIN_RUNS repetitions of the reference
    variant and of one of its variants (ties: the largest N), if that is ≥ MIN_TASKS problems. Its variants scored
    are those with ≥ MIN_RUNS repetitions on every one of these problems and the reference's target (an MSE against
    another target, e.g. the natural gradient's, is not comparable with the reference's MSE against ∇J); the
    reference itself is the score's zero, not compared. `runs`: `run_counts`; `targets`: variant → target."""
    target = targets.get(reference)
    others = [v for v in variants if v != reference and v in targets]
    off_target = [v for v in others if targets[v] != target]
    candidates = [v for v in others if targets[v] == target]
    off_notes = tuple(f"{v} (its target is {targets[v]}, not {target})" for v in off_target)
    if not candidates:
        why = (f"its target is {', '.join(sorted({targets[v] for v in off_target}))}, not the reference's {target}: "
               "its MSE is not comparable with the reference's" if off_target else "no variant but the reference")
        return Qualification(title, None, why=why, left_out=off_notes)
    enough = runs[runs >= MIN_RUNS].reset_index()
    best: tuple[int, int, list[str]] = (0, 0, [])  # (number of problems, N, problems)
    for batch_size, at_n in enough.groupby("batch_size"):
        with_reference = set(at_n.loc[at_n["variant"] == reference, "problem"])
        tasks = sorted(with_reference & set(at_n.loc[at_n["variant"].isin(candidates), "problem"]))
        best = max(best, (len(tasks), int(batch_size), tasks))
    count, batch_size, tasks = best
    if count < MIN_TASKS:
        measured = runs[runs.index.get_level_values("variant").isin(candidates)]
        where = (f"{count} problem(s) ({', '.join(tasks)}) at N={batch_size}" if count else "no problem at any N")
        return Qualification(title, None, why=(
            f"has ≥ {MIN_RUNS} repetitions of a variant and of {reference} on {where}; rliable needs ≥ {MIN_TASKS} "
            f"problems at one N (it has {int(measured.max()) if len(measured) else 0} repetition(s) per measurement at "
            "most)"),
            left_out=off_notes)
    complete = [v for v in candidates
                if all(runs.get((v, problem, batch_size), 0) >= MIN_RUNS for problem in tasks)]
    short = tuple(f"{v} (< {MIN_RUNS} repetitions on some of its problems at N={batch_size})"
                  for v in candidates if v not in complete)
    return Qualification(title, batch_size, tuple(tasks), tuple(complete), left_out=off_notes + short)


FAMILY_INTERVAL_COLUMNS = ["family", *INTERVAL_COLUMNS]
FAMILY_IMPROVEMENT_COLUMNS = ["family", *IMPROVEMENT_COLUMNS]
FAMILY_PROFILE_COLUMNS = ["family", *PROFILE_COLUMNS]
WINNER_COLUMNS = ["family", "batch_size", "problems", "runs", "best", "best_iqm", "best_lo", "best_hi",
                  "higher_not_eligible", "eligible"]


@dataclass(frozen=True)
class RliableResults:
    """Every fixed-θ rliable number of a report, as tidy tables keyed by family (and score, N)."""

    qualifications: list[Qualification]  # every family, in family order
    intervals: pd.DataFrame  # FAMILY_INTERVAL_COLUMNS
    improvements: pd.DataFrame  # FAMILY_IMPROVEMENT_COLUMNS
    profiles: pd.DataFrame  # FAMILY_PROFILE_COLUMNS
    winners: pd.DataFrame  # WINNER_COLUMNS: per qualifying family, its best eligible variant by IQM; `eligible`: a
    # tuple of the eligible variants by IQM, highest first (the page's runner-up; not in rliable_families.csv)
    notes: list[str]  # what was left out and why


def _tag(matrices: ScoreMatrices, score: Score, batch_size: int) -> dict:
    return {"score": score.column, "batch_size": batch_size, "num_tasks": len(matrices.tasks)}


def aggregates_and_profiles(matrices: ScoreMatrices, score: Score, batch_size: int, reps: int,
                            seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """rliable's aggregate intervals and performance profiles for one score at one N, each tagged with (score,
    batch_size, num_tasks)."""
    tag = _tag(matrices, score, batch_size)
    intervals = aggregate_intervals(matrices.score_dict, score.gamma, reps, seed).assign(**tag, gamma=score.gamma)
    profiles = performance_profiles(matrices.score_dict, profile_thresholds(matrices.score_dict), reps, seed).assign(**tag)
    return intervals, profiles


def tagged_improvements(matrices: ScoreMatrices, score: Score, batch_size: int, pairs: Sequence[tuple[str, str]],
                        reps: int, seed: int, score_dict: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """P(X > Y) for `pairs` over `score_dict` (default: the matrices'), tagged as `aggregates_and_profiles`."""
    scores = matrices.score_dict if score_dict is None else score_dict
    return improvement_probabilities(scores, pairs, reps, seed).assign(**_tag(matrices, score, batch_size))


def ineligible_where(rows: pd.DataFrame) -> dict[str, dict[tuple[Reason, ...], list[str]]]:
    """Over rows at one N: variant → {its reasons (reports.verdict.ineligibility over its repetitions on a problem) →
    the problems where they hold}; {} for a variant that can be called a win on every problem. Heavy-tailed counts too:
    rliable's runs resample a heavy-tailed measurement, they do not make its MSE calibrated."""
    where: dict[str, dict[tuple[Reason, ...], list[str]]] = {}
    for flags in point_flags(rows).itertuples():  # rows of one N: a point is a (variant, problem)
        problem, variant, _ = flags.Index
        reasons = point_ineligibility(flags)
        problems = where.setdefault(variant, {})
        if reasons:
            problems.setdefault(reasons, []).append(problem)
    return where


def where_text(by_reasons: Mapping[tuple[Reason, ...], list[str]], every: list[str]) -> str:
    """`ineligible_where`'s entry of a variant as one line: "biased on every problem; heavy-tailed 1/10 on a"."""
    def on(problems: list[str]) -> str:
        return "on every problem" if problems == every else f"on {', '.join(problems)}"

    return "; ".join(f"{reasons_text(reasons)} {on(problems)}" for reasons, problems in by_reasons.items())


def rliable_analysis(rows: pd.DataFrame, family_list: Sequence, settings: ReportSettings) -> RliableResults:
    """For every family (`family_list`: reports.families.Family, in order) that qualifies (`qualify`): IQM, median,
    mean and optimality gap of the MSE reduction against the reference variant with stratified-bootstrap CIs over
    its repetitions, its performance profiles, and P(X > Y) on the MSE reduction of its best eligible variant (the
    highest IQM among those `ineligible_where` clears) over each other variant and the reference, and of the configured
    pairs inside it. Families that do not qualify are in `qualifications` with why."""
    reference = settings.reference_variant
    runs = run_counts(rows)
    targets = rows.drop_duplicates("variant").set_index("variant")["target"].to_dict()
    reps, seed = settings.bootstrap_reps, settings.seed
    qualifications, intervals, improvements, profiles, winners, notes = [], [], [], [], [], []
    for family in family_list:
        q = qualify(family.title, family.variants, runs, targets, reference)
        qualifications.append(q)
        if not q.qualifies:
            continue
        at = rows[rows["problem"].isin(q.tasks) & (rows["batch_size"] == q.batch_size)
                  & rows["variant"].isin([*q.variants, reference])]
        notes += [f"{family.title}: {note}" for note in invalid_notes(at)]
        matrices = score_matrices(score_frame(at, reference), MSE_REDUCTION, q.batch_size, q.variants)
        notes += [f"{family.title}: {note}" for note in matrices.notes]
        if not matrices.score_dict:
            continue
        interval, profile = aggregates_and_profiles(matrices, MSE_REDUCTION, q.batch_size, reps, seed)
        why, every = ineligible_where(at), sorted(set(at["problem"]))
        iqm = interval[interval["statistic"] == STATISTICS[0]].sort_values("estimate", ascending=False, kind="stable")
        eligible = [v for v in iqm["variant"] if not why.get(v)]
        best = eligible[0] if eligible else None
        higher = list(iqm["variant"])[:list(iqm["variant"]).index(best)] if best else list(iqm["variant"])
        # P(X > Y) of the best over the rest and over the reference (its score is 0 in every run by definition)
        with_reference = {**matrices.score_dict, reference: np.zeros_like(next(iter(matrices.score_dict.values())))}
        pairs = [(best, v) for v in [*iqm["variant"], reference] if best and v != best]
        pairs += [p for p in settings.pairs if p not in pairs and all(v in with_reference for v in p)]
        improvement = tagged_improvements(matrices, MSE_REDUCTION, q.batch_size, pairs, reps, seed, with_reference)
        tag = {"family": family.title}
        intervals.append(interval.assign(**tag))
        profiles.append(profile.assign(**tag))
        improvements.append(improvement.assign(**tag))
        top = iqm[iqm["variant"] == best].iloc[0] if best else None
        winners.append(pd.DataFrame([{
            "family": family.title, "batch_size": q.batch_size, "problems": "; ".join(matrices.tasks),
            "runs": int(iqm["num_runs"].min()), "best": best or "",
            "best_iqm": top.estimate if best else np.nan, "best_lo": top.lo if best else np.nan,
            "best_hi": top.hi if best else np.nan,
            "higher_not_eligible": "; ".join(f"{v} ({where_text(why[v], every)})" for v in higher),
            "eligible": tuple(eligible)}]))
    return RliableResults(qualifications, concat(intervals, FAMILY_INTERVAL_COLUMNS),
                          concat(improvements, FAMILY_IMPROVEMENT_COLUMNS), concat(profiles, FAMILY_PROFILE_COLUMNS),
                          concat(winners, WINNER_COLUMNS), notes)


def invalid_notes(rows: pd.DataFrame) -> list[str]:
    """One note per N naming the (variant, problem) measurements score_frame blanked as untrustworthy."""
    flagged = trust_flags(rows)
    invalid = flagged[flagged["excess_nonfinite"] | flagged["degenerate"]]
    return [f"N={batch_size}: scores left out as untrustworthy (over the non-finite limit or degenerate): "
            + "; ".join(f"{variant} on {problem}" for (variant, problem), _ in group.groupby(["variant", "problem"]))
            for batch_size, group in invalid.groupby("batch_size", sort=True)]


def concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Tables stacked with a fixed column order (also when there are none)."""
    frames = [frame for frame in frames if not frame.empty]  # pandas deprecates concatenating empty frames
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
