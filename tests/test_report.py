"""`pgvar report`: the rliable layer against answers computed by hand, paired variance ratios,
the grouping of variants into estimator families and one-option sweeps, the generated findings,
determinism, and a real tiny sweep of several estimator families rendered into one self-contained
page that headless Chromium loads without a broken image."""

from __future__ import annotations

import base64
import dataclasses
import json
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

from bench.config import ReportSettings
from bench.store import ResultsStore
from bench.sweep import load_config, run_sweep
from envs.spec import ConfigError
from pgvar.cli import main
from reports.families import (
    UNMATCHED_FAMILY,
    Family,
    axis_points,
    families,
    memberships,
    options_key,
    parse_tables,
    sweep_axes,
    table_labels,
    variants_by_table,
)
from reports import figures
from reports.figures import _spaced_labels
from reports.findings import bias_findings, fmt_ci, nonfinite_findings, ratio_phrase, reliability_findings, sweep_findings
from reports.report import _families_table, _rliable_section, build_report
from reports.results import load_sweep, variance_ratios, zero_width_intervals
from reports.verdict import (
    Why,
    fixed_theta_verdicts,
    ineligibility,
    reasons_text,
    relative_variance_table,
    verdict_csv,
)
from reports.rliable_stats import (
    MIN_RUNS,
    MIN_TASKS,
    aggregate_intervals,
    improvement_probabilities,
    ineligible_where,
    performance_profiles,
    probability_of_improvement,
    rliable_analysis,
    seeded_global_rng,
    where_text,
)

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("summary.csv", "aggregated.csv", "variance_ratios.csv", "rliable_intervals.csv",
           "probability_of_improvement.csv", "performance_profiles.csv", "findings.txt")
SECTIONS = ("fixed-verdict", "sweep", "reading", "findings", "measurements", "sweeps", "rliable", "summary")
OUTPUTS = (*OUTPUTS, "sweeps.csv", "verdict.csv", "relative_variance.csv", "comparisons.csv")
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


def test_bias_findings_hold_each_declaration_against_its_own_target_and_flag_heavy_tails():
    def rows(variant, declared_unbiased, pvalues, heavy=False, target="∇J"):
        return pd.DataFrame({"variant": variant, "problem": "p", "batch_size": 4, "repetition": range(len(pvalues)),
                             "reps": 100, "bias_pvalue": pvalues, "declared_unbiased": declared_unbiased,
                             "heavy_tailed": heavy, "tail_kurtosis": 9.0 if heavy else 2.0, "target": target})
    measured = pd.concat([
        rows("suspect", True, [1e-4, 1e-3, 1e-5]),  # declared unbiased, rejects 3 of 3: chance gives 1e-6
        rows("fine", True, [0.5, 0.2, 0.004]),  # one rejection of 3 is within chance
        rows("biased", False, [1e-6, 1e-6, 1e-6]),
        rows("subtle", False, [0.3, 0.6, 0.9]),
        rows("tails", True, [1e-5, 1e-5, 1e-5], heavy=True),  # optimistic p-values: left out of the bias test
        rows("entropy", True, [0.4, 0.7, 0.1], target="∇(J + 0.1·H)"),
        rows("natural", False, [1e-8, 1e-8, 0.5], target="(F + 0.01·I)⁻¹∇J"),
    ], ignore_index=True)
    _, bias = bias_findings(measured)
    text = "\n".join(bias)
    assert "WARNING suspect on p: declared UNBIASED for ∇J, yet the test rejects in 3 of 3" in text
    assert "biased (declared biased for ∇J; rejections/measurements): detected on p 3/3." in text
    assert "subtle (declared biased for ∇J; rejections/measurements): not on p 0/3" in text
    assert "Against ∇J, the declared-unbiased variants (apart from the warnings above) (1): 1 rejection in 3" in text
    assert "consistent with no bias" in text
    # Each target gets its own summary: the entropy-regularised variant is not pooled with ∇J's.
    assert "Against ∇(J + 0.1·H), the declared-unbiased variants (1): 0 rejections in 3 measurements" in text
    assert "natural (declared biased for (F + 0.01·I)⁻¹∇J; rejections/measurements): detected on p 2/3." in text
    assert "WARNING fine" not in text and "tails" not in text
    assert text.index("Against ∇J") < text.index("natural (declared")  # ∇J first, then the other targets
    _, reliability = reliability_findings(measured)
    assert any("3 of 21 measurements are heavy-tailed" in item and "tails (3)" in item for item in reliability)


def test_nonfinite_estimates_are_reported_per_variant_never_silently():
    points = pd.DataFrame({
        "variant": ["is kl=0.5", "is kl=0.5", "is kl=0.5", "plain"], "problem": ["a", "a", "b", "a"],
        "batch_size": [4, 16, 4, 4], "nonfinite": [3, 0, 5, 0], "estimates": [600, 600, 600, 600],
    })
    _, items = nonfinite_findings(points)
    assert items == ["is kl=0.5: 8 of 1800 estimates non-finite (0.44%): a N=4 3/600, b N=4 5/600.",
                     "The other 1 variants: no non-finite estimate."]
    _, clean = nonfinite_findings(points.assign(nonfinite=0))
    assert clean == ["No non-finite estimate in any of the 2 variants."]


# ------------------------------------------------------------------------------ families and sweeps

def _table(name, options=(), sweep=(), batch_sizes=()):
    """An [[estimators]] entry as `_sweep.json` records it."""
    return {"name": name, "options": [list(o) for o in options], "sweep": [[a, list(v)] for a, v in sweep],
            "problems": [], "batch_sizes": list(batch_sizes)}


