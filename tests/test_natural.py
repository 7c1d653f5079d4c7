"""The natural gradient estimator and the exact Fisher matrices it is measured against.

Statistical tests use fixed seeds and the harness's p-values and confidence intervals, asserting
first that the numbers they rest on are not heavy-tailed (where those are calibrated). Each states
its false-positive rate: the probability that it fails for a correct implementation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch.func import jvp, vmap

from bench.harness import measure
from bench.metrics import gradient_metrics
from envs import make_problem
from envs.problem import Capability
from envs.spec import ConfigError
from estimators import resolve_estimator
from estimators.natural import batch_fisher, fisher_vector_product, natural
from estimators.registry import Target
from estimators.score import reinforce
from tests.conftest import EXACT_CASES, case_id, random_theta, shifted_pvalue
from tests.twins import batch_fisher_loop, reinforce_loop, tabular_fisher_loop

ALPHA = 1e-4  # per assertion on a p-value, as in test_estimators.py
STOCHASTIC_CASES = [c for c in EXACT_CASES if make_problem(*c).supports(Capability.STOCHASTIC_POLICY)]


# ---------------------------------------------------------------- the exact Fisher matrix


@pytest.mark.parametrize("case", STOCHASTIC_CASES, ids=case_id)
def test_exact_fisher_matches_monte_carlo(case):
    """vᵀFv for K = 6 random directions v (for P ≤ 3 they determine the symmetric F) against its
    Monte Carlo estimate: replicate m gives the K quadratic forms of (1/n) Σ_i Σ_t ψ_{i,t} ψ_{i,t}ᵀ
    (ψ·v by forward-mode autodiff, independent of the estimator's code), and the harness's bias
    test of those M rows against the exact forms must not reject. False-positive rate ALPHA per
    problem; a 10% error in F is detected on every problem (asserted: the test has the power)."""
    problem = make_problem(*case)
    theta = random_theta(problem, seed=40)
    # ψψᵀ of one step of the Gaussian policies has heavy tails (z⁴, x⁴ terms): averaging n = 8
    # trajectories leaves a tail kurtosis of 6 (gaussian-bandit) and 23 (lqr); n = 128 gives ≤ 3
    reps, per_rep, count = 200, 8 if problem.horizon >= 100 else 128, 6
    batch = problem.sample(theta, reps, per_rep, torch.Generator().manual_seed(41))
    directions = torch.randn(count, problem.num_params, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(42))  # [K, P]

    def along(direction):  # ψ_{m,i,t}·v for every step [M, n, T]
        return jvp(lambda th: problem.policy.log_prob(th, batch.obs, batch.actions), (theta,), (direction,))[1]

    forms = ((vmap(along)(directions) ** 2 * batch.mask).sum((-1, -2)) / per_rep).T  # [M, K]
    exact = torch.einsum("kp,pq,kq->k", directions, problem.fisher(theta), directions)  # [K]
    metrics = gradient_metrics(forms.numpy(), exact.numpy())
    assert not metrics.heavy_tailed, f"tail kurtosis {metrics.tail_kurtosis:.1f}"
    assert metrics.bias_pvalue >= ALPHA, (metrics.bias_pvalue, forms.mean(0), exact)
    assert gradient_metrics(forms.numpy(), 0.9 * exact.numpy()).bias_pvalue < ALPHA, "no power"


def test_tabular_fisher_matches_loop_twin(tabular_problem):
    theta = random_theta(tabular_problem, seed=43)
    np.testing.assert_allclose(tabular_problem.fisher(theta).numpy(), tabular_fisher_loop(tabular_problem, theta),
                               rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- cg == direct == loop twin


TWIN_CASES = [  # short horizons keep the loop twins fast; taxi's cg == direct is in the singular-F̂ test
    (("frozenlake", {"horizon": 20}), "none"), (("cliffwalking", {"horizon": 20}), "none"),
    (("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}), "none"),
    (("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}), "rloo"),
    (("gaussian-bandit", {}), "none"), (("softmax-bandit", {}), "none"), (("contextual-bandit", {}), "rloo"),
    (("lqr", {}), "none"), (("lqr", {}), "rloo"),
    (("softmax-bandit", {}), "constant:0.5"), (("lqr", {}), "constant:-3"),
]


@pytest.mark.parametrize("case,baseline", TWIN_CASES, ids=lambda x: case_id(x) if isinstance(x, tuple) else x)
def test_cg_equals_direct_equals_loop_twin(case, baseline):
    """At the default damping and CG settings, against the slow twin (F̂_m from one backward pass
    per step, ĝ from REINFORCE's loop twin, a dense solve): direct equals it to rounding, and the CG
    answer has residual ‖(F̂ + δI)x − ĝ‖ ≤ 10·cg_tol·‖ĝ‖ (CG's recursive residual drifts from the
    true one only by rounding), hence equals direct to cond(F̂ + δI)·cg_tol."""
    problem = make_problem(*case)
    theta = random_theta(problem, seed=44)
    batch = problem.sample(theta, 2, 3, torch.Generator().manual_seed(45))
    config = resolve_estimator("natural", {"baseline": baseline})
    options = config.kwargs()
    damping, identity = config.damping, torch.eye(problem.num_params, dtype=torch.float64)
    fishers = [batch_fisher_loop(problem, theta, batch, m) for m in range(batch.reps)]
    gradient = reinforce_loop(problem, theta, batch, "reward_to_go", baseline, True)  # [M, P]
    loop = torch.stack([torch.linalg.solve(fishers[m] + damping * identity, gradient[m]) for m in range(batch.reps)])
    direct = natural(problem.policy, theta, batch, **{**options, "solver": "direct"})
    cg = natural(problem.policy, theta, batch, **options)
    torch.testing.assert_close(direct, loop, rtol=1e-9, atol=1e-12)
    for m in range(batch.reps):
        residual = fishers[m] @ cg[m] + damping * cg[m] - gradient[m]
        assert residual.norm() <= 10 * config.cg_tol * gradient[m].norm()
    torch.testing.assert_close(cg, direct, rtol=1e-6, atol=1e-10)


def test_fisher_vector_product_and_batch_fisher_match_loop_twin():
    """The matrix-free F̂v (one jvp, one vmapped gradient) and the formed F̂ against the loop twin,
    on an LQR batch (Gaussian policy, every entry of F̂ nonzero) with one direction per replicate."""
    problem = make_problem("lqr", {"state_dim": 3, "action_dim": 2})
    theta = random_theta(problem, seed=46)
    batch = problem.sample(theta, 3, 4, torch.Generator().manual_seed(47))
    directions = torch.randn(3, problem.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(48))
    loops = [batch_fisher_loop(problem, theta, batch, m) for m in range(3)]
    for m in range(3):
        torch.testing.assert_close(batch_fisher(problem.policy, theta, batch, m), loops[m], rtol=1e-10, atol=1e-12)
    expected = torch.stack([loops[m] @ directions[m] for m in range(3)])
    torch.testing.assert_close(fisher_vector_product(problem.policy, theta, batch, directions), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [("cliffwalking", {}), ("taxi", {"horizon": 50})], ids=case_id)
def test_cg_converges_on_singular_batch_fisher(case):
    """Tabular softmax F̂ is singular twice over: rows of unvisited states are zero, and each row's
    logits can shift together (ψ ⊥ 1_s, so F̂ 1_s = 0). The damping makes F̂ + δI positive definite:
    CG converges to the dense solve (taxi: P = 3000), leaves unvisited rows at 0 and keeps every
    row's sum at 0 (ĝ lies in the range of F̂, so (F̂ + δI)⁻¹ĝ does too)."""
    problem = make_problem(*case)
    theta = random_theta(problem, seed=49)
    batch = problem.sample(theta, 1, 2, torch.Generator().manual_seed(50))
    config = resolve_estimator("natural", {})
    fisher = batch_fisher(problem.policy, theta, batch, 0)
    states, actions = problem.theta_shape
    row_shifts = torch.eye(states, dtype=torch.float64).repeat_interleave(actions, dim=1)  # [S, P]: 1_s
    visited = torch.zeros(states, dtype=torch.bool)
    visited[batch.obs[batch.mask > 0]] = True
    assert fisher.abs().max() > 0 and not visited.all()
    torch.testing.assert_close(fisher @ row_shifts.T, torch.zeros(problem.num_params, states, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    cg = natural(problem.policy, theta, batch, **config.kwargs())
    direct = torch.linalg.solve(fisher + config.damping * torch.eye(problem.num_params, dtype=torch.float64),
                                reinforce(problem.policy, theta, batch)[0])
    torch.testing.assert_close(cg[0], direct, rtol=1e-6, atol=1e-10)
    rows = cg[0].reshape(states, actions)
    assert rows[visited].abs().sum() > 0 and (rows[~visited] == 0).all()
    assert rows.sum(1).abs().max() <= 1e-12 * rows.abs().sum()  # 0 up to rounding


def test_truncated_cg_zero_and_nonfinite_gradients():
    """cg_iters bounds the work: one iteration is the steepest-descent step, not the solution. A
    replicate whose ĝ is 0 (no reward in the batch) stays exactly 0 instead of dividing 0 by 0; one
    whose ĝ is not finite gives NaN with both solvers (to be counted by the metrics, never hidden),
    leaving the other replicates as they were."""
    problem = make_problem("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2})
    theta = random_theta(problem, seed=51)
    batch = problem.sample(theta, 2, 3, torch.Generator().manual_seed(52))
    full = natural(problem.policy, theta, batch)
    one = natural(problem.policy, theta, batch, cg_iters=1)
    gradient = reinforce(problem.policy, theta, batch)
    product = fisher_vector_product(problem.policy, theta, batch, gradient) + 0.01 * gradient
    step = (gradient * gradient).sum(1) / (gradient * product).sum(1)
    torch.testing.assert_close(one, step[:, None] * gradient, rtol=1e-10, atol=1e-12)
    assert ((one - full).norm(dim=1) > 0.1 * full.norm(dim=1)).all()

    rewards = batch.rewards.clone()
    rewards[1, 0, 0] = math.inf
    broken = dataclasses.replace(batch, rewards=rewards)
    for solver in ("cg", "direct"):
        estimate = natural(problem.policy, theta, broken, solver=solver)
        assert torch.isnan(estimate[1]).all()
        torch.testing.assert_close(estimate[0], full[0], rtol=1e-6, atol=1e-10)

    lake = make_problem("frozenlake")
    lake_batch = lake.sample(lake.default_theta(), 4, 1, torch.Generator().manual_seed(53))
    no_reward = lake_batch.rewards.sum((1, 2)) == 0
    assert no_reward.any()
    estimate = natural(lake.policy, lake.default_theta(), lake_batch)
    assert torch.isfinite(estimate).all() and (estimate[no_reward] == 0).all()


# ---------------------------------------------------------------- declaration, refusals


def test_declaration_target_and_refusals():
    config = resolve_estimator("natural", {"damping": 0.5})
    assert config.target == Target(damping=0.5)
    lqr = make_problem("lqr")
    assert not config.unbiased(lqr)
    with pytest.raises(ConfigError, match=r"estimator natural: env lqr has no stochastic policy \(∇ log π\)"):
        config.check(make_problem("lqr", {"policy": "deterministic"}), 4)
    with pytest.raises(ConfigError, match="estimator natural: baseline=rloo needs batch_size ≥ 2"):
        config.replace(baseline="rloo").check(lqr, 1)
    with pytest.raises(ConfigError, match="damping"):
        resolve_estimator("natural", {"damping": 0})
    # constant:<c> parsed as reinforce's BaselineParser parses it (one normal form); batch-fitted baselines refused
    assert resolve_estimator("natural", {"baseline": " constant:0.50 "}).baseline == "constant:0.5"
    assert resolve_estimator("natural", {"baseline": "constant:1e-1"}).baseline == \
        resolve_estimator("reinforce", {"baseline": "constant:1e-1"}).baseline
    for bad in ("batch_mean", "optimal", "constant:", "constant:x", "rloo:1"):
        with pytest.raises(ConfigError, match="one of none, constant:<value>, rloo, value"):
            resolve_estimator("natural", {"baseline": bad})
    config.replace(baseline="constant:0.5").check(lqr, 1)  # a constant needs no other trajectory
    # fisher=exact: (F + δI)⁻¹ĝ with F fixed given θ is unbiased for the target; the solver options do not apply
    assert config.replace(fisher="exact").unbiased(lqr)
    assert not config.replace(fisher="exact", baseline="value", critic="fitted_same_batch").unbiased(lqr)
    with pytest.raises(ConfigError, match="estimator natural: option solver applies only to fisher=batch"):
        resolve_estimator("natural", {"fisher": "exact", "solver": "direct"})
    with pytest.raises(ConfigError, match="estimator natural: option critic applies only to baseline=value"):
        resolve_estimator("natural", {"critic": "fitted"})
    # refused when the options are resolved (`only_if`), before any problem is involved
    with pytest.raises(ConfigError, match="estimator natural: option cg_iters applies only to solver=cg"):
        config.replace(solver="direct", cg_iters=5)
    with pytest.raises(ConfigError, match="estimator natural: option cg_tol applies only to solver=cg"):
        resolve_estimator("natural", {"solver": "direct", "cg_tol": 1e-6})
    result = measure(lqr, "natural", 2, reps=3, seed=0, estimator_options={"damping": 0.5}, show_progress=False)
    assert result.target == "(F + 0.5·I)⁻¹∇J" and not result.declared_unbiased


def test_exact_fisher_estimate_is_the_damped_solve_of_reinforce_with_the_exact_matrix():
    """fisher=exact against an independent computation from the same batch: ĝ_nat = (F + δI)⁻¹ ĝ_REINFORCE with
    F = problem.fisher(θ), per replicate by numpy's solve; with baseline=value the oracle V^π is the baseline."""
    problem = make_problem("softmax-bandit", {"probs": [1.0, 0.7, 0.0], "rewards": "deterministic"})
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    batch = problem.sample(theta, 5, 3, torch.Generator().manual_seed(3))
    for baseline in ("none", "constant:-1", "value"):
        config = resolve_estimator("natural", {"fisher": "exact", "baseline": baseline, "damping": 0.05})
        estimate = config.estimate(problem.policy, theta, batch, config.prepare(problem, theta, torch.Generator()))
        reinforce_config = resolve_estimator("reinforce", {"baseline": baseline})
        plain = reinforce_config.estimate(problem.policy, theta, batch,
                                          reinforce_config.prepare(problem, theta, torch.Generator()))
        damped = problem.fisher(theta).numpy() + 0.05 * np.eye(3)
        expected = np.stack([np.linalg.solve(damped, g) for g in plain.numpy()])
        assert np.allclose(estimate.numpy(), expected, rtol=1e-10, atol=1e-12), baseline


@pytest.mark.parametrize("env,options", [("garnet", {"states": 6, "horizon": 10, "gamma": 0.9}), ("lqr", {})])
def test_exact_fisher_factored_once_per_theta_gives_each_estimates_own_solve(env, options):
    """fisher=exact factors F + δI once at θ (`prepare`) and every chunk of estimates drawn there reuses it: two
    chunks' estimates against the slow twin, torch.linalg.solve(F + δI, ĝ_m) per estimate, to 1e-12 relative."""
    problem = make_problem(env, options)
    theta = random_theta(problem, seed=4, scale=0.3)
    config = resolve_estimator("natural", {"fisher": "exact", "baseline": "rloo", "damping": 0.05})
    prepared = config.prepare(problem, theta, torch.Generator())
    damped = problem.fisher(theta) + 0.05 * torch.eye(problem.num_params, dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    for chunk in range(2):
        batch = problem.sample(theta, 4, 3, generator)
        estimate = config.estimate(problem.policy, theta, batch, prepared)  # [M, P]
        plain = reinforce(problem.policy, theta, batch, baseline="rloo")
        for m in range(batch.reps):
            expected = torch.linalg.solve(damped, plain[m])
            assert torch.linalg.vector_norm(estimate[m] - expected) <= 1e-12 * torch.linalg.vector_norm(expected), \
                (chunk, m)


# ---------------------------------------------------------------- measured against the exact target


def enumerated_expectation(problem, theta, batch_size: int, baseline: str, damping: float) -> np.ndarray:
    """Exact E[(F̂ + δI)⁻¹ ĝ] on a one-step softmax problem (softmax-bandit, contextual-bandit), by
    enumerating every batch: each trajectory is an outcome (context c, arm a, reward r ∈ {0, 1})
    with probability ρ(c) π(a|c) p(r|c, a) and score ψ = e_a − π(·|c) on row c's logits."""
    mdp = problem.mdp
    pi = problem.policy.probs(theta).numpy()  # [C, A]
    C, A = pi.shape
    outcomes = []  # (probability, score ψ [P], reward)
    for c, a in itertools.product(range(C), range(A)):
        psi = np.zeros((C, A))
        psi[c] = -pi[c]
        psi[c, a] += 1.0
        for k in range(mdp.prob.shape[-1]):
            weight = float(mdp.initial[c] * pi[c, a] * mdp.prob[c, a, k])
            if weight > 0:
                outcomes.append((weight, psi.reshape(-1), float(mdp.reward[c, a, k])))
    expectation = np.zeros(C * A)
    for draw in itertools.product(outcomes, repeat=batch_size):
        rewards = np.array([r for _, _, r in draw])
        scores = np.stack([psi for _, psi, _ in draw])
        advantage = rewards - (rewards.sum() - rewards) / (batch_size - 1) if baseline == "rloo" else rewards
        fisher = scores.T @ scores / batch_size
        gradient = scores.T @ advantage / batch_size
        expectation += math.prod(w for w, _, _ in draw) * np.linalg.solve(fisher + damping * np.eye(C * A), gradient)
    return expectation


@pytest.mark.parametrize("name,baseline,batch_size", [
    ("softmax-bandit", "none", 3), ("softmax-bandit", "rloo", 2), ("contextual-bandit", "none", 2),
])
def test_bias_at_small_batch_is_the_enumerated_one(name, baseline, batch_size):
    """The documented settings where the bias is detected: on the one-step softmax problems the
    estimator's exact expectation is a finite sum over all batches (`enumerated_expectation`). The
    measured mean is consistent with it (p ≥ ALPHA) and differs from the target (F + δI)⁻¹∇J
    (p < ALPHA). False-positive rate ≤ ALPHA per setting (the first assertion); the second fails
    for a correct estimator only by lack of power, negligible at these p-values (< 1e-20 measured)."""
    problem = make_problem(name)
    theta = random_theta(problem, seed=54)
    result = measure(problem, "natural", batch_size, reps=4000, seed=104, theta=theta,
                     estimator_options={"baseline": baseline}, show_progress=False)
    assert not result.metrics.heavy_tailed and result.metrics.nonfinite == 0
    exact = enumerated_expectation(problem, theta, batch_size, baseline, result.estimator_options["damping"])
    assert shifted_pvalue(result, exact) >= ALPHA
    assert result.metrics.bias_pvalue < ALPHA


@pytest.mark.parametrize("case,small,large,reps", [
    (("lqr", {}), 4, 64, 1000),
    (("gaussian-bandit", {}), 4, 256, 1000),
    (("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}), 4, 64, 300),
])
def test_bias_detected_at_small_batch_and_shrinks_with_batch_size(case, small, large, reps):
    """Consistency against the exact damped natural gradient (F + δI)⁻¹∇J, δ = 0.01: at the small
    batch size the bias is detected (p < ALPHA) and the relative-bias 95% CI at the large one lies
    entirely below the small one's. An estimator that is not consistent for this target (a wrongly
    scaled F̂, a wrong target) fails the second assertion. Measured relative bias (95% CI), small →
    large N: lqr 0.50 (0.43, 0.56) → 0.033 (0, 0.049); gaussian-bandit 0.53 (0.49, 0.56) → 0.010
    (0.007, 0.012); garnet 2.8 (2.3, 3.3) → 0.16 (0, 0.24). False-positive rate: a correct
    estimator fails only if its two relative-bias estimates err together by ≥ 7 standard errors of
    their difference (the margins above: 10, 29 and 7.5), < 1e-11 by the normal approximation the
    CIs rest on (asserted valid: not heavy-tailed)."""
    problem = make_problem(*case)
    theta = random_theta(problem, seed=23)
    results = [measure(problem, "natural", n, reps=reps, seed=105, theta=theta, show_progress=False)
               for n in (small, large)]
    for result in results:
        assert not result.metrics.heavy_tailed and result.metrics.nonfinite == 0
    assert results[0].metrics.bias_pvalue < ALPHA
    assert results[1].metrics.relative_bias_ci[1] < results[0].metrics.relative_bias_ci[0], \
        [r.metrics.relative_bias_ci for r in results]


# ---------------------------------------------------------------- its cosine to ∇J (gradient_cosine)


def softmax_bandit_closed_form(problem, theta: torch.Tensor, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """∇J and (F + δI)⁻¹∇J of the softmax bandit by numpy from its closed forms, independent of the problem's code:
    π = softmax(θ), J = πᵀp, ∇J_k = π_k (p_k − J), F = E[ψψᵀ] = diag(π) − ππᵀ (ψ = e_a − π)."""
    logits = theta.numpy()
    pi = np.exp(logits - logits.max())
    pi /= pi.sum()
    p = np.asarray(problem.arm_probs, dtype=np.float64)
    gradient = pi * (p - pi @ p)
    fisher = np.diag(pi) - np.outer(pi, pi)
    return gradient, np.linalg.solve(fisher + damping * np.eye(len(pi)), gradient)


# π ≈ (0.06, 0.77, 0.17) on the default arms p = (0.9, 0.4, 0.1): the Fisher turns ∇J by ≈ 25° (cos 0.904); at θ's
# nearer the uniform policy ∇J is close to an eigenvector of F and the two cosines all but coincide.
MEDIOCRE_ARM = torch.tensor([-1.0, 1.5, 0.0], dtype=torch.float64)


def test_gradient_cosine_of_the_exact_natural_gradient_is_its_closed_form():
    """Estimates equal to the exact target (F + δI)⁻¹∇J (bench.reference) measured against ∇J: gradient_cosine is
    cos((F + δI)⁻¹∇J, ∇J) of the closed forms, away from 1 at this θ (F turns ∇J), and cosine_mean is 1."""
    from bench.reference import exact_target

    problem = make_problem("softmax-bandit")
    theta = MEDIOCRE_ARM
    gradient, natural_gradient = softmax_bandit_closed_form(problem, theta, 0.01)
    expected = float(natural_gradient @ gradient / (np.linalg.norm(natural_gradient) * np.linalg.norm(gradient)))
    rows = np.tile(exact_target(problem, theta, Target(damping=0.01)).numpy(), (3, 1))
    m = gradient_metrics(rows, natural_gradient, gradient=problem.exact_gradient(theta).detach().numpy())
    assert m.gradient_cosine == pytest.approx(expected, rel=1e-12) and expected < 0.95
    assert m.cosine_mean == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("estimator,options", [("natural", {}), ("natural", {"fisher": "exact"}),
                                               ("reinforce", {"entropy_coef": 0.1})])
def test_measured_gradient_cosine_is_each_estimates_cosine_to_the_closed_form_gradient(estimator, options):
    """A measurement of a target other than ∇J (the natural gradient, the entropy bonus): gradient_cosine and its
    interval are those of the M estimates' cosines to the closed-form ∇J (tests.test_metrics.cosine_twin), its ∇J
    reference is that ∇J, and cosine_mean is the cosine to the estimator's own target, another number."""
    from tests.test_metrics import cosine_twin

    problem = make_problem("softmax-bandit")
    theta = MEDIOCRE_ARM
    result = measure(problem, estimator, 8, reps=200, seed=3, theta=theta, estimator_options=options,
                     show_progress=False)
    gradient, _ = softmax_bandit_closed_form(problem, theta, 0.01)
    np.testing.assert_allclose(result.gradient_reference.grad, gradient, rtol=1e-12, atol=1e-15)
    assert result.gradient_reference is not result.reference and result.target != "∇J"
    value, interval = cosine_twin(result.estimates, gradient)
    assert result.metrics.gradient_cosine == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(result.metrics.gradient_cosine_ci, interval, rtol=1e-12)
    assert result.metrics.cosine_mean == pytest.approx(cosine_twin(result.estimates, result.reference_grad)[0],
                                                       rel=1e-12)
    assert result.metrics.gradient_cosine != result.metrics.cosine_mean
    record = result.to_dict()
    assert record["gradient_cosine"] == result.metrics.gradient_cosine
    assert record["gradient_cosine_ci"] == list(result.metrics.gradient_cosine_ci)
