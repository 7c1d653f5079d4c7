"""Baselines b subtracted from the returns of a batch. Shapes: returns [M, N, T]; per-trajectory
gradient vectors [M, N, P]. Each function uses only what its docstring says, which is what decides
whether the resulting estimator is unbiased."""

from __future__ import annotations

import torch


def batch_mean(returns: torch.Tensor) -> torch.Tensor:
    """b_t = (1/N) Σ_j G_{j,t}, the sample itself included (hence biased: exactly (N−1)/N × RLOO).

    [M, N, T] → [M, 1, T].
    """
    return returns.mean(dim=1, keepdim=True)


def leave_one_out(returns: torch.Tensor) -> torch.Tensor:
    """RLOO: b_{i,t} = (1/(N−1)) Σ_{j≠i} G_{j,t}, independent of trajectory i, hence unbiased
    (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"). [M, N, T] → [M, N, T]."""
    batch_size = returns.shape[1]
    return (returns.sum(dim=1, keepdim=True) - returns) / (batch_size - 1)


def optimal_constant(unbaselined: torch.Tensor, score: torch.Tensor, per_param: bool) -> torch.Tensor:
    """Variance-minimising constant baseline, estimated from the batch itself.

    With per-trajectory gradients g_i = Σ_t w_t ψ_t G_t and score sums s_i = Σ_t w_t ψ_t, each
    trajectory contributes g_i − b s_i and
        scalar:        b* = Σ_i s_i·g_i / Σ_i ‖s_i‖²            (= E[‖ψ‖² R]/E[‖ψ‖²] for total returns)
        per parameter: b*_j = Σ_i s_ij g_ij / Σ_i s_ij²
    (lecture notes 000 §5.2; Greensmith et al. 2004). Using the batch's own samples makes it biased
    at O(1/N). A zero denominator gives b = 0. [M, N, P] × 2 → [M, 1, 1] or [M, 1, P].
    """
    if per_param:
        num, den = (score * unbaselined).sum(1, keepdim=True), (score * score).sum(1, keepdim=True)
    else:
        num = (score * unbaselined).sum((1, 2), keepdim=True)
        den = (score * score).sum((1, 2), keepdim=True)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
