"""Problems: exact J and ∇J against finite differences and loop twins; samplers against exact
occupancy measures and against the real gymnasium environments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from envs import PROBLEMS, make_problem
from envs.bandits import ContextualBandit, GaussianBandit, GaussianBanditConfig, SoftmaxBandit
from envs.problem import Capability, ProblemConfig
from envs.spec import ConfigError
from envs.tabular import TabularProblem
from tests.conftest import random_theta
from tests.twins import gym_episode, objective_loop, policy_gradient_theorem_loop, value_loops


def test_exact_gradient_matches_finite_differences(exact_problem):
    problem = exact_problem
    # Deterministic: central differences have error O(step²·J''') + O(ε·|J|/step); with step 1e-5 in
    # float64 both are below 1e-7 relative to the problem's scale.
    theta = random_theta(problem, seed=1)
    if problem.num_params > 300:  # taxi: check a seeded subset of coordinates
        coords = np.random.default_rng(0).choice(problem.num_params, size=40, replace=False)
    else:
        coords = np.arange(problem.num_params)
    exact = problem.exact_gradient(theta)
    scale = max(1.0, abs(float(problem.objective(theta))))
    for j in coords:
        e = torch.zeros_like(theta)
        e[j] = 1e-5
        fd = (problem.objective(theta + e) - problem.objective(theta - e)) / 2e-5
        assert abs(float(fd - exact[j])) <= 1e-7 * scale, f"coordinate {j}"


def test_tabular_values_match_loop_twin(tabular_problem):
    theta = random_theta(tabular_problem, seed=9)
    qs, values = value_loops(tabular_problem, theta)
    np.testing.assert_allclose(tabular_problem.action_values(theta).numpy(), np.array(qs), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tabular_problem.values(theta).numpy(), np.array(values), rtol=1e-9, atol=1e-9)


def test_tabular_exact_matches_loop_twins(tabular_problem):
    problem = tabular_problem
    theta = random_theta(problem, seed=2)
    # Deterministic float64 arithmetic in a different order: agreement to rounding error.
    assert float(TabularProblem.objective(problem, theta)) == pytest.approx(objective_loop(problem, theta), rel=1e-10, abs=1e-10)
    grad = torch.func.grad(lambda th: TabularProblem.objective(problem, th))(theta).numpy()
    np.testing.assert_allclose(grad, policy_gradient_theorem_loop(problem, theta), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name,options", [("softmax-bandit", {"probs": "0.9,0.4,0.1,0.7"}), ("contextual-bandit", {})])
def test_bandit_closed_forms_match_generic_recursion(name, options):
    problem = make_problem(name, options)
    theta = random_theta(problem, seed=3, scale=1.0)
    assert isinstance(problem, (SoftmaxBandit, ContextualBandit))
    generic = torch.func.grad(lambda th: TabularProblem.objective(problem, th))(theta)
    torch.testing.assert_close(problem.exact_gradient(theta), generic, rtol=1e-12, atol=1e-14)
    assert float(problem.objective(theta)) == pytest.approx(float(TabularProblem.objective(problem, theta)), rel=1e-12)


def test_gaussian_bandit_closed_form_by_hand():
    problem = GaussianBandit(GaussianBanditConfig(target=1.0))
    theta = torch.tensor([0.5, math.log(2.0)], dtype=torch.float64)
    # J = −((0.5 − 1)² + 2²) = −4.25; ∇J = [−2(0.5 − 1), −2·4] = [1, −8]
    assert float(problem.objective(theta)) == pytest.approx(-4.25)
    torch.testing.assert_close(problem.exact_gradient(theta), torch.tensor([1.0, -8.0], dtype=torch.float64))


@pytest.mark.parametrize("name", PROBLEMS.names())
def test_registry_entries_are_frozen_configs(name):
    """Every entry is a registered config class: its fields are its options (parsed, with the defaults) and
    `build` makes the problem, which keeps the config as its options; configs pickle (they travel in cells)."""
    import dataclasses
    import pickle

    cls = PROBLEMS.get(name)
    assert issubclass(cls, ProblemConfig) and cls.name == name and cls.doc and cls.owner() == f"env {name}"
    assert list(cls.options()) == [field.name for field in dataclasses.fields(cls)]
    config = cls.parse({})
    assert config == cls() and config.as_dict() == cls.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, next(iter(cls.options())), None)
    assert pickle.loads(pickle.dumps(config)) == config
    problem = make_problem(name)
    assert problem.config == config and problem.options == cls.defaults() and problem.name == name


def run_capability(problem, capability: Capability) -> object:
    """Call what `capability` declares at the default θ (the problem's own method for it)."""
    theta = problem.default_theta()
    calls = {
        Capability.EXACT_GRADIENT: lambda: (problem.objective(theta), problem.exact_gradient(theta)),
        Capability.ORACLE_VALUES: lambda: problem.oracle_values(theta),
        Capability.ENTROPY_OBJECTIVE: lambda: problem.entropy_objective(theta),
        Capability.FISHER: lambda: problem.fisher(theta),
        Capability.ACTION_VALUES: lambda: problem.action_values(theta),
        Capability.EXPLORATORY_TWIN: lambda: problem.exploratory_twin(theta, 0.5),
    }
    return calls[capability]()


METHOD_CAPABILITIES = [Capability.EXACT_GRADIENT, Capability.ORACLE_VALUES, Capability.ENTROPY_OBJECTIVE,
                       Capability.FISHER, Capability.ACTION_VALUES, Capability.EXPLORATORY_TWIN]


@pytest.mark.parametrize("capability", METHOD_CAPABILITIES, ids=[c.name for c in METHOD_CAPABILITIES])
def test_capabilities_are_what_each_problem_implements(problem, capability):
    """A declared capability's method works; an undeclared one is a one-line ConfigError, not an AttributeError
    or NotImplementedError. The policy kind and the value model agree with the declaration."""
    if problem.supports(capability):
        run_capability(problem, capability)
    else:
        with pytest.raises(ConfigError, match="^[^\n]*$"):
            run_capability(problem, capability)
    assert problem.supports(Capability.STOCHASTIC_POLICY) != problem.supports(Capability.DETERMINISTIC_POLICY)
    assert problem.supports(Capability.VALUE_BASIS) == (problem.value_basis is not None)
    if problem.supports(Capability.DETERMINISTIC_POLICY):
        assert hasattr(problem.policy, "action") and not hasattr(problem.policy, "log_prob")


def test_capability_sets():
    """The declared sets, problem by problem: what each implements and nothing more."""
    C = Capability
    exact = {C.EXACT_GRADIENT, C.STOCHASTIC_POLICY, C.ORACLE_VALUES, C.VALUE_BASIS, C.ENTROPY_OBJECTIVE, C.FISHER,
             C.OPTIMUM}
    for name in ("frozenlake", "garnet", "softmax-bandit", "contextual-bandit"):
        assert make_problem(name).capabilities == exact | {C.ACTION_VALUES}, name
    assert make_problem("gaussian-bandit").capabilities == exact
    assert make_problem("lqr").capabilities == exact | {C.ACTION_VALUES}
    assert make_problem("lqr", {"policy": "deterministic"}).capabilities == {
        C.EXACT_GRADIENT, C.DETERMINISTIC_POLICY, C.ORACLE_VALUES, C.VALUE_BASIS, C.ACTION_VALUES, C.EXPLORATORY_TWIN,
        C.OPTIMUM}
    for name in ("cartpole", "pendulum"):
        assert make_problem(name, {"hidden": "4"}).capabilities == {C.STOCHASTIC_POLICY}, name
    with pytest.raises(ConfigError, match=r"^estimator natural: env cartpole has no exact Fisher matrix$"):
        make_problem("cartpole").require(C.FISHER, "estimator natural")
    with pytest.raises(ConfigError, match=r"^env cartpole has no exact objective J\(θ\) and gradient ∇J"):
        make_problem("cartpole").objective(make_problem("cartpole").default_theta())


def test_lqr_exploratory_twin():
    """The deterministic LQR's twin: the same system under the Gaussian policy, θ_b = [K, log σ_e]
    (σ_e = 0: log σ_e = −∞, zero action noise); the Gaussian LQR has none. Both policies carry dx and du."""
    options = {"state_dim": 3, "action_dim": 2, "noise": 0.3, "system_seed": 4, "policy": "deterministic"}
    problem = make_problem("lqr", options)
    theta = random_theta(problem, seed=10)
    twin, behaviour_theta = problem.exploratory_twin(theta, 0.5)
    assert twin.options == {**problem.options, "policy": "gaussian"} and twin.supports(Capability.STOCHASTIC_POLICY)
    assert torch.equal(twin.dynamics, problem.dynamics) and torch.equal(twin.control, problem.control)
    assert torch.equal(behaviour_theta, torch.cat([theta, torch.tensor([math.log(0.5)], dtype=torch.float64)]))
    assert torch.equal(twin.policy.gain(behaviour_theta), problem.policy.gain(theta))
    assert float(twin.policy.action_variance(behaviour_theta)) == pytest.approx(0.25)
    _, still = problem.exploratory_twin(theta, 0.0)
    assert still[-1] == -math.inf and float(twin.policy.action_variance(still)) == 0.0
    for lqr in (problem, twin):
        assert (lqr.policy.state_dim, lqr.policy.action_dim) == (3, 2)
    with pytest.raises(ConfigError, match="^env lqr has no Gaussian-policy twin"):
        twin.exploratory_twin(behaviour_theta, 0.5)


def test_batch_invariants(problem):
    theta = random_theta(problem, seed=4)
    batch = problem.sample(theta, 3, 5, torch.Generator().manual_seed(0))
    M, N, T = batch.rewards.shape
    assert (M, N) == (3, 5) and 1 <= T <= problem.horizon
    assert batch.obs.shape[:3] == (M, N, T) and batch.actions.shape[:3] == (M, N, T)
    assert torch.all(batch.mask[..., 1:] <= batch.mask[..., :-1]), "alive must be monotone"
    assert torch.all(batch.rewards[batch.mask == 0] == 0)
    assert not torch.any(batch.terminated & batch.truncated)
    ended_early = batch.mask[..., -1] == 0
    assert torch.all(batch.terminated[ended_early]), "an episode that stopped early terminated"
    if T < problem.horizon:
        assert not batch.truncated.any()
    torch.testing.assert_close(batch.discount, problem.gamma ** torch.arange(T, dtype=torch.float64))


def test_sampler_is_deterministic_given_the_generator(problem):
    theta = random_theta(problem, seed=5)
    a = problem.sample(theta, 2, 3, torch.Generator().manual_seed(7))
    b = problem.sample(theta, 2, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a.obs, b.obs) and torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)


