"""The deterministic policy gradient (DPG) on LQR with a deterministic linear policy u = μ_θ(x) = −Kx.

The critic Q̂_t is a `QuadraticActionValues` (Q_t(x, u) = zᵀ W_t z + c_t, z = [x, u]), either

    oracle   the exact Q_t of μ_θ (`Problem.action_values`, which LQR declares)
    fitted   Monte Carlo regression of the reward-to-go G_t on the quadratic features of (x_t, u_t),
             separately for each t (`critics.fit_values` on the pairs z), over `critic_samples`
             independent trajectories of the exploratory behaviour u = −Kx + σ_e ε (the problem's
             `exploratory_twin`) drawn once per measurement from the estimator's own random stream.

Why this data and this regression, and the bias they imply. The regression targets E[G_t | x_t, u_t]
= Q^β_t, the action value of the behaviour policy. In LQR, Gaussian exploration around the same K
changes only the constant of Q_t (the matrix P_t of V_t does not depend on σ), so Q^β_t and Q^μ_t
have the same quadratic part and the same ∇_u Q_t; and least squares in a class that contains
Q^β_t is unbiased given the design. So the fitted estimator's error is the critic's estimation error:
given its critic (one per measurement, shared by all M batches, as a practitioner's critic is) ĝ is
biased by Σ_t γ^t E[∇_θμᵀ (∇_u Q̂_t − ∇_u Q_t)], of order 1/√critic_samples and zero-mean over critic
draws (up to the 1e-8 relative ridge). With σ_e = 0 the actions are a linear function of the states,
∇_u Q is not identified by the data, and the ridge-regularised least squares returns the minimum-norm
solution, zero along the unidentified directions: biased at any sample count (at K = 0, ĝ ≡ 0). Hence the exploratory behaviour, as in Silver et al. 2014 (§4.2),
whose critic learns off-policy from a stochastic behaviour policy.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch

from envs.lqr import QuadraticActionValues
from envs.memory import check_bytes
from envs.policies import LinearDeterministic
from envs.problem import Batch, Capability, Problem
from envs.spec import Choice, Float, When, option, reuse
from envs.values import QuadraticBasis
from estimators.critics import CRITIC_SAMPLES, critic_bytes, fit_values
from estimators.registry import ESTIMATORS, Estimator, Prepared


def dpg(policy: LinearDeterministic, theta: torch.Tensor, batch: Batch, critic: QuadraticActionValues) -> torch.Tensor:
    """Deterministic policy gradient (Silver et al. 2014, Theorem 1; lecture notes 004), in its
    finite-horizon, time-indexed form, on the states of μ_θ's own trajectories:

        ĝ = (1/N) Σ_i Σ_t γ^t ∇_θ μ_θ(s_{i,t})ᵀ ∇_a Q̂_t(s_{i,t}, a)|_{a = μ_θ(s_{i,t})}

    Unbiased for ∇J with the exact Q_t: V_t(x) = Q_t(x, μ_θ(x)), and since the dynamics do not
    depend on θ, ∇_θ V_t(x) = ∇_θμ(x)ᵀ ∇_a Q_t(x, μ_θ(x)) + γ E[∇_θ V_{t+1}(x_{t+1}) | x_t = x];
    unrolled from J = E[V_0(x_0)] it gives ∇J = Σ_t γ^t E[∇_θμ(x_t)ᵀ ∇_a Q_t(x_t, μ_θ(x_t))], exactly.

    ∇_a Q̂_t is the critic's closed form; the sum Σ_{i,t} ∇_θμᵀ(γ^t ∇_a Q̂) of each replicate is one
    vector-Jacobian product of θ ↦ μ_θ(s) over its states (`torch.func.vjp`, mapped over replicates).
    batch [M, N, T] drawn from μ_θ → ĝ [M, P].
    """
    actions = policy.action(theta, batch.obs).detach()  # μ_θ(s) [M, N, T, du]
    action_gradient = critic.action_gradient(batch.obs, actions, torch.arange(batch.steps))  # [M, N, T, du]
    cotangent = (batch.discount * batch.mask)[..., None] * action_gradient  # [M, N, T, du]

    def pullback(obs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # one replicate [N, T, ...] → [P]
        _, vjp = torch.func.vjp(lambda th: policy.action(th, obs), theta)
        return vjp(weights)[0]

    return torch.func.vmap(pullback)(batch.obs, cotangent) / batch.batch_size


def _policy_kind(problem: Problem) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(problem.policy).__name__).lower()  # SoftmaxTabular → softmax-tabular


def exploratory_samples(problem: Problem, theta: torch.Tensor, exploration: float, reps: int, count: int,
                        generator: torch.Generator) -> Batch:
    """`reps` × `count` trajectories of the behaviour u = −Kx + σ_e ε (K from θ, σ_e = `exploration`): the
    problem's `exploratory_twin` sampled at its θ_b (σ_e = 0: the deterministic policy)."""
    behaviour, behaviour_theta = problem.exploratory_twin(theta, exploration)
    return behaviour.sample(behaviour_theta, reps, count, generator)