# The grouping rule on the kind of config the default report runs.
TABLES = parse_tables([
    _table("reinforce", sweep=[("baseline", ["none", "rloo"])]),
    _table("reinforce", options=[("returns", "total")], sweep=[("baseline", ["none", "rloo"])]),
    _table("reinforce", options=[("discount_score", False)]),
    _table("reinforce", options=[("baseline", "value")], sweep=[("critic", ["oracle", "oracle_noisy:3"])],
           batch_sizes=[8]),
    _table("gae", options=[("critic", "fitted")], sweep=[("lambda", [0.0, 0.5, 1.0])]),
    # is-trajectory and is-per-decision take the same options: only the estimator tells their rows apart.
    _table("is-trajectory", sweep=[("behaviour", ["kl:0.01", "kl:0.2"])]),
    _table("is-per-decision", sweep=[("behaviour", ["kl:0.01", "kl:0.2"])]),
    _table("actor-critic", sweep=[("critic", ["oracle", "fitted"])]),
], batch_sizes=[2, 8])


def _rows_of(variants: dict[str, tuple[str, dict]]) -> pd.DataFrame:
    """Rows as a sweep writes them: variant label → (estimator, options)."""
    return pd.DataFrame([{"variant": v, "estimator": name, "estimator_options": options_key(name, options)}
                         for v, (name, options) in variants.items()])


VARIANT_OPTIONS = {
    "reinforce": ("reinforce", {}), "reinforce baseline=rloo": ("reinforce", {"baseline": "rloo"}),
    "reinforce returns=total": ("reinforce", {"returns": "total"}),
    "reinforce returns=total baseline=rloo": ("reinforce", {"returns": "total", "baseline": "rloo"}),
    "reinforce discount_score=false": ("reinforce", {"discount_score": False}),
    "reinforce baseline=value": ("reinforce", {"baseline": "value"}),
    "reinforce baseline=value critic=oracle_noisy:3": ("reinforce", {"baseline": "value", "critic": "oracle_noisy:3"}),
    **{f"gae lambda={lam:g} critic=fitted": ("gae", {"lambda": lam, "critic": "fitted"}) for lam in (0.0, 0.5, 1.0)},
    **{f"{name} behaviour=kl:{kl}": (name, {"behaviour": f"kl:{kl}"})
       for name in ("is-trajectory", "is-per-decision") for kl in ("0.01", "0.2")},
    "actor-critic": ("actor-critic", {}), "actor-critic critic=fitted": ("actor-critic", {"critic": "fitted"}),
    "reinforce entropy_coef=0.1": ("reinforce", {"entropy_coef": 0.1}),  # no table produces it
}


def test_families_group_tables_by_estimator_and_swept_options():
    rows = _rows_of(VARIANT_OPTIONS)
    by_table = variants_by_table(rows, memberships(TABLES))
    found = {f.title: f.variants for f in families(TABLES, by_table, rows["variant"])}
    assert found == {
        # The two baseline sweeps share a family; the table sweeping nothing joins it.
        "reinforce: baseline sweep": ("reinforce", "reinforce baseline=rloo", "reinforce returns=total",
                                      "reinforce returns=total baseline=rloo", "reinforce discount_score=false"),
        "reinforce baseline=value: critic sweep": ("reinforce baseline=value",
                                                   "reinforce baseline=value critic=oracle_noisy:3"),
        "gae critic=fitted: lambda sweep": ("gae lambda=0 critic=fitted", "gae lambda=0.5 critic=fitted",
                                            "gae lambda=1 critic=fitted"),
        "is-trajectory: behaviour sweep": ("is-trajectory behaviour=kl:0.01", "is-trajectory behaviour=kl:0.2"),
        "is-per-decision: behaviour sweep": ("is-per-decision behaviour=kl:0.01", "is-per-decision behaviour=kl:0.2"),
        "actor-critic: critic sweep": ("actor-critic", "actor-critic critic=fitted"),
        UNMATCHED_FAMILY: ("reinforce entropy_coef=0.1",),  # shown apart, never dropped
    }
    assert len(by_table) == len(VARIANT_OPTIONS) - 1  # each matched variant exactly once: no cross-estimator match
    assert TABLES[3].batch_sizes == (8,) and TABLES[0].batch_sizes == (2, 8)


def test_sweep_axes_are_numbers_when_the_values_are_and_keep_config_order():
    axes = {axis.option: axis for axis in sweep_axes(TABLES)}
    assert list(axes) == ["baseline", "critic", "lambda", "behaviour"]
    baseline, critic, lam, behaviour = axes["baseline"], axes["critic"], axes["lambda"], axes["behaviour"]
    assert baseline.tables == (0, 1) and baseline.numbers is None and baseline.x("rloo") == 1.0
    # Two tables sweep the critic: the values are their union in first-seen order, not numbers.
    assert critic.tables == (3, 7) and critic.values == ("oracle", "oracle_noisy:3", "fitted")
    assert critic.numbers is None and critic.x("fitted") == 2.0
    assert lam.numbers == (0.0, 0.5, 1.0) and lam.kind == "" and not lam.log_scale and lam.x("0.5") == 0.5
    assert behaviour.numbers == (0.01, 0.2) and behaviour.kind == "kl" and behaviour.log_scale
    assert behaviour.title == "behaviour (kl)" and behaviour.x("kl:0.2") == 0.2
    # Close values are not labelled on top of each other; the largest keeps its label.
    close = dataclasses.replace(lam, values=("0", "0.5", "0.9", "0.95", "1"), numbers=(0.0, 0.5, 0.9, 0.95, 1.0))
    assert _spaced_labels(close) == ["0", "0.5", "0.9", "", "1"]
    assert _spaced_labels(behaviour) == ["0.01", "0.2"]


