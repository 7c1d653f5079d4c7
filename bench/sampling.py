"""Drawing replicate batches: the seeded generators, the chunking that bounds memory, and the loop that turns
each chunk of batches into its estimates. Shared by the measurement (bench.harness) and the sampled reference
(bench.reference), which both sit above it.

Problems measured against a sampled reference (classic control, `gym:<id>`: no exact gradient) draw each chunk
from a generator of its own, sub-stream (…, BATCH_STREAM, k) of the seed for chunk k (`ChunkStreams`). The chunk
boundaries depend only on (N, H, P, M), so each chunk's batches and estimates are a function of the configuration
and the seed alone, and chunks can run in worker processes (`chunk_workers`, one torch thread each) without
changing a number: 1 worker and 2 give bitwise-equal estimates (tests/test_chunk_workers.py). The main process
computes chunks too, from the last one down, while the helpers take them from the first one up; a job whose work
would not outlast a helper's start-up (importing torch, ≈ 1.5 s) starts none and runs in-process. Exact problems (cheap to sample; their
pinned numbers predate the chunk streams) draw every chunk from one generator, in order, in-process.
"""

from __future__ import annotations

import atexit
import functools
import os
import queue
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from bench.progress import ProgressLines
from bench.reference_defaults import DEFAULT_CHUNK_WORKERS, WORKERS_ENV
from envs.memory import memory_limit
from envs.problem import Batch, Capability, Problem, ProblemConfig
from envs.threads import single_thread
from estimators.registry import Estimator, Prepared
from estimators.returns import total_return

