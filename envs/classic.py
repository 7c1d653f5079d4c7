"""Batched torch versions of gymnasium's classic-control environments, stepping [B] lanes at once.

    CartPole-v1, Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1  (gymnasium 1.x)

Each environment is a frozen params dataclass holding its physics constants (defined once, here) and
two pure functions in the style of gymnax:

    reset(params, B, generator, dtype) → (state, obs [B, O])
    step(params, state, action)        → (next_state, obs [B, O], reward [B], terminated [B])

`state.physics` [B, D] is gymnasium's own `env.unwrapped.state` vector and `state.time` [B] counts the steps
of the current episode, so `truncated(params, state)` is gymnasium's TimeLimit rule (elapsed ≥
max_episode_steps of the registered spec). `rollout` draws a `Batch` of whole episodes under an `MLPCategorical`
(discrete actions) or `MLPGaussian` (continuous) policy, every lane at once. Discrete actions are long [B]; continuous
ones are [B, 1] like gymnasium's Box(shape=(1,)). Arithmetic follows gymnasium's expressions term by term,
in the state's dtype (float64 by default), so a step agrees with gymnasium's float64 arithmetic to the last
ulp of sin/cos (torch's and libm's differ by ≤ 1 ulp). Observations are not cast to float32 as gymnasium
does. Reset draws from the same uniform ranges as gymnasium's reset, from an explicit generator. Not
reproduced, deliberately: Acrobot's reset rounding its draw to float32, MountainCarContinuous storing its
state as float32 after each step (here it stays in dtype), and CartPole's reward 0 for steps taken after
termination — stepping a lane past its end is undefined, as gymnasium warns: the caller resets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from envs.policies import MLPCategorical, MLPGaussian
from envs.problem import Batch, grouped
from envs.spec import ConfigError
from envs.threads import single_thread


@dataclass(frozen=True)
class State:
    """physics [B, D]: gymnasium's `env.unwrapped.state`; time [B] long: steps taken this episode."""

    physics: torch.Tensor
    time: torch.Tensor


def truncated(params: Any, state: State) -> torch.Tensor:
    """gymnasium's TimeLimit: the episode is cut once `max_episode_steps` steps were taken → bool [B]."""
    return state.time >= params.max_episode_steps


def _uniform(
    generator: torch.Generator, batch_size: int, low: tuple[float, ...], high: tuple[float, ...], dtype: torch.dtype | None
) -> torch.Tensor:
    """Independent U(low_d, high_d) per lane and coordinate → [B, D], in `dtype` (None: float64, the resets' default;
    None rather than torch.float64 in their signatures, so that `pgvar list` imports this module without torch)."""
    dtype = torch.float64 if dtype is None else dtype
    low_t = torch.tensor(low, dtype=dtype, device=generator.device)
    high_t = torch.tensor(high, dtype=dtype, device=generator.device)
    unit = torch.rand(batch_size, len(low), generator=generator, dtype=dtype, device=generator.device)
    return low_t + (high_t - low_t) * unit


def _start(physics: torch.Tensor) -> State:
    return State(physics, torch.zeros(physics.shape[0], dtype=torch.long, device=physics.device))


def _next(state: State, physics: torch.Tensor) -> State:
    return State(physics, state.time + 1)


# ----------------------------------------------------------------------------------------------- CartPole


@dataclass(frozen=True)
class CartPoleParams:
    """gymnasium CartPoleEnv (Barto, Sutton & Anderson 1983), explicit Euler, reward 1 per step."""

    gravity: float = 9.8
    masscart: float = 1.0
    masspole: float = 0.1
    length: float = 0.5  # half the pole's length
    force_mag: float = 10.0
    tau: float = 0.02
    theta_threshold_radians: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    reset_bound: float = 0.05
    max_episode_steps: int = 500

    @property
    def total_mass(self) -> float:
        return self.masspole + self.masscart

    @property
    def polemass_length(self) -> float:
        return self.masspole * self.length


def cartpole_reset(
    params: CartPoleParams, batch_size: int, generator: torch.Generator, dtype: torch.dtype | None = None
) -> tuple[State, torch.Tensor]:
    """[x, ẋ, θ, θ̇] ~ U(−0.05, 0.05)⁴; obs is the state."""
    bound = params.reset_bound
    state = _start(_uniform(generator, batch_size, (-bound,) * 4, (bound,) * 4, dtype))
    return state, state.physics


