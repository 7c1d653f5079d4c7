"""The `Batch` of trajectories, the `Problem` interface, and the problem registry.

Shapes: M replicate batches, N trajectories per batch, T time steps, P parameters.
"""

from __future__ import annotations

import enum
import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol

import numpy as np
import torch

from envs.spec import Config, ConfigError, Registry
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
    gamma: float
    final_obs: torch.Tensor  # [M, N, ...] the state after each episode's last alive step

    @property
    def truncated(self) -> torch.Tensor:
        """[M, N] bool: still alive when the horizon ran out (an episode that did not terminate)."""
        return ~self.terminated

    @functools.cached_property
    def discount(self) -> torch.Tensor:
        """[T] float64, γ^t."""
        return discount_vector(self.gamma, self.steps)

    @property
    def steps(self) -> int:
        """T, the padded length: the longest episode of the batch (≤ the problem's horizon H)."""
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


class Capability(enum.Enum):
    """What a problem can provide beyond sampling. A problem declares the set it has (`Problem.capabilities`);
    estimators and the harness ask through `Problem.supports` / `Problem.require`, never by type or method
    identity. The value is how a message names it."""

    EXACT_GRADIENT = "exact objective J(θ) and gradient ∇J (else the reference is sampled)"
    STOCHASTIC_POLICY = "stochastic policy (∇ log π)"
    DETERMINISTIC_POLICY = "deterministic policy with continuous actions, a = μ_θ(s)"
    ORACLE_VALUES = "exact value function (oracle critic)"
    VALUE_BASIS = "value model for a critic"
    ENTROPY_OBJECTIVE = "exact entropy objective"
    FISHER = "exact Fisher matrix"
    ACTION_VALUES = "exact action values Q_t(x, u)"
    EXPLORATORY_TWIN = "Gaussian-policy twin to explore around μ_θ"
    OPTIMUM = "exact optimal objective J* (normalized training scores)"


# Sampling is done in chunks so memory stays bounded by bytes, whatever the observation size (a Humanoid-size
# observation makes a trajectory megabytes): a chunk's rough peak (`Problem.chunk_bytes`) stays within CHUNK_BYTES.
CHUNK_BYTES = 2**29
GRADIENT_COPIES = 3  # per-trajectory gradient entries [M_chunk, N, P] are held with their weighted copies and baselines


