"""Chunks of batches drawn by worker processes (bench/sampling.py): on a problem with a sampled reference, every chunk
draws from its own sub-stream, so the estimates, the measurement and the sampled reference are bitwise the same with
1 worker and with 2; the chunked draw equals its slow twin, a plain loop over the chunks' generators; exact problems
keep one stream; a sweep's worker and a helper draw in-process; a pool that cannot start leaves the numbers as they
are. Chunks are made small (envs.problem.CHUNK_BYTES patched in this process, which is where chunk boundaries are
decided) so that a cheap job has several."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.sampling as sampling
import envs.problem
from bench.harness import measure
from bench.reference import ReferenceConfig, reference_for
from bench.sampling import ChunkStreams, batch_streams, chunk_reps, draw_estimates, make_generator
from envs import ConfigError, make_problem
from estimators.registry import Prepared, Target, resolve_estimator

OPTIONS = {"horizon": 30, "hidden": (8,)}
BATCH_SIZE, REPS, CHUNK = 4, 20, 3  # 7 chunks: 6 of 3 batches and 1 of 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def started_helper():
    """The pool of one helper that `workers=2` uses, started before the jobs so that the helper takes part (once per
    process: later calls find it started)."""
    sampling.start_chunk_workers(2)


def small_chunk_bytes(env: str = "cartpole") -> float:
    """A chunk budget that holds CHUNK batches of BATCH_SIZE trajectories of `env` with OPTIONS, not CHUNK + 1."""
    return (CHUNK + 0.5) * make_problem(env, OPTIONS).chunk_bytes(BATCH_SIZE)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of CHUNK batches of BATCH_SIZE trajectories (of `env`, cartpole by default)."""
    def use(env: str = "cartpole") -> None:
        monkeypatch.setattr(envs.problem, "CHUNK_BYTES", small_chunk_bytes(env))

    use()
    return use


@pytest.mark.parametrize("env,dtype", [("cartpole", "float32"), ("pendulum", "float64")])
def test_one_worker_and_two_give_the_same_numbers(small_chunks, started_helper, env, dtype):
    small_chunks(env)
    problem = make_problem(env, {**OPTIONS, "dtype": dtype})
    assert chunk_reps(problem, BATCH_SIZE, REPS) == CHUNK
    reference = ReferenceConfig("sampled", 8 * 64, 8, seed=1, cache=False)  # K = 64 batches, 22 chunks
    runs = [measure(problem, "reinforce", BATCH_SIZE, REPS, 5, estimator_options={"baseline": "rloo"},
                    show_progress=False, reference_config=reference, workers=workers) for workers in (1, 2, 2)]
    for run in runs[1:]:
        assert np.array_equal(run.estimates, runs[0].estimates)
        assert run.env_steps == runs[0].env_steps
        assert run.to_dict()["bias_pvalue"] == runs[0].to_dict()["bias_pvalue"]
        for field in ("grad", "variance"):
            assert np.array_equal(getattr(run.reference, field), getattr(runs[0].reference, field))
        assert (run.reference.objective, run.reference.objective_se) == (runs[0].reference.objective,
                                                                          runs[0].reference.objective_se)


def test_chunked_draw_equals_a_loop_over_the_chunk_generators(small_chunks, started_helper):
    """The slow twin: chunk k = the batches of `problem.sample` from make_generator(seed, BATCH_STREAM, k), estimated
    one chunk at a time on one thread, in order. Both processes drew chunks."""
    small_chunks("acrobot")
    problem = make_problem("acrobot", OPTIONS)
    estimator = resolve_estimator("reinforce", {"baseline": "rloo"})
    theta = problem.default_theta()
    streams = batch_streams(problem, 9)
    assert streams == ChunkStreams(9, ())
    draws = sorted(draw_estimates(problem, estimator, theta, BATCH_SIZE, REPS, streams, workers=2),
                   key=lambda draw: draw.index)
    assert [draw.index for draw in draws] == list(range(7))
    assert len({draw.process for draw in draws}) == 2
    expected, steps, threads = [], 0, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, start in enumerate(range(0, REPS, CHUNK)):
            batch = problem.sample(theta, min(CHUNK, REPS - start), BATCH_SIZE,
                                   make_generator(9, sampling.BATCH_STREAM, k))
            expected.append(estimator.estimate(problem.policy, theta, batch, Prepared(estimator.kwargs())))
            steps += batch.env_steps
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.cat([draw.estimates for draw in draws]), torch.cat(expected))
    assert sum(draw.env_steps for draw in draws) == steps


def test_exact_problems_keep_one_stream_in_process(monkeypatch):
    problem = make_problem("frozenlake")
    assert isinstance(batch_streams(problem, 3), torch.Generator)
    monkeypatch.setattr(sampling, "HELPER_START_SECONDS", 0)  # any chunk-streamed job would start helpers
    monkeypatch.setattr(sampling, "_pool", lambda helpers: pytest.fail("an exact problem started a pool"))
    measure(problem, "reinforce", 4, 10, 3, show_progress=False, workers=2)


