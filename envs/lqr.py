"""Finite-horizon linear-quadratic control with a linear-Gaussian policy.

    x_0 ~ N(0, I),   x_{t+1} = A x_t + B u_t + w_t,   w_t ~ N(0, ν² I),   r_{t+1} = −(x_tᵀ Q x_t + u_tᵀ R u_t)
    u_t = −K x_t + σ ε_t,   θ = [K (row-major), log σ],   Q = I,   R = 0.1 I

J(θ) = Σ_{t<H} γ^t E[r_{t+1}] is exact: the closed loop keeps x_t Gaussian with mean 0 and
covariance Σ_{t+1} = (A − BK) Σ_t (A − BK)ᵀ + σ² B Bᵀ + ν² I, so
E[r_{t+1}] = −tr(Q Σ_t) − tr(R (K Σ_t Kᵀ + σ² I)); ∇J by autograd through it in float64.
A and B are drawn once from `system_seed`: B standard normal, A standard normal rescaled to
spectral radius 0.95.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.policies import LinearGaussian
from envs.problem import PROBLEMS, Batch, Problem, ProblemSpec, discount_vector, grouped
from envs.spec import Float, Int, Option

ACTION_COST = 0.1  # R = ACTION_COST · I


class LinearQuadratic(Problem):
    name = "lqr"
    theta_layout = "[K row-major (action_dim × state_dim), log σ]"

    def __init__(self, state_dim: int, action_dim: int, horizon: int, gamma: float, noise: float, system_seed: int):
        self.options = dict(state_dim=state_dim, action_dim=action_dim, horizon=horizon, gamma=gamma, noise=noise,
                             system_seed=system_seed)
        self.horizon, self.gamma, self.noise = horizon, gamma, noise
        rng = np.random.default_rng(system_seed)
        a = rng.normal(size=(state_dim, state_dim))
        a *= 0.95 / max(abs(np.linalg.eigvals(a)).max(), 1e-12)
        self.dynamics = torch.as_tensor(a)  # A [dx, dx]
        self.control = torch.as_tensor(rng.normal(size=(state_dim, action_dim)))  # B [dx, du]
        self.state_cost = torch.eye(state_dim, dtype=torch.float64)  # Q
        self.action_cost = ACTION_COST * torch.eye(action_dim, dtype=torch.float64)  # R
        self.policy = LinearGaussian(state_dim, action_dim)
        self.theta_shape = (action_dim * state_dim + 1,)

    def default_theta(self) -> torch.Tensor:
        return torch.zeros(self.num_params, dtype=torch.float64)  # K = 0, σ = 1

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        gain, variance = self.policy.gain(theta), torch.exp(2 * theta[-1])
        closed = self.dynamics - self.control @ gain
        drive = variance * self.control @ self.control.T + self.noise**2 * torch.eye(len(closed), dtype=theta.dtype)
        cov = torch.eye(len(closed), dtype=theta.dtype)  # Σ_0
        total = theta.new_zeros(())
        for t in range(self.horizon):
            action_second_moment = gain @ cov @ gain.T + variance * torch.eye(len(gain), dtype=theta.dtype)
            reward = -torch.trace(self.state_cost @ cov) - torch.trace(self.action_cost @ action_second_moment)
            total = total + self.gamma**t * reward
            cov = closed @ cov @ closed.T + drive
        return total

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        theta = theta.detach()
        gain, std = self.policy.gain(theta), torch.exp(theta[-1])
        shape = (reps, batch_size)
        dx, du = self.dynamics.shape[0], gain.shape[0]
        initial = torch.randn(reps * batch_size // group_size, dx, dtype=torch.float64, generator=generator)
        state = grouped(initial, group_size).reshape(*shape, dx)
        states, actions, rewards = [], [], []
        for _ in range(self.horizon):
            action = -state @ gain.T + std * torch.randn(*shape, du, dtype=torch.float64, generator=generator)
            reward = -(state @ self.state_cost * state).sum(-1) - (action @ self.action_cost * action).sum(-1)
            states.append(state)
            actions.append(action)
            rewards.append(reward)
            noise = self.noise * torch.randn(*shape, dx, dtype=torch.float64, generator=generator)
            state = state @ self.dynamics.T + action @ self.control.T + noise
        return Batch(
            obs=torch.stack(states, 2), actions=torch.stack(actions, 2), rewards=torch.stack(rewards, 2),
            mask=torch.ones(*shape, self.horizon, dtype=torch.float64),
            terminated=torch.zeros(shape, dtype=torch.bool), truncated=torch.ones(shape, dtype=torch.bool),
            discount=discount_vector(self.gamma, self.horizon), gamma=self.gamma,
        )


PROBLEMS.register("lqr", ProblemSpec(
    LinearQuadratic,
    {
        "state_dim": Option(Int(1, 100), 2, "dimension of x"),
        "action_dim": Option(Int(1, 100), 1, "dimension of u"),
        "horizon": Option(Int(1, 10_000), 20, "horizon H"),
        "gamma": Option(Float(0.0, 1.0), 0.99, "discount γ of the objective"),
        "noise": Option(Float(0.0), 0.1, "standard deviation ν of the process noise w"),
        "system_seed": Option(Int(0), 0, "seed of the random system (A, B)"),
    },
    "finite-horizon LQR, linear-Gaussian policy u = −Kx + σε, θ = [K, log σ] (default K = 0, σ = 1)",
))
