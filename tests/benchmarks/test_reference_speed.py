"""A 10⁶-trajectory sampled reference on CartPole-v1 at the seeded default θ (MLP 4 → 64 → 64 → 2, 4 610
parameters): wall time and peak memory.

The reference runs in a fresh child process (`python -c`, caching off, the default chunk workers: the child and
one helper process on two cores, `bench.sampling.chunk_workers`) so its peak resident memory is its own: the child
reports its wall time (the helper's start-up included), env steps and `ru_maxrss` of itself and of its helper.
extra_info carries them: `wall_seconds`, `env_steps_per_second`, `peak_rss_gib` (the child's), `helper_peak_rss_gib`
and `total_peak_rss_gib`, their sum, an upper bound of the two at once (the issue's bound is 4 GiB, whatever the
sample count, because the reference streams into running moments). One round; ≈ 1–2 minutes on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAJECTORIES = 10**6
ROOT = Path(__file__).resolve().parents[2]
CHILD = f"""
import json, resource, time
from bench.reference import ReferenceConfig, reference_for
from bench.sampling import chunk_workers, close_pools
from envs import make_problem
from estimators.registry import Target
problem = make_problem("cartpole")
began = time.perf_counter()
reference = reference_for(problem, problem.default_theta(), Target(),
                          ReferenceConfig("sampled", {TRAJECTORIES}, seed=0, cache=False), show_progress=False)
wall = time.perf_counter() - began
close_pools(wait=True)  # the helpers exit, so that RUSAGE_CHILDREN holds their peak
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
helper = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
print(json.dumps({{"workers": chunk_workers(), "wall_seconds": wall, "samples": reference.samples,
                  "env_steps": reference.env_steps,
                  "env_steps_per_second": reference.env_steps / wall,
                  "objective": reference.objective, "objective_se": reference.objective_se,
                  "grad_norm": float((reference.grad ** 2).sum() ** 0.5),
                  "se_norm": float(reference.variance.sum() ** 0.5),
                  "peak_rss_gib": own, "helper_peak_rss_gib": helper, "total_peak_rss_gib": own + helper}}))
"""


def reference_in_child() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=3600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.benchmark(group="CartPole-v1 sampled reference, 10⁶ trajectories")
def test_million_trajectory_reference(benchmark):
    result = benchmark.pedantic(reference_in_child, rounds=1, iterations=1)
    assert result["samples"] == TRAJECTORIES and result["env_steps"] >= TRAJECTORIES
    benchmark.extra_info.update(role="reference", reps=TRAJECTORIES, **result)
