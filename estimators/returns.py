"""Returns of masked, padded trajectories. Shapes: [..., T] with the time axis last."""

from __future__ import annotations

import torch


def reward_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'+1}, by the backward recursion G_t = r_{t+1} + γ G_{t+1}.

    rewards [..., T] (zero after the episode ends) → G [..., T].
    """
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def total_return(rewards: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    """G_0 = Σ_t γ^t r_{t+1}.  rewards [..., T], discount [T] → [...]."""
    return rewards @ discount


def reward_to_go_loop(rewards: list[float], gamma: float) -> list[float]:
    """Slow twin of `reward_to_go` for one trajectory: the definition, summed term by term."""
    horizon = len(rewards)
    return [sum(gamma ** (k - t) * rewards[k] for k in range(t, horizon)) for t in range(horizon)]
