"""The reference gradient a measurement is held to: exact where the problem has it, otherwise a
high-sample estimate whose own error is known.

Sampled reference (problems without an exact gradient, or `kind="sampled"` on any problem): K independent
batches of `batch_size` trajectories at θ, each turned into one estimate g_k of the target by a declared
unbiased estimator (REFERENCE_ESTIMATOR: REINFORCE with reward-to-go and the leave-one-out baseline, plus the
entropy bonus when the target has one). Streaming: each chunk of batches is reduced to its count, mean and
per-coordinate sum of squared deviations and merged into running sums (Chan, Golub & LeVeque 1979), so memory
does not grow with the sample count. The result is

    g̃ = (1/K) Σ_k g_k,   v_p = s_p² / K  (s_p² the sample variance of coordinate p over the K batches),

an unbiased estimate of the target with per-coordinate variance v_p (standard error √v_p), and the mean
discounted return Ĵ with its standard error. The damped natural gradient (F + δI)⁻¹∇J is a ratio of
expectations with no unbiased estimator: it has no sampled reference.

References are cached on disk by a content hash of (problem, options, θ, reference estimator, sample count,
batch size, seed, code version): a second measurement at the same θ reuses the first's reference. Its draws
come from sub-stream REFERENCE_STREAM of its own seed, so they are independent of every measurement's batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.progress import progress_bar
from bench.reference_defaults import CACHE_ENV, DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES, KINDS
from bench.sampling import PREPARE_STREAM, batch_streams, chunk_bytes, chunk_streamed, draw_estimates, make_generator
from envs.memory import check_bytes
from envs.problem import Capability, Problem
from envs.spec import ConfigError, Int, check_int, check_seed
from estimators.registry import Target, resolve_estimator

REFERENCE_STREAM = 2  # sub-stream of the reference seed (batches: 0 of the measurement seed, prepare: 1)
REFERENCE_ESTIMATOR = "reinforce"
CODE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ReferenceConfig:
    """How the reference is obtained. kind: auto (exact when the problem has it, else sampled) | exact |
    sampled. samples, batch_size, seed: of a sampled reference. cache_dir: None = $PGVAR_CACHE_DIR or
    <project>/.cache/references; cache=False recomputes and stores nothing."""

    kind: str = "auto"
    samples: int = DEFAULT_SAMPLES
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0
    cache_dir: str | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"reference kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        object.__setattr__(self, "batch_size", check_int(self.batch_size, "reference batch_size", Int(2),
                                                         "leave-one-out baseline"))
        object.__setattr__(self, "samples", check_int(self.samples, "reference samples", Int(2 * self.batch_size),
                                                      "2 × reference batch size: a standard error needs two batches"))
        object.__setattr__(self, "seed", check_seed(self.seed, "reference seed"))
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ConfigError(f"reference cache_dir={self.cache_dir!r}: expected a folder path")

    @property
    def batches(self) -> int:
        """K, the reference batches: samples rounded down to a multiple of batch_size."""
        return self.samples // self.batch_size

    def directory(self) -> Path:
        return Path(self.cache_dir or os.environ.get(CACHE_ENV) or CODE_ROOT / ".cache" / "references")

    def check_cache(self) -> None:
        """ConfigError unless the cache folder is one this process can create and write, checked before a
        reference is computed (which can take minutes). Writability is tried, not read off permission bits
        (which root, /proc or a read-only mount make misleading): a temporary file is created and removed in
        the folder or, while it does not exist yet, in its nearest existing ancestor, so nothing is left
        behind. Nothing to check with caching off."""
        if not self.cache:
            return
        folder = self.directory()
        source = ("--reference-cache" if self.cache_dir else f"${CACHE_ENV}" if os.environ.get(CACHE_ENV)
                  else "the default reference cache")
        existing = folder  # where mkdir would start (a dangling symlink stops it)
        while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            what = "is" if existing == folder else f"lies under {existing}, which is"
            raise ConfigError(f"{source} {folder}: {what} not a folder; pass a folder (or --no-reference-cache)")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise ConfigError(f"{source} {folder}: cannot write in {existing} ({err.strerror or type(err).__name__}); "
                              "pass a writable folder (or --no-reference-cache)") from None


@dataclass(frozen=True)
class Reference:
    """A reference gradient g̃ [P] with per-coordinate variance v [P] (zeros when exact)."""

    kind: str  # "exact" | "sampled"
    grad: np.ndarray  # [P]
    variance: np.ndarray  # [P] v_p = Var(g̃_p): the squared standard errors
    objective: float  # J(θ), exact or the mean discounted return
    objective_se: float
    samples: int  # trajectories behind a sampled reference (0: exact)
    batches: int  # K (0: exact)
    estimator: str  # how it was computed, e.g. "reinforce(returns=reward_to_go, baseline=rloo) N=64"
    nonfinite: int  # reference batches with a non-finite estimate, excluded (counted, never hidden)
    env_steps: int  # alive environment steps behind it
    seconds: float  # wall time to compute it (of the original computation when loaded from the cache)
    cached: bool  # loaded from the disk cache

    @property
    def dof(self) -> int:
        """Degrees of freedom of each v_p (K − 1); 0 when exact."""
        return max(self.batches - 1, 0)


def exact_target(problem: Problem, theta: torch.Tensor, target: Target) -> torch.Tensor:
    """The exact value of `target` at θ [P], float64: ∇J_α = ∇J + α ∇E[Σ_t γ^t H], damped by (F + δI)⁻¹ for the
    natural gradient's target."""
    theta = theta.to(torch.float64)
    gradient = problem.exact_gradient(theta)
    if target.entropy_coef:
        gradient = gradient + target.entropy_coef * torch.func.grad(problem.entropy_objective)(theta)
    if target.damping is None:
        return gradient.detach()
    damped = problem.fisher(theta) + target.damping * torch.eye(len(theta), dtype=torch.float64)
    return torch.linalg.solve(damped, gradient.detach())


