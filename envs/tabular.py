"""Finite MDPs with a softmax-tabular policy: gymnasium toy_text tables and random Garnet MDPs.

A `TabularMDP` stores every (s, a) as up to K outcomes (probability, next state, reward,
terminal), the layout of gymnasium's `env.unwrapped.P`. The objective of every problem here is
J(θ) = E[Σ_{t<H} γ^t r_{t+1}], each episode stopping at termination; it is computed exactly by
the finite-horizon backward recursion

    Q_t(s, a) = Σ_k p_k [r_k + γ (1 − terminal_k) V_{t+1}(s'_k)],   V_t(s) = Σ_a π(a|s) Q_t(s, a),
    V_H ≡ 0,   J = Σ_s ρ₀(s) V_0(s),

and ∇J by autograd through it in float64. The optimum J* (`optimal_objective`) is the same recursion with
max_a in place of Σ_a π(a|s): the best time-indexed policy, which a stationary softmax policy may not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import gymnasium as gym
import numpy as np
import torch

from envs.memory import MEMORY_FRACTION, check_bytes
from envs.policies import SoftmaxTabular
from envs.problem import PROBLEMS, Batch, Capability, Problem, ProblemConfig, discount_vector, grouped, stack_steps
from envs.spec import Bool, Choice, ConfigError, Float, Int, Option, option, reuse
from envs.values import TableBasis, ValueFunction

DEFAULT_HORIZON = 100  # for environments without a gymnasium TimeLimit


@dataclass(frozen=True)
class TabularMDP:
    """Outcome tables of a finite MDP; K is the largest number of outcomes of any (s, a)."""

    initial: torch.Tensor  # [S] ρ₀
    prob: torch.Tensor  # [S, A, K] float64, zero-padded
    next_state: torch.Tensor  # [S, A, K] long
    reward: torch.Tensor  # [S, A, K] float64
    terminal: torch.Tensor  # [S, A, K] bool

    @property
    def num_states(self) -> int:
        return self.prob.shape[0]

    @property
    def num_actions(self) -> int:
        return self.prob.shape[1]

    @classmethod
    def from_outcomes(cls, initial: Any, table: Mapping[int, Mapping[int, list[tuple]]]) -> "TabularMDP":
        """From gymnasium's `P[s][a] = [(prob, next_state, reward, terminated), ...]`."""
        num_states, num_actions = len(table), len(table[0])
        width = max(len(table[s][a]) for s in range(num_states) for a in range(num_actions))
        prob = np.zeros((num_states, num_actions, width))
        next_state = np.zeros((num_states, num_actions, width), dtype=np.int64)
        reward = np.zeros((num_states, num_actions, width))
        terminal = np.zeros((num_states, num_actions, width), dtype=bool)
        for s in range(num_states):
            for a in range(num_actions):
                for k, (p, s2, r, done) in enumerate(table[s][a]):
                    prob[s, a, k], next_state[s, a, k] = p, s2
                    reward[s, a, k], terminal[s, a, k] = r, done
        return cls(
            torch.as_tensor(np.asarray(initial, dtype=np.float64)),
            torch.as_tensor(prob),
            torch.as_tensor(next_state),
            torch.as_tensor(reward),
            torch.as_tensor(terminal),
        )


