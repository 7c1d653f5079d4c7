"""The exact optimum J* (`Problem.optimal_objective`), the 1 of a normalized training score
s = (J(θ) − J(θ₀)) / (J* − J(θ₀)): against independent computations per family (loop and enumeration
twins on tabular problems, enumeration and closed forms on bandits, hand-derived closed forms and a
brute-force optimisation over time-varying gains on LQR), as an upper bound of the problem's own exact
J(θ) on every problem that declares it, and as a one-line refusal on those that do not.

Tolerances: everything here is deterministic float64 arithmetic. Where two computations of the same
number differ only in the order of their operations the comparison is at rounding level (rtol 1e-10 to
1e-12, stated where used); the bounds J(θ) ≤ J* allow the same rounding slack, nothing tuned.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from envs import PROBLEMS, make_problem
from envs.problem import Capability
from envs.spec import ConfigError
from envs.tabular import GarnetConfig, TabularMDP, TabularProblem
from tests.conftest import PROBLEM_CASES, TABULAR_CASES, case_id, random_theta
from tests.twins import deterministic_policy_objective_loop, lqr_time_varying_objective, optimal_values_loop

# Rounding slack of a comparison between two float64 computations of numbers of size `scale` (sums of at most
# a few thousand terms, each exact to ~1e-16 relative): 1e-12 relative leaves three orders of margin.
ROUNDING = 1e-12


def slack(value: float) -> float:
    return ROUNDING * max(1.0, abs(value))


# ------------------------------------------------------------------ tabular: backward induction


SHORT_HORIZONS = [("frozenlake", {"horizon": 5, "gamma": 0.9}), ("frozenlake", {"horizon": 12, "slippery": False}),
                  ("frozenlake", {"map": "8x8", "horizon": 30, "gamma": 0.95}),
                  ("cliffwalking", {"horizon": 3}), ("cliffwalking", {"horizon": 20, "gamma": 0.9})]


@pytest.mark.parametrize("case", TABULAR_CASES + SHORT_HORIZONS, ids=[case_id(c) for c in TABULAR_CASES + SHORT_HORIZONS])
def test_tabular_optimum_matches_backward_induction_loop(case):
    """V*_t and J* = ρ₀ · V*_0 against the plain-Python backward induction twin (the same recursion, other order
    of operations: rtol 1e-10). On the bandits this also holds their closed forms to the generic recursion."""
    problem = make_problem(*case)
    loop = optimal_values_loop(problem)
    np.testing.assert_allclose(problem.optimal_values().numpy(), np.array(loop), rtol=1e-10, atol=1e-12)
    expected = sum(p * v for p, v in zip(problem.mdp.initial.tolist(), loop[0]))
    assert problem.optimal_objective() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_short_horizon_optima_by_hand():
    """Cases whose J* reads off the map: deterministic FrozenLake 4x4 needs 6 steps to the goal (reward 1 at the
    6th: J* = γ⁵, and 0 with fewer steps); CliffWalking's shortest path is 13 steps of −1 (J* = −Σ_{t<13} γ^t),
    and with H < 13 every step costs −1 whatever the policy (J* = −Σ_{t<H} γ^t)."""
    assert make_problem("frozenlake", {"slippery": False, "horizon": 6, "gamma": 0.9}).optimal_objective() == \
        pytest.approx(0.9**5, rel=1e-12)
    assert make_problem("frozenlake", {"slippery": False, "horizon": 5}).optimal_objective() == 0.0
    assert make_problem("cliffwalking", {"gamma": 0.9}).optimal_objective() == \
        pytest.approx(-sum(0.9**t for t in range(13)), rel=1e-12)
    assert make_problem("cliffwalking", {"horizon": 7, "gamma": 0.8}).optimal_objective() == \
        pytest.approx(-sum(0.8**t for t in range(7)), rel=1e-12)


def tiny_problem(mdp: TabularMDP, gamma: float, horizon: int) -> TabularProblem:
    """A TabularProblem on hand-made tables (its config only names it)."""
    config = GarnetConfig(states=mdp.num_states, actions=mdp.num_actions, branching=1, gamma=gamma, horizon=horizon)
    return TabularProblem(config, mdp, gamma, horizon)


def with_terminals() -> TabularProblem:
    """3 states × 2 actions, stochastic outcomes with their own rewards, some terminal, ρ₀ not uniform."""
    table = {
        0: {0: [(0.5, 1, 1.0, False), (0.5, 2, 0.0, False)], 1: [(0.8, 0, 0.3, False), (0.2, 2, 2.0, True)]},
        1: {0: [(1.0, 2, -1.0, False)], 1: [(0.3, 0, 4.0, True), (0.7, 1, 0.0, False)]},
        2: {0: [(0.6, 0, 0.5, False), (0.4, 1, 0.0, False)], 1: [(1.0, 2, 0.2, False)]},
    }
    return tiny_problem(TabularMDP.from_outcomes([0.2, 0.3, 0.5], table), 0.9, 3)


@pytest.mark.parametrize("make", [
    lambda: make_problem("garnet", {"states": 3, "actions": 2, "branching": 2, "horizon": 3, "gamma": 0.9}),
    lambda: make_problem("garnet", {"states": 3, "actions": 2, "branching": 3, "horizon": 3, "mdp_seed": 5}),
    with_terminals,
], ids=["garnet-b2", "garnet-b3-seed5", "terminals"])
def test_optimum_by_enumeration_of_time_indexed_policies(make):
    """J* = the max of J over all 2^(S·H) = 512 deterministic time-indexed policies a_t = plan[t][s], each J by a
    plain forward recursion (no max, no values): an independent definition of the optimum (rtol 1e-12, rounding).
    No plan, and no stationary softmax policy, beats it."""
    problem = make()
    states, actions, horizon = problem.mdp.num_states, problem.mdp.num_actions, problem.horizon
    best = -math.inf
    for flat in itertools.product(range(actions), repeat=states * horizon):
        plan = [list(flat[t * states:(t + 1) * states]) for t in range(horizon)]
        best = max(best, deterministic_policy_objective_loop(problem, plan))
    optimum = problem.optimal_objective()
    assert optimum == pytest.approx(best, rel=1e-12, abs=1e-14)
    for seed in range(20):
        assert float(problem.objective(random_theta(problem, seed, scale=3.0))) <= optimum + slack(optimum)


def test_stationary_softmax_class_can_stay_below_the_optimum():
    """The documented gap: state 0 pays 3 two steps later through state 1 (action 0) or 1 now (action 1); with
    H = 2 the best action in state 0 is 0 at t = 0 and 1 at t = 1, and ρ₀ = ½ on states 0 and 2 (2 leads to 0)
    visits state 0 at both times. J* = ½ · 3 + ½ · 1 = 2, while a stationary π(0|0) = p gets
    J(p) = ½ (3 − p + p²) ≤ 1.5 (p ∈ {0, 1}): normalized scores of the softmax class stay ≤ (1.5 − J₀)/(2 − J₀)."""
    table = {
        0: {0: [(1.0, 1, 0.0, False)], 1: [(1.0, 0, 1.0, False)]},
        1: {0: [(1.0, 1, 3.0, True)], 1: [(1.0, 1, 3.0, True)]},
        2: {0: [(1.0, 0, 0.0, False)], 1: [(1.0, 0, 0.0, False)]},
    }
    problem = tiny_problem(TabularMDP.from_outcomes([0.5, 0.0, 0.5], table), 1.0, 2)
    assert problem.optimal_objective() == 2.0
    for seed in range(20):
        theta = random_theta(problem, seed, scale=4.0)
        p = float(problem.policy.probs(theta)[0, 0])
        value = float(problem.objective(theta))
        assert value == pytest.approx(0.5 * (3 - p + p * p), rel=1e-12)  # the closed form above, to rounding
        assert value <= 1.5 + slack(1.5)


# ------------------------------------------------------------------ bandits: closed forms


NEAR_DETERMINISTIC = 800.0  # logits 800 apart: e^{-800} underflows, so softmax is exactly one-hot in float64


@pytest.mark.parametrize("probs", ["0.9,0.4,0.1", "0.2,0.75,0.75,0.1", "0.3,0.6"])
def test_softmax_bandit_optimum_by_enumeration(probs):
    """max_k p_k against the problem's own objective at each arm's (exactly) deterministic policy."""
    problem = make_problem("softmax-bandit", {"probs": probs})
    arms = [float(problem.objective(NEAR_DETERMINISTIC * torch.eye(problem.num_params, dtype=torch.float64)[k]))
            for k in range(problem.num_params)]
    assert arms == [float(p) for p in probs.split(",")]
    assert problem.optimal_objective() == max(arms)


@pytest.mark.parametrize("options", [{}, {"contexts": 3, "arms": 2, "reward_seed": 4}])
def test_contextual_bandit_optimum_by_enumeration(options):
    """E_c[max_k p[c, k]] against the max over all K^C per-context arm choices of the problem's own objective at
    the exactly deterministic policy (rtol 1e-12: a mean in another order)."""
    problem = make_problem("contextual-bandit", options)
    contexts, arms = problem.theta_shape
    best = -math.inf
    for choice in itertools.product(range(arms), repeat=contexts):
        theta = torch.zeros(contexts, arms, dtype=torch.float64)
        theta[torch.arange(contexts), torch.tensor(choice)] = NEAR_DETERMINISTIC
        best = max(best, float(problem.objective(theta.reshape(-1))))
    assert problem.optimal_objective() == pytest.approx(best, rel=1e-12)


def test_gaussian_bandit_optimum_is_approached_not_attained():
    """J* = 0 and J* − J([c, s]) = e^{2s} exactly at μ = c: positive for every s, → 0 as s → −∞."""
    problem = make_problem("gaussian-bandit", {"target": -0.7})
    assert problem.optimal_objective() == 0.0
    for s in (1.0, 0.0, -3.0, -20.0):
        gap = problem.optimal_objective() - float(problem.objective(torch.tensor([-0.7, s], dtype=torch.float64)))
        assert gap > 0 and gap == pytest.approx(math.exp(2 * s), rel=1e-12)


@pytest.mark.parametrize("name,options", [("softmax-bandit", {}), ("softmax-bandit", {"probs": "0.5,0.45,0.1"}),
                                          ("contextual-bandit", {})])
def test_bandit_gap_vanishes_towards_the_greedy_policy(name, options):
    """At θ = 50 · p (the greedy arm's logit largest) the gap J* − J = Σ_{k ≠ k*} π_k (p* − p_k) obeys the exact
    bound π_k ≤ e^{θ_k − θ_k*} per context, so J* − J ≤ mean_c Σ_k e^{−50 Δ_k} Δ_k (Δ_k = p* − p_k): small
    (≈ 1e-11 on the default softmax bandit), and it shrinks as the scale grows."""
    problem = make_problem(name, options)
    probs = problem.arm_probs[None] if name == "softmax-bandit" else problem.success  # [C, K]
    gaps = probs.amax(-1, keepdim=True) - probs
    previous = math.inf
    for scale in (5.0, 20.0, 50.0):
        gap = problem.optimal_objective() - float(problem.objective(scale * probs.reshape(-1)))
        bound = float((torch.exp(-scale * gaps) * gaps).sum(-1).mean())
        assert 0.0 <= gap <= bound + slack(1.0) and gap < previous
        previous = gap
    if name == "softmax-bandit" and not options:
        assert gap < 1e-10  # the bound: e^{−25}·0.5 + e^{−40}·0.8 ≈ 7e-12


# ------------------------------------------------------------------ LQR: the Riccati recursion


def test_lqr_horizon_one_and_two_by_hand():
    """H = 1: the only cost is E[x_0ᵀQx_0 + u_0ᵀRu_0], least at u = 0: J* = −tr Q = −state_dim. H = 2, scalar
    (Q = 1, R = 0.1): u_1 = 0 and u_0 = −k x_0 with cost 1 + 0.1k² + γ((a − bk)² + ν²), least at
    k = γab/(0.1 + γb²): J* = −(1 + 0.1γa²/(0.1 + γb²) + γν²)."""
    for state_dim, action_dim in ((1, 1), (2, 1), (3, 2)):
        for policy in ("gaussian", "deterministic"):
            problem = make_problem("lqr", {"state_dim": state_dim, "action_dim": action_dim, "horizon": 1,
                                           "policy": policy, "system_seed": 3})
            assert problem.optimal_objective() == -float(state_dim)
    gamma, noise = 0.8, 0.3
    problem = make_problem("lqr", {"state_dim": 1, "action_dim": 1, "horizon": 2, "gamma": gamma, "noise": noise,
                                   "system_seed": 2})
    a, b = float(problem.dynamics), float(problem.control)
    expected = -(1 + 0.1 * gamma * a * a / (0.1 + gamma * b * b) + gamma * noise**2)
    assert problem.optimal_objective() == pytest.approx(expected, rel=1e-12)


def lqr_system():
    return make_problem("lqr", {"state_dim": 2, "action_dim": 1, "horizon": 5, "gamma": 0.95, "noise": 0.4,
                                "system_seed": 7, "policy": "deterministic"})


def test_lqr_twin_evaluates_the_problems_objective():
    """The time-varying twin at constant gains K_t = K is the deterministic problem's own J(K) (rtol 1e-12), and
    at the Riccati gains it is J* (rtol 1e-12): the optimum is reached by u_t = −K_t x_t."""
    problem = lqr_system()
    for seed in range(5):
        theta = random_theta(problem, seed, scale=0.5)
        gains = problem.policy.gain(theta).expand(problem.horizon, -1, -1)
        assert float(lqr_time_varying_objective(problem, gains)) == pytest.approx(float(problem.objective(theta)),
                                                                                 rel=1e-12)
    _, _, optimal_gains = problem.optimal_recursion()
    assert float(lqr_time_varying_objective(problem, optimal_gains)) == pytest.approx(problem.optimal_objective(),
                                                                                     rel=1e-12)


def test_lqr_optimum_by_brute_force_over_time_varying_gains():
    """L-BFGS over all H · du · dx = 10 time-varying gains, by autograd through the twin's covariance
    recursion (no Riccati), from K_t = 0: it reaches J* to 1e-6 relative and never exceeds it."""
    problem = lqr_system()
    gains = torch.zeros(problem.horizon, 1, 2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([gains], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -lqr_time_varying_objective(problem, gains)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    found = float(lqr_time_varying_objective(problem, gains.detach()))
    optimum = problem.optimal_objective()
    assert found <= optimum + slack(optimum)
    assert found == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("options", [{}, {"policy": "deterministic"}, {"state_dim": 3, "action_dim": 2, "noise": 0.0},
                                     {"gamma": 1.0, "horizon": 7, "system_seed": 5}])
def test_lqr_optimum_bounds_the_stationary_class(options):
    """J(θ) ≤ J* for many random stationary (K, log σ), with the problem's own exact objective; action noise only
    lowers J, so on the Gaussian policy J(K, log σ) < J(K, log σ − 1) < … ≤ J*."""
    problem = make_problem("lqr", options)
    optimum = problem.optimal_objective()
    for seed in range(50):
        theta = random_theta(problem, seed, scale=(0.2, 1.0)[seed % 2])
        assert float(problem.objective(theta)) <= optimum + slack(optimum)
    if problem.supports(Capability.STOCHASTIC_POLICY):
        theta = random_theta(problem, 0, scale=0.2)
        values = []
        for log_std in (0.0, -2.0, -5.0, -20.0):
            theta[-1] = log_std
            values.append(float(problem.objective(theta)))
        assert values == sorted(values) and values[-1] <= optimum


# ------------------------------------------------------------------ every problem


@pytest.mark.parametrize("case", PROBLEM_CASES, ids=[case_id(c) for c in PROBLEM_CASES])
def test_optimum_bounds_the_objective(case):
    """J(θ) ≤ J* at random θ of several scales, on every problem that declares OPTIMUM (rounding slack only)."""
    problem = make_problem(*case)
    if not problem.supports(Capability.OPTIMUM):
        pytest.skip(f"{case_id(case)} declares no optimum")
    optimum = problem.optimal_objective()
    for seed in range(12):
        theta = random_theta(problem, seed, scale=(0.5, 2.0, 5.0)[seed % 3])
        assert float(problem.objective(theta)) <= optimum + slack(optimum), seed
    assert float(problem.objective(problem.default_theta())) < optimum


@pytest.mark.parametrize("case", PROBLEM_CASES, ids=[case_id(c) for c in PROBLEM_CASES])
def test_optimum_is_a_finite_float_or_a_one_line_refusal(case):
    problem = make_problem(*case)
    if problem.supports(Capability.OPTIMUM):
        optimum = problem.optimal_objective()
        assert type(optimum) is float and math.isfinite(optimum)
    else:
        with pytest.raises(ConfigError, match=r"^env [^\n]* has no exact optimal objective J\*[^\n]*$"):
            problem.optimal_objective()


def test_which_problems_declare_an_optimum():
    """Every problem with an exact objective has its optimum; the sampled ones (classic control) have neither."""
    for name in PROBLEMS.names():
        problem = make_problem(name)
        assert problem.supports(Capability.OPTIMUM) == problem.supports(Capability.EXACT_GRADIENT), name
