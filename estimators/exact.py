"""The exact-gradient estimator: the noiseless control of every training run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.problem import Batch, Capability, Policy, Problem
from estimators.registry import ESTIMATORS, Estimator, Prepared


def exact(policy: Policy, theta: torch.Tensor, batch: Batch, gradient: torch.Tensor) -> torch.Tensor:
    """The true gradient of J(θ) = E[Σ_{t<H} γ^t r_{t+1}], repeated for every replicate batch:

        ĝ_m = ∇J(θ)   for m = 1…M,

    with ∇J(θ) computed once by `Exact.prepare` as `problem.exact_gradient(θ)` (autograd through the exact
    objective, or the problem's closed form). The trajectories are ignored: the estimate has zero variance
    and zero bias, E ĝ = ∇J exactly. Driving an optimizer with it is deterministic gradient ascent, the
    noiseless control every stochastic estimator's training curve is compared with.

    gradient [P] float64, batch [M, N, T] (only M is read) → ĝ [M, P].
    """
    return gradient.to(torch.float64).expand(batch.reps, -1).clone()


@ESTIMATORS.entry("exact")
@dataclass(frozen=True)
class Exact(Estimator):
    function = staticmethod(exact)
    doc = "the true ∇J(θ) from the problem's exact objective, ignoring the batch (the noiseless control)"
    target_text = "∇J"
    bias_text = "unbiased with zero variance (it is ∇J)"
    requires = (Capability.EXACT_GRADIENT,)

    def unbiased(self, problem: Problem) -> bool:
        return True

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        gradient = problem.exact_gradient(theta.to(torch.float64)).detach()
        return Prepared({**self.kwargs(), "gradient": gradient})