def inverse_cdf_sample(cdf: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Row-wise categorical draws from normalised CDFs [B, K] (last real entry 1, padding +inf) → [B]."""
    u = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, generator=generator)
    return (u >= cdf).sum(-1)


def normalised_cdf(prob: torch.Tensor) -> torch.Tensor:
    """Cumulative sums along the last axis scaled so the last non-zero entry is exactly 1;
    entries after it are +inf so that `inverse_cdf_sample` never picks a zero-probability pad."""
    cdf = torch.cumsum(prob, dim=-1)
    cdf = cdf / cdf[..., -1:]
    last_real = (prob > 0).cumsum(-1).argmax(-1, keepdim=True)
    pad = torch.arange(prob.shape[-1]) > last_real
    return cdf.masked_fill(pad, torch.inf)


# Peak bytes of a finite MDP, measured (peak RSS) on garnet, taxi and the contextual bandit: building the
# outcome table (gymnasium's P-style nested lists and tuples, then the padded arrays and CDFs) takes ~240 per
# entry (s, a, k); the exact objective's backward recursion keeps, for autograd, ~25 per entry and ~30 per
# (s, a) at every step (taxi at H = 10⁵: 16 GB).
TABLE_BYTES = 300
RECURSION_BYTES = 32


def table_bytes(states: int, actions: int, outcomes: int, horizon: int) -> float:
    """Rough peak bytes of a finite MDP of states × actions × outcomes entries: its tables and the exact
    objective and gradient by the backward recursion over `horizon` steps."""
    return float(states * actions) * (outcomes * (TABLE_BYTES + RECURSION_BYTES * horizon) + RECURSION_BYTES * horizon)


class TabularProblem(Problem):
    """A finite MDP under a softmax-tabular policy, θ = [S, A] logits flattened row-major."""

    theta_layout = "softmax logits θ[s, a]"
    capabilities = frozenset({
        Capability.EXACT_GRADIENT, Capability.STOCHASTIC_POLICY, Capability.ORACLE_VALUES, Capability.VALUE_BASIS,
        Capability.ENTROPY_OBJECTIVE, Capability.FISHER, Capability.ACTION_VALUES, Capability.OPTIMUM,
    })

    def __init__(
        self, config: ProblemConfig, mdp: TabularMDP, gamma: float, horizon: int,
        gym_id: str | None = None, gym_kwargs: Mapping[str, Any] | None = None,
    ):
        """`config` is the problem's options; γ and H as they apply (H resolved from a 0 option)."""
        self.config, self.name = config, config.name
        self.mdp, self.gamma, self.horizon = mdp, gamma, horizon
        self.gym_id, self.gym_kwargs = gym_id, dict(gym_kwargs or {})  # the gymnasium env the tables came from
        self.policy = SoftmaxTabular(mdp.num_states, mdp.num_actions)
        self.theta_shape = (mdp.num_states, mdp.num_actions)
        outcomes = mdp.prob.shape[2]
        self.memory_bytes = table_bytes(mdp.num_states, mdp.num_actions, outcomes, horizon)
        self.lane_bytes = 24.0 * (mdp.num_actions + outcomes)  # a step's gathered CDF rows and comparisons
        self.step_values = 4 + mdp.num_actions  # and the log-softmax row of each step the gradient keeps
        self._outcome_cdf = normalised_cdf(mdp.prob)  # [S, A, K]
        self._initial_cdf = normalised_cdf(mdp.initial[None])  # [1, S]

    def default_theta(self) -> torch.Tensor:
        return torch.zeros(self.num_params, dtype=torch.float64)

    def make_gym_env(self) -> gym.Env:
        """The gymnasium environment the tables came from, with its TimeLimit set to the horizon."""
        if self.gym_id is None:
            raise ConfigError(f"env {self.name} is not a gymnasium environment")
        return gym.make(self.gym_id, max_episode_steps=self.horizon, **self.gym_kwargs)

    def action_values(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact time-indexed Q^π_t(s, a) [H, S, A] by the backward recursion (differentiable).
        With V_t(s) = Σ_a π(a|s) Q_t(s, a) and V_H ≡ 0 this is the oracle critic of a finite horizon."""
        mdp = self.mdp
        pi = self.policy.probs(theta)  # [S, A]
        alive = (~mdp.terminal).to(pi.dtype)  # [S, A, K]
        value = torch.zeros(mdp.num_states, dtype=pi.dtype)  # V_H
        out = []
        for _ in range(self.horizon):
            q = (mdp.prob * (mdp.reward + self.gamma * alive * value[mdp.next_state])).sum(-1)
            value = (pi * q).sum(-1)
            out.append(q)
        return torch.stack(out[::-1])

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact V^π_t(s) [H + 1, S], the last row V_H ≡ 0."""
        v = (self.policy.probs(theta) * self.action_values(theta)).sum(-1)  # [H, S]
        return torch.cat([v, v.new_zeros(1, v.shape[1])])

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return self.mdp.initial @ self.values(theta)[0]

    def optimal_values(self) -> torch.Tensor:
        """V*_t(s) [H + 1, S] by finite-horizon backward induction on the same tables and terminal rule as
        `action_values`: V*_H ≡ 0, Q*_t(s, a) = Σ_k p_k [r_k + γ (1 − terminal_k) V*_{t+1}(s'_k)],
        V*_t(s) = max_a Q*_t(s, a). Float64, no autograd (it does not depend on θ)."""
        mdp = self.mdp
        with torch.no_grad():
            prob, reward = mdp.prob.to(torch.float64), mdp.reward.to(torch.float64)
            alive = (~mdp.terminal).to(torch.float64)
            value = torch.zeros(mdp.num_states, dtype=torch.float64)  # V*_H
            out = [value]
            for _ in range(self.horizon):
                value = (prob * (reward + self.gamma * alive * value[mdp.next_state])).sum(-1).amax(-1)
                out.append(value)
        return torch.stack(out[::-1])

    def optimal_objective(self) -> float:
        """J* = sup over all policies of J = E[Σ_{t<H} γ^t r_{t+1}] (episodes stopping at termination), from ρ₀:
        J* = ρ₀ · V*_0 with V* from `optimal_values`. Deterministic time-indexed (non-stationary) Markov policies
        attain it, and no history-dependent or randomised policy does better. The softmax-tabular class is
        stationary, so on a finite horizon its supremum can be below J* (the best action may depend on the
        steps left), and it is approached only as logits → ±∞: normalized scores may stay below 1."""
        self.require(Capability.OPTIMUM)
        return float(self.mdp.initial.to(torch.float64) @ self.optimal_values()[0])

    @property
    def value_basis(self) -> TableBasis:
        return TableBasis(self.mdp.num_states)

    def oracle_values(self, theta: torch.Tensor) -> ValueFunction:
        return ValueFunction(self.value_basis, self.values(theta.to(torch.float64)).detach())

    def entropy_objective(self, theta: torch.Tensor) -> torch.Tensor:
        """Σ_t γ^t Σ_s d_t(s) H(π(·|s)) with d_t the alive-state occupancy (differentiable)."""
        states = torch.arange(self.mdp.num_states)
        per_state = self.policy.entropy(theta, states)  # [S]
        occupancy = self.occupancy(theta).sum(-1)  # [H, S]
        return discount_vector(self.gamma, self.horizon) @ (occupancy @ per_state)

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """Block-diagonal over states: Σ_t d_t(s) (diag π_s − π_s π_sᵀ) on row s's logits."""
        theta = theta.to(torch.float64)
        pi = self.policy.probs(theta)  # [S, A]
        weight = self.occupancy(theta).sum(-1).sum(0)  # [S] expected alive visits
        blocks = weight[:, None, None] * (torch.diag_embed(pi) - pi[:, :, None] * pi[:, None, :])  # [S, A, A]
        return torch.block_diag(*blocks).detach()

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:
        mdp, count = self.mdp, reps * batch_size
        policy_cdf = normalised_cdf(self.policy.probs(theta.detach()))  # [S, A]
        initial = inverse_cdf_sample(self._initial_cdf.expand(count // group_size, -1), generator)
        state = grouped(initial, group_size)  # [B]
        alive = torch.ones(count, dtype=torch.bool)
        terminated = torch.zeros(count, dtype=torch.bool)
        final_state = state
        states, actions, rewards, masks = [], [], [], []
        for _ in range(self.horizon):
            action = inverse_cdf_sample(policy_cdf[state], generator)
            outcome = inverse_cdf_sample(self._outcome_cdf[state, action], generator)[:, None]
            states.append(torch.where(alive, state, 0))
            actions.append(torch.where(alive, action, 0))
            rewards.append(torch.where(alive, mdp.reward[state, action].gather(1, outcome)[:, 0], 0.0))
            masks.append(alive)
            ends = alive & mdp.terminal[state, action].gather(1, outcome)[:, 0]
            terminated |= ends
            state = mdp.next_state[state, action].gather(1, outcome)[:, 0]
            final_state = torch.where(alive, state, final_state)
            alive = alive & ~ends
            if not alive.any():
                break
        return stack_steps(reps, batch_size, states, actions, rewards, masks, terminated, final_state, self.gamma)

    def occupancy(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact d_t(s, a) = P(s_t = s, a_t = a, episode alive at t) [H, S, A] by forward recursion."""
        mdp = self.mdp
        pi = self.policy.probs(theta.to(torch.float64))
        alive = (~mdp.terminal).to(pi.dtype)
        state_dist = mdp.initial.clone()
        out = []
        for _ in range(self.horizon):
            joint = state_dist[:, None] * pi  # [S, A]
            out.append(joint)
            flow = (joint[..., None] * mdp.prob * alive).reshape(-1)
            state_dist = torch.zeros_like(state_dist).index_add_(0, mdp.next_state.reshape(-1), flow)
        return torch.stack(out)


def _gym_tables(env_id: str, **kwargs: Any) -> tuple[TabularMDP, int]:
    """gymnasium's own P table and initial distribution, and the TimeLimit (DEFAULT_HORIZON if none)."""
    env = gym.make(env_id, **kwargs)
    try:
        raw = env.unwrapped
        mdp = TabularMDP.from_outcomes(raw.initial_state_distrib, raw.P)
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    return mdp, limit or DEFAULT_HORIZON


def _gym_problem(config: ProblemConfig, env_id: str, **kwargs: Any) -> TabularProblem:
    """The tables of gymnasium's `env_id` (made with `kwargs`) under `config`'s γ and horizon (0: the TimeLimit)."""
    mdp, limit = _gym_tables(env_id, **kwargs)
    horizon = config.horizon or limit
    check_bytes(table_bytes(mdp.num_states, mdp.num_actions, mdp.prob.shape[2], horizon),
                f"env {config.name} with horizon {horizon} (its exact objective and gradient)", "horizon")
    return TabularProblem(config, mdp, config.gamma, horizon, env_id, kwargs)


GAMMA = Option(Float(0.0, 1.0), 0.99, "discount γ of the objective")
HORIZON = Option(Int(0, 100_000), 0, "horizon H (0: the gymnasium TimeLimit, 100 where none)")


@dataclass(frozen=True)
class GymTableConfig(ProblemConfig):
    """A gymnasium toy_text id's P table as a problem: subclasses declare the options (γ and horizon among them)
    and `make_kwargs`, the keyword arguments of `gymnasium.make` that follow from them."""

    gym_id: ClassVar[str]

    def make_kwargs(self) -> dict[str, Any]:
        return {}

    def build(self) -> TabularProblem:
        return _gym_problem(self, self.gym_id, **self.make_kwargs())


@PROBLEMS.entry("frozenlake")
class FrozenLakeConfig(GymTableConfig):
    map: str = option(Choice(("4x4", "8x8")), "4x4", "FrozenLake-v1 map_name")
    slippery: bool = option(Bool(), True, "FrozenLake-v1 is_slippery")
    gamma: float = reuse(GAMMA)
    horizon: int = reuse(HORIZON)

    gym_id = "FrozenLake-v1"
    doc = "FrozenLake-v1 (gymnasium P table), softmax-tabular policy; reward 1 at the goal"

    def make_kwargs(self) -> dict[str, Any]:
        return {"map_name": self.map, "is_slippery": self.slippery}


@dataclass(frozen=True)
class DiscountedTableConfig(GymTableConfig):
    """A toy_text id whose only options are γ and the horizon."""

    gamma: float = reuse(GAMMA)
    horizon: int = reuse(HORIZON)


@PROBLEMS.entry("cliffwalking")
class CliffWalkingConfig(DiscountedTableConfig):
    gym_id = "CliffWalking-v1"
    doc = "CliffWalking-v1 (gymnasium P table), softmax-tabular policy; −1 a step, −100 for the cliff"


@PROBLEMS.entry("taxi")
class TaxiConfig(DiscountedTableConfig):
    gym_id = "Taxi-v4"
    doc = "Taxi-v4 (gymnasium P table), softmax-tabular policy over 500 states × 6 actions"


def garnet_mdp(states: int, actions: int, branching: int, mdp_seed: int) -> TabularMDP:
    """A Garnet MDP (Archibald et al. 1995; Bhatnagar et al. 2009): each (s, a) moves to
    `branching` distinct states (branching ≤ states) with probabilities from uniform stick-breaking,
    reward r(s, a) ~ U(0, 1); ρ₀ uniform; no terminal states. Fixed by `mdp_seed`."""
    rng = np.random.default_rng(mdp_seed)
    table: dict[int, dict[int, list[tuple]]] = {}
    for s in range(states):
        table[s] = {}
        for a in range(actions):
            targets = rng.choice(states, size=branching, replace=False)
            cuts = np.sort(rng.uniform(size=branching - 1))
            probs = np.diff(np.concatenate([[0.0], cuts, [1.0]]))
            reward = float(rng.uniform())
            table[s][a] = [(float(p), int(t), reward, False) for p, t in zip(probs, targets)]
    return TabularMDP.from_outcomes(np.full(states, 1.0 / states), table)


@PROBLEMS.entry("garnet")
class GarnetConfig(ProblemConfig):
    states: int = option(Int(1, 10_000), 10, "number of states")
    actions: int = option(Int(1, 1_000), 3, "number of actions")
    branching: int = option(Int(1, 10_000), 3, "next states reachable from each (s, a)")
    mdp_seed: int = option(Int(0), 0, "seed of the random MDP itself")
    gamma: float = reuse(GAMMA)
    horizon: int = reuse(HORIZON)

    doc = ("random Garnet MDP, softmax-tabular policy (horizon 0 means 100); refused when its tables and exact "
           f"gradient, ≈ states·actions·(branching·({TABLE_BYTES} + {RECURSION_BYTES}·H) + {RECURSION_BYTES}·H) "
           f"bytes, exceed {MEMORY_FRACTION:.0%} of the available memory")

    def validate(self) -> None:
        if self.branching > self.states:
            raise ConfigError(f"env garnet: branching={self.branching} must be ≤ states={self.states}")

    def build(self) -> TabularProblem:
        states, actions, branching, horizon = self.states, self.actions, self.branching, self.horizon or DEFAULT_HORIZON
        check_bytes(table_bytes(states, actions, branching, horizon),
                    f"env garnet with states × actions × branching = {states} × {actions} × {branching} = "
                    f"{states * actions * branching:.3g} transitions and horizon {horizon} (its "
                    "tables, exact objective and gradient)", "states, actions, branching or horizon")
        return TabularProblem(self, garnet_mdp(states, actions, branching, self.mdp_seed), self.gamma, horizon)
