"""Critics V̂_t(s) for value baselines, actor-critic and GAE: exact, exact plus error, or fitted.

    oracle              V^π_t from the problem's exact recursion (tabular MDPs, bandits, LQR)
    oracle_noisy:<σ>    the oracle with N(0, σ²) added once to each of its parameters (every table
                        entry V_t(s), or every coefficient of LQR's quadratic V_t), drawn per measurement
    fitted              regressed on `critic_samples` independent trajectories of π_θ, drawn once per
                        measurement from the estimator's own random stream
    fitted_same_batch   regressed on the very batch it is then used on (one critic per replicate)

Fitting is Monte Carlo regression of the reward-to-go G_t on the state, separately for each t, in
the model class of the problem's exact V_t (`envs.values`): a table (per-(t, s) mean of G_t; a
state the fit never saw at t gets that step's mean over all states) or a quadratic form (least
squares with a tiny ridge). The class contains the truth, so a fitted critic errs only by noise.
A critic that does not depend on the batch is a function of (t, s) only, so as a baseline it keeps
REINFORCE unbiased (lecture notes 001, state-dependent baselines); one fitted on the batch does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from envs.memory import check_bytes
from envs.problem import Batch, Capability, Problem
from envs.spec import Float, Int, Option, Parser, When, number_text
from envs.values import QuadraticBasis, TableBasis, ValueFunction
from estimators.returns import reward_to_go

CRITIC_NAMES = ("oracle", "oracle_noisy:<σ>", "fitted", "fitted_same_batch")
INDEPENDENT_OF_BATCH = ("oracle", "oracle_noisy", "fitted")
RIDGE = 1e-8  # relative to the mean diagonal of the normal equations; only matters when they are singular


@dataclass(frozen=True)
class CriticParser(Parser):
    allowed: str = "one of " + ", ".join(CRITIC_NAMES)
    examples: tuple[str, ...] = ("oracle", "oracle_noisy:0.5", "fitted", "fitted_same_batch")

    def __call__(self, raw: Any) -> str:
        kind, sep, value = str(raw).strip().partition(":")
        if kind == "oracle_noisy" and sep:
            try:
                return f"oracle_noisy:{number_text(Float(0.0)(value))}"
            except ValueError:
                raise ValueError(self.allowed) from None
        if sep or kind not in ("oracle", "fitted", "fitted_same_batch"):
            raise ValueError(self.allowed)
        return kind


CRITIC = Option(CriticParser(), "oracle", "V̂_t(s): oracle, oracle_noisy:<σ>, fitted (independent trajectories) or "
                "fitted_same_batch")
CRITIC_SAMPLES = Option(Int(2, 10_000_000), 1000, "trajectories the `fitted` critic is regressed on",
                        only_if=When("critic", "fitted"))


class HasCritic(Protocol):
    """An estimator config with the critic's two options (declared with `reuse(CRITIC)`, `reuse(CRITIC_SAMPLES)`)."""

    critic: str
    critic_samples: int

    def owner(self) -> str: ...


def critic_kind(critic: str) -> str:
    return critic.partition(":")[0]


def independent_of_batch(config: HasCritic) -> bool:
    return critic_kind(config.critic) in INDEPENDENT_OF_BATCH


def check_critic(config: HasCritic, problem: Problem) -> None:
    problem.require(Capability.VALUE_BASIS, config.owner())
    if critic_kind(config.critic) in ("oracle", "oracle_noisy"):
        problem.require(Capability.ORACLE_VALUES, config.owner())
    if critic_kind(config.critic) == "fitted":
        basis = problem.value_basis
        check_bytes(critic_bytes(problem, config.critic_samples,
                                 basis.num_features if isinstance(basis, QuadraticBasis) else 0),
                    f"{config.owner()} with critic=fitted on {config.critic_samples} trajectories",
                    "critic_samples or the problem's size")


def critic_bytes(problem: Problem, trajectories: int, features: int) -> float:
    """Rough peak bytes of fitting a critic on one batch of `trajectories` trajectories drawn at once: the
    batch, and for a least-squares basis its `features` F per step with their products and the [H, F, F]
    normal equations."""
    return problem.sample_bytes(trajectories) + 16.0 * problem.horizon * features * (trajectories + features)


