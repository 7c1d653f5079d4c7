"""Critics and the estimators built on them: value functions against independent computations,
fitted critics against the oracle, and the declared biases of value baselines, actor-critic, GAE
and the entropy bonus detected where documented. Statistical tests state their false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bench.harness import measure
from bench.metrics import gradient_metrics
from envs import make_problem
from envs.values import QuadraticBasis, TableBasis, ValueFunction
from estimators import resolve_estimator
from estimators.actor_critic import actor_critic, gae_gradient
from estimators.critics import fit_values
from estimators.returns import reward_to_go
from estimators.score import reinforce
from tests.conftest import random_theta
from tests.twins import lqr_value_forward

ALPHA = 1e-4  # per statistical assertion; ~20 assertions here: family-wise false-positive rate ≤ 0.2%
GARNET = ("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2})


def test_quadratic_basis_represents_quadratic_forms():
    basis = QuadraticBasis(3)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, dtype=torch.float64, generator=g)
    matrix, constant = a + a.T, torch.tensor(0.7, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g)
    direct = torch.einsum("bi,ij,bj->b", x, matrix, x) + constant
    torch.testing.assert_close(basis.features(x) @ basis.weights_of(matrix, constant), direct)


def test_value_function_per_replicate_equals_shared_weights():
    problem = make_problem("frozenlake")
    batch = problem.sample(problem.default_theta(), 3, 4, torch.Generator().manual_seed(1))
    oracle = problem.oracle_values(problem.default_theta())
    stacked = ValueFunction(oracle.basis, oracle.weights.expand(3, -1, -1))
    steps = torch.arange(batch.steps)
    torch.testing.assert_close(stacked.at(batch.obs, steps), oracle.at(batch.obs, steps), rtol=0, atol=0)


def test_bootstrap_only_for_truncated_episodes():
    """A critic with a non-zero last row (as a stationary critic would have): truncated episodes
    bootstrap from V_T(final state), terminated ones from 0."""
    weights = torch.arange(3 * 4, dtype=torch.float64).reshape(3, 4)  # H = 2, S = 4
    critic = ValueFunction(TableBasis(4), weights)
    obs = torch.tensor([[[1, 2], [3, 0]]])  # [M=1, N=2, T=2]
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    values, bootstrap = critic.on_batch(obs, torch.tensor([[3, 2]]), torch.tensor([[True, False]]), mask)
    torch.testing.assert_close(values, torch.tensor([[[1.0, 6.0], [3.0, 0.0]]], dtype=torch.float64))
    torch.testing.assert_close(bootstrap, torch.tensor([[weights[2, 3].item(), 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("options", [{}, {"state_dim": 3, "action_dim": 2, "gamma": 0.9, "horizon": 7}])
def test_lqr_oracle_values_match_forward_twin(options):
    problem = make_problem("lqr", options)
    theta = random_theta(problem, seed=30, scale=0.3)
    oracle = problem.oracle_values(theta)
    x = torch.randn(4, problem.dynamics.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for t in (0, 3, problem.horizon - 1, problem.horizon):
        fast = oracle.at(x[None, :, None], torch.tensor([t]))[0, :, 0]
        slow = [lqr_value_forward(problem, theta, xi.numpy(), t) for xi in x]
        np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-10, atol=1e-10)
    # E_{x_0 ~ N(0, I)} V_0(x_0) = J
    w0 = oracle.weights[0]
    row_lengths = torch.arange(problem.dynamics.shape[0], 0, -1)  # the x_i x_j, j ≥ i, of row i
    diagonal = torch.cumsum(row_lengths, 0) - row_lengths
    torch.testing.assert_close(w0[0] + w0[1:][diagonal].sum(), problem.objective(theta), rtol=1e-12, atol=1e-12)


def test_fitted_table_critic_is_consistent_with_the_oracle():
    """Per visited (t, s), the fitted value is the mean of n reward-to-go samples with mean V_t(s):
    z = (V̂ − V)/(ŝ/√n) is ≈ N(0, 1) for cells with n ≥ 30, so Σ z² ~ χ²(cells). FPR ALPHA."""
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=31)
    batch = problem.sample(theta, 1, 20_000, torch.Generator().manual_seed(3))
    fitted = fit_values(problem.value_basis, problem.horizon, batch).weights[0]  # [H + 1, S]
    oracle = problem.oracle_values(theta).weights
    targets = reward_to_go(batch.rewards, batch.gamma)[0]  # [N, T]
    z = []
    for t in range(problem.horizon):
        for s in range(problem.mdp.num_states):
            sample = targets[batch.obs[0, :, t] == s, t]
            if len(sample) >= 30:
                z.append(float(fitted[t, s] - oracle[t, s]) / float(sample.std() / len(sample) ** 0.5))
    assert len(z) == problem.horizon * problem.mdp.num_states
    assert stats.chi2.sf(np.sum(np.square(z)), len(z)) >= ALPHA
    assert torch.all(fitted[-1] == 0)


@pytest.mark.parametrize("step", [0, 10, 19])
def test_fitted_quadratic_critic_is_consistent_with_the_oracle(step):
    """LQR's V_t is quadratic in x, so least squares of G_t on φ(x_t) is unbiased for the oracle's
    coefficients: the Wald statistic dᵀ Ĉ⁻¹ d of d = ŵ_t − w_t, with Ĉ the heteroscedasticity-robust
    (sandwich) covariance of ŵ_t, is ≈ χ²(F) on 20 000 trajectories. FPR ALPHA per step."""
    problem = make_problem("lqr")
    theta = random_theta(problem, seed=32, scale=0.3)
    batch = problem.sample(theta, 1, 20_000, torch.Generator().manual_seed(4))
    fitted = fit_values(problem.value_basis, problem.horizon, batch).weights[0, step]  # [F]
    oracle = problem.oracle_values(theta).weights[step]
    phi = problem.value_basis.features(batch.obs[0, :, step])  # [N, F]
    residual = reward_to_go(batch.rewards, batch.gamma)[0, :, step] - phi @ fitted
    bread = torch.linalg.inv(phi.T @ phi)
    covariance = bread @ (phi.T * residual**2) @ phi @ bread
    d = fitted - oracle
    wald = float(d @ torch.linalg.solve(covariance, d))
    assert stats.chi2.sf(wald, len(d)) >= ALPHA, wald
    assert not torch.allclose(fitted, oracle, rtol=0, atol=0)  # a fit, not the oracle copied


def test_gae_limits_are_reinforce_with_value_baseline_and_actor_critic():
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=33)
    batch = problem.sample(theta, 2, 5, torch.Generator().manual_seed(6))
    critic = problem.oracle_values(theta)
    error = torch.randn(critic.weights.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    error[-1] = 0.0  # V_H ≡ 0: with it, λ = 1 is exactly G_t − V̂_t (a truncated episode bootstraps from 0)
    noisy = ValueFunction(critic.basis, critic.weights + error)
    for v in (critic, noisy):
        torch.testing.assert_close(gae_gradient(problem.policy, theta, batch, v, 1.0),
                                   reinforce(problem.policy, theta, batch, baseline="value", critic=v),
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gae_gradient(problem.policy, theta, batch, v, 0.0),
                                   actor_critic(problem.policy, theta, batch, v), rtol=0, atol=0)


def measured(problem_case, estimator, options, batch_size, reps, seed, theta_seed):
    problem = make_problem(*problem_case)
    result = measure(problem, estimator, batch_size, reps, seed, random_theta(problem, theta_seed),
                     estimator_options=options, show_progress=False)
    assert not result.metrics.heavy_tailed, "outside the regime where p-values are calibrated"
    return result


def test_critic_error_becomes_variance_not_bias():
    """REINFORCE with the oracle baseline plus N(0, σ²) error per table entry: unbiased at every σ
    (p ≥ ALPHA each), and the variance grows with σ (95% CIs disjoint, chance < 5% if it did not;
    measured variance ratio ≈ 4 at σ = 2)."""
    results = [measured(GARNET, "reinforce", {"baseline": "value", "critic": critic}, 16, 1000, 110, 34)
               for critic in ("oracle", "oracle_noisy:2")]
    for result in results:
        assert result.declared_unbiased and result.metrics.bias_pvalue >= ALPHA
    assert results[0].metrics.variance_trace_ci[1] < results[1].metrics.variance_trace_ci[0]


@pytest.mark.parametrize("estimator,options,problem_case,batch_size", [
    # fitted on its own batch, the baseline absorbs part of each trajectory's return
    ("reinforce", {"baseline": "value", "critic": "fitted_same_batch"}, GARNET, 16),
    # a critic fitted on 1000 independent trajectories: its error enters through V̂(s′)
    ("actor-critic", {"critic": "fitted"}, ("taxi", {"horizon": 50}), 16),
    ("gae", {"lambda": 0.5, "critic": "oracle_noisy:1"}, GARNET, 16),
    ("gae", {"lambda": 0.5, "critic": "fitted_same_batch"}, GARNET, 16),
])
def test_declared_biased_critic_estimators_are_detected(estimator, options, problem_case, batch_size):
    """Each setting here is declared biased and its bias is detected: p < ALPHA. (Were the estimator
    unbiased, the test would fail with probability ≥ 1 − ALPHA: these are power checks.)"""
    result = measured(problem_case, estimator, options, batch_size, 400, 111, 35)
    assert not result.declared_unbiased
    assert result.metrics.bias_pvalue < ALPHA, result.metrics.bias_pvalue


def test_entropy_bonus_is_unbiased_for_its_target_and_biased_for_grad_j():
    """entropy_coef = 0.5 on garnet γ = 0.9: consistent with ∇(J + α·H) (p ≥ ALPHA) and its bias
    against ∇J detected (p < ALPHA)."""
    result = measured(GARNET, "reinforce", {"entropy_coef": 0.5, "baseline": "rloo"}, 16, 1000, 112, 36)
    assert result.target == "∇(J + 0.5·H)" and result.declared_unbiased
    assert result.metrics.bias_pvalue >= ALPHA
    problem = make_problem(*GARNET)
    grad_j = problem.exact_gradient(torch.as_tensor(result.theta)).numpy()
    assert gradient_metrics(result.estimates, grad_j).bias_pvalue < ALPHA


@pytest.mark.parametrize("problem_case", [GARNET, ("frozenlake", {}), ("lqr", {}), ("gaussian-bandit", {})])
def test_entropy_objective_matches_sampled_entropy(problem_case):
    """E[Σ_t γ^t H(π(·|s_t))] exact vs its Monte Carlo mean over 4000 trajectories: within 4 standard
    errors (FPR ≈ 6e-5 by the CLT; for Gaussian policies the entropy is constant and the match exact)."""
    problem = make_problem(*problem_case)
    theta = random_theta(problem, seed=37)
    batch = problem.sample(theta, 1, 4000, torch.Generator().manual_seed(7))
    per_trajectory = ((problem.policy.entropy(theta, batch.obs) * batch.mask) @ batch.discount)[0]  # [N]
    exact = float(problem.entropy_objective(theta))
    se = float(per_trajectory.std()) / 4000**0.5
    assert abs(float(per_trajectory.mean()) - exact) <= 4 * se + 1e-9 * abs(exact)


def test_critic_option_applies_only_to_value_baselines():
    from envs.spec import ConfigError

    # refused when the options are resolved (`only_if`, `validate`), before any problem is involved
    with pytest.raises(ConfigError, match="estimator reinforce: option critic applies only to baseline=value"):
        resolve_estimator("reinforce", {"critic": "fitted"})
    with pytest.raises(ConfigError, match="estimator gae: option critic_samples applies only to critic=fitted"):
        resolve_estimator("gae", {"critic_samples": 50})
    resolve_estimator("gae", {"critic_samples": 50, "critic": "fitted"}).check(make_problem("garnet"), 4)
    with pytest.raises(ConfigError, match="baseline=value needs returns=reward_to_go"):
        resolve_estimator("reinforce", {"baseline": "value", "returns": "total"})
