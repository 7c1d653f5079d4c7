"""float32 against float64 on the same trajectories: the classic-control problems' default `dtype=float32`
(envs/control.py) changes an estimate by less than a bound derived from float32's unit roundoff, and that
change is far below the estimate's own standard error.

The setting: CartPole at its default θ (4 → 64 → 64 → 2 tanh, near-uniform policy), M = 64 batches of N = 32
episodes from one float32 rollout, REINFORCE with the leave-one-out baseline. The same Batch is estimated twice:
with its float32 observations (the float32 path) and with the observations cast to float64 (exact: float32
values are float64 values), so both see the same states, actions and weights.

The bound (`float32_error_bound`) is Higham's running-error analysis (Accuracy and Stability of Numerical
Algorithms, 2002, §3.1–3.5) carried through the packed backprop to first order in the unit roundoff u = 2⁻²⁴,
evaluated in float64 on the float64 values. γ_n = n u / (1 − n u). Per step, with absolute error bounds e:

    x = fl(obs):             e_x = u |x|
    pre = W h + b (n in):    e_pre = γ_{n+2} (|W| |h| + |b|) + |W| e_h      (+2: W rounded to float32, b added)
    h = 2σ(2 pre) − 1:       e_h = tanh'(pre) e_pre + 9u                     (σ to 4u, then 2σ − 1 rounded)
    z = W h + b:             e_z as pre
    d = e_a − softmax(z):    e_d = ½ max_j e_{z_j} + 7u                    (Σ_j |∂p_i/∂z_j| = 2 p_i (1 − p_i) ≤ ½;
                                                                           two actions: a − σ(z₁ − z₀), σ' ≤ ¼)
    δ_K = A d:               e_δ = |A| e_d + 2u |A| |d|                      (A rounded, then the product)
    g = Wᵀ δ (n out):        e_g = γ_{n+1} |W|ᵀ |δ| + |W|ᵀ e_δ
    δ' = g ⊙ (1 − h²):       e_δ' = e_g (1 − h²) + |g| (2 |h| e_h + 3u)
    ∂W = Σ_s δ_s h_sᵀ:       e = γ_{S+1} Σ_s |δ_s| |h_s|ᵀ + Σ_s (e_δ,s |h_s|ᵀ + |δ_s| e_h,sᵀ)   (S: alive steps)
    ∂b = Σ_s δ_s:            e = γ_S Σ_s |δ_s| + Σ_s e_δ,s

γ_n bounds a sum of n products in any order (so whatever blocking BLAS uses). The bound is a worst case: the
measured error is ~10³ below it (rounding errors mostly cancel), and the bound itself is ~10⁻³ of the
estimate's standard deviation (up to 0.1 on a few coordinates).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from envs import make_problem
from envs.problem import Batch
from envs.spec import ConfigError
from estimators.autodiff import weighted_score_per_replicate
from estimators.baselines import leave_one_out
from estimators.registry import Prepared, resolve_estimator
from estimators.returns import reward_to_go
from bench.sampling import make_generator

UNIT_ROUNDOFF = 2.0**-24  # float32
REPS, BATCH_SIZE = 64, 32
# Measured on this setting (docs/float32_error.png): error / bound ≤ 6e-3 (median 5e-4); error / σ ≤ 3.2e-5
# (median 2e-6), σ the standard deviation of one estimate's coordinate over the M batches; bound / σ median 2.5e-3,
# ≤ 0.1 (first-layer biases, whose per-step terms cancel most). Asserted: error ≤ bound everywhere (the derivation),
# and error / σ ≤ 1e-4, 3× the measured value; so the mean of M estimates moves by ≤ 1e-4·√M of its standard
# error (8e-4 at M = 64), far below what a measurement resolves.
MAX_ERROR_OVER_SE = 1e-4


def gamma(n: int | torch.Tensor) -> float | torch.Tensor:
    """Higham's γ_n = n u / (1 − n u) for float32."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def float32_error_bound(problem, theta: torch.Tensor, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
    """First-order bound on |ĝ_float32 − ĝ_float64| per replicate and coordinate of (1/N) Σ_s A_s ∇ log π(a_s|s_s)
    for a tanh `MLPCategorical` (module docstring), computed in float64. weights A [M, N, T] → [M, P]."""
    u = UNIT_ROUNDOFF
    policy = problem.policy
    assert policy.net.activation == "tanh"
    layers = [(w.abs(), w, b) for w, b in policy.net.layers(theta.to(torch.float64))]
    out = torch.empty(batch.reps, theta.numel(), dtype=torch.float64)
    for m in range(batch.reps):
        alive = batch.mask[m] > 0
        steps = int(alive.sum())
        h = batch.obs[m][alive].to(torch.float64)  # [S, O]
        hs, errors = [h], [u * h.abs()]
        for abs_w, w, b in layers:
            pre = h @ w.T + b
            e_pre = gamma(w.shape[1] + 2) * (h.abs() @ abs_w.T + b.abs()) + errors[-1] @ abs_w.T
            if len(hs) < len(layers):
                h = torch.tanh(pre)
                hs.append(h)
                errors.append((1 - h.square()) * e_pre + 9 * u)
        z, e_z = pre, e_pre  # the logits [S, A]
        d = torch.nn.functional.one_hot(batch.actions[m][alive], z.shape[1]).to(torch.float64) - torch.softmax(z, -1)
        e_d = 0.5 * e_z.amax(-1, keepdim=True) + 7 * u
        a = weights[m][alive][:, None]
        delta, e_delta = a * d, a.abs() * e_d + 2 * u * a.abs() * d.abs()
        start, pieces = 0, []
        for k in range(len(layers)):  # where each layer's entries start in θ
            n_out, n_in = layers[k][1].shape
            pieces.append((start, start + n_out * n_in))
            start += n_out * n_in + n_out
        for k in reversed(range(len(layers))):
            h, e_h = hs[k], errors[k]
            abs_w, w, _ = layers[k]
            weight_bound = (gamma(steps + 1) * delta.abs().T @ h.abs() + e_delta.T @ h.abs() + delta.abs().T @ e_h)
            bias_bound = gamma(steps) * delta.abs().sum(0) + e_delta.sum(0)
            begin, end = pieces[k]
            out[m, begin:end] = weight_bound.reshape(-1)
            out[m, end: end + w.shape[0]] = bias_bound
            if k > 0:
                g = delta @ w
                e_g = gamma(w.shape[0] + 1) * delta.abs() @ abs_w + e_delta @ abs_w
                slope = 1 - h.square()
                delta, e_delta = g * slope, e_g * slope + g.abs() * (2 * h.abs() * e_h + 3 * u)
    return out / batch.batch_size


