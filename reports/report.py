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
import json
import math
import os
import secrets
import shutil
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from bench.progress import progress_bar
from envs.spec import ConfigError
from reports import figures, page
from reports import training as tr
from reports.families import (
    Axis,
    Family,
    axis_points,
    families,
    memberships,
    sweep_axes,
    table_labels,
    value_text,
    variants_by_table,
)
from reports.findings import (
    PAIRS,
    Reading,
    Section,
    all_findings,
    comparison_table,
    findings_text,
    fmt,
    fmt_ci,
    fmt_metric,
)
from reports.results import (
    BIAS_TEST_LEVEL,
    INFO_NUMBERS,
    ZERO_WIDTH_RTOL,
    Sweep,
    aggregate_repetitions,
    at_headline,
    headline_batch_sizes,
    load_sweep,
    summary_table,
    target_order,
    variance_ratios,
    zero_width_intervals,
)
from reports.verdict import Reason, fixed_theta_verdicts, reasons_text, relative_variance_table, verdict_csv
from reports.rliable_stats import (
    MIN_RUNS,
    MIN_TASKS,
    MSE_REDUCTION,
    STATISTICS,
    RliableResults,
    rliable_analysis,
    run_counts,
)

PROVENANCE_COLUMNS = ("git_commit", "pgvar_version", "python_version", "torch_version", "numpy_version",
                      "pandas_version", "gymnasium_version")
REPORT_LIBRARIES = ("rliable", "seaborn", "matplotlib", "pandas")


FINGERPRINT_FILE = ".fingerprint"
TABLE_FILES = ("verdict.csv", "relative_variance.csv", "comparisons.csv", "summary.csv", "aggregated.csv", "variance_ratios.csv", "sweeps.csv", "rliable_intervals.csv",
               "probability_of_improvement.csv", "performance_profiles.csv", "rliable_families.csv")
# Everything a build writes: an existing --out folder may hold only these (it is replaced whole). Add a new
# output file here, or rebuilding over a report that has it is refused as a folder of someone else's files.
REPORT_FILES = ("index.html", "findings.txt", *TABLE_FILES, FINGERPRINT_FILE)
# A report built with --training also writes these; an --out folder may hold them.
ALLOWED_FILES = (*REPORT_FILES, *tr.TRAINING_TABLES)
_BUILDING, _PREVIOUS = "building", "previous"  # .<out name>.<kind>-… beside the destination, while a build runs


