"""Test twins: slow, obviously correct versions of the suite's fast paths, gathered in one place.

Each twin computes what a vectorised or recursive fast path computes, the way the definition reads
(plain Python loops over time, states, actions and outcomes; one autograd backward per step; one
gymnasium `env.step` per call), so a reader can check it against the formula by eye. The tests hold
the fast path equal to its twin (to rounding, or statistically where the twin samples). Each twin's
docstring names the fast path it checks and why it is obviously correct.

A plain module, not a test file: the tests and the benchmarks (tests/benchmarks) import the twins
from here, and production code never does. Keep a twin here rather than in the module it checks or
in one test file imported by another.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from bench.metrics import GradientMetrics, gradient_metrics
from envs.classic import CLASSIC_ENVS, State
from envs.lqr import LinearQuadratic, QuadraticActionValues
from envs.policies import MLPCategorical, MLPGaussian, inverse_cdf
from envs.problem import Batch, Problem, grouped, stack_steps
from envs.tabular import TabularProblem
from envs.values import TableBasis, ValueFunction
from estimators.autodiff import weighted_score_per_trajectory
from estimators.critics import RIDGE, SameBatchCritic

# ---------------------------------------------------------------- classic rollouts (envs/classic.py)


def classic_rollout_loop(env_id: str, policy: MLPCategorical | MLPGaussian, theta: torch.Tensor, reps: int,
                         batch_size: int, generator: torch.Generator, horizon: int, gamma: float = 1.0,
                         group_size: int = 1, dtype: torch.dtype = torch.float64) -> Batch:
    """Twin of `envs.classic.rollout`: every step, `policy.sample` (the network by `MLP.__call__`, categorical
    actions by the inverse CDF for any number of actions) on the live lanes, then each step's records scattered
    into zeroed [B] tensors and stacked; no kept activations. The same draws from `generator` in the same order,
    so the same Batch to rounding of the policy's probabilities."""
    env = CLASSIC_ENVS[env_id]
    count = reps * batch_size
    theta = theta.detach().to(dtype)
    state, obs = env.reset(env.params, count // group_size, generator, torch.float64)
    state, obs = State(grouped(state.physics, group_size), grouped(state.time, group_size)), grouped(obs, group_size)
    lanes = torch.arange(count)
    terminated = torch.zeros(count, dtype=torch.bool)
    final_obs = torch.zeros_like(obs)
    observations, actions, rewards, masks = [], [], [], []
    with torch.no_grad():
        for _ in range(horizon):
            policy_obs = obs.to(dtype)
            if isinstance(policy, MLPCategorical):
                u = torch.rand(len(lanes), dtype=dtype, generator=generator)
                action = inverse_cdf(torch.softmax(policy.logits(theta, policy_obs), -1), u)
            else:
                action = policy.sample(theta, policy_obs, generator)
            state, next_obs, reward, ends = env.step(env.params, state, action)
            observations.append(policy_obs.new_zeros(count, *obs.shape[1:]).index_copy_(0, lanes, policy_obs))
            actions.append(action.new_zeros(count, *action.shape[1:]).index_copy_(0, lanes, action))
            rewards.append(reward.new_zeros(count).index_copy_(0, lanes, reward))
            masks.append(torch.zeros(count, dtype=torch.bool).index_fill_(0, lanes, True))
            for lane in range(len(lanes)):
                if ends[lane]:
                    terminated[lanes[lane]] = True
                    final_obs[lanes[lane]] = next_obs[lane]
            running = ~ends
            lanes, obs = lanes[running], next_obs[running]
            state = State(state.physics[running], state.time[running])
            if not lanes.numel():
                break
    final_obs[lanes] = obs
    return stack_steps(reps, batch_size, observations, actions, rewards, masks, terminated, final_obs.to(dtype), gamma)


# ------------------------------------------------------------------ returns (estimators/returns.py)


def reward_to_go_loop(rewards: list[float], gamma: float) -> list[float]:
    """Slow twin of `estimators.returns.reward_to_go` for one trajectory: the definition
    G_t = Σ_{k ≥ t} γ^{k−t} r_{k+1}, summed term by term (no recursion shared between steps)."""
    horizon = len(rewards)
    return [sum(gamma ** (k - t) * rewards[k] for k in range(t, horizon)) for t in range(horizon)]


def gae_loop(rewards: list[float], values: list[float], bootstrap: float, gamma: float, lam: float) -> list[float]:
    """Slow twin of `estimators.returns.gae` for one episode of len(rewards) alive steps: the
    definition, term by term: δ_t = r_{t+1} + γ V(s_{t+1}) − V(s_t) with V after the last step the
    bootstrap, and Â_t = Σ_{k ≥ t} (γλ)^{k−t} δ_k summed directly (no backward recursion, no mask)."""
    horizon = len(rewards)
    next_values = values[1:] + [bootstrap]
    deltas = [rewards[t] + gamma * next_values[t] - values[t] for t in range(horizon)]
    return [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, horizon)) for t in range(horizon)]


