"""Finite-horizon linear-quadratic control with a linear policy, Gaussian or deterministic.

    x_0 ~ N(0, I),   x_{t+1} = A x_t + B u_t + w_t,   w_t ~ N(0, ν² I),   r_{t+1} = −(x_tᵀ Q x_t + u_tᵀ R u_t)
    policy=gaussian:        u_t = −K x_t + σ ε_t,    θ = [K (row-major), log σ]
    policy=deterministic:   u_t = μ_θ(x_t) = −K x_t,  θ = K (row-major)
    Q = I,   R = 0.1 I

Everything exact is one set of recursions in the action-noise variance σ² (σ² = 0 for the
deterministic policy). The closed loop keeps x_t Gaussian with mean 0 and covariance
Σ_{t+1} = (A − BK) Σ_t (A − BK)ᵀ + σ² B Bᵀ + ν² I, so E[r_{t+1}] = −tr(Q Σ_t) − tr(R (K Σ_t Kᵀ + σ² I))
gives J(θ), and ∇J by autograd through it in float64; V_t and Q_t follow from the backward
recursion (`oracle_values`, `action_values`); the deterministic policy's Gaussian twin
u = −Kx + σ_e ε (`exploratory_twin`) is the behaviour a fitted critic explores with. A and B are
drawn once from `system_seed`: B standard normal, A standard normal rescaled to spectral radius 0.95.
The optimum J* over all policies (`optimal_objective`) is the discounted finite-horizon Riccati recursion with
time-varying gains K_t (`optimal_recursion`); no stationary linear policy need reach it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from envs.memory import MEMORY_FRACTION, check_bytes
from envs.policies import LinearDeterministic, LinearGaussian
from envs.problem import PROBLEMS, Batch, Capability, Problem, ProblemConfig, discount_vector, grouped
from envs.spec import Choice, ConfigError, Float, Int, option, reuse
from envs.tabular import GAMMA
from envs.values import QuadraticBasis, ValueFunction

ACTION_COST = 0.1  # R = ACTION_COST · I


@dataclass(frozen=True)
class QuadraticActionValues:
    """Time-indexed action values Q_t(x, u) = zᵀ W_t z + c_t with z = [x, u], t < H: the model class
    of LQR's exact Q_t (no linear terms: dynamics and costs have no affine part), exact or fitted.

    matrices W [H, dx + du, dx + du] symmetric, constants c [H].
    """

    state_dim: int
    matrices: torch.Tensor
    constants: torch.Tensor

    @classmethod
    def from_basis_weights(cls, basis: QuadraticBasis, state_dim: int, weights: torch.Tensor) -> QuadraticActionValues:
        """The same function from its weights w [..., H, F] on `basis` = QuadraticBasis(dx + du), where
        w · [1, z_i z_j for i ≤ j] counts each off-diagonal W_ij twice (leading axes carried along)."""
        dim = basis.state_dim
        rows, cols = torch.triu_indices(dim, dim)
        upper = weights.new_zeros(*weights.shape[:-1], dim, dim)
        upper[..., rows, cols] = weights[..., 1:]
        return cls(state_dim, (upper + upper.transpose(-1, -2)) / 2, weights[..., 0])

    def _pair(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, actions], -1)[..., None]  # z [..., dx + du, 1]

    def at(self, obs: torch.Tensor, actions: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Q_t(x, u) at obs [..., dx], actions [..., du], time indices steps (long, broadcastable to
        obs [...]; for a batch [M, N, T], steps = arange(T)) → [...]."""
        z = self._pair(obs, actions)
        return (z.transpose(-1, -2) @ self.matrices[steps] @ z)[..., 0, 0] + self.constants[steps]

    def action_gradient(self, obs: torch.Tensor, actions: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """∇_u Q_t(x, u) = 2 W_t[u, :] z in closed form, shapes as in `at` → [..., du]."""
        return 2 * (self.matrices[steps][..., self.state_dim:, :] @ self._pair(obs, actions))[..., 0]


def lqr_bytes(state_dim: int, action_dim: int, horizon: int) -> float:
    """Rough peak bytes of LQR's exact computations: autograd through the covariance recursion keeps ~5
    [dx + du]² float64 matrices per step (measured: 300 MB at dx = du = 100, H = 200), and the Fisher
    matrix is [P, P]."""
    params = state_dim * action_dim + 1
    return 8.0 * (5 * horizon * (state_dim + action_dim) ** 2 + 3 * params**2)


# What each policy's problem provides: everything exact for both; log π (score, entropy, Fisher) only for the
# Gaussian, the Gaussian twin that explores around μ_θ (`exploratory_twin`) only for the deterministic one.
GAUSSIAN_CAPABILITIES = frozenset({
    Capability.EXACT_GRADIENT, Capability.STOCHASTIC_POLICY, Capability.ORACLE_VALUES, Capability.VALUE_BASIS,
    Capability.ENTROPY_OBJECTIVE, Capability.FISHER, Capability.ACTION_VALUES, Capability.OPTIMUM,
})
DETERMINISTIC_CAPABILITIES = frozenset({
    Capability.EXACT_GRADIENT, Capability.DETERMINISTIC_POLICY, Capability.ORACLE_VALUES, Capability.VALUE_BASIS,
    Capability.ACTION_VALUES, Capability.EXPLORATORY_TWIN, Capability.OPTIMUM,
})


class LinearQuadratic(Problem):
    name = "lqr"

    def __init__(self, config: LQRConfig):
        self.config = config
        state_dim, action_dim, horizon = config.state_dim, config.action_dim, config.horizon
        self.horizon, self.gamma, self.noise = horizon, config.gamma, config.noise
        self.memory_bytes = lqr_bytes(state_dim, action_dim, horizon)
        check_bytes(self.memory_bytes, f"env lqr with state_dim {state_dim}, action_dim {action_dim} and horizon "
                    f"{horizon} (its exact objective, gradient and Fisher matrix)", "state_dim, action_dim or horizon")
        self.step_values = 2 * (state_dim + action_dim) + 2  # x, u, reward, mask and the gradient's per-step Kx, z
        self.lane_bytes = 32.0 * (state_dim + action_dim)  # a step's products and noise draws
        rng = np.random.default_rng(config.system_seed)
        a = rng.normal(size=(state_dim, state_dim))
        a *= 0.95 / max(abs(np.linalg.eigvals(a)).max(), 1e-12)
        self.dynamics = torch.as_tensor(a)  # A [dx, dx]
        self.control = torch.as_tensor(rng.normal(size=(state_dim, action_dim)))  # B [dx, du]
        self.state_cost = torch.eye(state_dim, dtype=torch.float64)  # Q
        self.action_cost = ACTION_COST * torch.eye(action_dim, dtype=torch.float64)  # R
        if config.policy == "deterministic":
            self.policy = LinearDeterministic(state_dim, action_dim)
            self.capabilities = DETERMINISTIC_CAPABILITIES
            self.theta_shape = (action_dim * state_dim,)
            self.theta_layout = "K row-major (action_dim × state_dim)"
        else:
            self.policy = LinearGaussian(state_dim, action_dim)
            self.capabilities = GAUSSIAN_CAPABILITIES
            self.theta_shape = (action_dim * state_dim + 1,)
            self.theta_layout = "[K row-major (action_dim × state_dim), log σ]"

    def default_theta(self) -> torch.Tensor:
        return torch.zeros(self.num_params, dtype=torch.float64)  # K = 0 (and σ = 1)

    def parameter_name(self, index: int) -> str:
        gain_size = self.policy.action_dim * self.policy.state_dim
        return f"K[{index // self.policy.state_dim}, {index % self.policy.state_dim}]" if index < gain_size else "log σ"

    def state_covariances(self, theta: torch.Tensor) -> torch.Tensor:
        """E[x_t x_tᵀ] = Σ_t for t < H by the closed-loop recursion (differentiable). → [H, dx, dx]"""
        gain, variance = self.policy.gain(theta), self.policy.action_variance(theta)
        closed = self.dynamics - self.control @ gain
        identity = torch.eye(len(closed), dtype=theta.dtype)
        drive = variance * self.control @ self.control.T + self.noise**2 * identity
        cov, out = identity, []  # Σ_0 = I
        for _ in range(self.horizon):
            out.append(cov)
            cov = closed @ cov @ closed.T + drive
        return torch.stack(out)

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        """Σ_t γ^t E[r_{t+1}] with E[r_{t+1}] = −tr(Q Σ_t) − tr(R (K Σ_t Kᵀ + σ² I))."""
        gain, variance = self.policy.gain(theta), self.policy.action_variance(theta)
        covs = self.state_covariances(theta)  # [H, dx, dx]
        action_second_moment = gain @ covs @ gain.T + variance * torch.eye(len(gain), dtype=theta.dtype)
        rewards = -torch.einsum("ij,tji->t", self.state_cost, covs) - torch.einsum("ij,tji->t", self.action_cost,
                                                                                   action_second_moment)
        return discount_vector(self.gamma, self.horizon).to(theta.dtype) @ rewards

    @property
    def value_basis(self) -> QuadraticBasis:
        return QuadraticBasis(self.dynamics.shape[0])

    def value_recursion(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V_t(x) = −(xᵀ P_t x + c_t) for t ≤ H by the backward recursion P_H = 0, c_H = 0,
        P_t = Q + KᵀRK + γ (A − BK)ᵀ P_{t+1} (A − BK),
        c_t = σ² tr R + γ (σ² tr(Bᵀ P_{t+1} B) + ν² tr P_{t+1} + c_{t+1}).  → (P [H + 1, dx, dx], c [H + 1])"""
        theta = theta.to(torch.float64).detach()
        gain, variance = self.policy.gain(theta), self.policy.action_variance(theta)
        closed = self.dynamics - self.control @ gain
        matrix = torch.zeros_like(self.dynamics)
        constant = torch.zeros((), dtype=torch.float64)
        matrices, constants = [matrix], [constant]
        for _ in range(self.horizon):
            constant = variance * torch.trace(self.action_cost) + self.gamma * (
                variance * torch.trace(self.control.T @ matrix @ self.control)
                + self.noise**2 * torch.trace(matrix) + constant)
            matrix = self.state_cost + gain.T @ self.action_cost @ gain + self.gamma * closed.T @ matrix @ closed
            matrices.append(matrix)
            constants.append(constant)
        return torch.stack(matrices[::-1]), torch.stack(constants[::-1])

    def optimal_recursion(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The optimal cost-to-go V*_t(x) = −(xᵀ P_t x + c_t), t ≤ H, and the optimal time-varying gains
        u_t = −K_t x_t, by the discounted finite-horizon Riccati recursion (float64, independent of θ): P_H = 0, c_H = 0,
            K_t = γ (R + γ Bᵀ P_{t+1} B)⁻¹ Bᵀ P_{t+1} A,
            P_t = Q + γ Aᵀ P_{t+1} A − γ² Aᵀ P_{t+1} B (R + γ Bᵀ P_{t+1} B)⁻¹ Bᵀ P_{t+1} A,
            c_t = γ (ν² tr P_{t+1} + c_{t+1}).
        (Minimising xᵀQx + uᵀRu + γ E[(Ax + Bu + w)ᵀ P_{t+1} (Ax + Bu + w) + c_{t+1}] over u,
        with E wᵀPw = ν² tr P.)
        → (P [H + 1, dx, dx], c [H + 1], K [H, du, dx])"""
        a, b, q, r = self.dynamics, self.control, self.state_cost, self.action_cost
        matrix = torch.zeros_like(a)
        constant = torch.zeros((), dtype=torch.float64)
        matrices, constants, gains = [matrix], [constant], []
        for _ in range(self.horizon):
            gain = self.gamma * torch.linalg.solve(r + self.gamma * b.T @ matrix @ b, b.T @ matrix @ a)
            closed = a - b @ gain
            constant = self.gamma * (self.noise**2 * torch.trace(matrix) + constant)
            # Joseph form of the same P_t (equal at the optimal gain, symmetric and positive by construction)
            matrix = q + gain.T @ r @ gain + self.gamma * closed.T @ matrix @ closed
            matrix = (matrix + matrix.T) / 2
            matrices.append(matrix)
            constants.append(constant)
            gains.append(gain)
        return torch.stack(matrices[::-1]), torch.stack(constants[::-1]), torch.stack(gains[::-1])

    def optimal_objective(self) -> float:
        """J* = sup over all policies (history-dependent and randomised included) of J = Σ_{t<H} γ^t E[r_{t+1}],
        x_0 ~ N(0, I): J* = −E[x_0ᵀ P_0 x_0 + c_0] = −(tr P_0 + c_0), from `optimal_recursion`. It is attained by the
        deterministic time-varying gains u_t = −K_t x_t. The problem's policy class is one stationary K (and, for
        the Gaussian policy, σ > 0): its supremum can be below J* (K_t varies with the steps left), and action
        noise only adds cost (σ² tr(R + γ Bᵀ P_{t+1} B) per step), so the Gaussian class approaches its own
        supremum as σ → 0 and never attains it: normalized scores may stay below 1."""
        self.require(Capability.OPTIMUM)
        matrices, constants, _ = self.optimal_recursion()
        return -float(torch.trace(matrices[0]) + constants[0])

    def oracle_values(self, theta: torch.Tensor) -> ValueFunction:
        """Exact V_t(x) = −(xᵀ P_t x + c_t), t ≤ H, from `value_recursion`."""
        matrices, constants = self.value_recursion(theta)
        return ValueFunction(self.value_basis, self.value_basis.weights_of(-matrices, -constants))

    def action_values(self, theta: torch.Tensor) -> QuadraticActionValues:
        """Exact Q_t(x, u) = −xᵀQx − uᵀRu + γ E[V_{t+1}(Ax + Bu + w)], t < H. With z = [x, u] and
        Ax + Bu = [A B] z: Q_t = −(zᵀ (diag(Q, R) + γ [A B]ᵀ P_{t+1} [A B]) z + γ (ν² tr P_{t+1} + c_{t+1})),
        so ∇_u Q_t(x, u) = −2 (γ Bᵀ P_{t+1} A x + (R + γ Bᵀ P_{t+1} B) u). The same for both policies
        (the policy enters only through P and c)."""
        matrices, constants = self.value_recursion(theta)
        following, following_constants = matrices[1:], constants[1:]  # P_{t+1}, c_{t+1} for t < H
        transition = torch.cat([self.dynamics, self.control], 1)  # [A B] [dx, dx + du]
        quadratic = torch.block_diag(self.state_cost, self.action_cost) + self.gamma * (
            transition.T @ following @ transition)
        expected_noise = self.noise**2 * following.diagonal(dim1=-2, dim2=-1).sum(-1)
        return QuadraticActionValues(self.dynamics.shape[0], -quadratic,
                                     -self.gamma * (expected_noise + following_constants))

    def exploratory_twin(self, theta: torch.Tensor, exploration: float) -> tuple[LinearQuadratic, torch.Tensor]:
        """The behaviour u = −Kx + σ_e ε around μ_θ(x) = −Kx (K from θ [P]): the Gaussian-policy twin of the
        problem (the same system, options but policy=gaussian) and its θ_b = [K, log σ_e] [P + 1] (σ_e = 0:
        log σ_e = −∞, the deterministic policy itself)."""
        self.require(Capability.EXPLORATORY_TWIN)
        behaviour = self.config.replace(policy="gaussian").build()
        log_std = math.log(exploration) if exploration > 0 else -math.inf
        return behaviour, torch.cat([theta.to(torch.float64), torch.tensor([log_std], dtype=torch.float64)])

    def require_log_prob(self, capability: Capability, what: str) -> None:
        """The refusal of what needs log π, on the deterministic policy: it has none."""
        if not self.supports(capability):
            raise ConfigError(f"env lqr with policy=deterministic has no {what}: a deterministic policy has no log π")

    def entropy_objective(self, theta: torch.Tensor) -> torch.Tensor:
        """The Gaussian's entropy does not depend on x: Σ_t γ^t · du (log σ + ½ log 2πe)."""
        self.require_log_prob(Capability.ENTROPY_OBJECTIVE, "entropy objective")
        per_step = self.policy.entropy(theta, theta.new_zeros(self.dynamics.shape[0]))
        return discount_vector(self.gamma, self.horizon).to(theta.dtype).sum() * per_step

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """ψ_t = [(u + Kx)_i x_j / σ² … , Σ_i (z_i² − 1)]: the gain block is (1/σ²) I_du ⊗ Σ_t E[x xᵀ]
        (row-major K), log σ contributes 2·du per step, and the cross terms vanish."""
        self.require_log_prob(Capability.FISHER, "Fisher matrix")
        theta = theta.to(torch.float64).detach()
        du = self.policy.action_dim
        second_moment = self.state_covariances(theta).sum(0)  # Σ_t E[x_t x_tᵀ]
        gain_block = torch.kron(torch.eye(du, dtype=torch.float64), second_moment) * torch.exp(-2 * theta[-1])
        return torch.block_diag(gain_block, torch.tensor([[2.0 * du * self.horizon]], dtype=torch.float64))

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        theta = theta.detach()
        gain, std = self.policy.gain(theta), self.policy.action_variance(theta).sqrt()
        shape = (reps, batch_size)
        dx, du = self.dynamics.shape[0], gain.shape[0]
        initial = torch.randn(reps * batch_size // group_size, dx, dtype=torch.float64, generator=generator)
        state = grouped(initial, group_size).reshape(*shape, dx)
        states, actions, rewards = [], [], []
        stochastic = self.supports(Capability.STOCHASTIC_POLICY)
        for _ in range(self.horizon):
            action = -state @ gain.T
            if stochastic:  # the deterministic policy draws nothing: x_0 and w_t stay random
                action = action + std * torch.randn(*shape, du, dtype=torch.float64, generator=generator)
            reward = -(state @ self.state_cost * state).sum(-1) - (action @ self.action_cost * action).sum(-1)
            states.append(state)
            actions.append(action)
            rewards.append(reward)
            noise = self.noise * torch.randn(*shape, dx, dtype=torch.float64, generator=generator)
            state = state @ self.dynamics.T + action @ self.control.T + noise
        return Batch(
            final_obs=state,
            obs=torch.stack(states, 2), actions=torch.stack(actions, 2), rewards=torch.stack(rewards, 2),
            mask=torch.ones(*shape, self.horizon, dtype=torch.float64),
            terminated=torch.zeros(shape, dtype=torch.bool), gamma=self.gamma,
        )


@PROBLEMS.entry("lqr")
class LQRConfig(ProblemConfig):
    state_dim: int = option(Int(1, 100), 2, "dimension of x")
    action_dim: int = option(Int(1, 100), 1, "dimension of u")
    horizon: int = option(Int(1, 10_000), 20, "horizon H")
    gamma: float = reuse(GAMMA)
    noise: float = option(Float(0.0), 0.1, "standard deviation ν of the process noise w")
    system_seed: int = option(Int(0), 0, "seed of the random system (A, B)")
    policy: str = option(Choice(("gaussian", "deterministic")), "gaussian",
                         "gaussian u = −Kx + σε, θ = [K, log σ]; deterministic u = −Kx, θ = K")

    doc = ("finite-horizon LQR, linear policy: gaussian u = −Kx + σε, θ = [K, log σ] (default K = 0, σ = 1), "
           "or deterministic u = −Kx, θ = K (default K = 0); refused when its exact computations, "
           f"≈ 8·(5·H·(state_dim + action_dim)² + 3·P²) bytes, exceed {MEMORY_FRACTION:.0%} of the available "
           "memory")

    def build(self) -> LinearQuadratic:
        return LinearQuadratic(self)
