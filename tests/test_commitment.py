"""The commitment effect of a baseline (Chung, Thomas, Machado and Le Roux, ICML 2021, "Beyond variance reduction:
understanding the true impact of baselines on policy optimization"): on their 3-arm bandit with deterministic rewards
(1, 0.7, 0), stochastic natural-gradient ascent with a constant baseline below the rewards commits to a sub-optimal
arm in a sizeable fraction of runs, more often at larger step sizes, while the value baseline b = V^π and a baseline
at the top of the rewards do not.

Setting: softmax-bandit probs (1, 0.7, 0), rewards=deterministic; θ₀ = 0 (uniform); estimator natural with
fisher=exact ((F + δI)⁻¹ĝ with the exact Fisher matrix at θ_k, δ = 0.01: their stochastic NPG) and
baseline=constant:<c> or value; SGD, N = 1 arm per update, a budget of 150 updates (every run at these rates has
settled on an arm by then: an arm holds ≥ 90% of π, `SoftmaxBandit.arm_outcome`), seeds 0…59 (bench.training.train).
With b < 0 every r − b > 0, so each update raises the arm just pulled: the run reinforces whatever it samples early.

Measured (seeds 0…59): c = −1: 26 of 60 runs settle on a sub-optimal arm at lr 0.1 (2 undecided), 43 at lr 3;
b = V^π and c = 1 at lr 3: 0 of 60. On 200 other seeds (1000…1199) c = −1 commits in 82 runs at lr 0.1 (4 undecided)
and 127 at lr 3 (one-sided Fisher p ≈ 5e-6), so the growth is not a property of seeds 0…59. The counts are
deterministic given the seeds; each statement below is a test whose false-positive rate (rejecting its null when
the null is true) is stated.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from bench.training import TrainSettings, train
from envs import make_problem

SEEDS = 60
BUDGET = 150
BANDIT = {"probs": [1.0, 0.7, 0.0], "rewards": "deterministic"}


def committed(baseline: str, lr: float) -> int:
    """How many of the SEEDS runs end settled on a sub-optimal arm."""
    problem = make_problem("softmax-bandit", BANDIT)
    count = 0
    for seed in range(SEEDS):
        run = train(problem, "natural", TrainSettings(lr=lr, batch_size=1, budget=BUDGET, seed=seed),
                    {"baseline": baseline, "fisher": "exact"}, show_progress=False)
        count += problem.arm_outcome(torch.as_tensor(run.theta)) == "sub-optimal"
    return count


@pytest.fixture(scope="module")
def counts():
    return {(baseline, lr): committed(baseline, lr) for baseline, lr in
            (("constant:-1", 0.1), ("constant:-1", 3.0), ("value", 3.0), ("constant:1", 3.0))}


def test_low_constant_baseline_commits(counts):
    """c = −1, lr = 3: H0 "the commitment probability is ≤ 0.2" is rejected by the one-sided binomial test at
    α = 1e-3 (FPR ≤ 1e-3 under H0)."""
    k = counts[("constant:-1", 3.0)]
    assert stats.binom.sf(k - 1, SEEDS, 0.2) < 1e-3, k


def test_commitment_grows_with_the_step_size(counts):
    """c = −1: more runs commit at lr 3 than at lr 0.1, by the one-sided Fisher exact test at α = 0.01 (FPR ≤ 0.01
    if the two rates committed equally often). (The runs of one seed share their stream across rates; Fisher's test
    treats the two columns as independent samples, which that positive correlation makes conservative.)"""
    low, high = counts[("constant:-1", 0.1)], counts[("constant:-1", 3.0)]
    p = stats.fisher_exact([[high, SEEDS - high], [low, SEEDS - low]], alternative="greater")[1]
    assert p < 0.01, (low, high, p)


@pytest.mark.parametrize("baseline", ["value", "constant:1"])
def test_value_and_high_baselines_do_not_commit(counts, baseline):
    """b = V^π or c = 1 (the best reward), lr = 3: at most 2 of 60 runs commit; were the true probability 0.2 this
    would pass with probability P(Bin(60, 0.2) ≤ 2) = 2e-4 (FPR), and the fraction is below c = −1's by Fisher's
    exact test (p < 1e-6)."""
    k, k_low = counts[(baseline, 3.0)], counts[("constant:-1", 3.0)]
    assert k <= 2, k
    p = stats.fisher_exact([[k_low, SEEDS - k_low], [k, SEEDS - k]], alternative="greater")[1]
    assert p < 1e-6, (k_low, k, p)
