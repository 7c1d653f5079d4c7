"""The issue-13 job timed three ways in one run: M REINFORCE-RLOO gradient estimates, each from a batch of N whole
CartPole-v1 episodes at the seeded default θ (MLP 4 → 64 → 64 → 2 tanh, 4 610 parameters, γ = 0.99, reward-to-go,
the score at t weighted by γ^t: `estimators.score.reinforce` with baseline=rloo).

- "pgvar": `bench.harness.measure` end to end, what `pgvar measure --env cartpole --estimator reinforce --est-opt
  baseline=rloo --batch-size N --reps M` does (float32 rollout keeping its activations, the packed backprop, the
  metrics), the sampled reference loaded from a cache filled before timing (so it is excluded), its chunks of
  batches drawn by the default chunk workers (this process and a helper process on 2 cores, one torch thread each;
  the helper started once before the rounds, `bench.sampling.start_chunk_workers`, as a long session starts it);
- "pgvar 1 worker": the same on this process alone (the same numbers: the ratio is the workers' speed-up);
- "pgvar cold pool": the same with no helper started before each timed round (what one `pgvar measure` command
  does: it starts a helper only if the job left after its first chunk would outlast the helper's start-up,
  ≈ 1.5 s of importing torch, and otherwise draws every chunk itself);
- "cleanrl": the loop of CleanRL-style code: `gymnasium.vector.SyncVectorEnv` of 8 CartPole-v1, the policy (a
  torch.nn.Sequential in float32) called on the 8 observations every step, episodes taken in the order they start
  (a lane idles once N episodes were started, so every batch holds N whole episodes, none length-biased), then one
  backward of the surrogate Σ_i Σ_t A_{i,t} log π(a|s) / N per batch;
- "policy kernels": not a way to compute the estimates but the floor under any torch one on this CPU: the policy's
  unavoidable kernels alone, on one thread, for as many rows as the job has env steps, in blocks of KERNEL_ROWS —
  the forward pass (3 addmm, 2 tanh as 2σ(2x) − 1 like pgvar's, the two-action sigmoid and comparison) and the backward of one per-batch
  gradient (the output delta, 2 back-propagated deltas, 3 weight and bias gradients) — with no env step, no
  bookkeeping and no per-step op overhead ("pgvar 1 worker" / "policy kernels" is how far pgvar is above it);
- "competent": what a user who knows gymnasium's vector API writes: `gymnasium.make_vec("CartPole-v1", num_envs=L,
  vectorization_mode="vector_entry_point")` (numpy-vectorised CartPole) with one lane per episode, the float32
  policy batched over the L lanes every step until all have ended, then one surrogate backward per batch.

All three compute the same estimates (in distribution): their mean gradients must agree with pgvar's within noise
(`agreement_threshold`: ‖ḡ_way − ḡ_pgvar‖² against the quantile of its distribution under "the same estimator",
from the covariance of pgvar's M estimates; the cosine is recorded as `extra_info["cosine_to_pgvar"]`).
extra_info["reps"] is the number of env steps of the
batches, so `ratios.py`'s per-replicate ratios are per env step: "cleanrl / pgvar" and "competent / pgvar" are the
speed-ups. The slow ways run fewer batches (ratios are per env step). Runtime ≈ 1–2 minutes.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from bench.harness import measure
from bench.reference import ReferenceConfig
from bench.sampling import close_pools, start_chunk_workers
from envs import make_problem
from estimators.baselines import leave_one_out
from estimators.returns import reward_to_go

# group → (N, M of pgvar and competent, M of cleanrl)
JOBS = {"CartPole job N=32 M=500": (32, 500, 16), "CartPole job N=1024 M=16 (B=16384)": (1024, 16, 1)}
LANES = 1024  # competent: episodes stepped at once by make_vec
KERNEL_ROWS = 8192  # policy kernels: rows per block (the packed backprop's chunk)
CLEANRL_ENVS = 8
# The false-positive rate of one way's agreement check (`agreement_threshold`), of 4 checks per run.
AGREEMENT_ALPHA = 1e-3
ESTIMATES: dict[str, np.ndarray] = {}  # group → pgvar's estimates [M, P], for the others' agreement


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    """The problem, and a reference config whose (small) reference is computed now, outside the timings. Every way
    runs on one torch thread: on this shared 2-core machine intra-op threads made the batched policy of "competent"
    30× slower (measured 3.3k vs ~120k env steps/s beside other jobs), which would flatter pgvar."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield from _cartpole(tmp_path_factory)
    torch.set_num_threads(threads)


