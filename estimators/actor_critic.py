"""Critic-based advantages: one-step actor-critic and GAE(λ)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from envs.problem import Batch, Policy, Problem
from envs.spec import Float, option, reuse
from envs.values import ValueFunction
from estimators.autodiff import weighted_score_per_replicate
from estimators.critics import (
    CRITIC,
    CRITIC_SAMPLES,
    SameBatchCritic,
    check_critic,
    critic_values,
    independent_of_batch,
    prepare_critic,
)
from estimators.registry import ESTIMATORS, Estimator, Prepared
from estimators.returns import gae


def gae_gradient(policy: Policy, theta: torch.Tensor, batch: Batch, critic: ValueFunction | SameBatchCritic,
                 lam: float) -> torch.Tensor:
    """Policy gradient with generalised advantage estimates (Schulman et al. 2016; lecture notes 001,
    the actor-critic spectrum):

        ĝ = (1/N) Σ_i Σ_t γ^t ∇_θ log π_θ(a_{i,t}|s_{i,t}) Â_{i,t},   Â_t = Σ_{k≥0} (γλ)^k δ_{t+k},
        δ_t = r_{t+1} + γ V̂_{t+1}(s_{t+1}) − V̂_t(s_t)

    within the episode; after its last step V̂ is V̂_T(final state) if it was truncated at T, 0 if it
    terminated. λ = 1 is REINFORCE with the value baseline (Â_t = G_t − V̂_t(s_t); V̂_H ≡ 0), λ = 0
    the one-step actor-critic. With the exact V^π_t every λ is unbiased: E[δ_{t+k} | s_t, a_t] is
    Q_t − V_t for k = 0 and 0 for k ≥ 1. With an approximate critic only λ = 1 is, and only if the
    critic does not depend on the batch. batch [M, N, T] → ĝ [M, P].
    """
    values, bootstrap = critic_values(critic, batch)  # [M, N, T], [M, N]
    advantage = gae(batch.rewards, values, bootstrap, batch.mask, batch.gamma, lam)  # [M, N, T]
    return weighted_score_per_replicate(policy, theta, batch, batch.discount * batch.mask * advantage)


def actor_critic(policy: Policy, theta: torch.Tensor, batch: Batch,
                 critic: ValueFunction | SameBatchCritic) -> torch.Tensor:
    """One-step actor-critic (lecture notes 004; Sutton & Barto 2018 §13.5), the TD(0) advantage:

        ĝ = (1/N) Σ_i Σ_t γ^t ∇_θ log π_θ(a_{i,t}|s_{i,t}) (r_{i,t+1} + γ V̂_{t+1}(s_{i,t+1}) − V̂_t(s_{i,t}))

    — `gae_gradient` at λ = 0. Unbiased only with the exact critic: its error enters the advantage
    through V̂_{t+1}(s_{t+1}), which depends on a_t. batch [M, N, T] → ĝ [M, P].
    """
    return gae_gradient(policy, theta, batch, critic, lam=0.0)


@dataclass(frozen=True)
class CriticAdvantage(Estimator):
    """What actor-critic and GAE share: a critic (`critic`, `critic_samples`, declared by each subclass with
    `reuse(CRITIC)`, `reuse(CRITIC_SAMPLES)`, so that each keeps its options in the order its variant labels
    and cell ids were made with: gae's `lambda` first), its checks and its preparation."""

    def unbiased(self, problem: Problem) -> bool:
        return self.critic == "oracle"

    def check(self, problem: Problem, batch_size: int) -> None:
        super().check(problem, batch_size)
        check_critic(self, problem)

    def kwargs(self) -> dict[str, Any]:
        return {}  # beyond the critic, which `prepare` makes

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        critic, info = prepare_critic(self, problem, theta, generator)
        return Prepared({"critic": critic, **self.kwargs()}, info=info)


@ESTIMATORS.entry("actor-critic")
class ActorCritic(CriticAdvantage):
    critic: str = reuse(CRITIC)
    critic_samples: int = reuse(CRITIC_SAMPLES)

    function = staticmethod(actor_critic)
    doc = "one-step actor-critic: TD(0) advantage r + γV̂(s′) − V̂(s)"
    bias_text = "unbiased only with critic=oracle (the exact V^π_t); any critic error biases it"


@ESTIMATORS.entry("gae")
class Gae(CriticAdvantage):
    lam: float = option(Float(0.0, 1.0), 0.95, "λ: 0 is one-step actor-critic, 1 REINFORCE with a value baseline",
                        grid=(0.0, 0.5, 1.0), key="lambda")  # `lambda` is a Python keyword
    critic: str = reuse(CRITIC)
    critic_samples: int = reuse(CRITIC_SAMPLES)

    function = staticmethod(gae_gradient)
    doc = "GAE(λ) advantages from a critic"
    bias_text = "unbiased with critic=oracle at every λ, and at λ = 1 with any critic not fitted on the batch"

    def unbiased(self, problem: Problem) -> bool:
        return super().unbiased(problem) or (self.lam == 1.0 and independent_of_batch(self))

    def kwargs(self) -> dict[str, Any]:
        return {"lam": self.lam}