def test_sweep_findings_give_the_trend_with_paired_variance_ratios():
    rows = _rows_of(VARIANT_OPTIONS)
    by_table = variants_by_table(rows, memberships(TABLES))
    gae = [f"gae lambda={lam} critic=fitted" for lam in ("0", "0.5", "1")]
    # Relative bias falls with λ; the variance doubles from λ=0 to 0.5 and quadruples to 1 in every repetition.
    points = pd.DataFrame({
        "problem": "garnet", "variant": gae, "batch_size": 8, "relative_bias": [0.5, 0.2, 0.01],
        "relative_bias_lo": [0.4, 0.1, 0.0], "relative_bias_hi": [0.6, 0.3, 0.05], "cosine_mean": [0.9, 0.8, 0.7],
        "variance_trace": [1.0, 2.0, 4.0], "nonfinite": 0, "estimates": 150, "heavy_tailed": [0, 0, 2],
        "repetitions": 3, "info_behaviour_kl": np.nan,
    })
    axis = next(a for a in sweep_axes(TABLES) if a.option == "lambda")
    frame = axis_points(points, by_table, axis, table_labels(TABLES, by_table))
    cells = pd.DataFrame({"problem": "garnet", "batch_size": 8, "variant": np.repeat(gae, 3),
                          "repetition": [0, 1, 2] * 3, "variance_trace": np.repeat([1.0, 2.0, 4.0], 3)
                          * np.tile([1.0, 3.0, 5.0], 3)})
    _, items = sweep_findings([(axis, frame)], cells)
    assert items == [
        "gae critic=fitted on garnet (N=8), lambda 0 → 1: relative bias falls from 0.5 [0.4, 0.6] to 0.01 [0, 0.05] "
        "while variance rises exactly 4× in every repetition (a fixed ratio, not an interval); cosine 0.9 → 0.7 (each lambda: 0: bias 0.5, variance ×1; 0.5: bias 0.2, "
        "variance ×2; 1: bias 0.01, variance ×4); heavy-tailed, so CIs too narrow, at 1 2/3 repetitions."]


def test_a_variant_two_tables_sweep_is_one_series_on_the_axis():
    """A baseline sweep repeated (configs/default.toml's rliable block repeats it at N = 16 for more repetitions)
    produces the same variants, whose points are the same: each is on the axis once, under the first table."""
    tables = parse_tables([_table("reinforce", sweep=[("baseline", ["none", "rloo"])]),
                           _table("reinforce", sweep=[("baseline", ["none", "rloo"])], batch_sizes=[8])],
                          batch_sizes=[2, 8])
    rows = _rows_of({v: VARIANT_OPTIONS[v] for v in ("reinforce", "reinforce baseline=rloo")})
    by_table = variants_by_table(rows, memberships(tables))
    assert len(by_table) == 4  # each variant in both tables
    points = pd.DataFrame({"problem": "garnet", "variant": ["reinforce", "reinforce baseline=rloo"] * 2,
                           "batch_size": [2, 2, 8, 8]})
    axis = next(a for a in sweep_axes(tables) if a.option == "baseline")
    frame = axis_points(points, by_table, axis, table_labels(tables, by_table))
    assert len(frame) == 4 and set(frame["table"]) == {0}
    assert sorted(zip(frame["variant"], frame["batch_size"])) == sorted(zip(points["variant"], points["batch_size"]))


# ------------------------------------------------------------------------------ the fixed-θ verdict

def _point(variant, mse, half_width, declared_unbiased=True, rejections=0, heavy=0, problem="p", target="∇J"):
    return {"problem": problem, "variant": variant, "batch_size": 16, "target": target, "mse": mse,
            "seconds_per_estimate": 2.0 if variant == "best" else 1.0,
            "mse_lo": mse - half_width, "mse_hi": mse + half_width, "declared_unbiased": declared_unbiased,
            "bias_rejections": rejections, "repetitions": 3, "heavy_tailed": heavy, "excess_nonfinite": 0,
            "degenerate": 0, "invalid": False, "trustworthy": heavy == 0, "untrustworthy_reasons": f"heavy-tailed {heavy}/3" if heavy else ""}


def test_the_verdict_never_recommends_a_biased_rejected_or_heavy_tailed_variant_and_names_ties():
    points = pd.DataFrame([
        _point("vanilla", 10.0, 1.0),
        _point("biased", 0.5, 0.1, declared_unbiased=False),  # lowest MSE, but biased
        _point("rejected", 0.6, 0.1, rejections=2),  # declared unbiased, the test rejects in 2 of 3: beyond chance
        _point("once", 2.2, 0.3, rejections=1),  # 1 of 3 rejections happens 3% of the time: still eligible, tied
        _point("heavy", 0.7, 0.1, heavy=1),  # its CI is too narrow
        _point("best", 2.0, 0.5),
        _point("same", 2.0 * (1 + 1e-13), 0.5),  # the same number up to rounding
        _point("close", 2.8, 0.4),  # CI [2.4, 3.2] overlaps [1.5, 2.5]
        _point("apart", 4.0, 0.3),  # CI [3.7, 4.3] does not
        _point("other target", 0.1, 0.01, target="∇(J + αH)"),  # another target: not compared at all
    ])
    rows = pd.DataFrame({"problem": ["p"] * 10, "batch_size": [16] * 10, "heavy_tailed": [True] + [False] * 9})
    verdicts = fixed_theta_verdicts(points, {"p": 16}, "vanilla", rows)
    verdict = verdicts.iloc[0]
    assert verdict.recommended == "best" and verdict.mse == 2.0
    assert verdict.identical == "same" and verdict.tied == "once; close"
    assert verdict_csv(verdicts).iloc[0].not_eligible_lower == (
        "biased (biased); rejected (unbiasedness test rejects 2/3); heavy (heavy-tailed 1/3)")
    assert verdict.mse_vs_reference == pytest.approx(0.2) and verdict.cost_vs_reference == pytest.approx(0.4)
    assert (verdict.heavy_tailed_measurements, verdict.measurements, verdict.eligible) == (1, 10, 6)
    # Nothing eligible: no recommendation rather than an untrustworthy one.
    none = fixed_theta_verdicts(points[points["variant"].isin(["biased", "heavy"])], {"p": 16}, "vanilla", rows)
    assert none.iloc[0].recommended == "" and none.iloc[0].eligible == 0


