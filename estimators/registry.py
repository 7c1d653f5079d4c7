"""The estimator registry: each entry is a pure function plus what it estimates and when it is unbiased."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from envs.problem import Problem
from envs.spec import Option, Registry, resolve_options

EstimatorFn = Callable[..., torch.Tensor]  # (policy, θ [P], batch, **options) → [M, P]


@dataclass(frozen=True)
class EstimatorSpec:
    """`estimate(policy, θ, batch, **options) → [M, P]`, one gradient per replicate batch.

    `unbiased(options, problem)` is the declaration the tests hold the estimator to: True means
    E[ĝ] = `target` exactly on that problem at every batch size it accepts.
    `check(options, problem, batch_size)` raises ConfigError for combinations that do not apply.
    """

    estimate: EstimatorFn
    options: Mapping[str, Option]
    target: str
    unbiased: Callable[[Mapping[str, Any], Problem], bool]
    check: Callable[[Mapping[str, Any], Problem, int], None]
    doc: str
    bias: str = ""  # the declaration in words, for `pgvar list`
    group_size: Callable[[Mapping[str, Any]], int] = lambda options: 1  # rollouts sharing an initial state


ESTIMATORS: Registry[EstimatorSpec] = Registry("estimator")


def resolve_estimator(name: str, options: Mapping[str, Any] | None) -> tuple[EstimatorSpec, dict[str, Any]]:
    """Registry entry and fully resolved options; unknown names or bad values raise ConfigError."""
    spec = ESTIMATORS.get(name)
    return spec, resolve_options(f"estimator {name}", spec.options, options)


