"""The way a measurement is usually written: gymnasium `env.step` one call at a time, a torch
policy evaluated once per step, one autograd backward per trajectory. The slow twin the vectorised
harness is benchmarked against (tests/test_naive_twin.py checks it estimates the right thing)."""

from __future__ import annotations

import numpy as np
import torch

from bench.metrics import GradientMetrics, gradient_metrics
from envs.tabular import TabularProblem


def naive_measure(problem: TabularProblem, batch_size: int, reps: int, seed: int) -> GradientMetrics:
    """REINFORCE with discounted reward-to-go, M batches of N trajectories, one backward each."""
    env = problem.make_gym_env()
    generator = torch.Generator().manual_seed(seed)
    theta = problem.default_theta().requires_grad_(True)
    estimates = np.zeros((reps, problem.num_params))
    env.reset(seed=seed)
    for m in range(reps):
        for _ in range(batch_size):
            state, _ = env.reset()
            log_probs, rewards = [], []
            for _ in range(problem.horizon):
                log_pi = torch.log_softmax(theta.view(problem.theta_shape)[state], -1)
                action = torch.multinomial(log_pi.detach().exp(), 1, generator=generator)[0]
                log_probs.append(log_pi[action])
                state, reward, terminated, truncated, _ = env.step(int(action))
                rewards.append(float(reward))
                if terminated or truncated:
                    break
            returns, running = [], 0.0
            for r in reversed(rewards):
                running = r + problem.gamma * running
                returns.append(running)
            returns.reverse()
            surrogate = sum(problem.gamma**t * g * lp for t, (g, lp) in enumerate(zip(returns, log_probs)))
            (grad,) = torch.autograd.grad(surrogate, theta)
            estimates[m] += grad.numpy() / batch_size
    return gradient_metrics(estimates, problem.exact_gradient(theta.detach()).numpy())
