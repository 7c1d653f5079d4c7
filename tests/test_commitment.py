"""The commitment effect of a baseline (Chung, Thomas, Machado and Le Roux, ICML 2021, "Beyond variance reduction:
understanding the true impact of baselines on policy optimization"): on a 3-arm softmax bandit with mean rewards
(1, 0.7, 0), stochastic natural-gradient ascent with a constant baseline below the rewards commits to a sub-optimal
arm in a sizeable fraction of runs, while a baseline at the top of the rewards does not. (The paper also finds the
fraction growing with the step size; at 50 seeds the counts below, 22 → 31 of 50 from lr 0.1 to 1, are not significant
(one-sided Fisher p = 0.054), so that is not asserted here.)

Setting: softmax-bandit probs (1, 0.7, 0) — arms 0 and 2 pay 1 and 0 deterministically, arm 1 pays Bernoulli(0.7)
(the paper's rewards are deterministic; the env draws Bernoulli rewards, so the middle arm is noisy with the same
mean); θ₀ = 0 (uniform); estimator natural (damping 0.01, F̂ from the batch) with baseline=constant:<c>; SGD,
N = 1 trajectory per update, budget 100 updates, seeds 0…49 (bench.training.train). With N = 1 and b < 0 every
r − b > 0, so each update raises the logit of the arm just pulled: the run reinforces whatever it samples early.
With b = 1 ≥ every reward, r − b ≤ 0 lowers the pulled arm except the best one (which pays exactly b): it explores.

A run "committed" if at the end a sub-optimal arm has probability > 0.9. Measured (seeds 0…49): c = −1: 22/50 at
lr 0.1, 26/50 at lr 0.3, 31/50 at lr 1; c = 1: 0/50 at lr 0.3, 1 and 3 (mean final J 0.95, 0.99, 1.00).
The counts are deterministic given the seeds; the statements are one-sided binomial tests whose false-positive rate
(rejecting the null for a true null) is stated at each.
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from bench.training import TrainSettings, train
from envs import make_problem

SEEDS = 50
BUDGET = 100
PROBS = [1.0, 0.7, 0.0]


def committed(baseline: str, lr: float) -> int:
    """How many of the SEEDS runs end with a sub-optimal arm at probability > 0.9."""
    problem = make_problem("softmax-bandit", {"probs": PROBS})
    count = 0
    for seed in range(SEEDS):
        run = train(problem, "natural", TrainSettings(lr=lr, batch_size=1, budget=BUDGET, seed=seed),
                    {"baseline": baseline}, show_progress=False)
        pi = torch.softmax(torch.as_tensor(run.theta), -1).numpy()
        count += int(pi.argmax() != 0 and pi.max() > 0.9)
    return count


@pytest.fixture(scope="module")
def counts():
    return {(baseline, lr): committed(baseline, lr) for baseline, lr in
            (("constant:-1", 1.0), ("constant:1", 1.0))}


def test_low_constant_baseline_commits(counts):
    """c = −1, lr = 1: H0 "the commitment probability is ≤ 0.2" is rejected by the one-sided binomial test at
    α = 1e-3 (FPR ≤ 1e-3 under H0)."""
    k = counts[("constant:-1", 1.0)]
    assert stats.binom.sf(k - 1, SEEDS, 0.2) < 1e-3, k


def test_high_constant_baseline_does_not_commit(counts):
    """c = 1 (the best reward), lr = 1: at most 2 of 50 runs commit; if the true probability were 0.2 this would
    pass with probability P(Bin(50, 0.2) ≤ 2) = 1e-3, and the fractions differ by Fisher's exact test (p < 1e-6)."""
    k_high, k_low = counts[("constant:1", 1.0)], counts[("constant:-1", 1.0)]
    assert k_high <= 2, k_high
    p = stats.fisher_exact([[k_low, SEEDS - k_low], [k_high, SEEDS - k_high]], alternative="greater")[1]
    assert p < 1e-6, (k_low, k_high, p)

