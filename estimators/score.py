"""The score-function (REINFORCE) family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from envs.problem import Batch, Policy, Problem
from envs.memory import check_bytes
from envs.spec import Bool, Choice, ConfigError, Float, Parser, When, number_text, option, reuse
from envs.values import ValueFunction
from estimators.autodiff import (
    AUTODIFF_OPTION,
    resolve_method,
    weighted_entropy_gradient_per_replicate,
    weighted_score_per_replicate,
    weighted_score_per_trajectory,
)
from estimators.baselines import (
    ORACLE_BASELINES,
    ORACLE_SAMPLES,
    ORACLE_SAMPLES_RANGE,
    batch_mean,
    leave_one_out,
    optimal_constant,
    oracle_chunk,
    oracle_optimal_constant,
    oracle_samples,
)
from estimators.critics import (
    CRITIC,
    CRITIC_SAMPLES,
    SameBatchCritic,
    check_critic,
    critic_values,
    independent_of_batch,
    prepare_critic,
)
from estimators.registry import ESTIMATORS, Estimator, Prepared, Target
from estimators.returns import reward_to_go, total_return

BATCH_DEPENDENT_BIASED = ("batch_mean", "optimal", "optimal_per_param")
FITTED_CONSTANTS = ("optimal", "optimal_per_param", *ORACLE_BASELINES)  # b · Σ_t w_t ψ_t, per trajectory
BASELINE_NAMES = ("none", "constant:<value>", "batch_mean", "rloo", "optimal", "optimal_per_param",
                  *(f"{name}[:<K>]" for name in ORACLE_BASELINES), "value")


@dataclass(frozen=True)
class BaselineParser(Parser):
    allowed: str = "one of " + ", ".join(BASELINE_NAMES)
    examples: tuple[str, ...] = ("none", "constant:0.5", "batch_mean", "rloo", "optimal", "optimal_per_param",
                                 *ORACLE_BASELINES, "value")

    def __call__(self, raw: Any) -> str:
        text = str(raw).strip()
        kind, sep, value = text.partition(":")
        if kind == "constant" and sep:
            try:
                return f"constant:{number_text(Float()(value))}"
            except ValueError:
                raise ValueError(self.allowed) from None
        if kind in ORACLE_BASELINES and sep:  # K trajectories; the default is written without it (one spelling)
            try:
                samples = ORACLE_SAMPLES_RANGE(value)
            except ValueError:
                raise ValueError(f"{self.allowed} ({kind}:<K>: K {ORACLE_SAMPLES_RANGE.allowed})") from None
            return kind if samples == ORACLE_SAMPLES else f"{kind}:{samples}"
        if sep or kind not in (*BASELINE_NAMES, *ORACLE_BASELINES):
            raise ValueError(self.allowed)
        return kind


def reinforce(
    policy: Policy,
    theta: torch.Tensor,
    batch: Batch,
    returns: str = "reward_to_go",
    baseline: str = "none",
    discount_score: bool = True,
    entropy_coef: float = 0.0,
    critic: ValueFunction | SameBatchCritic | None = None,
    autodiff: str = "auto",
    oracle_baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE / likelihood-ratio gradient of J(θ) = E[Σ_{t<H} γ^t r_{t+1}] (Williams 1992;
    lecture notes 000 §2–5, 003), or of J_α = J + α E[Σ_t γ^t H(π(·|s_t))] when entropy_coef α > 0.

        ĝ = (1/N) Σ_i Σ_t [∇_θ log π_θ(a_{i,t}|s_{i,t}) · w_t (Ĝ_{i,t} − b_{i,t}) + α v_t ∇_θ H(π_θ(·|s_{i,t}))]

    returns="total":        Ĝ_{i,t} = G_{i,0} = Σ_{t'} γ^{t'} r'_{i,t'+1},  w_t = 1.
    returns="reward_to_go": Ĝ_{i,t} = G_{i,t} = Σ_{t'≥t} γ^{t'−t} r'_{i,t'+1},
                            w_t = γ^t if discount_score else 1 (dropping γ^t is common practice and
                            biased for the discounted objective when γ < 1).
    r'_{t+1} = r_{t+1} + α H(π(·|s_t)) (entropy as a reward), and v_t = γ^t unless discount_score=false
    drops it (then 1): the score term carries the entropy's effect on future states, the second term
    its direct dependence on θ (soft policy gradient; Williams & Peng 1991, Haarnoja et al. 2017).
    baseline: none (b = 0), constant:<c> (b = c), batch_mean (b_t = mean_j Ĝ_{j,t} over all N
    trajectories, so b = mean_j G_{j,0} for total returns; biased by exactly −∇J/N),
    rloo (the same mean over j ≠ i, unbiased), optimal / optimal_per_param (see
    `baselines.optimal_constant`; estimated from the batch, biased at O(1/N)), oracle_optimal[:<K>] /
    oracle_optimal_per_param[:<K>] (the same constants of π_θ itself, `oracle_baseline` [1, 1] or [1, P] from
    `baselines.oracle_optimal_constant` on K independent trajectories, 10 000 by default: unbiased), value (b_{i,t} =
    V̂_t(s_{i,t}) from `critic`, see `critics`: unbiased whenever the critic does not depend on
    the batch — a state-dependent baseline, lecture notes 001, 004).
    autodiff: how every ∇_θ above is computed — auto (packed for the MLP policies, else vmap), packed
    (hand-written backprop over alive steps, `mlp_backprop`), vmap (per-batch `torch.func` gradients), surrogate (one
    backward of the pseudo-loss per batch, or per trajectory for the optimal baselines; lecture notes
    000 §7, 002) or naive (one backward per step, N×T per batch); the same estimate to rounding
    (see the `autodiff` module).

    batch [M, N, T] → ĝ [M, P].
    """
    ret, weight = returns_and_weights(policy, theta, batch, returns, discount_score, entropy_coef)
    if baseline.partition(":")[0] in FITTED_CONSTANTS:
        unbaselined, score = trajectory_terms(policy, theta, batch, ret, weight, autodiff)
        if baseline.partition(":")[0] in ORACLE_BASELINES:
            if oracle_baseline is None:
                raise ValueError(f"baseline={baseline} needs oracle_baseline, its b* from the estimator's prepare")
            b = oracle_baseline
        else:
            b = optimal_constant(unbaselined, score, per_param=baseline == "optimal_per_param")
        estimate = (unbaselined - b * score).mean(dim=1)
    else:
        if baseline == "none":
            advantage = ret
        elif baseline == "batch_mean":
            advantage = ret - batch_mean(ret)
        elif baseline == "rloo":
            advantage = ret - leave_one_out(ret)
        elif baseline == "value":
            advantage = ret - critic_values(critic, batch)[0]
        else:  # constant:<c>
            advantage = ret - float(baseline.partition(":")[2])
        estimate = weighted_score_per_replicate(policy, theta, batch, weight * advantage, autodiff)
    if entropy_coef:
        direct = (batch.discount if discount_score else torch.ones_like(batch.discount)) * batch.mask
        direct_gradient = weighted_entropy_gradient_per_replicate(policy, theta, batch, direct, autodiff)  # [M, P]
        estimate = estimate + entropy_coef * direct_gradient
    return estimate