# ------------------------------------------------------------------ problems (envs/)


def gym_episode(problem: TabularProblem, env: gym.Env, probs: np.ndarray, rng: np.random.Generator):
    """One episode of the real gymnasium environment under π (probs [S, A]), stepped one call at a
    time up to the problem's horizon: the slow twin of `TabularProblem.sample` (which samples the
    same MDP from gymnasium's P tables, vectorised). Obviously correct: it is gymnasium itself, one
    `env.step` per action drawn from π(·|s). env is `problem.make_gym_env()`; returns
    (states, actions, rewards)."""
    state, _ = env.reset(seed=int(rng.integers(2**31)))
    states, actions, rewards = [], [], []
    for _ in range(problem.horizon):
        action = int(rng.choice(probs.shape[1], p=probs[state]))
        next_state, reward, terminated, _, _ = env.step(action)
        states.append(int(state))
        actions.append(action)
        rewards.append(float(reward))
        if terminated:
            break
        state = next_state
    return states, actions, rewards


def finite_difference_gradient(problem: Problem, theta: torch.Tensor, step: float = 1e-5) -> torch.Tensor:
    """Slow twin of `Problem.exact_gradient` (autodiff of the exact objective, or a closed form): central
    differences (J(θ + h e_j) − J(θ − h e_j)) / 2h, one coordinate at a time, from `objective` alone."""
    grad = torch.zeros_like(theta)
    for j in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[j] = step
        grad[j] = (problem.objective(theta + e) - problem.objective(theta - e)) / (2 * step)
    return grad


def objective_loop(problem: TabularProblem, theta: torch.Tensor) -> float:
    """Slow twin of `TabularProblem.objective` (the tensor backward recursion over time): the same
    Bellman recursion in plain Python over t, s, a and outcomes."""
    mdp, pi = problem.mdp, problem.policy.probs(theta).tolist()
    S, A, K = mdp.prob.shape
    prob, nxt, rew, term = mdp.prob.tolist(), mdp.next_state.tolist(), mdp.reward.tolist(), mdp.terminal.tolist()
    value = [0.0] * S
    for _ in range(problem.horizon):
        q = [[sum(prob[s][a][k] * (rew[s][a][k] + (0.0 if term[s][a][k] else problem.gamma * value[nxt[s][a][k]]))
                  for k in range(K)) for a in range(A)] for s in range(S)]
        value = [sum(pi[s][a] * q[s][a] for a in range(A)) for s in range(S)]
    return sum(mdp.initial[s].item() * value[s] for s in range(S))


def value_loops(problem: TabularProblem, theta: torch.Tensor) -> tuple[list, list]:
    """Slow twin of `TabularProblem.action_values` and `.values`, the time-indexed Q_t and V_t (V_H = 0):
    plain Python over t, s, a and outcomes."""
    mdp, pi = problem.mdp, problem.policy.probs(theta).tolist()
    S, A, K = mdp.prob.shape
    prob, nxt, rew, term = mdp.prob.tolist(), mdp.next_state.tolist(), mdp.reward.tolist(), mdp.terminal.tolist()
    H, gamma = problem.horizon, problem.gamma
    values = [[0.0] * S for _ in range(H + 1)]
    qs = [None] * H
    for t in range(H - 1, -1, -1):
        qs[t] = [[sum(prob[s][a][k] * (rew[s][a][k] + (0.0 if term[s][a][k] else gamma * values[t + 1][nxt[s][a][k]]))
                      for k in range(K)) for a in range(A)] for s in range(S)]
        values[t] = [sum(pi[s][a] * qs[t][s][a] for a in range(A)) for s in range(S)]
    return qs, values


