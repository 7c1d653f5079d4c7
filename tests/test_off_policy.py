"""Off-policy estimators (estimators/off_policy.py): loop twins, the reductions at θ_b = θ, the behaviour
policy's KL and distance, unbiasedness of the importance-sampling estimators off-policy, the detected bias
of the per-step-ratio ones (against their exact expectations), the variance cost of whole-trajectory
ratios, and non-finite estimates reaching the harness.

Statistical tests use fixed seeds; each states its false-positive rate (the probability that it fails for a
correct implementation). Their p-values and intervals come from the harness and are calibrated only when the
estimates are not heavy-tailed, which each asserts. Together they fail a correct implementation with
probability < 0.5 %.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bench.harness import make_generator, measure
from bench.metrics import gradient_metrics
from envs import make_problem
from envs.problem import Capability
from envs.spec import ConfigError
from envs.tabular import TabularProblem
from estimators import ESTIMATORS, off_policy, resolve_estimator
from estimators.off_policy import advantages, is_trajectory, log_ratios, select_behaviour
from tests.conftest import EXACT_CASES, case_id, random_theta
from tests.twins import off_policy_loop

ALPHA = 1e-4
OFF_POLICY = ("is-trajectory", "is-per-decision", "is-first-order", "ppo-clip")
GARNET = ("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2})
STOCHASTIC_CASES = [c for c in EXACT_CASES if make_problem(*c).supports(Capability.STOCHASTIC_POLICY)]


# ---------------------------------------------------------------------------------------------- loop twins

TWIN_PROBLEMS = [("frozenlake", {}), GARNET, ("lqr", {}), ("gaussian-bandit", {})]
TWIN_BATCH = {"frozenlake": (2, 16)}  # (M, N); frozenlake needs 16 to reach the goal in this batch
TWIN_ESTIMATORS = [("is-trajectory", {}), ("is-per-decision", {}), ("is-first-order", {}),
                   ("is-first-order", {"baseline": "value"}), ("ppo-clip", {}), ("ppo-clip", {"baseline": "value"})]
TWIN_CASES = [(p, name, opts) for p in TWIN_PROBLEMS for name, opts in TWIN_ESTIMATORS]


@pytest.fixture
def small_kl_sample(monkeypatch):
    """distance:<v> does not depend on the KL sample (only the reported KL does): keep it small here."""
    monkeypatch.setattr(off_policy, "KL_SAMPLE_STEPS", 256)


def prepared_batch(problem_case, name, opts, behaviour="distance:1.5", seed=4):
    """(problem, θ, config, prepared, batch ~ π_b) for a twin comparison with θ_b ≠ θ."""
    problem = make_problem(*problem_case)
    theta = random_theta(problem, seed=30)
    config = resolve_estimator(name, {"behaviour": behaviour, **opts})
    prepared = config.prepare(problem, theta, torch.Generator().manual_seed(0))
    reps, batch_size = TWIN_BATCH.get(problem.name, (2, 3))
    batch = problem.sample(prepared.sample_theta, reps, batch_size, torch.Generator().manual_seed(seed))
    return problem, theta, config, prepared, batch


@pytest.mark.parametrize("case", TWIN_CASES, ids=lambda c: f"{case_id(c[0])}-{c[1]}-{c[2]}")
def test_fast_matches_loop_twin(case, small_kl_sample):
    problem_case, name, opts = case
    problem, theta, config, prepared, batch = prepared_batch(problem_case, name, opts)
    behaviour_theta = prepared.kwargs["behaviour_theta"]
    assert not torch.equal(behaviour_theta, theta) and batch.rewards.abs().sum() > 0
    fast = config.estimate(problem.policy, theta, batch, prepared)
    slow = off_policy_loop(problem, theta, behaviour_theta, batch, name, getattr(config, "clip", 0.0),
                           getattr(config, "baseline", "none") == "value")
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-11)
    if name == "ppo-clip":  # both branches of the case analysis occur in this batch
        ratio = log_ratios(problem.policy, theta, behaviour_theta, batch).exp()
        advantage = advantages(batch, prepared.kwargs["critic"])
        clip = config.clip
        clipped = ((advantage > 0) & (ratio > 1 + clip)) | ((advantage < 0) & (ratio < 1 - clip))
        active = (advantage != 0) & (batch.mask > 0)
        assert 0 < int((clipped & active).sum()) < int(active.sum())


@pytest.mark.parametrize("problem_case", TWIN_PROBLEMS, ids=case_id)
@pytest.mark.parametrize("baseline", ["none", "value"])
def test_first_order_is_ppo_clip_without_clipping(problem_case, baseline, small_kl_sample):
    """With ε = 10¹², no ratio is ever clipped: the clipped surrogate's gradient is the per-step one."""
    problem, theta, config, prepared, batch = prepared_batch(problem_case, "ppo-clip", {"baseline": baseline,
                                                                                         "clip": 1e12})
    first_order = ESTIMATORS.get("is-first-order").function
    unclipped = config.estimate(problem.policy, theta, batch, prepared)
    kwargs = {k: v for k, v in prepared.kwargs.items() if k != "clip"}
    torch.testing.assert_close(unclipped, first_order(problem.policy, theta, batch, **kwargs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("problem_case", STOCHASTIC_CASES, ids=case_id)
def test_on_policy_every_estimator_is_reinforce_with_the_same_advantages(problem_case):
    """At θ_b = θ (behaviour=none) every ratio is 1: PPO-clip's gradient, the per-step and both
    importance-sampling estimators equal `reinforce` with reward-to-go and γ^t on the same batch — with no
    baseline, and with V^{π_b} = V^{π_θ} ↔ reinforce's baseline=value, critic=oracle."""
    problem = make_problem(*problem_case)
    theta = random_theta(problem, seed=31)
    batch = problem.sample(theta, 2, 3, torch.Generator().manual_seed(6))

    def estimate(name, opts):
        config = resolve_estimator(name, opts)
        prepared = config.prepare(problem, theta, torch.Generator().manual_seed(7))
        assert prepared.sample_theta is None or torch.equal(prepared.sample_theta, theta)
        return config.estimate(problem.policy, theta, batch, prepared)

    plain = {"returns": "reward_to_go", "discount_score": True}
    for baseline, reinforce_options in [("none", {"baseline": "none"}),
                                        ("value", {"baseline": "value", "critic": "oracle"})]:
        expected = estimate("reinforce", {**plain, **reinforce_options})
        names = ["is-first-order", "ppo-clip"] + (["is-trajectory", "is-per-decision"] if baseline == "none" else [])
        for name in names:
            opts = {"baseline": baseline} if name in ("is-first-order", "ppo-clip") else {}
            torch.testing.assert_close(estimate(name, opts), expected, rtol=1e-10, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------------------------- behaviour policy

def exact_mean_step_kl(problem, theta: torch.Tensor, behaviour_theta: torch.Tensor) -> float:
    """KL̄ = Σ_t E_θ[KL(π_θ(·|s_t) ‖ π_b(·|s_t))] / Σ_t P_θ(alive at t), exactly: tabular by the occupancy,
    LQR by E‖(K_b − K) x_t‖² = tr((K_b − K) Σ_t (K_b − K)ᵀ), the Gaussian bandit in closed form."""
    if isinstance(problem, TabularProblem):
        alive = problem.occupancy(theta).sum(-1)  # [H, S]
        log_pi = torch.log(problem.policy.probs(theta))
        log_pi_b = torch.log(problem.policy.probs(behaviour_theta))
        per_state = (log_pi.exp() * (log_pi - log_pi_b)).sum(-1)  # [S]
        return float((alive @ per_state).sum() / alive.sum())
    log_std, log_std_b = theta[-1], behaviour_theta[-1]
    variance_part = log_std_b - log_std + 0.5 * torch.exp(2 * (log_std - log_std_b)) - 0.5
    if problem.name == "lqr":
        shift = problem.policy.gain(behaviour_theta) - problem.policy.gain(theta)  # [du, dx]
        mean_part = torch.einsum("ij,tjk,ik->t", shift, problem.state_covariances(theta), shift).mean()
        return float(problem.policy.action_dim * variance_part + mean_part / (2 * torch.exp(2 * log_std_b)))
    return float(variance_part + (theta[0] - behaviour_theta[0]) ** 2 / (2 * torch.exp(2 * log_std_b)))


@pytest.mark.parametrize("problem_case", [GARNET, ("frozenlake", {}), ("lqr", {}), ("gaussian-bandit", {})],
                         ids=case_id)
def test_behaviour_hits_its_kl_target_and_distance(problem_case):
    """kl:<v> makes the Monte Carlo KL̂ equal v (to the bisection's precision); the exact KL̄ at the chosen
    θ_b is within 4 reported standard errors of v (FPR ≈ 6e-5 each, KL̂'s error being ≈ normal, and — as
    KL̂(δ) − KL̄(δ) varies slowly in δ — about the same at the chosen δ as at the true one). The standard
    error is small: measured 0.1–2.2 % of v at v ≤ 0.05 on every problem (asserted < 3 % here), and
    |KL̄ − v| ≤ 1.75 SE on all of them. distance:<v> puts θ_b at exactly ‖θ_b − θ‖ = v."""
    problem = make_problem(*problem_case)
    theta = random_theta(problem, seed=32)
    target = 0.05
    behaviour_theta, info = select_behaviour(problem, theta, f"kl:{target}", behaviour_seed=3)
    assert info["behaviour_kl"] == pytest.approx(target, rel=1e-9)
    assert 0 < info["behaviour_kl_se"] < 0.03 * target
    assert abs(exact_mean_step_kl(problem, theta, behaviour_theta) - target) <= 4 * info["behaviour_kl_se"]
    assert float((behaviour_theta - theta).norm()) == pytest.approx(info["behaviour_distance"], rel=1e-12)

    behaviour_theta, info = select_behaviour(problem, theta, "distance:0.7", behaviour_seed=3)
    assert float((behaviour_theta - theta).norm()) == pytest.approx(0.7, rel=1e-12)
    assert info["behaviour_distance"] == 0.7
    assert info["behaviour_kl"] == pytest.approx(exact_mean_step_kl(problem, theta, behaviour_theta),
                                                 abs=4 * info["behaviour_kl_se"])


def test_behaviour_depends_on_behaviour_seed_not_on_the_measurement_seed():
    """θ_b is a function of (problem, θ, options): two measurements with different seeds report the same
    behaviour policy, `prepare` ignores its generator, and behaviour_seed does move θ_b."""
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=33)
    infos = [measure(problem, "is-per-decision", 2, reps=2, seed=seed, theta=theta, show_progress=False,
                     estimator_options={"behaviour": "kl:0.05"}).estimator_info for seed in (1, 2)]
    assert infos[0] == infos[1] and infos[0]["behaviour_kl"] == pytest.approx(0.05)
    config = resolve_estimator("is-per-decision", {"behaviour": "distance:0.5"})
    behaviours = [config.replace(behaviour_seed=behaviour_seed).prepare(problem, theta,
                                                                         make_generator(seed, 1)).sample_theta
                  for behaviour_seed, seed in [(0, 1), (0, 2), (1, 1)]]
    assert torch.equal(behaviours[0], behaviours[1])
    assert not torch.equal(behaviours[0], behaviours[2])


@pytest.mark.parametrize("name", OFF_POLICY)
def test_refuses_what_does_not_apply(name):
    with pytest.raises(ConfigError, match=rf"estimator {name}: env lqr has no stochastic policy \(∇ log π\)"):
        resolve_estimator(name, {}).check(make_problem("lqr", {"policy": "deterministic"}), 4)
    for bad in ("kl", "kl:0", "kl:-1", "distance:nan", "far"):
        with pytest.raises(ConfigError, match="expected none, kl:<v> or distance:<v>"):
            resolve_estimator(name, {"behaviour": bad})
    # refused when the options are resolved (`only_if`), before any problem is involved
    with pytest.raises(ConfigError, match=f"estimator {name}: option behaviour_seed applies only to behaviour=kl or "
                                          "behaviour=distance"):
        resolve_estimator(name, {"behaviour_seed": 3})
    resolve_estimator(name, {"behaviour": "kl:0.1", "behaviour_seed": 3}).check(make_problem(*GARNET), 4)
    if name in ("is-first-order", "ppo-clip"):
        problem = make_problem("gaussian-bandit")
        problem.capabilities = problem.capabilities - {Capability.VALUE_BASIS}  # a problem with no value model
        with pytest.raises(ConfigError, match=f"estimator {name}: env gaussian-bandit has no value model"):
            resolve_estimator(name, {"baseline": "value"}).check(problem, 4)


def test_unreachable_kl_target_is_one_line():
    """On a softmax bandit KL(π_θ‖π_b) ≤ ‖θ_b − θ‖ · (max_a u_a − min_a u_a), far below 1e9 within the search."""
    problem = make_problem("softmax-bandit")
    config = resolve_estimator("ppo-clip", {"behaviour": "kl:1e9"})
    with pytest.raises(ConfigError, match=r"behaviour=kl:1000000000: .* stays below") as error:
        config.prepare(problem, problem.default_theta(), torch.Generator())
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- bias

# Garnet (6 states, 3 actions, branching 2), γ = 0.9, H = 20, at θ = random_theta(seed=23), behaviour_seed 0.
# At kl:0.02 the importance-sampling estimates at N = 64 are not heavy-tailed (tail kurtosis measured 2.4 for
# is-trajectory, 1.3 for is-per-decision at M = 1000; at kl:0.05 is-trajectory reaches 7.3 and kl:0.1 49).


@functools.cache
def garnet_measurement(name: str, behaviour: str, batch_size: int):
    """One seeded measurement on GARNET (M = 1000, seed 7), shared by the tests that read it."""
    problem = make_problem(*GARNET)
    return measure(problem, name, batch_size, reps=1000, seed=7, theta=random_theta(problem, seed=23),
                   show_progress=False, estimator_options={"behaviour": behaviour})


@pytest.mark.parametrize("name", ["is-trajectory", "is-per-decision"])
def test_importance_sampling_is_unbiased_off_policy(name):
    """At θ_b ≠ θ (kl:0.02) both are unbiased for ∇J(θ): p ≥ ALPHA (FPR 1e-4 each). That the test has power
    here: the same estimator with every ratio set to 1 (no correction) is rejected (p < ALPHA; measured p ≈ 0,
    relative bias 3.1), and so is the per-step-ratio estimator (tests below; relative bias 0.1)."""
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=23)
    result = garnet_measurement(name, "kl:0.02", 64)
    assert result.estimator_info["behaviour_kl"] == pytest.approx(0.02)
    assert not result.metrics.heavy_tailed and result.metrics.nonfinite == 0
    assert result.metrics.bias_pvalue >= ALPHA, f"p = {result.metrics.bias_pvalue:.2e}"

    behaviour_theta = torch.as_tensor(select_behaviour(problem, theta, "kl:0.02", 0)[0])
    batch = problem.sample(behaviour_theta, 200, 64, make_generator(8))
    uncorrected = is_trajectory(problem.policy, theta, batch, behaviour_theta=theta)  # ratios ≡ 1
    control = gradient_metrics(uncorrected.numpy(), result.reference_grad)
    assert not control.heavy_tailed and control.bias_pvalue < ALPHA


def per_step_ratio_expectation(problem: TabularProblem, theta, behaviour_theta, clip: float | None) -> np.ndarray:
    """E_b[ĝ] of `is_first_order` (clip None) and of `ppo_clip` without a baseline on a problem whose
    rewards are positive (so Â_t = G_t > 0 and a term is clipped iff ρ(s, a) > 1 + ε), exactly:

        Σ_t γ^t Σ_s d^b_t(s) Σ_a π_θ(a|s) ∇_θ log π_θ(a|s) Q^b_t(s, a) 1{kept(s, a)},

    with d^b_t the alive-state distribution and Q^b_t the action values of π_b. For softmax-tabular,
    Σ_a π ∇log π X(a) on row s is π(a|s)(X(a) − Σ_a' π(a'|s) X(a')). A baseline b_t(s) does not change it."""
    occupancy = problem.occupancy(behaviour_theta).sum(-1)  # [H, S]
    q = problem.action_values(behaviour_theta)  # [H, S, A]
    pi, pi_b = problem.policy.probs(theta), problem.policy.probs(behaviour_theta)  # [S, A]
    kept = q * (1.0 if clip is None else (pi / pi_b <= 1 + clip).to(q.dtype))
    per_row = pi * (kept - (pi * kept).sum(-1, keepdim=True))  # [H, S, A]
    discount = problem.gamma ** torch.arange(problem.horizon, dtype=torch.float64)
    return (discount[:, None, None] * occupancy[..., None] * per_row).sum(0).reshape(-1).detach().numpy()


def test_per_step_ratio_expectation_is_the_gradient_on_policy():
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=34)
    np.testing.assert_allclose(per_step_ratio_expectation(problem, theta, theta, None),
                               problem.exact_gradient(theta).numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["is-first-order", "ppo-clip"])
