"""Time-indexed value functions V_t(s) of a finite-horizon problem, in the two model classes the
suite's exact problems need: a table over discrete states and a quadratic form in continuous
states. Each holds the truth for its problems (the oracle critic: tabular V^π_t is a table, LQR's is
−(xᵀP_t x + c_t)), so a critic fitted in the same class errs only by estimation noise.

The weights carry an optional leading replicate axis [M, ...] so that one critic per replicate
batch (fitted on that batch) evaluates in one call. Row H of every critic is V_H ≡ 0: the objective
stops at the horizon, so an episode truncated there bootstraps from exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TableBasis:
    """Discrete states 0…S−1: V_t(s) = w[t, s]."""

    num_states: int

    @property
    def num_features(self) -> int:
        return self.num_states


@dataclass(frozen=True)
class QuadraticBasis:
    """States x ∈ R^d: V_t(x) = w_t · φ(x), φ(x) = [1, x_i x_j for i ≤ j]."""

    state_dim: int

    @property
    def num_features(self) -> int:
        return 1 + self.state_dim * (self.state_dim + 1) // 2

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., d] → φ [..., F]."""
        rows, cols = torch.triu_indices(self.state_dim, self.state_dim)
        quadratic = obs[..., rows] * obs[..., cols]
        return torch.cat([torch.ones_like(obs[..., :1]), quadratic], -1)

    def weights_of(self, matrix: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        """xᵀ P x + c in the basis: P [..., d, d] symmetric, c [...] → w [..., F]."""
        rows, cols = torch.triu_indices(self.state_dim, self.state_dim)
        scale = torch.where(rows == cols, 1.0, 2.0).to(matrix.dtype)
        return torch.cat([constant[..., None], matrix[..., rows, cols] * scale], -1)


@dataclass(frozen=True)
class ValueFunction:
    """V_t(s) = weights[t] · φ(s) for t ≤ H (row H zero). weights [H + 1, F] or [M, H + 1, F]."""

    basis: TableBasis | QuadraticBasis
    weights: torch.Tensor

    def at(self, obs: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """V at states obs [M, N, T, ...] taken at time indices steps [T] (long) → [M, N, T]."""
        per_replicate = self.weights.dim() == 3
        if isinstance(self.basis, TableBasis):
            if per_replicate:  # weights [M, H+1, S]: pick row steps[t] of replicate m, then column s
                rows = self.weights[:, steps]  # [M, T, S]
                return rows[:, None].expand(-1, obs.shape[1], -1, -1).gather(-1, obs[..., None]).squeeze(-1)
            return self.weights[steps, obs]
        phi = self.basis.features(obs)  # [M, N, T, F]
        w = self.weights[:, steps][:, None] if per_replicate else self.weights[steps]  # [M, 1, T, F] or [T, F]
        return (phi * w).sum(-1)

    def on_batch(self, obs: torch.Tensor, final_obs: torch.Tensor, truncated: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_t(s_t) [M, N, T] zero where the episode is over, bootstrap [M, N]): V_T(final state)
        for an episode truncated at step T, 0 for a terminated one."""
        horizon = obs.shape[2]
        values = self.at(obs, torch.arange(horizon)) * mask
        final = self.at(final_obs[:, :, None], torch.tensor([horizon]))[..., 0]
        return values, torch.where(truncated, final, 0.0)
