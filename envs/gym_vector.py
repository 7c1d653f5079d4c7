"""Any registered gymnasium environment as a problem, `--env gym:<id>`: episodes stepped through
`gymnasium.vector.SyncVectorEnv` under an MLP policy, into the same `Batch` as the batched problems.

The policy follows from the spaces. Observations: a Box is flattened into the policy network's dtype
(option `dtype`, float32 by default: gymnasium's classic-control observations are float32); a Discrete(n)
observation is the state index s − start, kept as a long in the Batch and fed to the MLP one-hot (`OneHotObservation`). Actions: Discrete(n) → `MLPCategorical`
(the env receives a + start); a 1-D Box(k) → `MLPGaussian` with k outputs, whose unclipped draw is
recorded and passed to the env as it is: gymnasium's envs clip or not as they do (Pendulum and
MountainCarContinuous clip to their bounds; MuJoCo clamps controls to the model's ctrlrange). Other spaces
are refused. J(θ) = E[Σ_{t<H} γ^t r_{t+1}] over episodes cut at H ≤ the id's TimeLimit (H is required for
an id without one); no exact gradient: measurements use a sampled reference.

Sampling (`GymProblem.sample`). The M·N episodes are numbered slots k = m·N + n. Each slot has its own
reset seed, drawn from the torch generator before anything else (`episode_seeds`). The L = num_envs
lanes start with slots 0…L−1; whenever lanes finish episodes, they take the next unstarted slots in lane
order and are reset with those slots' seeds, until every slot has run once. Every started episode is
kept, whole: no episode is dropped or cut for being unfinished, so the batch is not length-biased (as
"the first K episodes to finish" would be, over-representing short ones). Which lane runs which slot,
and when, depends on earlier episodes' lengths, but an episode's randomness does not: its reset seed is
its slot's, and its actions (one `policy.sample` call per vector step, all lanes at once) use draws made
after it started, independent of everything before; so the slots hold i.i.d. episodes. Same generator
and same num_envs ⇒ the same Batch.

Autoreset. SyncVectorEnv's default NEXT_STEP mode would turn a finished lane's next `step()` into a reset
step (the action ignored, reward 0, a fresh observation). Finished lanes are instead reset at once with
`reset(seed=…, options={"reset_mask": …})`, which clears the pending autoreset, so a recorded lane's every
step is a real transition; the reset step happens only on idle lanes (no slots left), whose outputs are
ignored. An episode ends terminated when the env says so (terminated and truncated together count as
terminated), truncated when it reaches H steps (the TimeLimit, when H equals it) with `final_obs` the
observation after its last step, for bootstrapping. A truncation by the env itself before H is not an
episode of this objective: it is refused.

Groups (`group_size` G > 1, GRPO's rollouts sharing an initial state): a group's G slots reset with one
seed, so they start from the same state (whatever the env draws in `reset`), then each slot's env RNG
`np_random` is reseeded with a seed of its own, so their transitions are independent given that state.
This relies on gymnasium's convention that an env draws all its randomness from `np_random` (true of the
toy-text, classic-control, Box2D and MuJoCo envs; not of ALE's own emulator RNG).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding

from envs.control import MLPProblem, MLPProblemConfig, time_limit_horizon, with_horizon
from envs.policies import MLPCategorical, MLPGaussian
from envs.problem import FAMILIES, Batch, ProblemFamily, stack_steps
from envs.spec import ConfigError, Int, Option, option
from envs.threads import single_thread

GYM_PREFIX = "gym:"  # `gym:<id>` names any registered gymnasium environment
SEED_BOUND = 2**62  # reset seeds are drawn uniformly from [0, SEED_BOUND)


def make_gym_env(env_id: str) -> gym.Env:
    """`gymnasium.make(env_id)` (its registered TimeLimit included), or a one-line ConfigError for an id
    gymnasium does not know or cannot build here (a missing optional dependency such as MuJoCo)."""
    try:
        return gym.make(env_id)
    except (gym.error.Error, ImportError) as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"env {GYM_PREFIX}{env_id}: {first_line}") from None


@dataclass(frozen=True)
class OneHotObservation:
    """`policy` on the one-hot encoding e_s ∈ R^n of a state s ∈ {0…n−1} (obs long [...] → e_s [..., n]).
    Batches keep the long state, not n floats per step (500 for Taxi)."""

    policy: MLPCategorical | MLPGaussian

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """A comparison, not `one_hot`, which reads values and so fails under `torch.func.vmap`."""
        return (obs[..., None] == torch.arange(self.policy.obs_dim)).to(torch.float64)

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.policy.log_prob(theta, self.encode(obs), actions)

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.entropy(theta, self.encode(obs))

    def sample(self, theta: torch.Tensor, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.policy.sample(theta, self.encode(obs), generator)


@dataclass(frozen=True)
class GymEnvInfo:
    """What a problem needs to know of a gymnasium id before stepping it."""

    env_id: str
    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None  # the registered TimeLimit


def probe(env_id: str) -> GymEnvInfo:
    """Build the env once for its spaces and TimeLimit; ConfigError for unsupported spaces."""
    env = make_gym_env(env_id)
    try:
        info = GymEnvInfo(env_id, env.observation_space, env.action_space,
                          env.spec.max_episode_steps if env.spec is not None else None)
    finally:
        env.close()
    obs_space, action_space = info.observation_space, info.action_space
    if not isinstance(obs_space, (spaces.Box, spaces.Discrete)):
        raise ConfigError(f"env {GYM_PREFIX}{env_id}: observation space {type(obs_space).__name__} is not supported "
                          "(Box or Discrete)")
    if not (isinstance(action_space, spaces.Discrete)
            or (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1)):
        shape = getattr(action_space, "shape", None)
        raise ConfigError(f"env {GYM_PREFIX}{env_id}: action space {type(action_space).__name__} of shape {shape} is "
                          "not supported (Discrete or a 1-D Box)")
    return info


def episode_seeds(count: int, group_size: int, generator: torch.Generator) -> tuple[list[int], list[int] | None]:
    """The first draws of `GymProblem.sample`: the reset seed of each of `count` slots, a group's G slots
    sharing one ([count/G] draws, each repeated G times), then, when G > 1, a seed per slot for its
    env's `np_random` after the reset ([count] draws; None when G = 1, where the reset seed drives both)."""
    if count % group_size:
        raise ConfigError(f"group_size={group_size} must divide the number of episodes {count}")
    reset = torch.randint(SEED_BOUND, (count // group_size,), generator=generator).repeat_interleave(group_size)
    if group_size == 1:
        return reset.tolist(), None
    return reset.tolist(), torch.randint(SEED_BOUND, (count,), generator=generator).tolist()


class GymProblem(MLPProblem):
    """A gymnasium id stepped through `SyncVectorEnv(num_envs)`, an MLP policy chosen from its spaces, and
    J(θ) = E[Σ_{t<H} γ^t r_{t+1}] over episodes cut at H (see the module docstring)."""

    def __init__(self, config: GymConfig):
        info = config.info
        self.info, self.env_id, self.num_envs = info, info.env_id, config.num_envs
        obs_space, action_space = info.observation_space, info.action_space
        one_hot = isinstance(obs_space, spaces.Discrete)
        obs_dim = int(obs_space.n) if one_hot else math.prod(obs_space.shape)
        discrete_actions = int(action_space.n) if isinstance(action_space, spaces.Discrete) else 0
        super().__init__(config, obs_dim, f"one-hot of {obs_dim} states" if one_hot else str(obs_dim),
                         discrete_actions, 0 if discrete_actions else action_space.shape[0])
        self.policy = OneHotObservation(self.mlp_policy) if one_hot else self.mlp_policy

    def make_env(self) -> gym.Env:
        return make_gym_env(self.env_id)

    def observe(self, raw: np.ndarray) -> np.ndarray:
        """SyncVectorEnv observations [L, ...] → the Batch's: int64 states [L] (Discrete) or [L, O] in the policy
        network's dtype (`envs.control.DTYPE`)."""
        space = self.info.observation_space
        if isinstance(space, spaces.Discrete):
            return np.asarray(raw, dtype=np.int64) - int(space.start)
        return np.asarray(raw, dtype=np.float32 if self.dtype == torch.float32 else np.float64).reshape(raw.shape[0], -1)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """Policy actions [L] int64 or [L, k] real → what SyncVectorEnv.step takes."""
        space = self.info.action_space
        return action + int(space.start) if isinstance(space, spaces.Discrete) else action

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        """reps × batch_size whole episodes under π_θ, scheduled over the lanes as the module docstring says.
        Bookkeeping is in numpy (arrays of L entries, where torch's per-call cost would dominate), and torch runs
        on one thread meanwhile.

        → Batch with obs [M, N, T, O] in `dtype` or [M, N, T] long (Discrete observations), actions [M, N, T] long
        or [M, N, T, k], final_obs [M, N, ...]; T = the longest episode's length ≤ horizon."""
        count = reps * batch_size
        reset_seeds, dynamics_seeds = episode_seeds(count, group_size, generator)
        theta = theta.detach().to(self.dtype)
        lanes = min(self.num_envs, count)
        envs = gym.vector.SyncVectorEnv([self.make_env] * lanes, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        slot = np.arange(lanes)  # [L] the slot each lane is running, −1 once it has none left
        elapsed = np.zeros(lanes, dtype=np.int64)  # [L] steps taken in the lane's episode
        next_slot = lanes
        length = np.zeros(count, dtype=np.int64)
        terminated = np.zeros(count, dtype=bool)
        records = []  # per vector step, of the lanes running a slot: (slot, step, obs, action, reward)
        # policy calls on L rows: intra-op threads only add wake-ups (measured 10× slower)
        with single_thread(), contextlib.closing(envs):
            obs = self._reset(envs, np.ones(lanes, dtype=bool), slot, reset_seeds, dynamics_seeds)
            final_obs = np.zeros((count, *obs.shape[1:]), dtype=obs.dtype)
            with torch.no_grad():
                while (active := slot >= 0).any():
                    action = self.policy.sample(theta, torch.from_numpy(obs), generator).numpy()
                    raw_obs, reward, env_terminated, env_truncated, _ = envs.step(self.env_action(action))
                    next_obs = self.observe(raw_obs)
                    records.append((slot[active], elapsed[active], obs[active], action[active], reward[active]))
                    elapsed += active
                    ends = active & env_terminated
                    cut = active & ~ends & (elapsed == self.horizon)
                    early = active & ~ends & ~cut & env_truncated
                    if early.any():
                        raise ConfigError(
                            f"env {self.name} truncated an episode after {elapsed[early][0]} steps, before the "
                            f"horizon {self.horizon} and not by its TimeLimit; set a horizon it cannot cut short")
                    ended = ends | cut
                    if ended.any():
                        done = slot[ended]
                        length[done], terminated[done], final_obs[done] = elapsed[ended], ends[ended], next_obs[ended]
                        restart = ended & (np.cumsum(ended) <= count - next_slot)  # lane order
                        fresh = int(restart.sum())
                        slot[ended] = -1
                        slot[restart] = np.arange(next_slot, next_slot + fresh)
                        elapsed[restart] = 0
                        next_slot += fresh
                        if fresh:
                            next_obs = self._reset(envs, restart, slot, reset_seeds, dynamics_seeds)
                    obs = next_obs
        return self._assemble(reps, batch_size, records, length, terminated, final_obs)

    def _reset(self, envs: gym.vector.SyncVectorEnv, lanes: np.ndarray, slot: np.ndarray, reset_seeds: list[int],
               dynamics_seeds: list[int] | None) -> np.ndarray:
        """Reset the lanes where `lanes` [L] is True with their slots' seeds (clearing a pending autoreset),
        reseed their `np_random` in groups → the observations of every lane [L, ...]."""
        starting = np.flatnonzero(lanes).tolist()
        seeds: list[int | None] = [None] * len(lanes)
        for lane in starting:
            seeds[lane] = reset_seeds[slot[lane]]
        raw, _ = envs.reset(seed=seeds, options={"reset_mask": lanes.copy()})
        if dynamics_seeds is not None:
            for lane in starting:
                envs.envs[lane].unwrapped.np_random = seeding.np_random(dynamics_seeds[slot[lane]])[0]
        return self.observe(raw)

    def _assemble(self, reps: int, batch_size: int, records: list[tuple[np.ndarray, ...]], length: np.ndarray,
                  terminated: np.ndarray, final_obs: np.ndarray) -> Batch:
        """Scatter the recorded transitions into [count, T, ...] by (slot, step), zero past each episode's end."""
        slots, steps, obs, actions, rewards = (torch.from_numpy(np.concatenate(parts))
                                               for parts in zip(*records, strict=True))
        count, horizon = len(length), int(length.max())

        def per_step(values: torch.Tensor) -> list[torch.Tensor]:  # [A, ...] → T × [count, ...]
            out = values.new_zeros(count, horizon, *values.shape[1:])
            out[slots, steps] = values
            return list(out.unbind(1))

        alive = torch.arange(horizon) < torch.from_numpy(length)[:, None]  # [count, T]
        terminated_t = torch.from_numpy(terminated)
        return stack_steps(reps, batch_size, per_step(obs), per_step(actions), per_step(rewards),
                           list(alive.unbind(1)), terminated_t, torch.from_numpy(final_obs), self.gamma)


@dataclass(frozen=True)
class GymConfig(MLPProblemConfig):
    """The options of `gym:<id>`: those of an MLP problem and the SyncVectorEnv's width. One subclass per id
    (`gym_config_class`) holds what `probe` found and bounds the horizon by the id's TimeLimit."""

    num_envs: int = option(Int(1, 4096), 8, "width L of the SyncVectorEnv")

    info: ClassVar[GymEnvInfo]

    def validate(self) -> None:
        if self.horizon == 0:
            raise ConfigError(f"env {self.name} has no TimeLimit: set its horizon (--env-opt horizon=H)")

    def build(self) -> GymProblem:
        return GymProblem(self)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled by id and options: the class is made at run time (`gym_config_class`), so it is made again."""
        return gym_config, (self.info.env_id, self.as_dict())


_GYM_CONFIGS: dict[str, type[GymConfig]] = {}  # env id → its config class, made once


def gym_config_class(env_id: str) -> type[GymConfig]:
    """The config class of `gym:<env_id>` (the same class object for the same id), its horizon bounded by the
    id's TimeLimit (required when it has none); ConfigError for an id gymnasium cannot make or whose spaces are
    not supported."""
    if env_id not in _GYM_CONFIGS:
        info = probe(env_id)
        limit = info.max_episode_steps
        horizon = (time_limit_horizon(limit) if limit
                   else Option(Int(0), 0, "horizon H (required: the id has no TimeLimit)"))
        _GYM_CONFIGS[env_id] = with_horizon(
            GymConfig, f"GymConfig[{env_id}]", horizon, name=GYM_PREFIX + env_id, info=info,
            doc=f"gymnasium {env_id} through SyncVectorEnv; MLP policy from its spaces; no exact gradient: sampled "
                "reference")
    return _GYM_CONFIGS[env_id]


def gym_config(env_id: str, options: Mapping[str, Any] | None = None) -> GymConfig:
    """The config of `gym:<env_id>` with `options` over its defaults (how a pickled one is rebuilt)."""
    return gym_config_class(env_id).parse(options)


FAMILIES[GYM_PREFIX] = ProblemFamily(gym_config_class, f"{GYM_PREFIX}<id> for a registered gymnasium id (e.g. "
                                      f"{GYM_PREFIX}CartPole-v1)")

__all__ = ["GYM_PREFIX", "GymConfig", "GymProblem", "OneHotObservation", "episode_seeds", "gym_config",
           "gym_config_class", "make_gym_env", "probe"]