def policy_gradient_theorem_loop(problem: TabularProblem, theta: torch.Tensor) -> np.ndarray:
    """Slow, independently derived twin of ∇J for softmax-tabular policies: the finite-horizon
    policy-gradient theorem ∂J/∂θ[s,a] = Σ_t γ^t d_t(s) π(a|s) (Q_t(s,a) − V_t(s)), with d_t the
    state distribution of the alive episode (forward loop) and Q_t, V_t from the backward loop."""
    mdp, pi = problem.mdp, problem.policy.probs(theta).tolist()
    S, A, K = mdp.prob.shape
    prob, nxt, term = mdp.prob.tolist(), mdp.next_state.tolist(), mdp.terminal.tolist()
    H, gamma = problem.horizon, problem.gamma
    qs, values = value_loops(problem, theta)
    grad = np.zeros((S, A))
    dist = mdp.initial.tolist()
    for t in range(H):
        new = [0.0] * S
        for s in range(S):
            if dist[s] == 0.0:
                continue
            for a in range(A):
                grad[s, a] += gamma**t * dist[s] * pi[s][a] * (qs[t][s][a] - values[t][s])
                for k in range(K):
                    if not term[s][a][k]:
                        new[nxt[s][a][k]] += dist[s] * pi[s][a] * prob[s][a][k]
        dist = new
    return grad.reshape(-1)


def lqr_value_forward(problem, theta, x: np.ndarray, t: int) -> float:
    """V_t(x) by propagating the state's mean and covariance forward from x_t = x: the slow,
    independent twin of the backward recursion in `LinearQuadratic.oracle_values`."""
    a, b = problem.dynamics.numpy(), problem.control.numpy()
    q, r = problem.state_cost.numpy(), problem.action_cost.numpy()
    gain, variance = problem.policy.gain(theta).numpy(), float(torch.exp(2 * theta[-1]))
    closed = a - b @ gain
    mean, cov, value = x.copy(), np.zeros((len(x), len(x))), 0.0
    for k in range(t, problem.horizon):
        second = np.outer(mean, mean) + cov
        reward = -np.trace(q @ second) - np.trace(r @ (gain @ second @ gain.T)) - variance * np.trace(r)
        value += problem.gamma ** (k - t) * reward
        mean = closed @ mean
        cov = closed @ cov @ closed.T + variance * b @ b.T + problem.noise**2 * np.eye(len(x))
    return value


def tabular_fisher_loop(problem, theta) -> np.ndarray:
    """Slow twin of `TabularProblem.fisher`: F = Σ_t Σ_s d_t(s) Σ_a π(a|s) ψ_{s,a} ψ_{s,a}ᵀ with
    ψ_{s,a} = e_a − π(·|s) on row s's logits, d_t(s) the probability of being alive in s at t,
    propagated outcome by outcome with Python loops."""
    mdp = problem.mdp
    S, A, K = mdp.prob.shape
    logits = theta.reshape(S, A).numpy()
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    prob, nxt, terminal = mdp.prob.numpy(), mdp.next_state.numpy(), mdp.terminal.numpy()
    alive_now = mdp.initial.numpy().copy()
    visits = np.zeros(S)  # Σ_t d_t(s)
    for _ in range(problem.horizon):
        visits += alive_now
        alive_next = np.zeros(S)
        for s in np.flatnonzero(alive_now):
            for a in range(A):
                for k in range(K):
                    if prob[s, a, k] > 0 and not terminal[s, a, k]:
                        alive_next[nxt[s, a, k]] += alive_now[s] * pi[s, a] * prob[s, a, k]
        alive_now = alive_next
    fisher = np.zeros((S * A, S * A))
    for s in range(S):
        for a in range(A):
            psi = -pi[s].copy()
            psi[a] += 1.0
            fisher[s * A:(s + 1) * A, s * A:(s + 1) * A] += visits[s] * pi[s, a] * np.outer(psi, psi)
    return fisher