def rloo_weights(batch: Batch) -> torch.Tensor:
    """REINFORCE's A = γ^t (G_t − mean_{j≠i} G_{j,t}) on alive steps, as `estimators.score.reinforce` forms it."""
    ret = reward_to_go(batch.rewards, batch.gamma)
    return batch.discount * batch.mask * (ret - leave_one_out(ret))


def float32_and_float64(seed: int = 0, reps: int = REPS, batch_size: int = BATCH_SIZE):
    """(problem, θ, the float32 batch, ĝ32 [M, P], ĝ64 [M, P], bound [M, P]) on one float32 rollout."""
    problem = make_problem("cartpole")
    assert problem.options["dtype"] == "float32"  # the default
    theta = problem.default_theta()
    batch = problem.sample(theta, reps, batch_size, make_generator(seed, 0))
    assert batch.obs.dtype == torch.float32
    as_float64 = dataclasses.replace(batch, obs=batch.obs.to(torch.float64), final_obs=batch.final_obs.to(torch.float64))
    estimator = resolve_estimator("reinforce", {"baseline": "rloo"})
    prepared = Prepared(estimator.kwargs())
    single = estimator.estimate(problem.policy, theta, batch, prepared)
    double = estimator.estimate(problem.policy, theta, as_float64, prepared)
    weights = rloo_weights(batch)
    # the weights the bound is evaluated on are the estimator's: same estimate to float64 rounding
    same = weighted_score_per_replicate(problem.policy, theta, as_float64, weights, "packed")
    torch.testing.assert_close(same, double, rtol=1e-10, atol=1e-10 * float(double.abs().max()))
    return problem, theta, batch, single, double, float32_error_bound(problem, theta, batch, weights)


def test_float32_estimates_are_within_the_derived_bound_and_far_below_the_standard_error():
    """The float32 estimate uses the rollout's kept float32 activations; the same with them recomputed in float32
    (the slow twin of that fast path) is held to the same bound."""
    problem, theta, batch, single, double, bound = float32_and_float64()
    assert batch.kept_for(problem.policy, theta) is not None
    assert single.dtype == double.dtype == torch.float64 and not torch.equal(single, double)  # float32 did run
    error = (single - double).abs()
    assert (error <= bound).all(), float((error / bound).max())
    estimator = resolve_estimator("reinforce", {"baseline": "rloo"})
    recomputed = estimator.estimate(problem.policy, theta, dataclasses.replace(batch, kept=None),
                                    Prepared(estimator.kwargs()))
    assert ((recomputed - double).abs() <= bound).all()
    sd = double.std(0)  # [P] one estimate's standard deviation per coordinate
    assert (sd > 0).all()
    assert float((error / sd).max()) <= MAX_ERROR_OVER_SE
    relative = (error.square().sum(1) / double.square().sum(1)).sqrt()  # ‖ĝ32 − ĝ64‖ / ‖ĝ64‖ per batch
    relative_bound = (bound.square().sum(1) / double.square().sum(1)).sqrt()
    assert (relative <= relative_bound).all() and float(relative_bound.max()) < 1e-2


def test_float64_option_and_exact_problems():
    """dtype=float64 gives a float64 rollout (the bit-level comparisons use it); exact problems have no dtype option
    (they stay float64) and refuse one by name."""
    problem = make_problem("cartpole", {"dtype": "float64", "hidden": "8", "horizon": 20})
    batch = problem.sample(problem.default_theta(), 2, 3, torch.Generator().manual_seed(0))
    assert batch.obs.dtype == batch.final_obs.dtype == torch.float64
    with pytest.raises(ConfigError, match=r"unknown option 'dtype' for env frozenlake; valid options: "):
        make_problem("frozenlake", {"dtype": "float32"})
    with pytest.raises(ConfigError, match="dtype"):
        make_problem("cartpole", {"dtype": "float16"})