PREPARE_STREAM = 1  # the sub-stream of the seed an estimator's `prepare` draws from (batches: the root)
BATCH_STREAM = 0  # chunk k of a chunk-streamed draw uses sub-stream (…, BATCH_STREAM, k) (`ChunkStreams`)


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A torch.Generator for sub-stream `stream` of `seed` (numpy SeedSequence derivation)."""
    state = np.random.SeedSequence(seed, spawn_key=stream).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class ChunkStreams:
    """The generators of a chunk-streamed draw: chunk k from sub-stream (*stream, BATCH_STREAM, k) of `seed`."""

    seed: int
    stream: tuple[int, ...] = ()

    def generator(self, index: int) -> torch.Generator:
        return make_generator(self.seed, *self.stream, BATCH_STREAM, index)


def chunk_streamed(problem: Problem) -> bool:
    """Whether `problem`'s batches are drawn chunk by chunk from their own generators, on one thread each (those
    measured against a sampled reference: no exact gradient)."""
    return not problem.supports(Capability.EXACT_GRADIENT)


def batch_streams(problem: Problem, seed: int, *stream: int) -> torch.Generator | ChunkStreams:
    """Where the batches of sub-stream `stream` of `seed` come from on `problem`: per-chunk generators
    (`ChunkStreams`) when it is `chunk_streamed`, else one generator for every chunk in turn."""
    if chunk_streamed(problem):
        return ChunkStreams(seed, stream)
    return make_generator(seed, *stream)


def chunk_reps(problem: Problem, batch_size: int, reps: int) -> int:
    """M_chunk: the batches of `batch_size` trajectories drawn and estimated at once (envs.problem.CHUNK_BYTES)."""
    return problem.chunk_units(batch_size, reps)


def chunk_bytes(problem: Problem, batch_size: int, reps: int) -> tuple[int, float]:
    """(M_chunk, rough peak bytes of one chunk of `chunk_reps` batches: its sampled trajectories and their
    per-trajectory gradients)."""
    chunk = chunk_reps(problem, batch_size, reps)
    return chunk, problem.chunk_bytes(chunk * batch_size)


@dataclass(frozen=True)
class ChunkDraw:
    """One chunk's outcome: `index` among the chunks, its estimates [M_chunk, P] (detached), the alive env steps of
    its batches, their discounted returns Σ_t γ^t r_{t+1} [M_chunk, N] float64, the seconds it took and the id of
    the process that drew it."""

    index: int
    estimates: torch.Tensor
    env_steps: int
    returns: torch.Tensor
    seconds: float
    process: int


def _draw_chunk(problem: Problem, estimator: Estimator, theta: torch.Tensor, sample_theta: torch.Tensor,
                prepared: Prepared, batch_size: int, index: int, count: int,
                generator: torch.Generator) -> ChunkDraw:
    began = time.perf_counter()
    batch: Batch = problem.sample(sample_theta, count, batch_size, generator, estimator.group_size)
    estimate = estimator.estimate(problem.policy, theta, batch, prepared).detach()
    returns = total_return(batch.rewards, batch.discount)  # [M_chunk, N]: the sampled reference's J
    return ChunkDraw(index, estimate, batch.env_steps, returns, time.perf_counter() - began, os.getpid())


def draw_estimates(problem: Problem, estimator: Estimator, theta: torch.Tensor, batch_size: int, reps: int,
                   generator: torch.Generator | ChunkStreams, bar: tqdm | ProgressLines | None = None,
                   prepared: Prepared | None = None, workers: int | None = None) -> Iterator[ChunkDraw]:
    """`reps` independent batches of `batch_size` trajectories drawn from π at `prepared.sample_theta` (θ when
    None), in chunks of `chunk_reps`, each chunk turned into its estimates at θ → yields one `ChunkDraw` per chunk,
    advancing `bar` (a `progress_bar`) by each chunk's count. `prepared` defaults to the options as keyword
    arguments. `generator`: one torch.Generator drawn by every chunk in turn (the chunks are then yielded in
    order), or `ChunkStreams` (`batch_streams`): chunk k from its own generator, on up to `workers` processes
    (None: `chunk_workers()`), yielded as they finish — callers order them by `index`."""
    prepared = prepared or Prepared(estimator.kwargs())
    sample_theta = theta if prepared.sample_theta is None else prepared.sample_theta
    workers = None if workers is None else check_workers(workers)
    chunk = chunk_reps(problem, batch_size, reps)
    chunks = [(k, min(chunk, reps - start)) for k, start in enumerate(range(0, reps, chunk))]  # (index, M_chunk)
    if isinstance(generator, torch.Generator):
        for index, count in chunks:
            yield _draw_chunk(problem, estimator, theta, sample_theta, prepared, batch_size, index, count, generator)
            if bar is not None:
                bar.update(count)
        return
    # the default is read only here, where it applies: not on every training update, nor on exact problems
    workers = chunk_workers() if workers is None else workers
    # memory: every worker holds a chunk at once
    workers = max(1, min(workers, len(chunks), int(memory_limit() // max(chunk_bytes(problem, batch_size, reps)[1], 1))))
    task = _ChunkTask(problem.config, estimator, theta.detach(), sample_theta.detach(), prepared, batch_size, generator)
    parallel = workers > 1 and not (_IN_HELPER or _HELPERS_FAILED)
    draws = _draw_in_workers(task, problem, chunks, workers - 1) if parallel else (
        _draw_locally(task, problem, index, count) for index, count in chunks)
    for draw in draws:
        yield draw
        if bar is not None:
            bar.update(draw.estimates.shape[0])


# ------------------------------------------------------------------------------------ chunks in worker processes


# Spawning a helper and importing torch, envs and estimators in it: measured 1.3–1.6 s on the quiet 2-core machine.
HELPER_START_SECONDS = 1.5
_IN_HELPER = False  # set in a helper process, and in a sweep's worker (bench.executors): no nested pools
_HELPERS_FAILED = False  # helpers could not start in this process: draw in-process from now on


def chunk_workers() -> int:
    """The default number of processes drawing a chunk-streamed job's chunks: $PGVAR_CHUNK_WORKERS, else
    min(DEFAULT_CHUNK_WORKERS, cores); 1 inside a sweep's worker process or a chunk helper (pools never nest)."""
    if _IN_HELPER:
        return 1
    text = os.environ.get(WORKERS_ENV)
    if text:
        from envs.spec import ConfigError, Int

        try:
            return Int(1)(text)
        except ValueError as err:
            raise ConfigError(f"${WORKERS_ENV}={text}: expected {err}") from None
    return max(1, min(DEFAULT_CHUNK_WORKERS, os.cpu_count() or 1))