def torch_nn_twin(policy: MLPCategorical, theta: torch.Tensor) -> torch.nn.Sequential:
    """Slow twin of `envs.policies.MLPCategorical` (its hand-written layers over a flat θ): the network
    as one writes it with torch.nn, θ loaded through torch's own flattening order."""
    modules: list[torch.nn.Module] = []
    for n_in, n_out in policy.net.layer_sizes:
        modules += [torch.nn.Linear(n_in, n_out, dtype=torch.float64), torch.nn.Tanh()]
    network = torch.nn.Sequential(*modules[:-1])
    assert policy.num_params == sum(p.numel() for p in network.parameters())
    torch.nn.utils.vector_to_parameters(theta, network.parameters())
    return network


# ------------------------------------------------------------------ estimators (estimators/)


def value_loop(critic, batch, m: int, i: int, t: int) -> float:
    """V̂_t(s_{m,i,t}) of a fixed critic, or of one fitted on replicate m by `fit_loop`, term by term."""
    if isinstance(critic, SameBatchCritic):
        critic = fit_loop(critic, batch, m)
        weights = critic.weights
    else:
        weights = critic.weights
    if isinstance(critic.basis, TableBasis):
        return float(weights[t, int(batch.obs[m, i, t])])
    x = batch.obs[m, i, t].tolist()
    features = [1.0] + [x[a] * x[b] for a in range(len(x)) for b in range(a, len(x))]
    return float(sum(w * f for w, f in zip(weights[t].tolist(), features)))


def fit_loop(critic: SameBatchCritic, batch, m: int) -> ValueFunction:
    """Slow twin of `estimators.critics.fit_values` for replicate m: per step t, the mean of G_t per visited state
    (states unseen at t get the step's mean), or ridge least squares with numpy, from Python lists."""
    N, T = batch.rewards.shape[1:]
    width = critic.basis.num_features
    weights = torch.zeros(critic.horizon + 1, width, dtype=torch.float64)
    alive = [[i for i in range(N) if batch.mask[m, i, t] > 0] for t in range(T)]
    targets = [reward_to_go_loop(batch.rewards[m, i].tolist(), batch.gamma) for i in range(N)]
    for t in range(T):
        if not alive[t]:
            continue
        if isinstance(critic.basis, TableBasis):
            visits: dict[int, list[float]] = {}
            for i in alive[t]:
                visits.setdefault(int(batch.obs[m, i, t]), []).append(targets[i][t])
            step_mean = sum(sum(v) for v in visits.values()) / sum(len(v) for v in visits.values())
            weights[t] = step_mean
            for s, v in visits.items():
                weights[t, s] = sum(v) / len(v)
        else:
            xs = [batch.obs[m, i, t].tolist() for i in alive[t]]
            phi = np.array([[1.0] + [x[a] * x[b] for a in range(len(x)) for b in range(a, len(x))] for x in xs])
            gram = phi.T @ phi
            ridge = RIDGE * max(1.0, float(np.mean(np.diag(gram))))
            solution = np.linalg.solve(gram + ridge * np.eye(width), phi.T @ np.array([targets[i][t] for i in alive[t]]))
            weights[t] = torch.as_tensor(solution)
    return ValueFunction(critic.basis, weights)


