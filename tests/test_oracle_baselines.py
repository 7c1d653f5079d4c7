"""The oracle optimal baselines (`baseline=oracle_optimal | oracle_optimal_per_param`) against closed forms on the
softmax bandit; their unbiasedness is held to its declaration by the registry-parametrized tests of
tests/test_estimators.py (whose cases include them, checked below).

Closed forms. On the K-armed softmax bandit, π = softmax(θ), arm a pays R ~ Bernoulli(p_a), H = 1 and w_0 = 1, so a
trajectory's weighted score is s = ψ(a) = e_a − π and its unbaselined gradient g = ψ(a) R. Then
    ‖ψ(a)‖² = 1 − 2π_a + ‖π‖²,   E‖ψ‖² = Σ_a π_a (1 − 2π_a + ‖π‖²) = 1 − ‖π‖²,
    E[s·g] = E[‖ψ‖² R] = Σ_a π_a p_a (1 − 2π_a + ‖π‖²),
    b* = Σ_a π_a p_a (1 − 2π_a + ‖π‖²) / (1 − ‖π‖²);
and per parameter, ψ_k(a)² = (δ_ak − π_k)² = δ_ak (1 − 2π_k) + π_k², so
    E[ψ_k²] = π_k (1 − 2π_k) + π_k² = π_k (1 − π_k),   E[ψ_k² R] = π_k p_k (1 − 2π_k) + π_k² J   (J = Σ_a π_a p_a),
    b*_k = (p_k (1 − 2π_k) + π_k J) / (1 − π_k).
The fit b̂ = Σ_i x_i / Σ_i y_i over K independent trajectories (x = s·g, y = ‖s‖², or per parameter x = s_k g_k,
y = s_k²) has, to first order (delta method), b̂ − b* ≈ mean_i(x_i − b* y_i) / E[y] with E[x − b* y] = 0, so its
standard error is √(E[(x − b* y)²] / K) / E[y], also in closed form: x − b* y = ‖ψ(a)‖² (R − b*) (resp.
ψ_k(a)² (R − b*_k)) and E[(R − b)² | a] = p_a (1 − b)² + (1 − p_a) b².
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.harness import measure
from envs import make_problem
from envs.spec import ConfigError
from estimators import resolve_estimator
from estimators.baselines import ORACLE_BASELINES
from estimators.score import reinforce
from tests.test_estimators import TWIN_CASES, UNBIASED_CASES

PROBS = (0.9, 0.4, 0.1)
THETA = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
SAMPLES = 200_000
# Each of the 4 comparisons (1 scalar, 3 per-parameter) fails with probability 2·Φ(−4.5) ≈ 6.8e-6 for a correct fit
# (the normal approximation of a mean of 2·10⁵ bounded terms): family-wise ≤ 3e-5.
K_SIGMA = 4.5


def closed_forms(theta: torch.Tensor, probs: tuple[float, ...]):
    """(b*, its standard error per trajectory ×√K) scalar, and the same per parameter [K], from the docstring."""
    p = torch.tensor(probs, dtype=torch.float64)
    pi = torch.softmax(theta, -1)
    value = pi @ p
    sq_norm = 1 - 2 * pi + (pi * pi).sum()  # ‖ψ(a)‖² for each arm a
    scalar = (pi * p * sq_norm).sum() / (1 - (pi * pi).sum())
    per_param = (p * (1 - 2 * pi) + pi * value) / (1 - pi)

    def second_moment(b: torch.Tensor) -> torch.Tensor:  # E[(R − b)² | a]: [a, 1] for a scalar b, [a, k] for b [1, k]
        return p[:, None] * (1 - b) ** 2 + (1 - p[:, None]) * b ** 2

    scalar_sd = torch.sqrt((pi * sq_norm ** 2 * second_moment(scalar)[:, 0]).sum()) / (1 - (pi * pi).sum())
    psi_sq = (torch.eye(len(p), dtype=torch.float64) - pi) ** 2  # [a, k]: ψ_k(a)²
    per_param_sd = torch.sqrt((pi[:, None] * psi_sq ** 2 * second_moment(per_param[None, :])).sum(0)) / (pi * (1 - pi))
    return scalar, scalar_sd, per_param, per_param_sd


@pytest.mark.parametrize("baseline", ORACLE_BASELINES)
def test_oracle_baseline_matches_closed_form_on_softmax_bandit(baseline):
    problem = make_problem("softmax-bandit", {"probs": PROBS})
    config = resolve_estimator("reinforce", {"baseline": f"{baseline}:{SAMPLES}"})
    fitted = config.prepare(problem, THETA, torch.Generator().manual_seed(5)).kwargs["oracle_baseline"]
    scalar, scalar_sd, per_param, per_param_sd = closed_forms(THETA, PROBS)
    if baseline == "oracle_optimal":
        expected, se = scalar.reshape(1, 1), scalar_sd / SAMPLES ** 0.5
    else:
        expected, se = per_param.reshape(1, -1), per_param_sd / SAMPLES ** 0.5
    assert fitted.shape == expected.shape
    assert torch.all((fitted - expected).abs() <= K_SIGMA * se), (fitted, expected, se)


@pytest.mark.parametrize("baseline", ORACLE_BASELINES)
def test_closed_form_standard_error_matches_the_spread_of_fits(baseline):
    """The docstring's standard errors, checked against 200 fits of 2000 trajectories each: the spread of b̂ (of each
    b̂_k) agrees with it within 5 sampling errors of a standard deviation from 200 values (relative SE ≈ 1/√400 = 5%;
    false-positive rate 2·Φ(−5) ≈ 6e-7 per comparison). So the fit is noise of the size the delta method predicts:
    neither a closed form in disguise (spread 0) nor fitted on fewer or dependent trajectories."""
    problem = make_problem("softmax-bandit", {"probs": PROBS})
    config = resolve_estimator("reinforce", {"baseline": f"{baseline}:2000"})
    fits = np.stack([config.prepare(problem, THETA, torch.Generator().manual_seed(seed)).kwargs["oracle_baseline"]
                     .reshape(-1).numpy() for seed in range(200)])  # [200, 1] or [200, K]
    _, scalar_sd, _, per_param_sd = closed_forms(THETA, PROBS)
    sd = (scalar_sd if baseline == "oracle_optimal" else per_param_sd).reshape(-1).numpy() / 2000 ** 0.5
    assert np.all(np.abs(fits.std(0, ddof=1) / sd - 1) < 5 * 0.05), fits.std(0, ddof=1) / sd


def test_oracle_baselines_enter_the_registry_tests():
    """The option's examples put both oracle baselines in the twin and the unbiasedness tests, on every problem."""
    for cases in (TWIN_CASES, UNBIASED_CASES):
        baselines = {opts.get("baseline") for _, name, opts in cases if name == "reinforce"}
        assert set(ORACLE_BASELINES) <= baselines
    unbiased_problems = {case[0][0] for case in UNBIASED_CASES if case[2].get("baseline") in ORACLE_BASELINES}
    assert {"softmax-bandit", "frozenlake", "lqr", "garnet"} <= unbiased_problems


