"""The noise scale and optimal SGD step of bench.noise_scale (McCandlish et al. 2018) against closed forms and a
simulation on a problem where the quadratic model is exact.

The problem: a one-step Gaussian bandit with the scale fixed, a ~ N(μ, σ²), reward −(a − c)², θ = [μ], so
J(μ) = −((μ − c)² + σ²) is exactly quadratic (H_J = −2) and an ascent step changes it by exactly

    J(μ + εĝ) − J(μ) = −2(μ − c) ε ĝ − ε² ĝ²,   E[·] = ε G² − ε² (G² + Var ĝ),   G = −2(μ − c).

REINFORCE without a baseline from N draws, d = μ − c, z ~ N(0, 1): one draw gives ĝ₁ = −(z/σ)(d + σz)², with
E ĝ₁ = −2d and E ĝ₁² = (d⁴ + 18 d²σ² + 15 σ⁴)/σ² (moments of z up to z⁶), so Σ_N = Var ĝ₁ / N. At d = −1, σ = 1:
G² = 4, Var ĝ₁ = 34 − 4 = 30, B_simple = N tr Σ_N / G² = 30/4 = 7.5, and since H_L = 2 is a multiple of the
identity B_noise = B_simple, ε_max = G²/(2G²) = 1/2, ε_opt(N) = 1/(2 + 15/N).

Statistical assertions use fixed seeds; each states its false-positive rate (the probability, over seeds, that it
fails for a correct implementation): a z-test at |z| ≤ Z = 4 has two-sided FPR 6e-5 under the normal approximation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.harness import measure
from bench.noise_scale import noise_scale
from envs import make_problem
from envs.bandits import GaussianBandit, GaussianBanditConfig
from envs.policies import ScalarGaussian
from envs.problem import Capability
from estimators import resolve_estimator

Z = 4.0  # two-sided normal FPR 6.3e-5 per assertion
ROW_COLUMNS = ("kind", "reps", "grad_norm_sq", "trace_sigma", "b_simple", "curvature", "trace_h_sigma", "b_noise",
               "eps_max", "eps_opt", "step_length", "model_applies", "nonfinite")


class FixedScalePolicy:
    """a ~ N(μ, σ²) with σ fixed, θ = [μ]."""

    def __init__(self, log_std: float):
        self.log_std = log_std
        self.inner = ScalarGaussian()

    def full(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([theta[0], torch.full_like(theta[0], self.log_std)])

    def log_prob(self, theta, obs, actions):
        return self.inner.log_prob(self.full(theta), obs, actions)

    def entropy(self, theta, obs):
        return self.inner.entropy(self.full(theta), obs)


class FixedScaleGaussian(GaussianBandit):
    """gaussian-bandit with s fixed: θ = [μ], J = −((μ − c)² + σ²), exactly quadratic."""

    theta_shape = (1,)
    theta_layout = "[μ]: the mean (log standard deviation fixed)"
    capabilities = frozenset({Capability.EXACT_GRADIENT, Capability.STOCHASTIC_POLICY})

    def __init__(self, target: float = 1.0, log_std: float = 0.0):
        super().__init__(GaussianBanditConfig(target=target))
        self.log_std = log_std
        self.policy = FixedScalePolicy(log_std)

    def default_theta(self):
        return torch.zeros(1, dtype=torch.float64)

    def parameter_name(self, index):
        return "μ"

    def objective(self, theta):
        return -((theta[0] - self.target) ** 2 + math.exp(2 * self.log_std))

    def exact_gradient(self, theta):
        return torch.stack([-2 * (theta.to(torch.float64)[0] - self.target)])

    def sample(self, theta, reps, batch_size, generator, group_size=1):
        full = torch.stack([theta[0], torch.full_like(theta[0], self.log_std)])
        return super().sample(full, reps, batch_size, generator, group_size)


def exact_variance(d: float, sigma: float) -> float:
    """Var ĝ₁ of one REINFORCE draw on FixedScaleGaussian (module docstring)."""
    return (d**4 + 18 * d**2 * sigma**2 + 15 * sigma**4) / sigma**2 - 4 * d**2


def exact_eps_opt(batch_size: int, d: float = -1.0, sigma: float = 1.0) -> float:
    g2 = 4 * d**2
    return g2 / (2 * g2 + 2 * exact_variance(d, sigma) / batch_size)


def test_closed_forms_of_the_fixed_scale_problem():
    """The closed forms above against the problem's own objective, gradient and autograd (no randomness)."""
    problem = FixedScaleGaussian()
    theta = problem.default_theta()
    assert float(problem.objective(theta)) == pytest.approx(-2.0)
    assert torch.func.grad(problem.objective)(theta).item() == pytest.approx(2.0)
    assert exact_variance(-1.0, 1.0) == 30.0
    assert exact_eps_opt(4) == pytest.approx(1 / 5.75)