def reinforce_loop(problem, theta, batch, returns, baseline, discount_score, entropy_coef=0.0, critic=None,
                   oracle_baseline=None) -> torch.Tensor:
    """Slow twin of `estimators.score.reinforce`: the lecture notes' sums written out trajectory by trajectory and
    step by step, one backward pass per (m, i, t) for the score ∇ log π(a_t|s_t) and the entropy. The oracle
    baselines use the given b* (`oracle_baseline`, fitted by the estimator's prepare)."""
    M, N, _ = batch.rewards.shape
    gamma, out = batch.gamma, torch.zeros(M, problem.num_params, dtype=torch.float64)
    for m in range(M):
        lengths = [int(batch.mask[m, i].sum()) for i in range(N)]
        rewards = [[batch.rewards[m, i, t].item()
                    + entropy_coef * problem.policy.entropy(theta, batch.obs[m, i, t]).item()
                    for t in range(lengths[i])] for i in range(N)]
        for i in range(N):  # the direct term α v_t ∇H(π(·|s_t))
            for t in range(lengths[i]):
                if not entropy_coef:
                    break
                leaf = theta.detach().clone().requires_grad_(True)
                entropy = problem.policy.entropy(leaf, batch.obs[m, i, t])
                v_t = gamma**t if (returns == "total" or discount_score) else 1.0
                out[m] += entropy_coef * v_t * torch.autograd.grad(entropy, leaf)[0] / N
        if returns == "reward_to_go":
            ret = [reward_to_go_loop(r, gamma) for r in rewards]
        else:
            ret = [[sum(gamma**t * x for t, x in enumerate(r))] * len(r) for r in rewards]
        weight = [[gamma**t if (returns == "reward_to_go" and discount_score) else 1.0 for t in range(L)] for L in lengths]
        scores = []
        for i in range(N):
            row = []
            for t in range(lengths[i]):
                leaf = theta.detach().clone().requires_grad_(True)
                log_pi = problem.policy.log_prob(leaf, batch.obs[m, i, t], batch.actions[m, i, t])
                row.append(torch.autograd.grad(log_pi, leaf)[0])
            scores.append(row)

        def ret_at(j, t):  # Ĝ_{j,t} after trajectory j ended: G_{j,0} for total returns, 0 for reward-to-go
            if returns == "total":
                return sum(gamma**k * x for k, x in enumerate(rewards[j]))
            return ret[j][t] if t < lengths[j] else 0.0

        if baseline.startswith(("optimal", "oracle_optimal")):
            g = [sum((weight[i][t] * ret[i][t] * scores[i][t] for t in range(lengths[i])), torch.zeros(problem.num_params, dtype=torch.float64)) for i in range(N)]
            s = [sum((weight[i][t] * scores[i][t] for t in range(lengths[i])), torch.zeros(problem.num_params, dtype=torch.float64)) for i in range(N)]
            if baseline.startswith("oracle"):
                b = oracle_baseline.reshape(-1)  # [1] or [P]
            elif baseline == "optimal":
                num = sum(float(s[i] @ g[i]) for i in range(N))
                den = sum(float(s[i] @ s[i]) for i in range(N))
                b = num / den if den > 0 else 0.0
            else:
                num = sum(s[i] * g[i] for i in range(N))
                den = sum(s[i] * s[i] for i in range(N))
                b = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
            out[m] += sum(g[i] - b * s[i] for i in range(N)) / N
            continue
        for i in range(N):
            for t in range(lengths[i]):
                if baseline == "none":
                    b = 0.0
                elif baseline == "batch_mean":
                    b = sum(ret_at(j, t) for j in range(N)) / N
                elif baseline == "rloo":
                    b = sum(ret_at(j, t) for j in range(N) if j != i) / (N - 1)
                elif baseline == "value":
                    b = value_loop(critic, batch, m, i, t)
                else:
                    b = float(baseline.split(":")[1])
                out[m] += weight[i][t] * (ret[i][t] - b) * scores[i][t] / N
    return out


def grpo_loop(problem, theta, batch, group_size, normalize) -> torch.Tensor:
    """Slow twin of `estimators.group.grpo`: group means and standard deviations by hand over Python
    floats, the score Σ_t ∇ log π per trajectory from one backward pass per (m, i, t) (autodiff "naive")."""
    M, N, _ = batch.rewards.shape
    scores = weighted_score_per_trajectory(problem.policy, theta, batch, batch.mask, method="naive")  # Σ_t ∇ log π per trajectory
    out = torch.zeros(M, problem.num_params, dtype=torch.float64)
    for m in range(M):
        returns = [float((batch.rewards[m, i] * batch.discount).sum()) for i in range(N)]
        for i in range(N):
            group = returns[i - i % group_size: i - i % group_size + group_size]
            mean = sum(group) / group_size
            advantage = returns[i] - mean
            if normalize == "std":
                std = (sum((r - mean) ** 2 for r in group) / (group_size - 1)) ** 0.5
                advantage = advantage / std if std > 0 else 0.0
            out[m] += advantage * scores[m, i] / N
    return out


