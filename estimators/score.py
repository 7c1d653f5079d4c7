"""The score-function (REINFORCE) family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from envs.problem import Batch, Policy, Problem
from envs.spec import Bool, Choice, ConfigError, Float, Option, Parser
from estimators.autodiff import (
    weighted_score_per_replicate,
    weighted_score_per_trajectory,
)
from estimators.baselines import batch_mean, leave_one_out, optimal_constant
from estimators.registry import ESTIMATORS, EstimatorSpec
from estimators.returns import reward_to_go, total_return

BATCH_DEPENDENT_BIASED = ("batch_mean", "optimal", "optimal_per_param")
BASELINE_NAMES = ("none", "constant:<value>", "batch_mean", "rloo", "optimal", "optimal_per_param")


@dataclass(frozen=True)
class BaselineParser(Parser):
    allowed: str = "one of " + ", ".join(BASELINE_NAMES)
    examples: tuple[str, ...] = ("none", "constant:0.5", "batch_mean", "rloo", "optimal", "optimal_per_param")

    def __call__(self, raw: Any) -> str:
        text = str(raw).strip()
        kind, sep, value = text.partition(":")
        if kind == "constant" and sep:
            try:
                return f"constant:{Float()(value):g}"
            except ValueError:
                raise ValueError(self.allowed) from None
        if sep or kind not in BASELINE_NAMES:
            raise ValueError(self.allowed)
        return kind


def reinforce(
    policy: Policy,
    theta: torch.Tensor,
    batch: Batch,
    returns: str = "reward_to_go",
    baseline: str = "none",
    discount_score: bool = True,
) -> torch.Tensor:
    """REINFORCE / likelihood-ratio gradient of J(θ) = E[Σ_{t<H} γ^t r_{t+1}] (Williams 1992;
    lecture notes 000 §2–5, 003).

        ĝ = (1/N) Σ_i Σ_t ∇_θ log π_θ(a_{i,t}|s_{i,t}) · w_t (Ĝ_{i,t} − b_{i,t})

    returns="total":        Ĝ_{i,t} = G_{i,0} = Σ_{t'} γ^{t'} r_{i,t'+1},  w_t = 1.
    returns="reward_to_go": Ĝ_{i,t} = G_{i,t} = Σ_{t'≥t} γ^{t'−t} r_{i,t'+1},
                            w_t = γ^t if discount_score else 1 (dropping γ^t is common practice and
                            biased for the discounted objective when γ < 1).
    baseline: none (b = 0), constant:<c> (b = c), batch_mean (b_t = mean_j Ĝ_{j,t} over all N
    trajectories, so b = mean_j G_{j,0} for total returns; biased by exactly −∇J/N),
    rloo (the same mean over j ≠ i, unbiased), optimal / optimal_per_param (see
    `baselines.optimal_constant`; estimated from the batch, biased at O(1/N)).

    batch [M, N, T] → ĝ [M, P].
    """
    ones = torch.ones_like(batch.discount)
    if returns == "reward_to_go":
        ret = reward_to_go(batch.rewards, batch.gamma)  # [M, N, T]
        weight = (batch.discount if discount_score else ones) * batch.mask
    else:
        ret = total_return(batch.rewards, batch.discount)[..., None].expand_as(batch.rewards)
        weight = ones * batch.mask
    if baseline in ("optimal", "optimal_per_param"):
        unbaselined = weighted_score_per_trajectory(policy, theta, batch, weight * ret)  # [M, N, P]
        score = weighted_score_per_trajectory(policy, theta, batch, weight)  # [M, N, P]
        b = optimal_constant(unbaselined, score, per_param=baseline == "optimal_per_param")
        return (unbaselined - b * score).mean(dim=1)
    if baseline == "none":
        advantage = ret
    elif baseline == "batch_mean":
        advantage = ret - batch_mean(ret)
    elif baseline == "rloo":
        advantage = ret - leave_one_out(ret)
    else:  # constant:<c>
        advantage = ret - float(baseline.partition(":")[2])
    return weighted_score_per_replicate(policy, theta, batch, weight * advantage)


def _reinforce_unbiased(options: Mapping[str, Any], problem: Problem) -> bool:
    if options["baseline"] in BATCH_DEPENDENT_BIASED:
        return False
    drops_discount = options["returns"] == "reward_to_go" and not options["discount_score"]
    return not (drops_discount and problem.gamma < 1 and problem.horizon > 1)


def _reinforce_check(options: Mapping[str, Any], problem: Problem, batch_size: int) -> None:
    if options["baseline"] == "rloo" and batch_size < 2:
        raise ConfigError("estimator reinforce: baseline=rloo needs batch_size ≥ 2 (it averages the others)")
    if options["baseline"] in BATCH_DEPENDENT_BIASED and batch_size < 2:
        # fitted to the one trajectory it is applied to, the baseline removes (almost) all of it:
        # batch_mean and optimal_per_param give exactly 0, optimal gives 0 on one-step problems
        raise ConfigError(f"estimator reinforce: baseline={options['baseline']} needs batch_size ≥ 2 "
                          "(fitted to its own single trajectory it cancels the estimate)")
    if options["returns"] == "total" and not options["discount_score"]:
        raise ConfigError(
            "estimator reinforce: discount_score=false applies only to returns=reward_to_go "
            "(the total return G_0 is already discounted from t = 0)"
        )


ESTIMATORS.register("reinforce", EstimatorSpec(
    estimate=reinforce,
    options={
        "returns": Option(Choice(("total", "reward_to_go")), "reward_to_go", "G_0 for every step, or reward-to-go G_t"),
        "baseline": Option(BaselineParser(), "none", "b subtracted from the returns"),
        "discount_score": Option(Bool(), True, "weight the score at t by γ^t (unbiased for J)"),
    },
    target="∇J",
    unbiased=_reinforce_unbiased,
    check=_reinforce_check,
    doc="score-function gradient with reward-to-go and baselines",
    bias="unbiased, except baseline=batch_mean|optimal|optimal_per_param (fitted on the batch) and "
         "discount_score=false when γ < 1",
))
