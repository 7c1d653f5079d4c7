"""`measure` on frozenlake (N = 64, M = 1000) against the naive per-trajectory loop, in one run.

The naive loop costs about a second per replicate batch of 64 episodes, so it is timed on
NAIVE_REPS batches and both are compared per estimate (the loop is linear in M: nothing is shared
between replicates). `make bench` prints the medians and the ratio (tests/benchmarks/ratios.py).
"""

from __future__ import annotations

import pytest

from bench.harness import measure
from envs import make_problem
from tests.twins import naive_measure

BATCH_SIZE, REPS, NAIVE_REPS = 64, 1000, 50
GROUP = "measure frozenlake N=64"


@pytest.fixture(scope="module")
def frozenlake():
    return make_problem("frozenlake")


@pytest.mark.benchmark(group=GROUP)
def test_measure_vectorised(benchmark, frozenlake):
    benchmark.extra_info.update(role="fast", reps=REPS)
    result = benchmark.pedantic(measure, args=(frozenlake, "reinforce", BATCH_SIZE, REPS, 0),
                                kwargs={"show_progress": False}, rounds=5, iterations=1)
    assert result.metrics.reps_used == REPS


@pytest.mark.benchmark(group=GROUP)
def test_measure_naive_loop(benchmark, frozenlake):
    benchmark.extra_info.update(role="slow twin", reps=NAIVE_REPS)
    metrics = benchmark.pedantic(naive_measure, args=(frozenlake, BATCH_SIZE, NAIVE_REPS, 0), rounds=3, iterations=1)
    assert metrics.reps_used == NAIVE_REPS