def check_workers(value: object) -> int:
    """`value` as a number of chunk workers from a Python caller (an integer ≥ 1), or ConfigError."""
    from envs.spec import Int, check_int

    return check_int(value, "chunk workers", Int(1), "processes drawing the chunks of batches, --chunk-workers")


def no_chunk_workers() -> None:
    """Make this process draw chunks in-process only (a sweep's worker: its cells already run in parallel)."""
    global _IN_HELPER
    _IN_HELPER = True


@dataclass(frozen=True)
class _ChunkTask:
    """What a helper needs to draw a chunk: the problem's config (it builds the problem once), the estimator, θ,
    the sampling θ, the prepared arguments, N and the streams."""

    problem: ProblemConfig
    estimator: Estimator
    theta: torch.Tensor
    sample_theta: torch.Tensor
    prepared: Prepared
    batch_size: int
    streams: ChunkStreams


def _draw_locally(task: _ChunkTask, problem: Problem, index: int, count: int) -> ChunkDraw:
    """Chunk `index` on one torch thread (what a helper uses), so that where it runs does not change its numbers."""
    with single_thread():
        return _draw_chunk(problem, task.estimator, task.theta, task.sample_theta, task.prepared, task.batch_size,
                           index, count, task.streams.generator(index))


@functools.lru_cache(maxsize=4)
def _built(config: ProblemConfig) -> Problem:
    return config.build()


def _helper_draw(task: _ChunkTask, index: int, count: int) -> ChunkDraw:
    """In a helper process: chunk `index` of `task`."""
    return _draw_locally(task, _built(task.problem), index, count)


def _init_helper() -> None:
    """A helper: one torch thread, no pools of its own, and the modules a chunk needs imported before it says it
    is ready (so the main process hands it chunks only once it can start on them)."""
    torch.set_num_threads(1)
    no_chunk_workers()
    import envs  # noqa: F401 - registers the problems
    import estimators  # noqa: F401 - registers the estimators


def _ready() -> bool:
    return True


_POOLS: dict[int, tuple[ProcessPoolExecutor, Future]] = {}  # helpers → the pool and its start-up probe


def _pool(helpers: int) -> tuple[ProcessPoolExecutor, Future]:
    """A pool of `helpers` spawned helper processes, started once per process and reused by every later draw
    (its start-up is paid once), with a probe that completes when a helper has started."""
    if helpers not in _POOLS:
        import multiprocessing

        # spawn, not fork: a forked child inherits the parent's torch/OpenMP thread state
        pool = ProcessPoolExecutor(helpers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_helper)
        _POOLS[helpers] = (pool, pool.submit(_ready))
    return _POOLS[helpers]


@atexit.register
def close_pools(wait: bool = False) -> None:
    """Stop this process's helper pools (at exit; `wait`: until the helpers have exited)."""
    for pool, _ in _POOLS.values():
        pool.shutdown(wait=wait, cancel_futures=True)
    _POOLS.clear()


def start_chunk_workers(workers: int | None = None) -> None:
    """Start this process's helper pool for `workers` chunk workers (None: `chunk_workers()`) now, and wait until a
    helper is ready: for a session that will run many short chunk-streamed jobs, each of which alone would not
    outlast the helpers' start-up (`_draw_in_workers` starts them only for one that would)."""
    workers = chunk_workers() if workers is None else check_workers(workers)
    if workers > 1 and not (_IN_HELPER or _HELPERS_FAILED):
        try:
            _pool(workers - 1)[1].result()
        except BrokenProcessPool as err:  # e.g. a script without a __main__ guard: chunks are drawn in-process
            _discard_pool(workers - 1, err, before_start=True)


