"""The estimator registry: each entry is a pure function plus what it estimates and when it is unbiased."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import torch

from envs.problem import Capability, Problem
from envs.spec import Config, Registry

if TYPE_CHECKING:  # annotations only: `pgvar list` imports this module without torch (pgvar/cli.py)
    EstimatorFn = Callable[..., torch.Tensor]  # (policy, θ [P], batch, **kwargs) → [M, P]


@dataclass(frozen=True)
class Target:
    """What an estimator estimates: ∇J_α with J_α = J + α · E[Σ_t γ^t H(π(·|s_t))] (α = 0: ∇J),
    or with `damping` δ set, the damped natural gradient (F + δI)⁻¹ ∇J_α, F the exact Fisher
    information of the trajectory distribution. Its exact value and sampled estimate are computed in one place,
    bench.reference."""

    entropy_coef: float = 0.0
    damping: float | None = None

    @property
    def label(self) -> str:
        objective = "J" if self.entropy_coef == 0 else f"(J + {self.entropy_coef:g}·H)"
        gradient = f"∇{objective}"
        return gradient if self.damping is None else f"(F + {self.damping:g}·I)⁻¹{gradient}"


@dataclass(frozen=True)
class Prepared:
    """What an estimator needs beyond the batch, computed once per measurement by its `prepare`
    from the problem, θ and a generator of its own (critic tables, a critic fitted on independent
    trajectories, the behaviour policy): `kwargs` go to `estimate`, the batches are drawn from
    π at `sample_theta` (θ itself when None), `info` is reported with the measurement."""

    kwargs: Mapping[str, Any]
    sample_theta: torch.Tensor | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimator(Config):
    """A registered estimator: a frozen, typed config whose fields are its options (declared with
    `envs.spec.option`), and the methods that say what it needs and promises. `function` is the pure
    estimator; `estimate(policy, θ, batch, prepared)` calls it with `prepare`'s keyword arguments → [M, P],
    one gradient per replicate batch. Subclasses register with `@ESTIMATORS.entry(name)`.

    `unbiased(problem)` is the declaration the tests hold the estimator to: True means E[ĝ] = `target`'s
    exact value on that problem at every batch size it accepts. `check(problem, batch_size)` raises
    ConfigError for combinations that do not apply (by default: the problem lacks a capability in `requires`).
    """

    kind: ClassVar[str] = "estimator"
    function: ClassVar[EstimatorFn]
    doc: ClassVar[str] = ""
    target_text: ClassVar[str] = "∇J"  # what it estimates, in words, for `pgvar list` (agrees with `target`)
    bias_text: ClassVar[str] = ""  # the declaration in words, for `pgvar list`
    requires: ClassVar[tuple[Capability, ...]] = (Capability.STOCHASTIC_POLICY,)

    @property
    def target(self) -> Target:
        return Target()

    @property
    def group_size(self) -> int:
        """Rollouts sharing an initial state (GRPO's group); 1 is i.i.d. sampling."""
        return 1

    def unbiased(self, problem: Problem) -> bool:
        return True

    def check(self, problem: Problem, batch_size: int) -> None:
        for capability in self.requires:
            problem.require(capability, self.owner())

    def kwargs(self) -> dict[str, Any]:
        """The options `function` takes as keyword arguments (by default all of them)."""
        return self.as_dict()

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        """What `estimate` needs beyond the batch, once per measurement (critics, behaviour policy)."""
        return Prepared(self.kwargs())

    def estimate(self, policy: Any, theta: torch.Tensor, batch: Any, prepared: Prepared) -> torch.Tensor:
        return type(self).function(policy, theta, batch, **prepared.kwargs)


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")


def resolve_estimator(name: str, options: Mapping[str, Any] | None) -> Estimator:
    """The config of a registered estimator with `options` over its defaults; unknown names or bad values raise
    ConfigError."""
    return ESTIMATORS.get(name).parse(options)