# Family of sampler checks: each test fails with probability ≤ 1e-3 for a correct sampler.
ALPHA = 1e-3


def test_sampled_returns_match_exact_objective(exact_problem):
    problem = exact_problem
    theta = random_theta(problem, seed=6)
    batch = problem.sample(theta, 1, 20_000, torch.Generator().manual_seed(11))
    returns = (batch.rewards[0] @ batch.discount).numpy()  # [N]
    se = returns.std(ddof=1) / math.sqrt(returns.size)
    z = (returns.mean() - float(problem.objective(theta))) / se
    assert abs(z) < stats.norm.isf(ALPHA / 2), f"z = {z:.2f}"


def test_sampler_occupancy_matches_exact(tabular_problem):
    """Expected visits of each (s, a), E[Σ_t 1{s_t = s, a_t = a}], against Σ_t d_t(s, a).
    Bonferroni over the (s, a) cells: family-wise false-positive rate ≤ ALPHA (normal approximation
    of a mean of 20 000 i.i.d. visit counts)."""
    problem = tabular_problem
    theta = random_theta(problem, seed=7)
    count = 20_000
    batch = problem.sample(theta, 1, count, torch.Generator().manual_seed(12))
    S, A = problem.policy.num_states, problem.policy.num_actions
    cell = (batch.obs[0] * A + batch.actions[0])  # [N, T]
    visits = torch.zeros(count, S * A, dtype=torch.float64).scatter_add_(1, cell, batch.mask[0])  # [N, S·A]
    exact = problem.occupancy(theta).sum(0).reshape(-1).numpy()
    mean, sd = visits.mean(0).numpy(), visits.std(0).numpy()
    never = exact == 0
    assert np.all(mean[never] == 0), "a cell of zero exact occupancy was visited"
    live = ~never & (sd > 0)
    z = (mean[live] - exact[live]) / (sd[live] / math.sqrt(count))
    assert np.abs(z).max() < stats.norm.isf(ALPHA / (2 * live.sum())), f"max |z| = {np.abs(z).max():.2f}"


