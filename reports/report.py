"""`pgvar report`: one sweep's results → `index.html` (one self-contained file, figures embedded)
plus the tables as CSV and the findings as text.

    build_report(Path("results/default"), Path("reports/out"))

Pipeline: load and check the rows (`reports.results`), match them to the config's [[estimators]]
tables to group variants into estimator families and one-option sweeps (`reports.families`),
aggregate repetitions, compute paired variance ratios, rliable statistics across problems
(`reports.rliable_stats`) and findings (`reports.findings`), write the tables, then draw
(`reports.figures`) and assemble the page (`reports.page`). Every number in the page is also in
a CSV, and two builds from the same results write byte-identical CSVs and findings.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from reports import figures, page
from reports.families import (
    Axis,
    Family,
    axis_points,
    families,
    memberships,
    sweep_axes,
    table_labels,
    variants_by_table,
)
from reports.findings import Section, all_findings, findings_text, fmt, fmt_ci, fmt_metric
from reports.results import (
    BIAS_TEST_LEVEL,
    INFO_NUMBERS,
    Sweep,
    aggregate_repetitions,
    at_headline,
    headline_batch_sizes,
    load_sweep,
    summary_table,
    target_order,
    variance_ratios,
)
from reports.rliable_stats import (
    COSINE,
    SCORES,
    STATISTICS,
    VARIANCE_REDUCTION,
    RliableResults,
    rliable_analysis,
)

PROVENANCE_COLUMNS = ("git_commit", "pgvar_version", "python_version", "torch_version", "numpy_version",
                      "pandas_version", "gymnasium_version")
REPORT_LIBRARIES = ("rliable", "seaborn", "matplotlib", "pandas")


FINGERPRINT_FILE = ".fingerprint"


def results_fingerprint(results_dir: Path) -> str:
    """What the report depends on: every cell file (name, size, mtime; cells are written once,
    atomically), the sweep config, and the source of the report code itself."""
    digest = hashlib.sha256()
    for path in sorted(Path(results_dir).glob("*")):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def build_report(results_dir: Path, out_dir: Path, force: bool = False) -> tuple[Path, bool]:
    """Write `out_dir`/index.html, the CSV tables and findings.txt for the sweep in `results_dir`.
    Returns (index path, whether it was rebuilt): a report whose results and code are unchanged is
    reused unless `force`. Raises ConfigError (one line) for a missing or empty results folder."""
    out_dir = Path(out_dir)
    index, stamp = out_dir / "index.html", out_dir / FINGERPRINT_FILE
    fingerprint = results_fingerprint(results_dir) if Path(results_dir).is_dir() else ""
    if not force and fingerprint and index.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        return index, False
    write_report(Path(results_dir), out_dir)
    stamp.write_text(fingerprint)
    return index, True


def write_report(results_dir: Path, out_dir: Path) -> Path:
    """Build every table, finding and figure of the report and write them to `out_dir`."""
    sweep = load_sweep(Path(results_dir))
    settings = sweep.settings
    by_table = variants_by_table(sweep.rows, memberships(sweep.tables))
    family_list = families(sweep.tables, by_table, sweep.variants)
    family_of = {variant: family.title for family in family_list for variant in family.variants}
    points = aggregate_repetitions(sweep.rows)
    points.insert(1, "family", points["variant"].map(family_of))
    headline = headline_batch_sizes(points)
    labels = table_labels(sweep.tables, by_table)
    sweeps = [(axis, axis_points(points, by_table, axis, labels)) for axis in sweep_axes(sweep.tables)]
    sweeps = [(axis, frame) for axis, frame in sweeps if len(frame)]
    sweeps_at_headline = [(axis, at_headline(frame, headline_batch_sizes(frame))) for axis, frame in sweeps]
    comparisons = [(v, settings.reference_variant) for v in sweep.variants[1:]] + list(settings.pairs)
    ratios = variance_ratios(sweep.rows, comparisons)
    rliable = rliable_analysis(sweep.rows, sweep.variants, settings)
    sections = all_findings(sweep, points, ratios, rliable, headline, sweeps_at_headline, by_table, family_list)
    summary = summary_table(points)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "summary.csv": summary, "aggregated.csv": points, "variance_ratios.csv": ratios,
        "sweeps.csv": pd.concat([frame[SWEEP_CSV_COLUMNS] for _, frame in sweeps], ignore_index=True)
        if sweeps else pd.DataFrame(columns=SWEEP_CSV_COLUMNS),
        "rliable_intervals.csv": rliable.intervals, "probability_of_improvement.csv": rliable.improvements,
        "performance_profiles.csv": rliable.profiles,
    }
    for name, frame in tables.items():
        frame.to_csv(out_dir / name, index=False)
    (out_dir / "findings.txt").write_text(findings_text(sections), encoding="utf-8")

    with figures.report_style():
        body = [
            ("sweep", "Sweep", _sweep_section(sweep)),
            ("reading", "Reading the intervals", _reading_section(sweep)),
            ("findings", "Findings", _findings_section(sections)),
            ("measurements", "Measurements by estimator family", _measurements_section(points, family_list)),
            ("sweeps", "Sweeps of one option", _sweeps_section(sweeps_at_headline)),
            ("rliable", "Across problems (rliable)", _rliable_section(rliable, sweep)),
            ("summary", "Summary tables", _summary_section(summary, headline, list(tables))),
        ]
    index = out_dir / "index.html"
    index.write_text(page.page(f"pgvar report: sweep {sweep.name}", body), encoding="utf-8")
    return index


SWEEP_CSV_COLUMNS = [
    "axis", "series", "table", "value", "x", "problem", "batch_size", "variant", "target", "declared_unbiased",
    *(f"{m}{end}" for m in ("variance_trace", "relative_bias", "cosine_mean") for end in ("", "_lo", "_hi")),
    "bias_rejections", "heavy_tailed", "repetitions", "nonfinite", "estimates", "nonfinite_fraction",
    *(f"info_{key}" for key in INFO_NUMBERS)]


def _distinct(rows: pd.DataFrame, column: str) -> str:
    values = sorted(str(v) for v in rows[column].unique())
    return ", ".join(values) + (" (MIXED: rows come from different code or environments)" if len(values) > 1 else "")


def _sweep_section(sweep: Sweep) -> str:
    rows, settings = sweep.rows, sweep.settings
    facts = [
        ("cells", f"{len(rows)} finished of {sweep.planned_cells} planned"),
        ("problems (rliable tasks)", "; ".join(sweep.problems)),
        ("variants", "; ".join(sweep.variants)),
        ("reference variant", settings.reference_variant),
        ("batch sizes N", ", ".join(map(str, sweep.batch_sizes))),
        ("batches per measurement M", _distinct(rows, "reps")),
        ("repetitions R (rliable runs)", str(rows["repetition"].nunique())),
        ("bootstrap", f"{settings.bootstrap_reps} resamples, seed {settings.seed}"),
        *((column.replace("_", " "), _distinct(rows, column)) for column in PROVENANCE_COLUMNS if column in rows),
        ("report made with", ", ".join(f"{lib} {version(lib)}" for lib in REPORT_LIBRARIES)),
    ]
    return page.table([], facts)


def _reading_section(sweep: Sweep) -> str:
    repetitions = sweep.rows["repetition"].nunique()
    return page.paragraph(
        "Every [low, high] is a 95% confidence interval. A measurement is M batches of N trajectories at a fixed θ, "
        f"repeated R = {repetitions} times with independent seeds. In the figures, tables and per-problem findings a "
        "value is the mean over the R repetitions and its interval is the 95% CI of a single repetition, averaged "
        "over the repetitions: the uncertainty of one measurement (the mean of R is about √R times more precise). "
        "Variance ratios between variants are paired per repetition (every variant saw the same trajectories) and "
        "carry t-intervals over the repetitions. The rliable intervals are stratified-bootstrap intervals over "
        "repetitions. All intervals are normal approximations in M: on measurements flagged heavy-tailed they are "
        f"too narrow. The bias test rejects at p < {BIAS_TEST_LEVEL:g}.")


def _findings_section(sections: list[Section]) -> str:
    body = page.paragraph("Generated from the numbers of this report; also in findings.txt.", "note")
    return body + "".join(page.heading(heading) + page.bullet_list(items) for heading, items in sections)


SINGLE_CI = ("Points: mean over repetitions; error bars: the 95% CI of a single repetition, averaged over "
             "repetitions.")

FAMILY_RULE = (
    "Variants are grouped into families, one figure each: the [[estimators]] tables of one estimator that sweep "
    "the same options form a family, and a table sweeping nothing joins its estimator's first family (or forms its "
    "own); a variant belongs to the first table that produces it. Each variant's bias and cosine are measured "
    "against its own target (∇J unless the table says otherwise), and colours are only comparable within a family.")


def _measurements_section(points: pd.DataFrame, family_list: list[Family]) -> str:
    body = page.paragraph(FAMILY_RULE) + page.table(["family", "target", "variants", "problems", "N"], [
        [family.title, ", ".join(sorted(set(of["target"]), key=target_order)), "; ".join(family.variants),
         "; ".join(sorted(set(of["problem"]))), ", ".join(map(str, sorted(set(of["batch_size"]))))]
        for family in family_list if len(of := points[points["family"] == family.title])])
    blocks = []  # each figure is encoded (and closed) before the next is drawn
    for family in family_list:
        of_family = points[points["family"] == family.title]
        style = figures.variant_style(family.variants)
        targets = sorted(set(of_family["target"]), key=target_order)
        blocks.append(page.heading(family.title) + page.figure(
            figures.png_data_uri(figures.family_figure(of_family, style)), f"{family.title}: against N",
            f"{family.title}, against the batch size N (log axis), a row per problem. Left: total variance "
            f"tr Cov(ĝ), log-log (lower is better), CI jackknife on the log scale; dashed: ∝ 1/N through the first "
            "variant's value at its smallest N, the slope of any average of N independent per-trajectory terms. "
            f"Middle: relative bias ‖E ĝ − target‖/‖target‖ against the variant's own target ({', '.join(targets)}), "
            "noise-corrected and clamped at 0 (0 = no detectable bias), CI a normal interval for the squared bias, "
            "square-rooted; hollow markers: declared biased there. Right: mean cosine between an estimate and the "
            f"target (1 = aligned), t interval. {SINGLE_CI}"))
        headline = headline_batch_sizes(of_family)
        blocks.append(page.figure(
            figures.png_data_uri(figures.bias_variance_bars(of_family, headline, style)),
            f"{family.title}: bias² and variance",
            f"{family.title} per problem at the largest N where the most of its variants were measured: bias² (mean of "
            "bias_norm² over repetitions) and variance stacked; their total is the MSE against each variant's "
            "target, which the tick marks as measured (they agree exactly unless the bias estimate was clamped at "
            "0). Labels: MSE and bias²'s share."))
    return body + "".join(blocks)


AXIS_CAPTIONS = {
    "critic": "What to look for: a value baseline's critic error becomes variance, not bias — reinforce "
              "baseline=value stays unbiased with an exact, noisy or independently fitted critic, and only a critic "
              "fitted on the batch it is used on (fitted_same_batch) biases it; in actor-critic the same error "
              "becomes bias, growing with the noise. dpg: a fitted Q biases the gradient through its error in ∇ₐQ.",
    "lambda": "What to look for: GAE(λ) trades bias for variance. At λ = 0 (one-step TD) the advantage leans on the "
              "critic, so a fitted critic's error becomes bias, and the variance is lowest; at λ = 1 it is REINFORCE "
              "with a value baseline, unbiased for a critic fitted on independent trajectories, with the most "
              "variance.",
    "behaviour": "What to look for: data from a behaviour policy π_b at a requested mean per-step KL(π_θ‖π_b). "
                 "Importance sampling (is-trajectory, is-per-decision) stays unbiased, but its variance grows with "
                 "the KL and, for the whole-trajectory ratio, exponentially with KL × horizon; overflowing ratios "
                 "give non-finite estimates (counted, never dropped). is-first-order ignores the state-distribution "
                 "ratio and ppo-clip clips the ratio: both are biased, increasingly with the KL. The last row checks "
                 "the behaviour policy hit the requested KL (dashed).",
    "baseline": "What to look for: a baseline independent of the trajectory it weights (rloo, a constant, an exact "
                "value) cuts variance without bias; the batch-fitted ones (batch_mean, optimal, optimal_per_param) add "
                "an O(1/N) bias.",
    "normalize": "What to look for: GRPO's group baseline shrinks the gradient by (1 − 1/G) with normalize=none; "
                 "normalize=std divides by the group's standard deviation, which also turns its direction (cosine).",
}


def _sweeps_section(sweeps: list[tuple[Axis, pd.DataFrame]]) -> str:
    if not sweeps:
        return page.paragraph("No [[estimators]] table of this sweep sweeps a single option.", "note")
    body = page.paragraph(
        "Every [[estimators]] table that sweeps one option: each metric against the option's value (in config order; "
        "on a number axis when the values are numbers or kind:number), a column per problem at one N (the largest N "
        "where the most of the sweep's variants were measured), a line per table. Every N is in sweeps.csv; the "
        "one-line findings are under Findings.")
    blocks = []
    for axis, frame in sweeps:
        style = figures.variant_style(list(dict.fromkeys(frame.sort_values("table")["series"])))
        blocks.append(page.heading(axis.title) + page.figure(
            figures.png_data_uri(figures.sweep_figure(frame, axis, style)), f"sweep of {axis.option}",
            AXIS_CAPTIONS.get(axis.option, f"Each metric against {axis.option}.") + " Rows: variance tr Cov(ĝ) "
            "(log), relative bias against the variant's target with CIs (hollow markers: declared biased there), mean "
            "cosine to the target; for behaviour sweeps the fraction of non-finite estimates and the achieved KL. "
            f"{SINGLE_CI}"))
    return body + "".join(blocks)


def _rliable_section(rliable: RliableResults, sweep: Sweep) -> str:
    settings = sweep.settings
    compared = set(rliable.intervals["variant"])
    style = figures.variant_style([v for v in sweep.variants if v in compared])
    body = page.paragraph(
        f"rliable (Agarwal et al. 2021) across problems: tasks are the problems, runs the repetitions, at the "
        f"largest batch sizes N = {', '.join(map(str, rliable.batch_sizes))}. Intervals: 95% stratified bootstrap "
        f"over runs ({settings.bootstrap_reps} resamples, numpy seeded with {settings.seed}). Scores, higher is "
        f"better: (a) {COSINE.title}, cosine_mean; (b) {VARIANCE_REDUCTION.title}: −log(variance / "
        f"{settings.reference_variant}'s variance at the same problem, N and repetition); 1 nat is e ≈ 2.7× less "
        "variance, 0 is the reference's. IQM is the mean of the middle 50% of all run × problem scores. Optimality "
        f"gap (lower is better): for (a) {COSINE.gamma_meaning}; for (b) {VARIANCE_REDUCTION.gamma_meaning}.")
    if rliable.intervals.empty:
        body += page.paragraph("No aggregate statistics could be computed for this sweep:", "warning")
        return body + page.bullet_list(rliable.notes)
    for score in SCORES:
        intervals = rliable.intervals[rliable.intervals["score"] == score.column]
        if intervals.empty:
            continue
        body += page.heading(score.title.capitalize())
        iqm = intervals[intervals["statistic"] == STATISTICS[0]]
        body += page.paragraph(f"IQM [95% CI] of {score.title} per variant and N:")
        body += page.table(["variant", *(f"N={n}" for n in sorted(iqm["batch_size"].unique()))], [
            [variant, *(fmt_ci(r.estimate, r.lo, r.hi) for r in group.sort_values("batch_size").itertuples())]
            for variant, group in sorted(iqm.groupby("variant"), key=lambda g: style.variants.index(g[0]))])
        for batch_size, at_n in intervals.groupby("batch_size"):
            runs = sorted(set(at_n["num_runs"]))  # several values only when a partial sweep left a variant short
            runs_text = str(runs[0]) if len(runs) == 1 else f"{runs[0]}–{runs[-1]}"
            tasks = at_n["num_tasks"].iloc[0]
            body += page.figure(
                figures.png_data_uri(figures.interval_estimates(at_n, style, f"{score.title}, N={batch_size}")),
                f"{score.title} aggregates at N={batch_size}",
                f"{score.title} at N={batch_size}: IQM, median and mean (higher is better) and optimality gap (lower "
                f"is better) across {tasks} problems × {runs_text} repetitions; bars are 95% bootstrap CIs, ticks the "
                "point estimates.")
        if score is VARIANCE_REDUCTION:
            for batch_size, profile in rliable.profiles.groupby("batch_size"):
                body += page.figure(
                    figures.png_data_uri(figures.performance_profile(profile, style, f"{score.title}, τ")),
                    f"performance profile at N={batch_size}",
                    f"Performance profile at N={batch_size}: the fraction of (repetition, problem) scores above each "
                    "threshold τ, with 95% bootstrap bands; a curve further right is better. Dashed: τ = 0, the "
                    "reference.")
    body += page.heading("Probability of improvement") + page.paragraph(
        "P(X > Y): the probability that a run of X scores above a run of Y on the same problem (Mann–Whitney, "
        "averaged over problems; 0.5 = no difference), with 95% bootstrap CIs resampling each variant's runs.")
    improvements = rliable.improvements
    body += page.table(["X", "Y", "score", "N", "P(X > Y) [95% CI]"], [
        [r.x, r.y, r.score, r.batch_size, fmt_ci(r.probability, r.lo, r.hi)] for r in improvements.itertuples()
    ]) if len(improvements) else page.paragraph("None: no pairs configured, or they could not be compared.", "note")
    if rliable.notes:
        body += page.heading("Left out") + page.bullet_list(rliable.notes)
    return body


def _summary_section(summary: pd.DataFrame, headline: dict[str, int], files: list[str]) -> str:
    body = page.paragraph(
        "Variants ranked by MSE (bias² + variance) per problem and target at the largest N where the most variants "
        "were measured; values are means over repetitions with single-repetition 95% CIs. Every N is in summary.csv. "
        f"Files next to this page: {', '.join(files)}, findings.txt.", "note")
    header = ["target", "rank", "variant", "MSE", "variance", "relative bias", "cosine", "bias test rejects",
              "declared", "heavy-tailed", "non-finite", "s / estimate"]
    for problem, at_n in at_headline(summary, headline).groupby("problem", sort=True):
        body += page.heading(f"{problem} (N={headline[problem]})") + page.table(header, [
            [r.target, "" if pd.isna(r.mse_rank) else int(r.mse_rank), r.variant,
             *(fmt_metric(r, metric) for metric in ("mse", "variance_trace", "relative_bias", "cosine_mean")),
             f"{r.bias_rejections}/{r.repetitions}", "unbiased" if r.declared_unbiased else "biased",
             f"{r.heavy_tailed}/{r.repetitions}", f"{r.nonfinite} of {r.estimates}", fmt(r.seconds_per_estimate)]
            for r in at_n.itertuples()])
    return body
