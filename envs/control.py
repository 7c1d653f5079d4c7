"""Classic-control problems: gymnasium's CartPole, Acrobot, MountainCar (discrete and continuous) and
Pendulum under an MLP policy, simulated by the batched torch versions of `envs.classic`.

No exact gradient exists here: the harness measures against a high-sample reference (`bench.reference`).
θ is one flat vector, by default the seeded PPO-style initialisation of the policy network
(`theta_seed`), or any θ the user passes (`pgvar measure --theta file.npy`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from envs.classic import CLASSIC_ENVS, ClassicEnv, rollout
from envs.memory import MEMORY_FRACTION, check_bytes
from envs.policies import ACTIVATIONS, MLP, MLPCategorical, MLPGaussian
from envs.problem import PROBLEMS, Batch, Capability, Problem, ProblemConfig
from envs.spec import Choice, ConfigError, Int, IntList, Option, option, reuse
from envs.tabular import GAMMA


# Bytes per parameter of an MLP problem before any batch: θ, its orthogonal initialisation (a QR of each
# weight matrix; measured 38 B per parameter at hidden = 2000,2000) and the [P] gradients and moments.
PARAM_BYTES = 48


HIDDEN = Option(IntList(1), (64, 64), "hidden layer widths of the policy MLP")
ACTIVATION = Option(Choice(tuple(ACTIVATIONS)), "tanh", "activation after each hidden layer")
THETA_SEED = Option(Int(0), 0, "seed of the default θ (orthogonal PPO-style initialisation)")
DTYPES = ("float32", "float64")  # names of torch dtypes (`getattr(torch, name)` when a problem is built)
# float32 halves the bytes and roughly doubles the throughput of the policy's matmuls and activations; its effect
# on an estimate is bounded and shown far below the estimate's standard error (tests/test_float32.py).
DTYPE = Option(Choice(DTYPES), "float32", "precision of the policy network in rollouts and of the packed "
               "gradient (the physics, rewards and returns stay float64)")


def time_limit_horizon(steps: int) -> Option:
    """The horizon option of an environment whose TimeLimit is `steps`: H ≤ steps, by default steps."""
    return Option(Int(1, steps), steps, f"horizon H (≤ the TimeLimit, {steps})")


@dataclass(frozen=True)
class MLPProblemConfig(ProblemConfig):
    """The options of a simulated problem under an MLP policy (the problems here and `gym:<id>`). The horizon's
    range and default are each environment's: its config class is made by `with_horizon`."""

    hidden: tuple[int, ...] = reuse(HIDDEN)
    activation: str = reuse(ACTIVATION)
    horizon: int = option(Int(1), 1, "horizon H")  # replaced by each environment's (`with_horizon`)
    gamma: float = reuse(GAMMA)
    theta_seed: int = reuse(THETA_SEED)
    dtype: str = reuse(DTYPE)


def with_horizon(base: type[MLPProblemConfig], class_name: str, horizon: Option,
                 **class_vars: Any) -> type[MLPProblemConfig]:
    """The frozen subclass `class_name` of `base` whose `horizon` option is `horizon` (the field keeps its place
    among the options) and whose class variables (`doc`, the environment's id…) are `class_vars`."""
    namespace = {"__module__": base.__module__, "__qualname__": class_name, **class_vars}
    return dataclasses.make_dataclass(class_name, [("horizon", int, reuse(horizon))], bases=(base,), frozen=True,
                                      namespace=namespace)


