"""Drawing replicate batches: the seeded generators, the chunking that bounds memory, and the loop that turns
each chunk of batches into its estimates. Shared by the measurement (bench.harness) and the sampled reference
(bench.reference), which both sit above it."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from bench.progress import ProgressLines, progress_bar  # noqa: F401 (progress_bar: re-exported for its callers)
from envs.problem import Batch, Problem
from estimators.registry import Estimator, Prepared

# Replicates are drawn and estimated in chunks so memory stays bounded; the chunk size depends
# only on (N, H, P), so the numbers depend only on the configuration and the seed.
STEPS_PER_CHUNK = 2**22  # trajectory steps held at once (M_chunk × N × H)
PARAMS_PER_CHUNK = 2**24  # per-trajectory gradient entries held at once (M_chunk × N × P)
PREPARE_STREAM = 1  # the sub-stream of the seed an estimator's `prepare` draws from (batches: the root)
# Per-trajectory gradient entries [M_chunk, N, P] are held with their weighted copies and baselines.
GRADIENT_COPIES = 3


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A torch.Generator for sub-stream `stream` of `seed` (numpy SeedSequence derivation)."""
    state = np.random.SeedSequence(seed, spawn_key=stream).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def chunk_reps(problem: Problem, batch_size: int, reps: int) -> int:
    by_steps = STEPS_PER_CHUNK // (batch_size * problem.horizon)
    by_params = PARAMS_PER_CHUNK // (batch_size * problem.num_params)
    return max(1, min(reps, by_steps, by_params))


def chunk_bytes(problem: Problem, batch_size: int, reps: int) -> tuple[int, float]:
    """(M_chunk, rough peak bytes of one chunk of `chunk_reps` batches: its sampled trajectories and their
    per-trajectory gradients)."""
    chunk = chunk_reps(problem, batch_size, reps)
    trajectories = chunk * batch_size
    return chunk, problem.sample_bytes(trajectories) + 8.0 * GRADIENT_COPIES * trajectories * problem.num_params


def draw_estimates(problem: Problem, estimator: Estimator, theta: torch.Tensor, batch_size: int, reps: int,
                   generator: torch.Generator, bar: tqdm | ProgressLines | None = None,
                   prepared: Prepared | None = None) -> Iterator[tuple[torch.Tensor, Batch, float]]:
    """`reps` independent batches of `batch_size` trajectories drawn from π at `prepared.sample_theta` (θ when
    None), in chunks of `chunk_reps`, each chunk turned into its estimates at θ → yields (estimates [M_chunk, P]
    detached, the chunk's Batch, seconds spent on it), advancing `bar` (a `progress_bar`) by each chunk's count.
    `prepared` defaults to the options as keyword arguments."""
    prepared = prepared or Prepared(estimator.kwargs())
    sample_theta = theta if prepared.sample_theta is None else prepared.sample_theta
    chunk = chunk_reps(problem, batch_size, reps)
    for start in range(0, reps, chunk):
        count = min(chunk, reps - start)
        began = time.perf_counter()
        batch = problem.sample(sample_theta, count, batch_size, generator, estimator.group_size)
        estimate = estimator.estimate(problem.policy, theta, batch, prepared).detach()
        yield estimate, batch, time.perf_counter() - began
        if bar is not None:
            bar.update(count)
