"""The estimator registry: each entry is a pure function plus what it estimates and when it is unbiased."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from envs.problem import Problem
from envs.spec import ConfigError, Option, Registry, resolve_options

EstimatorFn = Callable[..., torch.Tensor]  # (policy, θ [P], batch, **kwargs) → [M, P]


@dataclass(frozen=True)
class Target:
    """What an estimator estimates: ∇J_α with J_α = J + α · E[Σ_t γ^t H(π(·|s_t))] (α = 0: ∇J),
    or with `damping` δ set, the damped natural gradient (F + δI)⁻¹ ∇J_α, F the exact Fisher
    information of the trajectory distribution."""

    entropy_coef: float = 0.0
    damping: float | None = None

    @property
    def label(self) -> str:
        objective = "J" if self.entropy_coef == 0 else f"(J + {self.entropy_coef:g}·H)"
        gradient = f"∇{objective}"
        return gradient if self.damping is None else f"(F + {self.damping:g}·I)⁻¹{gradient}"

    def reference(self, problem: Problem, theta: torch.Tensor) -> torch.Tensor:
        """The exact target at θ [P], float64."""
        theta = theta.to(torch.float64)
        gradient = problem.exact_gradient(theta)
        if self.entropy_coef:
            gradient = gradient + self.entropy_coef * torch.func.grad(problem.entropy_objective)(theta)
        if self.damping is None:
            return gradient.detach()
        damped = problem.fisher(theta) + self.damping * torch.eye(len(theta), dtype=torch.float64)
        return torch.linalg.solve(damped, gradient.detach())


@dataclass(frozen=True)
class Prepared:
    """What an estimator needs beyond the batch, computed once per measurement by its `prepare`
    from the problem, θ and a generator of its own (critic tables, a critic fitted on independent
    trajectories, the behaviour policy): `kwargs` go to `estimate`, the batches are drawn from
    π at `sample_theta` (θ itself when None), `info` is reported with the measurement."""

    kwargs: Mapping[str, Any]
    sample_theta: torch.Tensor | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


PrepareFn = Callable[[Mapping[str, Any], Problem, torch.Tensor, torch.Generator], Prepared]


def pass_options(options: Mapping[str, Any], problem: Problem, theta: torch.Tensor,
                 generator: torch.Generator) -> Prepared:
    """The default `prepare`: the resolved options are the estimator's keyword arguments."""
    return Prepared(dict(options))


@dataclass(frozen=True)
class EstimatorSpec:
    """`estimate(policy, θ, batch, **prepare(options, …).kwargs) → [M, P]`, one gradient per
    replicate batch.

    `unbiased(options, problem)` is the declaration the tests hold the estimator to: True means
    E[ĝ] = `target_of(options)`'s exact value on that problem at every batch size it accepts.
    `check(options, problem, batch_size)` raises ConfigError for combinations that do not apply.
    """

    estimate: EstimatorFn
    options: Mapping[str, Option]
    target: str  # what it estimates, in words, for `pgvar list`
    unbiased: Callable[[Mapping[str, Any], Problem], bool]
    check: Callable[[Mapping[str, Any], Problem, int], None]
    doc: str
    bias: str = ""  # the declaration in words, for `pgvar list`
    group_size: Callable[[Mapping[str, Any]], int] = lambda options: 1  # rollouts sharing an initial state
    prepare: PrepareFn = pass_options
    target_of: Callable[[Mapping[str, Any]], Target] = lambda options: Target()


ESTIMATORS: Registry[EstimatorSpec] = Registry("estimator")


def require_stochastic_policy(estimator: str, problem: Problem) -> None:
    """Score-function estimators need log π_θ(a|s); a deterministic policy has none."""
    if not problem.stochastic_policy:
        raise ConfigError(f"estimator {estimator} needs a stochastic policy (∇ log π); env {problem.name} "
                          f"with {problem.options} has a deterministic one")


def resolve_estimator(name: str, options: Mapping[str, Any] | None) -> tuple[EstimatorSpec, dict[str, Any]]:
    """Registry entry and fully resolved options; unknown names or bad values raise ConfigError."""
    spec = ESTIMATORS.get(name)
    return spec, resolve_options(f"estimator {name}", spec.options, options)