@pytest.mark.parametrize("name,options", [
    ("frozenlake", {}), ("frozenlake", {"slippery": False}),
    ("cliffwalking", {"horizon": 30}), ("taxi", {"horizon": 40}),
])
def test_gymnasium_rollouts_match_exact_objective(name, options):
    """End to end against gymnasium itself: episodes stepped with env.step under the softmax
    policy have mean discounted return J(θ). Two-sided z-test, false-positive rate ALPHA."""
    problem = make_problem(name, options)
    theta = random_theta(problem, seed=8, scale=1.0)
    probs = problem.policy.probs(theta).numpy()
    env = problem.make_gym_env()
    rng = np.random.default_rng(13)
    returns = []
    for _ in range(1500):
        _, _, rewards = gym_episode(problem, env, probs, rng)
        returns.append(sum(problem.gamma**t * r for t, r in enumerate(rewards)))
    returns = np.asarray(returns)
    z = (returns.mean() - float(problem.objective(theta))) / (returns.std(ddof=1) / math.sqrt(returns.size))
    assert abs(z) < stats.norm.isf(ALPHA / 2), f"z = {z:.2f}"


def test_bad_problem_input_is_a_config_error():
    with pytest.raises(ConfigError, match="valid: .*frozenlake"):
        make_problem("frozenlak")
    with pytest.raises(ConfigError, match="gamma"):
        make_problem("taxi", {"gamma": "1.5"})
    with pytest.raises(ConfigError, match="branching=5 must be ≤ states=3"):
        make_problem("garnet", {"states": 3, "branching": 5})
    problem = make_problem("frozenlake")
    with pytest.raises(ConfigError, match=r"expects 64: .*shape \[16, 4\]"):
        problem.check_theta(np.zeros(10))