def results_fingerprint(results_dir: Path) -> str:
    """What the report depends on: every entry of the results folder (a file's name, size and mtime: cells
    are written once, atomically; a folder's name: it is named as a warning), except the lock and the
    temporary files of a sweep still writing, and the source of the report code and of the store reader."""
    from bench import store

    digest = hashlib.sha256()
    try:
        for path in sorted(Path(results_dir).iterdir()):
            if path.name == store.LOCK_FILE or (path.name.startswith(".") and store.is_store_file(path.name)):
                continue
            stat = path.lstat()
            digest.update(f"{path.name}:{stat.st_mode}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    except OSError as err:
        raise ConfigError(f"{results_dir}: cannot list it ({err.strerror or err})") from None
    for source in [*sorted(Path(__file__).parent.glob("*.py")), Path(store.__file__)]:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def build_report(results_dir: Path, out_dir: Path, force: bool = False,
                 warn: Callable[[str], None] | None = None, training_dir: Path | None = None,
                 show_progress: bool = True) -> tuple[Path, bool]:
    """Write `out_dir`/index.html, the CSV tables and findings.txt for the sweep in `results_dir`.
    Returns (index path, whether it was rebuilt): a report whose results and code are unchanged is
    reused unless `force`. `warn` receives one line when files of the results folder were skipped, cells
    failed or stale cells were left out (the page shows them on its first screen).

    The report is built in a temporary folder beside `out_dir` and renamed into place, its fingerprint
    written last: a build that dies (killed, disk full) leaves the previous report whole, and nothing
    cut off is ever taken as up to date. Raises ConfigError (one line) for an unusable results folder
    or an `--out` that is a file, unwritable, inside (or holding) the results folder, or a folder of
    other files than a report's.

    `training_dir`: a training sweep's folder (`pgvar report --training`): the page gets a Training section and
    the out folder its tables (reports/training.py); without it the report is exactly the measurement report.
    `show_progress`: a bar of the build's stages (REPORT_STAGES) on a terminal, else a line every 20 s
    (`bench.progress`)."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out = _check_out(results_dir, out_dir)
    if training_dir is not None:
        training_dir = Path(training_dir)
        _check_out(training_dir, out_dir, "--training")
    index = out_dir / "index.html"
    expected = REPORT_FILES if training_dir is None else (*REPORT_FILES, *tr.TRAINING_TABLES)
    with _build_lock(out):
        _recover(out)
        fingerprint = results_fingerprint(results_dir) if results_dir.is_dir() else ""
        if fingerprint and training_dir is not None:
            fingerprint = (f"{fingerprint}+training:{results_fingerprint(training_dir)}" if training_dir.is_dir()
                           else "")
        if not force and fingerprint and _up_to_date(out, fingerprint, expected):
            return index, False
        sweep = load_sweep(results_dir)  # before anything is created: a bad results folder leaves no trace
        training = None if training_dir is None else tr.load_training(training_dir)
        try:
            # mkdir, not mkdtemp: mkdtemp's folder is private (0700) and would become the report folder; this
            # one gets the user's umask like any folder they create. The pid and random part make the name ours.
            building = out.parent / f".{out.name}.{_BUILDING}-{os.getpid()}-{secrets.token_hex(4)}"
            building.mkdir()
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot write beside it in {out.parent} ({err.strerror or err})") from None
        try:
            with progress_bar(len(REPORT_STAGES), "report", enabled=show_progress) as bar:
                write_report(results_dir, building, sweep, training, stage=lambda name: bar.update(1))
            (building / FINGERPRINT_FILE).write_text(fingerprint)  # last: only a whole build carries it
            _swap_into_place(building, out)
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot write the report ({err.strerror or err})") from None
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)  # ours: the name made for this build
    if warn is not None and (sweep.unreadable or sweep.failed or sweep.stale):
        warn(f"{results_dir}: {_problem_counts(sweep)}; named at the top of {index}")
    if warn is not None and training is not None and (training.unreadable or training.failed):
        warn(f"{training_dir}: {len(training.unreadable)} unreadable file(s) skipped, {len(training.failed)} run(s) "
             f"failed; named in the Training section of {index}")
    return index, True


def _check_out(results_dir: Path, out_dir: Path, results_option: str = "results") -> Path:
    """The resolved destination, once it is known to be safe to replace whole: not a file, not the results
    folder nor inside or around it, not the current folder or one of its parents, and either absent or
    holding only the files of a report (REPORT_FILES)."""
    try:
        out, results, here = out_dir.resolve(), results_dir.resolve(), Path.cwd().resolve()
    except OSError as err:
        raise ConfigError(f"--out {out_dir}: cannot resolve it ({err.strerror or err})") from None
    if out == results or results in out.parents:
        raise ConfigError(f"--out {out_dir}: is inside the {results_option} folder {results_dir}; write the report "
                          "elsewhere "
                          "(the next report would read its files as results)")
    if out in results.parents:
        raise ConfigError(f"--out {out_dir}: holds the {results_option} folder {results_dir}; write the report "
                          "elsewhere")
    if out == here or out in here.parents or not out.name:
        raise ConfigError(f"--out {out_dir}: is the current folder or one of its parents; the report replaces "
                          "its --out folder whole, so give it a folder of its own (e.g. reports/out)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    if out.is_dir():
        try:
            foreign = sorted(p.name for p in out.iterdir() if p.name not in ALLOWED_FILES or p.is_dir())
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot list it ({err.strerror or err})") from None
        if foreign:
            raise ConfigError(f"--out {out_dir}: holds files that are not a report's ({', '.join(foreign[:3])}"
                              f"{', …' if len(foreign) > 3 else ''}); the report replaces the folder whole, so "
                              "give it an empty or new folder")
    return out


@contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Serialise report builds beside `out`: an exclusive flock on its parent folder (no file is created;
    the kernel drops it when the process dies). A second build waits, then usually finds the report up to date."""
    import fcntl

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot create or open its parent folder ({err.strerror or err})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _recover(out: Path) -> None:
    """Clean up after builds that died (none is running: the build lock is held). One killed between its two
    renames left no `out` but the previous report under its backup name: put it back. Then remove the
    temporary folders of dead builds (their names are ours)."""
    backups = sorted(out.parent.glob(f".{out.name}.{_PREVIOUS}-*"))
    if backups and not out.exists():
        os.rename(backups.pop(), out)
    for leftover in [*backups, *out.parent.glob(f".{out.name}.{_BUILDING}-*")]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _up_to_date(out: Path, fingerprint: str, expected: tuple[str, ...] = REPORT_FILES) -> bool:
    stamp = out / FINGERPRINT_FILE
    try:
        return (stamp.is_file() and stamp.read_text() == fingerprint
                and all((out / name).is_file() for name in expected))
    except (OSError, UnicodeDecodeError):
        return False


def _swap_into_place(building: Path, out: Path) -> None:
    """Replace the folder `out` by the finished build. rename(2) replaces a folder only when the destination
    is empty, and there is no portable atomic swap of two non-empty folders, so: the old report is first
    renamed aside (to a backup name), the new one renamed into place, then the backup removed. Each rename is
    atomic, so at every instant one whole report is on disk, old or new, never a mix; a kill between the two
    renames leaves only the backup, which the next build renames back (_recover) before it looks at `out`.
    Deleting the old report first instead would leave nothing if the second step failed."""
    if not out.exists():
        os.rename(building, out)
        return
    backup = out.with_name(f".{out.name}.{_PREVIOUS}-{os.getpid()}")
    os.rename(out, backup)
    try:
        os.rename(building, out)
    except BaseException:
        os.rename(backup, out)  # the new report could not take its place: keep the old one
        raise
    shutil.rmtree(backup, ignore_errors=True)


REPORT_STAGES = ("statistics", "training analysis", "figures and page")


def write_report(results_dir: Path, out_dir: Path, sweep: Sweep | None = None,
                 training: tr.TrainingResults | None = None, stage: Callable[[str], None] = lambda name: None) -> Path:
    """Build every table, finding and figure of the report and write them to `out_dir` (in place: `build_report`
    gives it a temporary folder); `sweep`: the already loaded results of `results_dir`; `training`: a loaded
    training sweep, for the Training section and its tables; `stage(name)` is called as each of REPORT_STAGES
    ends."""
    sweep = sweep or load_sweep(Path(results_dir))
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
    ratio_pairs = [(v, settings.reference_variant) for v in sweep.variants[1:]] + list(settings.pairs)
    ratios = variance_ratios(sweep.rows, ratio_pairs)
    rliable = rliable_analysis(sweep.rows, family_list, settings)
    comparisons = comparison_table(ratios, points, settings.pairs, headline)
    sections = all_findings(sweep, points, ratios, comparisons, rliable, headline, sweeps_at_headline, by_table,
                            family_list)
    summary = summary_table(points)
    reference = settings.reference_variant
    verdicts = fixed_theta_verdicts(points, headline, reference, sweep.rows)
    heat = relative_variance_table(points, ratios, headline, reference)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {
        "verdict.csv": verdict_csv(verdicts), "relative_variance.csv": heat, "comparisons.csv": comparisons, "summary.csv": summary, "aggregated.csv": points, "variance_ratios.csv": ratios,
        "sweeps.csv": pd.concat([frame[SWEEP_CSV_COLUMNS] for _, frame in sweeps], ignore_index=True)
        if sweeps else pd.DataFrame(columns=SWEEP_CSV_COLUMNS),
        "rliable_intervals.csv": rliable.intervals, "probability_of_improvement.csv": rliable.improvements,
        "performance_profiles.csv": rliable.profiles, "rliable_families.csv": _families_table(rliable),
    }
    assert tuple(sorted(tables)) == tuple(sorted(TABLE_FILES)), "a new table file belongs in TABLE_FILES"
    for name, frame in tables.items():
        frame.to_csv(out_dir / name, index=False)
    (out_dir / "findings.txt").write_text(findings_text(sections.values()), encoding="utf-8")
    stage("statistics")
    analysis = None
    if training is not None:
        analysis = tr.analyse_training(training, settings.seed, settings.bootstrap_reps)
        for name, frame in analysis.tables().items():
            frame.to_csv(out_dir / name, index=False)
    stage("training analysis")

    with figures.report_style():
        order = [reference, *(v for family in family_list for v in family.variants)]
        palette = figures.variant_style(list(dict.fromkeys(order)))
        body = [
            ("fixed-verdict", "Verdict at fixed θ: which estimator has the lowest MSE, where",
             _fixed_verdict_section(verdicts, heat, sweep, order, headline)),
            ("sweep", "Sweep", _sweep_section(sweep)),
            ("reading", "Reading the intervals", _reading_section(sweep)),
            ("findings", "Findings", _findings_section(sections, comparisons)),
            ("measurements", "Measurements by estimator family",
             _measurements_section(points, family_list, palette)),
            ("sweeps", "Sweeps of one option", _sweeps_section(sweeps_at_headline)),
            ("rliable", "Across problems (rliable)", _rliable_section(rliable, sweep, palette)),
            ("summary", "Summary tables", _summary_section(summary, headline, list(tables))),
        ]
        if analysis is not None:  # the answer first: which estimator trains best where, and how sure
            body.insert(0, ("verdict", "Verdict: which estimator trains best, where", _training_verdicts(analysis)
                            + page.paragraph("How these are scored and chosen: the Training section below.")))
            # folded: the page reads top-down in ≤ 15 screens; the verdict above is its answer
            body.insert(-1, ("training", "Training", page.details(
                "The training analysis: runs, sample efficiency, per-problem scores, rliable across problems, paired "
                "differences, learning rates, noise scale", training_section(analysis))))
    index = out_dir / "index.html"
    preface = _warnings_block(sweep) + _trust_counts(sweep, [at_headline(summary, headline), verdicts],
                                                     at_headline(ratios, headline), heat, rliable)
    index.write_text(page.page(f"pgvar report: sweep {sweep.name}", body, preface), encoding="utf-8")
    stage("figures and page")
    return index


SWEEP_CSV_COLUMNS = [
    "axis", "series", "table", "value", "x", "problem", "batch_size", "variant", "target", "declared_unbiased",
    *(f"{m}{end}" for m in ("variance_trace", "relative_bias", "cosine_mean") for end in ("", "_lo", "_hi")),
    "bias_rejections", "heavy_tailed", "repetitions", "nonfinite", "estimates", "nonfinite_fraction",
    *(f"info_{key}" for key in INFO_NUMBERS)]


def _distinct(rows: pd.DataFrame, column: str) -> str:
    values = sorted(str(v) for v in rows[column].unique())
    return ", ".join(values) + (" (MIXED: rows come from different code or environments)" if len(values) > 1 else "")


def _batch_sizes_text(rows: pd.DataFrame) -> str:
    """The N the rows were measured or trained at (every problem's, whatever level of the config set them)."""
    return ", ".join(str(int(n)) for n in sorted(set(rows["batch_size"])))


def _problem_counts(sweep: Sweep) -> str:
    """One line counting what the report could not or did not use ("" when nothing)."""
    counts = [f"{len(sweep.unreadable)} unreadable file(s) skipped" if sweep.unreadable else "",
              f"{len(sweep.failed)} cell(s) failed" if sweep.failed else "",
              f"{len(sweep.stale)} stale cell file(s) of another config left out" if sweep.stale else ""]
    return "; ".join(c for c in counts if c)


FIRST_SCREEN_ITEMS = 5  # skipped files and failed cells named at the top; the rest at the end of the Sweep section


def _listed(items: tuple[str, ...], prefix: str, shown: int = FIRST_SCREEN_ITEMS) -> list[str]:
    more = [f"{prefix}… and {len(items) - shown} more, all listed below"] if len(items) > shown else []
    return [f"{prefix}{item}" for item in items[:shown]] + more


def _warnings_block(sweep: Sweep) -> str:
    """The first thing on the page, before the provenance: what was skipped, failed or left out, each named."""
    block = "".join(page.paragraph(note, "note") for note in sweep.notes)
    counts = _problem_counts(sweep)
    if not counts:
        return block
    items = [*_listed(sweep.unreadable, "skipped "), *_listed(sweep.failed, "failed: ")]
    if sweep.stale:
        items.append(f"left out {len(sweep.stale)} cell file(s) this sweep's _sweep.json does not plan (an older or "
                     f"larger config's): {', '.join(sweep.stale[:3])}{', …' if len(sweep.stale) > 3 else ''}; rerun "
                     "the sweep with --fresh to remove them")
    return block + page.paragraph(f"Warning: {counts}. Every number below covers the readable finished cells only.",
                                  "warning") + page.bullet_list(items)


def _fixed_ratios(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows of a paired-ratio table whose ratio was the same in every repetition (an interval of no width to float
    rounding): two estimators in a fixed relation, identical (reward-to-go and total return on a one-step bandit)
    or proportional (rloo = N/(N−1) × batch_mean). Printed as such (findings.ratio_words), never as an interval."""
    low, high = (frame[f"{column}_{end}"].astype(float) for end in ("lo", "hi"))  # an empty table has object columns
    return pd.Series(np.isclose(low, high, rtol=ZERO_WIDTH_RTOL, atol=0.0), index=frame.index)


def _trust_counts(sweep: Sweep, shown: list[pd.DataFrame], ratios: pd.DataFrame, heat: pd.DataFrame,
                  rliable: RliableResults) -> str:
    """The first line of the page: how many measurements are heavy-tailed, and how many of the intervals the page
    shows have zero width (`shown`: the tables whose intervals it prints; in the paired-ratio tables `ratios` and
    `heat` the fixed ratios are counted apart: they are printed as such; rliable's intervals and probabilities
    apart too, as "no spread")."""
    rows = sweep.rows
    heavy = int(rows["heavy_tailed"].sum())
    fixed = _fixed_ratios(ratios, "ratio")
    zero = sum(zero_width_intervals(frame) for frame in [*shown, ratios[~fixed],
                                                         heat[~_fixed_ratios(heat, "relative_variance")]])
    no_spread = (zero_width_intervals(rliable.intervals[rliable.intervals["statistic"].isin(PRINTED_STATISTICS)])
                 + zero_width_intervals(rliable.improvements))
    return page.paragraph(
        f"Fixed-θ measurements: heavy-tailed {heavy} of {len(rows)} ({heavy / len(rows):.1%}); their CIs are too "
        "narrow, so they are hatched or grey in the figures and never recommended or counted as a win. Zero-width "
        f"intervals among the fixed-θ numbers shown: {zero}" + (" (each printed \"no spread\", never as an interval)" if zero else "")
        + f"; paired ratios the same in every repetition (two estimators in a fixed relation: identical, or e.g. "
        f"rloo = N/(N−1) × batch_mean): {int(fixed.sum())}, printed \"identical\" or \"exactly r×\"" + (
            f"; rliable values whose bootstrap resamples all agree: {no_spread}, printed \"no spread\" (e.g. a "
            "probability of improvement of 1: every run of X beat every run of Y)" if no_spread else "") + ".",
        "note")


def _reference_text(resolution: float) -> str:
    """How the problem's ∇J is known: exact, or sampled with the smallest relative bias it resolves."""
    if resolution == 0:
        return "exact"
    if math.isnan(resolution):
        return "unknown"
    return f"sampled: resolves relative bias ≥ {fmt(resolution)}"


def _by_reason(lower: tuple[tuple[str, tuple[Reason, ...]], ...]) -> str:
    """A verdict's (variant, its reasons) pairs grouped by reasons: "why: a, b", "—" when there are none."""
    grouped: dict[tuple[Reason, ...], list[str]] = {}
    for variant, reasons in lower:
        grouped.setdefault(reasons, []).append(variant)
    return "; ".join(f"{reasons_text(reasons)}: {_merged(variants)}" for reasons, variants in grouped.items()) or "—"


def _merged(variants: list[str]) -> str:
    """Variant labels with their last option's value merged under a shared prefix: "reinforce baseline=optimal,
    batch_mean" for reinforce baseline=optimal and reinforce baseline=batch_mean; groups separated by " / "."""
    groups: dict[str, list[str]] = {}
    for variant in variants:
        prefix, _, value = variant.rpartition("=")
        key, shown = (prefix, value) if prefix else (variant, "")
        groups.setdefault(key, []).append(shown)
    return " / ".join(key if values == [""] else f"{key}={', '.join(values)}" for key, values in groups.items())


def _fixed_verdict_section(verdicts: pd.DataFrame, heat: pd.DataFrame, sweep: Sweep, order: list[str],
                           headline: dict[str, int]) -> str:
    """The fixed-θ answer: the verdict table, the heat map of variance relative to the reference, how to read
    them, and links to the sections behind them."""
    reference = sweep.settings.reference_variant
    rows = [[r.problem, r.batch_size, r.recommended or "none eligible", fmt_ci(r.mse, r.mse_lo, r.mse_hi),
             f"{fmt(r.mse_vs_reference)} ({fmt(r.cost_vs_reference)})", r.identical or "—", r.tied or "none", _by_reason(r.not_eligible_lower),
             f"{r.heavy_tailed_measurements} of {r.measurements}", _reference_text(r.relative_bias_resolution)]
            for r in verdicts.itertuples()]
    body = page.table(["problem", "N", "recommended (lowest MSE vs ∇J)", "MSE [95% CI]",
                       f"MSE / {reference}'s (at equal compute time)",
                       "identical", "tied (CIs overlap)", "lower MSE, not eligible (why)", "heavy-tailed here",
                       "∇J"], rows)
    problems = [p for p in sweep.problems if p in set(heat["problem"])]
    if len(heat):
        body += page.figure(
            figures.png_data_uri(figures.relative_variance_heatmap(heat, list(dict.fromkeys(order)), problems,
                                                                   headline, reference)),
            "variance relative to vanilla REINFORCE, estimators × problems",
            f"Variance tr Cov(ĝ) of each estimator of ∇J over {reference}'s at each problem's N, paired per repetition "
            "(geometric mean; every variant saw the same trajectories): blue is less variance, red more, log colour "
            "scale. b: declared biased; !: declared unbiased but its bias test rejects; hatched: heavy-tailed in a "
            "repetition (the ratio's CI is too narrow). Values with CIs: relative_variance.csv.")
    body += page.paragraph(
        "How to read this. Each row is one problem at its headline N (the largest N where the most variants were "
        "measured). The recommendation is the estimator with the lowest mean squared error ‖ĝ − ∇J‖² (bias² + "
        "variance) among the eligible ones: trustworthy in every repetition, declared unbiased, and not rejected by "
        "the bias test (p < 0.01) more often than chance gives (at 1%: with 3 repetitions, in 2 or more). \"tied\": eligible variants whose MSE interval overlaps the recommended "
        "one's (the data do not separate them); \"identical\": the same MSE to float rounding. A lower MSE of a "
        "biased, heavy-tailed or rejected variant is named, never recommended. Intervals are single-repetition 95% "
        "CIs over the M batches (Reading the intervals). ∇J: exact, or sampled (a reference mean of many "
        "trajectories), whose own error hides any relative bias below the stated resolution. In brackets beside the MSE "
        "ratio: MSE × seconds per estimate over the reference's, the ratio at equal compute time.")
    links = [("sweep", "what was measured"), ("reading", "the intervals"), ("findings", "findings tables"),
             ("measurements", "every family against N"), ("sweeps", "one-option sweeps"),
             ("summary", "full MSE rankings")]
    return body + page.links(links)


def _sweep_section(sweep: Sweep) -> str:
    rows, settings = sweep.rows, sweep.settings
    failed = f", {len(sweep.failed)} failed" if sweep.failed else ""
    facts = [
        ("cells", f"{len(rows)} finished of {sweep.planned_cells} planned{failed}"),
        ("problems (rliable tasks)", "; ".join(sweep.problems)),
        ("variants", "; ".join(sweep.variants)),
        ("reference variant", settings.reference_variant),
        ("batch sizes N", _batch_sizes_text(rows)),
        ("batches per measurement M", _distinct(rows, "reps")),
        ("repetitions R per measurement", _repetition_counts(rows)),
        ("bootstrap", f"{settings.bootstrap_reps} resamples, seed {settings.seed}"),
        *((column.replace("_", " "), _distinct(rows, column)) for column in PROVENANCE_COLUMNS if column in rows),
        ("report made with", ", ".join(f"{lib} {version(lib)}" for lib in REPORT_LIBRARIES)),
    ]
    every = ""  # the full lists, when the first screen could name only some
    if len(sweep.unreadable) > FIRST_SCREEN_ITEMS:
        every += page.heading("Files skipped") + page.bullet_list(list(sweep.unreadable))
    if len(sweep.failed) > FIRST_SCREEN_ITEMS:
        every += page.heading("Cells failed") + page.bullet_list(list(sweep.failed))
    if len(sweep.stale) > 3:
        every += page.heading("Stale cell files left out") + page.paragraph(", ".join(sweep.stale), "note")
    return (page.details(f"Provenance and settings: {len(rows)} cells, {len(sweep.problems)} problems, "
                         f"{len(sweep.variants)} variants", page.table([], facts) + every)
            + page.details("Variant labels and every option behind them (the defaults a label leaves out)",
                           _options_legend(sweep)))


def _options_legend(sweep: Sweep) -> str:
    """Each variant's label beside every option it ran with, as the rows record them (`estimator_options`, resolved
    by the sweep): a label names only the options that differ from the estimator's defaults, so the rest are the
    defaults."""
    described = sweep.rows.drop_duplicates("variant").set_index("variant")
    rows = []
    for variant in sweep.variants:
        options = json.loads(described.loc[variant, "estimator_options"])
        rows.append([variant, described.loc[variant, "estimator"], described.loc[variant, "target"],
                     ", ".join(f"{key}={value_text(value)}" for key, value in sorted(options.items())) or "none"])
    return page.table(["variant", "estimator", "target", "every option (those not in the label are defaults)"], rows)


def _repetition_counts(rows: pd.DataFrame) -> str:
    """How many independently seeded repetitions the measurements have: "3", or "3 (10 for 420 of 1977)"."""
    counts = run_counts(rows).value_counts()
    common = int(counts.idxmax())
    others = ", ".join(f"{int(r)} for {n} of {counts.sum()}" for r, n in counts.sort_index().items() if r != common)
    return f"{common} ({others} measurements)" if others else str(common)


def _reading_section(sweep: Sweep) -> str:
    repetitions = _repetition_counts(sweep.rows)
    return page.paragraph(
        "Every [low, high] is a 95% confidence interval. A measurement is M batches of N trajectories at a fixed θ, "
        f"repeated R = {repetitions} times with independent seeds. In the figures, tables and per-problem findings a "
        "value is the mean over the R repetitions and its interval is the 95% CI of a single repetition, averaged "
        "over the repetitions: the uncertainty of one measurement (the mean of R is about √R times more precise). "
        "Variance ratios between variants are paired per repetition (every variant saw the same trajectories) and "
        "carry t-intervals over the repetitions. rliable's stratified-bootstrap intervals over repetitions are "
        f"computed only over measurements with at least {MIN_RUNS} of them, on ≥ {MIN_TASKS} problems (Across problems). All intervals are normal approximations in M: on measurements flagged heavy-tailed they are "
        f"too narrow. The bias test rejects at p < {BIAS_TEST_LEVEL:g}.")


# A pair's tally over its problems: label → the readings it counts; any other reading is "no established change".
TALLY = {"cuts variance on": (Reading.ABOVE, Reading.FIXED_ABOVE),
         "raises variance on": (Reading.BELOW, Reading.FIXED_BELOW), "identical on": (Reading.IDENTICAL,)}


def _tally(readings: pd.Series) -> str:
    """How a pair's variance comparisons came out over its problems (their findings.Reading), e.g. "cuts variance on
    7, no established change on 2 of 9 problems"."""
    counts = {label: int(readings.isin(kinds).sum()) for label, kinds in TALLY.items()}
    counts["no established change on"] = len(readings) - sum(counts.values())
    return ", ".join(f"{label} {n}" for label, n in counts.items() if n) + f" of {len(readings)} problems"


def _findings_section(sections: dict[str, Section], comparisons: pd.DataFrame) -> str:
    """The configured pairs' tables (`comparisons`), then every other findings section folded (the pairs' own section
    is these tables: findings.txt has it as text)."""
    body = page.paragraph(
        "The configured comparisons at each problem's headline N: X's variance against Y's (paired ratio, 95% "
        "t-interval over repetitions; a heavy-tailed or invalid side is never read as a win, and a ratio of 1 to "
        "float rounding is \"identical\"), X's relative bias against its target with its CI and whether it is "
        "biased, and MSE(X) / MSE(Y), bias included. Every other finding is generated from the numbers of this "
        "report, folded below by topic, and in findings.txt. Click a line to fold or unfold it.", "note")
    header = ["problem", "N", "variance of X vs Y [95% CI]", "X relative bias [95% CI]", "X bias", "MSE(X) / MSE(Y)",
              "flagged"]
    for (x, y), pair in comparisons.groupby(["x", "y"], sort=False):
        body += page.details(f"{x} vs {y}: {_tally(pair['variance_reading'])}", page.table(header, [
            [r.problem, r.batch_size, r.variance, r.x_relative_bias, r.x_bias, fmt(r.mse_ratio), r.flags or "—"]
            for r in pair.itertuples()]), open_=True)
    if comparisons.empty:
        body += page.paragraph("No pairs configured ([report] pairs in the sweep config).", "note")
    else:
        body += page.links([("rliable", "rliable's P(X > Y) across problems, for the pairs within a family")])
    return body + "".join(page.details(f"{heading} ({len(items)})", page.bullet_list(items))
                          for key, (heading, items) in sections.items() if key != PAIRS)


SINGLE_CI = ("Points: mean over repetitions; error bars: the 95% CI of a single repetition, averaged over "
             "repetitions.")

FAMILY_RULE = (
    "Variants are grouped into families, one figure each: the [[estimators]] tables of one estimator that sweep "
    "the same options form a family, and a table sweeping nothing joins its estimator's first family (or forms its "
    "own); a variant belongs to the first table that produces it. Each variant's bias and cosine are measured "
    "against its own target (∇J unless the table says otherwise). A variant has the same colour and marker in every "
    "family's figures.")


def _measurements_section(points: pd.DataFrame, family_list: list[Family], palette: figures.VariantStyle) -> str:
    """A figure per family against N and its bias²/variance bars, each variant in `palette`'s colour and marker
    (the same in every family)."""
    body = page.paragraph(FAMILY_RULE) + page.table(["family", "target", "variants", "problems", "N"], [
        [family.title, ", ".join(sorted(set(of["target"]), key=target_order)), "; ".join(family.variants),
         "; ".join(sorted(set(of["problem"]))), ", ".join(map(str, sorted(set(of["batch_size"]))))]
        for family in family_list if len(of := points[points["family"] == family.title])])
    blocks = []  # each figure is encoded (and closed) before the next is drawn
    for family in family_list:
        of_family = points[points["family"] == family.title]
        style = figures.style_subset(palette, family.variants)
        targets = sorted(set(of_family["target"]), key=target_order)
        figure_html = page.figure(
            figures.png_data_uri(figures.family_figure(of_family, style)), f"{family.title}: against N",
            f"{family.title}, against the batch size N (log axis), a row per problem. Left: total variance "
            f"tr Cov(ĝ), log-log (lower is better), CI jackknife on the log scale; dashed: ∝ 1/N through the first "
            "variant's value at its smallest N, the slope of any average of N independent per-trajectory terms. "
            f"Middle: relative bias ‖E ĝ − target‖/‖target‖ against the variant's own target ({', '.join(targets)}), "
            "noise-corrected and clamped at 0 (0 = no detectable bias), CI a normal interval for the squared bias, "
            "square-rooted; hollow markers: declared biased there. Right: mean cosine between an estimate and the "
            f"target (1 = aligned), t interval; dotted where the target is not ∇J: the cosine to ∇J. {SINGLE_CI}")
        headline = headline_batch_sizes(of_family)
        blocks.append(page.details(family.title, figure_html + page.figure(
            figures.png_data_uri(figures.bias_variance_bars(of_family, headline, style)),
            f"{family.title}: bias² and variance",
            f"{family.title} per problem at the largest N where the most of its variants were measured: bias² (mean of "
            "bias_norm² over repetitions) and variance stacked; their total is the MSE against each variant's "
            "target, which the tick marks as measured (they agree exactly unless the bias estimate was clamped at "
            "0). A panel whose MSEs span more than 10× has a log axis: there the MSE bar and a thinner bias² bar "
            "each start from a common floor, not stacked. Labels: MSE and bias²'s share.")))
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
        blocks.append(page.details(axis.title, page.figure(
            figures.png_data_uri(figures.sweep_figure(frame, axis, style)), f"sweep of {axis.option}",
            AXIS_CAPTIONS.get(axis.option, f"Each metric against {axis.option}.") + " Rows: variance tr Cov(ĝ) "
            "(log), relative bias against the variant's target with CIs (hollow markers: declared biased there), mean "
            "cosine to the target; for behaviour sweeps the fraction of non-finite estimates and the achieved KL. "
            f"{SINGLE_CI}")))
    return body + "".join(blocks)


# The optimality gap at γ = 0 is 0 for every variant never worse than the reference, in every resample: it is drawn
# (and in rliable_intervals.csv), the table prints the statistics that tell the variants apart.
PRINTED_STATISTICS = STATISTICS[:3]


def _families_table(rliable: RliableResults) -> pd.DataFrame:
    """rliable_families.csv: every family, whether it entered the fixed-θ rliable analysis (its N, problems and
    variants) or why not, and its best eligible variant by IQM with what scored higher but cannot be called a win."""
    frame = pd.DataFrame([{"family": q.family, "qualifies": q.qualifies, "why_not": q.why,
                           "variants": "; ".join(q.variants), "left_out": "; ".join(q.left_out)}
                          for q in rliable.qualifications], columns=["family", "qualifies", "why_not", "variants",
                                                                     "left_out"])
    winners = rliable.winners.drop(columns=["eligible"])
    return frame.merge(winners, on="family", how="left")


def _probability(improvements: pd.DataFrame, x: str, y: str) -> str:
    found = improvements[(improvements["x"] == x) & (improvements["y"] == y)]
    return "—" if found.empty else fmt_ci(*found.iloc[0][["probability", "lo", "hi"]])


def _rliable_section(rliable: RliableResults, sweep: Sweep, palette: figures.VariantStyle) -> str:
    settings = sweep.settings
    reference = settings.reference_variant
    body = page.paragraph(
        f"rliable (Agarwal et al. 2021) per estimator family, over genuinely independent runs: a family enters at the "
        f"N where the most problems have ≥ {MIN_RUNS} independently seeded repetitions of it and of the reference "
        f"{reference}, if those are ≥ {MIN_TASKS} problems (a config gives a block of tables `repetitions = 10`). "
        f"Tasks are the problems, runs the repetitions. Score, higher is better: {MSE_REDUCTION.title}, −log(MSE / "
        f"{reference}'s MSE at the same problem, N and repetition), MSE = bias² + variance against ∇J, so a variance "
        "cut bought with bias does not count; 1 nat is e ≈ 2.7× less MSE, 0 the reference's. IQM is the mean of the "
        "middle 50% of all run × problem scores. Intervals: 95% stratified bootstrap over runs "
        f"({settings.bootstrap_reps} resamples, numpy seeded with {settings.seed} around each call). \"Best\" is the "
        "highest IQM among the eligible variants: declared unbiased, not rejected by the bias test beyond chance, "
        "trustworthy and never heavy-tailed there; a higher IQM of another variant is named with why, never called a "
        "win. P(X > Y): the probability that a run of X scores above a run of Y on the same problem (Mann–Whitney, "
        "averaged over problems; 0.5 = no difference), resampling each variant's runs; a best whose P over the "
        "eligible runner-up is not above 0.5 is not separated from it (IQM pools the problems, P compares per problem).")
    winners = rliable.winners.set_index("family")
    improvements = rliable.improvements
    rows = []
    for family, w in winners.iterrows():
        at = improvements[improvements["family"] == family]
        runner = w.eligible[1] if len(w.eligible) > 1 else None  # the eligible variant of the next highest IQM
        rows.append([family, w.batch_size, f"{w.problems} × {w.runs} runs", w.best or "none eligible",
                     fmt_ci(w.best_iqm, w.best_lo, w.best_hi), _probability(at, w.best, reference) if w.best else "—",
                     f"{runner}: {_probability(at, w.best, runner)}" if runner else "—",
                     w.higher_not_eligible or "—"])
    if rows:
        body += page.table(["family", "N", "problems × runs", "best eligible (highest IQM)",
                            "its IQM [95% CI] (nats)", f"P(best > {reference})",
                            "P(best > eligible runner-up)", "higher IQM, not eligible (why)"], rows)
    else:
        body += page.paragraph("No family qualifies in this sweep.", "note")
    short = [q for q in rliable.qualifications if not q.qualifies]
    if short:
        body += page.paragraph("Families not aggregated, each with why:") + page.bullet_list(
            [f"{q.family}: {q.why}" for q in short])
    blocks = []
    for family, w in winners.iterrows():
        intervals = rliable.intervals[rliable.intervals["family"] == family]
        style = figures.style_subset(palette, list(dict.fromkeys(
            v for v in palette.variants if v in set(intervals["variant"]))))
        wide = intervals.pivot(index="variant", columns="statistic")
        table = page.table(["variant", *PRINTED_STATISTICS], [
            [variant, *(fmt_ci(wide.loc[variant, ("estimate", s)], wide.loc[variant, ("lo", s)],
                               wide.loc[variant, ("hi", s)]) for s in PRINTED_STATISTICS)]
            for variant in style.variants])
        at = improvements[improvements["family"] == family]
        pairs = page.table(["X", "Y", "P(X > Y) [95% CI]"], [
            [r.x, r.y, fmt_ci(r.probability, r.lo, r.hi)] for r in at.itertuples()])
        figure = page.figure(
            figures.png_data_uri(figures.interval_estimates(intervals, style, f"{MSE_REDUCTION.title}, N={w.batch_size}")),
            f"{family}: rliable aggregates",
            f"{family} at N={w.batch_size} across {w.problems} × {w.runs} repetitions: IQM, median and mean of the MSE "
            f"reduction (higher is better) and optimality gap ({MSE_REDUCTION.gamma_meaning}; lower is better); bars "
            "are 95% stratified-bootstrap CIs.")
        profile = rliable.profiles[rliable.profiles["family"] == family]
        figure += page.figure(
            figures.png_data_uri(figures.performance_profile(profile, style, f"{MSE_REDUCTION.title}, τ")),
            f"{family}: performance profile",
            "The fraction of (repetition, problem) scores above each threshold τ with 95% bootstrap bands; a curve "
            "further right is better. Dashed: τ = 0, the reference.")
        left_out = next(q.left_out for q in rliable.qualifications if q.family == family)
        blocks.append(page.details(f"{family}: every variant", table + pairs + figure + (
            page.paragraph("Not compared: " + "; ".join(left_out) + ".", "note") if left_out else "")))
    body += "".join(blocks)
    if rliable.notes:
        body += page.details("Left out of the aggregates", page.bullet_list(rliable.notes))
    return body


def _summary_section(summary: pd.DataFrame, headline: dict[str, int], files: list[str]) -> str:
    body = page.paragraph(
        "Variants ranked by MSE (bias² + variance) per problem and target at the largest N where the most variants "
        "were measured; values are means over repetitions with single-repetition 95% CIs. Every N is in summary.csv. "
        f"Files next to this page: {', '.join(files)}, findings.txt.", "note")
    header = ["target", "rank", "variant", "MSE", "variance", "relative bias", "cos to its target", "cos to ∇J",
              "bias test rejects", "declared", "heavy-tailed", "non-finite", "s / estimate"]
    for problem, at_n in at_headline(summary, headline).groupby("problem", sort=True):
        body += page.details(f"{problem} (N={headline[problem]})", page.table(header, [
            [r.target, "" if pd.isna(r.mse_rank) else int(r.mse_rank), r.variant,
             *(fmt_metric(r, m) for m in ("mse", "variance_trace", "relative_bias", "cosine_mean", "gradient_cosine")),
             f"{r.bias_rejections}/{r.repetitions}", "unbiased" if r.declared_unbiased else "biased",
             f"{r.heavy_tailed}/{r.repetitions}", f"{r.nonfinite} of {r.estimates}", fmt(r.seconds_per_estimate)]
            for r in at_n.itertuples()]))
    return body


# ------------------------------------------------------------------------------------------- Training section


def _arm_order(analysis) -> list[str]:
    """Arms in legend order: the exact control, vanilla REINFORCE, then the rest alphabetically."""
    arms = sorted(set(analysis.scored["arm"]))
    first = [a for a in [*analysis.controls, *analysis.vanilla] if a in arms]
    return list(dict.fromkeys([*first, *arms]))


def _training_facts(analysis) -> str:
    results, runs = analysis.results, analysis.results.runs
    lrs = sorted(set(runs["lr"]))
    planned = "" if results.planned is None else f" of {results.planned} planned cells (runs + noise-scale cells)"
    facts = [
        ("folder", results.folder),
        ("runs", f"{len(runs)} finished{planned}; {len(results.noise)} noise-scale cells"),
        ("problems", "; ".join(sorted(set(runs["problem"])))),
        ("estimators", "; ".join(_arm_order(analysis))),
        ("optimizers", ", ".join(sorted(set(runs["optimizer"])))),
        ("batch sizes N", _batch_sizes_text(runs)),
        ("budget (trajectories per run)", ", ".join(str(int(b)) for b in sorted(set(runs["budget"])))),
        ("learning rates", ", ".join(f"{lr:g}" for lr in lrs)),
        ("seeds (independent runs)", str(runs["seed_index"].nunique())),
        ("exact control / vanilla REINFORCE", f"{', '.join(analysis.controls) or 'none'} / "
                                              f"{', '.join(analysis.vanilla) or 'none'}"),
        ("diverged runs", f"{int(runs['diverged'].sum())} of {len(runs)}"),
        ("bootstrap", f"{analysis.reps} resamples, seed {analysis.seed}"),
    ]
    warnings = ""
    if results.unreadable or results.failed:
        warnings = page.paragraph(f"Warning: {len(results.unreadable)} unreadable file(s) skipped, "
                                  f"{len(results.failed)} run(s) failed; every number below covers the readable "
                                  "finished runs only.", "warning")
        warnings += page.bullet_list([*(f"skipped {u}" for u in results.unreadable),
                                      *(f"failed: {f}" for f in results.failed)])
    notes = [*results.notes, *analysis.notes]
    return warnings + (page.bullet_list(notes) if notes else "") + page.table([], facts)


TRAINING_READING = (
    "How to read this section. A run trains θ from θ₀ with one estimator, optimizer, learning rate and batch size N "
    "for a fixed budget of trajectories (K = budget / N updates); its score is the normalized J, s = (J − J(θ₀)) / "
    "(J* − J(θ₀)): 1 is the optimum, 0 no progress. Runs with the same seed index share their random numbers across "
    "estimators, learning rates and N; different seed indices are independent, and every interval resamples them. "
    "Scores are clipped below at {floor:g} and a diverged run scores exactly {floor:g} (the worst there is): so IQM, "
    "median and mean are finite, and the MEAN IS PULLED DOWN by the floor for every diverged run (the divergence "
    "count is always beside it). A run failed when its final score is below 0.5 or it diverged. Learning rates are "
    "chosen split-half: for each problem, estimator and N the learning rate with the best IQM final score over the "
    "even seed indices; every number \"at the selected learning rate\" is computed on the odd seed indices only, "
    "which played no part in the choice. IQM = the mean of the middle 50% of the runs. Intervals are 95% percentile "
    "bootstrap over seeds; \"no spread\" marks an interval of zero width (every resample gave the same value, e.g. "
    "the deterministic exact control): not a certainty, only that the runs did not differ. Samples to 90% of the "
    "optimum are right-censored at the budget: the fraction of runs that got there (exact binomial interval) and "
    "the median among those that did.")


def _training_verdicts(analysis) -> str:
    verdicts = analysis.verdicts
    if verdicts.empty:
        return page.paragraph("No estimator other than the control has a score at a selected learning rate.", "note")
    rows = [[r.problem, r.batch_size, r.best, f"{r.lr:g}", tr.fmt_interval(r.iqm, r.lo, r.hi),
             tr.fmt_fraction(r.failure_fraction), r.ties or "none",
             tr.fmt_interval(r.control_iqm, r.control_lo, r.control_hi) if r.control else "no control"]
            for r in verdicts.itertuples()]
    return page.paragraph(
        "Per problem and N, at each estimator's split-half selected learning rate, on the evaluation half: the "
        "estimator with the highest IQM final score (the exact control aside) and those whose IQM interval overlaps "
        "its interval form the leading group, which the data do not separate by IQM; the one recommended is the "
        "member of that group with the lowest failure fraction, then the highest IQM (IQM does not see failures of "
        "fewer than a quarter of the runs), and \"tied with\" names the rest of the group.") + page.table(
        ["problem", "N", "recommended estimator", "its lr", "IQM final score [95% CI]", "failure fraction", "tied with",
         "exact control IQM"], rows)


def _training_per_problem(analysis) -> str:
    per = analysis.per_problem
    order = {a: i for i, a in enumerate(_arm_order(analysis))}
    per = per.assign(order=per["arm"].map(order)).sort_values(["problem", "batch_size", "order"], kind="stable")
    rows = [[r.problem, r.batch_size, r.arm, f"{r.lr:g}", r.runs, tr.fmt_interval(r.score_iqm, r.score_iqm_lo,
                                                                                   r.score_iqm_hi),
             tr.fmt_interval(r.score_median, r.score_median_lo, r.score_median_hi),
             tr.fmt_interval(r.score_mean, r.score_mean_lo, r.score_mean_hi),
             tr.fmt_interval(r.score_optimality_gap, r.score_optimality_gap_lo, r.score_optimality_gap_hi),
             tr.fmt_interval(r.auc_iqm, r.auc_iqm_lo, r.auc_iqm_hi), tr.fmt_fraction(r.failure_fraction),
             f"{r.diverged}/{r.runs}",
             f"{r.reached_runs}/{r.runs} [{tr.fmt_fraction(r.reached_lo)}, {tr.fmt_fraction(r.reached_hi)}]",
             tr.fmt_interval(r.samples_to_90_median, r.samples_to_90_median_lo, r.samples_to_90_median_hi)
             if r.reached_runs else "none reached"]
            for r in per.itertuples()]
    return page.paragraph(
        "Every estimator at its selected learning rate, evaluation half (odd seeds). Final score: IQM, median, mean "
        f"(diverged runs count {tr.SCORE_FLOOR:g}) and optimality gap 1 − mean(min(s, 1)) (lower is better); AUC: the "
        "area under s against the fraction of the budget used (IQM); reached 90%: runs whose score reached 0.9 "
        "within the budget [exact 95% CI of the fraction]; samples to 90%: median trajectories among those runs "
        "[bootstrap over them].") + page.table(
        ["problem", "N", "estimator", "lr", "runs", "IQM", "median", "mean", "optimality gap", "AUC IQM",
         "failure fraction", "diverged", "reached 90%", "samples to 90% (median of successes)"], rows)


def _training_across(analysis, style) -> str:
    across = analysis.across
    body = ""
    if across.intervals.empty:
        return page.paragraph("No statistics across problems:", "warning") + page.bullet_list(
            across.notes or ["fewer than 2 problems with a score"])
    body += page.paragraph(
        "rliable across problems (tasks) at each N: runs are the evaluation-half seeds at each estimator's selected "
        "learning rate; 95% stratified bootstrap over runs, numpy's global RNG seeded as for the measurement "
        f"statistics (seed {analysis.seed}, {analysis.reps} resamples). Mean: diverged runs count "
        f"{tr.SCORE_FLOOR:g}. Optimality gap: γ = 1, the optimum.")
    failures = across.failures.set_index(["batch_size", "arm"])
    for batch_size, at_n in across.intervals.groupby("batch_size", sort=True):
        wide = {(r.variant, r.statistic): r for r in at_n.itertuples()}
        arms = [a for a in style.variants if a in set(at_n["variant"])]
        rows = []
        for arm in arms:
            f = failures.loc[(batch_size, arm)]
            rows.append([arm, int(wide[(arm, "IQM")].num_runs), *(
                tr.fmt_interval(wide[(arm, s)].estimate, wide[(arm, s)].lo, wide[(arm, s)].hi)
                for s in ("IQM", "Median", "Mean", "Optimality gap")), tr.fmt_fraction(f["failure_fraction"]),
                f"{int(f['diverged'])}/{int(f['runs'])}"])
        tasks = int(at_n["num_tasks"].iloc[0])
        body += page.heading(f"N={batch_size}: {tasks} problems") + page.table(
            ["estimator", "runs per problem", "IQM", "median", "mean", "optimality gap", "failure fraction",
             "diverged (runs × problems)"], rows)
        body += page.figure(
            figures.png_data_uri(figures.interval_estimates(at_n, style, f"final normalized score, N={batch_size}")),
            f"training aggregates at N={batch_size}",
            f"Final normalized score at N={batch_size} across {tasks} problems: IQM, median, mean (higher is better) "
            "and optimality gap (lower is better), 95% stratified-bootstrap CIs over seeds.")
    improvements = across.improvements
    body += page.heading("Probability of improvement") + page.paragraph(
        "P(X > Y): the probability that a run of X ends with a higher final score than a run of Y on the same problem "
        "(Mann–Whitney, averaged over problems; 0.5 = no difference), against the exact control and against vanilla "
        "REINFORCE; rliable's 95% bootstrap CIs resample each estimator's runs independently, which ignores that "
        "runs with the same seed index share their randomness (the paired differences below use it).")
    body += page.table(["X", "Y", "N", "P(X > Y) [95% CI]"], [
        [r.x, r.y, r.batch_size, tr.fmt_interval(r.probability, r.lo, r.hi)] for r in improvements.itertuples()
    ]) if len(improvements) else page.paragraph("No pair could be compared.", "note")
    for batch_size, profile in across.profiles.groupby("batch_size", sort=True):
        body += page.figure(
            figures.png_data_uri(figures.performance_profile(profile, style, "final normalized score τ")),
            f"training performance profile at N={batch_size}",
            f"Performance profile at N={batch_size}: the fraction of (seed, problem) final scores above each τ, 95% "
            "bootstrap bands; further right is better. Dashed: τ = 0, no progress from θ₀.")
    if across.notes:
        body += page.heading("Left out") + page.bullet_list(across.notes)
    return body


def _training_paired(analysis) -> str:
    paired = analysis.paired[analysis.paired["which"] == "selected"]
    body = page.paragraph(
        "Paired by seed: final score of X minus Y at the same problem, N, learning rate (X's selected one) and seed "
        "index, on the evaluation half; the mean difference with a 95% paired bootstrap interval (the seed pairs are "
        "resampled together, so the shared randomness cancels), and the fraction of seeds where X ended above Y. "
        "Every learning rate, over all seeds, is in training_paired.csv.")
    if paired.empty:
        return body + page.paragraph("No pair was run at the same learning rate.", "note")
    return body + page.table(["problem", "N", "lr", "X", "Y", "pairs", "mean X − Y [95% CI]", "X above Y"], [
        [r.problem, r.batch_size, f"{r.lr:g}", r.x, r.y, r.pairs, tr.fmt_interval(r.difference, r.lo, r.hi),
         tr.fmt_fraction(r.x_wins)] for r in paired.itertuples()])


def _training_noise(analysis) -> str:
    noise = analysis.noise
    body = page.paragraph(
        "The gradient noise scale (McCandlish et al. 2018, bench/noise_scale.py) at θ₀ and at the points of the exact-"
        "gradient path from θ₀ where the normalized score first reaches the fractions of [train] noise_path (path s: "
        "the score the point has): the quadratic model of J along the expected step G predicts the best local SGD "
        "step ε_opt(N) = ε_max / (1 + B_noise/N). Compared "
        "here with the measured best SGD learning rate at that N: the split-half selected one and the grid's best "
        "IQM over all seeds. Caveat: ε_opt is a local, first-step prediction at θ₀, while the measured rate is best "
        "for the whole budget; and the model applies only where the loss L = −J curves upward along G (GᵀH_L G > 0 "
        "and GᵀH_L G + tr(H_L Σ_N) > 0): elsewhere it predicts no optimal step at all, and the row says so.")
    if noise.empty:
        return body + page.paragraph("No noise-scale rows in the training folder (noise_reps = 0, or the cells are "
                                     "not finished): nothing to compare.", "note")
    return body + page.table(
        ["problem", "estimator", "N", "path s", "M", "‖G‖²", "B_simple", "B_noise", "GᵀH_L G", "ε_max",
         "predicted ε_opt(N)", "selected lr", "best lr (all seeds)", "lr grid", "selected / ε_opt", "caveat"],
        [[r.problem, r.variant, r.batch_size, "θ₀" if r.path_target == 0 else f"{r.path_score:.2f}", r.reps,
          tr.fmt(r.grad_norm_sq), tr.fmt(r.b_simple), tr.fmt(r.b_noise),
          tr.fmt(r.curvature), tr.fmt(r.eps_max) if r.model_applies else "n/a",
          tr.fmt(r.eps_opt) if r.model_applies else "model does not apply", tr.fmt(r.selected_lr),
          tr.fmt(r.best_lr_all_seeds), f"{tr.fmt(r.lr_low)} – {tr.fmt(r.lr_high)}", tr.fmt(r.ratio), r.caveat or "—"]
         for r in noise.itertuples()])


def _training_critical(analysis) -> str:
    critical = analysis.critical
    body = page.paragraph(
        "The critical batch size measured from training (McCandlish et al. 2018, eq. 2.11): the updates E(N) to 90% "
        "of J* − J(θ₀) at each batch size (the best learning rate of the grid; each rate's median over all seeds, a "
        "run that never got there counting ∞) fitted by E(N) = E_min (1 + B_crit/N), i.e. samples S(N) = S_min (1 + "
        "N/B_crit): below B_crit a larger batch saves updates at almost no cost in samples, above it samples are "
        "wasted. The interval resamples seeds (paired across N and learning rates). With two batch sizes the fit "
        "is exact (two points, two unknowns) and does not test the model; McCandlish's B_noise at θ₀ stands beside.")
    if critical.empty:
        return body + page.paragraph("No estimator was trained at two or more batch sizes.", "note")
    return body + page.table(
        ["problem", "estimator", "N", "updates to 90% (best lr)", "best lr", "E_min", "B_crit [95% CI]", "S_min",
         "fit", "B_noise at θ₀"],
        [[r.problem, r.arm, r.batch_sizes, r.updates_to_target, r.best_lrs, tr.fmt(r.e_min),
          tr.fmt_interval(r.b_crit, r.b_crit_lo, r.b_crit_hi), tr.fmt(r.s_min), r.fit, tr.fmt(r.b_noise_theta0)]
         for r in critical.itertuples()])


def _training_commitment(analysis) -> str:
    table, trend = analysis.commitment, analysis.commitment_trend
    body = page.paragraph(
        "Baselines change outcomes, not only variance (Chung et al., ICML 2021): where runs end on a problem with arms. "
        "A run is settled on an arm holding ≥ 90% of the final policy; a cell reads k/n: k of its n runs (seeds) "
        "settled on an arm that is not the best (committed), with a Clopper–Pearson 95% interval; u: runs still "
        "undecided at the end of the budget (then k/n is a lower bound). The estimators none of whose runs "
        "committed, at any rate, are listed below the table with their run count; every cell is in "
        "training_commitment.csv.")
    arms = ["problem", "arm", "batch_size"]
    committed = table.groupby(arms)["sub_optimal"].transform("sum") > 0
    shown, never = table[committed], table[~committed]
    rates = sorted(set(shown["lr"]))
    rows = []
    for (problem, arm, batch_size), group in shown.groupby(arms, sort=True):
        at = {r.lr: r for r in group.itertuples()}
        rows.append([problem, arm, batch_size] + [
            "" if lr not in at else f"{at[lr].sub_optimal}/{at[lr].runs} [{at[lr].lo:.2f}, {at[lr].hi:.2f}]"
            + (f", u {at[lr].undecided}" if at[lr].undecided else "") for lr in rates])
    if rows:
        body += page.table(["problem", "estimator", "N"] + [f"lr {lr:g}" for lr in rates], rows)
    for problem, group in never.groupby("problem", sort=True):
        # the rates share their seeds (common random numbers): n independent runs per rate, not n × rates
        per_rate = group.groupby(["arm", "batch_size"], sort=True).agg(runs=("runs", "min"), rates=("lr", "nunique"))
        body += page.paragraph(f"{problem}: no run settled on a sub-optimal arm with " + "; ".join(
            f"{arm} at N={batch_size} (0 of {r.runs} seeds at each of {r.rates} rates, 95% CI per rate "
            f"[0, {tr.clopper_pearson(0, int(r.runs))[1]:.2f}])" for (arm, batch_size), r in per_rate.iterrows())
            + ".", "note")
    trend = trend.merge(shown[arms].drop_duplicates(), on=arms)
    if len(trend):
        body += page.paragraph(
            "Does commitment grow with the step size? T = Σ log(lr)·[settled sub-optimal] over the runs, one-sided "
            "permutation p-value shuffling each seed's outcomes across the learning rates (the seeds stay paired).")
        body += page.table(["problem", "estimator", "N", "learning rates", "seeds", "one-sided p"], [
            [r.problem, r.arm, r.batch_size, r.learning_rates, r.seeds, f"{r.p_value:.2g}"] for r in trend.itertuples()])
    return body


def training_section(analysis) -> str:
    """The body of the report's Training section (drawn inside figures.report_style())."""
    from reports import training_figures

    style = figures.variant_style(_arm_order(analysis))
    body = _training_facts(analysis) + page.paragraph(TRAINING_READING.format(floor=tr.SCORE_FLOOR))
    # the verdict table stands first on the page (write_report)
    if len(analysis.curves):
        body += page.heading("Sample efficiency") + page.figure(
            figures.png_data_uri(training_figures.sample_efficiency_figure(analysis.curves, style)),
            "sample-efficiency curves",
            "IQM normalized score against training trajectories, at each estimator's selected learning rate, over the "
            "evaluation half (odd seeds); bands: 95% pointwise bootstrap over seeds (rliable's sample-efficiency "
            f"curve). Diverged runs count {tr.SCORE_FLOOR:g} from their divergence on. Dashed: the optimum.")
    body += page.heading("Per problem") + _training_per_problem(analysis)
    body += page.heading("Across problems") + _training_across(analysis, style)
    body += page.heading("Paired differences") + _training_paired(analysis)
    if len(analysis.lr_curves):
        body += page.heading("Learning rate") + page.figure(
            figures.png_data_uri(training_figures.learning_rate_figure(analysis.lr_curves, analysis.selected, style)),
            "final score against the learning rate",
            "IQM final normalized score over all seeds against the learning rate (log axis), a panel per problem and "
            "N; bars: 95% bootstrap over seeds; ring: the learning rate selected on the even seeds. Dotted: the "
            f"floor {tr.SCORE_FLOOR:g} (every run diverged or ended that low); dashed: the optimum.")
        body += page.table(["problem", "N", "estimator", "selected lr", "IQM on the selection half (even seeds)"], [
            [r.problem, r.batch_size, r.arm, f"{r.lr:g}", tr.fmt(r.selection_iqm)]
            for r in analysis.selected.itertuples()])
    body += page.heading("Noise scale") + _training_noise(analysis)
    body += page.heading("Critical batch size") + _training_critical(analysis)
    if len(analysis.commitment):
        body += page.heading("Commitment") + _training_commitment(analysis)
    return body