def fit_action_values(state_dim: int, action_dim: int, horizon: int, batch: Batch) -> list[QuadraticActionValues]:
    """One Q̂_t (t < H) per replicate of `batch` [M, N, T]: least squares of G_t on the quadratic
    features of z_t = [x_t, u_t] (the model class of the exact Q_t), one regression per t."""
    dx, du = state_dim, action_dim
    basis = QuadraticBasis(dx + du)
    pairs = replace(batch, obs=torch.cat([batch.obs, batch.actions], -1))  # regress on z, not on x alone
    fitted = fit_values(basis, horizon, pairs)  # weights [M, H + 1, F]
    every = QuadraticActionValues.from_basis_weights(basis, dx, fitted.weights[:, :horizon])
    return [QuadraticActionValues(dx, matrices, constants) for matrices, constants in zip(every.matrices,
                                                                                          every.constants)]


@ESTIMATORS.entry("dpg")
class Dpg(Estimator):
    critic: str = option(Choice(("oracle", "fitted")), "oracle",
                         "Q̂_t: the exact Q_t, or fitted on independent exploratory trajectories")
    exploration: float = option(Float(0.0), 1.0, "σ_e of the fitted critic's behaviour u = −Kx + σ_e ε",
                                only_if=When("critic", "fitted"))
    critic_samples: int = reuse(CRITIC_SAMPLES)

    function = staticmethod(dpg)
    doc = "deterministic policy gradient ∇_θμ(s)ᵀ ∇_a Q(s, a)|_{a=μ(s)} with an exact or fitted quadratic Q"
    bias_text = ("unbiased with critic=oracle; critic=fitted is biased by its critic's error in ∇_a Q "
                 "(O(1/√critic_samples); not identified at exploration=0)")
    requires = (Capability.DETERMINISTIC_POLICY, Capability.ACTION_VALUES)

    def unbiased(self, problem: Problem) -> bool:
        return self.critic == "oracle"

    def check(self, problem: Problem, batch_size: int) -> None:
        problem.require(Capability.DETERMINISTIC_POLICY, self.owner(),
                        because=f"its policy is {_policy_kind(problem)} (env lqr with policy=deterministic "
                                "has one)")
        super().check(problem, batch_size)
        if self.critic == "fitted":
            problem.require(Capability.EXPLORATORY_TWIN, self.owner(), because="on which critic=fitted is fitted")
            pairs = QuadraticBasis(problem.policy.state_dim + problem.policy.action_dim)  # the basis on z = [x, u]
            check_bytes(critic_bytes(problem, self.critic_samples, pairs.num_features),
                        f"estimator dpg with critic=fitted on {self.critic_samples} trajectories",
                        "critic_samples, state_dim or action_dim")

    def prepare(self, problem: Problem, theta: torch.Tensor, generator: torch.Generator) -> Prepared:
        exact = problem.action_values(theta)
        if self.critic == "oracle":
            return Prepared({"critic": exact}, info={"critic": "oracle"})
        dx, du = problem.policy.state_dim, problem.policy.action_dim
        batch = exploratory_samples(problem, theta, self.exploration, 1, self.critic_samples, generator)
        (fitted,) = fit_action_values(dx, du, problem.horizon, batch)
        gradient_rows = slice(dx, None)  # W_t[u, :]: the part of Q̂_t that ∇_u Q̂_t depends on
        error = torch.linalg.norm(fitted.matrices[:, gradient_rows] - exact.matrices[:, gradient_rows])
        return Prepared({"critic": fitted}, info={
            "critic": "fitted", "critic_samples": self.critic_samples, "exploration": self.exploration,
            # ‖Ŵ_u − W_u‖_F / ‖W_u‖_F over all t: the relative error of the fitted ∇_u Q̂
            "critic_gradient_error": float(error / torch.linalg.norm(exact.matrices[:, gradient_rows])),
        })
