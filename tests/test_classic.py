"""Batched classic control (envs/classic.py) in lockstep with gymnasium's own environments.

Each batch lane is paired with one `gymnasium.make(id)` env (TimeLimit included) whose `unwrapped.state`
is set to the lane's initial state; both receive the same seeded actions. Lanes mix a heuristic that
reaches the goal (or balances the pole) with uniformly random actions, so termination, truncation,
clipping, the left wall and angle wrapping all occur; each test asserts that they did.

CartPole, MountainCar and Pendulum run free: gymnasium's env evolves its own state for whole episodes
(measured: bitwise equal to ours). For Acrobot and MountainCarContinuous the gymnasium env's state is set to
the lane's float64 state before every step, so each comparison is one step from the same state: torch's and
libm's sin/cos differ by ≤ 1 ulp on ~0.1% of arguments, and Acrobot's chaotic swing-up amplifies that to
~1e-2 over this test's 600 steps (~1e-13 over 500 random-action steps); MountainCarContinuous stores its
state as float32 after each step, so a free run of gymnasium is a float32 simulation. TimeLimit's counter
and CartPole's post-termination bookkeeping live only in gymnasium and always run free.

Tolerances: the float64 state and rewards within 1e-12 (relative, plus 1e-12 absolute for zeros):
1-ulp sin/cos differences give ~1e-16 per step. gymnasium's observations are float32 casts, compared
with our float64 observation rounded to float32 within one float32 ulp (2⁻²³ relative) for the rare
case where a 1e-16 difference straddles a rounding boundary. MountainCarContinuous's stored state is
float32, compared the same way. Flags are compared exactly.
"""

from __future__ import annotations

from collections import defaultdict

import gymnasium
import numpy as np
import pytest
import torch

from envs.classic import CLASSIC_ENVS, ClassicEnv, State, rollout, truncated
from envs.policies import MLPCategorical
from envs.spec import ConfigError

FLOAT32_ULP = 2.0**-23
STATE_TOL = {"rtol": 1e-12, "atol": 1e-12}
GYM_FLOAT32_STATE = {"MountainCarContinuous-v0"}
RESYNC_EVERY_STEP = {"Acrobot-v1", "MountainCarContinuous-v0"}
NEVER_TERMINATES = {"Pendulum-v1"}
# Steps per lane: long enough that every environment's TimeLimit is reached by some lane.
STEPS = {
    "CartPole-v1": 700,
    "Acrobot-v1": 600,
    "MountainCar-v0": 400,
    "MountainCarContinuous-v0": 1100,
    "Pendulum-v1": 400,
}
BATCH = 8


def heuristic_action(env: ClassicEnv, physics: torch.Tensor) -> torch.Tensor:
    """A policy that ends episodes at the goal (or, for CartPole, reaches the time limit)."""
    if env.id == "CartPole-v1":
        x, x_dot, theta, theta_dot = physics.unbind(-1)
        return (0.1 * x + 0.5 * x_dot + 10 * theta + 2 * theta_dot > 0).long()
    if env.id == "Acrobot-v1":  # pump energy: torque along the second joint's velocity
        return torch.where(physics[:, 3] > 0, 2, 0)
    if env.id == "MountainCar-v0":
        return torch.where(physics[:, 1] >= 0, 2, 0)
    if env.id == "MountainCarContinuous-v0":  # 1.2 > 1 exercises the force clip
        return torch.where(physics[:, 1] >= 0, 1.2, -1.2).to(physics.dtype)[:, None]
    return torch.zeros(physics.shape[0], 1, dtype=physics.dtype)  # Pendulum: random actions only