def exact_reference(problem: Problem, theta: torch.Tensor, target: Target) -> Reference:
    began = time.perf_counter()
    grad = exact_target(problem, theta, target).numpy()
    objective = float(problem.objective(theta).detach())
    problem.check_objective(theta, objective, grad)
    return Reference("exact", grad, np.zeros_like(grad), objective, 0.0, 0, 0, "exact", 0, 0,
                     time.perf_counter() - began, False)


def reference_for(problem: Problem, theta: torch.Tensor, target: Target, config: ReferenceConfig,
                  show_progress: bool = True, workers: int | None = None) -> Reference:
    """The reference of `target` (estimators.registry.Target) at θ [P] under `config`; a sampled one drawn by
    `workers` processes (bench.sampling.draw_estimates; the numbers do not depend on it)."""
    check_reference(problem, target, config.kind)
    if config.kind == "exact" or (config.kind == "auto" and problem.supports(Capability.EXACT_GRADIENT)):
        return exact_reference(problem, theta, target)
    return sampled_reference(problem, theta, target, config, show_progress, workers)


def check_reference(problem: Problem, target: Target, kind: str = "auto") -> None:
    """ConfigError unless `target` has a reference of this kind on `problem` (exact, or a sampled estimate)."""
    exact = problem.supports(Capability.EXACT_GRADIENT)
    if kind == "exact" and not exact:
        raise ConfigError(f"env {problem.name} has no exact gradient: use a sampled reference")
    if kind == "sampled" or not exact:
        reference_options(target)
        return
    if target.entropy_coef:
        problem.require(Capability.ENTROPY_OBJECTIVE, because=f"which the exact target {target.label} needs")
    if target.damping is not None:
        problem.require(Capability.FISHER, because=f"which the exact target {target.label} needs")


def reference_options(target: Target) -> dict:
    """The options of REFERENCE_ESTIMATOR that estimate `target` without bias."""
    if target.damping is not None:
        raise ConfigError(f"the target {target.label} (damped natural gradient) is a ratio of expectations with no "
                          "unbiased estimator, so it has no sampled reference; measure it on a problem with an exact "
                          "Fisher matrix")
    options = {"returns": "reward_to_go", "baseline": "rloo"}
    if target.entropy_coef:
        options["entropy_coef"] = target.entropy_coef
    return options


