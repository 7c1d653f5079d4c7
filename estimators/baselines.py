"""Baselines b subtracted from the returns of a batch. Shapes: returns [M, N, T]; per-trajectory
gradient vectors [M, N, P]. Each function uses only what its docstring says, which is what decides
whether the resulting estimator is unbiased."""

from __future__ import annotations

from typing import Callable

import torch

from envs.problem import Batch, Problem
from envs.spec import Int

# The variance-minimising constant of π_θ itself rather than of the batch, fitted on an independent stream of
# `<name>:<K>` trajectories (K = ORACLE_SAMPLES unless given).
ORACLE_BASELINES = ("oracle_optimal", "oracle_optimal_per_param")
ORACLE_SAMPLES = 10_000
ORACLE_SAMPLES_RANGE = Int(2, 10_000_000)


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
    return _ratio(*optimal_constant_sums(unbaselined, score, per_param))


def optimal_constant_sums(unbaselined: torch.Tensor, score: torch.Tensor,
                          per_param: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The numerator Σ_i s_i·g_i (or Σ_i s_ij g_ij) and denominator Σ_i ‖s_i‖² (or Σ_i s_ij²) of
    `optimal_constant`, which add up over disjoint sets of trajectories. [M, N, P] × 2 → 2 × [M, 1, 1 or P]."""
    dims = 1 if per_param else (1, 2)
    return (score * unbaselined).sum(dims, keepdim=True), (score * score).sum(dims, keepdim=True)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def oracle_samples(baseline: str) -> int:
    """K of an oracle baseline's normal form (`oracle_optimal` or `oracle_optimal:<K>`, see score.BaselineParser)."""
    return int(baseline.partition(":")[2] or ORACLE_SAMPLES)


def oracle_chunk(problem: Problem, samples: int) -> int:
    """Trajectories per chunk of `oracle_optimal_constant`'s fit, bounded in bytes as the replicate batches are
    (`Problem.chunk_units`)."""
    return problem.chunk_units(1, samples)


def oracle_optimal_constant(problem: Problem, theta: torch.Tensor, generator: torch.Generator, samples: int,
                            per_param: bool,
                            terms: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The population variance-minimising constant of π_θ, not of a batch:

        scalar:        b* = E[s·g] / E[‖s‖²]          (= E[‖s‖² R]/E[‖s‖²] for total returns)
        per parameter: b*_j = E[s_j g_j] / E[s_j²]

    with g = Σ_t w_t ψ_t Ĝ_t and s = Σ_t w_t ψ_t the trajectory's unbaselined gradient and weighted score
    (`terms(batch)` → both [M, N, P]; lecture notes 000 §5.2; Greensmith et al. 2004). Since E[s] = 0
    (E[ψ_t | s_t] = 0 and w_t is fixed before a_t), g − b s has mean E[g] for every constant b, and
    E‖g − b s‖² is minimised at b*. The expectations are the means over `samples` K trajectories of π_θ drawn
    from `generator`, a stream of its own, in chunks (a ratio of two sums, so the chunking does not change it
    beyond rounding): independent of the batches it is then used on, so the estimator stays unbiased for
    every K, and b̂* → b* at O(1/√K). A zero denominator gives b = 0. → [1, 1] or [1, P], broadcasting over
    [M, N, P] like `optimal_constant`'s b.
    """
    chunk = oracle_chunk(problem, samples)
    num = den = 0.0
    for start in range(0, samples, chunk):
        unbaselined, score = terms(problem.sample(theta, 1, min(chunk, samples - start), generator))
        chunk_num, chunk_den = optimal_constant_sums(unbaselined, score, per_param)
        num, den = num + chunk_num, den + chunk_den
    return _ratio(num, den)[0]
