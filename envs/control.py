"""Classic-control problems: gymnasium's CartPole, Acrobot, MountainCar (discrete and continuous) and
Pendulum under an MLP policy, simulated by the batched torch versions of `envs.classic`.

No exact gradient exists here: the harness measures against a high-sample reference (`bench.reference`).
θ is one flat vector, by default the seeded PPO-style initialisation of the policy network
(`theta_seed`), or any θ the user passes (`pgvar measure --theta file.npy`).
"""

from __future__ import annotations

import torch

from envs.classic import CLASSIC_ENVS, ClassicEnv, rollout
from envs.memory import MEMORY_FRACTION, check_bytes
from envs.policies import ACTIVATIONS, MLP, MLPCategorical, MLPGaussian
from envs.problem import PROBLEMS, Batch, Problem, ProblemSpec
from envs.spec import Choice, ConfigError, Float, Int, IntList, Option


# Bytes per parameter of an MLP problem before any batch: θ, its orthogonal initialisation (a QR of each
# weight matrix; measured 38 B per parameter at hidden = 2000,2000) and the [P] gradients and moments.
PARAM_BYTES = 48


class MLPProblem(Problem):
    """A simulator under an MLP policy: no exact objective (measured against a sampled reference), θ by
    default the seeded PPO-style initialisation. Subclasses set the problem's fields through `_set_up`."""

    has_exact_gradient = False
    mlp_policy: MLPCategorical | MLPGaussian

    def _set_up(self, name: str, obs_dim: int, inputs: str, discrete_actions: int, action_dim: int,
                hidden: tuple[int, ...], activation: str, horizon: int, gamma: float, theta_seed: int,
                **more_options) -> None:
        """Options, horizon, γ and the policy: a softmax over `discrete_actions` actions if non-zero, else a
        diagonal Gaussian over `action_dim`; `inputs` names the network's input in the θ layout."""
        self.name, self.horizon, self.gamma, self.theta_seed = name, horizon, gamma, theta_seed
        outputs = discrete_actions or action_dim
        params = MLP(obs_dim, hidden, outputs).num_params + (0 if discrete_actions else action_dim)
        self.memory_bytes = PARAM_BYTES * params
        check_bytes(self.memory_bytes, f"env {name} with hidden={','.join(map(str, hidden))} ({params:.3g} "
                    "parameters: θ, its initialisation and gradients)", "the hidden layer widths")
        self.step_values = obs_dim + (1 if discrete_actions else action_dim) + 2 + outputs
        self.lane_bytes = 24.0 * (sum(hidden) + outputs)  # the policy's forward pass at one sampler step
        self.options = {"hidden": hidden, "activation": activation, "horizon": horizon, "gamma": gamma,
                        "theta_seed": theta_seed, **more_options}
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
        raise self.unsupported("exact objective J(θ) (it is estimated with the sampled reference)")

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        raise self.unsupported("exact gradient (measurements use a sampled reference)")


class ControlProblem(MLPProblem):
    """A `CLASSIC_ENVS` environment, an MLP policy (categorical for discrete actions, diagonal Gaussian
    for continuous ones) and J(θ) = E[Σ_{t<H} γ^t r_{t+1}] over episodes cut at H ≤ max_episode_steps."""

    def __init__(self, name: str, env_id: str, hidden: tuple[int, ...], activation: str, horizon: int,
                 gamma: float, theta_seed: int):
        self.env_id = env_id
        self.env: ClassicEnv = CLASSIC_ENVS[env_id]
        dim = self.env.observation_dim
        self._set_up(name, dim, str(dim), self.env.num_actions, 1, hidden, activation, horizon, gamma, theta_seed)
        self.policy = self.mlp_policy

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        return rollout(self.env_id, self.policy, theta, reps, batch_size, generator, self.horizon, self.gamma,
                       group_size)


def mlp_problem_options(horizon: Option) -> dict[str, Option]:
    """The options of a simulated problem under an MLP policy (here and `gym:<id>`), its horizon given."""
    return {
        "hidden": Option(IntList(1), (64, 64), "hidden layer widths of the policy MLP"),
        "activation": Option(Choice(tuple(ACTIVATIONS)), "tanh", "activation after each hidden layer"),
        "horizon": horizon,
        "gamma": Option(Float(0.0, 1.0), 0.99, "discount γ of the objective"),
        "theta_seed": Option(Int(0), 0, "seed of the default θ (orthogonal PPO-style initialisation)"),
    }


def _register(name: str, env_id: str, what: str) -> None:
    env = CLASSIC_ENVS[env_id]
    steps = env.params.max_episode_steps

    def build(hidden, activation, horizon, gamma, theta_seed):
        return ControlProblem(name, env_id, hidden, activation, horizon, gamma, theta_seed)

    policy = f"softmax over {env.num_actions} actions" if env.num_actions else "diagonal Gaussian, θ ends with log σ"
    PROBLEMS.register(name, ProblemSpec(
        build,
        mlp_problem_options(Option(Int(1, steps), steps, f"horizon H (≤ the TimeLimit, {steps})")),
        f"gymnasium {env_id} ({what}), batched in torch; MLP policy ({policy}); no exact gradient: "
        f"sampled reference; refused when θ and its gradients, ≈ {PARAM_BYTES}·P bytes, exceed "
        f"{MEMORY_FRACTION:.0%} of the available memory",
    ))


_register("cartpole", "CartPole-v1", "balance a pole, +1 per step")
_register("acrobot", "Acrobot-v1", "swing a two-link arm up, −1 per step")
_register("mountaincar", "MountainCar-v0", "drive up a hill, −1 per step")
_register("mountaincar-continuous", "MountainCarContinuous-v0", "continuous force, +100 at the goal")
_register("pendulum", "Pendulum-v1", "swing up and hold, −cost per step")
