"""Shared fixtures. Statistical tests here use fixed seeds; each states its false-positive rate
(the probability that it would fail for a correct implementation, over the randomness of the seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import PROBLEMS, make_problem
from envs.policies import MLPCategorical, MLPGaussian
from envs.problem import Batch, Capability, Problem
from envs.tabular import TabularProblem


def random_theta(problem: Problem, seed: int, scale: float = 0.5) -> torch.Tensor:
    """A generic θ: the default plus seeded N(0, scale²) noise (so no symmetry hides a bug)."""
    noise = np.random.default_rng(seed).normal(scale=scale, size=problem.num_params)
    return problem.default_theta() + torch.as_tensor(noise)


# Every registered problem with its default options, plus the variants the tests lean on.
PROBLEM_CASES = [(name, {}) for name in PROBLEMS.names()] + [
    ("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}),
    ("lqr", {"policy": "deterministic"}),  # no log π: the deterministic policy gradient's problem
]
# Those with an exact gradient: the statistical tests hold estimators to it. The others (classic control) are
# measured against sampled references, whose calibration is tested on these (tests/test_reference.py).
EXACT_CASES = [c for c in PROBLEM_CASES if make_problem(*c).supports(Capability.EXACT_GRADIENT)]
SAMPLED_CASES = [c for c in PROBLEM_CASES if c not in EXACT_CASES]


def case_id(case) -> str:
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.fixture(params=PROBLEM_CASES, ids=[case_id(c) for c in PROBLEM_CASES])
def problem(request) -> Problem:
    name, options = request.param
    return make_problem(name, options)


@pytest.fixture(params=EXACT_CASES, ids=[case_id(c) for c in EXACT_CASES])
def exact_problem(request) -> Problem:
    name, options = request.param
    return make_problem(name, options)


TABULAR_CASES = [c for c in PROBLEM_CASES if isinstance(make_problem(*c), TabularProblem)]


@pytest.fixture(params=TABULAR_CASES, ids=[case_id(c) for c in TABULAR_CASES])
def tabular_problem(request) -> TabularProblem:
    name, options = request.param
    return make_problem(name, options)


def shifted_pvalue(result, expected_mean: np.ndarray) -> float:
    """p-value of H0: E ĝ = expected_mean, from the stored estimates."""
    from bench.metrics import gradient_metrics

    return gradient_metrics(result.estimates, expected_mean).bias_pvalue


def synthetic_mlp_batch(policy: MLPCategorical | MLPGaussian, reps: int, batch_size: int, horizon: int,
                        generator: torch.Generator, full: bool) -> tuple[Batch, torch.Tensor]:
    """A batch of N(0, 1) observations, uniform (categorical) or N(0, 1) (Gaussian) actions (not drawn from
    π: the gradients are equal whatever the data) and N(0, 1) weights [M, N, T], zero after each episode's
    end. full=False draws episode lengths uniformly in 1..T; full=True keeps every step alive."""
    shape = (reps, batch_size, horizon)
    obs = torch.randn(*shape, policy.obs_dim, dtype=torch.float64, generator=generator)
    if isinstance(policy, MLPCategorical):
        actions = torch.randint(policy.num_actions, shape, generator=generator)
    else:
        actions = torch.randn(*shape, policy.action_dim, dtype=torch.float64, generator=generator)
    if full:
        lengths = torch.full(shape[:2], horizon)
    else:
        lengths = torch.randint(1, horizon + 1, shape[:2], generator=generator)
    mask = (torch.arange(horizon) < lengths[..., None]).to(torch.float64)  # [M, N, T]
    weights = torch.randn(shape, dtype=torch.float64, generator=generator) * mask
    batch = Batch(obs=obs, actions=actions, rewards=torch.zeros(shape, dtype=torch.float64), mask=mask,
                  terminated=lengths < horizon,
                  gamma=1.0, final_obs=torch.zeros(reps, batch_size, policy.obs_dim, dtype=torch.float64))
    return batch, weights
