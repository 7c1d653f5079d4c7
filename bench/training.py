"""`train`: one training run — an estimator driving torch.optim from θ₀ for a sample budget — and its learning curve.

A run is (problem, estimator config, optimizer `sgd` | `adam`, learning rate, batch size N, budget B in
trajectories, seed). It makes K = B // N updates; update k (0 ≤ k < K) draws one batch of N trajectories under
π_{θ_k}, runs the estimator's `prepare` at θ_k (critics, behaviour policies depend on θ), computes one estimate
ĝ_k [P], puts it in `param.grad` and steps the optimizer with `maximize=True`:

    sgd:  θ_{k+1} = θ_k + lr · ĝ_k
    adam: θ_{k+1} = θ_k + lr · m̂_k / (√v̂_k + ε)   (torch.optim.Adam's defaults β = (0.9, 0.999), ε = 1e-8)

At every θ_k, k = 0…K, the curve records J(θ_k) — exact where the problem has Capability.EXACT_GRADIENT, else the
mean discounted return of a held-out evaluation batch of `eval_episodes` trajectories with its standard error, at
every `eval_every`-th update and at the last — and the normalized score

    s_k = (J(θ_k) − J(θ₀)) / (J* − J(θ₀)),   J* = problem.optimal_objective()  (Capability.OPTIMUM; else s = NaN),

plus ‖ĝ_k‖, the trajectories k·N and env steps consumed by the training batches (an estimator's `prepare` may draw
more, e.g. a fitted critic's `critic_samples`; those and the evaluation batches are not counted), and wall time.

Failure modes are recorded, never silent:
- an estimate with a non-finite coordinate is not applied: the update is skipped (θ_{k+1} = θ_k, the optimizer's
  state untouched) and counted in `nonfinite` (`nonfinite_updates` lists the k);
- a θ or J that becomes non-finite marks the run `diverged` at that update (`diverged_at` = k, the first θ_k that
  is not finite or whose J is not) and stops it. The run is kept; its final score and its area under the curve
  are −∞ (DIVERGED_SCORE: the worst value there is, so every ranking, median or IQM puts it last; JSON null with
  `diverged: true`), and it counts as failed.

Randomness: three families of generators derived from the seed by `bench.sampling.make_generator`, one per update
k: (seed, TRAIN_STREAM, SAMPLE, k) for the training batch, (seed, TRAIN_STREAM, PREPARE, k) for `prepare`, (seed,
TRAIN_STREAM, EVALUATE, k) for the evaluation batch. The same seed gives the same curve (apart from `seconds`), and
runs of different estimators, optimizers or learning rates with the same seed draw their k-th batch from the same
stream (common random numbers), whatever happened before it.

Per-run summaries: `final_score` s_K, `auc` = the trapezoid area under s against trajectories / budget (so ≤ 1 for a
run at the optimum from the start of its budget), `samples_to_50` / `samples_to_90` and `updates_to_50` /
`updates_to_90`, the first evaluated update whose s reaches 0.5 / 0.9 (None when never reached within the budget:
right-censored), and `failed` = final s below FAILURE_SCORE (None without J*).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from bench.harness import _jsonable, check_memory
from bench.progress import progress_bar
from bench.sampling import draw_estimates, make_generator
from envs.problem import Capability, Problem
from envs.spec import SEED, Choice, Config, ConfigError, Float, Int, option
from estimators.registry import Estimator, resolve_estimator

OPTIMIZERS = ("sgd", "adam")
FAILURE_SCORE = 0.5  # a run whose final normalized score is below this failed (e.g. stuck on a sub-optimal arm)
DIVERGED_SCORE = -math.inf  # the final score and AUC of a diverged run: the worst there is
TARGETS = (0.5, 0.9)  # fractions of J* − J(θ₀) whose first crossing is reported
# Sub-streams of the seed (bench.sampling.make_generator(seed, TRAIN_STREAM, <stream>, k)); `measure` uses the root
# and (1,), so no training draw coincides with a measurement's.
TRAIN_STREAM = 2
SAMPLE, PREPARE, EVALUATE = 0, 1, 2


@dataclass(frozen=True)
class TrainSettings(Config):
    """How a run trains: the optimizer, its step, the batch and the budget, the seed and how J is evaluated where it
    is not exact. Every way in (CLI strings, TOML values, Python) is parsed by the fields' parsers, so settings that
    exist are valid; errors are one line naming the field and its range."""

    kind: ClassVar[str] = "training"
    name: ClassVar[str] = "run"

    optimizer: str = option(Choice(OPTIMIZERS), "sgd", "torch.optim optimizer, maximize=True")
    lr: float = option(Float(0.0), 0.1, "learning rate (0 leaves θ unchanged)")
    batch_size: int = option(Int(1), 8, "N: trajectories per update")
    budget: int = option(Int(1), 4096, "training trajectories; K = budget // batch_size updates")
    seed: int = option(SEED, 0, "root seed of every generator of the run")
    eval_episodes: int = option(Int(2), 256, "trajectories of each evaluation batch where J is not exact")
    eval_every: int = option(Int(1), 10, "updates between evaluations where J is not exact (and the last)")

    def validate(self) -> None:
        if self.budget < self.batch_size:
            raise ConfigError(f"training run: budget={self.budget} is below batch_size={self.batch_size}; "
                              "a run needs budget ≥ batch_size (K = budget // batch_size updates)")

    @property
    def updates(self) -> int:
        """K = budget // batch_size."""
        return self.budget // self.batch_size