def code_version() -> str:
    """sha256 of the source that computes a reference (envs/, estimators/, bench/sampling.py, bench/harness.py and
    this file) and of the torch, gymnasium and mujoco versions (gym:<id> dynamics are theirs): any change
    invalidates cached references."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("torch", "gymnasium", "mujoco"):
        try:
            versions.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} absent")
    digest = hashlib.sha256(" ".join(versions).encode())
    files = sorted([*CODE_ROOT.glob("envs/*.py"), *CODE_ROOT.glob("estimators/*.py"),
                    CODE_ROOT / "bench" / "sampling.py", CODE_ROOT / "bench" / "harness.py",
                    CODE_ROOT / "bench" / "reference.py"])
    for file in files:
        digest.update(file.relative_to(CODE_ROOT).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key(problem: Problem, theta: torch.Tensor, options: dict, config: ReferenceConfig) -> str:
    # BLAS reductions may depend on the thread count; chunk-streamed draws always run on one thread
    threads = 1 if chunk_streamed(problem) else torch.get_num_threads()
    content = {
        "problem": problem.name, "problem_options": {k: repr(v) for k, v in problem.options.items()},
        "theta": hashlib.sha256(theta.to(torch.float64).contiguous().numpy().tobytes()).hexdigest(),
        "estimator": REFERENCE_ESTIMATOR, "estimator_options": options,
        "samples": config.samples, "batch_size": config.batch_size, "seed": config.seed,
        "code": code_version(), "threads": threads,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class RunningMoments:
    """Count, mean and per-coordinate sum of squared deviations of rows, merged chunk by chunk (the pairwise
    update of Chan, Golub & LeVeque 1979: exact, and free of the cancellation of Σx² − (Σx)²/n)."""

    def __init__(self, dim: int):
        self.count, self.mean, self.squares = 0, np.zeros(dim), np.zeros(dim)

    @staticmethod
    def of(rows: np.ndarray) -> RunningMoments:
        """The moments of rows [n, P] float64."""
        moments = RunningMoments(rows.shape[1])
        moments.add(rows)
        return moments

    def add(self, rows: np.ndarray) -> None:
        """rows [n, P] float64."""
        n = rows.shape[0]
        if n == 0:
            return
        chunk_mean = rows.mean(0)
        self.merge(n, chunk_mean, ((rows - chunk_mean) ** 2).sum(0))

    def merge(self, n: int, mean: np.ndarray, squares: np.ndarray) -> None:
        """Add the moments (count n, mean [P], squares [P]) of other rows."""
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.squares += squares + delta**2 * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    @property
    def variance_of_mean(self) -> np.ndarray:
        """s² / n per coordinate [P] (nan below two rows)."""
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        return self.squares / (self.count - 1) / self.count


def check_reference_memory(problem: Problem, batch_size: int, batches: int) -> None:
    """ConfigError when one chunk of a sampled reference's `batches` batches of `batch_size` trajectories would
    not fit in memory (its estimates stream into running moments: only a chunk is held)."""
    chunk, per_chunk = chunk_bytes(problem, batch_size, batches)
    check_bytes(per_chunk + problem.memory_bytes, f"the sampled reference on {problem.name} with batches of "
                f"{batch_size} trajectories (a chunk of {chunk} × {batch_size}, H = {problem.horizon}, "
                f"P = {problem.num_params})", "--reference-batch-size")


def sampled_reference(problem: Problem, theta: torch.Tensor, target: Target, config: ReferenceConfig,
                      show_progress: bool = True, workers: int | None = None) -> Reference:
    """g̃ from K = samples // batch_size reference batches (module docstring), from the cache when present; drawn by
    `workers` processes (None: bench.sampling.chunk_workers()). Each chunk is reduced to its moments as it arrives
    and they are merged in chunk order, so the result does not depend on which process finished first."""
    options = reference_options(target)
    estimator = resolve_estimator(REFERENCE_ESTIMATOR, options)
    estimator.check(problem, config.batch_size)
    described = (f"{REFERENCE_ESTIMATOR}({', '.join(f'{k}={v}' for k, v in options.items())}) "
                 f"N={config.batch_size}")
    path = config.directory() / f"{cache_key(problem, theta, options, config)}.npz"
    if config.cache and path.is_file() and (cached := _load(path, described)) is not None:
        return cached
    config.check_cache()
    check_reference_memory(problem, config.batch_size, config.batches)

    began = time.perf_counter()
    gradient, returns = RunningMoments(problem.num_params), RunningMoments(1)
    nonfinite = env_steps = 0
    prepared = estimator.prepare(problem, theta, make_generator(config.seed, REFERENCE_STREAM, PREPARE_STREAM))
    description = f"reference {problem.name} ({config.batches * config.batch_size} trajectories)"
    chunks = {}  # index → (the finite estimates' moments, the returns' moments): [P] each, never the estimates
    with progress_bar(config.batches, description, show_progress) as bar:
        for draw in draw_estimates(problem, estimator, theta, config.batch_size, config.batches,
                                   batch_streams(problem, config.seed, REFERENCE_STREAM), bar, prepared, workers):
            rows = draw.estimates.numpy()
            finite = np.isfinite(rows).all(axis=1)
            nonfinite += int((~finite).sum())
            env_steps += draw.env_steps
            chunks[draw.index] = (RunningMoments.of(rows[finite]), RunningMoments.of(draw.returns.reshape(-1, 1).numpy()))
    for index in sorted(chunks):
        for total, part in zip((gradient, returns), chunks.pop(index), strict=True):
            total.merge(part.count, part.mean, part.squares)
    if gradient.count < 2:
        raise ConfigError(f"reference for {problem.name}: {nonfinite} of {config.batches} reference batches gave "
                          "non-finite estimates; no reference")
    reference = Reference(
        "sampled", gradient.mean.copy(), gradient.variance_of_mean, float(returns.mean[0]),
        float(math.sqrt(returns.variance_of_mean[0])), config.batches * config.batch_size, gradient.count, described,
        nonfinite, env_steps, time.perf_counter() - began, False,
    )
    if config.cache:
        _store(path, reference)
    return reference


def _store(path: Path, reference: Reference) -> None:
    """Write atomically (a temporary file renamed into place), so concurrent sweep workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"objective": reference.objective, "objective_se": reference.objective_se, "samples": reference.samples,
            "batches": reference.batches, "nonfinite": reference.nonfinite, "env_steps": reference.env_steps,
            "seconds": reference.seconds}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as handle:
        np.savez(handle, grad=reference.grad, variance=reference.variance, meta=json.dumps(meta))
    os.replace(handle.name, path)


def _load(path: Path, described: str) -> Reference | None:
    """The cached reference, or None when the file cannot be read whole (cut off, or not one of ours):
    then it is recomputed and replaced."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            return Reference("sampled", stored["grad"], stored["variance"], meta["objective"], meta["objective_se"],
                             meta["samples"], meta["batches"], described, meta["nonfinite"], meta["env_steps"],
                             meta["seconds"], True)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
