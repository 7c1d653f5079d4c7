"""Returns and advantages: vectorised against loop twins, batched against per-trajectory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from estimators.returns import gae, reward_to_go, td_errors
from tests.twins import gae_loop, reward_to_go_loop


def padded_batch(seed: int = 0):
    """M = 2, N = 3 episodes of different lengths (one full length, i.e. truncated) padded to T = 6."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([[6, 2, 4], [1, 5, 6]])
    mask = (torch.arange(6) < lengths[..., None]).to(torch.float64)
    rewards = torch.randn(2, 3, 6, dtype=torch.float64, generator=g) * mask
    values = torch.randn(2, 3, 6, dtype=torch.float64, generator=g) * mask
    bootstrap = torch.randn(2, 3, dtype=torch.float64, generator=g)
    return rewards, values, bootstrap, mask, lengths


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_loop_twin_per_trajectory(lam):
    rewards, values, bootstrap, mask, lengths = padded_batch()
    fast = gae(rewards, values, bootstrap, mask, 0.9, lam)
    for m in range(2):
        for i in range(3):
            n = int(lengths[m, i])
            slow = gae_loop(rewards[m, i, :n].tolist(), values[m, i, :n].tolist(), float(bootstrap[m, i]), 0.9, lam)
            np.testing.assert_allclose(fast[m, i, :n].numpy(), slow, rtol=1e-12, atol=1e-12)
            assert torch.all(fast[m, i, n:] == 0)


def test_batched_gae_equals_per_trajectory_gae_concatenated():
    rewards, values, bootstrap, mask, _ = padded_batch(1)
    batched = gae(rewards, values, bootstrap, mask, 0.99, 0.9)
    one_by_one = torch.stack([torch.stack([gae(rewards[m, i], values[m, i], bootstrap[m, i], mask[m, i], 0.99, 0.9)
                                           for i in range(3)]) for m in range(2)])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=0)


def test_gae_limits():
    rewards, values, bootstrap, mask, _ = padded_batch(2)
    gamma = 0.9
    # λ = 0: the TD errors
    torch.testing.assert_close(gae(rewards, values, bootstrap, mask, gamma, 0.0), td_errors(rewards, values, bootstrap, mask, gamma))
    # λ = 1 with a zero bootstrap (terminated episodes): reward-to-go minus the value
    zero = torch.zeros_like(bootstrap)
    torch.testing.assert_close(gae(rewards, values, zero, mask, gamma, 1.0), (reward_to_go(rewards, gamma) - values) * mask)


def test_td_errors_bootstrap_only_after_the_last_alive_step():
    rewards = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)
    values = torch.tensor([[10.0, 20.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    deltas = td_errors(rewards, values, torch.tensor([5.0], dtype=torch.float64), mask, 0.5)
    # δ_0 = 1 + 0.5·20 − 10 = 1;  δ_1 = 2 + 0.5·5 − 20 = −15.5 (bootstrap);  δ_2 = 0 (over)
    torch.testing.assert_close(deltas, torch.tensor([[1.0, -15.5, 0.0]], dtype=torch.float64))


def test_reward_to_go_matches_loop_twin():
    rewards = torch.randn(3, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fast = reward_to_go(rewards, 0.9)
    for m, i in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(fast[m, i].numpy(), reward_to_go_loop(rewards[m, i].tolist(), 0.9), rtol=1e-12)