def cartpole_step(
    params: CartPoleParams, state: State, action: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """action long [B] in {0 (push left), 1 (push right)}; terminated when |x| or |θ| leaves its threshold."""
    p = params
    x, x_dot, theta, theta_dot = state.physics.unbind(-1)
    force = torch.where(action == 1, p.force_mag, -p.force_mag).to(x.dtype)  # ±10 is exact in any dtype
    costheta = torch.cos(theta)
    sintheta = torch.sin(theta)
    temp = (force + p.polemass_length * theta_dot.square() * sintheta) / p.total_mass
    thetaacc = (p.gravity * sintheta - costheta * temp) / (
        p.length * (4.0 / 3.0 - p.masspole * costheta.square() / p.total_mass)
    )
    xacc = temp - p.polemass_length * thetaacc * costheta / p.total_mass
    x = x + p.tau * x_dot
    x_dot = x_dot + p.tau * xacc
    theta = theta + p.tau * theta_dot
    theta_dot = theta_dot + p.tau * thetaacc
    physics = torch.stack((x, x_dot, theta, theta_dot), -1)
    terminated = (
        (x < -p.x_threshold)
        | (x > p.x_threshold)
        | (theta < -p.theta_threshold_radians)
        | (theta > p.theta_threshold_radians)
    )
    return _next(state, physics), physics, torch.ones_like(x), terminated


# ------------------------------------------------------------------------------------------------ Acrobot


@dataclass(frozen=True)
class AcrobotParams:
    """gymnasium AcrobotEnv ("book" dynamics, no torque noise), one RK4 step of dt, reward −1 until the
    tip rises above one link length over the pivot."""

    dt: float = 0.2
    link_length_1: float = 1.0
    link_mass_1: float = 1.0
    link_mass_2: float = 1.0
    link_com_pos_1: float = 0.5
    link_com_pos_2: float = 0.5
    link_moi: float = 1.0
    gravity: float = 9.8
    max_vel_1: float = 4 * math.pi
    max_vel_2: float = 9 * math.pi
    torques: tuple[float, ...] = (-1.0, 0.0, 1.0)
    reset_bound: float = 0.1
    max_episode_steps: int = 500


def _acrobot_observe(physics: torch.Tensor) -> torch.Tensor:
    theta1, theta2, dtheta1, dtheta2 = physics.unbind(-1)
    return torch.stack(
        (torch.cos(theta1), torch.sin(theta1), torch.cos(theta2), torch.sin(theta2), dtheta1, dtheta2), -1
    )


def acrobot_reset(
    params: AcrobotParams, batch_size: int, generator: torch.Generator, dtype: torch.dtype | None = None
) -> tuple[State, torch.Tensor]:
    """[θ₁, θ₂, θ̇₁, θ̇₂] ~ U(−0.1, 0.1)⁴; obs = [cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂]."""
    bound = params.reset_bound
    state = _start(_uniform(generator, batch_size, (-bound,) * 4, (bound,) * 4, dtype))
    return state, _acrobot_observe(state.physics)


def _acrobot_derivatives(params: AcrobotParams, s: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
    """gymnasium's `_dsdt`, with the same association of every product so rounding matches → [B, 4]."""
    m1, m2 = params.link_mass_1, params.link_mass_2
    l1, lc1, lc2 = params.link_length_1, params.link_com_pos_1, params.link_com_pos_2
    i1 = i2 = params.link_moi
    g = params.gravity
    theta1, theta2, dtheta1, dtheta2 = s.unbind(-1)
    d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + i1 + i2
    d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + i2
    phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
    phi1 = (
        -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
        - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
        + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
        + phi2
    )
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
        m2 * lc2**2 + i2 - d2**2 / d1
    )
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return torch.stack((dtheta1, dtheta2, ddtheta1, ddtheta2), -1)


def _wrap(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """gymnasium's `wrap`: add or subtract the period one at a time (same rounding as its while loops)."""
    period = high - low
    while bool((x > high).any()):
        x = torch.where(x > high, x - period, x)
    while bool((x < low).any()):
        x = torch.where(x < low, x + period, x)
    return x


def acrobot_step(
    params: AcrobotParams, state: State, action: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """action long [B] in {0, 1, 2} → torque −1, 0, +1 on the middle joint; one classical RK4 step, angles
    wrapped to [−π, π], velocities clipped; terminated when −cos θ₁ − cos(θ₁ + θ₂) > 1, reward −1 else 0."""
    s = state.physics
    torque = torch.tensor(params.torques, dtype=s.dtype, device=s.device)[action]
    dt = params.dt
    dt2 = dt / 2.0
    k1 = _acrobot_derivatives(params, s, torque)
    k2 = _acrobot_derivatives(params, s + dt2 * k1, torque)
    k3 = _acrobot_derivatives(params, s + dt2 * k2, torque)
    k4 = _acrobot_derivatives(params, s + dt * k3, torque)
    ns = s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    physics = torch.stack(
        (
            _wrap(ns[:, 0], -math.pi, math.pi),
            _wrap(ns[:, 1], -math.pi, math.pi),
            ns[:, 2].clamp(-params.max_vel_1, params.max_vel_1),
            ns[:, 3].clamp(-params.max_vel_2, params.max_vel_2),
        ),
        -1,
    )
    theta1, theta2 = physics[:, 0], physics[:, 1]
    terminated = -torch.cos(theta1) - torch.cos(theta2 + theta1) > 1.0
    reward = torch.where(terminated, 0.0, -1.0).to(s.dtype)
    return _next(state, physics), _acrobot_observe(physics), reward, terminated


# ------------------------------------------------------------------------------------ MountainCar (both)


@dataclass(frozen=True)
class MountainCarParams:
    """gymnasium MountainCarEnv (Moore 1990): discrete push, reward −1 per step until the flag."""

    min_position: float = -1.2
    max_position: float = 0.6
    max_speed: float = 0.07
    goal_position: float = 0.5
    goal_velocity: float = 0.0
    force: float = 0.001
    gravity: float = 0.0025
    reset_low: float = -0.6
    reset_high: float = -0.4
    max_episode_steps: int = 200


@dataclass(frozen=True)
class ContinuousMountainCarParams:
    """gymnasium Continuous_MountainCarEnv: force in [−1, 1], reward 100 at the flag − 0.1 a² per step."""

    min_action: float = -1.0
    max_action: float = 1.0
    min_position: float = -1.2
    max_position: float = 0.6
    max_speed: float = 0.07
    goal_position: float = 0.45
    goal_velocity: float = 0.0
    power: float = 0.0015
    gravity: float = 0.0025
    goal_reward: float = 100.0
    action_cost: float = 0.1
    reset_low: float = -0.6
    reset_high: float = -0.4
    max_episode_steps: int = 999


def mountain_car_reset(
    params: MountainCarParams | ContinuousMountainCarParams,
    batch_size: int,
    generator: torch.Generator,
    dtype: torch.dtype | None = None,
) -> tuple[State, torch.Tensor]:
    """[position, velocity] = [U(−0.6, −0.4), 0]; obs is the state. Shared by both variants."""
    physics = _uniform(generator, batch_size, (params.reset_low, 0.0), (params.reset_high, 0.0), dtype)
    state = _start(physics)
    return state, state.physics


def _mountain_car_move(
    params: MountainCarParams | ContinuousMountainCarParams, position: torch.Tensor, velocity: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip the updated velocity, move, clip the position, stop at the left wall → (physics, terminated)."""
    velocity = velocity.clamp(-params.max_speed, params.max_speed)
    position = (position + velocity).clamp(params.min_position, params.max_position)
    velocity = torch.where((position == params.min_position) & (velocity < 0), 0.0, velocity)
    terminated = (position >= params.goal_position) & (velocity >= params.goal_velocity)
    return torch.stack((position, velocity), -1), terminated


def mountain_car_step(
    params: MountainCarParams, state: State, action: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """action long [B] in {0 (left), 1 (none), 2 (right)}; terminated at the flag, reward −1."""
    position, velocity = state.physics.unbind(-1)
    # gymnasium's `velocity += a + b` adds the two terms first; the parentheses keep that rounding.
    push = (action - 1).to(position.dtype)
    velocity = velocity + (push * params.force + torch.cos(3 * position) * (-params.gravity))
    physics, terminated = _mountain_car_move(params, position, velocity)
    return _next(state, physics), physics, torch.full_like(position, -1.0), terminated


def continuous_mountain_car_step(
    params: ContinuousMountainCarParams, state: State, action: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """action [B, 1] real, clipped to [−1, 1] for the force; the cost 0.1 a² uses the unclipped action,
    as gymnasium does."""
    position, velocity = state.physics.unbind(-1)
    requested = action[:, 0].to(position.dtype)
    force = requested.clamp(params.min_action, params.max_action)
    velocity = velocity + (force * params.power - params.gravity * torch.cos(3 * position))
    physics, terminated = _mountain_car_move(params, position, velocity)
    reward = torch.where(terminated, params.goal_reward, 0.0).to(position.dtype) - requested**2 * params.action_cost
    return _next(state, physics), physics, reward, terminated


# ----------------------------------------------------------------------------------------------- Pendulum


@dataclass(frozen=True)
class PendulumParams:
    """gymnasium PendulumEnv: torque in [−2, 2], reward −(θ̃² + 0.1 θ̇² + 0.001 u²) with θ̃ = θ wrapped to
    [−π, π), never terminates."""

    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    g: float = 10.0
    m: float = 1.0
    length: float = 1.0  # gymnasium's `l`
    reset_angle: float = math.pi
    reset_speed: float = 1.0
    max_episode_steps: int = 200


def _pendulum_observe(physics: torch.Tensor) -> torch.Tensor:
    theta, theta_dot = physics.unbind(-1)
    return torch.stack((torch.cos(theta), torch.sin(theta), theta_dot), -1)


def pendulum_reset(
    params: PendulumParams, batch_size: int, generator: torch.Generator, dtype: torch.dtype | None = None
) -> tuple[State, torch.Tensor]:
    """[θ, θ̇] ~ U(−π, π) × U(−1, 1); obs = [cos θ, sin θ, θ̇]."""
    high = (params.reset_angle, params.reset_speed)
    state = _start(_uniform(generator, batch_size, (-high[0], -high[1]), high, dtype))
    return state, _pendulum_observe(state.physics)


def pendulum_step(
    params: PendulumParams, state: State, action: torch.Tensor
) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
    """action [B, 1] real, clipped to [−2, 2]; semi-implicit Euler with θ̇ clipped to [−8, 8]."""
    p = params
    th, thdot = state.physics.unbind(-1)
    u = action[:, 0].to(th.dtype).clamp(-p.max_torque, p.max_torque)
    angle = torch.remainder(th + math.pi, 2 * math.pi) - math.pi  # numpy's % has the same floor semantics
    costs = angle**2 + 0.1 * thdot**2 + 0.001 * (u**2)
    newthdot = thdot + (3 * p.g / (2 * p.length) * torch.sin(th) + 3.0 / (p.m * p.length**2) * u) * p.dt
    newthdot = newthdot.clamp(-p.max_speed, p.max_speed)
    newth = th + newthdot * p.dt
    physics = torch.stack((newth, newthdot), -1)
    return _next(state, physics), _pendulum_observe(physics), -costs, torch.zeros_like(th, dtype=torch.bool)


# ----------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ClassicEnv:
    """One environment: its params, pure reset/step, observation size, and its action space —
    `num_actions` > 0 for discrete (long [B] actions), else `action_bound` for Box(−b, b, (1,))."""

    id: str
    params: Any
    reset: Callable[..., tuple[State, torch.Tensor]]
    step: Callable[..., tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]]
    observation_dim: int
    num_actions: int = 0
    action_bound: float = 0.0


CLASSIC_ENVS: dict[str, ClassicEnv] = {
    env.id: env
    for env in (
        ClassicEnv("CartPole-v1", CartPoleParams(), cartpole_reset, cartpole_step, 4, num_actions=2),
        ClassicEnv("Acrobot-v1", AcrobotParams(), acrobot_reset, acrobot_step, 6, num_actions=3),
        ClassicEnv("MountainCar-v0", MountainCarParams(), mountain_car_reset, mountain_car_step, 2, num_actions=3),
        ClassicEnv(
            "MountainCarContinuous-v0",
            ContinuousMountainCarParams(),
            mountain_car_reset,
            continuous_mountain_car_step,
            2,
            action_bound=1.0,
        ),
        ClassicEnv("Pendulum-v1", PendulumParams(), pendulum_reset, pendulum_step, 3, action_bound=2.0),
    )
}


# ------------------------------------------------------------------------------------------------ rollout


# Bytes of kept activations a rollout may hold (`KeptActivations`); past it the backward pass recomputes them.
KEEP_BYTES = 2**30


@dataclass(frozen=True)
class KeptActivations:
    """The policy network's activations at a rollout's alive steps, kept so that the packed backward pass
    (estimators/mlp_backprop.py) does not recompute the forward pass. Rows in the order the steps were taken;
    position [S]: each row's flat index lane·T + t into the Batch's [M·N·T] steps (lane = m·N + n); inputs:
    [h_0 = obs, h_1, …, h_{K−1}] of each layer [S, width] in the rollout's dtype; theta [P] (a copy) and policy:
    what they were computed with; obs and mask: the Batch tensors they belong to (see `RolloutBatch.kept_for`)."""

    policy: MLPCategorical | MLPGaussian
    theta: torch.Tensor
    position: torch.Tensor
    inputs: list[torch.Tensor]
    obs: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class RolloutBatch(Batch):
    """A `Batch` from `rollout`, with the activations of its alive steps when they fit in KEEP_BYTES."""

    kept: KeptActivations | None = None

    def kept_for(self, policy: object, theta: torch.Tensor) -> KeptActivations | None:
        """The kept activations if they are those of `policy` at θ on this Batch's own obs and mask (a Batch made
        from this one by `dataclasses.replace` with other obs or mask gets None), else None."""
        kept = self.kept
        valid = (kept is not None and self.obs is kept.obs and self.mask is kept.mask and kept.policy == policy
                 and torch.equal(kept.theta, theta.detach().to(kept.theta.dtype)))
        return kept if valid else None


def rollout(
    env_id: str,
    policy: MLPCategorical | MLPGaussian,
    theta: torch.Tensor,
    reps: int,
    batch_size: int,
    generator: torch.Generator,
    horizon: int | None = None,
    gamma: float = 1.0,
    group_size: int = 1,
    dtype: torch.dtype | None = None,
) -> RolloutBatch:
    """reps × batch_size episodes under π_θ, all lanes stepped at once in float64, the policy network run in
    `dtype` (None: float64; float32: gymnasium's observation precision; the Batch's obs are in it), until every episode has
    ended or `horizon` steps were taken. Consecutive groups of `group_size` lanes start from one initial state
    (GRPO's groups; 1: i.i.d.).

    horizon defaults to the env's max_episode_steps (gymnasium's TimeLimit) and may not exceed it, so that
    `truncated` (alive when the horizon ran out) never hides a TimeLimit cut in mid-horizon. A discrete env
    takes an `MLPCategorical` (one uniform per live lane and step, `MLPCategorical.sample_logits`), a continuous
    one an `MLPGaussian` whose unclipped draw is recorded (the env clips it, as gymnasium's step does). A lane that
    has ended is no longer stepped (stepping past the end is undefined) and records obs, action and reward
    0, mask 0, as the tabular `sample` does. γ only sets `discount`; gymnasium's returns are undiscounted.

    Work and memory are proportional to the alive steps: only the live lanes are carried from step to step
    (at CartPole's near-uniform initial policy the mean episode is ~1/4 of the longest), each step records its
    live rows only, and the padded [M, N, T] tensors are scattered once at the end. The network's activations of
    the alive steps are kept (`KeptActivations`, up to KEEP_BYTES). One torch thread: per-step tensors of a few
    thousand rows gain nothing from intra-op threads, which on a shared machine cost up to 30× (measured).
    The slow twin, zero-filled full lanes and `policy.sample` every step, is tests/twins.py `classic_rollout_loop`.

    → RolloutBatch with obs [M, N, T, O], actions [M, N, T] long or [M, N, T, 1], final_obs [M, N, O], T ≤ horizon.
    """
    env = CLASSIC_ENVS[env_id]
    params = env.params
    check_policy(env, policy)
    horizon = params.max_episode_steps if horizon is None else horizon
    if not 0 < horizon <= params.max_episode_steps:
        raise ConfigError(f"rollout: horizon {horizon} must be in 1..{params.max_episode_steps} for {env_id}")
    count = reps * batch_size
    dtype = torch.float64 if dtype is None else dtype
    source_theta = theta.detach().clone()
    theta = source_theta.to(dtype)
    layers = policy.net.scaled_layers(theta)
    state, obs = env.reset(params, count // group_size, generator, torch.float64)
    state, obs = State(grouped(state.physics, group_size), grouped(state.time, group_size)), grouped(obs, group_size)
    lanes = torch.arange(count)  # [b] the live lanes
    terminated = torch.zeros(count, dtype=torch.bool)
    final_obs = torch.zeros_like(obs)
    # per step, of the live lanes: lane indices, the network's inputs of each layer, actions, rewards
    lane_steps: list[torch.Tensor] = []
    input_steps: list[list[torch.Tensor]] = [[] for _ in layers]
    action_steps: list[torch.Tensor] = []
    reward_steps: list[torch.Tensor] = []
    row_bytes = sum(w.shape[1] for w, _ in layers) * torch.finfo(dtype).bits // 8
    keep, kept_bytes = True, 0
    with single_thread():
        with torch.no_grad():
            for _ in range(horizon):
                activations = policy.net.activations(layers, obs)  # [h_0 … h_{K−1}, z], each [b, width]
                if isinstance(policy, MLPCategorical):
                    action = policy.sample_logits(activations[-1], generator)
                else:
                    action = policy.sample_mean(theta, activations[-1], generator)
                state, next_obs, reward, ends = env.step(params, state, action)
                lane_steps.append(lanes)
                action_steps.append(action)
                reward_steps.append(reward)
                kept_bytes += len(lanes) * row_bytes
                keep = keep and kept_bytes <= KEEP_BYTES
                for k, kept_inputs in enumerate(input_steps):
                    if k == 0 or keep:
                        kept_inputs.append(activations[k])
                    elif kept_inputs:
                        kept_inputs.clear()  # over KEEP_BYTES: the backward pass will recompute them
                if bool(ends.any()):
                    ended, running = ends.nonzero()[:, 0], (~ends).nonzero()[:, 0]  # positions among the live lanes
                    terminated[lanes[ended]] = True
                    final_obs[lanes[ended]] = next_obs[ended]
                    # index_select: several times x[index] on one thread (estimators/mlp_backprop.py)
                    lanes, next_obs = lanes.index_select(0, running), next_obs.index_select(0, running)
                    state = State(state.physics.index_select(0, running), state.time.index_select(0, running))
                obs = next_obs
                if not lanes.numel():
                    break
        final_obs[lanes] = obs
        steps = len(lane_steps)
        counts = torch.tensor([len(step) for step in lane_steps])
        position = torch.cat(lane_steps) * steps + torch.repeat_interleave(torch.arange(steps), counts)  # [S]
        inputs = [torch.cat(kept_inputs) for kept_inputs in input_steps] if keep else [torch.cat(input_steps[0])]

        def padded(rows: torch.Tensor) -> torch.Tensor:  # [S, ...] → [M, N, T, ...], zero at ended steps
            out = rows.new_zeros(count * steps, *rows.shape[1:])
            out.index_copy_(0, position, rows)
            return out.reshape(reps, batch_size, steps, *rows.shape[1:])

        batch_obs = padded(inputs[0])
        mask = padded(torch.ones(len(position), dtype=torch.float64))
    kept = KeptActivations(policy, source_theta, position, inputs, batch_obs, mask) if keep else None
    return RolloutBatch(obs=batch_obs, actions=padded(torch.cat(action_steps)), rewards=padded(torch.cat(reward_steps)),
                        mask=mask, terminated=terminated.reshape(reps, batch_size), gamma=gamma,
                        final_obs=final_obs.to(dtype).reshape(reps, batch_size, -1), kept=kept)


def check_policy(env: ClassicEnv, policy: MLPCategorical | MLPGaussian) -> None:
    """ConfigError unless the policy's input and action space are the environment's."""
    kind, outputs = (MLPCategorical, env.num_actions) if env.num_actions else (MLPGaussian, 1)
    if (type(policy), policy.obs_dim, policy.net.out_dim) != (kind, env.observation_dim, outputs):
        raise ConfigError(f"rollout: {env.id} needs a {kind.__name__} with {env.observation_dim} inputs and "
                          f"{outputs} outputs; got a {type(policy).__name__} {policy.obs_dim} → {policy.net.out_dim}")
