"""`pgvar report`: the rliable layer against answers computed by hand, paired variance ratios,
determinism, and a real tiny sweep rendered into one self-contained page that headless Chromium
loads without a broken image."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rliable import metrics
from scipy import stats

from bench.cli import main
from bench.store import ResultsStore
from bench.sweep import load_config, run_sweep
from envs.spec import ConfigError
from reports.findings import bias_findings, reliability_findings
from reports.report import build_report
from reports.results import variance_ratios
from reports.rliable_stats import (
    aggregate_intervals,
    improvement_probabilities,
    performance_profiles,
    probability_of_improvement,
    seeded_global_rng,
)

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("summary.csv", "aggregated.csv", "variance_ratios.csv", "rliable_intervals.csv",
           "probability_of_improvement.csv", "performance_profiles.csv", "findings.txt")
SECTIONS = ("sweep", "reading", "findings", "measurements", "rliable", "summary")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000")

# Four tasks scoring 0.1, 0.2, 0.3 and 1.0 in every one of four runs: [num_runs=4, num_tasks=4]. With
# identical runs every bootstrap resample equals the data, so each interval collapses to its point.
TASK_SCORES = np.array([0.1, 0.2, 0.3, 1.0])
IDENTICAL_RUNS = np.tile(TASK_SCORES, (4, 1))


def same_rng_state(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# ------------------------------------------------------------------------------ rliable layer

def test_aggregates_of_identical_runs_are_exact_with_collapsed_intervals():
    table = aggregate_intervals({"a": IDENTICAL_RUNS}, gamma=0.5, reps=200, seed=0).set_index("statistic")
    expected = {
        "IQM": 0.25,  # 16 scores, the lowest and highest 4 trimmed: mean of four 0.2s and four 0.3s
        "Median": 0.25,  # of the task means 0.1, 0.2, 0.3, 1.0
        "Mean": 0.4,
        "Optimality gap": 0.225,  # 0.5 − mean(0.1, 0.2, 0.3, min(1.0, 0.5))
    }
    for statistic, value in expected.items():
        row = table.loc[statistic]
        assert row.estimate == pytest.approx(value, abs=1e-12), statistic
        assert row.lo == pytest.approx(value, abs=1e-12) and row.hi == pytest.approx(value, abs=1e-12), statistic


def test_aggregates_of_varying_runs_are_exact_and_inside_their_intervals():
    scores = np.array([[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [10.0, 7.0]])  # [num_runs=4, num_tasks=2]
    table = aggregate_intervals({"a": scores}, gamma=5.0, reps=500, seed=3).set_index("statistic")
    expected = {
        "IQM": (2 + 4 + 5 + 6) / 4,  # sorted 0 1 2 4 5 6 7 10, two trimmed from each end
        "Median": (13 / 4 + 22 / 4) / 2,  # task means 3.25 and 5.5
        "Mean": (13 / 4 + 22 / 4) / 2,
        "Optimality gap": 5 - (0 + 1 + 2 + 5 + 4 + 5 + 5 + 5) / 8,
    }
    for statistic, value in expected.items():
        row = table.loc[statistic]
        assert row.estimate == pytest.approx(value, abs=1e-12), statistic
        assert row.lo <= row.estimate <= row.hi and row.lo < row.hi, statistic


def test_probability_of_improvement_known_cases():
    y = np.array([[0.0, 1.0], [0.5, 2.0], [0.2, 3.0]])  # [num_runs=3, num_tasks=2]
    table = improvement_probabilities({"x": y + 10, "y": y, "z": y.copy()}, [("x", "y"), ("y", "x"), ("z", "y")],
                                      reps=300, seed=0).set_index(["x", "y"])
    # X beats Y in every run of every task: P = 1 and no resample can change it; reversed, P = 0.
    assert tuple(table.loc[("x", "y")]) == (1.0, 1.0, 1.0)
    assert tuple(table.loc[("y", "x")]) == (0.0, 0.0, 0.0)
    same = table.loc[("z", "y")]  # identical scores: every comparison a tie or balanced, P = 1/2
    assert same.probability == pytest.approx(0.5) and same.lo <= 0.5 <= same.hi


def test_probability_of_improvement_equals_rliables():
    rng = np.random.default_rng(0)
    for runs_x, runs_y, tasks in [(3, 3, 2), (5, 2, 6), (1, 4, 1)]:
        # Small integers make ties frequent, the case where a hand-written count would most likely differ.
        x, y = rng.integers(0, 4, (runs_x, tasks)).astype(float), rng.integers(0, 4, (runs_y, tasks)).astype(float)
        assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)
    equal = rng.normal(size=(4, 3))
    assert probability_of_improvement(equal, equal) == metrics.probability_of_improvement(equal, equal) == 0.5


def test_performance_profile_of_identical_runs_is_exact():
    taus = np.array([0.05, 0.25, 0.5, 2.0])
    profile = performance_profiles({"a": IDENTICAL_RUNS}, taus, reps=200, seed=0)
    assert list(profile["fraction"]) == [1.0, 0.5, 0.25, 0.0]  # fraction of the scores above each τ
    assert list(profile["lo"]) == list(profile["hi"]) == [1.0, 0.5, 0.25, 0.0]


def test_seeded_global_rng_is_reproducible_and_restores_the_callers_state():
    np.random.seed(7)
    before = np.random.get_state()
    with seeded_global_rng(11):
        first = np.random.random(3)
    with seeded_global_rng(11):
        second = np.random.random(3)
    assert np.array_equal(first, second)
    assert same_rng_state(np.random.get_state(), before)


def test_variance_ratios_are_paired_geometric_means_with_t_intervals():
    log_ratios = np.array([0.0, 1.0, 2.0])  # log(var reinforce / var rloo) in repetitions 0, 1, 2
    rows = pd.DataFrame({
        "problem": "p", "batch_size": 4, "repetition": [0, 1, 2] * 2,
        "variant": ["rloo"] * 3 + ["reinforce"] * 3,
        "variance_trace": np.concatenate([np.full(3, 2.0), 2.0 * np.exp(log_ratios)]),
    })
    ratio = variance_ratios(rows, [("rloo", "reinforce")]).iloc[0]
    half_width = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # the log ratios have sd 1
    assert ratio.repetitions == 3
    assert ratio.ratio == pytest.approx(np.e)
    assert (ratio.ratio_lo, ratio.ratio_hi) == pytest.approx((np.exp(1 - half_width), np.exp(1 + half_width)))


def test_findings_flag_contradicted_declarations_heavy_tails_and_nonfinite_estimates():
    def rows(variant, declared_unbiased, pvalues, heavy=False, nonfinite=0):
        return pd.DataFrame({"variant": variant, "problem": "p", "batch_size": 4, "repetition": range(len(pvalues)),
                             "reps": 100, "bias_pvalue": pvalues, "declared_unbiased": declared_unbiased,
                             "heavy_tailed": heavy, "tail_kurtosis": 9.0 if heavy else 2.0, "nonfinite": nonfinite})
    measured = pd.concat([
        rows("suspect", True, [1e-4, 1e-3, 1e-5]),  # declared unbiased, rejects 3 of 3: chance gives 1e-6
        rows("fine", True, [0.5, 0.2, 0.004]),  # one rejection of 3 is within chance
        rows("biased", False, [1e-6, 1e-6, 1e-6], nonfinite=2),
        rows("subtle", False, [0.3, 0.6, 0.9]),
        rows("tails", True, [1e-5, 1e-5, 1e-5], heavy=True),  # optimistic p-values: left out of the bias test
    ], ignore_index=True)
    _, bias = bias_findings(measured)
    text = "\n".join(bias)
    assert "WARNING suspect on p: declared UNBIASED, yet the test rejects in 3 of 3" in text
    assert "biased (declared biased; rejections/measurements): detected on p 3/3." in text
    assert "subtle (declared biased; rejections/measurements): not on p 0/3" in text
    assert "(apart from the warnings above): 1 rejection in 3 measurements" in text
    assert "consistent with no bias" in text
    assert "WARNING fine" not in text and "tails" not in text
    _, reliability = reliability_findings(measured)
    assert any("3 of 15 measurements are heavy-tailed" in item and "tails (3)" in item for item in reliability)
    assert any("biased on p at N=4: 6 non-finite estimates of 300" in item for item in reliability)


# ------------------------------------------------------------------------------ a real sweep

@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> Path:
    config = load_config(ROOT / "configs" / "tiny.toml")
    # The config minimum of 100 resamples keeps the two report builds of this module fast.
    config = dataclasses.replace(config, report=dataclasses.replace(config.report, bootstrap_reps=100))
    root = tmp_path_factory.mktemp("results")
    run_sweep(config, root, executor="inprocess")
    return root / config.name


@dataclasses.dataclass(frozen=True)
class Build:
    index: Path
    rng_before: tuple
    rng_after: tuple


@pytest.fixture(scope="module")
def built(tiny_results, tmp_path_factory) -> Build:
    np.random.seed(2024)
    before = np.random.get_state()
    index, rebuilt = build_report(tiny_results, tmp_path_factory.mktemp("report") / "out")  # out dir does not exist yet
    assert rebuilt
    return Build(index, before, np.random.get_state())


def test_page_has_every_section_and_every_figure_embedded(built):
    html = built.index.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) >= 8 + 2 * 2 + 2  # measurement figures, 2 scores × 2 N intervals, 2 profiles
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|//)', html), "the page must not load anything external"
    for name in OUTPUTS:
        assert (built.index.parent / name).is_file(), name


def test_tables_have_the_expected_shape_and_anchors(built):
    out = built.index.parent
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3 * 2  # problems × variants × batch sizes
    intervals = pd.read_csv(out / "rliable_intervals.csv")
    assert len(intervals) == 2 * 2 * 3 * 4  # scores × batch sizes × variants × statistics
    # The reference's variance reduction is log(1) = 0 in every run, so its IQM interval is exactly [0, 0].
    reference = intervals[(intervals["variant"] == "reinforce") & (intervals["score"] == "variance_reduction")
                          & (intervals["statistic"] == "IQM")]
    assert (reference[["estimate", "lo", "hi"]].to_numpy() == 0).all()
    improvements = pd.read_csv(out / "probability_of_improvement.csv")
    assert len(improvements) == 2 * 2  # one pair × scores × batch sizes
    assert improvements["probability"].between(0, 1).all()
    findings = (out / "findings.txt").read_text(encoding="utf-8")
    assert "reinforce baseline=rloo vs reinforce" in findings and "36 of 36 cells finished" in findings


def test_build_is_deterministic_and_leaves_numpys_global_rng_alone(built, tiny_results, tmp_path):
    assert same_rng_state(built.rng_before, built.rng_after)
    np.random.seed(99)  # a different global state must not change the report
    second, _ = build_report(tiny_results, tmp_path)
    for name in OUTPUTS:
        assert (built.index.parent / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert second == tmp_path / "index.html"


def test_unchanged_results_reuse_the_report_and_a_new_cell_rebuilds_it(tiny_results, tmp_path):
    out = tmp_path / "out"
    assert build_report(tiny_results, out)[1]
    assert not build_report(tiny_results, out)[1]  # results and code unchanged: reused
    assert build_report(tiny_results, out, force=True)[1]
    results = tmp_path / "results"
    shutil.copytree(tiny_results, results)
    assert not build_report(results, out)[1]  # the same cells, copied with their times: reused
    next(results.glob("cell-*.parquet")).unlink()
    assert build_report(results, out)[1]  # a cell fewer: rebuilt
    assert not build_report(results, out)[1]


def _dump_dom(browser: str, page: Path, profile: Path) -> str:
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_headless_chromium_loads_every_image(built, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        message = "chromium not found on PATH: cannot check that the report's images load (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    dom = _dump_dom(browser, built.index, tmp_path / "profile")
    assert 'data-broken-images="0"' in dom
    assert dom.count("<img") > 0
    # The check itself must be able to fail: a page with one corrupted figure reports it.
    html = built.index.read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1), encoding="utf-8")
    assert 'data-broken-images="1"' in _dump_dom(browser, broken, tmp_path / "profile")


def test_a_sweep_too_small_for_rliable_is_reported_not_a_crash(tiny_results, tmp_path):
    # One problem and one repetition: no rliable aggregate and no interval on a variance ratio.
    small = tmp_path / "small"
    small.mkdir()
    shutil.copy(tiny_results / "_sweep.json", small)
    for cell in tiny_results.glob("cell-*.parquet"):
        row = pd.read_parquet(cell).iloc[0]
        if row["problem"] == "softmax-bandit" and row["repetition"] == 0:
            shutil.copy(cell, small)
    html = build_report(small, tmp_path / "out")[0].read_text(encoding="utf-8")
    assert "rliable aggregates across problems (tasks) and needs ≥ 2" in html
    assert "6 of 36 cells finished (a partial sweep" in html
    assert "one repetition: no interval" in (tmp_path / "out" / "findings.txt").read_text(encoding="utf-8")
    assert pd.read_csv(tmp_path / "out" / "rliable_intervals.csv").empty


# ------------------------------------------------------------------------------ bad input

def test_bad_results_folders_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such results folder"):
        build_report(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match="no _sweep.json"):
        build_report(tmp_path / "bare", tmp_path / "out")
    ResultsStore(tmp_path / "empty").prepare({"config": {}, "cells": 0})
    with pytest.raises(ConfigError, match="no finished cells"):
        build_report(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_report_error_exits_2_with_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such results folder" in error
