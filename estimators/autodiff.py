"""Gradients of weighted log-likelihoods, Σ_t A_t ∇_θ log π_θ(a_t|s_t), per replicate or per trajectory.

Every score-function estimator reduces to this computation with its own weights A (advantages
times any discount, zero where the episode is over). The vectorised versions differentiate the
surrogate Σ_t A_t log π_θ(a_t|s_t) with `torch.func.grad`, mapped with `torch.func.vmap` over
replicates (and trajectories), which costs about one backward pass; `naive_weighted_score` is the
lecture notes' N×T backward passes, kept as the obviously-correct twin they are tested against.
"""

from __future__ import annotations

import torch
from torch.func import grad, vmap

from envs.problem import Batch, Policy


def _surrogate(policy: Policy, theta: torch.Tensor, obs, actions, weights) -> torch.Tensor:
    return (policy.log_prob(theta, obs, actions) * weights).sum()


def weighted_score_per_replicate(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor
) -> torch.Tensor:
    """ĝ_m = (1/N) Σ_i Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}).

    weights A [M, N, T] (detached) → [M, P].
    """
    per_batch = vmap(grad(lambda th, o, a, w: _surrogate(policy, th, o, a, w)), in_dims=(None, 0, 0, 0))
    return per_batch(theta, batch.obs, batch.actions, weights.detach()) / batch.batch_size


def weighted_score_per_trajectory(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor
) -> torch.Tensor:
    """ψ_{m,i} = Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}).  weights [M, N, T] → [M, N, P]."""
    per_traj = vmap(
        vmap(grad(lambda th, o, a, w: _surrogate(policy, th, o, a, w)), in_dims=(None, 0, 0, 0)),
        in_dims=(None, 0, 0, 0),
    )
    return per_traj(theta, batch.obs, batch.actions, weights.detach())


def naive_weighted_score(policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
    """Slow twin of `weighted_score_per_trajectory`: one backward pass per (m, i, t). → [M, N, P]."""
    reps, batch_size, horizon = weights.shape
    out = torch.zeros(reps, batch_size, theta.numel(), dtype=theta.dtype)
    for m in range(reps):
        for i in range(batch_size):
            for t in range(horizon):
                if batch.mask[m, i, t] == 0:
                    continue
                leaf = theta.detach().clone().requires_grad_(True)
                log_pi = policy.log_prob(leaf, batch.obs[m, i, t], batch.actions[m, i, t])
                (score,) = torch.autograd.grad(log_pi, leaf)
                out[m, i] += float(weights[m, i, t]) * score
    return out
