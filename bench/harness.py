"""`measure`: M independent batches of N trajectories at fixed θ → M gradient estimates → metrics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from bench.metrics import METRICS_WITH_CI, GradientMetrics, gradient_metrics
from bench.reference import Reference, ReferenceConfig, check_reference, reference_for
from bench.progress import progress_bar
from bench.sampling import PREPARE_STREAM, batch_streams, chunk_bytes, draw_estimates, make_generator
from envs.memory import check_bytes, format_bytes, memory_limit
from envs.problem import Problem
from envs.spec import ConfigError, Int, check_int, check_seed
from estimators.registry import Target, resolve_estimator

# Rough multiplicity behind `check_memory` (beside envs.problem.GRADIENT_COPIES): the metrics hold the [M, P] estimates in a few forms at once (the
# chunks and their concatenation, finite rows, deviations, centered rows, leave-one-out sums, unit rows)
# and the smaller Gram matrix [min(M, P)]² twice.
ESTIMATE_COPIES = 8
BATCH_SIZE, REPS = Int(1), Int(2)


def check_memory(problem: Problem, batch_size: int, reps: int, group_size: int = 1) -> float:
    """The rough peak bytes of `measure(problem, …, batch_size, reps)` (one chunk of batches, the [M, P]
    estimates and their metrics, the problem's exact objective), estimated from the sizes alone without
    allocating; ConfigError in one line (estimate, limit, the knob to lower) when it exceeds
    envs.memory.memory_limit(). A single batch of N trajectories is the smallest chunk there is, so a
    batch too large for memory is refused whatever M. group_size: trajectories sharing an initial state
    (GRPO), a divisor of batch_size."""
    if batch_size % group_size:
        raise ConfigError(f"group_size={group_size} must divide batch_size={batch_size}")
    chunk, per_chunk = chunk_bytes(problem, batch_size, reps)
    params = problem.num_params
    estimates = 8.0 * (ESTIMATE_COPIES * reps * params + 2 * min(reps, params) ** 2)
    total, limit = per_chunk + estimates + problem.memory_bytes, memory_limit()
    if chunk_bytes(problem, batch_size, 1)[1] > limit:
        lower = "--batch-size (one batch of N trajectories is the smallest chunk)"
    elif estimates > limit:
        lower = "--reps"
    else:
        lower = "--reps or --batch-size"
    check_bytes(total, f"measure on {problem.name} with N = {batch_size}, M = {reps} (H = {problem.horizon}, "
                f"P = {params}: a chunk of {chunk} × {batch_size} trajectories {format_bytes(per_chunk)}, the M "
                f"estimates {format_bytes(estimates)})", lower)
    return total


@dataclass(frozen=True)
class Measurement:
    env: str
    env_options: dict[str, Any]
    estimator: str
    estimator_options: dict[str, Any]
    target: str
    declared_unbiased: bool
    estimator_info: dict[str, Any]  # what the estimator's `prepare` reports (behaviour KL, critic fit…)
    batch_size: int
    reps: int
    seed: int
    theta: np.ndarray  # [P]
    gamma: float
    horizon: int
    reference: Reference  # g̃ [P], exact or sampled, with its per-coordinate variance and J(θ)
    gradient_reference: Reference  # ∇J's, for gradient_cosine: `reference` itself when the target is ∇J
    metrics: GradientMetrics
    seconds: float  # wall time to draw the batches and compute the estimates
    env_steps: int  # alive environment steps over all M × N trajectories
    estimates: np.ndarray = field(repr=False)  # [M, P]

    @property
    def reference_grad(self) -> np.ndarray:
        return self.reference.grad

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready flat record (NaN and ±∞ become None)."""
        m, ref = self.metrics, self.reference
        record: dict[str, Any] = {
            "env": self.env, "env_options": self.env_options,
            "estimator": self.estimator, "estimator_options": self.estimator_options,
            "target": self.target, "declared_unbiased": self.declared_unbiased,
            "estimator_info": self.estimator_info,
            "batch_size": self.batch_size, "reps": self.reps, "seed": self.seed,
            "num_params": int(self.theta.size), "gamma": self.gamma, "horizon": self.horizon,
            "theta": self.theta, "objective": ref.objective, "objective_se": ref.objective_se,
            "reference_kind": ref.kind, "reference_grad": ref.grad, "reference_se": np.sqrt(ref.variance),
            "reference_samples": ref.samples, "reference_estimator": ref.estimator,
            "reference_nonfinite": ref.nonfinite, "reference_seconds": ref.seconds, "reference_cached": ref.cached,
            "reference_norm": m.reference_norm, "bias_resolution": m.bias_resolution,
            "relative_bias_resolution": m.bias_resolution / m.reference_norm if m.reference_norm > 0 else math.nan,
            "mean_grad": m.mean_grad,
            "reps_used": m.reps_used, "nonfinite": m.nonfinite,
        }
        for name in METRICS_WITH_CI:
            record[name] = getattr(m, name)
            record[f"{name}_ci"] = getattr(m, f"{name}_ci")
        record["bias_pvalue"] = m.bias_pvalue
        record["bias_dof"] = m.bias_dof
        record["tail_kurtosis"] = m.tail_kurtosis
        record["heavy_tailed"] = m.heavy_tailed
        record["nonfinite_fraction"] = m.nonfinite_fraction
        record["degenerate"] = m.degenerate
        record["trustworthy"] = m.trustworthy
        record["untrustworthy_reasons"] = m.untrustworthy_reasons
        record["seconds"] = self.seconds
        record["env_steps"] = self.env_steps
        record["seconds_per_estimate"] = self.seconds / self.reps
        record["env_steps_per_estimate"] = self.env_steps / self.reps
        return _jsonable(record)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def measure(
    problem: Problem,
    estimator: str,
    batch_size: int,
    reps: int,
    seed: int,
    theta: Any = None,
    estimator_options: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    reference_config: ReferenceConfig | None = None,
    workers: int | None = None,
) -> Measurement:
    """Draw `reps` (M) independent batches of `batch_size` (N) trajectories from π_θ on `problem`,
    estimate one gradient per batch with the named estimator, and reduce the M estimates to
    metrics against the reference value of the estimator's target (∇J unless it declares another):
    exact where the problem has it, else a sampled reference (`reference_config`, bench/reference.py)
    whose noise the bias metrics account for. `gradient_cosine` is measured against ∇J's reference under the
    same config: the target's own when that is ∇J (nothing more is computed), else one more (exact, or sampled
    and cached like any other). Before the first batch the estimator's `prepare` runs
    once (critics, behaviour policy); its time counts in `seconds`, the wall time (the reference's does not).
    The batches' randomness comes from `seed`, the reference's from its own seed. `workers`: processes drawing
    the chunks of batches, and of a sampled reference (bench.sampling.chunk_workers; None: its default); the
    numbers do not depend on it."""
    batch_size = check_int(batch_size, "batch_size", BATCH_SIZE)
    reps = check_int(reps, "reps", REPS, "variance needs two estimates")
    seed = check_seed(seed, "seed")
    config = resolve_estimator(estimator, estimator_options)
    config.check(problem, batch_size)
    check_memory(problem, batch_size, reps, config.group_size)
    target = config.target
    theta = problem.default_theta() if theta is None else problem.check_theta(theta)
    problem.check_policy_outputs(theta)
    reference_config = reference_config or ReferenceConfig()
    try:
        check_reference(problem, target, reference_config.kind)
    except ConfigError as err:  # no reference of this target here: say whose target it is
        raise ConfigError(f"estimator {estimator}: {err}") from None
    reference = reference_for(problem, theta, target, reference_config, show_progress, workers)
    gradient_reference = (reference if target == Target() else
                          reference_for(problem, theta, Target(), reference_config, show_progress, workers))

    began = time.perf_counter()
    prepared = config.prepare(problem, theta, make_generator(seed, PREPARE_STREAM))
    with progress_bar(reps, f"{problem.name}/{estimator} N={batch_size}", show_progress) as bar:
        draws = sorted(draw_estimates(problem, config, theta, batch_size, reps, batch_streams(problem, seed), bar,
                                      prepared, workers), key=lambda draw: draw.index)
    seconds = time.perf_counter() - began
    env_steps = sum(draw.env_steps for draw in draws)
    all_estimates = torch.cat([draw.estimates for draw in draws]).numpy()

    return Measurement(
        env=problem.name, env_options=dict(problem.options),
        estimator=estimator, estimator_options=config.as_dict(),
        target=target.label, declared_unbiased=config.unbiased(problem),
        estimator_info=dict(prepared.info),
        batch_size=batch_size, reps=reps, seed=seed, theta=theta.numpy(),
        gamma=problem.gamma, horizon=problem.horizon, reference=reference, gradient_reference=gradient_reference,
        metrics=gradient_metrics(all_estimates, reference.grad, reference.variance, reference.dof,
                                 None if gradient_reference is reference else gradient_reference.grad),
        seconds=seconds, env_steps=env_steps, estimates=all_estimates,
    )
