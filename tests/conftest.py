"""Shared fixtures. Statistical tests here use fixed seeds; each states its false-positive rate
(the probability that it would fail for a correct implementation, over the randomness of the seed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import PROBLEMS, make_problem
from envs.problem import Problem
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
EXACT_CASES = [c for c in PROBLEM_CASES if make_problem(*c).has_exact_gradient]
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