def _draw_in_workers(task: _ChunkTask, problem: Problem, chunks: list[tuple[int, int]],
                     helpers: int) -> Iterator[ChunkDraw]:
    """The chunks drawn by this process (from the last down) and `helpers` helper processes (from the first up, one
    chunk each at a time, fed by a thread per helper once the pool has started) → draws as they finish. A chunk whose
    helper died, or that a pool which could not start never took, is drawn here (the same numbers, by
    construction); an error raised by the estimator in a helper is raised here. Without a pool yet, this process
    draws the last chunk first and starts one only if the work left, at that chunk's pace, would outlast
    HELPER_START_SECONDS; else it draws every chunk itself (a one-off short job neither waits for helpers to start
    nor, at exit, for them to stop)."""
    if helpers not in _POOLS:
        index, count = chunks[-1]
        draw = _draw_locally(task, problem, index, count)
        yield draw
        chunks = chunks[:-1]
        left = sum(count for _, count in chunks) * draw.seconds / draw.estimates.shape[0]  # seconds, at this pace
        if left <= HELPER_START_SECONDS:
            for index, count in reversed(chunks):
                yield _draw_locally(task, problem, index, count)
            return
    pool, started = _pool(helpers)
    lock = threading.Lock()
    bounds = [0, len(chunks)]  # [front, back): the chunks nobody has taken yet
    orphans: list[tuple[int, int]] = []  # taken by a helper that died
    in_flight = [0]  # chunks a helper has taken whose draw the main thread has not received yet
    finished: queue.Queue = queue.Queue()  # a draw, an error, or None when a feeder ends

    def take(front: bool) -> tuple[int, int] | None:
        with lock:
            if not front and orphans:
                return orphans.pop()
            if bounds[0] >= bounds[1]:
                return None
            bounds[not front] += 1 if front else -1
            in_flight[0] += front
            return chunks[bounds[0] - 1] if front else chunks[bounds[1]]

    def feed() -> None:
        chunk = None
        try:
            started.result()
            while (chunk := take(front=True)) is not None:
                index, count = chunk
                finished.put(pool.submit(_helper_draw, task, index, count).result())
        except BrokenProcessPool as err:  # killed, or could not start (e.g. a script without a __main__ guard)
            _discard_pool(helpers, err, before_start=not started.done() or started.exception() is not None)
            if chunk is not None:
                with lock:
                    orphans.append(chunk)
                    in_flight[0] -= 1
        except BaseException as err:  # noqa: BLE001 - the estimator's own error: raised by the main thread
            finished.put(err)
        finally:
            finished.put(None)

    for _ in range(helpers):
        threading.Thread(target=feed, daemon=True).start()
    try:
        while True:
            if (chunk := take(front=False)) is not None:
                index, count = chunk
                yield _draw_locally(task, problem, index, count)
                if finished.empty():
                    continue
            else:
                # nothing left to take: done unless a helper is drawing one (a helper still starting holds none)
                with lock:
                    if not (in_flight[0] or orphans) and finished.empty():
                        return
            item = finished.get()
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                with lock:
                    in_flight[0] -= 1
                yield item
    finally:  # done, failed or abandoned: the feeders take no more chunks
        with lock:
            bounds[0] = bounds[1]


def _discard_pool(helpers: int, err: BaseException, before_start: bool) -> None:
    """Forget a broken pool (the next draw starts another), or, when it never started, every pool of this process."""
    global _HELPERS_FAILED
    entry = _POOLS.pop(helpers, None)
    if entry is not None:
        entry[0].shutdown(wait=False, cancel_futures=True)
    if before_start and not _HELPERS_FAILED:
        import warnings

        _HELPERS_FAILED = True
        warnings.warn(f"chunk workers could not start ({err}); drawing in this process (a script that calls pgvar "
                      "needs an `if __name__ == \"__main__\":` guard for worker processes)", RuntimeWarning,
                      stacklevel=2)