@dataclass(frozen=True)
class SameBatchCritic:
    """Marks a critic fitted on each batch it is applied to."""

    basis: TableBasis | QuadraticBasis
    horizon: int


def prepare_critic(config: HasCritic, problem: Problem, theta: torch.Tensor,
                   generator: torch.Generator) -> tuple[ValueFunction | SameBatchCritic, dict[str, Any]]:
    """The critic an estimator's `prepare` hands to `estimate`, and what to report about it."""
    kind, _, sigma = config.critic.partition(":")
    info: dict[str, Any] = {"critic": config.critic}
    if kind == "fitted_same_batch":
        return SameBatchCritic(problem.value_basis, problem.horizon), info
    if kind == "fitted":
        batch = problem.sample(theta, 1, config.critic_samples, generator)
        fitted = fit_values(problem.value_basis, problem.horizon, batch)
        info["critic_samples"] = config.critic_samples
        return ValueFunction(fitted.basis, fitted.weights[0]), info
    oracle = problem.oracle_values(theta)
    if kind == "oracle":
        return oracle, info
    noise = float(sigma) * torch.randn(oracle.weights.shape, dtype=torch.float64, generator=generator)
    noise[-1] = 0.0  # V_H ≡ 0 is known, not estimated
    return ValueFunction(oracle.basis, oracle.weights + noise), info


def critic_values(critic: ValueFunction | SameBatchCritic, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(V̂_t(s_t) [M, N, T] zero after the episode, bootstrap [M, N]: V̂_T(final state) if truncated, else 0)."""
    if isinstance(critic, SameBatchCritic):
        critic = fit_values(critic.basis, critic.horizon, batch)
    return critic.on_batch(batch.obs, batch.final_obs, batch.truncated, batch.mask)


def fit_values(basis: TableBasis | QuadraticBasis, horizon: int, batch: Batch) -> ValueFunction:
    """One critic per replicate of `batch`, regressing G_t on s_t separately for each t < T;
    rows t ≥ T (no data) and row H are 0. → weights [M, H + 1, F]."""
    targets = reward_to_go(batch.rewards, batch.gamma)  # [M, N, T]
    if isinstance(basis, TableBasis):
        fitted = _fit_table(basis.num_states, batch.obs, targets, batch.mask)  # [M, T, S]
    else:
        fitted = _fit_quadratic(basis, batch.obs, targets, batch.mask)  # [M, T, F]
    reps, steps, width = fitted.shape
    weights = torch.zeros(reps, horizon + 1, width, dtype=torch.float64)
    weights[:, :steps] = fitted
    return ValueFunction(basis, weights)


def _fit_table(num_states: int, obs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per (m, t, s): mean of G_t over the visits; unvisited s: the mean over all visits at (m, t). → [M, T, S]"""
    reps, _, steps = targets.shape
    cell = (torch.arange(reps)[:, None, None] * steps + torch.arange(steps)) * num_states + obs  # [M, N, T]
    size = reps * steps * num_states
    sums = torch.zeros(size, dtype=torch.float64).index_add_(0, cell.reshape(-1), (targets * mask).reshape(-1))
    counts = torch.zeros(size, dtype=torch.float64).index_add_(0, cell.reshape(-1), mask.reshape(-1))
    sums, counts = sums.reshape(reps, steps, num_states), counts.reshape(reps, steps, num_states)
    step_total, step_count = sums.sum(-1, keepdim=True), counts.sum(-1, keepdim=True)
    fallback = torch.where(step_count > 0, step_total / step_count.clamp(min=1), 0.0)
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)


def _fit_quadratic(basis: QuadraticBasis, obs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per (m, t): least squares of G_t on φ(s_t) over the alive trajectories. → [M, T, F]"""
    phi = basis.features(obs) * mask[..., None]  # [M, N, T, F]
    gram = torch.einsum("mntf,mntg->mtfg", phi, phi)  # [M, T, F, F]
    rhs = torch.einsum("mntf,mnt->mtf", phi, targets * mask)
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None].clamp(min=1.0)
    identity = torch.eye(basis.num_features, dtype=torch.float64)
    return torch.linalg.solve(gram + RIDGE * scale * identity, rhs[..., None])[..., 0]