def batch_fisher_loop(problem, theta, batch, m: int) -> torch.Tensor:
    """Slow twin of `estimators.natural.batch_fisher`: F̂_m = (1/N) Σ_i Σ_t ψψᵀ, one backward pass per alive step."""
    fisher = torch.zeros(problem.num_params, problem.num_params, dtype=torch.float64)
    for i in range(batch.batch_size):
        for t in range(batch.steps):
            if batch.mask[m, i, t] == 0:
                continue
            leaf = theta.detach().clone().requires_grad_(True)
            log_pi = problem.policy.log_prob(leaf, batch.obs[m, i, t], batch.actions[m, i, t])
            (score,) = torch.autograd.grad(log_pi, leaf)
            fisher += torch.outer(score, score)
    return fisher / batch.batch_size


def dpg_loop(problem: LinearQuadratic, theta: torch.Tensor, batch, critic: QuadraticActionValues) -> torch.Tensor:
    """Slow twin of `estimators.deterministic.dpg`: per (m, i, t), the Jacobian ∇_θμ(s) [du, P] by autograd and ∇_a Q̂_t by
    autograd through Q̂_t(s, ·) (not the closed form), summed with γ^t and divided by N. → [M, P]"""
    M, N, T = batch.rewards.shape
    out = torch.zeros(M, problem.num_params, dtype=torch.float64)
    for m in range(M):
        for i in range(N):
            for t in range(T):
                state = batch.obs[m, i, t]
                jacobian = torch.autograd.functional.jacobian(lambda th: problem.policy.action(th, state), theta)
                action = problem.policy.action(theta, state).detach().requires_grad_(True)
                (action_gradient,) = torch.autograd.grad(critic.at(state, action, torch.tensor(t)), action)
                out[m] += batch.gamma**t * batch.mask[m, i, t] * jacobian.T @ action_gradient / N
    return out


def exact_values(problem, behaviour_theta: torch.Tensor):
    """(state, t) ↦ V^{π_b}_t(s) from the problem's own recursion (not through `ValueFunction`)."""
    if isinstance(problem, TabularProblem):
        table = problem.values(behaviour_theta)  # [H + 1, S]
        return lambda state, t: float(table[t, int(state)])
    if problem.name == "lqr":
        matrices, constants = problem.value_recursion(behaviour_theta)
        return lambda state, t: -float(state @ matrices[t] @ state + constants[t])
    value = float(problem.objective(behaviour_theta))  # gaussian-bandit: V_0 = J, H = 1
    return lambda state, t: value


def off_policy_loop(problem, theta, behaviour_theta, batch, name: str, clip: float = 0.0,
                    value_baseline: bool = False) -> torch.Tensor:
    """Slow twin of the four off-policy estimators (`estimators.off_policy`: is-trajectory,
    is-per-decision, is-first-order, ppo-clip): the docstrings' sums written out trajectory by trajectory and step
    by step, ratios as products of per-step Python floats, one backward pass per (m, i, t) for the score,
    and PPO's clipping as its case analysis (a clipped term contributes 0). → [M, P]"""
    reps, batch_size, _ = batch.rewards.shape
    gamma, out = batch.gamma, torch.zeros(reps, problem.num_params, dtype=torch.float64)
    value = exact_values(problem, behaviour_theta)
    for m in range(reps):
        for i in range(batch_size):
            length = int(batch.mask[m, i].sum())
            rewards = batch.rewards[m, i, :length].tolist()
            returns = reward_to_go_loop(rewards, gamma)
            ratio = []
            for t in range(length):
                s, a = batch.obs[m, i, t], batch.actions[m, i, t]
                log_ratio = problem.policy.log_prob(theta, s, a) - problem.policy.log_prob(behaviour_theta, s, a)
                ratio.append(math.exp(float(log_ratio)))
            for t in range(length):
                leaf = theta.detach().clone().requires_grad_(True)
                log_pi = problem.policy.log_prob(leaf, batch.obs[m, i, t], batch.actions[m, i, t])
                score = torch.autograd.grad(log_pi, leaf)[0]
                b = value(batch.obs[m, i, t], t) if value_baseline else 0.0
                advantage = returns[t] - b
                if name == "is-trajectory":
                    weight = math.prod(ratio) * gamma**t * returns[t]
                elif name == "is-per-decision":
                    weight = gamma**t * sum(gamma ** (k - t) * math.prod(ratio[: k + 1]) * rewards[k]
                                            for k in range(t, length))
                elif name == "is-first-order":
                    weight = gamma**t * ratio[t] * advantage
                else:
                    clipped = (advantage > 0 and ratio[t] > 1 + clip) or (advantage < 0 and ratio[t] < 1 - clip)
                    weight = 0.0 if clipped else gamma**t * ratio[t] * advantage
                out[m] += weight * score / batch_size
    return out


