"""The `Batch` of trajectories, the `Problem` interface, and the problem registry.

Shapes: M replicate batches, N trajectories per batch, T time steps, P parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from envs.spec import ConfigError, Option, Registry, resolve_options
from envs.values import QuadraticBasis, TableBasis, ValueFunction


@dataclass(frozen=True)
class Batch:
    """M×N trajectories of at most T steps, padded and masked.

    Step t holds the state s_t, the action a_t and the reward r_{t+1} that followed it.
    A terminal transition carries its reward and is the last alive step of its episode.
    """

    obs: torch.Tensor  # [M, N, T, ...] states (long) or observations
    actions: torch.Tensor  # [M, N, T, ...]
    rewards: torch.Tensor  # [M, N, T] float64, zero where the episode is over
    mask: torch.Tensor  # [M, N, T] float64, 1 while the episode is alive at step t
    terminated: torch.Tensor  # [M, N] bool: ended by a terminal transition within the horizon
    truncated: torch.Tensor  # [M, N] bool: still alive when the horizon ran out
    discount: torch.Tensor  # [T] float64, γ^t
    gamma: float
    final_obs: torch.Tensor  # [M, N, ...] the state after each episode's last alive step

    @property
    def horizon(self) -> int:
        return self.rewards.shape[2]

    @property
    def reps(self) -> int:
        return self.rewards.shape[0]

    @property
    def batch_size(self) -> int:
        return self.rewards.shape[1]

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum().item())


class Policy(Protocol):
    """A policy class: log π_θ(a|s) as a pure function of a flat θ (so `torch.func` applies)."""

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., *obs_shape], actions [..., *action_shape] → log π [...]."""
        ...

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., *obs_shape] → H(π_θ(·|s)) [...], differentiable in θ."""
        ...


class Problem(ABC):
    """An environment, a policy class, default parameters θ and an explicit objective

    J(θ) = E[Σ_{t<H} γ^t r_{t+1}], each episode stopping at termination.
    """

    name: str
    options: Mapping[str, Any]
    gamma: float
    horizon: int
    policy: Policy
    theta_shape: tuple[int, ...]  # the documented layout; θ is this array flattened row-major
    theta_layout: str
    has_exact_gradient: bool = True
    value_basis: TableBasis | QuadraticBasis | None = None  # the model class of V^π_t, if the suite has one
    stochastic_policy: bool = True  # False for a deterministic policy a = μ_θ(s): no log π, no score

    def unsupported(self, what: str) -> ConfigError:
        return ConfigError(f"env {self.name} has no {what}")

    @property
    def num_params(self) -> int:
        return int(np.prod(self.theta_shape))

    @abstractmethod
    def default_theta(self) -> torch.Tensor:
        """θ [P] float64 the problem is measured at unless told otherwise."""

    @abstractmethod
    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        """Draw `reps` independent batches of `batch_size` trajectories under π_θ. Consecutive
        trajectories form groups of `group_size` (a divisor of batch_size) that share their initial
        state, as GRPO's rollouts from one prompt do; group_size = 1 is plain i.i.d. sampling."""

    @abstractmethod
    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact J(θ), differentiable in θ (float64)."""

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact ∇J(θ) [P]; by default autograd through `objective` in float64."""
        return torch.func.grad(self.objective)(theta.to(torch.float64))

    def oracle_values(self, theta: torch.Tensor) -> ValueFunction:
        """Exact time-indexed V^π_t, t ≤ H (the oracle critic)."""
        raise self.unsupported("exact value function (oracle critic)")

    def entropy_objective(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact E[Σ_{t<H} γ^t H(π_θ(·|s_t))], differentiable in θ: the entropy bonus of the
        regularised objective J_α = J + α · entropy_objective."""
        raise self.unsupported("exact entropy objective")

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact Fisher information of the trajectory distribution, F = E[Σ_t ψ_t ψ_tᵀ] with
        ψ_t = ∇_θ log π_θ(a_t|s_t) (the dynamics do not depend on θ, so the cross terms vanish). [P, P]"""
        raise self.unsupported("exact Fisher matrix")

    def check_theta(self, theta: Any) -> torch.Tensor:
        """θ as a flat float64 tensor, or a ConfigError naming the expected shape."""
        arr = torch.as_tensor(np.asarray(theta, dtype=np.float64))
        if arr.numel() != self.num_params:
            raise ConfigError(
                f"theta has {arr.numel()} values (shape {list(arr.shape)}); {self.name} expects "
                f"{self.num_params}: {self.theta_layout}, shape {list(self.theta_shape)} flattened row-major"
            )
        if not torch.isfinite(arr).all():
            raise ConfigError(f"theta for {self.name} contains non-finite values")
        return arr.reshape(-1).clone()


@dataclass(frozen=True)
class ProblemSpec:
    """A registry entry: how to build a problem from its options."""

    build: Callable[..., Problem]
    options: Mapping[str, Option]
    doc: str


PROBLEMS: Registry[ProblemSpec] = Registry("env")
GYM_PREFIX = "gym:"  # `gym:<id>` names any registered gymnasium environment (envs.gym_vector)


def problem_spec(name: str) -> ProblemSpec:
    """The registry entry of `name`, or for `gym:<id>` the spec envs.gym_vector builds for that id;
    unknown names raise ConfigError listing the valid ones."""
    if name.startswith(GYM_PREFIX):
        from envs.gym_vector import gym_problem_spec  # deferred: envs.gym_vector imports this module

        return gym_problem_spec(name.removeprefix(GYM_PREFIX))
    try:
        return PROBLEMS.get(name)
    except ConfigError as err:
        raise ConfigError(f"{err}, or {GYM_PREFIX}<id> for a registered gymnasium id (e.g. gym:CartPole-v1)") from None


def make_problem(name: str, options: Mapping[str, Any] | None = None) -> Problem:
    """Build a registered problem or `gym:<id>`; unknown names and bad option values raise ConfigError."""
    spec = problem_spec(name)
    resolved = resolve_options(f"env {name}", spec.options, options)
    return spec.build(**resolved)


def stack_steps(reps: int, batch_size: int, obs: list[torch.Tensor], actions: list[torch.Tensor],
                rewards: list[torch.Tensor], alive: list[torch.Tensor], terminated: torch.Tensor,
                alive_at_end: torch.Tensor, final_obs: torch.Tensor, gamma: float) -> Batch:
    """The Batch of a lane-by-lane sampler: per-step lists (one entry per step t < T) of [B, ...]
    tensors over B = reps × batch_size lanes, zero where the lane's episode is over; terminated and
    alive_at_end (= truncated) [B] bool; final_obs [B, ...]."""
    steps, lanes = len(obs), (reps, batch_size)

    def stacked(per_step: list[torch.Tensor]) -> torch.Tensor:  # → [M, N, T, ...]
        out = torch.stack(per_step, 1)
        return out.reshape(*lanes, steps, *out.shape[2:])

    return Batch(
        obs=stacked(obs), actions=stacked(actions), rewards=stacked(rewards),
        mask=stacked(alive).to(torch.float64),
        terminated=terminated.reshape(lanes), truncated=alive_at_end.reshape(lanes),
        discount=discount_vector(gamma, steps), gamma=gamma,
        final_obs=final_obs.reshape(*lanes, *final_obs.shape[1:]),
    )


def grouped(draw: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each of `count / group_size` initial draws repeated for its group: [count/G, ...] → [count, ...]."""
    return draw.repeat_interleave(group_size, dim=0)


def discount_vector(gamma: float, horizon: int) -> torch.Tensor:
    """[T] γ^t for t < horizon, float64."""
    return gamma ** torch.arange(horizon, dtype=torch.float64)