# ---------------------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("theta,message", [
    (np.array(["0.5"] * 64), "dtype <U3; expected real floating or integer numbers"),  # numeric strings too
    (np.zeros(64, dtype=complex), "dtype complex128"),  # its imaginary part would be dropped
    (torch.zeros(64, dtype=torch.complex64), "dtype torch.complex64"),
    (np.zeros(64, dtype=bool), "dtype bool"),
    (torch.zeros(64, dtype=torch.bool), "dtype torch.bool"),
    (np.zeros(64, dtype=[("a", "f8")]), "dtype [('a', '<f8')]"),
    (np.array([None] * 64), "dtype object"),
    ([[0.0] * 4, [0.0] * 3], "not an array of numbers"),
    (np.zeros((4, 16)), "shape [4, 16]; frozenlake expects shape [16, 4] or flat [64]"),
    (np.zeros((2, 32)), "shape [2, 32]"),
    (np.zeros((64, 1)), "shape [64, 1]"),
    (np.r_[np.zeros(63), np.nan], "non-finite values (θ[15, 3] = nan)"),
])
def test_check_theta_refuses_what_it_would_have_to_guess(theta, message):
    """Only real numbers in the documented shape or flat: every other reading loses or invents values."""
    with pytest.raises(ConfigError, match="^[^\n]*$") as err:
        make_problem("frozenlake").check_theta(theta)
    assert message in str(err.value)


def test_check_theta_takes_the_documented_shape_flat_and_integers():
    problem = make_problem("frozenlake")
    values = np.arange(64).reshape(16, 4)
    for theta in (values, values.reshape(-1), values.astype(np.float32), torch.as_tensor(values), values.tolist()):
        flat = problem.check_theta(theta)
        assert flat.dtype == torch.float64 and torch.equal(flat, torch.arange(64, dtype=torch.float64))


def test_a_theta_whose_objective_overflows_is_named():
    """σ = e^800 overflows: J = −∞ and ∂J/∂s = −∞; the error names s, not a formatting TypeError later."""
    problem = make_problem("gaussian-bandit")
    theta = problem.check_theta([0.0, 800.0])
    with pytest.raises(ConfigError, match=r"theta for gaussian-bandit makes the objective non-finite .* at s = 800 "):
        problem.check_objective(theta, float(problem.objective(theta)), problem.exact_gradient(theta).numpy())
    problem.check_objective(theta, -1.0, np.zeros(2))  # finite: nothing to say


def test_a_theta_whose_policy_outputs_overflow_is_named():
    problem = make_problem("pendulum")
    theta = problem.default_theta()
    problem.check_policy_outputs(theta)
    theta[-1] = 800.0  # log σ: σ overflows
    with pytest.raises(ConfigError, match=rf"pendulum makes the policy's outputs non-finite .*θ\[{theta.numel() - 1}\] = 800"):
        problem.check_policy_outputs(theta)