def _cartpole(tmp_path_factory):
    problem = make_problem("cartpole")
    reference = ReferenceConfig("sampled", 4096, 64, seed=0, cache_dir=str(tmp_path_factory.mktemp("references")))
    measure(problem, "reinforce", 4, 2, 0, estimator_options={"baseline": "rloo"}, show_progress=False,
            reference_config=reference)
    yield problem, reference


def torch_policy(problem) -> torch.nn.Sequential:
    """The default θ as the torch.nn.Sequential a user would write, in float32."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 2))
    torch.nn.utils.vector_to_parameters(problem.default_theta().float(), net.parameters())
    return net


def surrogate_gradient(net: torch.nn.Sequential, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                       mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """One backward of the REINFORCE-RLOO surrogate of one batch: obs [N, T, 4], actions [N, T], rewards and mask
    [N, T] → ĝ [P] (float64)."""
    ret = reward_to_go(rewards.double(), gamma)
    weights = (gamma ** torch.arange(ret.shape[1], dtype=torch.float64)) * mask * (ret - leave_one_out(ret[None])[0])
    log_pi = torch.log_softmax(net(obs), -1).gather(-1, actions[..., None])[..., 0]
    loss = (weights.float() * log_pi).sum() / obs.shape[0]
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).double()


def cleanrl_job(problem, batch_size: int, reps: int) -> tuple[np.ndarray, int]:
    """reps batches of batch_size whole episodes from SyncVectorEnv(8), policy per step → (mean ĝ [P], env steps)."""
    net = torch_policy(problem)
    envs = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("CartPole-v1") for _ in range(CLEANRL_ENVS)],
                                          autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    generator = torch.Generator().manual_seed(1)
    obs, _ = envs.reset(seed=1)
    estimates, env_steps = [], 0
    for _ in range(reps):
        started = CLEANRL_ENVS
        running: list[list] = [[] for _ in range(CLEANRL_ENVS)]
        active = [True] * CLEANRL_ENVS
        episodes: list[list] = []
        while len(episodes) < batch_size:
            obs_t = torch.as_tensor(obs)
            with torch.no_grad():
                probs = torch.softmax(net(obs_t), -1)
            actions = torch.multinomial(probs, 1, generator=generator)[:, 0]
            obs, reward, terminated, truncated, _ = envs.step(actions.numpy())
            for lane in range(CLEANRL_ENVS):
                if not active[lane]:
                    continue
                running[lane].append((obs_t[lane], int(actions[lane]), float(reward[lane])))
                if terminated[lane] or truncated[lane]:
                    episodes.append(running[lane])
                    running[lane] = []
                    active[lane] = started < batch_size
                    started += active[lane]
        lengths = [len(e) for e in episodes]
        steps = max(lengths)
        obs_b = torch.zeros(batch_size, steps, 4)
        actions_b = torch.zeros(batch_size, steps, dtype=torch.long)
        rewards_b = torch.zeros(batch_size, steps, dtype=torch.float64)
        mask_b = torch.zeros(batch_size, steps, dtype=torch.float64)
        for i, episode in enumerate(episodes):
            obs_b[i, :len(episode)] = torch.stack([o for o, _, _ in episode])
            actions_b[i, :len(episode)] = torch.tensor([a for _, a, _ in episode])
            rewards_b[i, :len(episode)] = torch.tensor([r for _, _, r in episode])
            mask_b[i, :len(episode)] = 1.0
        estimates.append(surrogate_gradient(net, obs_b, actions_b, rewards_b, mask_b, problem.gamma))
        env_steps += sum(lengths)
        obs, _ = envs.reset(seed=int(torch.randint(2**31, (), generator=generator)))  # the next batch starts fresh
    envs.close()
    return torch.stack(estimates).mean(0).numpy(), env_steps


def competent_job(problem, batch_size: int, reps: int) -> tuple[np.ndarray, int]:
    """reps batches of batch_size episodes, LANES episodes at a time in make_vec's numpy CartPole, the policy
    batched over all lanes every step → (mean ĝ [P], env steps)."""
    net = torch_policy(problem)
    lanes = max(LANES // batch_size, 1) * batch_size
    envs = gymnasium.make_vec("CartPole-v1", num_envs=lanes, vectorization_mode="vector_entry_point")
    generator = torch.Generator().manual_seed(2)
    estimates, env_steps, seed = [], 0, 2
    while len(estimates) < reps:
        obs, _ = envs.reset(seed=seed)
        seed += lanes
        alive = np.ones(lanes, dtype=bool)
        observations, actions, rewards, masks = [], [], [], []
        while alive.any():
            obs_t = torch.from_numpy(obs)
            with torch.no_grad():
                probs = torch.softmax(net(obs_t), -1)
            action = torch.multinomial(probs, 1, generator=generator)[:, 0]
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            observations.append(obs_t)
            actions.append(action)
            rewards.append(torch.from_numpy(reward * alive))
            masks.append(torch.from_numpy(alive.astype(np.float64)))
            alive = alive & ~(terminated | truncated)
        obs_l, actions_l = torch.stack(observations, 1), torch.stack(actions, 1)  # [L, T, …]
        rewards_l, mask_l = torch.stack(rewards, 1).double(), torch.stack(masks, 1)
        env_steps += int(mask_l.sum())
        for start in range(0, lanes, batch_size):
            if len(estimates) == reps:
                break
            rows = slice(start, start + batch_size)
            estimates.append(surrogate_gradient(net, obs_l[rows], actions_l[rows], rewards_l[rows], mask_l[rows],
                                                problem.gamma))
            if len(estimates) == reps and start + batch_size < lanes:
                env_steps -= int(mask_l[start + batch_size:].sum())  # lanes whose batch was not needed
    envs.close()
    return torch.stack(estimates).mean(0).numpy(), env_steps


def pgvar_job(problem, reference: ReferenceConfig, batch_size: int, reps: int,
              workers: int | None = None) -> tuple[np.ndarray, int]:
    """→ (the estimates [M, P], env steps)."""
    result = measure(problem, "reinforce", batch_size, reps, 0, estimator_options={"baseline": "rloo"},
                     show_progress=False, reference_config=reference, workers=workers)
    assert result.reference.cached and result.metrics.reps_used == reps
    return result.estimates, result.env_steps


def pgvar_cold_job(problem, reference: ReferenceConfig, batch_size: int, reps: int) -> tuple[np.ndarray, int]:
    """`pgvar_job` with no helper pool started before it."""
    close_pools(wait=True)
    return pgvar_job(problem, reference, batch_size, reps)


def pgvar_warm_job(problem, reference: ReferenceConfig, batch_size: int, reps: int) -> tuple[np.ndarray, int]:
    """`pgvar_job` with the helper pool started (outside the timing after the warm-up round: it is started once)."""
    start_chunk_workers()
    return pgvar_job(problem, reference, batch_size, reps)


PGVAR = {"pgvar": pgvar_warm_job, "pgvar 1 worker": lambda *args: pgvar_job(*args, workers=1),
         "pgvar cold pool": pgvar_cold_job}


def policy_kernels_job(problem, rows: int) -> None:
    """The float32 forward and per-batch backward kernels of the 4-64-64-2 tanh policy over `rows` rows, in blocks of
    KERNEL_ROWS (inputs are random: the kernels' cost does not depend on the values)."""
    generator = torch.Generator().manual_seed(3)
    (w1, b1), (w2, b2), (w3, b3) = [(layer.weight.detach().T.contiguous(), layer.bias.detach())
                                    for layer in torch_policy(problem)[::2]]
    x = torch.randn(KERNEL_ROWS, 4, generator=generator)
    uniform = torch.rand(KERNEL_ROWS, generator=generator)
    weight = torch.randn(KERNEL_ROWS, 1, generator=generator)
    for start in range(0, rows, KERNEL_ROWS):
        n = min(KERNEL_ROWS, rows - start)
        xs, us, ws = x[:n], uniform[:n], weight[:n]
        h1 = torch.addmm(b1, xs, w1).mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh = 2σ(2x) − 1: 7× faster than tanh here
        h2 = torch.addmm(b2, h1, w2).mul_(2).sigmoid_().mul_(2).sub_(1)
        z = torch.addmm(b3, h2, w3)
        p1 = torch.sigmoid(z[:, 1] - z[:, 0])
        action = us < p1
        d1 = (action.float() - p1)[:, None] * ws  # ∂ log π / ∂z₁ = a − p₁ = −∂ log π / ∂z₀, times the weight
        dz = torch.cat([-d1, d1], 1)
        grads = [h2.T @ dz, dz.sum(0)]
        delta2 = (dz @ w3.T) * (1 - h2 * h2)
        grads += [h1.T @ delta2, delta2.sum(0)]
        delta1 = (delta2 @ w2.T) * (1 - h1 * h1)
        grads += [xs.T @ delta1, delta1.sum(0)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def agreement_threshold(estimates: np.ndarray, way_batches: int) -> float:
    """The 1 − AGREEMENT_ALPHA quantile of ‖ḡ_way − ḡ_pgvar‖² when both are means of independent batches of one
    estimator: ḡ_pgvar of pgvar's M `estimates` [M, P], ḡ_way of `way_batches`. Their difference is then ≈ N(0, C),
    C = Σ (1/M + 1/K) with Σ the per-batch covariance (CLT: each mean is over ≥ 512 episodes), so ‖d‖² = Σ_i λ_i χ²₁
    over C's eigenvalues, approximated by c·χ²_ν with the same mean and variance (Satterthwaite; Box 1954):
    c = Σλ²/Σλ, ν = (Σλ)²/Σλ². Σ's eigenvalues are those of the M × M Gram matrix of the centred estimates over
    M − 1; estimated from M = 16 batches at N = 1024 they are few, so ν is small and the threshold generous there."""
    from scipy import stats

    centred = estimates - estimates.mean(0)
    eigenvalues = np.linalg.eigvalsh(centred @ centred.T) / (len(estimates) - 1) * (1 / len(estimates) + 1 / way_batches)
    eigenvalues = eigenvalues[eigenvalues > 0]
    scale = (eigenvalues**2).sum() / eigenvalues.sum()
    dof = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    return float(scale * stats.chi2.ppf(1 - AGREEMENT_ALPHA, dof))


@pytest.mark.parametrize("group", list(JOBS))
@pytest.mark.parametrize("way", [*PGVAR, "competent", "cleanrl"])
def test_cartpole_job(benchmark, cartpole, group, way):
    problem, reference = cartpole
    batch_size, reps, cleanrl_reps = JOBS[group]
    benchmark.group = group
    if way in PGVAR:
        estimates, env_steps = benchmark.pedantic(PGVAR[way], args=(problem, reference, batch_size, reps), rounds=3,
                                                  iterations=1, warmup_rounds=1)
        if group in ESTIMATES:  # every pgvar way computes the same numbers
            assert np.array_equal(estimates, ESTIMATES[group])
        ESTIMATES[group] = estimates
    else:
        job, job_reps = (competent_job, reps) if way == "competent" else (cleanrl_job, cleanrl_reps)
        mean, env_steps = benchmark.pedantic(job, args=(problem, batch_size, job_reps), rounds=2, iterations=1)
        # the slow ways' first round is their warm-up too: same seeds every round, so the same work
        if group not in ESTIMATES:
            ESTIMATES[group] = pgvar_job(problem, reference, batch_size, reps)[0]
        pgvar_mean = ESTIMATES[group].mean(0)
        distance, threshold = float(((mean - pgvar_mean) ** 2).sum()), agreement_threshold(ESTIMATES[group], job_reps)
        benchmark.extra_info.update(cosine_to_pgvar=cosine(mean, pgvar_mean), squared_distance_to_pgvar=distance,
                                    agreement_threshold=threshold)
        assert distance <= threshold, f"{way}'s mean gradient differs from pgvar's beyond noise"
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(role=way, reps=env_steps, env_steps_per_second=env_steps / median)


@pytest.mark.parametrize("group", list(JOBS))
def test_policy_kernels_floor(benchmark, cartpole, group):
    """The "policy kernels" floor for as many rows as pgvar's job has env steps (same seeds: the same count)."""
    problem, reference = cartpole
    batch_size, reps, _ = JOBS[group]
    rows = pgvar_job(problem, reference, batch_size, reps, workers=1)[1]
    benchmark.group = group
    benchmark.pedantic(policy_kernels_job, args=(problem, rows), rounds=3, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(role="policy kernels", reps=rows, env_steps_per_second=rows / median)
