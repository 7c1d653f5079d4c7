"""The fast rollout (envs/classic.py `rollout`: live rows only, one scatter at the end, two-action draws by one
comparison, the network's activations kept) against its slow twins: the zero-filled loop with `policy.sample`
(tests/twins.py `classic_rollout_loop`), the inverse CDF, and the packed backprop recomputing the forward pass.
float64 to 1e-10 (measured: bitwise equal batches, ≤ 2e-16 relative gradients); float32 in tests/test_float32.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import envs.classic as classic
from envs.classic import CLASSIC_ENVS, rollout
from envs.policies import MLPCategorical, MLPGaussian, inverse_cdf
from estimators.autodiff import (
    weighted_entropy_gradient_per_replicate,
    weighted_score_per_replicate,
    weighted_score_per_trajectory,
)
from tests.test_autodiff import assert_equal_to_rounding
from tests.twins import classic_rollout_loop

FIELDS = ("obs", "actions", "rewards", "mask", "terminated", "final_obs")
GRADIENTS = [weighted_score_per_replicate, weighted_score_per_trajectory, weighted_entropy_gradient_per_replicate]


def policy_for(env_id: str, seed: int = 0) -> tuple[MLPCategorical | MLPGaussian, torch.Tensor]:
    """A 2-layer tanh MLP (PPO initialisation, output gain raised to 1 so actions are not near uniform)."""
    env = CLASSIC_ENVS[env_id]
    policy = (MLPCategorical(env.observation_dim, (16, 8), env.num_actions) if env.num_actions
              else MLPGaussian(env.observation_dim, (16, 8), 1))
    theta = policy.init_theta(torch.Generator().manual_seed(seed))
    policy.net.layers(theta)[-1][0].mul_(100.0)
    return policy, theta


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("env_id", list(CLASSIC_ENVS))
def test_rollout_equals_its_loop_twin(env_id, dtype):
    policy, theta = policy_for(env_id)
    fast = rollout(env_id, policy, theta, 3, 8, torch.Generator().manual_seed(1), horizon=60, gamma=0.99,
                   group_size=2, dtype=dtype)
    slow = classic_rollout_loop(env_id, policy, theta, 3, 8, torch.Generator().manual_seed(1), 60, 0.99, 2, dtype)
    for field in FIELDS:
        assert torch.equal(getattr(fast, field), getattr(slow, field)), field
    assert fast.obs.dtype == dtype and fast.kept is not None and fast.kept.inputs[0].dtype == dtype


def test_two_action_draw_is_the_inverse_cdf():
    """a = 1[u ≥ σ(z₀ − z₁)] against the inverse CDF on the same uniforms: equal except within rounding of the
    threshold (measured: equal everywhere)."""
    generator = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(100_000, 2, dtype=torch.float64, generator=generator)
    state = generator.get_state()
    fast = MLPCategorical(1, (), 2).sample_logits(logits, generator)
    generator.set_state(state)
    u = torch.rand(len(logits), dtype=torch.float64, generator=generator)
    slow = inverse_cdf(torch.softmax(logits, -1), u)
    differ = fast != slow
    assert ((torch.softmax(logits, -1)[differ, 0] - u[differ]).abs() < 1e-12).all()
    # the draws' mean against E[a] = mean p₁: SE = √(Σ p₁(1 − p₁))/n, at 5 SE (false-positive rate ≈ 6e-7)
    p1 = torch.softmax(logits, -1)[:, 1]
    se = float((p1 * (1 - p1)).sum().sqrt()) / len(p1)
    assert abs(fast.double().mean().item() - p1.mean().item()) <= 5 * se


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1"])
def test_kept_activations_give_the_recomputed_gradients(env_id):
    """packed with the kept activations = packed recomputing them = vmap, in float64, per replicate, per trajectory
    and for the entropy gradient."""
    policy, theta = policy_for(env_id, 3)
    batch = rollout(env_id, policy, theta, 2, 6, torch.Generator().manual_seed(4), horizon=80)
    assert batch.kept_for(policy, theta) is batch.kept is not None
    weights = torch.randn(batch.mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * batch.mask
    recomputing = dataclasses.replace(batch, kept=None)
    for gradient in GRADIENTS:
        expected = gradient(policy, theta, batch, weights, "vmap")
        assert expected.abs().max() > 0 or gradient is weighted_entropy_gradient_per_replicate
        assert_equal_to_rounding(gradient(policy, theta, batch, weights, "packed"), expected)
        assert_equal_to_rounding(gradient(policy, theta, recomputing, weights, "packed"), expected)


def test_kept_activations_are_used_only_where_they_apply(monkeypatch):
    policy, theta = policy_for("CartPole-v1", 6)
    batch = rollout("CartPole-v1", policy, theta, 2, 4, torch.Generator().manual_seed(7), horizon=50)
    assert batch.kept_for(policy, theta.clone()) is batch.kept
    assert batch.kept_for(policy, theta + 1e-3) is None  # another θ
    assert batch.kept_for(MLPCategorical(4, (16, 8), 2, "relu"), theta) is None  # another network
    assert dataclasses.replace(batch, obs=batch.obs.clone()).kept_for(policy, theta) is None  # other obs
    assert dataclasses.replace(batch, mask=batch.mask.clone()).kept_for(policy, theta) is None
    theta_in_place = theta.clone()
    moved = rollout("CartPole-v1", policy, theta_in_place, 2, 4, torch.Generator().manual_seed(7), horizon=50)
    theta_in_place += 1e-3  # a training loop updating θ in place after the rollout
    assert moved.kept_for(policy, theta_in_place) is None
    monkeypatch.setattr(classic, "KEEP_BYTES", 100 * 4 * (4 + 16 + 8))  # 100 float32 rows
    capped = rollout("CartPole-v1", policy, theta, 2, 4, torch.Generator().manual_seed(7), horizon=50)
    assert capped.kept is None and all(torch.equal(getattr(capped, f), getattr(batch, f)) for f in FIELDS)


def test_activations_equal_the_network():
    policy = MLPCategorical(3, (7, 5), 4)
    generator = torch.Generator().manual_seed(8)
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    obs = torch.randn(11, 3, dtype=torch.float64, generator=generator)
    layers = policy.net.scaled_layers(theta)
    out = policy.net.activations(layers, obs)
    assert [h.shape[1] for h in out] == [3, 7, 5, 4] and torch.equal(out[0], obs)
    torch.testing.assert_close(out[-1], policy.logits(theta, obs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_two_action_score_cotangent_is_the_softmax_one(dtype):
    from estimators.mlp_backprop import _categorical_score, _categorical_score_by_softmax

    generator = torch.Generator().manual_seed(9)
    z = (4 * torch.randn(1000, 2, dtype=torch.float64, generator=generator)).to(dtype)
    actions = torch.randint(2, (1000,), generator=generator)
    fast, _ = _categorical_score(z, actions, None)
    slow, _ = _categorical_score_by_softmax(z, actions, None)
    tolerance = 1e-10 if dtype == torch.float64 else 4 * 2.0**-24  # |e_a − p| ≤ 1: a few float32 roundings
    torch.testing.assert_close(fast, slow, rtol=0, atol=tolerance)
