"""The natural policy gradient, with the Fisher matrix estimated from the same batch as the gradient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from envs.memory import check_bytes
from envs.problem import Batch, Capability, Policy, Problem
from envs.spec import Choice, ConfigError, Float, Int, When, option, reuse
from envs.values import ValueFunction
from estimators.autodiff import weighted_score_per_replicate
from estimators.critics import (CRITIC, CRITIC_SAMPLES, SameBatchCritic, check_critic, independent_of_batch,
                                prepare_critic)
from estimators.registry import ESTIMATORS, Estimator, Prepared, Target
from estimators.score import BaselineParser, reinforce

# F = E[Σ_t ψ_t ψ_tᵀ] adds one per-step Fisher per visit, so its eigenvalues are per-step Fisher
# information times expected visits: they grow with the horizon where states recur (lqr: the log σ
# entry is 2H) and stay small for rarely visited states whatever H is. An absolute δ therefore means
# less on longer problems; the default is set against the spectra measured at generic θ on the
# suite's problems, whose nonzero eigenvalues lie in [0.01, 72] (taxi: from 6e-4, 500 states mostly
# rarely visited). At δ = 0.01 the target (F + δI)⁻¹∇J keeps a cosine ≥ 0.98 with the undamped F⁺∇J
# on every problem but taxi (0.86; δ = 0.001 gives 0.98 there), and cond(F̂ + δI) ≤ λ_max(F̂)/δ bounds
# the estimate in directions the batch has barely seen (there F̂ ≈ 0 and the estimate is ≈ ĝ/δ) and
# CG's work: at most 132 iterations to cg_tol in our runs (cliffwalking and taxi, N ≤ 256; 246 at
# δ = 0.001), so the default cg_iters = 500 only stops a solve that would not converge.
DEFAULT_DAMPING = 0.01
DEFAULT_CG_ITERS = 500
DEFAULT_CG_TOL = 1e-10
NATURAL_BASELINES = ("none", "constant", "rloo", "value")  # kinds of score.BaselineParser's names it takes


@dataclass(frozen=True)
class NaturalBaselineParser(BaselineParser):
    """score.BaselineParser (so `constant:<c>` is parsed and normalised the same way) restricted to the baselines
    that do not depend on the batch beyond RLOO: none, constant:<c>, rloo, value (a critic V̂_t(s_t))."""

    allowed: str = "one of none, constant:<value>, rloo, value"
    examples: tuple[str, ...] = ("none", "constant:0.5", "rloo", "value")

    def __call__(self, raw: Any) -> str:
        text = super().__call__(raw)
        if text.partition(":")[0] not in NATURAL_BASELINES:
            raise ValueError(self.allowed)
        return text


def score_directional(policy: Policy, theta: torch.Tensor, batch: Batch, directions: torch.Tensor) -> torch.Tensor:
    """u_{m,i,t} = ψ_{m,i,t} · v_m, the derivative of log π_θ(a_{m,i,t}|s_{m,i,t}) along v_m, by
    forward-mode autodiff (one jvp per replicate, no [P]-vector per step); zero at dead steps.

    directions v [M, P] → [M, N, T]."""

    def along(obs: torch.Tensor, actions: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(lambda th: policy.log_prob(th, obs, actions), (theta,), (direction,))[1]

    return torch.func.vmap(along)(batch.obs, batch.actions, directions) * batch.mask


def fisher_vector_product(policy: Policy, theta: torch.Tensor, batch: Batch, directions: torch.Tensor) -> torch.Tensor:
    """F̂_m v_m = (1/N) Σ_i Σ_t ψ_{m,i,t} (ψ_{m,i,t} · v_m): the score weighted by its own
    directional derivative, so F̂ is never formed (memory O(MNT + MP)).  directions [M, P] → [M, P]."""
    return weighted_score_per_replicate(policy, theta, batch, score_directional(policy, theta, batch, directions))


def batch_fisher(policy: Policy, theta: torch.Tensor, batch: Batch, rep: int) -> torch.Tensor:
    """F̂_m = (1/N) Σ_i Σ_t ψ_{m,i,t} ψ_{m,i,t}ᵀ over alive steps, formed from the per-step scores
    of replicate m (memory O(NTP + P²)). → [P, P]"""
    obs, actions = batch.obs[rep], batch.actions[rep]
    scores = torch.func.jacrev(lambda th: policy.log_prob(th, obs, actions))(theta)  # [N, T, P]
    alive = scores * batch.mask[rep][..., None]
    return torch.einsum("ntp,ntq->pq", alive, alive) / batch.batch_size


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, max_iters: int, tol: float
) -> torch.Tensor:
    """Solve A_m x_m = b_m for M symmetric positive-definite systems at once (Hestenes & Stiefel
    1952), from x = 0. A replicate stops moving once ‖b_m − A_m x_m‖ ≤ tol · ‖b_m‖; the loop ends
    when all have, or after max_iters iterations (then the iterate is truncated CG's answer, as with
    TRPO's fixed iteration count). A b_m with a non-finite entry gives x_m = NaN.
    matvec [M, P] → [M, P], rhs b [M, P] → x [M, P]."""
    finite = torch.isfinite(rhs).all(-1)  # [M]; a non-finite ĝ_m stays non-finite, to be counted
    rhs = torch.where(finite[:, None], rhs, 0.0)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = rhs.clone()
    residual_sq = (residual * residual).sum(-1)  # [M]
    threshold = tol**2 * residual_sq
    for _ in range(max_iters):
        active = residual_sq > threshold  # [M]; b_m = 0 is solved by x = 0 from the start
        if not active.any():
            break
        product = matvec(direction)
        curvature = (direction * product).sum(-1)  # > 0 on active replicates: A is positive definite
        step = torch.where(active, residual_sq / torch.where(active, curvature, 1.0), 0.0)
        solution = solution + step[:, None] * direction
        residual = residual - step[:, None] * product
        new_residual_sq = (residual * residual).sum(-1)
        ratio = torch.where(active, new_residual_sq / torch.where(active, residual_sq, 1.0), 0.0)
        direction = residual + ratio[:, None] * direction
        residual_sq = torch.where(active, new_residual_sq, residual_sq)
    return torch.where(finite[:, None], solution, torch.nan)


def natural(
    policy: Policy,
    theta: torch.Tensor,
    batch: Batch,
    baseline: str = "none",
    damping: float = DEFAULT_DAMPING,
    solver: str = "cg",
    cg_iters: int = DEFAULT_CG_ITERS,
    cg_tol: float = DEFAULT_CG_TOL,
    fisher_lu: tuple[torch.Tensor, torch.Tensor] | None = None,
    critic: ValueFunction | SameBatchCritic | None = None,
) -> torch.Tensor:
    """Natural policy gradient (Kakade 2001; Peters & Schaal 2008; the conjugate-gradient solve of
    TRPO, Schulman et al. 2015; lecture notes 000 §8.2, 002 "Natural Policy Gradient", 003) with
    the Fisher matrix and the gradient both estimated from the batch:

        ĝ_nat = (F̂ + δI)⁻¹ ĝ,   F̂ = (1/N) Σ_i Σ_t ψ_{i,t} ψ_{i,t}ᵀ,   ψ_{i,t} = ∇_θ log π_θ(a_{i,t}|s_{i,t}),

    ĝ the REINFORCE reward-to-go gradient (1/N) Σ_i Σ_t ψ_{i,t} γ^t (G_{i,t} − b_{i,t}) with
    baseline none, constant:<c>, rloo or value (V̂_t(s_t) from `critic`; `score.reinforce`), the sums over alive
    steps. F̂ is the batch estimate of the trajectory Fisher F = E[Σ_t ψ_t ψ_tᵀ] (`Problem.fisher`); the target
    is (F + δI)⁻¹ ∇J.

    fisher_lu given (estimator option fisher=exact): the LU factorization (LU [P, P], pivots [P]) of F + δI, F the
    exact Fisher at θ (`damped_fisher_lu`), and ĝ_nat = (F + δI)⁻¹ ĝ, the stochastic natural gradient of Kakade
    (2001) and of Chung et al. (ICML 2021, "Beyond variance reduction"): F is fixed given θ, so E[ĝ_nat] =
    (F + δI)⁻¹ ∇J whenever ĝ is unbiased for ∇J. Its δ is the one it was factored with (`damping` is not read).

    solver="cg": conjugate gradient on F̂ + δI, batched over the M replicates, with Fisher-vector
    products from one jvp and one vmapped gradient each (`fisher_vector_product`); at most cg_iters
    iterations, stopping at relative residual cg_tol. solver="direct": F̂ formed from per-step
    scores and solved densely, one replicate at a time (O(P³) each: the obviously-correct twin).

    Biased: the inverse of a batch estimate, applied to a gradient from the same batch, has
    E[(F̂ + δI)⁻¹ ĝ] ≠ (F + δI)⁻¹ ∇J; consistent (bias O(1/N)) as N → ∞.
    batch [M, N, T] → [M, P].
    """
    gradient = reinforce(policy, theta, batch, baseline=baseline, critic=critic)  # [M, P]
    if fisher_lu is not None:
        return torch.linalg.lu_solve(*fisher_lu, gradient.T).T  # all M right-hand sides at once
    if solver == "direct":
        identity = torch.eye(theta.numel(), dtype=gradient.dtype)
        return torch.stack([
            torch.linalg.solve(batch_fisher(policy, theta, batch, m) + damping * identity, gradient[m])
            for m in range(batch.reps)
        ])
    return conjugate_gradient(
        lambda v: fisher_vector_product(policy, theta, batch, v) + damping * v, gradient, cg_iters, cg_tol
    )


def damped_fisher_lu(fisher: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LU factorization (torch.linalg.lu_factor) of F + δI, F [P, P]: computed once per θ (`Natural.prepare`) and
    reused by every chunk of estimates drawn there; lu_solve with it gives torch.linalg.solve's numbers (which
    factors the same way on each call). → (LU [P, P], pivots [P])"""
    return torch.linalg.lu_factor(fisher + damping * torch.eye(fisher.shape[0], dtype=fisher.dtype))


@ESTIMATORS.entry("natural")
class Natural(Estimator):
    baseline: str = option(NaturalBaselineParser(), "none", "b subtracted from the reward-to-go in ĝ")
    damping: float = option(Float(0.0, low_open=True), DEFAULT_DAMPING, "δ added to the Fisher diagonal")
    fisher: str = option(Choice(("batch", "exact")), "batch", "F̂ from the batch, or the exact Fisher F at θ "
                         "(unbiased for the target)")
    solver: str = option(Choice(("cg", "direct")), "cg", "conjugate gradient (F̂v products) or a dense solve",
                         only_if=When("fisher", "batch"))
    cg_iters: int = option(Int(1, 100_000), DEFAULT_CG_ITERS, "maximum conjugate-gradient iterations",
                           only_if=When("solver", "cg"))
    cg_tol: float = option(Float(0.0, 1.0, low_open=True), DEFAULT_CG_TOL, "CG stops at residual ≤ cg_tol·‖ĝ‖",
                           only_if=When("solver", "cg"))
    critic: str = reuse(CRITIC, only_if=When("baseline", "value"))
    critic_samples: int = reuse(CRITIC_SAMPLES)

    function = staticmethod(natural)
    doc = "natural gradient (F̂ + δI)⁻¹ĝ with the Fisher matrix estimated from the batch"
    target_text = "(F + δI)⁻¹∇J, F the exact trajectory Fisher E[Σ_t ψ_t ψ_tᵀ]"
    bias_text = ("biased with fisher=batch: the inverse of the batch Fisher estimate times a gradient from the same "
                 "batch (consistent, O(1/N)); unbiased with fisher=exact unless critic=fitted_same_batch")
    requires = (Capability.STOCHASTIC_POLICY, Capability.FISHER)
    because = {Capability.FISHER: "which its target (F + δI)⁻¹∇J needs"}  # completes the message of a refusal

    @property
    def target(self) -> Target:
        return Target(damping=self.damping)

    def unbiased(self, problem: Problem) -> bool:
        return self.fisher == "exact" and (self.baseline != "value" or independent_of_batch(self))

    def check(self, problem: Problem, batch_size: int) -> None:
        for capability in self.requires:  # as `Estimator.check`, saying why the Fisher matrix is needed
            problem.require(capability, self.owner(), because=self.because.get(capability, ""))
        if self.baseline == "rloo" and batch_size < 2:
            raise ConfigError("estimator natural: baseline=rloo needs batch_size ≥ 2 (it averages the others)")
        if self.baseline == "value":
            check_critic(self, problem)
        # its target solves with the exact [P, P] Fisher matrix (and a damped copy; fisher=exact its LU factors), the
        # direct solver with F̂
        check_bytes(8.0 * 3 * problem.num_params**2, f"estimator natural on env {problem.name} "
                    f"({problem.num_params} parameters: [P, P] Fisher matrices)", "the problem's size")

    def kwargs(self) -> dict[str, Any]:
        return {key: value for key, value in self.as_dict().items()
                if key not in ("fisher", "critic", "critic_samples")}

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        kwargs, info = self.kwargs(), {}
        if self.fisher == "exact":  # F depends on θ only: factored once for every estimate at θ
            kwargs["fisher_lu"] = damped_fisher_lu(problem.fisher(theta), self.damping)
        if self.baseline == "value":
            kwargs["critic"], info = prepare_critic(self, problem, theta, generator)
        return Prepared(kwargs, info=info)
