"""Metrics: hand-computed values on tiny matrices, closed forms against brute-force twins, and the
calibration of the bias test and of the confidence intervals over many seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.harness import measure
from bench.metrics import (
    COLLAPSE_RATIO,
    HEAVY_TAIL_KURTOSIS,
    NONFINITE_LIMIT,
    gradient_metrics,
    pairwise_cosine,
    trace_cov_squared,
    variance_trace_loo,
)
from envs import make_problem
from tests.conftest import random_theta

ESTIMATES = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])


def test_tiny_matrix_by_hand():
    m = gradient_metrics(ESTIMATES, np.array([2.0, 0.0]))
    # mean [2, 1]; centered rows [-1,-1], [1,-1], [0,2] → tr S = 8 / 2 = 4
    assert m.variance_trace == pytest.approx(4.0)
    # X̄ = [0, 1]: ‖X̄‖² − tr S / M = 1 − 4/3 < 0 → floored at 0
    assert m.bias_norm == 0.0
    assert m.mse == pytest.approx(11 / 3)  # (1 + 1 + 9) / 3
    assert m.cosine_mean == pytest.approx((2 + 2 / math.sqrt(13)) / 3)
    assert m.pairwise_cosine == pytest.approx((1 + 4 / math.sqrt(13)) / 3)
    assert m.snr == pytest.approx(1.0)  # ‖g*‖² / tr S = 4 / 4
    assert m.relative_bias == 0.0


def test_tiny_matrix_against_zero_reference():
    m = gradient_metrics(ESTIMATES, np.zeros(2))
    assert m.bias_norm == pytest.approx(math.sqrt(5 - 4 / 3))  # ‖[2, 1]‖² − 4/3
    assert math.isnan(m.relative_bias)  # ‖g*‖ = 0
    assert m.cosine_mean == 0.0  # cosine with the zero vector is defined as 0


def test_nonfinite_estimates_are_counted_and_excluded():
    with_bad = np.vstack([ESTIMATES, [[np.inf, 0.0], [np.nan, 1.0]]])
    m = gradient_metrics(with_bad, np.array([2.0, 0.0]))
    assert (m.nonfinite, m.reps_used) == (2, 3)
    assert m.variance_trace == pytest.approx(4.0)


@pytest.mark.parametrize("exponent", [300, -300])
def test_metrics_of_huge_and_tiny_estimates_are_the_scaled_metrics(exponent):
    """Estimates of order 2^±300 (an unstable behaviour policy's overflowing states) would overflow or
    underflow the fourth powers; their metrics must be exactly the metrics of the unscaled estimates,
    scaled (a power of two scales exactly)."""
    rng = np.random.default_rng(7)
    estimates, reference = rng.normal(size=(50, 4)) + 0.3, np.array([0.2, -0.1, 0.4, 0.0])
    scale = 2.0**exponent

    def unscaled(value, power):  # value / scale^power without forming scale^power (out of float range)
        for _ in range(power):
            value = value / scale
        return value

    plain, scaled = gradient_metrics(estimates, reference), gradient_metrics(estimates * scale, reference * scale)
    for name, power in [("variance_trace", 2), ("mse", 2), ("bias_norm", 1), ("reference_norm", 1),
                        ("relative_bias", 0), ("bias_pvalue", 0), ("cosine_mean", 0), ("tail_kurtosis", 0), ("snr", 0)]:
        assert unscaled(getattr(scaled, name), power) == getattr(plain, name), name
    np.testing.assert_array_equal(unscaled(np.array(scaled.variance_trace_ci), 2), plain.variance_trace_ci)
    np.testing.assert_array_equal(unscaled(scaled.mean_grad, 1), plain.mean_grad)
    assert math.isfinite(scaled.bias_pvalue) and math.isfinite(scaled.tail_kurtosis)


def test_leave_one_out_variance_matches_brute_force():
    x = np.random.default_rng(0).normal(size=(7, 4))
    brute = [np.delete(x, m, axis=0).var(axis=0, ddof=1).sum() for m in range(7)]
    np.testing.assert_allclose(variance_trace_loo(x), brute, rtol=1e-12)


def test_pairwise_cosine_matches_double_loop():
    x = np.random.default_rng(1).normal(size=(6, 3))
    x[2] = 0.0  # a zero estimate has cosine 0 with everything
    unit = [v / np.linalg.norm(v) if np.linalg.norm(v) > 0 else v for v in x]
    pairs = [float(unit[a] @ unit[b]) for a in range(6) for b in range(6) if a != b]
    value, _ = pairwise_cosine(x)
    assert value == pytest.approx(np.mean(pairs), rel=1e-12)


def cosine_twin(estimates: np.ndarray, direction: np.ndarray) -> tuple[float, tuple[float, float]]:
    """mean_m cos(g_m, d) over the finite rows by a loop (0 for a zero row), with scipy's 95% t interval."""
    cosines = [float(g @ direction) / (np.linalg.norm(g) * np.linalg.norm(direction)) if np.linalg.norm(g) > 0 else 0.0
               for g in estimates if np.isfinite(g).all()]
    mean = float(np.mean(cosines))
    return mean, stats.t.interval(0.95, len(cosines) - 1, loc=mean, scale=stats.sem(cosines))


def test_gradient_cosine_is_cosine_mean_when_the_reference_is_the_gradient():
    """No ∇J of its own (the target is ∇J): the very number and interval of cosine_mean, not a recomputation."""
    rows = np.random.default_rng(4).normal(size=(30, 5)) + 0.4
    for m in (gradient_metrics(rows, np.full(5, 0.4)), gradient_metrics(rows * 2.0**300, np.full(5, 0.4) * 2.0**300),
              gradient_metrics(rows, np.full(5, 0.4), np.full(5, 1e-3), 99)):
        assert m.gradient_cosine == m.cosine_mean and m.gradient_cosine_ci == m.cosine_mean_ci


def test_gradient_cosine_against_another_gradient_matches_loop_twin():
    """With ∇J given (a target that is another vector), mean_m cos(g_m, ∇J) and its t interval equal the loop twin's,
    counting a zero estimate as cosine 0 and leaving out a non-finite one; cosine_mean stays against g*. Scaled by
    2^±300 (the metrics' rescaled path) the cosines are the same to rounding."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(40, 4)) + np.array([1.0, 0.5, 0.0, -0.5])
    rows[3] = 0.0
    rows[7, 1] = np.nan
    target, gradient = np.array([1.0, 0.5, 0.0, -0.5]), np.array([0.2, 1.0, -0.3, 0.1])
    m = gradient_metrics(rows, target, gradient=gradient)
    value, interval = cosine_twin(rows, gradient)
    assert m.gradient_cosine == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(m.gradient_cosine_ci, interval, rtol=1e-12)
    assert m.cosine_mean == pytest.approx(cosine_twin(rows, target)[0], rel=1e-12)
    assert abs(m.gradient_cosine - m.cosine_mean) > 0.1  # two different directions, two different numbers
    for exponent in (300, -300):
        scale = 2.0**exponent
        scaled = gradient_metrics(rows * scale, target * scale, gradient=gradient * scale)
        assert scaled.gradient_cosine == pytest.approx(m.gradient_cosine, rel=1e-12)
        np.testing.assert_allclose(scaled.gradient_cosine_ci, m.gradient_cosine_ci, rtol=1e-12)


def test_gradient_cosine_undefined_below_two_estimates_and_without_interval_when_degenerate():
    one = gradient_metrics(np.array([[1.0, 2.0], [np.inf, 0.0]]), np.array([1.0, 0.0]), gradient=np.array([0.0, 1.0]))
    assert (one.reps_used, one.nonfinite) == (1, 1) and math.isnan(one.gradient_cosine)
    assert all(math.isnan(end) for end in one.gradient_cosine_ci) and not one.degenerate
    assert one.bias_resolution == 0.0 and one.reference_norm == 1.0 and one.mean_grad.tolist() == [1.0, 2.0]
    collapsed = gradient_metrics(np.zeros((20, 2)), np.array([1.0, 0.0]), gradient=np.array([0.0, 1.0]))
    assert collapsed.degenerate and collapsed.gradient_cosine == 0.0
    assert all(math.isnan(end) for end in collapsed.gradient_cosine_ci)


@pytest.mark.parametrize("shape", [(7, 3), (6, 10)], ids=["M>P", "M<P"])
def test_trace_cov_squared_matches_fourth_order_u_statistic(shape):
    """Slow twin: tr(Σ²) = E[((x₁ − x₂)·(x₃ − x₄))²] / 4, averaged over all ordered 4-tuples."""
    x = np.random.default_rng(2).normal(size=shape) * np.linspace(0.5, 2.0, shape[1])
    brute = np.mean([((x[i] - x[j]) @ (x[k] - x[l])) ** 2 / 4 for i, j, k, l in itertools.permutations(range(shape[0]), 4)])
    assert trace_cov_squared(x - x.mean(0)) == pytest.approx(brute, rel=1e-10)


def test_trace_cov_squared_is_unbiased_for_sparse_non_normal_rows():
    """Rows like tabular gradients (mostly zero, a few large entries). Mean of 4000 estimates within
    4 standard errors of the exact tr(Σ²): false-positive rate ≈ 6e-5."""
    rng = np.random.default_rng(3)
    dim, p_on, scale = 40, 0.05, np.linspace(1.0, 3.0, 40)
    variances = p_on * scale**2 - (p_on * scale) ** 2  # independent coordinates: Σ diagonal
    truth = float((variances**2).sum())
    draws = []
    for _ in range(4000):
        x = (rng.random((12, dim)) < p_on) * scale
        draws.append(trace_cov_squared(x - x.mean(0)))
    draws = np.asarray(draws)
    assert abs(draws.mean() - truth) <= 4 * draws.std(ddof=1) / math.sqrt(draws.size)


# Calibration: under H0 the p-values must be uniform. Each check is a Kolmogorov–Smirnov test at
# level ALPHA = 1e-3 over many seeds, so each fails with probability 1e-3 for a calibrated test.
ALPHA = 1e-3


@pytest.mark.parametrize("dim,reps", [(1, 50), (5, 100), (300, 60)], ids=["P=1", "P=5", "P>M"])
def test_bias_pvalue_uniform_under_h0_gaussian(dim, reps):
    rng = np.random.default_rng(dim)
    scales = np.linspace(0.1, 3.0, dim)
    pvalues = [gradient_metrics(rng.normal(size=(reps, dim)) * scales, np.zeros(dim)).bias_pvalue for _ in range(1000)]
    assert stats.kstest(pvalues, "uniform").pvalue >= ALPHA


@pytest.mark.parametrize("name,options,batch_size,reps,baseline", [
    ("softmax-bandit", {}, 4, 300, "none"),
    ("garnet", {"gamma": 0.9, "horizon": 20}, 4, 100, "rloo"),
    ("frozenlake", {}, 64, 40, "rloo"),  # P = 64 > M = 40
    ("cliffwalking", {}, 8, 50, "rloo"),  # P = 192 > M = 50
    ("taxi", {"horizon": 50}, 4, 60, "rloo"),  # P = 3000 ≫ M = 60, sparse estimates
])
def test_bias_pvalue_uniform_under_h0_real_estimates(name, options, batch_size, reps, baseline):
    """Unbiased estimators on exact problems, 300 seeds each, in the regime the p-value claims
    (estimates not flagged heavy-tailed)."""
    problem = make_problem(name, options)
    theta = random_theta(problem, seed=30)
    results = [measure(problem, "reinforce", batch_size, reps, seed, theta, {"baseline": baseline}).metrics
               for seed in range(300)]
    assert np.median([r.tail_kurtosis for r in results]) <= HEAVY_TAIL_KURTOSIS
    assert stats.kstest([r.bias_pvalue for r in results], "uniform").pvalue >= ALPHA


@pytest.mark.parametrize("name,batch_size,reps,theta", [
    ("gaussian-bandit", 1, 200, [0.3, -0.2]),  # g has degree-4 polynomial tails in z
    ("frozenlake", 8, 40, None),  # a handful of successful episodes carry all the signal
])
def test_heavy_tailed_regimes_are_flagged(name, batch_size, reps, theta):
    """Where the normal approximations fail (measured: 95% CIs cover 83%, 5% tests reject 11–14%),
    the measurement says so in at least 90% of 100 seeds."""
    problem = make_problem(name)
    flags = [measure(problem, "reinforce", batch_size, reps, seed, theta).metrics.heavy_tailed for seed in range(100)]
    assert np.mean(flags) >= 0.9


def coverage_bounds(trials: int, level: float = 0.95) -> tuple[float, float]:
    """Binomial acceptance region for a coverage frequency: ±4 standard errors (FPR ≈ 6e-5)."""
    half = 4 * math.sqrt(level * (1 - level) / trials)
    return level - half, level + half


def softmax_bandit_variance_trace(problem, theta, baseline: float, batch_size: int) -> float:
    """Exact tr Cov of REINFORCE with a constant baseline on the softmax bandit: one sample is
    g = (e_a − π)(r − b), so E‖g‖² = Σ_a π_a E[(r − b)² | a] ‖e_a − π‖², and N i.i.d. samples divide
    the covariance by N."""
    pi = torch.softmax(problem.check_theta(theta), -1).numpy()
    p = problem.arm_probs.numpy()
    second = sum(pi[a] * (p[a] * (1 - baseline) ** 2 + (1 - p[a]) * baseline**2)
                 * float(((np.eye(pi.size)[a] - pi) ** 2).sum()) for a in range(pi.size))
    grad = problem.exact_gradient(problem.check_theta(theta)).numpy()
    return (second - float(grad @ grad)) / batch_size


@pytest.mark.parametrize("baseline", ["none", "constant:0.3"])
def test_variance_trace_ci_covers_closed_form(baseline):
    problem = make_problem("softmax-bandit")
    theta, batch_size, trials = [0.2, -0.4, 0.1], 4, 400
    constant = 0.0 if baseline == "none" else 0.3
    exact = softmax_bandit_variance_trace(problem, theta, constant, batch_size)
    hits = 0
    for seed in range(trials):
        m = measure(problem, "reinforce", batch_size, 300, seed, theta, {"baseline": baseline}).metrics
        hits += m.variance_trace_ci[0] <= exact <= m.variance_trace_ci[1]
    low, high = coverage_bounds(trials)
    assert low <= hits / trials <= high, hits / trials


def test_bias_norm_ci_covers_known_bias():
    """batch_mean is biased by exactly ∇J/N; its bias_norm CI must cover ‖∇J‖/N at the nominal rate."""
    problem = make_problem("softmax-bandit")
    theta, batch_size, trials = [0.2, -0.4, 0.1], 2, 400
    truth = float(np.linalg.norm(problem.exact_gradient(problem.check_theta(theta)).numpy())) / batch_size
    hits = 0
    for seed in range(trials):
        lo, hi = measure(problem, "reinforce", batch_size, 300, seed, theta, {"baseline": "batch_mean"}).metrics.bias_norm_ci
        hits += lo <= truth <= hi
    low, high = coverage_bounds(trials)
    assert low <= hits / trials <= high, hits / trials


# ------------------------------------------------------------------------ untrustworthy measurements

def gaussian_estimates(reps: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """M well-behaved (Gaussian, P = 4) estimates around a nonzero reference, and the reference."""
    reference = np.array([0.5, -0.3, 0.2, 0.1])
    return reference + np.random.default_rng(seed).normal(size=(reps, 4)), reference


@pytest.mark.parametrize("bad,flagged", [(6, True), (5, False), (4, False)])
def test_nonfinite_fraction_above_the_limit_is_flagged(bad, flagged):
    """6 of 100 estimates non-finite is above NONFINITE_LIMIT = 5%: flagged, untrustworthy; 5 and 4 are
    not (the limit is exceeded, not reached). The flag never changes a number: the metrics are exactly
    those of the finite rows alone."""
    finite, reference = gaussian_estimates(100 - bad)
    rows = np.vstack([finite, np.tile([np.inf, 0.0, np.nan, 1.0], (bad, 1))])
    m = gradient_metrics(rows, reference)
    assert NONFINITE_LIMIT == 0.05 and m.nonfinite_fraction == bad / 100
    assert m.excess_nonfinite is flagged and not m.heavy_tailed and not m.degenerate
    assert m.trustworthy is not flagged
    assert any("non-finite" in reason for reason in m.untrustworthy_reasons) is flagged
    alone = gradient_metrics(finite, reference)
    for name in ("variance_trace", "variance_trace_ci", "bias_norm", "bias_pvalue", "mse_ci", "tail_kurtosis"):
        assert getattr(m, name) == getattr(alone, name), name


def test_all_zero_estimates_against_a_nonzero_reference_are_degenerate():
    """Importance weights that underflowed give estimates exactly 0. Their variance is 0 and the bias test
    would reject with p = 0 (a 'certain' bias that is an artefact of float64): the measurement is flagged
    degenerate, its p-value and every CI are NaN, and the descriptive values stay (relative bias 1)."""
    reference = np.array([0.5, -0.3, 0.2, 0.1])
    m = gradient_metrics(np.zeros((50, 4)), reference)
    assert m.degenerate and not m.trustworthy and any("degenerate" in r for r in m.untrustworthy_reasons)
    assert math.isnan(m.bias_pvalue)
    for name in ("variance_trace_ci", "bias_norm_ci", "relative_bias_ci", "cosine_mean_ci", "mse_ci", "snr_ci"):
        assert all(math.isnan(end) for end in getattr(m, name)), name
    assert m.variance_trace == 0.0 and m.relative_bias == pytest.approx(1.0)
    assert m.mse == pytest.approx(float(reference @ reference))


@pytest.mark.parametrize("estimates,reference,degenerate", [
    (np.zeros((20, 3)), np.zeros(3), False),  # zero against a zero target: nothing collapsed
    (np.tile([0.5, -0.3, 0.2], (20, 1)), np.array([0.5, -0.3, 0.2]), False),  # a constant, exact estimator
    (np.tile([0.4, -0.3, 0.2], (20, 1)), np.array([0.5, -0.3, 0.2]), True),  # a constant, wrong vector
    (1e-20 * np.random.default_rng(3).normal(size=(20, 3)), np.array([0.5, -0.3, 0.2]), True),  # weights ~1e-20
    (1e-6 * np.random.default_rng(3).normal(size=(20, 3)), np.array([0.5, -0.3, 0.2]), False),  # small, not collapsed
])
def test_degenerate_is_collapse_against_the_reference_only(estimates, reference, degenerate):
    """Collapsed means ‖g_m‖ ≤ COLLAPSE_RATIO·‖g*‖ for every m, or identical rows that are not g*."""
    m = gradient_metrics(estimates, reference)
    assert m.degenerate is degenerate
    assert math.isnan(m.bias_pvalue) is degenerate


def test_degenerate_threshold_is_the_stated_ratio():
    reference = np.array([3.0, 4.0])  # ‖g*‖ = 5
    spread = np.random.default_rng(5).normal(size=(30, 2))
    largest = float(np.linalg.norm(spread, axis=1).max())
    below, above = spread * (COLLAPSE_RATIO * 5 / largest) * 0.99, spread * (COLLAPSE_RATIO * 5 / largest) * 1.01
    assert gradient_metrics(below, reference).degenerate and not gradient_metrics(above, reference).degenerate


def test_heavy_tailed_flag_is_unchanged_and_makes_it_untrustworthy():
    """One estimate 30 SDs out: heavy-tailed as before (tail kurtosis > 4), still with its CIs and p-value
    (they are too narrow, not undefined), untrustworthy for that reason alone."""
    estimates, reference = gaussian_estimates(100)
    estimates[0] += 30.0
    m = gradient_metrics(estimates, reference)
    assert m.tail_kurtosis > HEAVY_TAIL_KURTOSIS and m.heavy_tailed
    assert not m.degenerate and not m.excess_nonfinite and not m.trustworthy
    assert len(m.untrustworthy_reasons) == 1 and m.untrustworthy_reasons[0].startswith("heavy-tailed")
    assert math.isfinite(m.bias_pvalue) and all(math.isfinite(end) for end in m.variance_trace_ci)
    well_behaved = gradient_metrics(*gaussian_estimates(100))
    assert well_behaved.trustworthy and well_behaved.untrustworthy_reasons == []


def test_far_behaviour_policy_underflows_into_a_degenerate_measurement():
    """is-trajectory on garnet with H = 100 at behaviour=distance:50: π_b puts almost all its mass on other
    actions than π_θ, so the product of 100 ratios along a behaviour trajectory is astronomically small and
    every estimate is ≤ 1e-30 of ‖∇J‖ (measured at this seed; the declared-unbiased estimator's true mean is
    ∇J, carried by trajectories a batch of 8 essentially never samples). Before the flag this read as
    variance 1e-74 with a bias p-value of 0. On-policy REINFORCE on the same problem is trustworthy."""
    problem = make_problem("garnet", {"horizon": 100})
    result = measure(problem, "is-trajectory", 8, 100, seed=0, show_progress=False,
                     estimator_options={"behaviour": "distance:50"})
    m = result.metrics
    assert np.linalg.norm(result.estimates, axis=1).max() < 1e-30 * m.reference_norm
    assert m.degenerate and not m.trustworthy and math.isnan(m.bias_pvalue) and m.nonfinite == 0
    record = result.to_dict()
    assert record["degenerate"] is True and record["trustworthy"] is False and record["nonfinite_fraction"] == 0.0
    assert record["bias_pvalue"] is None and any("degenerate" in r for r in record["untrustworthy_reasons"])
    control = measure(problem, "reinforce", 8, 100, seed=0, show_progress=False).metrics
    assert control.trustworthy and not control.degenerate


def test_overflowing_behaviour_data_are_flagged_over_the_nonfinite_limit():
    """lqr with H = 100 at behaviour=distance:100 (tests/test_off_policy.py: the behaviour policy's states
    overflow float64 near t = 100 in some trajectories): at this seed most estimates are non-finite, so the
    finite remainder is not the measurement."""
    problem = make_problem("lqr", {"horizon": 100})
    result = measure(problem, "is-per-decision", 4, 50, seed=3, show_progress=False,
                     estimator_options={"behaviour": "distance:100"})
    m = result.metrics
    assert m.nonfinite_fraction == m.nonfinite / 50 > NONFINITE_LIMIT
    assert m.excess_nonfinite and not m.trustworthy
    assert result.to_dict()["nonfinite_fraction"] == m.nonfinite_fraction