def test_one_rule_says_why_a_measurement_cannot_be_recommended_per_point_and_per_rliable_run():
    # ineligibility(declared unbiased, rejections, heavy-tailed, over the non-finite limit, degenerate, repetitions)
    assert ineligibility(True, 0, 0, 0, 0, 3) == ()
    assert ineligibility(True, 1, 0, 0, 0, 3) == ()  # 1 of 3 rejections at 1% happens 3% of the time: chance
    assert reasons_text(ineligibility(True, 2, 0, 0, 0, 3)) == "unbiasedness test rejects 2/3"  # P = 3e-4
    assert ineligibility(True, 1, 0, 0, 0, 10) == ()  # P(≥ 1 of 10) = 9.6%
    assert [r.why for r in ineligibility(True, 2, 0, 0, 0, 10)] == [Why.REJECTED]  # P(≥ 2 of 10) = 0.43%
    assert reasons_text(ineligibility(False, 3, 0, 0, 0, 3)) == "biased"  # declared: its test is not the reason
    assert reasons_text(ineligibility(True, 0, 1, 0, 0, 3)) == "heavy-tailed 1/3"
    assert reasons_text(ineligibility(False, 0, 1, 2, 3, 3)) == (
        "biased, heavy-tailed 1/3, non-finite > 5% 2/3, degenerate 3/3")
    # The verdict names every reason of a point: a biased one that is also heavy-tailed is both.
    points = pd.DataFrame([_point("vanilla", 10.0, 1.0), _point("both", 0.5, 0.1, declared_unbiased=False, heavy=1),
                           _point("rejected", 0.6, 0.1, rejections=2)])
    rows = pd.DataFrame({"problem": ["p"], "batch_size": [16], "heavy_tailed": [False]})
    verdicts = fixed_theta_verdicts(points, {"p": 16}, "vanilla", rows)
    assert [(v, [r.why for r in reasons]) for v, reasons in verdicts.iloc[0].not_eligible_lower] == [
        ("both", [Why.BIASED, Why.HEAVY_TAILED]), ("rejected", [Why.REJECTED])]
    assert verdict_csv(verdicts).iloc[0].not_eligible_lower == (
        "both (biased, heavy-tailed 1/3); rejected (unbiasedness test rejects 2/3)")
    ratios = pd.DataFrame({"problem": "p", "batch_size": 16, "x": ["both", "rejected"], "y": "vanilla",
                           "ratio": 2.0, "ratio_lo": 1.5, "ratio_hi": 2.5})
    heat = relative_variance_table(points, ratios, {"p": 16}, "vanilla").set_index("variant")
    assert heat["test_rejects"].to_dict() == {"vanilla": False, "both": False, "rejected": True}
    assert heat["biased"].to_dict() == {"vanilla": False, "both": True, "rejected": False}
    # rliable: the same rule per (variant, problem) over its repetitions, its problems grouped by reasons.
    problems = ("a", "b", "c")
    spec = [("ok", problems, True), ("biased", problems, False), ("rejected", problems, True),
            ("heavy", problems, True), ("once", problems, True)]
    rows = _rliable_rows(np.random.default_rng(0), [(v, "∇J", where, MIN_RUNS, 1.0, 0.0, unbiased)
                                                     for v, where, unbiased in spec])
    rows.loc[(rows["variant"] == "rejected") & (rows["repetition"] < 2), "bias_pvalue"] = 0.001  # 2 of 10
    rows.loc[(rows["variant"] == "once") & (rows["repetition"] == 0), "bias_pvalue"] = 0.001  # 1 of 10: chance
    rows.loc[(rows["variant"] == "heavy") & (rows["problem"] == "b") & (rows["repetition"] == 3), "heavy_tailed"] = True
    where = ineligible_where(rows)
    assert where["ok"] == {} and where["once"] == {}
    every = list(problems)
    assert where_text(where["biased"], every) == "biased on every problem"
    assert where_text(where["rejected"], every) == "unbiasedness test rejects 2/10 on every problem"
    assert where_text(where["heavy"], every) == "heavy-tailed 1/10 on b"


def test_zero_width_intervals_are_counted_and_never_printed_as_intervals():
    frame = pd.DataFrame({"mse_lo": [1.0, 2.0, np.nan], "mse_hi": [1.0, 3.0, np.nan], "lo": [0.5, 0.5, 0.5],
                          "hi": [0.5, 0.6, 0.7]})
    assert zero_width_intervals(frame) == 2  # one mse interval, one lo/hi; the NaN one is no interval at all
    assert fmt_ci(1.0, 1.0, 1.0) == "1 (no spread)" and fmt_ci(1.0, 0.5, 2.0) == "1 [0.5, 2]"
    # Float noise around a ratio of exactly 1 is "identical", never a cut or a rise of "1× [1, 1]".
    assert ratio_phrase(1.0000000000000002, 1.0000000000000002, 1.0000000000000004).endswith(
        "identical to float rounding (ratio 1×)")
    assert ratio_phrase(1.2, 1.1, 1.3).startswith("cuts variance 1.2×")
    # A ratio the same in every repetition (rloo = N/(N−1) × batch_mean) is a fixed relation, not an interval; a
    # narrow real interval gets the digits to print apart.
    fixed = (64 / 63) ** 2
    assert ratio_phrase(1 / fixed, 1 / fixed * (1 - 1e-15), 1 / fixed).startswith("raises variance exactly 1.03×")
    assert ratio_phrase(0.9996, 0.9995, 0.9997) == "raises variance 1.0004× [1.0003, 1.0005]"