@dataclass(frozen=True)
class TrainingRun:
    env: str
    env_options: dict[str, Any]
    estimator: str
    estimator_options: dict[str, Any]
    declared_unbiased: bool
    estimator_info: dict[str, Any]  # what `prepare` reported at θ₀
    settings: TrainSettings
    gamma: float
    horizon: int
    objective_kind: str  # "exact" | "evaluated"
    optimum: float  # J*, NaN without Capability.OPTIMUM
    theta0: np.ndarray  # [P]
    theta: np.ndarray  # [P] the last θ (the diverged one if it diverged)
    # The curve: one entry per recorded θ_k, k = 0 … K (or … diverged_at).
    update: np.ndarray  # [K+1] int k
    samples: np.ndarray  # [K+1] training trajectories consumed before θ_k: k·N
    env_steps: np.ndarray  # [K+1] alive env steps of those trajectories
    seconds: np.ndarray  # [K+1] wall time since the start of the run
    objective: np.ndarray  # [K+1] J(θ_k); NaN where not evaluated
    objective_se: np.ndarray  # [K+1] its standard error (0 when exact, NaN where not evaluated)
    score: np.ndarray  # [K+1] s_k (NaN without J*, or where not evaluated)
    grad_norm: np.ndarray  # [K+1] ‖ĝ_k‖ of the estimate at θ_k (NaN at the last θ, which gets none)
    nonfinite_updates: tuple[int, ...]  # the k whose estimate was non-finite and skipped
    diverged_at: int | None  # the first k with θ_k or J(θ_k) non-finite; None if the run did not diverge

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def nonfinite(self) -> int:
        return len(self.nonfinite_updates)

    @property
    def evaluated(self) -> np.ndarray:
        """Indices of the recorded θ_k where J was evaluated. → [E] int"""
        return np.flatnonzero(~np.isnan(self.objective))

    @property
    def final_objective(self) -> float:
        return float(self.objective[-1])

    @property
    def final_score(self) -> float:
        return DIVERGED_SCORE if self.diverged else float(self.score[-1])

    @property
    def auc(self) -> float:
        """∫ s d(trajectories / budget) by the trapezoid rule over the evaluated points; −∞ if diverged."""
        if self.diverged:
            return DIVERGED_SCORE
        at = self.evaluated
        x, y = self.samples[at] / self.settings.budget, self.score[at]
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))

    def reached(self, fraction: float) -> int | None:
        """The first recorded index k (an update count) whose evaluated s_k ≥ fraction; None if none (censored)."""
        at = self.evaluated
        hits = at[self.score[at] >= fraction]
        return int(self.update[hits[0]]) if hits.size else None

    @property
    def failed(self) -> bool | None:
        if self.diverged:
            return True
        final = self.final_score
        return None if math.isnan(final) else final < FAILURE_SCORE

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "updates": int(self.update[-1]), "samples": int(self.samples[-1]), "env_steps": int(self.env_steps[-1]),
            "seconds": float(self.seconds[-1]), "final_objective": self.final_objective,
            "final_score": self.final_score, "auc": self.auc, "diverged": self.diverged,
            "diverged_at": self.diverged_at, "nonfinite": self.nonfinite, "failed": self.failed,
            "failure_score": FAILURE_SCORE,
        }
        for fraction in TARGETS:
            k = self.reached(fraction)
            percent = round(100 * fraction)
            out[f"updates_to_{percent}"] = k
            out[f"samples_to_{percent}"] = None if k is None else k * self.settings.batch_size
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: the configuration, the curve and the summary (NaN and ±∞ become None)."""
        record: dict[str, Any] = {
            "env": self.env, "env_options": self.env_options,
            "estimator": self.estimator, "estimator_options": self.estimator_options,
            "declared_unbiased": self.declared_unbiased, "estimator_info": self.estimator_info,
            **self.settings.as_dict(), "updates_planned": self.settings.updates,
            "num_params": int(self.theta0.size), "gamma": self.gamma, "horizon": self.horizon,
            "objective_kind": self.objective_kind, "optimum": self.optimum,
            "theta0": self.theta0, "theta": self.theta,
            **self.summary(), "nonfinite_updates": list(self.nonfinite_updates),
            "curve": {"update": self.update, "samples": self.samples, "env_steps": self.env_steps,
                      "seconds": self.seconds, "objective": self.objective, "objective_se": self.objective_se,
                      "score": self.score, "grad_norm": self.grad_norm},
        }
        return _jsonable(record)


def normalized_score(objective: np.ndarray | float, start: float, optimum: float) -> np.ndarray | float:
    """s = (J − J(θ₀)) / (J* − J(θ₀)): 0 at θ₀, 1 at the optimum; NaN when J* ≤ J(θ₀) (no gap to close)."""
    gap = optimum - start
    if gap > 0:
        return (objective - start) / gap
    return np.full_like(objective, math.nan) if isinstance(objective, np.ndarray) else math.nan


def _optimizer(settings: TrainSettings, param: torch.nn.Parameter) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam([param], lr=settings.lr, maximize=True)
    return torch.optim.SGD([param], lr=settings.lr, maximize=True)


def _evaluate(problem: Problem, theta: torch.Tensor, settings: TrainSettings, k: int) -> tuple[float, float]:
    """(J(θ), its SE): exact with SE 0, or the mean discounted return of `eval_episodes` fresh trajectories."""
    if problem.supports(Capability.EXACT_GRADIENT):
        with torch.no_grad():
            return float(problem.objective(theta)), 0.0
    batch = problem.sample(theta, 1, settings.eval_episodes, make_generator(settings.seed, TRAIN_STREAM, EVALUATE, k))
    returns = (batch.rewards * batch.discount).sum(-1).reshape(-1).to(torch.float64)  # [N_eval]
    return float(returns.mean()), float(returns.std(unbiased=True)) / math.sqrt(returns.numel())


def train(problem: Problem, estimator: str | Estimator, settings: TrainSettings | None = None,
          estimator_options: Mapping[str, Any] | None = None, theta: Any = None,
          show_progress: bool = True) -> TrainingRun:
    """One training run of the module docstring on `problem` from θ₀ = `theta` (default: the problem's θ), with the
    named estimator and its options (or an Estimator config) and `settings`. ConfigError before any update for
    combinations that do not apply or do not fit in memory."""
    settings = settings or TrainSettings()
    if not isinstance(settings, TrainSettings):
        raise ConfigError(f"settings must be a TrainSettings, not {type(settings).__name__}")
    config = estimator if isinstance(estimator, Estimator) else resolve_estimator(estimator, estimator_options)
    if isinstance(estimator, Estimator) and estimator_options:
        raise ConfigError("pass estimator options in the Estimator config or as estimator_options, not both")
    size = settings.batch_size
    config.check(problem, size)
    check_memory(problem, size, 1, config.group_size)
    exact = problem.supports(Capability.EXACT_GRADIENT)
    if not exact:
        check_memory(problem, settings.eval_episodes, 1)
    theta0 = problem.default_theta() if theta is None else problem.check_theta(theta)
    if exact:
        with torch.no_grad():
            j0 = float(problem.objective(theta0))
        problem.check_objective(theta0, j0, problem.exact_gradient(theta0).detach().numpy())
    else:
        problem.check_policy_outputs(theta0)
    optimum = problem.optimal_objective() if problem.supports(Capability.OPTIMUM) else math.nan

    param = torch.nn.Parameter(theta0.clone())
    optimizer = _optimizer(settings, param)
    K, every = settings.updates, 1 if exact else settings.eval_every
    rows: dict[str, list] = {name: [] for name in ("samples", "env_steps", "seconds", "objective", "objective_se",
                                                   "grad_norm")}
    nonfinite: list[int] = []
    diverged_at: int | None = None
    info: dict[str, Any] = {}
    steps, began = 0, time.perf_counter()

    def record(k: int, theta_k: torch.Tensor) -> bool:
        """Append θ_k's row; False if θ_k or its J is non-finite (the run diverged at k)."""
        finite = bool(torch.isfinite(theta_k).all())
        if finite and (k % every == 0 or k == K):
            objective, se = _evaluate(problem, theta_k, settings, k)
            finite = math.isfinite(objective)
        else:
            objective, se = (math.nan, math.nan)
        for name, value in (("samples", k * size), ("env_steps", steps), ("seconds", time.perf_counter() - began),
                            ("objective", objective), ("objective_se", se), ("grad_norm", math.nan)):
            rows[name].append(value)
        return finite

    with progress_bar(K, f"train {problem.name}/{config.name} {settings.optimizer} lr={settings.lr:g}",
                      show_progress) as bar:
        for k in range(K + 1):
            theta_k = param.detach().clone()
            if not record(k, theta_k):
                diverged_at = k
                break
            if k == K:
                break
            prepared = config.prepare(problem, theta_k, make_generator(settings.seed, TRAIN_STREAM, PREPARE, k))
            if k == 0:
                info = dict(prepared.info)
            generator = make_generator(settings.seed, TRAIN_STREAM, SAMPLE, k)
            draw = next(draw_estimates(problem, config, theta_k, size, 1, generator, None, prepared))
            steps += draw.env_steps
            gradient = draw.estimates[0].to(torch.float64)
            rows["grad_norm"][-1] = float(torch.linalg.vector_norm(gradient))
            if torch.isfinite(gradient).all():
                param.grad = gradient.clone()
                optimizer.step()
            else:
                nonfinite.append(k)
            bar.update(1)

    objective = np.asarray(rows["objective"], dtype=np.float64)
    score = normalized_score(objective, objective[0], optimum)
    count = len(objective)
    return TrainingRun(
        env=problem.name, env_options=dict(problem.options), estimator=config.name,
        estimator_options=config.as_dict(), declared_unbiased=config.unbiased(problem), estimator_info=info,
        settings=settings, gamma=problem.gamma, horizon=problem.horizon,
        objective_kind="exact" if exact else "evaluated", optimum=optimum,
        theta0=theta0.numpy(), theta=param.detach().clone().numpy(),
        update=np.arange(count), samples=np.asarray(rows["samples"], dtype=np.int64),
        env_steps=np.asarray(rows["env_steps"], dtype=np.int64), seconds=np.asarray(rows["seconds"]),
        objective=objective, objective_se=np.asarray(rows["objective_se"], dtype=np.float64), score=score,
        grad_norm=np.asarray(rows["grad_norm"], dtype=np.float64), nonfinite_updates=tuple(nonfinite),
        diverged_at=diverged_at,
    )


__all__ = ["DIVERGED_SCORE", "FAILURE_SCORE", "OPTIMIZERS", "TrainSettings", "TrainingRun", "train"]
