"""Policy classes. Each is `log_prob(θ, obs, actions)`, a pure function of a flat θ [P]."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SoftmaxTabular:
    """π_θ(a|s) = softmax(θ[s, :])_a with θ the [S, A] logits flattened row-major.

    A bandit is the one-state case (S = 1, obs all zeros).
    """

    num_states: int
    num_actions: int

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → π [S, A]."""
        return torch.softmax(theta.reshape(self.num_states, self.num_actions), dim=-1)

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [...] long, actions [...] long → log π(a|s) [...].

        Normalises only the visited rows when there are fewer visits than states (one trajectory of
        taxi: 50 visits, 500 states), else the whole table once; both are the same row-wise softmax."""
        logits = theta.reshape(self.num_states, self.num_actions)
        if obs.numel() < self.num_states:
            return torch.log_softmax(logits[obs], dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return torch.log_softmax(logits, dim=-1)[obs, actions]


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class ScalarGaussian:
    """a ~ N(μ, exp(s)²), θ = [μ, s]; the observation is ignored (a bandit)."""

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [2], actions [...] float → log N(a; μ, e^{2s}) [...]."""
        mean, log_std = theta[0], theta[1]
        z = (actions - mean) * torch.exp(-log_std)
        return -0.5 * z * z - log_std - _HALF_LOG_2PI


@dataclass(frozen=True)
class LinearGaussian:
    """u = −K x + σ ε, ε ~ N(0, I), θ = [K (action_dim × state_dim, row-major), log σ]."""

    state_dim: int
    action_dim: int

    def gain(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → K [action_dim, state_dim]."""
        return theta[: self.action_dim * self.state_dim].reshape(self.action_dim, self.state_dim)

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs x [..., state_dim], actions u [..., action_dim] → log π(u|x) [...]."""
        log_std = theta[-1]
        z = (actions + obs @ self.gain(theta).T) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)