def _rliable_rows(rng, spec) -> pd.DataFrame:
    """Stored-row-like records: spec = [(variant, target, problems, repetitions, variance, bias², declared unbiased)]
    at N = 4, each repetition's variance jittered ±10% (so intervals have width)."""
    records = []
    for variant, target, problems, repetitions, variance, bias2, unbiased in spec:
        for problem in problems:
            for repetition in range(repetitions):
                noisy = variance * rng.uniform(0.9, 1.1)
                records.append({"problem": problem, "variant": variant, "batch_size": 4, "repetition": repetition,
                                "target": target, "variance_trace": noisy, "mse": noisy + bias2,
                                "declared_unbiased": unbiased, "bias_pvalue": 0.5, "heavy_tailed": False,
                                "nonfinite": 0, "reps": 100})
    return pd.DataFrame(records)


def test_rliable_families_need_three_problems_with_ten_repetitions_and_score_mse():
    three, two = ("a", "b", "c"), ("a", "b")
    rows = _rliable_rows(np.random.default_rng(0), [
        ("ref", "∇J", three, MIN_RUNS, 1.0, 0.0, True),
        ("y", "∇J", three, MIN_RUNS, 0.5, 0.0, True),  # unbiased, half the reference's MSE
        ("x", "∇J", three, MIN_RUNS, 0.1, 0.1, False),  # lower MSE still, but declared biased: never the best
        ("v", "∇J", three, MIN_RUNS, 0.1, 2.0, False),  # a tenth of the variance, 2.1× the MSE: loses on MSE
        ("on-two", "∇J", two, MIN_RUNS, 0.5, 0.0, True),
        ("three-runs", "∇J", three, 3, 0.5, 0.0, True),
        ("natural", "(F + δI)⁻¹∇J", three, MIN_RUNS, 0.5, 0.0, True),
    ])
    family_list = [Family("A", (0,), ("ref", "y", "x", "v")), Family("B", (1,), ("on-two",)),
                   Family("C", (2,), ("three-runs",)), Family("D", (3,), ("natural",))]
    settings = ReportSettings(reference_variant="ref", pairs=(("x", "ref"),), bootstrap_reps=200, seed=0)
    np.random.seed(7)
    before = np.random.get_state()
    result = rliable_analysis(rows, family_list, settings)
    assert same_rng_state(before, np.random.get_state())
    a, b, c, d = result.qualifications
    assert (a.qualifies, a.batch_size, a.tasks, a.variants) == (True, 4, three, ("y", "x", "v"))  # ref: the zero
    assert not b.qualifies and "on 2 problem(s) (a, b) at N=4; rliable needs ≥ 3 problems" in b.why
    assert not c.qualifies and "on no problem at any N" in c.why and "3 repetition(s) per measurement" in c.why
    assert not d.qualifies and "not the reference's ∇J" in d.why
    assert all("\n" not in q.why for q in result.qualifications)
    assert set(result.intervals["family"]) == {"A"} and set(result.intervals["score"]) == {"mse_reduction"}
    iqm = result.intervals[result.intervals["statistic"] == "IQM"].set_index("variant")
    assert iqm.loc["x", "estimate"] > iqm.loc["y", "estimate"] > 0 > iqm.loc["v", "estimate"]
    assert ((iqm["lo"] <= iqm["estimate"]) & (iqm["estimate"] <= iqm["hi"]) & (iqm["lo"] < iqm["hi"])).all()
    winner = result.winners.iloc[0]
    assert winner.best == "y" and winner.runs == MIN_RUNS and winner.higher_not_eligible == "x (biased on every problem)"
    probability = result.improvements.set_index(["x", "y"])["probability"]
    # v has a tenth of the reference's variance but loses every run on MSE; y wins every run; the configured pair too
    assert probability[("y", "ref")] == 1.0 and probability[("y", "v")] == 1.0 and probability[("x", "ref")] == 1.0
    assert ("v", "ref") not in probability.index  # only the best's pairs and the configured ones
    again = rliable_analysis(rows, family_list, settings)
    pd.testing.assert_frame_equal(result.intervals, again.intervals)
    pd.testing.assert_frame_equal(result.improvements, again.improvements)


# ------------------------------------------------------------------------------ a real sweep

# configs/tiny.toml (a REINFORCE baseline sweep on two problems at N = 2, 8) plus, on garnet at N = 8
# only, a critic sweep, a λ sweep and a KL sweep: four families, four one-option sweeps.
FAMILY_TABLES = """
[[estimators]]
name = "reinforce"
options = { baseline = "value" }
sweep.critic = ["oracle", "oracle_noisy:1", "fitted_same_batch"]
problems = ["garnet"]
batch_sizes = [8]

[[estimators]]
name = "gae"
options = { critic = "fitted", critic_samples = 50 }
sweep.lambda = [0.0, 1.0]
problems = ["garnet"]
batch_sizes = [8]

[[estimators]]
name = "is-per-decision"
sweep.behaviour = ["kl:0.05", "kl:0.5"]
problems = ["garnet"]
batch_sizes = [8]
"""
TINY_CELLS = (2 * 3 * 2 + 7) * 3  # (problems × baselines × N + the garnet variants) × repetitions


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text((ROOT / "configs" / "tiny.toml").read_text() + FAMILY_TABLES)
    config = load_config(path)
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
    # The verdict's heat map, 4 families × (against N, bias² bars), 4 one-option sweeps; no rliable figure at R = 3.
    assert len(images) == 1 + 4 * 2 + 4
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|//)', html), "the page must not load anything external"
    for name in OUTPUTS:
        assert (built.index.parent / name).is_file(), name
    # The configured pair's variance comparisons are shown once, as its table; findings.txt has them as text.
    pair = "reinforce baseline=rloo vs reinforce: "
    assert html.count(pair) == 1 and f"<summary>{pair}" in html and "<summary>Configured comparisons" not in html
    assert f"- {pair}garnet" in (built.index.parent / "findings.txt").read_text(encoding="utf-8")