def returns_and_weights(policy: Policy, theta: torch.Tensor, batch: Batch, returns: str, discount_score: bool,
                        entropy_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`reinforce`'s Ĝ_{i,t} (entropy as a reward when α > 0) and score weights w_t, zero after the episode.
    → 2 × [M, N, T]."""
    rewards = batch.rewards
    if entropy_coef:
        entropy = policy.entropy(theta, batch.obs).detach() * batch.mask  # [M, N, T]
        rewards = rewards + entropy_coef * entropy
    if returns == "reward_to_go":
        ret = reward_to_go(rewards, batch.gamma)  # [M, N, T]
        weight = (batch.discount if discount_score else torch.ones_like(batch.discount)) * batch.mask
    else:
        ret = total_return(rewards, batch.discount)[..., None].expand_as(rewards)
        weight = torch.ones_like(batch.discount) * batch.mask
    return ret, weight


def trajectory_terms(policy: Policy, theta: torch.Tensor, batch: Batch, ret: torch.Tensor, weight: torch.Tensor,
                     autodiff: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per trajectory, g_i = Σ_t w_t ψ_t Ĝ_t and s_i = Σ_t w_t ψ_t (ψ_t = ∇_θ log π_θ(a_t|s_t)), the two terms a
    constant baseline combines as g_i − b s_i. ret, weight [M, N, T] → 2 × [M, N, P]."""
    unbaselined = weighted_score_per_trajectory(policy, theta, batch, weight * ret, autodiff)  # [M, N, P]
    return unbaselined, weighted_score_per_trajectory(policy, theta, batch, weight, autodiff)


@ESTIMATORS.entry("reinforce")
class Reinforce(Estimator):
    returns: str = option(Choice(("total", "reward_to_go")), "reward_to_go", "G_0 for every step, or reward-to-go G_t")
    baseline: str = option(BaselineParser(), "none", "b subtracted from the returns (oracle_*: π_θ's b*, "
                             f"fitted on K = {ORACLE_SAMPLES} independent trajectories unless given)")
    discount_score: bool = option(Bool(), True, "weight the score at t by γ^t (unbiased for J)",
                                  only_if=When("returns", "reward_to_go"))
    entropy_coef: float = option(Float(0.0), 0.0, "α: estimate ∇(J + α·Σ_t γ^t H(π(·|s_t))), entropy as a reward",
                                 grid=(0.0, 0.5))
    autodiff: str = reuse(AUTODIFF_OPTION)
    critic: str = reuse(CRITIC, only_if=When("baseline", "value"))
    critic_samples: int = reuse(CRITIC_SAMPLES)

    function = staticmethod(reinforce)
    doc = "score-function gradient with reward-to-go, baselines (incl. a critic) and an entropy bonus"
    target_text = "∇J, or ∇(J + α·H) with entropy_coef α > 0"
    bias_text = ("unbiased for its target, except baseline=batch_mean|optimal|optimal_per_param or value with "
                 "critic=fitted_same_batch (fitted on the batch) and discount_score=false when γ < 1")

    @property
    def oracle(self) -> bool:
        """baseline=oracle_optimal[_per_param][:<K>]: b* fitted in `prepare` on independent trajectories."""
        return self.baseline.partition(":")[0] in ORACLE_BASELINES

    def validate(self) -> None:
        if self.baseline == "value" and self.returns != "reward_to_go":
            raise ConfigError("estimator reinforce: baseline=value needs returns=reward_to_go "
                              "(V_t(s_t) estimates G_t, not G_0)")

    @property
    def target(self) -> Target:
        return Target(entropy_coef=self.entropy_coef)

    def unbiased(self, problem: Problem) -> bool:
        if self.baseline in BATCH_DEPENDENT_BIASED:
            return False
        if self.baseline == "value" and not independent_of_batch(self):
            return False
        drops_discount = self.returns == "reward_to_go" and not self.discount_score
        return not (drops_discount and problem.gamma < 1 and problem.horizon > 1)

    def check(self, problem: Problem, batch_size: int) -> None:
        super().check(problem, batch_size)
        resolve_method(self.autodiff, problem.policy)  # packed with a policy it does not cover: refused now
        if self.baseline == "rloo" and batch_size < 2:
            raise ConfigError("estimator reinforce: baseline=rloo needs batch_size ≥ 2 (it averages the others)")
        if self.baseline in BATCH_DEPENDENT_BIASED and batch_size < 2:
            # fitted to the one trajectory it is applied to, the baseline removes (almost) all of it:
            # batch_mean and optimal_per_param give exactly 0, optimal gives 0 on one-step problems
            raise ConfigError(f"estimator reinforce: baseline={self.baseline} needs batch_size ≥ 2 "
                              "(fitted to its own single trajectory it cancels the estimate)")
        if self.baseline == "value":
            check_critic(self, problem)
        if self.oracle:
            chunk = oracle_chunk(problem, oracle_samples(self.baseline))  # its trajectories, g_i, s_i, products
            check_bytes(problem.sample_bytes(chunk) + 24.0 * chunk * problem.num_params,
                        f"{self.owner()} with baseline={self.baseline} (chunks of {chunk} trajectories)",
                        "the problem's size")

    def kwargs(self) -> dict[str, Any]:
        return {key: value for key, value in self.as_dict().items()
                if key not in ("critic", "critic_samples")}

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        if self.oracle:
            def terms(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
                ret, weight = returns_and_weights(problem.policy, theta, batch, self.returns, self.discount_score,
                                                  self.entropy_coef)
                return trajectory_terms(problem.policy, theta, batch, ret, weight, self.autodiff)

            samples = oracle_samples(self.baseline)
            b = oracle_optimal_constant(problem, theta, generator, samples,
                                        self.baseline.startswith("oracle_optimal_per_param"), terms)
            info: dict[str, Any] = {"oracle_samples": samples}
            if b.numel() == 1:
                info["oracle_baseline"] = float(b)
            return Prepared({**self.kwargs(), "oracle_baseline": b}, info=info)
        if self.baseline != "value":
            return Prepared(self.kwargs())
        critic, info = prepare_critic(self, problem, theta, generator)
        return Prepared({**self.kwargs(), "critic": critic}, info=info)