def mixed_action(env: ClassicEnv, physics: torch.Tensor, random_rate: torch.Tensor, generator: torch.Generator):
    """Lane b takes a uniformly random action with probability random_rate[b], else the heuristic."""
    batch = physics.shape[0]
    explore = torch.rand(batch, generator=generator, dtype=physics.dtype) < random_rate
    if env.num_actions:
        random = torch.randint(env.num_actions, (batch,), generator=generator)
        return torch.where(explore, random, heuristic_action(env, physics))
    # 1.5 × the bound, so the action clip is exercised.
    random = (2 * torch.rand(batch, 1, generator=generator, dtype=physics.dtype) - 1) * 1.5 * env.action_bound
    return torch.where(explore[:, None], random, heuristic_action(env, physics))


def gym_action(env: ClassicEnv, action: torch.Tensor):
    # Continuous actions go in as float64: gymnasium evaluates float32 actions in float32 arithmetic
    # (NumPy 2 promotion), which tests its dtype handling rather than its dynamics.
    return int(action) if env.num_actions else action.numpy().astype(np.float64)


def gym_state(env: gymnasium.Env) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)


def run_lockstep(env_id: str, batch_size: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """Step the batched env and batch_size gymnasium envs side by side → per-step records [T, B, ...]."""
    env = CLASSIC_ENVS[env_id]
    params = env.params
    generator = torch.Generator().manual_seed(seed)
    random_rate = torch.linspace(0, 1, batch_size, dtype=torch.float64)
    state, _ = env.reset(params, batch_size, generator)
    gyms = [gymnasium.make(env_id, disable_env_checker=True) for _ in range(batch_size)]
    for lane, gym_env in enumerate(gyms):
        gym_env.reset(seed=seed + lane)
    records: dict[str, list[torch.Tensor]] = defaultdict(list)
    resync = env_id in RESYNC_EVERY_STEP
    fresh_lanes = set(range(batch_size))
    for _ in range(steps):
        action = mixed_action(env, state.physics, random_rate, generator)
        next_state, obs, reward, terminated = env.step(params, state, action)
        cut = truncated(params, next_state)
        outcomes = []
        for lane, gym_env in enumerate(gyms):
            if resync or lane in fresh_lanes:
                gym_env.unwrapped.state = state.physics[lane].numpy().copy()
            outcomes.append((*gym_env.step(gym_action(env, action[lane]))[:4], gym_state(gym_env)))
        gym_obs, gym_reward, gym_terminated, gym_truncated, theirs = zip(*outcomes, strict=True)
        fresh_lanes = set()
        step_record = {
            "ours": next_state.physics, "theirs": np.stack(theirs), "obs": obs, "gym_obs": np.stack(gym_obs),
            "reward": reward, "gym_reward": gym_reward, "terminated": terminated, "gym_terminated": gym_terminated,
            "truncated": cut, "gym_truncated": gym_truncated,
        }  # fmt: skip
        for key, value in step_record.items():
            records[key].append(torch.as_tensor(np.asarray(value)))
        done = terminated | cut
        state = next_state
        if done.any():
            fresh, _ = env.reset(params, batch_size, generator)
            state = State(
                torch.where(done[:, None], fresh.physics, state.physics), torch.where(done, fresh.time, state.time)
            )
            fresh_lanes = set(done.nonzero()[:, 0].tolist())
            for lane in fresh_lanes:
                gyms[lane].reset()
    return {key: torch.stack(values) for key, values in records.items()}


@pytest.mark.parametrize("env_id", list(CLASSIC_ENVS))
def test_lockstep_with_gymnasium(env_id):
    run = run_lockstep(env_id, BATCH, STEPS[env_id], seed=0)
    ours, theirs = run["ours"], run["theirs"]
    if env_id in GYM_FLOAT32_STATE:
        torch.testing.assert_close(ours.to(torch.float32).double(), theirs, rtol=FLOAT32_ULP, atol=1e-30)
    else:
        torch.testing.assert_close(ours, theirs, **STATE_TOL)
    torch.testing.assert_close(run["obs"].to(torch.float32), run["gym_obs"], rtol=FLOAT32_ULP, atol=1e-30)
    torch.testing.assert_close(run["reward"], run["gym_reward"].double(), **STATE_TOL)
    assert torch.equal(run["terminated"], run["gym_terminated"])
    assert torch.equal(run["truncated"], run["gym_truncated"])
    # The paths the comparison is meant to cover were taken.
    assert run["truncated"].any()
    assert run["terminated"].any() != (env_id in NEVER_TERMINATES)
    if env_id.startswith("MountainCar"):  # the left wall, where velocity is zeroed
        assert (ours[..., 0] == CLASSIC_ENVS[env_id].params.min_position).any()


# Boxes of states wider than episodes visit: velocities beyond Acrobot's and Pendulum's clips (several wraps
# per step for Acrobot), Pendulum angles many turns out, CartPole straddling its thresholds (with 4096 states,
# ~8 land within 0.01 of the x threshold, so a threshold off by 0.01 fails).
WIDE_LANES = 4096
WIDE_STATES = {
    "CartPole-v1": ((-2.6, -5.0, -0.3, -5.0), (2.6, 5.0, 0.3, 5.0)),
    "Acrobot-v1": ((-np.pi, -np.pi, -15.0, -35.0), (np.pi, np.pi, 15.0, 35.0)),
    "MountainCar-v0": ((-1.2, -0.07), (0.6, 0.07)),
    "MountainCarContinuous-v0": ((-1.2, -0.07), (0.6, 0.07)),
    "Pendulum-v1": ((-20.0, -8.0), (20.0, 8.0)),
}


@pytest.mark.parametrize("env_id", list(CLASSIC_ENVS))
def test_one_step_from_wide_states(env_id):
    """One step from 4096 seeded states spread over WIDE_STATES, random actions, against gymnasium."""
    env = CLASSIC_ENVS[env_id]
    generator = torch.Generator().manual_seed(1)
    low, high = (torch.tensor(bound, dtype=torch.float64) for bound in WIDE_STATES[env_id])
    physics = low + (high - low) * torch.rand(WIDE_LANES, low.numel(), generator=generator, dtype=torch.float64)
    state = State(physics, torch.zeros(WIDE_LANES, dtype=torch.long))
    action = mixed_action(env, physics, torch.ones(WIDE_LANES, dtype=torch.float64), generator)
    next_state, _, reward, terminated = env.step(env.params, state, action)
    gym_env = gymnasium.make(env_id, disable_env_checker=True).unwrapped
    theirs, gym_reward, gym_terminated = [], [], []
    for lane in range(WIDE_LANES):
        gym_env.reset(seed=lane)  # clears CartPole's count of steps past termination, which changes its reward
        gym_env.state = physics[lane].numpy().copy()
        _, reward_lane, terminated_lane, _, _ = gym_env.step(gym_action(env, action[lane]))
        theirs.append(gym_state(gym_env))
        gym_reward.append(reward_lane)
        gym_terminated.append(terminated_lane)
    theirs_t = torch.as_tensor(np.stack(theirs))
    if env_id in GYM_FLOAT32_STATE:
        torch.testing.assert_close(next_state.physics.to(torch.float32).double(), theirs_t, rtol=FLOAT32_ULP, atol=0)
    else:
        torch.testing.assert_close(next_state.physics, theirs_t, **STATE_TOL)
    torch.testing.assert_close(reward, torch.tensor(gym_reward, dtype=torch.float64), **STATE_TOL)
    assert torch.equal(terminated, torch.tensor(gym_terminated))
    if env_id == "Acrobot-v1":  # both velocity clips hit; some raw angle passes 3π (Euler estimate): two wraps
        speeds = next_state.physics[:, 2:].abs()
        assert (speeds[:, 0] == env.params.max_vel_1).any() and (speeds[:, 1] == env.params.max_vel_2).any()
        raw_step = (physics[:, :2] + 0.2 * physics[:, 2:]).abs().amax()
        assert raw_step > 3 * np.pi


@pytest.mark.parametrize("env_id", list(CLASSIC_ENVS))
def test_reset_distribution(env_id):
    """Reset states lie in gymnasium's uniform ranges and fill them.

    With n = 20000 draws, P(min > low + 0.001·width) = 0.999ⁿ ≈ 2e-9 per coordinate and side, and the
    mean leaves its 5-standard-error band with probability 6e-7 per coordinate: false failures are
    negligible at this fixed seed, while a wrong range or a non-uniform draw fails."""
    env = CLASSIC_ENVS[env_id]
    params = env.params
    gym_reset_box = {
        "CartPole-v1": ((-0.05,) * 4, (0.05,) * 4),
        "Acrobot-v1": ((-0.1,) * 4, (0.1,) * 4),
        "MountainCar-v0": ((-0.6, 0.0), (-0.4, 0.0)),
        "MountainCarContinuous-v0": ((-0.6, 0.0), (-0.4, 0.0)),
        "Pendulum-v1": ((-np.pi, -1.0), (np.pi, 1.0)),
    }[env_id]
    low, high = (torch.tensor(bound, dtype=torch.float64) for bound in gym_reset_box)
    n = 20_000
    state, obs = env.reset(params, n, torch.Generator().manual_seed(2))
    physics = state.physics
    assert physics.dtype == torch.float64 and obs.shape == (n, env.observation_dim)
    assert torch.equal(state.time, torch.zeros(n, dtype=torch.long))
    assert ((physics >= low) & (physics <= high)).all()
    width = high - low
    assert (physics.amin(0) <= low + 0.001 * width).all() and (physics.amax(0) >= high - 0.001 * width).all()
    standard_error = width / np.sqrt(12 * n)
    assert ((physics.mean(0) - (low + high) / 2).abs() <= 5 * standard_error).all()
    # Reset observations are gymnasium's observation of the same state (its float32 cast, compared rounded).
    gym_env = gymnasium.make(env_id, disable_env_checker=True).unwrapped
    gym_env.reset(seed=0)
    observe = getattr(gym_env, {"Acrobot-v1": "_get_ob", "Pendulum-v1": "_get_obs"}.get(env_id, ""), None)
    for lane in range(8):
        gym_env.state = physics[lane].numpy().copy()
        gym_obs = observe() if observe else physics[lane].numpy().astype(np.float32)
        torch.testing.assert_close(obs[lane].to(torch.float32), torch.as_tensor(gym_obs), rtol=FLOAT32_ULP, atol=0)


@pytest.mark.parametrize("env_id", list(CLASSIC_ENVS))
def test_determinism_purity_and_float32(env_id):
    """Same generator seed → identical resets and rollouts; another seed → different states; `step` does not
    mutate its input; dtype=float32 runs in float32 and tracks the float64 run for 20 steps."""
    env = CLASSIC_ENVS[env_id]
    params = env.params

    def rollout(seed: int, dtype: torch.dtype) -> torch.Tensor:
        """20 random-action steps from a float64 reset, run in dtype → physics [21, 16, D]."""
        state, _ = env.reset(params, 16, torch.Generator().manual_seed(seed))
        state = State(state.physics.to(dtype), state.time)
        action_generator = torch.Generator().manual_seed(99)
        trajectory = [state.physics]
        for _ in range(20):
            action = mixed_action(env, state.physics.double(), torch.ones(16, dtype=torch.float64), action_generator)
            before = state.physics.clone()
            state, obs, reward, terminated = env.step(params, state, action)
            assert torch.equal(trajectory[-1], before)
            assert state.physics.dtype == obs.dtype == reward.dtype == dtype and terminated.dtype == torch.bool
            trajectory.append(state.physics)
        return torch.stack(trajectory)

    first = rollout(3, torch.float64)
    assert torch.equal(first, rollout(3, torch.float64))
    assert not torch.equal(first[0], rollout(4, torch.float64)[0])
    # float32 rounding (6e-8 relative) grown over 20 steps: measured ≤ 2e-6 absolute, 70× inside the tolerance.
    torch.testing.assert_close(rollout(3, torch.float32).double(), first, rtol=1e-4, atol=1e-4)
    state, obs = env.reset(params, 4, torch.Generator().manual_seed(3), dtype=torch.float32)
    assert state.physics.dtype == obs.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ rollout

DISCRETE_ENVS = [env_id for env_id, env in CLASSIC_ENVS.items() if env.num_actions]


def classic_policy(env_id: str, seed: int) -> tuple[MLPCategorical, torch.Tensor]:
    """A 2-layer tanh MLP with PPO's initialisation, its output gain raised to 1 so actions are not uniform."""
    env = CLASSIC_ENVS[env_id]
    policy = MLPCategorical(env.observation_dim, (16, 16), env.num_actions)
    theta = policy.init_theta(torch.Generator().manual_seed(seed))
    weight, _ = policy.net.layers(theta)[-1]
    weight.mul_(100.0)  # views of θ: scales the output layer's 0.01 gain to 1
    return policy, theta


@pytest.mark.parametrize("env_id", DISCRETE_ENVS)
def test_rollout_batch_invariants(env_id):
    """Shapes and dtypes; the mask is 1 then 0 (prefix-closed); obs, actions and rewards are 0 once it is 0;
    an episode ends either terminated (its last alive step is terminal) or truncated (alive at the last of
    T steps), never both; T stops early only when every lane has ended; γ^t discounts; same generator seed
    → identical batch, another seed → another one."""
    env = CLASSIC_ENVS[env_id]
    policy, theta = classic_policy(env_id, 0)
    reps, batch_size = 3, 64
    batch = rollout(env_id, policy, theta, reps, batch_size, torch.Generator().manual_seed(5), gamma=0.99)
    steps = batch.steps
    assert batch.obs.shape == (reps, batch_size, steps, env.observation_dim) and batch.obs.dtype == torch.float64
    assert batch.actions.shape == batch.rewards.shape == batch.mask.shape == (reps, batch_size, steps)
    assert batch.final_obs.shape == (reps, batch_size, env.observation_dim)
    assert batch.terminated.shape == batch.truncated.shape == (reps, batch_size)
    assert ((batch.actions >= 0) & (batch.actions < env.num_actions)).all()
    mask = batch.mask
    assert ((mask == 0) | (mask == 1)).all() and (mask[..., 0] == 1).all()
    assert (mask[..., 1:] <= mask[..., :-1]).all()
    dead = mask == 0
    assert (batch.rewards[dead] == 0).all() and (batch.actions[dead] == 0).all() and (batch.obs[dead] == 0).all()
    assert not (batch.terminated & batch.truncated).any()
    assert (batch.terminated | batch.truncated).all()  # every episode ended within the rollout
    lengths = mask.sum(-1)
    assert (lengths[batch.truncated] == steps).all()
    assert steps == env.params.max_episode_steps or batch.truncated.sum() == 0
    assert lengths.max() == steps  # no step after every lane was dead
    torch.testing.assert_close(batch.discount, 0.99 ** torch.arange(steps, dtype=torch.float64))
    assert batch.gamma == 0.99
    again = rollout(env_id, policy, theta, reps, batch_size, torch.Generator().manual_seed(5), gamma=0.99)
    for field in ("obs", "actions", "rewards", "mask", "terminated", "truncated", "final_obs"):
        assert torch.equal(getattr(batch, field), getattr(again, field)), field
    other = rollout(env_id, policy, theta, reps, batch_size, torch.Generator().manual_seed(6))
    assert not torch.equal(batch.obs[..., 0, :], other.obs[..., 0, :])


def test_rollout_action_frequencies():
    """Actions follow π_θ(·|s): Σ_t 1[a_t = a] − π_θ(a|s_t) over alive steps is a sum of mean-zero, bounded,
    martingale differences; its z-score against √Σ_t π(1 − π) exceeds 4.9 with probability ≈ 1e-6 per action."""
    env_id = "Acrobot-v1"  # three actions: exercises the general inverse CDF
    policy, theta = classic_policy(env_id, 1)
    batch = rollout(env_id, policy, theta, 1, 512, torch.Generator().manual_seed(7), horizon=100)
    probs = torch.softmax(policy.logits(theta, batch.obs), -1)  # [M, N, T, A]
    alive = batch.mask[..., None]
    taken = torch.nn.functional.one_hot(batch.actions, CLASSIC_ENVS[env_id].num_actions) * alive
    excess = (taken - probs * alive).sum((0, 1, 2))
    spread = (probs * (1 - probs) * alive).sum((0, 1, 2)).sqrt()
    assert (excess.abs() / spread < 4.9).all(), excess / spread
    assert (probs.amax(-1) > 0.6).any()  # the policy is not near uniform, so a wrong action order would fail


def test_rollout_against_gymnasium_cartpole():
    """Each lane replayed in gymnasium's CartPole-v1 (TimeLimit included): its `unwrapped.state` set to the
    lane's initial obs, then the rollout's actions one at a time. States after every alive step, rewards and
    the terminated/truncated flags must agree (within STATE_TOL; measured bitwise equal). The horizon 30 <
    500 makes some lanes truncated by the horizon: gymnasium's flags must then both be False."""
    env_id = "CartPole-v1"
    policy = MLPCategorical(4, (16, 16), 2)
    theta = policy.init_theta(torch.Generator().manual_seed(2))  # near uniform: episodes of ~20 steps
    batch = rollout(env_id, policy, theta, 2, 24, torch.Generator().manual_seed(8), horizon=30)
    assert batch.terminated.any() and batch.truncated.any()
    gym_env = gymnasium.make(env_id, disable_env_checker=True)
    obs, actions = batch.obs.flatten(0, 1), batch.actions.flatten(0, 1)
    rewards, mask = batch.rewards.flatten(0, 1), batch.mask.flatten(0, 1)
    final_obs = batch.final_obs.flatten(0, 1)
    terminated, truncated_lanes = batch.terminated.flatten(), batch.truncated.flatten()
    for lane in range(obs.shape[0]):
        gym_env.reset(seed=lane)
        gym_env.unwrapped.state = obs[lane, 0].numpy().copy()
        length = int(mask[lane].sum())
        for t in range(length):
            _, reward, gym_terminated, gym_truncated, _ = gym_env.step(int(actions[lane, t]))
            after = torch.as_tensor(gym_state(gym_env))
            expected_after = obs[lane, t + 1] if t + 1 < length else final_obs[lane]
            torch.testing.assert_close(after, expected_after, **STATE_TOL)
            assert reward == rewards[lane, t]
            last = t == length - 1
            assert gym_terminated == (last and bool(terminated[lane]))
            assert not gym_truncated
        assert bool(truncated_lanes[lane]) == (not terminated[lane])


def test_rollout_rejects_bad_input():
    policy, theta = classic_policy("CartPole-v1", 0)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="horizon"):
        rollout("CartPole-v1", policy, theta, 1, 4, generator, horizon=501)
    with pytest.raises(ConfigError, match="Acrobot-v1"):
        rollout("Acrobot-v1", policy, theta, 1, 4, generator)
    with pytest.raises(ConfigError, match="Pendulum-v1 needs a MLPGaussian with 3 inputs and 1 outputs"):
        rollout("Pendulum-v1", policy, theta, 1, 4, generator)


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_the_default_theta_does_not_depend_on_the_thread_count(name):
    """The orthogonal initialisation's QR differs in its last bits between thread counts; θ is drawn on one thread,
    so `pgvar measure` (the process's threads) and a sweep cell (one thread) start from the same θ."""
    from envs import make_problem

    before = torch.get_num_threads()
    thetas = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            thetas.append(make_problem(name, {"hidden": (64, 64), "theta_seed": 3}).default_theta())
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(theta, thetas[0]) for theta in thetas[1:])
