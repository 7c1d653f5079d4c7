"""The four autodiff methods side by side on an MLP policy (lecture notes 002's setting: N = 100
trajectories of T = 200 steps, so the naive loop makes 20 000 backward passes).

Policy: MLPCategorical obs_dim 4 → (64, 64) tanh → 2 actions (4 610 parameters), θ from `init_theta`.
Batch: one replicate (M = 1) of N(0, 1) observations, uniform actions and N(0, 1) weights, every step
alive. Each benchmark times `weighted_score_per_replicate(…, method)`, one gradient estimate.
Rounds: packed, vmap and surrogate 20 rounds of 1 iteration; naive 3 rounds of 1 (seconds each).
`make bench` prints the medians and ratios (tests/benchmarks/ratios.py).
"""

from __future__ import annotations

import pytest
import torch

from envs.policies import MLPCategorical
from estimators.autodiff import weighted_score_per_replicate
from tests.conftest import synthetic_mlp_batch

REPS, BATCH_SIZE, HORIZON = 1, 100, 200
GROUP = "autodiff MLP(64,64) N=100 T=200"
ROUNDS = {"packed": 20, "vmap": 20, "surrogate": 20, "naive": 3}


@pytest.fixture(scope="module")
def mlp_setting():
    policy = MLPCategorical(obs_dim=4, hidden=(64, 64), num_actions=2)
    generator = torch.Generator().manual_seed(0)
    batch, weights = synthetic_mlp_batch(policy, REPS, BATCH_SIZE, HORIZON, generator, full=True)
    return policy, policy.init_theta(generator), batch, weights


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("method", list(ROUNDS))
def test_weighted_score(benchmark, mlp_setting, method):
    policy, theta, batch, weights = mlp_setting
    benchmark.extra_info.update(role=method)
    estimate = benchmark.pedantic(weighted_score_per_replicate, args=(policy, theta, batch, weights, method),
                                  rounds=ROUNDS[method], iterations=1, warmup_rounds=1 if method != "naive" else 0)
    assert estimate.shape == (REPS, policy.num_params) and torch.isfinite(estimate).all()