def test_the_verdict_table_comes_before_the_first_figure_and_counts_are_on_top(built):
    html = built.index.read_text(encoding="utf-8")
    verdict = html.index('<section id="fixed-verdict">')
    assert verdict < html.index("<table", verdict) < html.index("<img") < html.index('<section id="sweep">')
    assert re.search(r"Fixed-θ measurements: heavy-tailed \d+ of \d+ \(", html[:verdict])
    assert "Zero-width intervals among the fixed-θ numbers shown: 0;" in html[:verdict]
    assert not re.search(r"\[([^\[\],]+), \1\]", html)  # no "[a, a]" anywhere
    assert "[1, 1]" not in html and "no spread" not in html


def test_tables_have_the_expected_shape_and_anchors(built):
    out = built.index.parent
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3 * 2 + 7  # problems × baselines × batch sizes, and the garnet-only variants
    # R = 3 repetitions: no rliable over them (its intervals would be bootstrap over 3 near-equal averages).
    for name in ("rliable_intervals.csv", "probability_of_improvement.csv", "performance_profiles.csv"):
        assert pd.read_csv(out / name).empty, name
    families_csv = pd.read_csv(out / "rliable_families.csv")
    assert len(families_csv) == 4 and not families_csv["qualifies"].any()
    assert families_csv["why_not"].str.contains(f"rliable needs ≥ {MIN_TASKS} problems at one N \\(it has 3 "
                                                "repetition\\(s\\)").all()
    assert "Families not aggregated, each with why:" in built.index.read_text(encoding="utf-8")
    verdict = pd.read_csv(out / "verdict.csv")
    assert len(verdict) == 2 and set(verdict["batch_size"]) == {8}  # one row per problem at its headline N
    # batch_mean is declared biased: never the recommendation, whatever its MSE.
    assert not verdict["recommended"].str.contains("batch_mean").any()
    findings = (out / "findings.txt").read_text(encoding="utf-8")
    assert "reinforce baseline=rloo vs reinforce" in findings and f"{TINY_CELLS} of {TINY_CELLS} cells" in findings


def test_families_and_one_option_sweeps_are_drawn_tabled_and_summarised(built):
    out = built.index.parent
    html = built.index.read_text(encoding="utf-8")
    titles = ["reinforce: baseline sweep", "reinforce baseline=value: critic sweep",
              "gae critic=fitted critic_samples=50: lambda sweep", "is-per-decision: behaviour sweep"]
    measurements = html[html.index('<section id="measurements">'):html.index('<section id="sweeps">')]
    assert [t for t in titles if f"<summary>{t}</summary>" in measurements] == titles
    assert set(pd.read_csv(out / "aggregated.csv")["family"]) == set(titles)
    sweeps_html = html[html.index('<section id="sweeps">'):html.index('<section id="rliable">')]
    assert [a for a in ("baseline", "critic", "lambda", "behaviour (kl)") if f"<summary>{a}</summary>" in sweeps_html] == [
        "baseline", "critic", "lambda", "behaviour (kl)"]
    assert sweeps_html.count("<img") == 4

    sweeps = pd.read_csv(out / "sweeps.csv")
    # baseline: 2 problems × 3 values × 2 N; the garnet-only sweeps at N = 8: 3 critics, 2 λ, 2 KLs.
    assert sweeps.groupby("axis").size().to_dict() == {"baseline": 12, "critic": 3, "lambda": 2, "behaviour": 2}
    kl = sweeps[sweeps["axis"] == "behaviour"].sort_values("x")
    assert list(kl["value"]) == ["kl:0.05", "kl:0.5"] and list(kl["x"]) == [0.05, 0.5]
    assert list(kl["info_behaviour_kl"]) == pytest.approx([0.05, 0.5], rel=1e-3)  # from estimator_info
    critic = sweeps[sweeps["axis"] == "critic"]
    assert list(critic["x"]) == [0.0, 1.0, 2.0]  # not numbers: positions in config order
    assert list(critic["declared_unbiased"]) == [True, True, False]  # fitted on the batch it is used on: biased

    findings = (out / "findings.txt").read_text(encoding="utf-8")
    sweep_lines = findings[findings.index("Sweeps of one option"):findings.index("Bias test")].split("\n")[1:-2]
    assert len(sweep_lines) == 2 + 1 + 1 + 1  # the baseline sweep on 2 problems; critic, λ and KL on garnet
    garnet = "garnet states=6 gamma=0.9 horizon=20"
    assert any(line.startswith(f"- gae critic=fitted critic_samples=50 on {garnet} (N=8), lambda 0 → 1: relative ")
               for line in sweep_lines)
    behaviour = next(line for line in sweep_lines if line.startswith(f"- is-per-decision on {garnet} (N=8), behav"))
    assert "achieved KL 0.05 → 0.5" in behaviour and "non-finite estimates 0/150 → 0/150" in behaviour
    assert "Non-finite estimates" in findings and "No non-finite estimate in any of the 10 variants." in findings


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
    assert "Families not aggregated" in html and "(it has 1 repetition(s) per measurement at most)" in html
    assert f"6 of {TINY_CELLS} cells finished (a partial sweep" in html
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


# ------------------------------------------------------------------ results and --out under attack (issue 14)