@pytest.mark.parametrize("baseline", ORACLE_BASELINES)
def test_oracle_baseline_is_declared_unbiased_and_not_batch_dependent(baseline):
    """Declared unbiased, and allowed at N = 1 (fitted elsewhere, it does not cancel a lone trajectory as the
    batch-fitted optimal baselines would)."""
    problem = make_problem("softmax-bandit", {"probs": PROBS})
    config = resolve_estimator("reinforce", {"baseline": f"{baseline}:1000"})
    assert config.unbiased(problem)
    config.check(problem, 1)
    result = measure(problem, "reinforce", 1, reps=50, seed=3, theta=THETA,
                     estimator_options={"baseline": f"{baseline}:1000"}, show_progress=False)
    assert result.declared_unbiased and result.metrics.variance_trace > 0
    assert result.estimator_info["oracle_samples"] == 1000


def test_oracle_baseline_variance_matches_closed_form_on_softmax_bandit():
    """With b̂ the fitted scalar baseline, each trajectory contributes ψ(a)(R − b̂), so the estimate of a batch of N has
    tr Cov = (E[‖ψ‖² (R − b̂)²] − ‖∇J‖²) / N, E[‖ψ‖² (R − b̂)² ] = Σ_a π_a ‖ψ(a)‖² (p_a (1 − b̂)² + (1 − p_a) b̂²).
    The measured variance trace (M = 4000) agrees within 4.5 of its standard errors, sd(‖ĝ_m − ḡ‖²)/√M (false-positive
    rate ≈ 7e-6); and it is below the closed-form variance of the unbaselined estimator (b = 0) by more than 4.5 of
    them (measured: 83)."""
    problem = make_problem("softmax-bandit", {"probs": PROBS})
    batch_size, reps = 2, 4000
    result = measure(problem, "reinforce", batch_size, reps=reps, seed=8, theta=THETA,
                     estimator_options={"baseline": "oracle_optimal"}, show_progress=False)
    fitted = result.estimator_info["oracle_baseline"]
    p, pi = torch.tensor(PROBS, dtype=torch.float64), torch.softmax(THETA, -1)
    sq_norm = 1 - 2 * pi + (pi * pi).sum()
    grad_sq = float((problem.exact_gradient(THETA) ** 2).sum())

    def variance(b: float) -> float:
        return (float((pi * sq_norm * (p * (1 - b) ** 2 + (1 - p) * b ** 2)).sum()) - grad_sq) / batch_size

    deviations = ((result.estimates - result.estimates.mean(0)) ** 2).sum(1)  # [M]
    se = deviations.std(ddof=1) / reps ** 0.5
    assert abs(result.metrics.variance_trace - variance(fitted)) <= K_SIGMA * se
    assert variance(0.0) - result.metrics.variance_trace > K_SIGMA * se


def test_oracle_baseline_refused_without_log_pi_and_without_prepare():
    deterministic = make_problem("lqr", {"policy": "deterministic"})
    config = resolve_estimator("reinforce", {"baseline": "oracle_optimal"})
    with pytest.raises(ConfigError, match="no stochastic policy") as err:
        config.check(deterministic, 4)
    assert "\n" not in str(err.value)
    # K in one normal form: the default is written without it, a K out of range is one line naming the range
    assert resolve_estimator("reinforce", {"baseline": "oracle_optimal:10000"}).baseline == "oracle_optimal"
    assert resolve_estimator("reinforce", {"baseline": "oracle_optimal_per_param:5000"}).baseline == \
        "oracle_optimal_per_param:5000"
    for bad in ("oracle_optimal:1", "oracle_optimal:x", "oracle_optimal:2.5"):
        with pytest.raises(ConfigError, match=r"option baseline=.* K an integer ≥ 2 and ≤ 10000000"):
            resolve_estimator("reinforce", {"baseline": bad})
    problem = make_problem("softmax-bandit", {})
    batch = problem.sample(problem.default_theta(), 1, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs oracle_baseline"):
        reinforce(problem.policy, problem.default_theta(), batch, baseline="oracle_optimal")