def test_row_schema_and_types():
    problem = make_problem("gaussian-bandit", {})
    row = noise_scale(problem, resolve_estimator("reinforce", {}), None, 4, 20, 0).to_row()
    assert tuple(row) == ROW_COLUMNS
    assert row["kind"] == "noise_scale" and isinstance(row["model_applies"], bool)
    assert isinstance(row["reps"], int) and isinstance(row["nonfinite"], int)
    assert all(isinstance(row[k], float) for k in ROW_COLUMNS if k not in ("kind", "reps", "model_applies",
                                                                          "nonfinite"))


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_noise_scale_matches_the_hand_computation(batch_size):
    """On FixedScaleGaussian: the curvature, ε_max and H_L = 2I identities exactly; tr Σ_N against Var ĝ₁/N = 30/N
    and B_simple against 7.5 within Z standard errors of a sample variance (SE² = (m₄ − s⁴)/M from the same
    estimates' fourth central moment); ε_opt is then 1/(2 + 2 tr Σ_N / 4)·… exactly (a function of tr Σ_N).
    FPR ≈ 6e-5 per N (normal approximation to the sample variance; m₄ involves z¹² moments, so M is large)."""
    problem = FixedScaleGaussian()
    config = resolve_estimator("reinforce", {})
    reps, seed = 20_000, 100 + batch_size
    ns = noise_scale(problem, config, None, batch_size, reps, seed)
    estimates = measure(problem, "reinforce", batch_size, reps, seed, show_progress=False).estimates[:, 0]
    assert ns.nonfinite == 0 and ns.model_applies
    assert ns.grad_norm_sq == pytest.approx(4.0) and ns.curvature == pytest.approx(8.0)
    assert ns.eps_max == pytest.approx(0.5)
    assert ns.trace_h_sigma == pytest.approx(2 * ns.trace_sigma, rel=1e-10)
    assert ns.b_noise == pytest.approx(ns.b_simple, rel=1e-10)  # H_L ∝ I
    assert ns.eps_opt == pytest.approx(ns.eps_max / (1 + ns.b_noise / batch_size), rel=1e-12)
    assert ns.step_length == pytest.approx(ns.eps_opt * 2.0, rel=1e-12)
    assert ns.trace_sigma == pytest.approx(estimates.var(ddof=1), rel=1e-10)  # Σ_N of measure's own estimates
    centered = estimates - estimates.mean()
    se = math.sqrt((np.mean(centered**4) - np.mean(centered**2) ** 2) / reps)
    expected = exact_variance(-1.0, 1.0) / batch_size
    assert abs(ns.trace_sigma - expected) <= Z * se, (ns.trace_sigma, expected, se)
    assert abs(ns.b_simple - 7.5) <= Z * se * batch_size / 4, (ns.b_simple, se)