def _copy(tiny_results: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results" / tiny_results.name
    shutil.copytree(tiny_results, copy)
    return copy


def _first_screen(html: str) -> str:
    """The page up to the provenance facts: what a reader sees before scrolling."""
    return html[:html.index("git commit")]


def test_stale_cells_of_a_larger_config_are_left_out_with_a_note(tiny_results, tmp_path):
    results = _copy(tiny_results, tmp_path)
    # The same sweep rerun with N = 8 only: its cells are already there, and the N = 2 cells become stale.
    path = tmp_path / "smaller.toml"
    path.write_text(((ROOT / "configs" / "tiny.toml").read_text() + FAMILY_TABLES)
                    .replace("batch_sizes = [2, 8]", "batch_sizes = [8]", 1))
    config = load_config(path)
    config = dataclasses.replace(config, report=dataclasses.replace(config.report, bootstrap_reps=100))
    summary = run_sweep(config, results.parent, executor="inprocess")
    assert summary.ran == 0 and summary.cells == TINY_CELLS - 2 * 3 * 3  # problems × baselines × repetitions at N=2
    stale = TINY_CELLS - summary.cells
    warnings = []
    index, _ = build_report(results, tmp_path / "out", warn=warnings.append)
    html = index.read_text(encoding="utf-8")
    assert f"{stale} stale cell file(s) of another config left out" in _first_screen(html)
    assert f"{summary.cells} finished of {summary.cells} planned" in html  # not "36 finished of 18 planned"
    assert len(warnings) == 1 and f"{stale} stale cell file(s)" in warnings[0]
    assert set(pd.read_csv(tmp_path / "out" / "summary.csv")["batch_size"]) == {8}


def test_unreadable_files_are_skipped_and_named_on_the_first_screen(tiny_results, tmp_path, capsys):
    results = _copy(tiny_results, tmp_path)
    cells = sorted(results.glob("cell-*.parquet"))
    truncated, empty, other_schema, wrong_type, folder = cells[:5]
    truncated.write_bytes(truncated.read_bytes()[:1000])
    empty.write_bytes(b"")
    cell_id = other_schema.name[len("cell-"):-len(".parquet")]
    pd.DataFrame({"cell_id": [cell_id], "x": [1.0]}).to_parquet(other_schema)
    frame = pd.read_parquet(wrong_type)
    frame["variance_trace"] = frame["variance_trace"].astype(str)
    frame.to_parquet(wrong_type)
    folder.unlink()
    folder.mkdir()  # a cell path that is a folder
    (results / "notes.txt").write_text("a foreign text file")
    (results / "subfolder").mkdir()

    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pgvar: warning:") and "7 unreadable file(s) skipped" in err
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    first = _first_screen(html)
    assert "Warning: 7 unreadable file(s) skipped" in first
    expected = {truncated.name: "unreadable Parquet", empty.name: "unreadable Parquet",
                other_schema.name: "lacks columns", wrong_type.name: "column variance_trace is string, expected a number",
                folder.name: "is a folder, not a cell file", "notes.txt": "a file `pgvar sweep` does not write",
                "subfolder": "a folder `pgvar sweep` does not write"}
    # The first screen names the first five and says how many more; the Sweep section lists them all.
    assert first.count("<li>skipped ") == 5 + 1 and "<li>skipped … and 2 more, all listed below</li>" in first
    listed = html[html.index("<h3>Files skipped</h3>"):]
    for name, why in expected.items():
        assert re.search(f"<li>{re.escape(name)}: [^<]*{re.escape(why)}", listed), name
        assert str(results) not in listed  # named, not a long absolute path
    assert f"{TINY_CELLS - 5} finished of {TINY_CELLS} planned" in html


def test_the_report_reads_the_report_table_through_the_sweeps_parser(tiny_results, tmp_path):
    # One class and one parser for [report]: what the sweep recorded is what the report compares.
    assert load_sweep(tiny_results).settings == ReportSettings("reinforce", (("reinforce baseline=rloo", "reinforce"),),
                                                              bootstrap_reps=100, seed=0)
    results = _copy(tiny_results, tmp_path)
    meta = json.loads((results / "_sweep.json").read_text())
    meta["config"]["report"]["bootstrap_reps"] = 5
    (results / "_sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"_sweep.json: unreadable sweep metadata \(ConfigError: config: "
                                          r"report.bootstrap_reps: expected an integer ≥ 100 and ≤ 100000, got 5\)"):
        load_sweep(results)


def test_results_whose_options_no_longer_resolve_still_report(tiny_results, tmp_path):
    # The sweep recorded each table's variant labels: the report groups rows by table without the registry, so an
    # option renamed since (here every swept one) does not break old results.
    results = _copy(tiny_results, tmp_path)
    meta = json.loads((results / "_sweep.json").read_text())
    assert len(meta["table_variants"]) == len(meta["config"]["estimators"])
    for table in meta["config"]["estimators"]:
        table["sweep"] = [[f"{axis}_renamed", values] for axis, values in table["sweep"]]
    (results / "_sweep.json").write_text(json.dumps(meta))
    sweep = load_sweep(results)
    by_table = variants_by_table(sweep.rows, memberships(sweep.tables))
    assert set(by_table["variant"]) == set(sweep.variants)
    assert UNMATCHED_FAMILY not in {f.title for f in families(sweep.tables, by_table, sweep.variants)}
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    # Records from before the labels were kept fall back to resolving options with today's registry.
    del meta["table_variants"]
    (results / "_sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"estimators\[0\] of the recorded config no longer resolves"):
        memberships(load_sweep(results).tables)


def test_failed_cells_are_counted_on_the_first_screen(tiny_results, tmp_path):
    from bench.cells import expand
    from bench.executors import failure_record

    results = _copy(tiny_results, tmp_path)
    path = tmp_path / "tiny.toml"
    path.write_text((ROOT / "configs" / "tiny.toml").read_text() + FAMILY_TABLES)
    cell = expand(load_config(path))[0][-1]
    store = ResultsStore(results)
    store.remove_cell(cell.cell_id)
    store.record_failure(cell.cell_id, failure_record(cell, RuntimeError("the cell raised")))
    html = build_report(results, tmp_path / "out")[0].read_text(encoding="utf-8")
    first = _first_screen(html)
    assert "1 cell(s) failed" in first and "RuntimeError: the cell raised" in first
    assert f"{TINY_CELLS - 1} finished of {TINY_CELLS} planned, 1 failed" in first


def test_out_inside_or_around_the_results_a_file_or_unwritable_is_one_line(tiny_results, tmp_path, monkeypatch):
    results = _copy(tiny_results, tmp_path)
    before = sorted(p.name for p in results.iterdir())
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("someone's work")
    cases = {
        results: "is inside the results folder",
        results / "report": "is inside the results folder",
        results.parent: "holds the results folder",
        tmp_path / "a-file": "exists and is not a folder",
        tmp_path / "a-file" / "out": "cannot",
        Path("/proc/pgvar-report/out"): "cannot",
        tmp_path / "theirs": "holds files that are not a report's (thesis.tex)",
    }
    for out, message in cases.items():
        with pytest.raises(ConfigError) as err:
            build_report(results, out)
        assert message in str(err.value) and "\n" not in str(err.value), out
    monkeypatch.chdir(tmp_path / "theirs")
    with pytest.raises(ConfigError, match="is the current folder or one of its parents"):
        build_report(results, Path("."))
    assert sorted(p.name for p in results.iterdir()) == before
    assert (tmp_path / "theirs" / "thesis.tex").read_text() == "someone's work"
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_report_killed_mid_build_keeps_the_previous_one_and_is_not_up_to_date(tiny_results, tmp_path, monkeypatch):
    results = _copy(tiny_results, tmp_path)
    out = tmp_path / "out"
    assert build_report(results, out)[1]
    previous = {name: (out / name).read_bytes() for name in os.listdir(out)}
    next(results.glob("cell-*.parquet")).unlink()  # the results change: the next report must be rebuilt

    def killed(*_, **__):
        raise RuntimeError("killed while writing index.html")

    monkeypatch.setattr("reports.page.page", killed)
    with pytest.raises(RuntimeError, match="killed"):
        build_report(results, out)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == previous  # whole, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "results"]  # no temporary folder left
    monkeypatch.undo()
    assert build_report(results, out)[1], "the previous report matches the old results only: rebuilt"
    assert not build_report(results, out)[1]


def test_a_build_killed_between_its_two_renames_is_recovered(tiny_results, tmp_path):
    results = _copy(tiny_results, tmp_path)
    out = tmp_path / "out"
    build_report(results, out)
    page_bytes = (out / "index.html").read_bytes()
    os.rename(out, tmp_path / ".out.previous-12345")  # the state a kill leaves between the two renames
    (tmp_path / ".out.building-12345-x").mkdir()  # and a half-written build
    index, rebuilt = build_report(results, out)
    assert not rebuilt and index.read_bytes() == page_bytes  # the old report put back, and it is up to date
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "results"]


def test_an_up_to_date_check_needs_every_file(tiny_results, tmp_path):
    out = tmp_path / "out"
    build_report(tiny_results, out)
    (out / "summary.csv").unlink()
    assert build_report(tiny_results, out)[1]


# A sweep whose REINFORCE block has 10 repetitions on three problems (rliable's minimum), and an off-policy estimator
# with the sweep's 2: the first family is aggregated, the second listed with why.
RLIABLE_SWEEP = """
name = "rliable"
reps = 10
repetitions = 2
seed = 0
batch_sizes = [4]

[[problems]]
env = "softmax-bandit"
theta = "random:0.5:1"

[[problems]]
env = "garnet"
options = { gamma = 0.9, horizon = 5, states = 3 }

[[problems]]
env = "contextual-bandit"

[[estimators]]
name = "reinforce"
sweep.baseline = ["rloo", "batch_mean"]
repetitions = 10

[[estimators]]
name = "reinforce"
options = { returns = "total" }
repetitions = 10

[[estimators]]
name = "is-per-decision"
problems = ["garnet"]

[report]
reference_variant = "reinforce returns=total"
bootstrap_reps = 100
"""


def test_a_family_with_ten_repetitions_on_three_problems_gets_rliable_aggregates(tmp_path):
    # The rliable section alone (the rest of the page draws a dozen figures this test does not need).
    path = tmp_path / "rliable.toml"
    path.write_text(RLIABLE_SWEEP)
    run_sweep(load_config(path), tmp_path / "results", executor="inprocess", show_progress=False)
    sweep = load_sweep(tmp_path / "results" / "rliable")
    family_list = families(sweep.tables, variants_by_table(sweep.rows, memberships(sweep.tables)), sweep.variants)
    result = rliable_analysis(sweep.rows, family_list, sweep.settings)
    with figures.report_style():
        section = _rliable_section(result, sweep, figures.variant_style(sweep.variants))
    assert len(re.findall(r"<img ", section)) == 2  # the family's interval estimates and performance profile
    # its best eligible variant is rloo (batch_mean's lower MSE is bought with its bias: named, never the best)
    baselines = _families_table(result).set_index("family").loc["reinforce: baseline sweep"]
    assert baselines.qualifies and baselines.batch_size == 4 and baselines.runs == 10
    assert baselines.best == "reinforce baseline=rloo" and baselines.best_lo < baselines.best_iqm < baselines.best_hi
    assert baselines.higher_not_eligible == "reinforce baseline=batch_mean (biased on every problem)"
    assert "<td>reinforce baseline=rloo</td>" in section and "reinforce baseline=batch_mean (biased on every" in section
    assert ("Families not aggregated, each with why:" in section and "is-per-decision: has ≥ 10 repetitions"
            in section and "rliable needs ≥ 3 problems at one N (it has 2 repetition(s)" in section)
    assert set(result.intervals["num_runs"]) == {10} and set(result.intervals["num_tasks"]) == {3}
    assert not re.search(r"\[([^\[\],]+), \1\]", section)  # a zero-width interval is "no spread", never "[a, a]"


def test_the_sweep_section_names_the_batch_sizes_measured_not_the_top_level_list():
    """A problem's or a table's own N (configs/default.toml measures the Gaussian bandit up to 4096, the top-level
    list stops at 256) are in the sweep's facts: the N are read off the rows."""
    from reports.report import _batch_sizes_text

    rows = pd.DataFrame({"batch_size": [256, 4, 4096, 1, 4]})
    assert _batch_sizes_text(rows) == "1, 4, 256, 4096"
