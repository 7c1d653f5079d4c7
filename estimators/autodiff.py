"""Gradients of weighted log-likelihoods, Σ_t A_t ∇_θ log π_θ(a_t|s_t), per replicate or per trajectory.

Every score-function estimator reduces to this computation with its own weights A (advantages
times any discount, zero where the episode is over). Four computations of the same numbers,
chosen by `method` (the `autodiff` option of the score-function estimators):

- "packed": for the MLP policies (`MLPCategorical`, `MLPGaussian`) only, reverse mode written out by hand
  over the alive steps alone, float64 matmuls, the per-unit sums batched by episode length
  (estimators/mlp_backprop.py): the fast path, ~6× "vmap" on CartPole batches (measured per trajectory
  at N = 4096 and per replicate at M = 500, N = 32), which differentiates the padding too;
- "vmap": `torch.func.grad` of the surrogate Σ_t A_t log π_θ(a_t|s_t), mapped with `torch.func.vmap`
  over replicates (and trajectories): per-unit gradients for about the cost of one backward pass;
- "surrogate": the pseudo-loss of lecture notes 000 §7.2 and 002 ("Implementation: Surrogate
  Objective"), one `torch.autograd.grad` of Σ_i Σ_t A_{i,t} log π_θ(a_{i,t}|s_{i,t}) per replicate
  batch (per trajectory for the per-trajectory gradients), in a Python loop over those units;
- "naive": lecture notes 002's "literal translation", one backward pass of log π_θ(a_{i,t}|s_{i,t})
  per step (m, i, t), multiplied by A_{m,i,t} and accumulated: the obviously-correct loop twin.

The default, "auto", is "packed" for the MLP policies and "vmap" for every other policy. They agree to
rounding (tests/test_autodiff.py); tests/benchmarks/test_autodiff_speed.py times them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from envs.classic import RolloutBatch
from envs.problem import Batch, Policy
from envs.spec import Choice, ConfigError, Option
import estimators.mlp_backprop as mlp_backprop

METHODS = ("auto", "packed", "vmap", "surrogate", "naive")
# The estimators' `autodiff` option. Its test grid is the default alone: the methods are tested equal
# (tests/test_autodiff.py), so running the statistical tests on the others would test nothing new.
AUTODIFF_OPTION = Option(Choice(METHODS), "auto", "how ∇_θ is computed: packed (hand-written backprop, MLP "
                         "policies only, reusing the rollout's activations), vmap (torch.func), surrogate (one backward "
                         "per batch) or naive (one per step); auto: packed for MLP policies, else surrogate for one sum and vmap for "
                         "more; the same "
                         "estimate; one sum per batch unless the estimator needs per-trajectory scores (reinforce's "
                         "optimal baselines)", grid=("auto",))

if TYPE_CHECKING:  # annotations only: `pgvar list` imports this module without torch (pgvar/cli.py)
    PerStep = Callable[..., torch.Tensor]  # (θ [P], *inputs [..., *event]) → per-step values [...]


def resolve_method(method: str, policy: Policy, units: int = 2) -> str:
    """The method that computes the gradients of `units` sums: "auto" → "packed" for the MLP policies, else
    "surrogate" for a single sum (one backward; vmap's setup alone costs 4–30× more on the tabular, bandit and LQR
    policies at M = 1, a training update: measured with identical results), else "vmap".
    ValueError for an unknown name; ConfigError for "packed" with a policy it does not cover."""
    if method not in METHODS:
        raise ValueError(f"autodiff method {method!r}: expected one of {', '.join(METHODS)}")
    if method == "auto":
        return "packed" if mlp_backprop.supports(policy) else "surrogate" if units == 1 else "vmap"
    if method == "packed" and not mlp_backprop.supports(policy):
        raise ConfigError(f"autodiff=packed needs an MLPCategorical or MLPGaussian policy, not "
                          f"{type(policy).__name__}; use auto or vmap")
    return method


def _weighted_gradients(policy: Policy, kind: str, theta: torch.Tensor, batch: Batch, weights: torch.Tensor,
                        unit_dims: int, method: str) -> torch.Tensor:
    """Σ_{steps s in unit u} w_s ∇_θ f_θ(x_s) for every unit u, the units being the leading `unit_dims`
    dimensions of weights [M, N, T] (1: replicates → [M, P]; 2: trajectories → [M, N, P]).

    f = log π_θ(a|s) (kind "score") or H(π_θ(·|s)) ("entropy") on the batch's steps x [M, N, T, ...]; w is a
    constant (detached). Since w does not depend on θ, Σ_s w_s ∇f(x_s) = ∇ Σ_s w_s f(x_s) (lecture notes
    002): "vmap" and "surrogate" differentiate the right-hand side, "naive" and "packed" compute the
    left-hand side, skipping the steps where batch.mask [M, N, T] is 0 (past the end of the episode, where
    every caller's w is 0).
    """
    method = resolve_method(method, policy, math.prod(weights.shape[:unit_dims]))
    weights, mask = weights.detach(), batch.mask
    if method == "packed":
        kept = batch.kept_for(policy, theta) if isinstance(batch, RolloutBatch) else None
        return mlp_backprop.weighted_gradients(kind, policy, theta, batch.obs, batch.actions, weights, mask,
                                               unit_dims, kept=kept)
    per_step: PerStep = policy.log_prob if kind == "score" else policy.entropy
    inputs = (batch.obs, batch.actions) if kind == "score" else (batch.obs,)

    def weighted_sum(th: torch.Tensor, w: torch.Tensor, *x: torch.Tensor) -> torch.Tensor:
        return (per_step(th, *x) * w).sum()

    if method == "vmap":
        per_unit = torch.func.grad(weighted_sum)
        for _ in range(unit_dims):
            per_unit = torch.func.vmap(per_unit, in_dims=(None, 0) + (0,) * len(inputs))
        return per_unit(theta, weights, *inputs)
    out = theta.new_zeros(*weights.shape[:unit_dims], theta.numel())  # [M, P] or [M, N, P]
    leaf = theta.detach().requires_grad_(True)  # each backward frees its own graph, so one leaf serves all
    if method == "surrogate":
        for unit in itertools.product(*map(range, weights.shape[:unit_dims])):
            out[unit] = torch.autograd.grad(weighted_sum(leaf, weights[unit], *(x[unit] for x in inputs)), leaf)[0]
        return out
    for step in map(tuple, mask.nonzero().tolist()):
        (gradient,) = torch.autograd.grad(per_step(leaf, *(x[step] for x in inputs)), leaf)
        out[step[:unit_dims]] += weights[step] * gradient
    return out


def weighted_score_per_replicate(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "auto"
) -> torch.Tensor:
    """ĝ_m = (1/N) Σ_i Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}), computed by `method`
    (auto | packed | vmap | surrogate: one backward per replicate | naive: one per step; see the module
    docstring).

    weights A [M, N, T] (detached, 0 where batch.mask is 0) → [M, P].
    """
    return _weighted_gradients(policy, "score", theta, batch, weights, 1, method) / batch.batch_size


def weighted_score_per_trajectory(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "auto"
) -> torch.Tensor:
    """ψ_{m,i} = Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}), computed by `method`
    (auto | packed | vmap | surrogate: one backward per trajectory | naive: one per step).

    weights A [M, N, T] (detached, 0 where batch.mask is 0) → [M, N, P].
    """
    return _weighted_gradients(policy, "score", theta, batch, weights, 2, method)


def weighted_entropy_gradient_per_replicate(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "auto"
) -> torch.Tensor:
    """(1/N) Σ_i Σ_t w_{m,i,t} ∇_θ H(π_θ(·|s_{m,i,t})), the direct gradient of an entropy bonus, computed
    by `method` like the scores, so that an estimator's `autodiff` option covers all of its backward passes.

    weights w [M, N, T] (detached, 0 where batch.mask is 0) → [M, P].
    """
    return _weighted_gradients(policy, "entropy", theta, batch, weights, 1, method) / batch.batch_size