# Each at or inside its declared option bounds, each once ending in an allocator traceback, a MemoryError or the
# kernel's kill; now refused from the options alone, before anything is allocated.
LIMIT = "over the memory limit 8 GB (50% of the 16 GB available); lower "
TOO_BIG = [
    ("garnet", {"states": 10_000, "actions": 1_000, "branching": 10_000},
     ["env garnet with states × actions × branching = 10000 × 1000 × 10000 = 1e+11 transitions", LIMIT]),
    ("contextual-bandit", {"contexts": 10_000, "arms": 1_000},
     ["contexts × arms = 10000 × 1000 = 10000000 logits, more than the 1000000 allowed; lower contexts or arms"]),
    ("lqr", {"state_dim": 100, "action_dim": 100, "horizon": 10_000},
     ["env lqr with state_dim 100, action_dim 100 and horizon 10000", LIMIT + "state_dim, action_dim or horizon"]),
    ("cartpole", {"hidden": "100000,100000"},
     ["env cartpole with hidden=100000,100000 (1e+10 parameters", LIMIT + "the hidden layer widths"]),
    ("taxi", {"horizon": 100_000}, ["env taxi with horizon 100000", LIMIT + "horizon"]),
]


@pytest.mark.parametrize("name,options,fragments", TOO_BIG, ids=[case[0] for case in TOO_BIG])
def test_problems_too_big_for_memory_are_refused_before_allocating(name, options, fragments, monkeypatch):
    import resource

    monkeypatch.setattr("envs.memory.available_bytes", lambda: 16e9)  # the same answer on any machine
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="^[^\n]*$") as err:
        make_problem(name, options)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing large was tried


@pytest.mark.parametrize("name", PROBLEMS.names())
@pytest.mark.parametrize("batch_size", [1, 32, 1024])
def test_a_chunk_is_as_many_batches_as_fit_in_its_byte_budget(name, batch_size):
    """Sampling holds one chunk of batches at a time: the most whole batches whose rough peak (sampled trajectories
    and per-trajectory gradients) fits in CHUNK_BYTES, at least one, never more than asked for."""
    from envs.problem import CHUNK_BYTES

    problem = make_problem(name)
    for reps in (1, 7, 10**6):
        chunk = problem.chunk_units(batch_size, reps)
        assert 1 <= chunk <= reps
        assert chunk == 1 or problem.chunk_bytes(chunk * batch_size) <= CHUNK_BYTES
        assert chunk == reps or problem.chunk_bytes((chunk + 1) * batch_size) > CHUNK_BYTES


def test_a_chunk_of_wide_observations_is_bounded_in_bytes_not_steps():
    """Humanoid-size records (376 observation values and 17 actions per step, H = 1000) make one trajectory ≈ 6 MB:
    a chunk of N = 32 is then 2 batches (≈ 0.4 GB), where a bound of 2²² steps would have held 131 (≈ 27 GB)."""
    import copy

    from envs.problem import CHUNK_BYTES

    problem = copy.copy(make_problem("cartpole"))
    problem.step_values, problem.horizon = 376 + 17 + 2, 1000
    chunk = problem.chunk_units(32, 500)
    assert chunk == int(CHUNK_BYTES // problem.chunk_bytes(32)) == 2
    by_steps = 2**22 // (32 * problem.horizon)
    assert by_steps == 131 and problem.chunk_bytes(by_steps * 32) > 25e9


def test_the_size_check_is_against_the_memory_available(monkeypatch):
    """The same options are built or refused by the memory there is, estimated from the options."""
    from envs.tabular import table_bytes

    options = {"states": 50, "actions": 4, "branching": 5, "horizon": 10}
    need = table_bytes(50, 4, 5, 10)
    monkeypatch.setattr("envs.memory.available_bytes", lambda: 2.1 * need)
    assert make_problem("garnet", options).memory_bytes == need
    monkeypatch.setattr("envs.memory.available_bytes", lambda: 1.9 * need)
    with pytest.raises(ConfigError, match="lower states, actions, branching or horizon"):
        make_problem("garnet", options)


def test_contextual_bandit_tables_are_those_of_its_outcome_list():
    """The arrays built directly equal gymnasium-style P[c][k] = [(p, c, 1, True), (1 − p, c, 0, True)]."""
    from envs.tabular import TabularMDP

    problem = make_problem("contextual-bandit", {"contexts": 5, "arms": 3, "reward_seed": 2})
    probs = problem.success.numpy()
    table = {c: {k: [(float(p), c, 1.0, True), (1.0 - float(p), c, 0.0, True)] for k, p in enumerate(row)}
             for c, row in enumerate(probs)}
    expected = TabularMDP.from_outcomes(np.full(5, 1.0 / 5), table)
    for field in ("initial", "prob", "next_state", "reward", "terminal"):
        got, want = getattr(problem.mdp, field), getattr(expected, field)
        assert got.dtype == want.dtype and torch.equal(got, want), field
