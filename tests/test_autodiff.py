"""The three autodiff methods (vmap, surrogate, naive) compute the same numbers, and the MLP policy
is the torch.nn network it documents. All checks are deterministic (no false positives)."""

from __future__ import annotations

import pytest
import torch

from envs import make_problem
from envs.policies import MLPCategorical
from envs.problem import Batch, Policy, discount_vector
from envs.spec import ConfigError
from estimators import resolve_estimator
from estimators.autodiff import (
    METHODS,
    weighted_entropy_gradient_per_replicate,
    weighted_score_per_replicate,
    weighted_score_per_trajectory,
)
from estimators.score import BaselineParser
from tests.conftest import case_id, random_theta

SLOW_METHODS = [m for m in METHODS if m != "vmap"]
GRADIENTS = [weighted_score_per_replicate, weighted_score_per_trajectory, weighted_entropy_gradient_per_replicate]


def assert_equal_to_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to 1e-10 relative: elementwise, with an absolute floor of 1e-10 × the largest entry, so that
    entries that cancel to ~0 are compared at the scale of the computation."""
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


def synthetic_mlp_batch(policy: MLPCategorical, reps: int, batch_size: int, horizon: int,
                        generator: torch.Generator, full: bool) -> tuple[Batch, torch.Tensor]:
    """A batch of N(0, 1) observations and uniform actions (not drawn from π: the gradients are equal
    whatever the data) and N(0, 1) weights [M, N, T], zero after each episode's end. full=False draws
    episode lengths uniformly in 1..T; full=True keeps every step alive."""
    shape = (reps, batch_size, horizon)
    obs = torch.randn(*shape, policy.obs_dim, dtype=torch.float64, generator=generator)
    actions = torch.randint(policy.num_actions, shape, generator=generator)
    lengths = torch.randint(1, horizon + 1, shape[:2], generator=generator) if not full else torch.full(shape[:2], horizon)
    mask = (torch.arange(horizon) < lengths[..., None]).to(torch.float64)  # [M, N, T]
    weights = torch.randn(shape, dtype=torch.float64, generator=generator) * mask
    batch = Batch(obs=obs, actions=actions, rewards=torch.zeros(shape, dtype=torch.float64), mask=mask,
                  terminated=lengths < horizon, truncated=lengths == horizon, discount=discount_vector(1.0, horizon),
                  gamma=1.0, final_obs=torch.zeros(reps, batch_size, policy.obs_dim, dtype=torch.float64))
    return batch, weights


def assert_methods_agree(policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor) -> None:
    for gradient in GRADIENTS:
        fast = gradient(policy, theta, batch, weights, method="vmap")
        assert fast.abs().max() > 0  # a vacuous comparison of zeros would pass anything
        for method in SLOW_METHODS:
            assert_equal_to_rounding(gradient(policy, theta, batch, weights, method=method), fast)


def test_methods_agree_on_every_problem(problem):
    """Per replicate, per trajectory and the entropy gradient, on each problem's own batches."""
    if not problem.stochastic_policy:
        pytest.skip("a deterministic policy has no log π")
    theta = random_theta(problem, seed=30)
    batch = problem.sample(theta, 2, 2, torch.Generator().manual_seed(31))
    weights = torch.randn(batch.mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(32))
    assert_methods_agree(problem.policy, theta, batch, weights * batch.mask)


def test_methods_agree_on_mlp_policy():
    policy = MLPCategorical(obs_dim=3, hidden=(8, 5), num_actions=4)
    generator = torch.Generator().manual_seed(33)
    batch, weights = synthetic_mlp_batch(policy, reps=2, batch_size=3, horizon=6, generator=generator, full=False)
    assert 0 < batch.mask.mean() < 1  # the naive loop's skipping of finished steps is exercised
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    assert_methods_agree(policy, theta, batch, weights)