def one_step_improvement(problem, estimates: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """I_m(ε) = J(θ + ε ĝ_m) − J(θ) by the problem's objective, for every estimate m and step ε → [M, E]."""
    theta = problem.default_theta()
    j0 = float(problem.objective(theta))
    steps = theta[None, None, :] + torch.as_tensor(eps)[None, :, None] * torch.as_tensor(estimates)[:, None, :]
    values = torch.vmap(torch.vmap(problem.objective))(steps)
    return values.numpy() - j0


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_simulated_optimal_step_matches_eps_opt(batch_size):
    """The one-step optimal SGD step measured by simulation. M independent estimates ĝ_m at N (a seed of their
    own), the improvement I_m(ε) = J(θ + εĝ_m) − J(θ) evaluated by the objective at the grid ε_k = (0.25, 0.5, 1,
    1.5, 2) × ε_opt(N), and each I_m fitted by least squares as a_m ε + b_m ε² (I(0) = 0; the fit is exact to
    rounding since J is quadratic: asserted). The mean improvement ā ε + b̄ ε² peaks at ε̂ = −ā/(2b̄); by the delta
    method over the M i.i.d. pairs (a_m, b_m),

        SE(ε̂)² = (1/M) ∇f ᵀ Cov(a, b) ∇f,   f(a, b) = −a/(2b),   ∇f = (−1/(2b̄), ā/(2b̄²)).

    Asserted: |ε̂ − ε_opt(N)| ≤ Z·SE for the closed-form ε_opt(N) = 1/(2 + 15/N), and |ε̂ − ε̂_ns| ≤ Z·√(SE² +
    SE_ns²) for noise_scale's own estimate from an independent seed (SE_ns by the delta method through tr Σ_N:
    ε_opt = 4/(8 + 2 tr Σ_N), dε/dtr = −8/(8 + 2 tr)²); also that ε̂ lies strictly inside the grid and the
    empirical mean improvement at ε_opt beats the grid's ends. FPR ≈ 2 × 6e-5 per N (normal approximation)."""
    problem = FixedScaleGaussian()
    reps = 40_000
    estimates = measure(problem, "reinforce", batch_size, reps, 7_000 + batch_size, show_progress=False).estimates
    target = exact_eps_opt(batch_size)
    grid = np.array([0.25, 0.5, 1.0, 1.5, 2.0]) * target
    improvement = one_step_improvement(problem, estimates, grid)  # [M, E]
    design = np.stack([grid, grid**2], axis=1)  # [E, 2]
    coef, *_ = np.linalg.lstsq(design, improvement.T, rcond=None)  # [2, M]
    np.testing.assert_allclose(design @ coef, improvement.T, rtol=1e-9, atol=1e-9)  # exactly quadratic along steps
    a, b = coef
    a_bar, b_bar = a.mean(), b.mean()
    measured = -a_bar / (2 * b_bar)
    grad = np.array([-1 / (2 * b_bar), a_bar / (2 * b_bar**2)])
    se = math.sqrt(grad @ np.cov(np.stack([a, b])) @ grad / reps)
    assert grid[0] < measured < grid[-1]
    mean_curve = improvement.mean(0)
    assert mean_curve[2] > max(mean_curve[0], mean_curve[-1])
    assert abs(measured - target) <= Z * se, (measured, target, se)

    ns_reps = 20_000
    ns = noise_scale(problem, resolve_estimator("reinforce", {}), None, batch_size, ns_reps, 9_000 + batch_size)
    ns_estimates = measure(problem, "reinforce", batch_size, ns_reps, 9_000 + batch_size,
                           show_progress=False).estimates[:, 0]
    centered = ns_estimates - ns_estimates.mean()
    se_trace = math.sqrt((np.mean(centered**4) - np.mean(centered**2) ** 2) / ns_reps)
    se_ns = 8 / (8 + 2 * ns.trace_sigma) ** 2 * se_trace
    assert abs(measured - ns.eps_opt) <= Z * math.hypot(se, se_ns), (measured, ns.eps_opt, se, se_ns)


def softmax_curvature_at_uniform(probs: tuple[float, ...]) -> float:
    """GᵀH_L G at uniform logits by hand: with a_k = p_k − J, g_k = a_k/K and Σ_k g_k = 0 there,
    GᵀH_J G = Σ_k g_k² π_k a_k = Σ_k a_k³ / K³ (H_kj = δ_kj π_k a_k − π_k π_j a_k − π_k g_j), and H_L = −H_J."""
    p = np.asarray(probs, dtype=np.float64)
    a = p - p.mean()
    return float(-(a**3).sum() / len(p) ** 3)


@pytest.mark.parametrize("probs, applies", [((0.9, 0.4, 0.1), False), ((1.0, 0.7, 0.0), True)])
def test_softmax_bandit_sign_at_uniform(probs, applies):
    """The curvature of L = −J along G at uniform logits has the sign of −Σ_k (p_k − p̄)³: for the default arms
    (0.9, 0.4, 0.1), right-skewed, J is convex along G (GᵀH_L G = −0.00118 < 0) and the model does not apply (NaN
    ε's); for (1, 0.7, 0), left-skewed, it is concave (+0.00364) and it applies (at N = 64, where the noise term
    stays below the curvature). The curvature is exact (no randomness): FPR 0."""
    problem = make_problem("softmax-bandit", {"probs": list(probs)})
    ns = noise_scale(problem, resolve_estimator("reinforce", {"baseline": "rloo"}), None, 64, 400, 3)
    assert ns.curvature == pytest.approx(softmax_curvature_at_uniform(probs), rel=1e-10)
    assert ns.model_applies is applies
    assert math.isnan(ns.eps_opt) is not applies and math.isnan(ns.eps_max) is not applies


def test_softmax_bandit_b_simple_matches_hand_computation():
    """REINFORCE without baseline on the softmax bandit (0.9, 0.4, 0.1) at uniform logits, one pull a with
    reward r ~ Bernoulli(p_a): ĝ₁ = (e_a − π) r, r² = r, so E‖ĝ₁‖² = Σ_a π_a p_a ‖e_a − π‖² = (1/3)(2/3)(1.4) =
    0.3111…, ‖G‖² = Σ_k (p_k − J)²/9 = 0.036296…, tr Σ₁ = E‖ĝ₁‖² − ‖G‖², B_simple = tr Σ₁ / ‖G‖² = 7.571… at
    every N (i.i.d. mean). Asserted within Z SE of a sample trace (SE from the per-replicate ‖ĝ_m − ḡ‖²'s spread);
    FPR ≈ 6e-5 per N."""
    probs = np.array([0.9, 0.4, 0.1])
    pi = np.full(3, 1 / 3)
    grad = pi * (probs - pi @ probs)
    second = float(sum(pi[k] * probs[k] * np.sum((np.eye(3)[k] - pi) ** 2) for k in range(3)))
    trace_one = second - grad @ grad
    assert trace_one / (grad @ grad) == pytest.approx(7.5714, abs=1e-4)
    problem = make_problem("softmax-bandit", {})
    for batch_size, seed in ((1, 11), (8, 12)):
        reps = 20_000
        ns = noise_scale(problem, resolve_estimator("reinforce", {}), None, batch_size, reps, seed)
        estimates = measure(problem, "reinforce", batch_size, reps, seed, show_progress=False).estimates
        squared = ((estimates - estimates.mean(0)) ** 2).sum(1) * reps / (reps - 1)
        se = squared.std(ddof=1) / math.sqrt(reps)
        assert ns.grad_norm_sq == pytest.approx(float(grad @ grad), rel=1e-10)
        assert abs(ns.trace_sigma - trace_one / batch_size) <= Z * se, (ns.trace_sigma, trace_one / batch_size, se)
        assert abs(ns.b_simple - trace_one / (grad @ grad)) <= Z * se * batch_size / (grad @ grad)



def test_the_exact_gradient_path_climbs_to_the_asked_score_and_follows_the_gradient():
    """exact_path_point against an independent loop: on the softmax bandit plain gradient ascent with a tiny fixed
    step (1e-3: a fine Euler discretisation of the gradient flow) reaches s ≥ 0.5 at a θ whose displacement from θ₀
    agrees with the backtracking path's to cosine > 0.999 (both discretise the same flow; a path that took a wrong
    direction, e.g. a sign error or a Newton-like step, would not)."""
    from bench.noise_scale import PATH_RESOLUTION, exact_path_point

    problem = make_problem("softmax-bandit", {})
    theta0 = problem.default_theta()
    point = exact_path_point(problem, theta0, 0.5)
    assert point.reached and 0.5 <= point.score <= 0.5 + 2 * PATH_RESOLUTION
    start, best = float(problem.objective(theta0)), problem.optimal_objective()
    theta = theta0.clone()
    while (float(problem.objective(theta)) - start) / (best - start) < 0.5:
        theta = theta + 1e-3 * problem.exact_gradient(theta)
    a, b = (point.theta - theta0), (theta - theta0)
    assert float(a @ b / (a.norm() * b.norm())) > 0.999
    assert exact_path_point(problem, theta0, 0.0).steps == 0