def test_a_sweep_worker_draws_in_process(small_chunks, monkeypatch):
    monkeypatch.setattr(sampling, "_IN_HELPER", False)
    monkeypatch.delenv(sampling.WORKERS_ENV, raising=False)
    assert sampling.chunk_workers() == min(2, os.cpu_count() or 1)
    monkeypatch.setenv(sampling.WORKERS_ENV, "3")
    assert sampling.chunk_workers() == 3
    sampling.no_chunk_workers()  # what bench.executors._init_worker does
    monkeypatch.setattr(sampling, "HELPER_START_SECONDS", 0)
    assert sampling.chunk_workers() == 1
    monkeypatch.setattr(sampling, "_pool", lambda helpers: pytest.fail("a sweep worker started a pool"))
    measure(make_problem("cartpole", OPTIONS), "reinforce", BATCH_SIZE, REPS, 0, show_progress=False, workers=2,
            reference_config=ReferenceConfig("sampled", 64, 8, cache=False))


@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_bad_worker_counts_are_one_line_errors(value, monkeypatch):
    problem = make_problem("cartpole", OPTIONS)
    with pytest.raises(ConfigError, match=rf"^chunk workers={value!r}: expected an integer ≥ 1 \(processes drawing"):
        measure(problem, "reinforce", BATCH_SIZE, 2, 0, show_progress=False, workers=value,
                reference_config=ReferenceConfig("sampled", 64, 8, cache=False))
    monkeypatch.setenv(sampling.WORKERS_ENV, str(value))
    monkeypatch.setattr(sampling, "_IN_HELPER", False)
    with pytest.raises(ConfigError, match=rf"^\${sampling.WORKERS_ENV}={value}: expected an integer ≥ 1$"):
        sampling.chunk_workers()


SCRIPT = """
import json, sys
import bench.sampling as sampling
import envs.problem
from bench.reference import ReferenceConfig
from bench.harness import measure
from envs import make_problem
envs.problem.CHUNK_BYTES = {chunk_bytes}
sampling.HELPER_START_SECONDS = 0  # start helpers even for this short job
problem = make_problem("cartpole", {options!r})
run = measure(problem, "reinforce", {n}, {m}, 0, show_progress=False, workers={workers},
              reference_config=ReferenceConfig("sampled", 64, 8, cache=False))
print(json.dumps(run.estimates.tolist()))
"""


def test_a_script_without_a_main_guard_draws_in_process_with_the_same_numbers(small_chunks, tmp_path):
    """Spawned helpers import the main script again; without an `if __name__ == "__main__"` guard they fail to
    start. The chunks are then drawn in-process, with a warning, and the numbers are those of one worker."""
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(chunk_bytes=small_chunk_bytes(), options=OPTIONS, n=BATCH_SIZE,
                                    m=REPS, workers=2))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "chunk workers could not start" in out.stderr
    problem = make_problem("cartpole", OPTIONS)
    expected = measure(problem, "reinforce", BATCH_SIZE, REPS, 0, show_progress=False, workers=1,
                       reference_config=ReferenceConfig("sampled", 64, 8, cache=False)).estimates
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected.tolist()


def test_reference_workers_do_not_change_its_cache_key(small_chunks, tmp_path):
    """A reference computed by 2 workers is the one 1 worker reads back from the cache."""
    problem = make_problem("cartpole", OPTIONS)
    config = ReferenceConfig("sampled", 64 * 8, 8, seed=2, cache_dir=str(tmp_path))
    first = reference_for(problem, problem.default_theta(), Target(), config, show_progress=False, workers=2)
    again = reference_for(problem, problem.default_theta(), Target(), config, show_progress=False, workers=1)
    assert not first.cached and again.cached and np.array_equal(first.grad, again.grad)


@pytest.fixture
def no_pool():
    sampling.close_pools(wait=True)
    yield
    sampling.close_pools(wait=True)


@pytest.mark.parametrize("start_seconds, starts", [(math.inf, False), (0.0, True)])
def test_helpers_start_only_for_work_that_outlasts_their_start_up(small_chunks, no_pool, monkeypatch,
                                                                  start_seconds, starts):
    """Without a pool, this process draws the last chunk, then starts helpers only if the rest would take longer
    than HELPER_START_SECONDS at that pace (never at ∞, always at 0). Either way the numbers are one worker's."""
    monkeypatch.setattr(sampling, "HELPER_START_SECONDS", start_seconds)
    problem = make_problem("cartpole", OPTIONS)
    estimator = resolve_estimator("reinforce", {"baseline": "rloo"})
    theta = problem.default_theta()

    def draw(workers: int) -> list:
        return sorted(draw_estimates(problem, estimator, theta, BATCH_SIZE, REPS, batch_streams(problem, 4),
                                     workers=workers), key=lambda draw: draw.index)

    draws = draw(2)
    assert bool(sampling._POOLS) == starts
    assert draws[-1].process == os.getpid()  # the last chunk, drawn before deciding
    if not starts:
        assert {draw.process for draw in draws} == {os.getpid()}
    assert torch.equal(torch.cat([d.estimates for d in draws]), torch.cat([d.estimates for d in draw(1)]))
