"""Env steps with per-trajectory score gradients per second on CartPole-v1: a gymnasium loop against pgvar's
batched rollout, side by side.

Policy: MLPCategorical obs_dim 4 → (64, 64) tanh → 2 actions (4 610 parameters), θ from `init_theta` (near
uniform, so episodes last ~22 steps, the longest ~100). Every path ends with the per-trajectory score sums
ψ_i = Σ_t ∇_θ log π_θ(a_{i,t}|s_{i,t}) [N, P] in float64:

- "gym loop", the way users do it today: `gymnasium.vector.SyncVectorEnv` of 8 CartPole-v1 envs (same-step
  autoreset), the policy called once per step on the 8 observations (torch, no grad), until EPISODES
  complete episodes are collected; then one `torch.autograd.grad` of Σ_t log π per trajectory;
- "batched B=…": `envs.classic.rollout` of B episodes at once (only the live lanes are stepped), then
  `weighted_score_per_trajectory` with its default method (packed: hand-written backprop over the alive
  steps, estimators/mlp_backprop.py), with the mask as weights;
- "batched vmap B=4096": the same with method="vmap" (torch.func over the padded [N, T] batch): the slow
  twin of the packed gradients, on the same batch.

Every round replays the same seeds, so each path does the same work every round; extra_info["reps"] is that
number of env steps, so `ratios.py`'s "per replicate" is per env step and its ratios are speed-ups.
extra_info["env_steps_per_second"] is the throughput at the median. Runtime ≈ 25 s.
glibc returns large freed blocks to the system, so every round page-faults its ~0.6 GB of scores back in:
`make bench` sets MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_ so that freed memory is reused, as a long
measurement would reuse it.
"""

from __future__ import annotations

import gymnasium
import pytest
import torch

from envs.classic import rollout
from envs.policies import MLPCategorical
from estimators.autodiff import weighted_score_per_trajectory

ENV_ID, NUM_ENVS, EPISODES = "CartPole-v1", 8, 256
GROUP = "CartPole-v1 rollout + per-trajectory scores, MLP(64,64)"
# role → (batch size, autodiff method, rounds)
BATCHED = {"batched B=4096": (4096, "auto", 5), "batched B=16384": (16384, "auto", 3),
           "batched vmap B=4096": (4096, "vmap", 2)}


@pytest.fixture(scope="module")
def cartpole_policy():
    policy = MLPCategorical(obs_dim=4, hidden=(64, 64), num_actions=2)
    return policy, policy.init_theta(torch.Generator().manual_seed(0))


def gym_loop(policy: MLPCategorical, theta: torch.Tensor) -> tuple[torch.Tensor, int]:
    """EPISODES episodes from a SyncVectorEnv, then one backward per trajectory → (ψ [EPISODES, P], env steps)."""
    envs = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make(ENV_ID) for _ in range(NUM_ENVS)],
                                          autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    generator = torch.Generator().manual_seed(1)
    obs, _ = envs.reset(seed=1)
    running: list[list[tuple[torch.Tensor, int]]] = [[] for _ in range(NUM_ENVS)]
    episodes: list[list[tuple[torch.Tensor, int]]] = []
    while len(episodes) < EPISODES:
        obs_t = torch.as_tensor(obs, dtype=torch.float64)
        with torch.no_grad():
            probs = torch.softmax(policy.logits(theta, obs_t), -1)
        actions = torch.multinomial(probs, 1, generator=generator)[:, 0]
        obs, _, terminated, truncated, _ = envs.step(actions.numpy())
        for lane in range(NUM_ENVS):
            running[lane].append((obs_t[lane], int(actions[lane])))
            if terminated[lane] or truncated[lane]:
                episodes.append(running[lane])
                running[lane] = []
    envs.close()
    leaf = theta.detach().requires_grad_(True)
    scores = []
    for episode in episodes[:EPISODES]:
        episode_obs = torch.stack([o for o, _ in episode])
        episode_actions = torch.tensor([a for _, a in episode])
        scores.append(torch.autograd.grad(policy.log_prob(leaf, episode_obs, episode_actions).sum(), leaf)[0])
    return torch.stack(scores), sum(len(episode) for episode in episodes[:EPISODES])


def batched(policy: MLPCategorical, theta: torch.Tensor, batch_size: int, method: str) -> tuple[torch.Tensor, int]:
    """batch_size episodes by `rollout`, ψ by `method` → (ψ [1, batch_size, P], env steps)."""
    batch = rollout(ENV_ID, policy, theta, 1, batch_size, torch.Generator().manual_seed(1))
    return weighted_score_per_trajectory(policy, theta, batch, batch.mask, method), batch.env_steps


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("role", ["gym loop", *BATCHED])
def test_rollout_with_scores(benchmark, cartpole_policy, role):
    policy, theta = cartpole_policy
    if role == "gym loop":
        scores, env_steps = benchmark.pedantic(gym_loop, args=(policy, theta), rounds=3, iterations=1,
                                               warmup_rounds=1)
    else:
        batch_size, method, rounds = BATCHED[role]
        scores, env_steps = benchmark.pedantic(batched, args=(policy, theta, batch_size, method), rounds=rounds,
                                               iterations=1, warmup_rounds=1)
    assert torch.isfinite(scores).all() and scores.shape[-1] == policy.num_params
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(role=role, reps=env_steps, env_steps_per_second=env_steps / median)
