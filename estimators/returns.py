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


def td_errors(rewards: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, mask: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """One-step TD errors δ_t = r_{t+1} + γ V(s_{t+1}) − V(s_t) of masked, padded trajectories.

    V(s_{t+1}) is the next step's value while the episode goes on, and `bootstrap` after its last
    alive step: V(final state) for a truncated episode, 0 for a terminated one (the caller decides).
    rewards, values, mask [..., T]; bootstrap [...] → δ [..., T], zero where the episode is over.
    """
    alive_next = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], -1)  # [..., T]
    last = mask - alive_next  # 1 at the last alive step
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1) * alive_next
    next_values = next_values + last * bootstrap[..., None]
    return (rewards + gamma * next_values - values) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, bootstrap: torch.Tensor, mask: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016):
        Â_t = Σ_{k≥0} (γλ)^k δ_{t+k}  (within the episode), by the recursion Â_t = δ_t + γλ Â_{t+1}.
    λ = 1 gives G_t − V(s_t) (plus the discounted bootstrap), λ = 0 gives δ_t.
    rewards, values, mask [..., T]; bootstrap [...] → Â [..., T]."""
    deltas = td_errors(rewards, values, bootstrap, mask, gamma)
    out = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[..., 0])
    for t in range(deltas.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + gamma * lam * running * mask[..., t]
        out[..., t] = running
    return out

