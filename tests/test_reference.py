"""Sampled references (bench/reference.py): the streaming moments against numpy, the calibration of the
reported standard errors on problems with an exact gradient, the bias test and interval that account for the
reference's noise, and the disk cache."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from bench.harness import measure
from bench.metrics import bias_resolution, gradient_metrics
from bench.reference import ReferenceConfig, RunningMoments, check_reference, exact_target, reference_for
from envs import ConfigError, make_problem
from estimators.registry import Target
from tests.conftest import random_theta


def test_running_moments_match_exact_rational_arithmetic_on_uneven_chunks():
    """Against the moments of the same floats in exact rational arithmetic. The mean 1e6 ≫ spread 1e-2 makes
    the one-pass Σx² − (Σx)²/n lose every digit (relative error ~ ε·(1e6/1e-2)² ≈ 2); the merged update keeps
    ~ε·1e6/1e-2 ≈ 1e-8 relative."""
    rng = np.random.default_rng(0)
    rows = rng.normal(loc=1e6, scale=1e-2, size=(300, 3))
    moments = RunningMoments(3)
    for chunk in np.split(rows, [1, 7, 100, 101, 299]):
        moments.add(chunk)
    assert moments.count == 300
    for p in range(3):
        values = [Fraction(x) for x in rows[:, p]]
        mean = sum(values) / len(values)
        variance_of_mean = sum((x - mean) ** 2 for x in values) / (len(values) - 1) / len(values)
        assert moments.mean[p] == pytest.approx(float(mean), rel=1e-15)
        assert moments.variance_of_mean[p] == pytest.approx(float(variance_of_mean), rel=1e-7)


# Calibration: over R independent references (seeds 0…R−1) of K batches each, the fraction of coordinates
# with |g̃_p − g*_p| ≤ 1.96·se_p. Its expectation is the two-sided t_{K−1} coverage where the batch estimates are
# near normal; the test accepts the mean over references within 4 standard errors of that (SE from the spread
# of the per-reference coverages): false-positive rate ≈ 6e-5 per problem. Sparse rewards skew the batch
# estimates (frozenlake at K = 64, N = 16 covers 0.919 against 0.946): there only the energy check below holds,
# which needs no normality — references for the report use K ≥ 1000 batches.
# Energy: E‖g̃ − g*‖² = Σ_p v_p (v unbiased), so the mean of ‖g̃ − g*‖² / Σv is 1 within 4 standard errors.
CALIBRATION_CASES = [
    (("softmax-bandit", {}), 400, 64, 16, True),
    (("contextual-bandit", {}), 300, 64, 16, True),
    (("lqr", {}), 200, 64, 8, True),
    (("frozenlake", {}), 100, 32, 16, False),
]


@pytest.mark.parametrize("case,references,batches,batch_size,near_normal", CALIBRATION_CASES,
                         ids=lambda c: str(c))
def test_sampled_reference_standard_errors_are_calibrated_on_exact_problems(case, references, batches, batch_size,
                                                                             near_normal):
    problem = make_problem(*case)
    theta = random_theta(problem, seed=41)
    exact = problem.exact_gradient(theta).numpy()
    z = 1.96
    expected = 1 - 2 * stats.t.sf(z, batches - 1)
    coverages, energy = [], []
    for seed in range(references):
        config = ReferenceConfig("sampled", batches * batch_size, batch_size, seed, cache=False)
        reference = reference_for(problem, theta, Target(), config, show_progress=False)
        se = np.sqrt(reference.variance)
        error = reference.grad - exact
        assert np.all(error[se == 0] == 0)  # coordinates no batch moved (unvisited states) are exact
        coverages.append(float((np.abs(error[se > 0]) <= z * se[se > 0]).mean()))
        energy.append(float(error @ error) / float(reference.variance.sum()))
    energy = np.array(energy)
    assert abs(energy.mean() - 1) <= 4 * energy.std(ddof=1) / math.sqrt(references), energy.mean()
    if near_normal:
        coverages = np.array(coverages)
        tolerance = 4 * coverages.std(ddof=1) / math.sqrt(references)
        assert abs(coverages.mean() - expected) <= tolerance, (coverages.mean(), expected, tolerance)


# The bias test against a sampled reference: an unbiased estimator (rloo) measured against R independent
# noisy references must reject at about the nominal 5% (not heavy-tailed here: checked). The count of
# rejections is Binomial(R, 0.05) for a calibrated test; the test fails above its 1 − 1e-4 quantile (false
# positive rate 1e-4) and, to show the correction matters, the same estimates tested as if the reference were
# exact must reject more often than that quantile (the reference is as noisy as the measurement here).
def test_bias_test_accounts_for_reference_noise():
    problem = make_problem("softmax-bandit", {})
    theta = random_theta(problem, seed=42)
    runs, level = 300, 0.05
    corrected, naive, heavy = 0, 0, 0
    for seed in range(runs):
        config = ReferenceConfig("sampled", 32 * 64, 64, seed=10_000 + seed, cache=False)
        result = measure(problem, "reinforce", 8, 256, seed, theta, {"baseline": "rloo"}, show_progress=False,
                         reference_config=config)
        corrected += result.metrics.bias_pvalue < level
        naive += gradient_metrics(result.estimates, result.reference_grad).bias_pvalue < level
        heavy += result.metrics.heavy_tailed
    limit = stats.binom.ppf(1 - 1e-4, runs, level)
    assert heavy == 0
    assert corrected <= limit, (corrected, limit)
    assert naive > limit, (naive, limit)


def test_bias_interval_covers_the_true_bias_against_a_sampled_reference():
    """batch_mean = (1 − 1/N)·rloo has bias −∇J/N. Against noisy references its 95% bias interval must cover
    ‖∇J‖/N at about 95%: over R runs the number of misses is Binomial(R, 0.05) for a calibrated interval; the
    test fails above the 1 − 1e-4 quantile (false-positive rate 1e-4)."""
    problem = make_problem("softmax-bandit", {})
    theta = random_theta(problem, seed=43)
    batch_size, runs = 4, 200
    true_bias = float(np.linalg.norm(problem.exact_gradient(theta).numpy())) / batch_size
    misses = 0
    for seed in range(runs):
        config = ReferenceConfig("sampled", 64 * 64, 64, seed=20_000 + seed, cache=False)
        result = measure(problem, "reinforce", batch_size, 400, seed, theta, {"baseline": "batch_mean"},
                         show_progress=False, reference_config=config)
        low, high = result.metrics.bias_norm_ci
        misses += not low <= true_bias <= high
    assert misses <= stats.binom.ppf(1 - 1e-4, runs, 0.05), misses


def test_bias_resolution_is_the_95_percent_quantile_of_the_reference_noise():
    """With equal variances v the two-moment χ² fit is exact for Gaussian ε (‖ε‖² = v·χ²_P): then a bias of
    norm `bias_resolution` is where ‖β‖² + Σv meets the 95% quantile of ‖ε‖², checked on 20 000 Gaussian draws
    (the fraction below is 0.95 within 4 binomial standard errors: false-positive rate ≈ 6e-5). Quadrupling the
    samples (v / 4) halves it exactly, and an exact reference has none."""
    variance = np.full(50, 0.3)
    resolution = bias_resolution(variance)
    draws = np.random.default_rng(3).normal(scale=np.sqrt(variance), size=(20_000, 50))
    below = float(((draws**2).sum(1) <= resolution**2 + variance.sum()).mean())
    assert abs(below - 0.95) <= 4 * math.sqrt(0.95 * 0.05 / 20_000), below
    uneven = np.random.default_rng(4).uniform(0.1, 2.0, size=30)
    assert bias_resolution(uneven / 4) == pytest.approx(bias_resolution(uneven) / 2, rel=1e-12)
    assert bias_resolution(None) == 0 and bias_resolution(np.zeros(3)) == 0
    problem = make_problem("frozenlake", {})
    sampled = measure(problem, "reinforce", 8, 20, 0, None, {"baseline": "rloo"}, show_progress=False,
                      reference_config=ReferenceConfig("sampled", 4096, 64, seed=1, cache=False))
    assert sampled.reference.samples == 4096
    assert sampled.metrics.bias_resolution == bias_resolution(sampled.reference.variance) > 0


def test_cache_reuses_a_reference_and_keys_on_what_defines_it(tmp_path):
    problem = make_problem("cartpole", {"horizon": 20, "hidden": (4,)})
    theta = problem.default_theta()
    config = ReferenceConfig("auto", 512, 16, seed=3, cache_dir=str(tmp_path))
    first = reference_for(problem, theta, Target(), config, show_progress=False)
    again = reference_for(problem, theta, Target(), config, show_progress=False)
    assert (first.cached, again.cached) == (False, True)
    np.testing.assert_array_equal(first.grad, again.grad)
    np.testing.assert_array_equal(first.variance, again.variance)
    assert (again.objective, again.samples, again.batches) == (first.objective, 512, 32)
    variants = [
        (problem, theta + 1e-9, Target(), config),
        (problem, theta, Target(entropy_coef=0.1), config),
        (problem, theta, Target(), ReferenceConfig("auto", 1024, 16, seed=3, cache_dir=str(tmp_path))),
        (problem, theta, Target(), ReferenceConfig("auto", 512, 16, seed=4, cache_dir=str(tmp_path))),
        (make_problem("cartpole", {"horizon": 21, "hidden": (4,)}), theta, Target(), config),
    ]
    for args in variants:
        assert not reference_for(*args, show_progress=False).cached
    assert len(list(tmp_path.iterdir())) == 1 + len(variants)
    recomputed = reference_for(problem, theta, Target(), ReferenceConfig("auto", 512, 16, seed=3, cache=False),
                               show_progress=False)
    np.testing.assert_array_equal(first.grad, recomputed.grad)  # same seed ⇒ same numbers, cached or not


def test_references_that_do_not_exist_are_one_line_errors():
    cartpole = make_problem("cartpole", {"horizon": 5})
    with pytest.raises(ConfigError, match="env cartpole has no exact gradient"):
        check_reference(cartpole, Target(), "exact")
    with pytest.raises(ConfigError, match="ratio of expectations with no unbiased estimator"):
        check_reference(cartpole, Target(damping=0.01))
    with pytest.raises(ConfigError, match="reference kind 'approx'"):
        ReferenceConfig("approx")
    with pytest.raises(ConfigError, match="reference batch_size=1"):
        ReferenceConfig(batch_size=1)
    check_reference(make_problem("frozenlake"), Target(damping=0.01))  # exact Fisher: fine


def test_sampled_reference_of_an_entropy_target_is_unbiased_for_it():
    """Target(α) on an exact problem: the reference estimator carries the entropy bonus, so g̃ estimates
    ∇(J + αH): the bias test of a zero-spread 'estimate' at g* against g̃ is the test of the reference's own
    error (fails with probability 1e-4), and it must reject ∇J, which lacks the bonus."""
    problem = make_problem("frozenlake")
    theta = random_theta(problem, seed=45)
    target = Target(entropy_coef=0.5)
    exact = exact_target(problem, theta, target).numpy()
    reference = reference_for(problem, theta, target, ReferenceConfig("sampled", 64 * 128, 64, seed=5, cache=False),
                              show_progress=False)
    metrics = gradient_metrics(np.stack([exact, exact]), reference.grad, reference.variance, reference.dof)
    assert metrics.bias_pvalue >= 1e-4
    without_bonus = exact_target(problem, theta, Target()).numpy()
    assert gradient_metrics(np.stack([without_bonus, without_bonus]), reference.grad, reference.variance,
                            reference.dof).bias_pvalue < 1e-4, "the reference does not see the entropy bonus"


def test_reference_batches_are_independent_of_measurement_batches():
    """A measurement with seed s and a reference with seed s draw from different sub-streams: were they the same,
    the reference (2 batches of 64, rloo) would equal the mean of the measurement's 2 estimates exactly."""
    problem = make_problem("softmax-bandit")
    theta = problem.default_theta()
    config = ReferenceConfig("sampled", 2 * 64, 64, seed=7, cache=False)
    result = measure(problem, "reinforce", 64, 2, 7, theta, {"baseline": "rloo"}, show_progress=False,
                     reference_config=config)
    assert not np.allclose(result.estimates.mean(0), result.reference_grad)
