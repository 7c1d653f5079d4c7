"""Classic-control problems: gymnasium's CartPole, Acrobot, MountainCar (discrete and continuous) and
Pendulum under an MLP policy, simulated by the batched torch versions of `envs.classic`.

No exact gradient exists here: the harness measures against a high-sample reference (`bench.reference`).
θ is one flat vector, by default the seeded PPO-style initialisation of the policy network
(`theta_seed`), or any θ the user passes (`pgvar measure --theta file.npy`).
"""

from __future__ import annotations

import torch

from envs.classic import CLASSIC_ENVS, ClassicEnv, rollout
from envs.policies import ACTIVATIONS, MLPCategorical, MLPGaussian
from envs.problem import PROBLEMS, Batch, Problem, ProblemSpec
from envs.spec import Choice, Float, Int, IntList, Option


class ControlProblem(Problem):
    """A `CLASSIC_ENVS` environment, an MLP policy (categorical for discrete actions, diagonal Gaussian
    for continuous ones) and J(θ) = E[Σ_{t<H} γ^t r_{t+1}] over episodes cut at H ≤ max_episode_steps."""

    has_exact_gradient = False

    def __init__(self, name: str, env_id: str, hidden: tuple[int, ...], activation: str, horizon: int,
                 gamma: float, theta_seed: int):
        self.name, self.env_id = name, env_id
        self.env: ClassicEnv = CLASSIC_ENVS[env_id]
        self.horizon = horizon
        self.options = {"hidden": hidden, "activation": activation, "horizon": horizon, "gamma": gamma,
                        "theta_seed": theta_seed}
        self.gamma, self.theta_seed = gamma, theta_seed
        if self.env.num_actions:
            self.policy = MLPCategorical(self.env.observation_dim, hidden, self.env.num_actions, activation)
            head = f"softmax over {self.env.num_actions} actions"
        else:
            self.policy = MLPGaussian(self.env.observation_dim, hidden, 1, activation)
            head = "Gaussian mean, then log σ"
        self.theta_shape = (self.policy.num_params,)
        widths = " → ".join(map(str, (self.env.observation_dim, *hidden, self.policy.net.out_dim)))
        self.theta_layout = (f"MLP {widths} ({activation}; {head}): per layer W [out, in] row-major then b "
                             "[out], torch.nn.Sequential order" + ("" if self.env.num_actions else ", then log σ"))

    def default_theta(self) -> torch.Tensor:
        """The PPO-style initialisation drawn from `theta_seed` (orthogonal weights, near-uniform policy)."""
        return self.policy.init_theta(torch.Generator().manual_seed(self.theta_seed))

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        return rollout(self.env_id, self.policy, theta, reps, batch_size, generator, self.horizon, self.gamma,
                       group_size)

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        raise self.unsupported("exact objective J(θ) (it is estimated with the sampled reference)")

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        raise self.unsupported("exact gradient (measurements use a sampled reference)")


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
        "sampled reference",
    ))


_register("cartpole", "CartPole-v1", "balance a pole, +1 per step")
_register("acrobot", "Acrobot-v1", "swing a two-link arm up, −1 per step")
_register("mountaincar", "MountainCar-v0", "drive up a hill, −1 per step")
_register("mountaincar-continuous", "MountainCarContinuous-v0", "continuous force, +100 at the goal")
_register("pendulum", "Pendulum-v1", "swing up and hold, −cost per step")
