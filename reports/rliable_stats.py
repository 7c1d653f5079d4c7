"""Aggregate statistics across problems with rliable (Agarwal et al. 2021): tasks are problems,
runs are repetitions, and each score is higher-is-better.

Only over genuinely independent runs: rliable's stratified bootstrap resamples runs, so with a handful
of repetitions, each the average of M batches, its intervals collapse to the spread of three nearly
equal numbers (often zero width) and say nothing. The fixed-θ analysis therefore runs only when the
sweep has at least MIN_RUNS independently seeded repetitions; below that the report's intervals come
from the M batches of each measurement, and rliable is left to training runs (reports/training.py).

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
from reports.results import ReportSettings

MIN_RUNS = 10  # independent repetitions below which the fixed-θ rliable analysis is not run
STATISTICS = ("IQM", "Median", "Mean", "Optimality gap")  # the order of `_aggregates`' output
LARGEST_BATCH_SIZES = 3  # rliable statistics at the sweep's largest few N; each costs seconds of bootstrap
PROFILE_POINTS = 41  # thresholds τ of a performance profile


@dataclass(frozen=True)
class Score:
    """A higher-is-better score of one measurement."""

    column: str  # in `score_frame`
    title: str
    gamma: float  # optimality gap = gamma − mean(min(score, gamma)): how far below `gamma` on average
    gamma_meaning: str


COSINE = Score("cosine_mean", "cosine to the true gradient", 1.0,
               "γ = 1, a perfectly aligned estimate: the gap is the mean shortfall from cosine 1")
VARIANCE_REDUCTION = Score("variance_reduction", "variance reduction vs the reference (nats)", 0.0,
                           "γ = 0, the reference's variance: the gap is how much worse than the reference "
                           "a variant is on average (0 if never worse)")
MSE_REDUCTION = Score("mse_reduction", "MSE reduction vs the reference (nats)", 0.0,
                      "γ = 0, the reference's MSE: the gap is how much worse than the reference a variant is on "
                      "average (0 if never worse)")
# Probability of improvement and profiles on MSE (bias² + variance): on variance alone a biased variant wins.
SCORES = (COSINE, MSE_REDUCTION)


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
    """Rows → scores: [problem, variant, batch_size, repetition, cosine_mean, variance_reduction, mse_reduction],
    variance_reduction = −log(variance_trace / the reference variant's variance_trace at the same
    problem, N and repetition) (paired by common random numbers), mse_reduction the same of mse. Non-finite scores become NaN, and so
    do the scores of measurements over the non-finite limit or degenerate (bench/metrics.py: their numbers
    are not the estimator's), and the variance reduction of every variant where the reference's is: rliable
    then leaves those runs out (see `invalid_notes`). Heavy-tailed measurements keep their scores: rliable
    resamples runs, it does not use a measurement's own CIs."""
    key = ["problem", "batch_size", "repetition"]
    flagged = trust_flags(rows)
    invalid = flagged["excess_nonfinite"] | flagged["degenerate"]
    rows = rows.assign(variance_trace=rows["variance_trace"].mask(invalid), mse=rows["mse"].mask(invalid),
                       cosine_mean=rows["cosine_mean"].mask(invalid))
    reference = rows.loc[rows["variant"] == reference_variant, key + ["variance_trace", "mse"]]
    paired = rows[key + ["variant", "variance_trace", "mse", "cosine_mean"]].merge(
        reference, on=key, how="left", suffixes=("", "_reference"))
    with np.errstate(divide="ignore", invalid="ignore"):
        reduction = -np.log(paired["variance_trace"] / paired["variance_trace_reference"])
        mse_reduction = -np.log(paired["mse"] / paired["mse_reference"])
    scores = paired.assign(variance_reduction=reduction, mse_reduction=mse_reduction)[
        ["problem", "variant", "batch_size", "repetition", "cosine_mean", "variance_reduction", "mse_reduction"]]
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
class RliableResults:
    """Every rliable number of a report, as tidy tables keyed by score (column name) and N."""

    batch_sizes: list[int]
    intervals: pd.DataFrame  # INTERVAL_COLUMNS
    improvements: pd.DataFrame  # IMPROVEMENT_COLUMNS
    profiles: pd.DataFrame  # PROFILE_COLUMNS, variance reduction only
    notes: list[str]  # what was left out and why


def rliable_tables(matrices: ScoreMatrices, score: Score, batch_size: int, pairs: Sequence[tuple[str, str]],
                   reps: int, seed: int, with_profiles: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """rliable's three answers for one score at one N, each tagged with (score, batch_size, num_tasks): the
    aggregate intervals, P(X > Y) for `pairs`, and (if `with_profiles`) the performance profiles (else empty)."""
    tag = {"score": score.column, "batch_size": batch_size, "num_tasks": len(matrices.tasks)}
    intervals = aggregate_intervals(matrices.score_dict, score.gamma, reps, seed).assign(**tag, gamma=score.gamma)
    improvements = improvement_probabilities(matrices.score_dict, pairs, reps, seed).assign(**tag)
    profiles = (performance_profiles(matrices.score_dict, profile_thresholds(matrices.score_dict), reps, seed)
                .assign(**tag) if with_profiles else pd.DataFrame(columns=PROFILE_COLUMNS))
    return intervals, improvements, profiles


def rliable_analysis(rows: pd.DataFrame, variants: Sequence[str], settings: ReportSettings) -> RliableResults:
    """Aggregate intervals and probabilities of improvement of every score, and performance
    profiles of MSE reduction, at the sweep's LARGEST_BATCH_SIZES largest N, when the sweep has at least
    MIN_RUNS repetitions (else empty tables and a note saying why). The tasks are the problems the reference
    variant was measured on (the reductions are relative to it; a problem only some estimators apply to would
    otherwise leave out every variant)."""
    reference = settings.reference_variant
    runs = int(rows["repetition"].nunique())
    if runs < MIN_RUNS:
        return RliableResults([], concat([], INTERVAL_COLUMNS), concat([], IMPROVEMENT_COLUMNS),
                              concat([], PROFILE_COLUMNS),
                              [f"not run: the sweep has {runs} independent repetition(s) per measurement and rliable "
                               f"needs at least {MIN_RUNS} (its bootstrap resamples repetitions; over {runs} nearly "
                               "equal averages of M batches its intervals would have almost no width and mean "
                               "nothing). Every interval in this report is from the M batches of a measurement "
                               "instead; set repetitions ≥ 10 in the config for rliable aggregates."])
    with_reference = set(rows.loc[rows["variant"] == reference, "problem"])
    scores = score_frame(rows[rows["problem"].isin(with_reference)], reference)
    batch_sizes = sorted(int(n) for n in rows["batch_size"].unique())[-LARGEST_BATCH_SIZES:]
    reps, seed = settings.bootstrap_reps, settings.seed
    intervals, improvements, profiles = [], [], []
    notes = [f"problem {problem} left out: the reference variant {reference} was not measured on it"
             for problem in sorted(set(rows["problem"]) - with_reference)]
    notes += invalid_notes(rows[rows["problem"].isin(with_reference) & rows["batch_size"].isin(batch_sizes)])
    for score in SCORES:
        for batch_size in batch_sizes:
            matrices = score_matrices(scores, score, batch_size, variants)
            notes += matrices.notes
            if not matrices.score_dict:
                continue
            interval, improvement, profile = rliable_tables(matrices, score, batch_size, settings.pairs, reps, seed,
                                                            with_profiles=score is MSE_REDUCTION)
            intervals.append(interval)
            improvements.append(improvement)
            profiles.append(profile)
            notes += [f"{score.title} at N={batch_size}: pair {x} vs {y} left out (a variant is missing)"
                      for x, y in settings.pairs if x not in matrices.score_dict or y not in matrices.score_dict]
    return RliableResults(batch_sizes, concat(intervals, INTERVAL_COLUMNS), concat(improvements, IMPROVEMENT_COLUMNS),
                          concat(profiles, PROFILE_COLUMNS), notes)


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