def test_per_step_ratio_estimators_are_biased_off_policy(name):
    """Garnet γ = 0.9, H = 20, kl:0.1, baseline none, N = 16, M = 1000: the estimates are consistent with
    the exact expectation above (p ≥ ALPHA) and detected as biased for ∇J (p < ALPHA; measured p ≈ 2e-6
    for is-first-order, relative bias 0.22 (exact 0.195), and p ≈ 0 for ppo-clip, relative bias 7.5: with
    Â_t = G_t > 0 the clip removes every term whose ratio exceeds 1 + ε). FPR 1e-4 (the first assertion)."""
    problem = make_problem(*GARNET)
    theta = random_theta(problem, seed=23)
    result = garnet_measurement(name, "kl:0.1", 16)
    assert not result.declared_unbiased and not result.metrics.heavy_tailed
    behaviour_theta = select_behaviour(problem, theta, "kl:0.1", 0)[0]
    expected = per_step_ratio_expectation(problem, theta, behaviour_theta, 0.2 if name == "ppo-clip" else None)
    assert gradient_metrics(result.estimates, expected).bias_pvalue >= ALPHA
    assert result.metrics.bias_pvalue < ALPHA


# ---------------------------------------------------------------------------------------------- variance

def test_whole_trajectory_ratio_costs_variance():
    """The curse of horizon: on the same batches (same seed and θ_b), is-trajectory's variance exceeds
    is-per-decision's — their 95 % intervals are disjoint. Equal variances would give that with probability
    ≈ 0.3 % (independent estimates; the shared batches correlate them, which lowers it). At the measured
    ratio 1.78 (intervals ±7 % and ±4 %) a correct implementation fails only by a > 5 SE deviation (FPR
    < 1e-6). Measured ratios of tr Cov at kl:0.02, N = 64, M = 1000 on this Garnet: H = 5: 1.14, 10: 1.31,
    20: 1.78, 40: 3.98 (is-trajectory heavy-tailed, kurtosis 16); at H = 20: kl:0.05: 3.2, kl:0.1: 5.8
    (heavy-tailed)."""
    results = [garnet_measurement(name, "kl:0.02", 64).metrics for name in ("is-trajectory", "is-per-decision")]
    assert not any(m.heavy_tailed for m in results)
    assert results[0].variance_trace_ci[0] > results[1].variance_trace_ci[1]


# ---------------------------------------------------------------------------------------------- non-finite

@pytest.mark.parametrize("name", OFF_POLICY)
def test_nonfinite_estimates_reach_the_harness(name):
    """Importance ratios cannot overflow in practice (E_b ρ = 1, so P(ρ > 1.8e308) < 6e-309); the data can.
    On lqr with H = 100, behaviour=distance:100 moves K so far that A − B K_b has spectral radius ≈ 35: the
    behaviour policy's states grow like 35^t and their squares overflow float64 near t = 100, in some
    trajectories and not others. Those estimates are non-finite; they must be kept and counted, not dropped."""
    problem = make_problem("lqr", {"horizon": 100})
    reps = 50
    result = measure(problem, name, 4, reps=reps, seed=3, show_progress=False,
                     estimator_options={"behaviour": "distance:100"})
    finite = np.isfinite(result.estimates).all(1)
    assert result.estimates.shape[0] == reps and 0 < (~finite).sum() < reps - 1
    record = result.to_dict()
    assert record["nonfinite"] == result.metrics.nonfinite == (~finite).sum()
    assert record["reps_used"] == reps - record["nonfinite"]
    np.testing.assert_allclose(record["mean_grad"], result.estimates[finite].mean(0))
