"""`pgvar report`: one sweep's results → `index.html` (one self-contained file, figures embedded)
plus the tables as CSV and the findings as text.

    build_report(Path("results/default"), Path("reports/out"))

Pipeline: load and check the rows (`reports.results`), aggregate repetitions, compute paired
variance ratios, rliable statistics across problems (`reports.rliable_stats`) and findings
(`reports.findings`), write the tables, then draw (`reports.figures`) and assemble the page
(`reports.page`). Every number in the page is also in a CSV, and two builds from the same results
write byte-identical CSVs and findings.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from reports import figures, page
from reports.findings import Section, all_findings, findings_text, fmt_ci, fmt_metric
from reports.results import (
    BIAS_TEST_LEVEL,
    Sweep,
    aggregate_repetitions,
    at_headline,
    headline_batch_sizes,
    load_sweep,
    summary_table,
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
    points = aggregate_repetitions(sweep.rows)
    headline = headline_batch_sizes(points)
    comparisons = [(v, settings.reference_variant) for v in sweep.variants[1:]] + list(settings.pairs)
    ratios = variance_ratios(sweep.rows, comparisons)
    rliable = rliable_analysis(sweep.rows, sweep.variants, settings)
    sections = all_findings(sweep, points, ratios, rliable, headline)
    summary = summary_table(points)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "summary.csv": summary, "aggregated.csv": points, "variance_ratios.csv": ratios,
        "rliable_intervals.csv": rliable.intervals, "probability_of_improvement.csv": rliable.improvements,
        "performance_profiles.csv": rliable.profiles,
    }
    for name, frame in tables.items():
        frame.to_csv(out_dir / name, index=False)
    (out_dir / "findings.txt").write_text(findings_text(sections), encoding="utf-8")

    style = figures.variant_style(sweep.variants)
    with figures.report_style():
        body = [
            ("sweep", "Sweep", _sweep_section(sweep)),
            ("reading", "Reading the intervals", _reading_section(sweep)),
            ("findings", "Findings", _findings_section(sections)),
            ("measurements", "Measurements",
             _measurements_section(points, headline, style, settings.reference_variant)),
            ("rliable", "Across problems (rliable)", _rliable_section(rliable, style, sweep)),
            ("summary", "Summary tables", _summary_section(summary, headline, list(tables))),
        ]
    index = out_dir / "index.html"
    index.write_text(page.page(f"pgvar report: sweep {sweep.name}", body), encoding="utf-8")
    return index


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


def _figure_block(title: str, fig: Figure, caption: str) -> str:
    return page.heading(title) + page.figure(figures.png_data_uri(fig), title, caption)


SINGLE_CI = ("Points: mean over repetitions; error bars: the 95% CI of a single repetition, averaged over "
             "repetitions. One panel per problem, one colour and marker per variant.")


def _measurements_section(points: pd.DataFrame, headline: dict[str, int], style: figures.VariantStyle,
                          reference: str) -> str:
    def against_n(metric: str, ylabel: str, log_y: bool, **options) -> Figure:
        return figures.metric_vs_batch_size(points, metric, ylabel, style, log_y=log_y, **options)

    # A list, not a generator of figures: each figure is encoded (and closed) before the next is drawn.
    return "".join([
        _figure_block(
            "Variance", against_n("variance_trace", "variance  tr Cov(ĝ)", True, one_over_n_from=reference),
            "Total variance tr Cov(ĝ) of one gradient estimate against the batch size N, log-log (lower is better). "
            f"{SINGLE_CI} CI: jackknife on the log scale. Dashed: ∝ 1/N through {reference}'s value at the smallest "
            "N, the slope of any average of N independent per-trajectory terms."),
        _figure_block(
            "Cosine to the true gradient", against_n("cosine_mean", "mean cos(ĝ, ∇J)", False),
            "Mean cosine between an estimate and the exact gradient ∇J (1 = aligned, 0 = uninformative). "
            f"{SINGLE_CI} CI: t interval."),
        _figure_block(
            "Pairwise cosine", against_n("pairwise_cosine", "mean cos(ĝ, ĝ′)", False),
            "Mean cosine between two independent estimates (Ilyas et al. 2020): how reproducible the direction is, "
            f"measurable without ∇J. {SINGLE_CI} CI: jackknife."),
        _figure_block(
            "Relative bias", against_n("relative_bias", "‖E ĝ − ∇J‖ / ‖∇J‖", False),
            "Relative bias, noise-corrected and clamped at 0 (0 = no detectable bias). "
            f"{SINGLE_CI} CI: normal interval for the squared bias, square-rooted."),
        _figure_block(
            "Signal-to-noise ratio", against_n("snr", "SNR  ‖∇J‖² / tr Cov(ĝ)", True),
            f"‖∇J‖² / tr Cov(ĝ), log-log (higher is better). {SINGLE_CI}"),
        _figure_block(
            "Bias–variance decomposition", figures.bias_variance_bars(points, headline, style),
            "Per problem at the largest N where the most variants were measured: bias² (mean of bias_norm² over "
            "repetitions) and variance stacked; their total is the MSE, which the tick marks as measured "
            "(they agree exactly unless the bias estimate was clamped at 0). Labels: MSE and bias²'s share."),
        _figure_block(
            "Cost: time", against_n("seconds_per_estimate", "seconds per estimate", True),
            "Wall-clock seconds per gradient estimate (sampling and estimating), mean over repetitions; machine "
            "dependent and noisy, compare variants within a panel."),
        _figure_block(
            "Cost: environment steps", against_n("env_steps_per_estimate", "environment steps per estimate", True),
            "Environment steps per gradient estimate, mean over repetitions (variants sharing trajectories "
            "coincide)."),
    ])


def _rliable_section(rliable: RliableResults, style: figures.VariantStyle, sweep: Sweep) -> str:
    settings = sweep.settings
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
        "Variants ranked by MSE (bias² + variance) per problem at the largest N where the most variants were "
        "measured; values are means over repetitions with single-repetition 95% CIs. Every N is in summary.csv. "
        f"Files next to this page: {', '.join(files)}, findings.txt.", "note")
    header = ["rank", "variant", "MSE", "variance", "relative bias", "cosine", "bias test rejects",
              "declared", "heavy-tailed", "non-finite"]
    for problem, at_n in at_headline(summary, headline).groupby("problem", sort=True):
        body += page.heading(f"{problem} (N={headline[problem]})") + page.table(header, [
            ["" if pd.isna(r.mse_rank) else int(r.mse_rank), r.variant,
             *(fmt_metric(r, metric) for metric in ("mse", "variance_trace", "relative_bias", "cosine_mean")),
             f"{r.bias_rejections}/{r.repetitions}", "unbiased" if r.declared_unbiased else "biased",
             f"{r.heavy_tailed}/{r.repetitions}", f"{r.nonfinite} of {r.reps * r.repetitions}"]
            for r in at_n.itertuples()])
    return body
