"""Gradients of weighted log-likelihoods, Σ_t A_t ∇_θ log π_θ(a_t|s_t), per replicate or per trajectory.

Every score-function estimator reduces to this computation with its own weights A (advantages
times any discount, zero where the episode is over). Three computations of the same numbers,
chosen by `method` (the `autodiff` option of the score-function estimators):

- "vmap": `torch.func.grad` of the surrogate Σ_t A_t log π_θ(a_t|s_t), mapped with `torch.func.vmap`
  over replicates (and trajectories): per-unit gradients for about the cost of one backward pass;
- "surrogate": the pseudo-loss of lecture notes 000 §7.2 and 002 ("Implementation: Surrogate
  Objective"), one `torch.autograd.grad` of Σ_i Σ_t A_{i,t} log π_θ(a_{i,t}|s_{i,t}) per replicate
  batch (per trajectory for the per-trajectory gradients), in a Python loop over those units;
- "naive": lecture notes 002's "literal translation", one backward pass of log π_θ(a_{i,t}|s_{i,t})
  per step (m, i, t), multiplied by A_{m,i,t} and accumulated: the obviously-correct loop twin.

They agree to rounding (tests/test_autodiff.py); tests/benchmarks/test_autodiff_speed.py times them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch.func import grad, vmap

from envs.problem import Batch, Policy
from envs.spec import Choice, Option

METHODS = ("vmap", "surrogate", "naive")
# The estimators' `autodiff` option. Its test grid is vmap alone: the three methods are tested equal
# (tests/test_autodiff.py), so running the statistical tests on the slow ones would test nothing new.
AUTODIFF_OPTION = Option(Choice(METHODS), "vmap", "how ∇_θ is computed: vmap (torch.func), surrogate (one backward "
                         "per batch) or naive (one per step); the same estimate", grid=("vmap",))

PerStep = Callable[..., torch.Tensor]  # (θ [P], *inputs [..., *event]) → per-step values [...]


def _weighted_gradients(per_step: PerStep, theta: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                        weights: torch.Tensor, mask: torch.Tensor, unit_dims: int, method: str) -> torch.Tensor:
    """Σ_{steps s in unit u} w_s ∇_θ f_θ(x_s) for every unit u, the units being the leading `unit_dims`
    dimensions of weights [M, N, T] (1: replicates → [M, P]; 2: trajectories → [M, N, P]).

    f = `per_step`(θ, *x) evaluated on inputs x [M, N, T, ...]; w is a constant (detached). Since w does
    not depend on θ, Σ_s w_s ∇f(x_s) = ∇ Σ_s w_s f(x_s) (lecture notes 002): "vmap" and "surrogate"
    differentiate the right-hand side, "naive" computes the left-hand side term by term, skipping the
    steps where `mask` [M, N, T] is 0 (past the end of the episode, where every caller's w is 0).
    """
    if method not in METHODS:
        raise ValueError(f"autodiff method {method!r}: expected one of {', '.join(METHODS)}")
    weights = weights.detach()

    def weighted_sum(th: torch.Tensor, w: torch.Tensor, *x: torch.Tensor) -> torch.Tensor:
        return (per_step(th, *x) * w).sum()

    if method == "vmap":
        per_unit = grad(weighted_sum)
        for _ in range(unit_dims):
            per_unit = vmap(per_unit, in_dims=(None, 0) + (0,) * len(inputs))
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
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "vmap"
) -> torch.Tensor:
    """ĝ_m = (1/N) Σ_i Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}), computed by `method`
    (vmap | surrogate: one backward per replicate | naive: one per step; see the module docstring).

    weights A [M, N, T] (detached, 0 where batch.mask is 0) → [M, P].
    """
    scores = _weighted_gradients(policy.log_prob, theta, (batch.obs, batch.actions), weights, batch.mask, 1, method)
    return scores / batch.batch_size


def weighted_score_per_trajectory(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "vmap"
) -> torch.Tensor:
    """ψ_{m,i} = Σ_t A_{m,i,t} ∇_θ log π_θ(a_{m,i,t}|s_{m,i,t}), computed by `method`
    (vmap | surrogate: one backward per trajectory | naive: one per step).

    weights A [M, N, T] (detached, 0 where batch.mask is 0) → [M, N, P].
    """
    return _weighted_gradients(policy.log_prob, theta, (batch.obs, batch.actions), weights, batch.mask, 2, method)


def weighted_entropy_gradient_per_replicate(
    policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor, method: str = "vmap"
) -> torch.Tensor:
    """(1/N) Σ_i Σ_t w_{m,i,t} ∇_θ H(π_θ(·|s_{m,i,t})), the direct gradient of an entropy bonus, computed
    by `method` like the scores, so that an estimator's `autodiff` option covers all of its backward passes.

    weights w [M, N, T] (detached, 0 where batch.mask is 0) → [M, P].
    """
    return _weighted_gradients(policy.entropy, theta, (batch.obs,), weights, batch.mask, 1, method) / batch.batch_size
