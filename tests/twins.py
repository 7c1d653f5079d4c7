"""Test twins: slow, obviously correct versions of the suite's fast paths, gathered in one place.

Each twin computes what a vectorised or recursive fast path computes, the way the definition reads
(plain Python loops over time, states, actions and outcomes; one autograd backward per step; one
gymnasium `env.step` per call), so a reader can check it against the formula by eye. The tests hold
the fast path equal to its twin (to rounding, or statistically where the twin samples). Each twin's
docstring names the fast path it checks and why it is obviously correct.

A plain module, not a test file: the tests and the benchmarks (tests/benchmarks) import the twins
from here, and production code never does. Keep a twin here rather than in the module it checks or
in one test file imported by another.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.tabular import TabularProblem

# ------------------------------------------------------------------ returns (estimators/returns.py)


def reward_to_go_loop(rewards: list[float], gamma: float) -> list[float]:
    """Slow twin of `estimators.returns.reward_to_go` for one trajectory: the definition
    G_t = Σ_{k ≥ t} γ^{k−t} r_{k+1}, summed term by term (no recursion shared between steps)."""
    horizon = len(rewards)
    return [sum(gamma ** (k - t) * rewards[k] for k in range(t, horizon)) for t in range(horizon)]


def gae_loop(rewards: list[float], values: list[float], bootstrap: float, gamma: float, lam: float) -> list[float]:
    """Slow twin of `estimators.returns.gae` for one episode of len(rewards) alive steps: the
    definition, term by term: δ_t = r_{t+1} + γ V(s_{t+1}) − V(s_t) with V after the last step the
    bootstrap, and Â_t = Σ_{k ≥ t} (γλ)^{k−t} δ_k summed directly (no backward recursion, no mask)."""
    horizon = len(rewards)
    next_values = values[1:] + [bootstrap]
    deltas = [rewards[t] + gamma * next_values[t] - values[t] for t in range(horizon)]
    return [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, horizon)) for t in range(horizon)]


# ------------------------------------------------------------------ problems (envs/)


def gym_episode(problem: TabularProblem, env: gym.Env, probs: np.ndarray, rng: np.random.Generator):
    """One episode of the real gymnasium environment under π (probs [S, A]), stepped one call at a
    time up to the problem's horizon: the slow twin of `TabularProblem.sample` (which samples the
    same MDP from gymnasium's P tables, vectorised). Obviously correct: it is gymnasium itself, one
    `env.step` per action drawn from π(·|s). env is `problem.make_gym_env()`; returns
    (states, actions, rewards)."""
    state, _ = env.reset(seed=int(rng.integers(2**31)))
    states, actions, rewards = [], [], []
    for _ in range(problem.horizon):
        action = int(rng.choice(probs.shape[1], p=probs[state]))
        next_state, reward, terminated, _, _ = env.step(action)
        states.append(int(state))
        actions.append(action)
        rewards.append(float(reward))
        if terminated:
            break
        state = next_state
    return states, actions, rewards
