"""Critic-based advantages: one-step actor-critic and GAE(λ)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from envs.problem import Batch, Policy, Problem
from envs.spec import Float, Option
from envs.values import ValueFunction
from estimators.autodiff import weighted_score_per_replicate
from estimators.critics import (
    CRITIC_OPTIONS,
    SameBatchCritic,
    check_critic,
    critic_values,
    independent_of_batch,
    prepare_critic,
)
from estimators.registry import ESTIMATORS, EstimatorSpec, Prepared, require_stochastic_policy
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


def _check(name: str):
    def check(options: Mapping[str, Any], problem: Problem, batch_size: int) -> None:
        require_stochastic_policy(name, problem)
        check_critic(f"estimator {name}", options, problem)
    return check


def _prepare(options: Mapping[str, Any], problem: Problem, theta: torch.Tensor,
             generator: torch.Generator) -> Prepared:
    critic, info = prepare_critic(options, problem, theta, generator)
    kwargs: dict[str, Any] = {"critic": critic}
    if "lambda" in options:
        kwargs["lam"] = options["lambda"]
    return Prepared(kwargs, info=info)


ESTIMATORS.register("actor-critic", EstimatorSpec(
    estimate=actor_critic,
    options=dict(CRITIC_OPTIONS),
    target="∇J",
    unbiased=lambda options, problem: options["critic"] == "oracle",
    check=_check("actor-critic"),
    doc="one-step actor-critic: TD(0) advantage r + γV̂(s′) − V̂(s)",
    bias="unbiased only with critic=oracle (the exact V^π_t); any critic error biases it",
    prepare=_prepare,
))
ESTIMATORS.register("gae", EstimatorSpec(
    estimate=gae_gradient,
    options={
        "lambda": Option(Float(0.0, 1.0), 0.95, "λ: 0 is one-step actor-critic, 1 REINFORCE with a value baseline",
                         grid=(0.0, 0.5, 1.0)),
        **CRITIC_OPTIONS,
    },
    target="∇J",
    unbiased=lambda options, problem: options["critic"] == "oracle" or (
        options["lambda"] == 1.0 and independent_of_batch(options)),
    check=_check("gae"),
    doc="GAE(λ) advantages from a critic",
    bias="unbiased with critic=oracle at every λ, and at λ = 1 with any critic not fitted on the batch",
    prepare=_prepare,
))
