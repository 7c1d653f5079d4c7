"""Group-relative estimators: G rollouts share an initial state and baseline each other."""

from __future__ import annotations

import torch

from envs.problem import Batch, Policy, Problem
from envs.spec import Choice, ConfigError, Int, option
from estimators.autodiff import weighted_score_per_replicate
from estimators.registry import ESTIMATORS, Estimator
from estimators.returns import total_return


def group_advantages(returns: torch.Tensor, group_size: int, normalize: str) -> torch.Tensor:
    """GRPO advantages Â_i = (R_i − mean_g R) / std_g R (or without the division), the mean and
    the sample standard deviation taken over trajectory i's group, i included. A group whose
    returns are all equal gets Â = 0.  returns [M, N] → [M, N]."""
    reps, batch_size = returns.shape
    groups = returns.reshape(reps, batch_size // group_size, group_size)  # [M, N/G, G]
    centered = groups - groups.mean(-1, keepdim=True)
    if normalize == "std":
        spread = groups.std(-1, keepdim=True)  # ddof = 1
        centered = torch.where(spread > 0, centered / torch.where(spread > 0, spread, 1.0), 0.0)
    return centered.reshape(reps, batch_size)


def grpo(policy: Policy, theta: torch.Tensor, batch: Batch, group_size: int = 4, normalize: str = "std") -> torch.Tensor:
    """Group-relative policy gradient (Shao et al. 2024, DeepSeekMath; lecture notes 001, the
    actor-critic spectrum) without clipping or KL: the outcome return of each rollout, baselined by
    its group of G rollouts from the same initial state,

        ĝ = (1/N) Σ_i Â_i Σ_t ∇_θ log π_θ(a_{i,t}|s_{i,t}),   R_i = G_{i,0} = Σ_t γ^t r_{i,t+1}.

    Biased: the group mean includes R_i, so with normalize=none E ĝ = (1 − 1/G) ∇J exactly; dividing
    by the group's standard deviation reweights groups (initial states) by 1/std, which changes
    the direction of E ĝ, not only its length.  batch [M, N, T] with N a multiple of G → [M, P].
    """
    advantage = group_advantages(total_return(batch.rewards, batch.discount), group_size, normalize)  # [M, N]
    return weighted_score_per_replicate(policy, theta, batch, advantage[..., None] * batch.mask)


@ESTIMATORS.entry("grpo")
class Grpo(Estimator):
    # the field is also `Estimator.group_size`: the rollouts that share an initial state when sampling
    group_size: int = option(Int(2, 100_000), 4, "G rollouts per initial state, baselining each other")
    normalize: str = option(Choice(("none", "std")), "std", "divide the group-centred return by the group's std")

    function = staticmethod(grpo)
    doc = "GRPO group-relative baseline over G rollouts sharing an initial state"
    bias_text = "biased: E ĝ = (1 − 1/G) ∇J with normalize=none; normalize=std also changes the direction"

    def unbiased(self, problem: Problem) -> bool:
        return False

    def check(self, problem: Problem, batch_size: int) -> None:
        super().check(problem, batch_size)
        if batch_size % self.group_size:
            raise ConfigError(f"estimator grpo: batch_size={batch_size} must be a multiple of "
                              f"group_size={self.group_size}")