class Problem(ABC):
    """An environment, a policy class, default parameters θ and an explicit objective

    J(θ) = E[Σ_{t<H} γ^t r_{t+1}], each episode stopping at termination.

    A problem is built from its frozen `config` (a registered `ProblemConfig`), which is its options.
    """

    name: str
    config: ProblemConfig
    gamma: float
    horizon: int
    policy: Policy
    theta_shape: tuple[int, ...]  # the documented layout; θ is this array flattened row-major
    theta_layout: str
    capabilities: frozenset[Capability] = frozenset({Capability.EXACT_GRADIENT, Capability.STOCHASTIC_POLICY})
    value_basis: TableBasis | QuadraticBasis | None = None  # the model class of V^π_t (with VALUE_BASIS)

    @property
    def options(self) -> dict[str, Any]:
        return self.config.as_dict()

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, who: str = "", because: str = "") -> None:
        """ConfigError naming `who` (e.g. "estimator natural"), the missing capability and why it is needed,
        unless the problem declares it."""
        if capability not in self.capabilities:
            prefix = f"{who}: " if who else ""
            raise ConfigError(f"{prefix}env {self.name} has no {capability.value}" + (f", {because}" if because else ""))

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
        self.require(Capability.ORACLE_VALUES)
        raise NotImplementedError(f"{self.name} declares {Capability.ORACLE_VALUES.value} but does not implement it")

    def entropy_objective(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact E[Σ_{t<H} γ^t H(π_θ(·|s_t))], differentiable in θ: the entropy bonus of the
        regularised objective J_α = J + α · entropy_objective."""
        self.require(Capability.ENTROPY_OBJECTIVE)
        raise NotImplementedError(f"{self.name} declares {Capability.ENTROPY_OBJECTIVE.value} but does not implement it")

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact Fisher information of the trajectory distribution, F = E[Σ_t ψ_t ψ_tᵀ] with
        ψ_t = ∇_θ log π_θ(a_t|s_t) (the dynamics do not depend on θ, so the cross terms vanish). [P, P]"""
        self.require(Capability.FISHER)
        raise NotImplementedError(f"{self.name} declares {Capability.FISHER.value} but does not implement it")

    def action_values(self, theta: torch.Tensor) -> Any:
        """Exact time-indexed action values Q_t, t < H (the deterministic policy gradient's oracle critic)."""
        self.require(Capability.ACTION_VALUES)
        raise NotImplementedError(f"{self.name} declares {Capability.ACTION_VALUES.value} but does not implement it")

    def exploratory_twin(self, theta: torch.Tensor, exploration: float) -> tuple[Problem, torch.Tensor]:
        """The same problem under a stochastic policy that adds N(0, σ_e²) noise to μ_θ (σ_e = `exploration`), and
        its parameters θ_b: the behaviour a critic of the deterministic policy is fitted on."""
        self.require(Capability.EXPLORATORY_TWIN)
        raise NotImplementedError(f"{self.name} declares {Capability.EXPLORATORY_TWIN.value} but does not implement it")

    def optimal_objective(self) -> float:
        """J* = sup over policies of J, computed exactly (closed forms, backward induction, the Riccati recursion):
        the 1 of a normalized training score s = (J(θ) − J(θ₀)) / (J* − J(θ₀))."""
        self.require(Capability.OPTIMUM)
        raise NotImplementedError(f"{self.name} declares {Capability.OPTIMUM.value} but does not implement it")

    def arm_outcome(self, theta: torch.Tensor) -> str:
        """Where a policy of a problem with arms has settled: "optimal" or "sub-optimal" once one arm holds
        ≥ 0.9 of it (envs.bandits.SETTLED_PROBABILITY), else "undecided"; "" for problems without arms (the default)."""
        return ""

    def check_theta(self, theta: Any) -> torch.Tensor:
        """θ as a flat float64 tensor from real numbers (floating or integer) of the documented `theta_shape` or
        flat [P], all finite; anything else is a ConfigError naming the expected shape. Booleans, strings,
        records and complex numbers are refused rather than converted: each would lose or invent values."""
        if isinstance(theta, torch.Tensor):
            arr = theta.detach().cpu()
            real = not (arr.is_complex() or arr.dtype == torch.bool)
        else:
            try:
                arr = np.asarray(theta)
            except ValueError as err:  # a ragged nesting of lists
                raise ConfigError(f"theta for {self.name} is not an array of numbers ({err})") from None
            real = arr.dtype.kind in "fiu"
        if not real:
            raise ConfigError(f"theta for {self.name} has dtype {arr.dtype}; expected real floating or integer numbers")
        shape = tuple(arr.shape)
        expected = f"{self.num_params}: {self.theta_layout}, shape {list(self.theta_shape)} flattened row-major"
        if math.prod(shape) != self.num_params:
            raise ConfigError(f"theta has {math.prod(shape)} values (shape {list(shape)}); {self.name} expects {expected}")
        if shape not in (tuple(self.theta_shape), (self.num_params,)):
            raise ConfigError(f"theta has shape {list(shape)}; {self.name} expects shape {list(self.theta_shape)} "
                              f"or flat [{self.num_params}] ({self.theta_layout}), not another arrangement of its "
                              "values")
        flat = (arr.to(torch.float64) if isinstance(arr, torch.Tensor)
                else torch.from_numpy(arr.astype(np.float64))).reshape(-1).clone()
        if not torch.isfinite(flat).all():
            bad = int((~torch.isfinite(flat)).nonzero()[0, 0])
            raise ConfigError(f"theta for {self.name} contains non-finite values ({self.parameter_name(bad)} = "
                              f"{flat[bad].item()})")
        return flat

    def parameter_name(self, index: int) -> str:
        """The name of coordinate `index` of the flat θ in the documented layout, e.g. θ[3, 1] for [S, A]."""
        if len(self.theta_shape) < 2:
            return f"θ[{index}]"
        return "θ[" + ", ".join(map(str, np.unravel_index(index, self.theta_shape))) + "]"

    def check_objective(self, theta: torch.Tensor, objective: float, gradient: np.ndarray) -> None:
        """ConfigError unless J(θ) and ∇J(θ) [P] are finite, naming the coordinates of θ to blame: those
        where ∇J is not finite, else the largest in magnitude (an overflow of e^{2s} on the Gaussian bandit)."""
        finite = np.isfinite(gradient)
        if math.isfinite(objective) and finite.all():
            return
        blamed = np.flatnonzero(~finite) if not finite.all() else np.argsort(-np.abs(theta.numpy()))
        named = ", ".join(f"{self.parameter_name(int(i))} = {theta[int(i)].item():g}" for i in blamed[:3])
        more = f" and {len(blamed) - 3} more" if len(blamed) > 3 and not finite.all() else ""
        raise ConfigError(f"theta for {self.name} makes the objective non-finite (J(θ) = {objective:g}, ∇J non-finite "
                          f"in {int((~finite).sum())} of {len(gradient)} coordinates) at {named}{more} "
                          f"({self.theta_layout}); choose a θ where J is finite")

    def check_policy_outputs(self, theta: torch.Tensor) -> None:
        """ConfigError if the policy at θ [P] computes non-finite outputs, for a problem whose objective is
        not computed exactly (the exact ones are checked by `check_objective`); by default nothing to check."""

    # Memory the problem's data structures, exact objective and gradient take, estimated from the options
    # before they are built (envs/memory.py): the builders refuse what would not fit.
    memory_bytes: float = 0.0
    step_values: int = 4  # 8-byte values per trajectory step in a chunk: obs, action, reward, mask (and the
    # per-step outputs of the policy that a gradient keeps)
    lane_bytes: float = 0.0  # temporaries of one sampler step, per trajectory

    def sample_bytes(self, trajectories: int) -> float:
        """Rough upper bound on the bytes a chunk of `trajectories` (M_chunk × N) holds while it is sampled and
        its gradients computed: every trajectory alive for H steps, its per-step records held twice (the step
        lists and the stacked Batch, or the values and their gradients)."""
        return trajectories * (16.0 * self.horizon * self.step_values + self.lane_bytes)

    def chunk_bytes(self, trajectories: int) -> float:
        """`sample_bytes(trajectories)` plus their per-trajectory gradients [trajectories, P] float64, held with
        their weighted copies and baselines (GRADIENT_COPIES): the rough peak of one chunk."""
        return self.sample_bytes(trajectories) + 8.0 * GRADIENT_COPIES * trajectories * self.num_params

    def chunk_units(self, unit: int, units: int) -> int:
        """How many units of `unit` trajectories (a batch of N; one trajectory of a fit) one chunk holds: as many
        as fit in CHUNK_BYTES by `chunk_bytes`, at least one, at most `units`. It depends only on the sizes, so
        what is drawn chunk by chunk depends only on the configuration and the seed."""
        return max(1, min(units, int(CHUNK_BYTES // self.chunk_bytes(unit))))


@dataclass(frozen=True)
class ProblemConfig(Config):
    """The options of one problem as a frozen, typed record (fields declared with `envs.spec.option`);
    `build` makes the problem. Registered in PROBLEMS by `@PROBLEMS.entry(name)`."""

    kind: ClassVar[str] = "env"
    doc: ClassVar[str] = ""

    @abstractmethod
    def build(self) -> Problem:
        """The problem these options describe (ConfigError if it cannot be built, e.g. too large)."""


PROBLEMS: Registry[type[ProblemConfig]] = Registry("env")


@dataclass(frozen=True)
class ProblemFamily:
    """Names `<prefix><rest>` served by one module rather than registered one by one (envs.gym_vector:
    `gym:<id>` for any registered gymnasium id): `config_class(rest)` makes the entry, `hint` completes the error
    of an unknown name."""

    config_class: Callable[[str], type[ProblemConfig]]
    hint: str


FAMILIES: dict[str, ProblemFamily] = {}  # prefix → family, registered by the module that serves it


def problem_config_class(name: str) -> type[ProblemConfig]:
    """The registered config class of `name`, or for a family's `<prefix><rest>` (e.g. `gym:<id>`) the class its
    module makes; unknown names raise ConfigError listing the valid ones."""
    for prefix, family in FAMILIES.items():
        if name.startswith(prefix):
            return family.config_class(name.removeprefix(prefix))
    try:
        return PROBLEMS.get(name)
    except ConfigError as err:
        raise ConfigError(f"{err}" + "".join(f", or {family.hint}" for family in FAMILIES.values())) from None


def make_problem(name: str, options: Mapping[str, Any] | None = None) -> Problem:
    """Build a registered problem or a family's (`gym:<id>`); unknown names and bad option values raise ConfigError."""
    return problem_config_class(name).parse(options).build()


def stack_steps(reps: int, batch_size: int, obs: list[torch.Tensor], actions: list[torch.Tensor],
                rewards: list[torch.Tensor], alive: list[torch.Tensor], terminated: torch.Tensor,
                final_obs: torch.Tensor, gamma: float) -> Batch:
    """The Batch of a lane-by-lane sampler: per-step lists (one entry per step t < T) of [B, ...]
    tensors over B = reps × batch_size lanes, zero where the lane's episode is over; terminated [B] bool
    (the others were alive when the horizon ran out); final_obs [B, ...]."""
    steps, lanes = len(obs), (reps, batch_size)

    def stacked(per_step: list[torch.Tensor]) -> torch.Tensor:  # → [M, N, T, ...]
        out = torch.stack(per_step, 1)
        return out.reshape(*lanes, steps, *out.shape[2:])

    return Batch(
        obs=stacked(obs), actions=stacked(actions), rewards=stacked(rewards),
        mask=stacked(alive).to(torch.float64),
        terminated=terminated.reshape(lanes), gamma=gamma,
        final_obs=final_obs.reshape(*lanes, *final_obs.shape[1:]),
    )


def grouped(draw: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each of `count / group_size` initial draws repeated for its group: [count/G, ...] → [count, ...]."""
    return draw.repeat_interleave(group_size, dim=0)


def discount_vector(gamma: float, horizon: int) -> torch.Tensor:
    """[T] γ^t for t < horizon, float64."""
    return gamma ** torch.arange(horizon, dtype=torch.float64)