# ------------------------------------------------------------------ the harness (bench/harness.py)


def naive_measure(problem: TabularProblem, batch_size: int, reps: int, seed: int) -> GradientMetrics:
    """Slow twin of `bench.harness.measure(problem, "reinforce", N, M, seed)` with the default options
    (REINFORCE, discounted reward-to-go, no baseline): the way a measurement is usually written,
    gymnasium `env.step` one call at a time, a torch policy evaluated once per step, one autograd
    backward per trajectory, M batches of N trajectories. tests/test_naive_twin.py checks it is
    unbiased; tests/benchmarks/test_measure_speed.py times the harness against it."""
    env = problem.make_gym_env()
    generator = torch.Generator().manual_seed(seed)
    theta = problem.default_theta().requires_grad_(True)
    estimates = np.zeros((reps, problem.num_params))
    env.reset(seed=seed)
    for m in range(reps):
        for _ in range(batch_size):
            state, _ = env.reset()
            log_probs, rewards = [], []
            for _ in range(problem.horizon):
                log_pi = torch.log_softmax(theta.view(problem.theta_shape)[state], -1)
                action = torch.multinomial(log_pi.detach().exp(), 1, generator=generator)[0]
                log_probs.append(log_pi[action])
                state, reward, terminated, truncated, _ = env.step(int(action))
                rewards.append(float(reward))
                if terminated or truncated:
                    break
            returns, running = [], 0.0
            for r in reversed(rewards):
                running = r + problem.gamma * running
                returns.append(running)
            returns.reverse()
            surrogate = sum(problem.gamma**t * g * lp for t, (g, lp) in enumerate(zip(returns, log_probs)))
            (grad,) = torch.autograd.grad(surrogate, theta)
            estimates[m] += grad.numpy() / batch_size
    return gradient_metrics(estimates, problem.exact_gradient(theta.detach()).numpy())


# ------------------------------------------------------------------ optima J* (Problem.optimal_objective)


def optimal_values_loop(problem: TabularProblem) -> list[list[float]]:
    """Slow twin of `TabularProblem.optimal_values`: finite-horizon backward induction in plain Python over
    t, s, a and outcomes, V*_H = 0, V*_t(s) = max_a Σ_k p_k [r_k + (0 if terminal_k else γ V*_{t+1}(s'_k))],
    the definition of the optimal time-indexed value read off the objective. → V* [H + 1][S]"""
    mdp = problem.mdp
    S, A, K = mdp.prob.shape
    prob, nxt, rew, term = mdp.prob.tolist(), mdp.next_state.tolist(), mdp.reward.tolist(), mdp.terminal.tolist()
    H, gamma = problem.horizon, problem.gamma
    values = [[0.0] * S for _ in range(H + 1)]
    for t in range(H - 1, -1, -1):
        for s in range(S):
            best = -math.inf
            for a in range(A):
                q = 0.0
                for k in range(K):
                    future = 0.0 if term[s][a][k] else gamma * values[t + 1][nxt[s][a][k]]
                    q += prob[s][a][k] * (rew[s][a][k] + future)
                best = max(best, q)
            values[t][s] = best
    return values


