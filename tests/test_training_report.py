"""The Training section's statistics (reports/training.py) and the report built with `--training`.

Rows are made here with bench.training.train on tiny settings and converted to the stored schema of the training
sweep (kind="train", see /bench/cells.py), and noise-scale rows by hand. Statistical tests use fixed seeds and
state their false-positive rate (the probability that they fail for a correct implementation)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cells import cell_seed, run_columns
from bench.store import ResultsStore
from bench.training import TrainSettings, train
from envs import make_problem
from envs.spec import ConfigError
from reports import training as tr

# ------------------------------------------------------------------------------------------- row fixtures


def run_row(problem_label: str, env: str, env_options: dict, estimator: str, options: dict, variant: str,
            settings: TrainSettings, seed_index: int) -> dict:
    """One stored training row (the plan's schema) from an actual run of bench.training.train."""
    problem = make_problem(env, env_options)
    run = train(problem, estimator, settings, estimator_options=options, show_progress=False)
    identity = [problem_label, variant, settings.optimizer, settings.lr, settings.batch_size, seed_index]
    cell_id = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    return {
        "kind": "train", "cell_id": cell_id, "sweep": "tiny-train", "problem": problem_label, "env": env,
        "env_options": json.dumps(env_options, sort_keys=True), "theta": "default", "estimator": estimator,
        "variant": variant, "estimator_options": json.dumps(options, sort_keys=True),
        "optimizer": settings.optimizer, "lr": float(settings.lr), "batch_size": settings.batch_size,
        "budget": settings.budget, "seed_index": seed_index, "seed": settings.seed,
        **run_columns(run, problem),
    }


ESTIMATORS = [("exact", {}, "exact"), ("reinforce", {}, "reinforce"),
              ("reinforce", {"baseline": "rloo"}, "reinforce baseline=rloo")]
# Two one-step problems keep the ~100 runs to seconds (a garnet run costs ~1 s: J is exact at every update).
PROBLEMS = [("softmax-bandit", "softmax-bandit", {}), ("bandit-1-0.7-0", "softmax-bandit", {"probs": [1.0, 0.7, 0.0]})]


def tiny_training_rows(seeds: int = 4, lrs=(0.3, 3.0, 30.0), batch_sizes=(4, 8), budget: int = 64) -> list[dict]:
    rows = []
    for label, env, options in PROBLEMS:
        for seed_index in range(seeds):
            seed = cell_seed(0, env, options, "default", "train", seed_index)
            for estimator, est_options, variant in ESTIMATORS:
                for batch_size in batch_sizes:
                    for lr in lrs:
                        settings = TrainSettings(lr=lr, batch_size=batch_size, budget=budget, seed=seed)
                        rows.append(run_row(label, env, options, estimator, est_options, variant, settings,
                                            seed_index))
    return rows


AT_THETA0 = {"path_target": 0.0, "path_score": 0.0, "path_steps": 0, "path_reached": True}


def noise_rows() -> list[dict]:
    """Two hand-made noise-scale rows: one where the model applies, one where it does not."""
    base = {"kind": "noise_scale", "sweep": "tiny-train", "env": "softmax-bandit", "theta": "default",
            "env_options": "{}", "estimator": "reinforce", "estimator_options": "{}", "reps": 200, "nonfinite": 0}
    return [
        {**base, "cell_id": "aa01", "problem": "bandit-1-0.7-0", "variant": "reinforce", "batch_size": 4,
         "grad_norm_sq": 0.04,
         "trace_sigma": 0.5, "b_simple": 50.0, "curvature": 0.01, "trace_h_sigma": 0.02, "b_noise": 8.0,
         "eps_max": 4.0, "eps_opt": 4.0 / 3.0, "step_length": 0.26, "model_applies": True, **AT_THETA0},
        {**base, "cell_id": "aa02", "problem": "softmax-bandit", "variant": "reinforce",
         "batch_size": 4, "grad_norm_sq": 0.01, "trace_sigma": 0.3, "b_simple": 120.0, "curvature": -0.002,
         "trace_h_sigma": 0.01, "b_noise": -20.0, "eps_max": math.nan, "eps_opt": math.nan, "step_length": math.nan,
         "model_applies": False, **AT_THETA0},
    ]


def write_store(folder, rows) -> None:
    store = ResultsStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        store.write(row["cell_id"], row)
    (folder / "_sweep.json").write_text(json.dumps({"cell_ids": [r["cell_id"] for r in rows]}))


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return tiny_training_rows()


@pytest.fixture(scope="module")
def training_dir(rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "tiny-train"
    write_store(folder, rows + noise_rows())
    return folder


def frame_of(records: list[dict]) -> pd.DataFrame:
    return tr.derive(pd.DataFrame(records))


# -------------------------------------------------------------------------------------- the paired bootstrap


def test_paired_bootstrap_covers_the_true_difference_at_its_nominal_rate():
    """Known case: pairs x_i = u_i + e_i + δ, y_i = u_i + e'_i with a seed effect u_i
    (sd 5) far larger than the noise (sd 1): the 95% paired interval for δ must cover it in ≈ 95% of 500
    experiments of n = 30 pairs. The percentile bootstrap of a mean of 30 normals covers ≈ 94%; the test accepts
    coverage in [0.91, 0.98]: with 500 Bernoulli(0.94) trials (sd 0.0106) that is ≥ 2.8 sd below and 3.8 sd above,
    false-positive rate ≈ 0.3%. It also checks that the pairing is used: the median width must be that of an
    interval for the noise alone, 2·1.96·√(2/30) ≈ 1.01 (within [0.85, 1.1]×: the median of 500 widths varies by
    < 1%, false-positive rate < 1e-6), where an unpaired interval would be 2·1.96·√(52/30) ≈ 5.2 wide."""
    rng = np.random.default_rng(20261201)
    delta, n, covered, widths = 0.3, 30, 0, []
    for experiment in range(500):
        u = rng.normal(0, 5, n)
        x, y = u + rng.normal(0, 1, n) + delta, u + rng.normal(0, 1, n)
        point, low, high = tr.paired_bootstrap(x, y, np.random.default_rng([7, experiment]), 1000)
        assert point == pytest.approx(np.mean(x - y))
        covered += low <= delta <= high
        widths.append(high - low)
    assert 0.91 <= covered / 500 <= 0.98, covered / 500
    assert 0.85 <= np.median(widths) / (2 * 1.96 * math.sqrt(2 / n)) <= 1.1, np.median(widths)


def test_paired_bootstrap_is_deterministic_and_says_no_spread_when_all_pairs_agree():
    x, y = np.array([0.5, 0.7, 0.2, 0.9]), np.array([0.1, 0.2, 0.3, 0.4])
    first = tr.paired_bootstrap(x, y, tr.stable_generator(0, "a"), 500)
    assert first == tr.paired_bootstrap(x, y, tr.stable_generator(0, "a"), 500)
    same = tr.paired_bootstrap(x, x - 0.25, tr.stable_generator(0, "b"), 500)
    assert same == (pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))
    assert tr.fmt_interval(0.25, 0.25, 0.25) == "0.25 (no spread)"
    with pytest.raises(ValueError, match="same shape"):
        tr.paired_bootstrap(x, y[:3], tr.stable_generator(0), 10)


def test_single_task_bootstrap_matches_rliables_point_estimates():
    from rliable import metrics
    values = np.random.default_rng(3).normal(size=11)
    assert tr.iqm(values) == pytest.approx(metrics.aggregate_iqm(values[:, None]))
    assert tr.optimality_gap(values) == pytest.approx(metrics.aggregate_optimality_gap(values[:, None], 1.0))


# -------------------------------------------------------------------------- selection, censoring, divergence


def synthetic(problem="p", arm="a", lr=0.1, seed_index=0, final_score=0.5, **extra) -> dict:
    row = {"kind": "train", "problem": problem, "variant": arm, "estimator": extra.pop("estimator", "reinforce"),
           "estimator_options": extra.pop("estimator_options", "{}"), "optimizer": "sgd", "batch_size": 4,
           "lr": lr, "seed_index": seed_index, "J_star": 1.0, "final_score": final_score, "auc": final_score / 2,
           "samples_to_90": math.nan, "failed": final_score < 0.5, "failed_defined": True, "diverged": False,
           "curve_samples": [0, 4], "curve_score": [0.0, final_score]}
    row.update(extra)
    return row


def test_split_half_selection_never_uses_the_evaluation_half():
    """Even seeds favour lr 0.1, odd seeds favour lr 1.0 by far: the selection takes 0.1, and no change to the odd
    seeds' scores (however large) moves it; every number at the selected lr comes from odd seeds only."""
    records = []
    for seed_index in range(10):
        even = seed_index % 2 == 0
        records.append(synthetic(lr=0.1, seed_index=seed_index, final_score=0.8 if even else 0.0))
        records.append(synthetic(lr=1.0, seed_index=seed_index, final_score=0.6 if even else 1.0))
    runs = frame_of(records)
    selected = tr.select_learning_rates(runs)
    assert list(selected["lr"]) == [0.1] and selected["selection_runs"].iloc[0] == 5
    for bump in (-5.0, 3.0, 100.0):
        changed = runs.copy()
        odd = changed["seed_index"] % 2 == 1
        changed.loc[odd, "score"] = changed.loc[odd, "score"] + bump * (changed.loc[odd, "lr"] == 1.0)
        assert tr.select_learning_rates(changed).equals(selected)
    evaluation = tr.at_selected(runs, selected)
    assert sorted(evaluation["seed_index"]) == [1, 3, 5, 7, 9] and (evaluation["score"] == 0.0).all()


def test_censored_samples_to_target_are_a_success_fraction_and_a_median_among_successes():
    """3 of 8 runs reach 90% (at 16, 32, 48 samples): success 3/8 with its exact interval, median 32 among the
    successes; a mean over all runs (or over successes only) is never reported."""
    records = [synthetic(seed_index=i, final_score=0.95 if i < 3 else 0.4,
                         samples_to_90=[16.0, 32.0, 48.0][i] if i < 3 else math.nan) for i in range(8)]
    summary = tr.summarize_runs(frame_of(records), ["problem", "arm", "batch_size", "lr"], 0, 500)
    row = summary.iloc[0]
    assert row["reached_runs"] == 3 and row["reached_fraction"] == 3 / 8
    assert (row["reached_lo"], row["reached_hi"]) == pytest.approx(tr.clopper_pearson(3, 8))
    assert row["samples_to_90_median"] == 32.0
    assert 16.0 <= row["samples_to_90_median_lo"] <= 32.0 <= row["samples_to_90_median_hi"] <= 48.0
    assert not any("mean" in c for c in summary.columns if "samples" in c)
    none = tr.summarize_runs(frame_of([synthetic(seed_index=i, final_score=0.1) for i in range(4)]),
                             ["problem", "arm"], 0, 100).iloc[0]
    assert none["reached_fraction"] == 0 and math.isnan(none["samples_to_90_median"])


def test_diverged_runs_score_the_floor_and_rank_last():
    """A diverged run (final score −∞ in the rows) scores exactly SCORE_FLOOR: IQM, median and mean stay finite,
    it counts as failed, and the mean says what the floor costs."""
    records = [synthetic(seed_index=i, final_score=0.9) for i in range(3)]
    records.append(synthetic(seed_index=3, final_score=-math.inf, auc=-math.inf, diverged=True, failed=True))
    runs = frame_of(records)
    assert runs["score"].min() == tr.SCORE_FLOOR and runs["auc_score"].min() == tr.SCORE_FLOOR
    row = tr.summarize_runs(runs, ["problem", "arm"], 0, 200).iloc[0]
    assert row["failure_fraction"] == 0.25 and row["diverged"] == 1
    assert row["score_mean"] == pytest.approx((3 * 0.9 + tr.SCORE_FLOOR) / 4)
    assert row["score_median"] == pytest.approx(0.9) and math.isfinite(row["score_iqm_lo"])


# ------------------------------------------------------------------------------------- loading and the analysis


def test_load_checks_the_schema_and_names_what_it_skips(training_dir, rows, tmp_path):
    results = tr.load_training(training_dir)
    assert len(results.runs) == len(rows) and len(results.noise) == 2 and not results.unreadable
    broken = tmp_path / "broken"
    bad = dict(rows[0], cell_id="bad1")
    del bad["curve_score"]
    write_store(broken, [rows[1], bad])
    loaded = tr.load_training(broken)
    assert len(loaded.runs) == 1 and "lacking columns curve_score" in loaded.unreadable[0]
    with pytest.raises(ConfigError, match="no such folder"):
        tr.load_training(tmp_path / "missing")
    measurement = tmp_path / "measurement"
    write_store(measurement, [{"cell_id": "cc", "problem": "x"}])
    with pytest.raises(ConfigError, match="no finished training run"):
        tr.load_training(measurement)


@pytest.fixture(scope="module")
def analysis(training_dir):
    return tr.analyse_training(tr.load_training(training_dir), seed=0, reps=200)


def test_analysis_tables_are_consistent_and_deterministic(analysis, training_dir):
    again = tr.analyse_training(tr.load_training(training_dir), seed=0, reps=200)
    for name, frame in analysis.tables().items():
        assert frame.to_csv(index=False) == again.tables()[name].to_csv(index=False), name
    assert analysis.controls == ["exact"] and analysis.vanilla == ["reinforce"]
    assert analysis.pairs == [("reinforce", "exact"), ("reinforce baseline=rloo", "exact"),
                              ("reinforce baseline=rloo", "reinforce")]
    # 2 problems × 3 arms × 2 N, each at one selected lr, 2 evaluation seeds (indices 1, 3).
    assert len(analysis.selected) == 12 and set(analysis.evaluation["seed_index"]) == {1, 3}
    assert (analysis.per_problem["runs"] == 2).all() and len(analysis.verdicts) == 4
    assert "exact" not in set(analysis.verdicts["best"])
    # The exact control is deterministic: its runs agree, so its intervals have no spread.
    exact = analysis.lr_curves[analysis.lr_curves["arm"] == "exact"]
    assert not exact["spread"].any() and (exact["lo"] == exact["hi"]).all()
    assert set(analysis.across.intervals["statistic"]) == {"IQM", "Median", "Mean", "Optimality gap"}
    assert set(analysis.across.intervals["batch_size"]) == {4, 8}
    assert len(analysis.across.failures) == 2 * 3
    selected = analysis.paired[analysis.paired["which"] == "selected"]
    assert (selected["pairs"] == 2).all() and len(selected) > 0
    noise = analysis.noise.set_index("problem")
    applies = noise.loc["bandit-1-0.7-0"]
    assert applies["model_applies"] and applies["eps_opt"] == pytest.approx(4 / 3)
    assert not noise.loc["softmax-bandit", "model_applies"] and "does not apply" in noise.loc["softmax-bandit", "caveat"]


def test_training_section_without_noise_rows_says_so(rows, tmp_path):
    from reports.report import training_section
    folder = tmp_path / "no-noise"
    write_store(folder, rows)
    section = training_section(tr.analyse_training(tr.load_training(folder), seed=0, reps=100))
    assert "No noise-scale rows" in section


# ------------------------------------------------------------------------------------------- the report


def test_report_with_training_has_the_section_and_without_it_none(training_dir, tmp_path):
    """`pgvar report RESULTS --training DIR`: a self-contained "Training" section with its figures and tables;
    the same results without --training give no such section and none of its files."""
    from bench.sweep import load_config, run_sweep
    from pgvar.cli import main
    from reports.report import build_report

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.toml")
    config = dataclasses.replace(config, report=dataclasses.replace(config.report, bootstrap_reps=100))
    run_sweep(config, tmp_path / "results", executor="inprocess")
    results = tmp_path / "results" / config.name
    assert main(["report", str(results), "--training", str(training_dir), "--out", str(tmp_path / "with")]) == 0
    html = (tmp_path / "with" / "index.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="training">'):]
    section = section[:section.index("</section>")]
    headings = re.findall(r"<h3>([^<]*)</h3>", section)
    first = re.search(r'<section id="([^"]+)">', html).group(1)
    assert first == "verdict" and "recommended estimator" in html[:html.index('<section id="sweep">')]
    assert headings[:1] == ["Sample efficiency"] and {"Per problem", "Across problems",
                                                                "Probability of improvement", "Paired differences",
                                                                "Learning rate", "Noise scale"} <= set(headings)
    assert len(re.findall(r'<img src="data:image/png;base64,', section)) >= 4
    assert "Probability of improvement" in section and "Noise scale" in section and "no spread" in section
    assert not re.search(r'(src|href)="(https?:|//)', html)
    for name in tr.TRAINING_TABLES:
        assert (tmp_path / "with" / name).is_file(), name
    first = {name: (tmp_path / "with" / name).read_bytes() for name in tr.TRAINING_TABLES}
    build_report(results, tmp_path / "again", training_dir=training_dir)
    for name, content in first.items():
        assert (tmp_path / "again" / name).read_bytes() == content, name
    index, _ = build_report(results, tmp_path / "without")
    assert '<section id="training">' not in index.read_text(encoding="utf-8")
    assert not any((tmp_path / "without" / name).exists() for name in tr.TRAINING_TABLES)
    # Adding --training to a report that had none rebuilds it; an up-to-date one is reused.
    assert build_report(results, tmp_path / "without", training_dir=training_dir)[1]
    assert not build_report(results, tmp_path / "without", training_dir=training_dir)[1]
    assert build_report(results, tmp_path / "without")[1]


def test_a_real_noise_scale_row_passes_the_schema_check(rows, tmp_path):
    """The row bench.cells.run stores for a NoiseCell (at θ₀ and along the exact-gradient path) loads and lands in
    the table."""
    from bench.cells import NoiseCell, run
    from bench.noise_scale import noise_scale
    from estimators import resolve_estimator

    options = (("probs", (1.0, 0.7, 0.0)),)
    cells = [NoiseCell("tiny-train", "bandit-1-0.7-0", "softmax-bandit", options, "default", "reinforce", "reinforce",
                       (), 4, 200, 5, path_score) for path_score in (0.0, 0.5)]
    noise = [run(cell) for cell in cells]
    folder = tmp_path / "real-noise"
    write_store(folder, rows + noise)
    loaded = tr.load_training(folder)
    assert not loaded.unreadable and len(loaded.noise) == 2
    table = tr.noise_scale_table(loaded.noise, loaded.runs, tr.select_learning_rates(loaded.runs),
                                 tr.learning_rate_curves(loaded.runs, 0, 50))
    assert len(table) == 2 and table["selected_lr"].notna().all() and list(table["path_target"]) == [0.0, 0.5]
    problem = make_problem("softmax-bandit", dict(options))
    at_start = noise_scale(problem, resolve_estimator("reinforce", {}), problem.default_theta(), 4, 200, 5)
    assert table["model_applies"].iloc[0] == at_start.model_applies


# ------------------------------------------------------------------------- commitment and the critical batch


def outcome_runs(outcomes: np.ndarray, lrs=(0.1, 1.0, 10.0)) -> pd.DataFrame:
    """Runs of one (problem, arm, N) with the given arm outcomes [seeds, lrs] (True: settled sub-optimal)."""
    records = [{"problem": "bandit", "arm": "natural", "optimizer": "sgd", "batch_size": 1, "lr": lr,
                "seed_index": seed, "arm_outcome": "sub-optimal" if outcomes[seed, j] else "optimal"}
               for seed in range(outcomes.shape[0]) for j, lr in enumerate(lrs)]
    return pd.DataFrame(records)


def test_commitment_table_counts_each_outcome_with_an_exact_interval():
    outcomes = np.zeros((10, 3), dtype=bool)
    outcomes[:7, 2] = True
    runs = outcome_runs(outcomes)
    runs.loc[(runs.lr == 0.1) & (runs.seed_index == 0), "arm_outcome"] = "undecided"
    table = tr.commitment_table(runs).set_index("lr")
    assert list(table["sub_optimal"]) == [0, 0, 7] and list(table["undecided"]) == [1, 0, 0]
    assert list(table["optimal"]) == [9, 10, 3] and (table["runs"] == 10).all()
    assert (table.loc[10.0, "lo"], table.loc[10.0, "hi"]) == pytest.approx(tr.clopper_pearson(7, 10))
    # rows of problems without arms ("") are not counted
    assert tr.commitment_table(runs.assign(arm_outcome="")).empty


def test_commitment_trend_detects_growth_and_holds_its_rate_under_the_null():
    """A within-seed permutation test: (1) outcomes that grow with the rate in every seed give p ≈ 1/(1 + R);
    (2) outcomes identical across rates in every seed give p = 1 (no permutation changes T); (3) under H0 (each
    outcome an independent Bernoulli(0.5) whatever the rate) the one-sided p-value is valid: over 200 seeded
    data sets of 20 seeds × 3 rates, the number with p < 0.05 is ≤ 20, the 99.9% quantile of Binomial(200, 0.05)
    (this check itself fails with probability ≤ 0.1% for a calibrated test; a discrete test is conservative)."""
    growing = np.zeros((20, 3), dtype=bool)
    growing[:, 2] = True
    p_growing = tr.commitment_trend(outcome_runs(growing), seed=0, permutations=2000)["p_value"].iloc[0]
    assert p_growing == pytest.approx(1 / 2001)
    same = np.repeat(np.arange(20)[:, None] % 2 == 0, 3, axis=1)
    assert tr.commitment_trend(outcome_runs(same), seed=0, permutations=500)["p_value"].iloc[0] == 1.0
    rng = np.random.default_rng(11)
    rejections = sum(
        tr.commitment_trend(outcome_runs(rng.random((20, 3)) < 0.5), seed=i, permutations=500)["p_value"].iloc[0]
        < 0.05 for i in range(200))
    from scipy import stats
    assert rejections <= stats.binom.ppf(0.999, 200, 0.05), rejections


def test_the_critical_batch_fit_recovers_a_known_model():
    """E(N) = E_min (1 + B_crit/N) exactly at three batch sizes → the fit returns (E_min, B_crit); updates that
    grow with N do not fit (NaN); a batch size whose E is ∞ (never reached) is left out of the fit."""
    sizes = np.array([4, 8, 32])
    e_min, b_crit = tr.fit_critical_batch(sizes, 40 * (1 + 16 / sizes))
    assert (float(e_min), float(b_crit)) == pytest.approx((40.0, 16.0))
    assert np.isnan(tr.fit_critical_batch(sizes, np.array([10.0, 20.0, 40.0]))[1])
    e_min, b_crit = tr.fit_critical_batch(sizes, np.array([80.0, 60.0, math.inf]))  # two finite points: exact
    assert (float(e_min), float(b_crit)) == pytest.approx((40.0, 4.0 * 1.0))
    assert np.isnan(tr.fit_critical_batch(sizes, np.array([80.0, math.inf, math.inf]))[1])


def test_critical_batch_takes_each_rates_median_with_censored_runs_as_infinite():
    """At N = 4 the rate 1.0 has 3 of 5 runs at 10 updates (median 10) and 0.1 has all at 30; at N = 16 rate 1.0
    has 3 of 5 runs censored (median ∞) and 0.1 has all at 20 → E = (10, 20) does not fall with N: no fit. With the
    censored runs reaching at 5 updates instead, E = (10, 5): exact fit E = a + b/N through both points."""
    def frame(censored: bool) -> pd.DataFrame:
        records = []
        for seed in range(5):
            for n, lr, updates, reached in [(4, 1.0, 10 if seed < 3 else 99, True), (4, 0.1, 30, True),
                                            (16, 1.0, 5, not (censored and seed < 3)), (16, 0.1, 20, True)]:
                records.append({"problem": "p", "arm": "a", "variant": "a", "optimizer": "sgd", "batch_size": n,
                                "lr": lr, "seed_index": seed, "updates_to_90": float(updates), "reached": reached,
                                "score": 1.0})
        return pd.DataFrame(records)
    empty_noise = pd.DataFrame(columns=["problem", "variant", "path_target", "model_applies", "batch_size", "b_noise"])
    censored = tr.critical_batch(frame(True), empty_noise, seed=0, reps=200).iloc[0]
    assert censored["updates_to_target"] == "10 20" and censored["fit"] == "does not fit"
    reached = tr.critical_batch(frame(False), empty_noise, seed=0, reps=200).iloc[0]
    assert reached["updates_to_target"] == "10 5" and reached["best_lrs"] == "1 1" and reached["fit"].startswith("exact")
    # E = a + b/N through (1/4, 10) and (1/16, 5): b = 5 / (3/16) = 80/3, a = 10 − b/4 = 10/3, B_crit = b/a = 8
    assert (reached["e_min"], reached["b_crit"]) == pytest.approx((10 / 3, 8.0))