class MLPProblem(Problem):
    """A simulator under an MLP policy: no exact objective (measured against a sampled reference), θ by
    default the seeded PPO-style initialisation. Built from an `MLPProblemConfig` and the environment's
    spaces (`__init__`)."""

    capabilities = frozenset({Capability.STOCHASTIC_POLICY})
    mlp_policy: MLPCategorical | MLPGaussian

    def __init__(self, config: MLPProblemConfig, obs_dim: int, inputs: str, discrete_actions: int,
                 action_dim: int) -> None:
        """The options (`config`), horizon, γ and the policy: a softmax over `discrete_actions` actions if
        non-zero, else a diagonal Gaussian over `action_dim`; `inputs` names the network's input in the θ layout."""
        self.config, self.name = config, config.name
        self.horizon, self.gamma, self.theta_seed = config.horizon, config.gamma, config.theta_seed
        self.dtype = getattr(torch, config.dtype)  # the policy network's (`DTYPE`)
        hidden, activation = config.hidden, config.activation
        outputs = discrete_actions or action_dim
        params = MLP(obs_dim, hidden, outputs).num_params + (0 if discrete_actions else action_dim)
        self.memory_bytes = PARAM_BYTES * params
        check_bytes(self.memory_bytes, f"env {self.name} with hidden={','.join(map(str, hidden))} ({params:.3g} "
                    "parameters: θ, its initialisation and gradients)", "the hidden layer widths")
        self.step_values = obs_dim + (1 if discrete_actions else action_dim) + 2 + outputs
        self.lane_bytes = 24.0 * (sum(hidden) + outputs)  # the policy's forward pass at one sampler step
        if discrete_actions:
            self.mlp_policy = MLPCategorical(obs_dim, hidden, discrete_actions, activation)
            head = f"softmax over {discrete_actions} actions"
        else:
            self.mlp_policy = MLPGaussian(obs_dim, hidden, action_dim, activation)
            head = "Gaussian mean, then log σ"
        self.theta_shape = (self.mlp_policy.num_params,)
        widths = " → ".join(map(str, (inputs, *hidden, self.mlp_policy.net.out_dim)))
        self.theta_layout = (f"MLP {widths} ({activation}; {head}): per layer W [out, in] row-major then b [out], "
                             "torch.nn.Sequential order" + ("" if discrete_actions else ", then log σ"))

    def default_theta(self) -> torch.Tensor:
        """The PPO-style initialisation drawn from `theta_seed` (orthogonal weights, near-uniform policy)."""
        return self.mlp_policy.init_theta(torch.Generator().manual_seed(self.theta_seed))

    def check_policy_outputs(self, theta: torch.Tensor) -> None:
        """The network's outputs (and σ = e^ℓ for the Gaussian) at a few standard-normal inputs must be finite
        and σ > 0: else every sampled action, log π and reference estimate is NaN."""
        obs = torch.randn(8, self.mlp_policy.obs_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            outputs = [self.mlp_policy.net(theta, obs).reshape(-1)]
            if isinstance(self.mlp_policy, MLPGaussian):
                std = torch.exp(self.mlp_policy.log_std(theta))
                outputs.append(torch.where(std > 0, std, torch.nan))
        if not torch.isfinite(torch.cat(outputs)).all():
            largest = int(theta.abs().argmax())
            raise ConfigError(f"theta for {self.name} makes the policy's outputs non-finite (the largest entry is "
                              f"{self.parameter_name(largest)} = {theta[largest].item():g}; {self.theta_layout}); "
                              "choose a θ of moderate size")

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """No exact J(θ) here, a ConfigError: it is estimated with the sampled reference."""
        self.require(Capability.EXACT_GRADIENT)
        raise NotImplementedError

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """No exact ∇J here, a ConfigError: measurements use a sampled reference."""
        self.require(Capability.EXACT_GRADIENT)
        raise NotImplementedError


class ControlProblem(MLPProblem):
    """A `CLASSIC_ENVS` environment, an MLP policy (categorical for discrete actions, diagonal Gaussian
    for continuous ones) and J(θ) = E[Σ_{t<H} γ^t r_{t+1}] over episodes cut at H ≤ max_episode_steps."""

    def __init__(self, config: ControlConfig):
        self.env_id = config.env_id
        self.env: ClassicEnv = CLASSIC_ENVS[self.env_id]
        dim = self.env.observation_dim
        super().__init__(config, dim, str(dim), self.env.num_actions, 1)
        self.policy = self.mlp_policy

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        return rollout(self.env_id, self.policy, theta, reps, batch_size, generator, self.horizon, self.gamma,
                       group_size, self.dtype)


@dataclass(frozen=True)
class ControlConfig(MLPProblemConfig):
    """A `CLASSIC_ENVS` environment's options; each registered problem's subclass (`_register`) names the env and
    bounds the horizon by its TimeLimit."""

    env_id: ClassVar[str]

    def build(self) -> ControlProblem:
        return ControlProblem(self)


def _register(name: str, env_id: str, what: str) -> None:
    env = CLASSIC_ENVS[env_id]
    steps = env.params.max_episode_steps
    policy = f"softmax over {env.num_actions} actions" if env.num_actions else "diagonal Gaussian, θ ends with log σ"
    doc = (f"gymnasium {env_id} ({what}), batched in torch; MLP policy ({policy}); no exact gradient: "
           f"sampled reference; refused when θ and its gradients, ≈ {PARAM_BYTES}·P bytes, exceed "
           f"{MEMORY_FRACTION:.0%} of the available memory")
    class_name = "".join(part.title() for part in name.split("-")) + "Config"  # CartpoleConfig, …
    config_class = with_horizon(ControlConfig, class_name, time_limit_horizon(steps), env_id=env_id, doc=doc)
    globals()[class_name] = PROBLEMS.entry(name)(config_class)  # module-level, so its configs pickle


_register("cartpole", "CartPole-v1", "balance a pole, +1 per step")
_register("acrobot", "Acrobot-v1", "swing a two-link arm up, −1 per step")
_register("mountaincar", "MountainCar-v0", "drive up a hill, −1 per step")
_register("mountaincar-continuous", "MountainCarContinuous-v0", "continuous force, +100 at the goal")
_register("pendulum", "Pendulum-v1", "swing up and hold, −cost per step")