def deterministic_policy_objective_loop(problem: TabularProblem, plan: list[list[int]]) -> float:
    """J of the deterministic time-indexed policy a_t = plan[t][s], by a plain forward recursion of the alive
    state distribution (no values, no max): J = Σ_t γ^t Σ_s d_t(s) Σ_k p_k r_k, with d_0 = ρ₀ and
    d_{t+1}(s') = Σ_s d_t(s) Σ_{k: s'_k = s', not terminal_k} p_k. Maximised over every plan it is J* by
    enumeration, independent of the backward induction."""
    mdp = problem.mdp
    S, _, K = mdp.prob.shape
    prob, nxt, rew, term = mdp.prob.tolist(), mdp.next_state.tolist(), mdp.reward.tolist(), mdp.terminal.tolist()
    dist, total = mdp.initial.tolist(), 0.0
    for t in range(problem.horizon):
        new = [0.0] * S
        for s in range(S):
            a = plan[t][s]
            for k in range(K):
                total += problem.gamma**t * dist[s] * prob[s][a][k] * rew[s][a][k]
                if not term[s][a][k]:
                    new[nxt[s][a][k]] += dist[s] * prob[s][a][k]
        dist = new
    return total


def lqr_time_varying_objective(problem: LinearQuadratic, gains: torch.Tensor) -> torch.Tensor:
    """J of the deterministic time-varying linear policy u_t = −K_t x_t (gains [H, du, dx]) on the LQR problem,
    differentiable in the gains: the state's covariance propagated forward from Σ_0 = I,
    Σ_{t+1} = (A − B K_t) Σ_t (A − B K_t)ᵀ + ν² I, with E[r_{t+1}] = −tr(Q Σ_t) − tr(R K_t Σ_t K_tᵀ).
    Written without the problem's own recursions (a per-step gain they do not have), for a brute-force optimisation."""
    a, b = problem.dynamics, problem.control
    q, r = problem.state_cost, problem.action_cost
    cov = torch.eye(a.shape[0], dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(problem.horizon):
        gain = gains[t]
        total = total - problem.gamma**t * (torch.trace(q @ cov) + torch.trace(r @ gain @ cov @ gain.T))
        closed = a - b @ gain
        cov = closed @ cov @ closed.T + problem.noise**2 * torch.eye(a.shape[0], dtype=torch.float64)
    return total


# ------------------------------------------------------------------ training (bench/training.py)


def gradient_ascent_loop(problem: Problem, theta: torch.Tensor, lr: float, steps: int, optimizer: str = "sgd",
                         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[list, list]:
    """Slow twin of `bench.training.train` driven by the `exact` estimator: plain gradient ascent written from the
    update rules, with ∇J from `torch.func.grad(problem.objective)` (not the problem's `exact_gradient`) and no
    torch.optim. sgd: θ ← θ + lr·g. adam (Kingma & Ba 2015, Algorithm 1, ascending): m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g², θ ← θ + lr·(m / (1 − β₁^t)) / (√(v / (1 − β₂^t)) + ε), t = 1, 2, …
    Stops after `steps` updates, or at the first θ_k or J(θ_k) that is not finite (kept as the last entry).
    θ [P] → ([θ_0 … θ_k] each [P], [J(θ_0) … J(θ_k)] floats)."""
    theta = theta.to(torch.float64).clone()
    grad = torch.func.grad(problem.objective)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    thetas, objectives = [theta.clone()], [float(problem.objective(theta))]
    for t in range(1, steps + 1):
        if not (torch.isfinite(theta).all() and math.isfinite(objectives[-1])):
            break
        g = grad(theta)
        if optimizer == "sgd":
            theta = theta + lr * g
        else:
            m = betas[0] * m + (1 - betas[0]) * g
            v = betas[1] * v + (1 - betas[1]) * g * g
            m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
            theta = theta + lr * m_hat / (torch.sqrt(v_hat) + eps)
        thetas.append(theta.clone())
        objectives.append(float(problem.objective(theta)) if torch.isfinite(theta).all() else math.nan)
    return thetas, objectives
