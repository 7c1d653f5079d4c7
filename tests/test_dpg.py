"""The deterministic LQR policy and the deterministic policy gradient (`dpg`): exact Q_t against
the values and the Bellman equation, the DPG theorem in closed form against ∇J, the vectorised
estimator against its loop twin, refusals, and the declared (un)biasedness measured."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bench.harness import PREPARE_STREAM, make_generator, measure
from bench.metrics import gradient_metrics
from envs import make_problem
from envs.lqr import LinearQuadratic, QuadraticActionValues
from envs.problem import Capability
from envs.spec import ConfigError
from envs.values import QuadraticBasis
from estimators import resolve_estimator
from estimators.deterministic import dpg, exploratory_samples, fit_action_values
from tests.conftest import random_theta
from tests.twins import dpg_loop, finite_difference_gradient

DEFAULT = {"policy": "deterministic"}
# three states, two actions, process noise 0.5, γ = 0.9, H = 10: every shape and constant differs
OTHER = {"policy": "deterministic", "state_dim": 3, "action_dim": 2, "system_seed": 1, "gamma": 0.9, "noise": 0.5,
         "horizon": 10}
SYSTEMS = [DEFAULT, OTHER]
SYSTEM_IDS = ["default", "other"]


def theta_for(problem: LinearQuadratic, seed: int) -> torch.Tensor:
    """A generic K; smaller on the 3-state system, whose closed loop grows fast for large K."""
    return random_theta(problem, seed, scale=0.5 if problem.dynamics.shape[0] == 2 else 0.2)


def expected_dpg(problem: LinearQuadratic, theta: torch.Tensor, critic: QuadraticActionValues) -> torch.Tensor:
    """E[ĝ] for any quadratic critic Q̂_t(x, u) = zᵀ W_t z + c_t, in closed form: at u = −Kx,
    ∇_u Q̂_t = 2 (W_t,ux − W_t,uu K) x =: G_t x, and ∇_K of μ_i = −Σ_j K_ij x_j is −e_i xᵀ, so
    E[Σ_t γ^t ∇_θμᵀ ∇_u Q̂_t] = −Σ_t γ^t G_t E[x_t x_tᵀ] = −Σ_t γ^t G_t Σ_t (row-major K).  → [P]"""
    dx, gain = problem.dynamics.shape[0], problem.policy.gain(theta)
    w = critic.matrices
    slope = 2 * (w[:, dx:, :dx] - w[:, dx:, dx:] @ gain)  # G_t [H, du, dx]
    discount = problem.gamma ** torch.arange(problem.horizon, dtype=torch.float64)
    return -(discount[:, None, None] * slope @ problem.state_covariances(theta)).sum(0).reshape(-1)


def test_deterministic_policy_acts_without_noise():
    problem = make_problem("lqr", DEFAULT)
    theta = theta_for(problem, seed=30)
    assert not problem.supports(Capability.STOCHASTIC_POLICY) and problem.num_params == 2
    batch = problem.sample(theta, 2, 5, torch.Generator().manual_seed(0))
    assert torch.equal(batch.actions, -batch.obs @ problem.policy.gain(theta).T)


def test_deterministic_gradient_matches_finite_differences():
    # Deterministic, as test_envs.test_exact_gradient_matches_finite_differences (which covers DEFAULT).
    problem = make_problem("lqr", OTHER)
    theta = theta_for(problem, seed=31)
    scale = max(1.0, abs(float(problem.objective(theta))))
    torch.testing.assert_close(problem.exact_gradient(theta), finite_difference_gradient(problem, theta),
                               rtol=0, atol=1e-7 * scale)


def test_deterministic_policy_is_the_zero_noise_gaussian():
    """J and ∇_K J of u = −Kx equal those of u = −Kx + σε at σ = e^{−40} (σ² ≈ 2e−35: below rounding)."""
    deterministic = make_problem("lqr", OTHER)
    gaussian = make_problem("lqr", {**OTHER, "policy": "gaussian"})
    theta = theta_for(deterministic, seed=32)
    noiseless = torch.cat([theta, torch.tensor([-40.0], dtype=torch.float64)])
    torch.testing.assert_close(deterministic.objective(theta), gaussian.objective(noiseless), rtol=1e-13, atol=0)
    torch.testing.assert_close(deterministic.exact_gradient(theta), gaussian.exact_gradient(noiseless)[:-1],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", SYSTEMS + [{}], ids=SYSTEM_IDS + ["gaussian"])
def test_action_values_agree_with_values_and_bellman(options):
    """Deterministic identities, to rounding: (a) V_t(x) = E_ε Q_t(x, −Kx + σε) = Q_t(x, −Kx) + σ² tr W_t,uu;
    (b) Q_t(x, u) = r(x, u) + γ E_w V_{t+1}(Ax + Bu + w), with E_w of the quadratic V_{t+1} taken by
    the 2d-point cubature w = ±ν√d e_k (exact for quadratics), V from `oracle_values`;
    (c) the closed-form ∇_u Q_t equals autograd through Q_t."""
    problem = make_problem("lqr", options)
    theta = random_theta(problem, seed=33, scale=0.3)
    q, v = problem.action_values(theta), problem.oracle_values(theta)
    dx, du, horizon = problem.dynamics.shape[0], problem.control.shape[1], problem.horizon
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(horizon, 4, dx, dtype=torch.float64, generator=generator)  # 4 states per step
    u = torch.randn(horizon, 4, du, dtype=torch.float64, generator=generator)
    steps = torch.arange(horizon)[:, None].expand(-1, 4)

    def value(states, step):  # V_step(states [..., dx]) through ValueFunction.at's [M, N, T] layout
        return v.at(states.reshape(1, -1, 1, dx), torch.tensor([step])).reshape(states.shape[:-1])

    variance = problem.policy.action_variance(theta)
    policy_action = -x @ problem.policy.gain(theta).T
    noise_term = variance * q.matrices[:, dx:, dx:].diagonal(dim1=-2, dim2=-1).sum(-1)[:, None]  # σ² tr W_t,uu
    mean_over_noise = q.at(x, policy_action, steps) + noise_term
    exact_values = torch.stack([value(x[t], t) for t in range(horizon)])
    torch.testing.assert_close(mean_over_noise, exact_values, rtol=1e-12, atol=1e-10)

    reward = -(x * x).sum(-1) - 0.1 * (u * u).sum(-1)
    mean_next = x @ problem.dynamics.T + u @ problem.control.T  # [H, 4, dx]
    points = problem.noise * math.sqrt(dx) * torch.cat([torch.eye(dx), -torch.eye(dx)]).to(torch.float64)  # [2d, dx]
    bellman = torch.stack([reward[t] + problem.gamma * value(mean_next[t][:, None] + points, t + 1).mean(-1)
                           for t in range(horizon)])
    torch.testing.assert_close(q.at(x, u, steps), bellman, rtol=1e-12, atol=1e-10)

    autograd = torch.func.grad(lambda actions: q.at(x, actions, steps).sum())(u)
    torch.testing.assert_close(q.action_gradient(x, u, steps), autograd, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("options", SYSTEMS, ids=SYSTEM_IDS)
def test_dpg_theorem_holds_exactly(options):
    """The finite-horizon, time-indexed DPG theorem Σ_t γ^t E[∇_θμ(x_t)ᵀ ∇_u Q_t(x_t, μ(x_t))] = ∇J,
    in closed form (`expected_dpg`) with the exact Q_t, against autograd through J: to rounding."""
    problem = make_problem("lqr", options)
    theta = theta_for(problem, seed=34)
    exact = problem.exact_gradient(theta)
    torch.testing.assert_close(expected_dpg(problem, theta, problem.action_values(theta)), exact,
                               rtol=1e-10, atol=1e-10 * float(exact.norm()))


@pytest.mark.parametrize("critic", ["oracle", "fitted"])
@pytest.mark.parametrize("options", SYSTEMS, ids=SYSTEM_IDS)
def test_dpg_matches_loop_twin(options, critic):
    problem = make_problem("lqr", options)
    theta = theta_for(problem, seed=35)
    config = resolve_estimator("dpg", {"critic": critic, **({"critic_samples": 50} if critic == "fitted" else {})})
    prepared = config.prepare(problem, theta, torch.Generator().manual_seed(6))
    batch = problem.sample(theta, 2, 3, torch.Generator().manual_seed(7))
    fast = dpg(problem.policy, theta, batch, **prepared.kwargs)
    torch.testing.assert_close(fast, dpg_loop(problem, theta, batch, prepared.kwargs["critic"]), rtol=1e-10, atol=1e-10)


def test_fitted_critic_weights_round_trip():
    """`from_basis_weights` inverts `QuadraticBasis.weights_of` (the fitted critic's representation)."""
    problem = make_problem("lqr", OTHER)
    exact = problem.action_values(theta_for(problem, seed=36))
    basis = QuadraticBasis(exact.matrices.shape[-1])
    back = QuadraticActionValues.from_basis_weights(basis, 3, basis.weights_of(exact.matrices, exact.constants))
    torch.testing.assert_close(back.matrices, exact.matrices, rtol=0, atol=1e-12)
    torch.testing.assert_close(back.constants, exact.constants, rtol=0, atol=0)


def test_refusals_are_one_clear_line():
    deterministic = make_problem("lqr", DEFAULT)
    for name, options, kind in [("frozenlake", {}, "softmax-tabular"), ("lqr", {}, "linear-gaussian"),
                                ("gaussian-bandit", {}, "scalar-gaussian")]:
        with pytest.raises(ConfigError, match=f"estimator dpg: env {name} has no deterministic policy with continuous "
                                              f"actions.*its policy is {kind}"):
            measure(make_problem(name, options), "dpg", 4, 2, 0)
    for estimator in ["reinforce", "grpo"]:
        with pytest.raises(ConfigError, match=rf"estimator {estimator}: env lqr has no stochastic policy \(∇ log π\)"):
            measure(deterministic, estimator, 4, 2, 0)
    with pytest.raises(ConfigError, match="estimator dpg: option exploration applies only to critic=fitted"):
        measure(deterministic, "dpg", 4, 2, 0, estimator_options={"exploration": 0.5})
    with pytest.raises(ConfigError, match="estimator dpg: option critic_samples applies only to critic=fitted"):
        resolve_estimator("dpg", {"critic_samples": 50})
    for method in [deterministic.entropy_objective, deterministic.fisher]:
        with pytest.raises(ConfigError, match="policy=deterministic has no .*: a deterministic policy has no log π"):
            method(deterministic.default_theta())


# Statistical tests. Each p-value assertion `p ≥ ALPHA` fails with probability ALPHA for a correct
# implementation (the harness p-values are calibrated where `not heavy_tailed`, which is asserted).
ALPHA = 1e-4


@pytest.mark.parametrize("options", SYSTEMS, ids=SYSTEM_IDS)
def test_dpg_with_exact_q_is_unbiased(options):
    problem = make_problem("lqr", options)
    result = measure(problem, "dpg", 32, reps=400, seed=110, theta=theta_for(problem, seed=37),
                     estimator_options={"critic": "oracle"}, show_progress=False)
    assert result.declared_unbiased and not result.metrics.heavy_tailed and result.metrics.nonfinite == 0
    assert result.metrics.bias_pvalue >= ALPHA, f"p = {result.metrics.bias_pvalue:.2e}"


@pytest.mark.parametrize("exploration", [1.0, 0.0])
def test_dpg_with_fitted_q_is_biased_by_exactly_its_critic_error(exploration):
    """The documented settings where `critic=fitted` is biased. With the critic fitted on 1000
    exploratory trajectories (the defaults) the bias given the critic, Σ_t γ^t E[∇_θμᵀ(∇_u Q̂_t − ∇_u Q_t)],
    is 3.9% of ‖∇J‖ for this seed's critic (≈ 7% RMS over critic draws) and detected (p ≈ 1e-7 < ALPHA);
    without exploration ∇_u Q is not identified and the bias is 86%. In both, the estimates are
    consistent (p ≥ ALPHA, false-positive rate ALPHA) with `expected_dpg` for the very critic the
    measurement fitted, re-fitted here from the measurement's own prepare stream: the bias is the
    critic's error and nothing else."""
    problem = make_problem("lqr", DEFAULT)
    theta, seed = theta_for(problem, seed=37), 111
    options = {"critic": "fitted", "exploration": exploration}
    result = measure(problem, "dpg", 32, reps=400, seed=seed, theta=theta, estimator_options=options,
                     show_progress=False)
    assert not result.declared_unbiased and not result.metrics.heavy_tailed
    assert result.metrics.bias_pvalue < ALPHA, f"p = {result.metrics.bias_pvalue:.2e}"
    critic = resolve_estimator("dpg", options).prepare(problem, theta, make_generator(seed, PREPARE_STREAM)).kwargs["critic"]
    expected = expected_dpg(problem, theta, critic).numpy()
    assert gradient_metrics(result.estimates, expected).bias_pvalue >= ALPHA


def test_fitted_critic_error_averages_out_and_shrinks_with_samples():
    """What is true of the fitted critic with exploration: least squares in the class of the true
    Q_t is unbiased given the design, and exploration changes only Q_t's constant, so over critic
    draws E[E[ĝ | Q̂]] = ∇J, while the critic's error shrinks with critic_samples n. Computed without
    sampling batches: E[ĝ | Q̂] = `expected_dpg`. R = 200 critics at n = 50 and n = 400:
    (a) their mean is ∇J (p ≥ ALPHA, not heavy-tailed: false-positive rate ALPHA); (b) the mean squared
    bias ‖E[ĝ|Q̂] − ∇J‖² is smaller at n = 400, by a one-sided z-test at level ALPHA on the two means'
    standard errors (≈ 8× smaller expected from the 1/n variance of least squares; measured z ≈ 10)."""
    problem = make_problem("lqr", DEFAULT)
    theta = theta_for(problem, seed=38)
    exact = problem.exact_gradient(theta)
    generator = torch.Generator().manual_seed(8)
    squared_bias = {}
    for count in (50, 400):
        batch = exploratory_samples(problem, theta, 1.0, 200, count, generator)
        critics = fit_action_values(problem.policy.state_dim, problem.policy.action_dim, problem.horizon, batch)
        means = torch.stack([expected_dpg(problem, theta, critic) for critic in critics])  # [R, P]
        if count == 50:
            metrics = gradient_metrics(means.numpy(), exact.numpy())
            assert not metrics.heavy_tailed and metrics.bias_pvalue >= ALPHA, metrics.bias_pvalue
        squared_bias[count] = ((means - exact) ** 2).sum(-1).numpy()
    small, large = squared_bias[50], squared_bias[400]
    difference = small.mean() - large.mean()
    se = math.sqrt(small.var(ddof=1) / small.size + large.var(ddof=1) / large.size)
    assert difference / se > stats.norm.isf(ALPHA), (small.mean(), large.mean(), se)