def test_unknown_method_is_refused():
    policy = MLPCategorical(obs_dim=2, hidden=(3,), num_actions=2)
    batch, weights = synthetic_mlp_batch(policy, 1, 2, 3, torch.Generator().manual_seed(0), full=True)
    with pytest.raises(ValueError, match="autodiff method 'jax'"):
        weighted_score_per_replicate(policy, torch.zeros(policy.num_params, dtype=torch.float64), batch, weights, "jax")
    with pytest.raises(ConfigError, match="option autodiff='jax' for estimator reinforce"):
        resolve_estimator("reinforce", {"autodiff": "jax"})


REINFORCE_CASES = [("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}), ("lqr", {})]


@pytest.mark.parametrize("baseline", BaselineParser().examples)
@pytest.mark.parametrize("case", REINFORCE_CASES, ids=[case_id(c) for c in REINFORCE_CASES])
def test_reinforce_autodiff_options_agree(case, baseline):
    """Every baseline (the optimal ones go through the per-trajectory gradients), with the entropy
    bonus on so that its direct gradient is computed by the chosen method too."""
    problem = make_problem(*case)
    theta = random_theta(problem, seed=34)
    spec, options = resolve_estimator("reinforce", {"baseline": baseline, "entropy_coef": 0.5})
    kwargs = dict(spec.prepare(options, problem, theta, torch.Generator().manual_seed(35)).kwargs)
    batch = problem.sample(theta, 2, 4, torch.Generator().manual_seed(36))
    fast = spec.estimate(problem.policy, theta, batch, **{**kwargs, "autodiff": "vmap"})
    assert fast.abs().max() > 0
    for method in SLOW_METHODS:
        assert_equal_to_rounding(spec.estimate(problem.policy, theta, batch, **{**kwargs, "autodiff": method}), fast)


def torch_nn_twin(policy: MLPCategorical, theta: torch.Tensor) -> torch.nn.Sequential:
    """The network as one writes it with torch.nn, θ loaded through torch's own flattening order."""
    modules: list[torch.nn.Module] = []
    for n_in, n_out in policy.layer_sizes:
        modules += [torch.nn.Linear(n_in, n_out, dtype=torch.float64), torch.nn.Tanh()]
    network = torch.nn.Sequential(*modules[:-1])
    assert policy.num_params == sum(p.numel() for p in network.parameters())
    torch.nn.utils.vector_to_parameters(theta, network.parameters())
    return network


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5)])
def test_mlp_matches_torch_nn(hidden):
    policy = MLPCategorical(obs_dim=4, hidden=hidden, num_actions=3)
    generator = torch.Generator().manual_seed(37)
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    network = torch_nn_twin(policy, theta)
    obs = torch.randn(5, 2, 4, dtype=torch.float64, generator=generator)
    actions = torch.randint(3, (5, 2), generator=generator)
    with torch.no_grad():
        reference = torch.distributions.Categorical(logits=network(obs))
    torch.testing.assert_close(policy.log_prob(theta, obs, actions), reference.log_prob(actions), rtol=1e-12, atol=0)
    torch.testing.assert_close(policy.entropy(theta, obs), reference.entropy(), rtol=1e-12, atol=0)
    # one step, as the naive loop evaluates it: obs [obs_dim], action []
    torch.testing.assert_close(policy.log_prob(theta, obs[0, 0], actions[0, 0]), reference.log_prob(actions)[0, 0])


def test_mlp_init_theta_is_seeded_orthogonal():
    policy = MLPCategorical(obs_dim=4, hidden=(16, 8), num_actions=3)
    theta = policy.init_theta(torch.Generator().manual_seed(38))
    assert torch.equal(theta, policy.init_theta(torch.Generator().manual_seed(38)))
    assert not torch.equal(theta, policy.init_theta(torch.Generator().manual_seed(39)))
    layers = policy.layers(theta)
    for k, (weight, bias) in enumerate(layers):
        gain = 0.01 if k == len(layers) - 1 else 2**0.5
        small = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight  # rows or columns
        torch.testing.assert_close(small, gain**2 * torch.eye(min(weight.shape), dtype=torch.float64))
        assert torch.equal(bias, torch.zeros_like(bias))
