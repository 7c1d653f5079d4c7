"""The benchmark's naive loop must measure the same thing as the harness: unbiased on frozenlake."""

from __future__ import annotations

from envs import make_problem
from tests.twins import naive_measure


def test_naive_loop_is_unbiased():
    """H0 (E ĝ = ∇J) must not be rejected at ALPHA = 1e-3 (false-positive rate 1e-3), at a size
    where the estimates are not heavy-tailed (so the p-value is calibrated)."""
    problem = make_problem("frozenlake")
    naive = naive_measure(problem, batch_size=64, reps=60, seed=0)
    assert not naive.heavy_tailed
    assert naive.bias_pvalue >= 1e-3
