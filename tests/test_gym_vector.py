"""`--env gym:<id>` (envs/gym_vector.py): any gymnasium id through SyncVectorEnv into a Batch.

Structure: Batch invariants and determinism; every recorded episode replayed in a fresh `gymnasium.make(id)`
from its slot's reset seed reproduces the recorded observations, rewards, flags and final_obs exactly (so no
autoreset step is recorded and slots are not mixed up); groups share their initial state but not their
transitions; Discrete spaces with a nonzero `start`; one-line errors.

Distribution: gym:CartPole-v1 and gym:Pendulum-v1 against the batched `cartpole` and `pendulum` problems
at the same θ, and gym:FrozenLake-v1 (no batched MLP version in the suite) against the exact J(θ) and ∇J(θ)
of gymnasium's own P table under the same MLP policy. Each statistical check uses a fixed seed and fails a
correct implementation with probability ALPHA = 1e-3 (two-sided, tolerances from standard errors); each
test runs at most three such checks, so its false-positive rate is ≤ 3e-3. The power checks beside them
(the mean gradient differs from 0 at level ALPHA) pass by wide margins (measured p < 1e-6).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils import seeding
from scipy import stats

from bench.metrics import gradient_metrics
from envs import make_problem
from envs.gym_vector import GymProblem, episode_seeds
from envs.spec import ConfigError
from estimators.registry import resolve_estimator

ALPHA = 1e-3
Z_CRITICAL = float(stats.norm.ppf(1 - ALPHA / 2))  # 3.29


def sharpened_theta(problem, scale: float = 10.0) -> torch.Tensor:
    """The default θ with its output layer's gain raised from PPO's 0.01 to 0.1: actions depend on the
    observation, so an observation recorded at the wrong step changes the distribution."""
    theta = problem.default_theta()
    weight, _ = problem.mlp_policy.net.layers(theta)[-1]
    weight.mul_(scale)  # a view of θ
    return theta


def reinforce_rloo(problem, theta: torch.Tensor, batch) -> np.ndarray:
    """REINFORCE with reward-to-go and the leave-one-out baseline (unbiased for ∇J) → [M, P]."""
    estimator = resolve_estimator("reinforce", {"baseline": "rloo"})
    prepared = estimator.prepare(problem, theta, torch.Generator().manual_seed(0))
    return estimator.estimate(problem.policy, theta, batch, prepared).detach().numpy()


# --------------------------------------------------------------------------------------------- structure


def check_invariants(batch, horizon: int) -> None:
    """Mask 1 then 0 from step 0; obs, actions and rewards zero once it is 0; terminated xor truncated
    for every episode; a truncated one was alive for all `horizon` steps; T is the longest episode."""
    mask = batch.mask
    assert ((mask == 0) | (mask == 1)).all() and (mask[..., 0] == 1).all()
    assert (mask[..., 1:] <= mask[..., :-1]).all()
    dead = mask == 0
    assert (batch.rewards[dead] == 0).all() and (batch.actions[dead] == 0).all() and (batch.obs[dead] == 0).all()
    assert (batch.terminated ^ batch.truncated).all()
    lengths = mask.sum(-1)
    assert (lengths[batch.truncated] == horizon).all()
    assert lengths.max() == batch.steps <= horizon


def test_batch_invariants_and_determinism():
    problem = make_problem("gym:CartPole-v1", {"hidden": "16,16", "horizon": 30, "num_envs": 4})
    theta = sharpened_theta(problem)
    batch = problem.sample(theta, 3, 16, torch.Generator().manual_seed(5))
    assert batch.obs.shape == (3, 16, batch.steps, 4) and batch.obs.dtype == torch.float32  # the default dtype
    assert batch.actions.shape == batch.rewards.shape == batch.mask.shape == (3, 16, batch.steps)
    assert batch.final_obs.shape == (3, 16, 4)
    check_invariants(batch, 30)
    assert batch.terminated.any() and batch.truncated.any()  # both endings are exercised
    torch.testing.assert_close(batch.discount, 0.99 ** torch.arange(batch.steps, dtype=torch.float64))
    again = problem.sample(theta, 3, 16, torch.Generator().manual_seed(5))
    for field in ("obs", "actions", "rewards", "mask", "terminated", "truncated", "final_obs"):
        assert torch.equal(getattr(batch, field), getattr(again, field)), field
    other = problem.sample(theta, 3, 16, torch.Generator().manual_seed(6))
    assert not torch.equal(batch.obs[..., 0, :], other.obs[..., 0, :])


def expected_obs(space: spaces.Space, raw) -> torch.Tensor:
    if isinstance(space, spaces.Discrete):
        return torch.tensor(int(raw) - int(space.start))
    return torch.as_tensor(np.asarray(raw, dtype=np.float64).reshape(-1))


def replay(problem: GymProblem, batch, seed: int, group_size: int) -> None:
    """Every slot (m, n) replayed alone in a fresh gymnasium env: reset with its slot's seed (and, in groups,
    `np_random` reseeded with its own), then its recorded actions one at a time. Observations, rewards and
    flags must be equal exactly (same code, same seeds; float32 observations are exact in float64)."""
    reset_seeds, dynamics_seeds = episode_seeds(batch.reps * batch.batch_size, group_size,
                                                torch.Generator().manual_seed(seed))
    for slot in range(batch.reps * batch.batch_size):
        m, n = divmod(slot, batch.batch_size)
        env = gym.make(problem.env_id)
        obs_space, action_space = env.observation_space, env.action_space
        raw, _ = env.reset(seed=reset_seeds[slot])
        if dynamics_seeds is not None:
            env.unwrapped.np_random = seeding.np_random(dynamics_seeds[slot])[0]
        assert torch.equal(expected_obs(obs_space, raw), batch.obs[m, n, 0])
        length = int(batch.mask[m, n].sum())
        for t in range(length):
            action = batch.actions[m, n, t]
            gym_action = int(action) + int(action_space.start) if isinstance(action_space, spaces.Discrete) \
                else action.numpy()
            raw, reward, terminated, truncated, _ = env.step(gym_action)
            last = t == length - 1
            after = batch.final_obs[m, n] if last else batch.obs[m, n, t + 1]
            assert torch.equal(expected_obs(obs_space, raw), after), (slot, t)
            assert reward == batch.rewards[m, n, t]
            assert terminated == (last and bool(batch.terminated[m, n]))
            assert truncated == (last and length == problem.info.max_episode_steps)  # gymnasium's TimeLimit


REPLAY_CASES = [
    ("gym:CartPole-v1", {"horizon": 30}, 1),  # terminations and horizon cuts, 2 actions
    ("gym:Pendulum-v1", {"horizon": 12}, 1),  # Gaussian actions, never terminates
    ("gym:FrozenLake-v1", {}, 1),  # Discrete observations, stochastic transitions, TimeLimit 100
    ("gym:FrozenLake-v1", {}, 4),  # groups: one reset seed, then each slot's own np_random
    ("gym:CartPole-v1", {"horizon": 30}, 4),
]


@pytest.mark.parametrize(("name", "options", "group_size"), REPLAY_CASES)
def test_replay_in_fresh_gymnasium_env(name, options, group_size):
    """24 slots on 3 lanes. Where episodes end at different lengths, lanes took new slots while others were
    running (asserted), so a slot recorded on the wrong lane or with a stale observation would not replay."""
    problem = make_problem(name, {"hidden": "16,16", "num_envs": 3, **options})
    theta = sharpened_theta(problem)
    batch = problem.sample(theta, 2, 12, torch.Generator().manual_seed(11), group_size)
    check_invariants(batch, problem.horizon)
    replay(problem, batch, 11, group_size)
    lengths = set(batch.mask.sum(-1).flatten().tolist())
    assert len(lengths) > 1 or name == "gym:Pendulum-v1"


def test_groups_share_initial_state_not_transitions():
    """CartPole: a group's initial observations are equal, other groups' differ. FrozenLake (slippery, every
    episode starts in state 0): members of a group that take the same first action still land in different
    states — with a shared np_random they always would. One such pair is checked in each of ≥ 20 groups
    (independent); correct code lands every one of them in a single state with probability ≤ (5/9)^20 < 1e-5,
    5/9 being the largest Σ p² over the three slip outcomes of an action from state 0 (merged at the walls)."""
    cartpole = make_problem("gym:CartPole-v1", {"hidden": "16,16", "horizon": 5})
    first = cartpole.sample(cartpole.default_theta(), 1, 24, torch.Generator().manual_seed(3), 4).obs[0, :, 0]
    groups = first.reshape(6, 4, 4)
    assert (groups == groups[:, :1]).all()
    assert len(set(map(tuple, groups[:, 0].tolist()))) == 6
    lake = make_problem("gym:FrozenLake-v1", {"hidden": "16,16", "horizon": 2})
    batch = lake.sample(lake.default_theta(), 1, 400, torch.Generator().manual_seed(4), 4)
    actions, states = batch.actions[0].reshape(100, 4, -1), batch.obs[0].reshape(100, 4, -1)
    reached = torch.where(batch.mask[0, :, 1].bool(), batch.obs[0, :, 1], batch.final_obs[0]).reshape(100, 4)
    pairs = {g: (i, j) for g in range(100) for i in range(4) for j in range(i) if actions[g, i, 0] == actions[g, j, 0]}
    assert (states[:, :, 0] == 0).all() and len(pairs) >= 20
    assert any(reached[g, i] != reached[g, j] for g, (i, j) in pairs.items())


class Countdown(gym.Env):
    """Observations Discrete(3, start=5), actions Discrete(2, start=−1): the observation counts steps (5, 6, 7),
    the reward is the action taken, the episode terminates after 3 steps."""

    observation_space = spaces.Discrete(3, start=5)
    action_space = spaces.Discrete(2, start=-1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return 5, {}

    def step(self, action):
        self.steps += 1
        return 5 + min(self.steps, 2), float(action), self.steps == 3, False, {}


class SelfTruncating(CartPoleEnv):
    """CartPole that reports truncated after 5 steps by itself (not a TimeLimit wrapper)."""

    def reset(self, *, seed=None, options=None):
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, self.steps == 5, info


@pytest.fixture
def test_ids():
    """Ids registered for these tests only: Countdown (TimeLimit 10) and SelfTruncating (TimeLimit 500)."""
    ids = {"pgvar-test/Countdown-v0": (Countdown, 10), "pgvar-test/SelfTruncating-v0": (SelfTruncating, 500)}
    for env_id, (entry_point, limit) in ids.items():
        gym.register(env_id, entry_point=entry_point, max_episode_steps=limit)
    yield
    for env_id in ids:
        del gym.registry[env_id]


def test_discrete_spaces_with_offsets(test_ids):
    problem = make_problem("gym:pgvar-test/Countdown-v0", {"hidden": "4"})
    assert problem.horizon == 10
    batch = problem.sample(problem.default_theta(), 2, 5, torch.Generator().manual_seed(0))
    assert batch.steps == 3 and batch.terminated.all()
    assert torch.equal(batch.obs, torch.tensor([0, 1, 2]).expand(2, 5, 3))
    assert torch.equal(batch.final_obs, torch.full((2, 5), 2))
    assert ((batch.actions == 0) | (batch.actions == 1)).all() and batch.actions.unique().numel() == 2
    assert torch.equal(batch.rewards, batch.actions.double() - 1)


def test_bad_input(test_ids):
    def refused(pattern: str, build, *args) -> None:
        with pytest.raises(ConfigError, match=pattern) as caught:
            build(*args)
        assert "\n" not in str(caught.value)

    refused(r"^unknown env 'nope'; valid: frozenlake, .*, or gym:<id>", make_problem, "nope")
    refused(r"^env gym:CartPol-v1: Environment `CartPol` doesn't exist. Did you mean: `CartPole`\?$", make_problem,
            "gym:CartPol-v1")
    refused(r"^env gym:ALE/Pong-v5: Namespace ALE not found", make_problem, "gym:ALE/Pong-v5")
    refused("observation space Tuple is not supported", make_problem, "gym:Blackjack-v1", {"horizon": 10})
    refused("horizon=501", make_problem, "gym:CartPole-v1", {"horizon": 501})
    refused("gym:CliffWalking-v1 has no TimeLimit: set its horizon", make_problem, "gym:CliffWalking-v1")
    refused("unknown option 'lanes'", make_problem, "gym:CartPole-v1", {"lanes": 4})
    problem = make_problem("gym:pgvar-test/SelfTruncating-v0", {"horizon": 20})
    theta = problem.default_theta()
    refused("truncated an episode after 5 steps, before the horizon 20", problem.sample, theta, 1, 2,
            torch.Generator().manual_seed(0))
    refused("group_size=3 must divide", problem.sample, theta, 1, 2, torch.Generator().manual_seed(0), 3)
    # the capability's own words (Capability.EXACT_GRADIENT), as every refusal of a missing capability
    refused(r"^env gym:pgvar-test/SelfTruncating-v0 has no exact objective J\(θ\) and gradient ∇J \(else the "
            r"reference is sampled\)$", problem.exact_gradient, theta)
    refused(r"has no exact objective J\(θ\)", problem.objective, theta)



def test_config_class_per_id():
    """`gym:<id>` has one config class per id (the same object each time), whose horizon is bounded by the id's
    TimeLimit; its configs pickle by id and options (the class is made at run time) and build the same problem."""
    import pickle

    from envs.problem import Capability, problem_config_class

    cartpole = problem_config_class("gym:CartPole-v1")
    assert problem_config_class("gym:CartPole-v1") is cartpole and cartpole.name == "gym:CartPole-v1"
    assert list(cartpole.options()) == ["hidden", "activation", "horizon", "gamma", "theta_seed", "dtype", "num_envs"]
    assert cartpole.options()["horizon"].default == 500 and cartpole.defaults()["num_envs"] == 8
    assert problem_config_class("gym:Pendulum-v1").options()["horizon"].default == 200
    assert problem_config_class("gym:CliffWalking-v1").options()["horizon"].default == 0  # required
    config = cartpole.parse({"hidden": "8", "horizon": "30", "num_envs": 3})
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is cartpole and copy == config and copy.as_dict() == config.as_dict()
    problem = copy.build()
    assert problem.config == config and problem.options == make_problem("gym:CartPole-v1", config.as_dict()).options
    assert problem.capabilities == {Capability.STOCHASTIC_POLICY} and not problem.supports(Capability.EXACT_GRADIENT)


# ------------------------------------------------------------------------------------------ distribution

BATCHED_CASES = [
    # (gym id, batched problem, options of both, reps M, batch size N); float64 as the lockstep tests: the float32
    # default draws other uniforms (at these seeds the difference's tail kurtosis is 4.015, over the flag's 4; at
    # seeds 3–8 it is 2.4–3.8 in both dtypes)
    ("CartPole-v1", "cartpole", {"hidden": "16,16", "dtype": "float64"}, 200, 8),
    ("Pendulum-v1", "pendulum", {"hidden": "8", "horizon": 40, "dtype": "float64"}, 100, 8),
]


@pytest.mark.parametrize(("env_id", "batched_name", "options", "reps", "batch_size"), BATCHED_CASES)
def test_same_distribution_as_batched_problem(env_id, batched_name, options, reps, batch_size):
    """At one θ, independent batches from the gym path and the batched torch problem. Returns: Welch t-test
    on the means and a two-sample KS test (conservative with CartPole's integer returns). Gradients: the M
    differences of independent REINFORCE-RLOO estimates, ĝ_gym,m − ĝ_batched,m, are i.i.d. with mean
    E ĝ_gym − E ĝ_batched (0 if both paths sample the same episodes); `bias_pvalue` of `gradient_metrics`
    against 0 tests it (the Chen–Qin L² test, calibrated in tests/test_metrics.py), valid when the differences
    are not heavy-tailed (asserted). Each at level ALPHA. The same test of each path's estimates against 0
    rejects (measured p < 1e-6): the mean gradient is resolved, so a path sampling episodes from another
    distribution (length-biased, observations off by a step) would be seen. A recorded autoreset step would
    not: its action is ignored by the env, so its score term has mean zero; the replay test rules it out."""
    gym_problem = make_problem(f"gym:{env_id}", options)
    batched = make_problem(batched_name, options)
    theta = sharpened_theta(gym_problem)
    gym_batch = gym_problem.sample(theta, reps, batch_size, torch.Generator().manual_seed(1))
    batched_batch = batched.sample(theta, reps, batch_size, torch.Generator().manual_seed(2))
    gym_returns = gym_batch.rewards.sum(-1).flatten().numpy()
    batched_returns = batched_batch.rewards.sum(-1).flatten().numpy()
    assert stats.ttest_ind(gym_returns, batched_returns, equal_var=False).pvalue > ALPHA
    assert stats.ks_2samp(gym_returns, batched_returns).pvalue > ALPHA
    gym_estimates = reinforce_rloo(gym_problem, theta, gym_batch)
    batched_estimates = reinforce_rloo(batched, theta, batched_batch)
    difference = gradient_metrics(gym_estimates - batched_estimates, np.zeros(theta.numel()))
    assert not difference.heavy_tailed and difference.bias_pvalue > ALPHA
    for estimates in (gym_estimates, batched_estimates):
        assert gradient_metrics(estimates, np.zeros(theta.numel())).bias_pvalue < ALPHA


def test_frozenlake_against_exact_tables():
    """gym:FrozenLake-v1 (slippery 4×4, one-hot observations) under an MLP policy π_θ, against J(θ) and ∇J(θ)
    computed exactly by the finite-horizon recursion over gymnasium's own P table (`envs.tabular`) with the
    tabular logits θ_tab[s] = f_θ(e_s), differentiated through f_θ. θ: 8 normalised exact-gradient ascent
    steps from the default θ (J ≈ 0.23 from 0.012), so goals are frequent and the checks have power.
    Mean discounted return: |z| < Z_CRITICAL with z = (mean − J) / (sd / √(MN)). Mean REINFORCE-RLOO estimate
    against the exact ∇J: `bias_pvalue` > ALPHA (and < ALPHA against 0: the gradient is resolved)."""
    problem = make_problem("gym:FrozenLake-v1", {"hidden": "16,16"})
    tables = make_problem("frozenlake", {"gamma": problem.gamma, "horizon": problem.horizon})
    states = torch.eye(16, dtype=torch.float64)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return tables.objective(problem.mlp_policy.logits(theta, states).reshape(-1))

    theta = problem.default_theta()
    for _ in range(8):
        step = torch.func.grad(objective)(theta)
        theta = theta + 0.5 * step / step.norm()
    exact_value, exact_gradient = objective(theta), torch.func.grad(objective)(theta)
    reps, batch_size = 100, 8
    batch = problem.sample(theta, reps, batch_size, torch.Generator().manual_seed(7))
    returns = (batch.rewards * batch.discount).sum(-1).flatten()
    z = (returns.mean() - exact_value) / (returns.std() / np.sqrt(returns.numel()))
    assert abs(float(z)) < Z_CRITICAL, (float(returns.mean()), float(exact_value))
    estimates = reinforce_rloo(problem, theta, batch)
    metrics = gradient_metrics(estimates, exact_gradient.numpy())
    assert not metrics.heavy_tailed and metrics.bias_pvalue > ALPHA
    assert gradient_metrics(estimates, np.zeros(theta.numel())).bias_pvalue < ALPHA


# ------------------------------------------------------------------------------------------------ MuJoCo


def test_mujoco_halfcheetah(tmp_path, monkeypatch):
    """With the optional `mujoco` extra: a few HalfCheetah-v5 episodes (6-D Gaussian actions, never
    terminates), invariants and an exact replay. MuJoCo logs warnings to MUJOCO_LOG.TXT in the working
    directory, so the test runs in a temporary one."""
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)
    problem = make_problem("gym:HalfCheetah-v5", {"hidden": "16,16", "horizon": 20, "num_envs": 2})
    batch = problem.sample(problem.default_theta(), 2, 3, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (2, 3, 20, 17) and batch.actions.shape == (2, 3, 20, 6)
    check_invariants(batch, 20)
    assert batch.truncated.all()
    replay(problem, batch, 0, 1)
