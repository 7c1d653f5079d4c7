"""`noise_scale`: the gradient noise scale and the optimal SGD step at a fixed θ (McCandlish et al. 2018).

McCandlish, Kaplan, Amodei and the OpenAI Dota team, "An Empirical Model of Large-Batch Training" (2018), §2 and
appendix A, written here for ascent on J (we maximize J; their loss is L = −J, so H_L = −H_J). An SGD ascent step
θ' = θ + ε ĝ with an estimate ĝ of mean G and covariance Σ_N (ONE estimate at batch size N) changes J, to second
order, in expectation by

    E[J(θ + εĝ)] − J(θ) ≈ ε ∇JᵀG − ε²/2 · (GᵀH_L G + tr(H_L Σ_N)),

exactly so when J is quadratic in θ (then the expansion has no third-order term). Where the curvature of the loss
along G, GᵀH_L G = −GᵀH_J G, is positive, this is maximized at

    ε_opt = ∇JᵀG / (GᵀH_L G + tr(H_L Σ_N)) = ε_max / (1 + B_noise/N),
    ε_max = ∇JᵀG / GᵀH_L G,   B_noise = N · tr(H_L Σ_N) / GᵀH_L G,

and the simple noise scale is B_simple = N · tr Σ_N / ‖G‖². For an estimate of ∇J (G = ∇J) the numerator ∇JᵀG is
‖G‖², McCandlish's form; for the natural gradient G = (F + δI)⁻¹∇J and the numerator is ∇JᵀG. For an i.i.d. mean
Σ_N = Σ_1/N and B_noise, B_simple do not depend on N; for RLOO, batch-mean or GRPO baselines the covariance is not
Σ_1/N, so Σ_N is the covariance of that estimator's M estimates at that N, never a rescaled per-sample one.

Where GᵀH_L G ≤ 0 (J convex or flat along G, e.g. the softmax bandit's default arms at uniform logits, where
GᵀH_J G = Σ_k (p_k − J)³ / K³ > 0 for right-skewed arm rewards), or where GᵀH_L G + tr(H_L Σ_N) ≤ 0 (H_L indefinite:
the noise alone makes the model's improvement grow without bound in ε), the quadratic model has no maximum:
`model_applies` is False and the ε's are NaN (B_noise is still reported, with its sign). Where the problem has no exact J (no
Capability.EXACT_GRADIENT) there is no Hessian: the curvature and ε's are NaN, model_applies False.

What is computed: G = the exact value of the estimator's target (its reference; for ∇J estimators ∇J; a biased
estimator's O(1/N) bias is ignored), ∇J = problem.exact_gradient, H_J = torch.func.hessian of problem.objective at θ
in float64, Σ_N = the sample covariance (ddof 1) of the finite rows of `bench.harness.measure`'s M estimates.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bench.harness import measure
from bench.training import normalized_score
from envs.problem import Capability, Problem
from estimators.registry import Estimator

KIND = "noise_scale"


@dataclass(frozen=True)
class NoiseScale:
    """The measured noise scale at one (problem, estimator, θ, N); see the module docstring for the formulas."""

    batch_size: int
    reps: int
    grad_norm_sq: float  # ‖G‖²
    trace_sigma: float  # tr Σ_N
    b_simple: float  # N · tr Σ_N / ‖G‖²
    curvature: float  # GᵀH_L G = −GᵀH_J G (the model needs > 0, and curvature + trace_h_sigma > 0)
    trace_h_sigma: float  # tr(H_L Σ_N)
    b_noise: float  # N · tr(H_L Σ_N) / GᵀH_L G
    eps_max: float  # ∇JᵀG / GᵀH_L G
    eps_opt: float  # ε_max / (1 + B_noise/N)
    step_length: float  # ε_opt · ‖G‖
    model_applies: bool
    nonfinite: int  # estimates with a non-finite coordinate, left out of Σ_N
    directional: float = math.nan  # ∇JᵀG (= ‖G‖² for ∇J estimators); not stored in the row

    def to_row(self) -> dict[str, Any]:
        """The noise-scale row's measurement columns (the caller adds the identity columns): kind, reps and the
        quantities above; floats as float (NaN where undefined), ints as int, the flag as bool."""
        record = asdict(self)
        record.pop("directional")
        record.pop("batch_size")
        row: dict[str, Any] = {"kind": KIND}
        for key, value in record.items():
            if key == "model_applies":
                row[key] = bool(value)
            elif key in ("reps", "nonfinite"):
                row[key] = int(value)
            else:
                row[key] = float(value)
        return row


def objective_hessian(problem: Problem, theta: torch.Tensor) -> torch.Tensor:
    """H_J = ∇²J(θ) [P, P] in float64, by torch.func.hessian of problem.objective (autograd's hessian where an
    objective does not support torch.func), symmetrized."""
    theta = theta.detach().to(torch.float64)
    try:
        hessian = torch.func.hessian(problem.objective)(theta)
    except (RuntimeError, NotImplementedError):
        hessian = torch.autograd.functional.hessian(problem.objective, theta)
    hessian = hessian.detach().reshape(theta.numel(), theta.numel())
    return (hessian + hessian.T) / 2


def noise_scale(problem: Problem, estimator_config: Estimator, theta: Any, batch_size: int, reps: int,
                seed: int) -> NoiseScale:
    """The noise scale and optimal SGD step of the module docstring at θ (None: the problem's default θ), from M =
    `reps` estimates at batch size N = `batch_size` drawn by `bench.harness.measure` with `seed`."""
    m = measure(problem, estimator_config.name, batch_size, reps, seed, theta=theta,
                estimator_options=estimator_config.as_dict(), show_progress=False)
    estimates = np.asarray(m.estimates, dtype=np.float64)
    finite = np.isfinite(estimates).all(axis=1)
    nonfinite = int((~finite).sum())
    kept = estimates[finite]
    target = np.asarray(m.reference.grad, dtype=np.float64)  # G
    grad_norm_sq = float(target @ target)
    nan = math.nan
    if len(kept) >= 2:
        centered = kept - kept.mean(axis=0)
        trace_sigma = float((centered * centered).sum() / (len(kept) - 1))
    else:
        centered, trace_sigma = None, nan
    b_simple = batch_size * trace_sigma / grad_norm_sq if grad_norm_sq > 0 else nan

    curvature = trace_h_sigma = directional = nan
    if problem.supports(Capability.EXACT_GRADIENT):
        theta_t = torch.as_tensor(m.theta, dtype=torch.float64)
        hessian_loss = -objective_hessian(problem, theta_t).numpy()  # H_L = −H_J
        gradient = problem.exact_gradient(theta_t).detach().to(torch.float64).numpy()  # ∇J
        curvature = float(target @ hessian_loss @ target)
        directional = float(gradient @ target)
        if centered is not None:
            trace_h_sigma = float(np.einsum("mp,pq,mq->", centered, hessian_loss, centered) / (len(kept) - 1))
    # a maximum needs the ε² coefficient −(GᵀH_L G + tr(H_L Σ_N))/2 negative as well as GᵀH_L G > 0: H_L can be
    # indefinite, and a negative tr(H_L Σ_N) beyond −GᵀH_L G would make the model's improvement grow without bound
    model_applies = bool(curvature > 0 and curvature + trace_h_sigma > 0 and math.isfinite(directional))
    if model_applies:
        b_noise = batch_size * trace_h_sigma / curvature
        eps_max = directional / curvature
        eps_opt = eps_max / (1 + b_noise / batch_size)
        step_length = eps_opt * math.sqrt(grad_norm_sq)
    else:
        b_noise = trace_h_sigma * batch_size / curvature if curvature != 0 and math.isfinite(curvature) else nan
        eps_max = eps_opt = step_length = nan
    return NoiseScale(batch_size=batch_size, reps=reps, grad_norm_sq=grad_norm_sq, trace_sigma=trace_sigma,
                      b_simple=b_simple, curvature=curvature, trace_h_sigma=trace_h_sigma, b_noise=b_noise,
                      eps_max=eps_max, eps_opt=eps_opt, step_length=step_length, model_applies=model_applies,
                      nonfinite=nonfinite, directional=directional)


PATH_MAX_STEPS = 20_000  # exact-gradient steps the path may take to reach a score
ARMIJO = 0.5  # sufficient increase: a step ε is taken when J(θ + εG) ≥ J(θ) + ARMIJO·ε‖G‖²
PATH_RESOLUTION = 0.02  # a path step's first-order gain ε‖∇J‖² is at most this fraction of J* − J(θ₀)


@dataclass(frozen=True)
class PathPoint:
    """A point of the exact-gradient path: θ, its normalized score s and the ascent steps taken from θ₀."""

    theta: torch.Tensor
    score: float
    steps: int
    reached: bool  # s ≥ the asked fraction (False: PATH_MAX_STEPS ran out, or ∇J vanished, before it)


def exact_path_point(problem: Problem, theta0: torch.Tensor, fraction: float) -> PathPoint:
    """The first θ of exact gradient ascent from θ₀ whose normalized score s = (J(θ) − J(θ₀)) / (J* − J(θ₀)) is
    ≥ `fraction`: steps θ ← θ + ε∇J(θ) with a backtracking (Armijo) step, ε halved until J(θ + ε∇J) ≥ J(θ) +
    ARMIJO·ε‖∇J‖² and doubled after each accepted step, so the path follows the gradient flow whatever the
    problem's scale (a non-finite J, e.g. an unstable LQR gain, is a rejected step), and capped so that a step's
    first-order gain ε‖∇J‖² is at most PATH_RESOLUTION·(J* − J(θ₀)): the point lands close above `fraction`, not
    one big step past it. `fraction` = 0 is θ₀ itself.
    Needs Capability.EXACT_GRADIENT and (for `fraction` > 0) OPTIMUM."""
    theta = torch.as_tensor(theta0, dtype=torch.float64).detach().clone()
    if fraction <= 0:
        return PathPoint(theta, 0.0, 0, True)
    problem.require(Capability.EXACT_GRADIENT, because="which the exact-gradient path needs")
    problem.require(Capability.OPTIMUM, because="which the path's normalized score needs")
    start, best = float(problem.objective(theta)), problem.optimal_objective()
    gap = best - start
    score = functools.partial(normalized_score, start=start, optimum=best)
    value, step, steps = start, 1.0, 0
    while not score(value) >= fraction and steps < PATH_MAX_STEPS:
        gradient = problem.exact_gradient(theta).detach().to(torch.float64)
        norm_sq = float(gradient @ gradient)
        if not norm_sq > 0:
            break
        step = min(step, PATH_RESOLUTION * gap / norm_sq)
        while step > 1e-300:
            candidate = theta + step * gradient
            new = float(problem.objective(candidate))
            if math.isfinite(new) and new >= value + ARMIJO * step * norm_sq:
                break
            step /= 2
        else:
            break
        theta, value, step, steps = candidate, new, 2 * step, steps + 1
    return PathPoint(theta, score(value), steps, bool(score(value) >= fraction))


__all__ = ["KIND", "NoiseScale", "PathPoint", "exact_path_point", "noise_scale", "objective_hessian"]
