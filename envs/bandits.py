"""One-step problems with closed-form J and ∇J (H = 1, so γ plays no role).

`gaussian-bandit`: a ~ N(μ, σ²), σ = e^s, reward −(a − c)², θ = [μ, s].
    J = −((μ − c)² + σ²),   ∂J/∂μ = −2(μ − c),   ∂J/∂s = −2σ².
`softmax-bandit`: K arms, π = softmax(θ), reward ~ Bernoulli(p_a).
    J = Σ_k π_k p_k,   ∂J/∂θ_k = π_k (p_k − J).

Each declares its optimum J* = sup over all policies of J (`optimal_objective`), in closed form: 0 for the
Gaussian bandit (approached as σ → 0, not attained), max_k p_k for the softmax bandit, E_c[max_k p[c, k]] for
the contextual bandit (approached as the logits of the best arms → +∞).
"""

from __future__ import annotations

import numpy as np
import torch

from envs.policies import ScalarGaussian
from envs.problem import PROBLEMS, Batch, Capability, Problem, ProblemConfig
from envs.spec import Choice, ConfigError, Float, FloatList, Int, option
from envs.memory import check_bytes
from envs.tabular import TabularMDP, TabularProblem, table_bytes
from envs.values import TableBasis, ValueFunction

SETTLED_PROBABILITY = 0.9  # an arm holding this much of π has been settled on (`SoftmaxBandit.arm_outcome`)


def _one_step_batch(actions: torch.Tensor, rewards: torch.Tensor) -> Batch:
    """Batch of single-step episodes that all terminate after their one reward; actions [M, N, 1]."""
    reps, batch_size = rewards.shape[:2]
    return Batch(
        obs=torch.zeros(reps, batch_size, 1, dtype=torch.long),
        actions=actions,
        rewards=rewards,
        mask=torch.ones(reps, batch_size, 1, dtype=torch.float64),
        terminated=torch.ones(reps, batch_size, dtype=torch.bool),
        gamma=1.0,
        final_obs=torch.zeros(reps, batch_size, dtype=torch.long),
    )


class GaussianBandit(Problem):
    name = "gaussian-bandit"
    gamma = 1.0
    horizon = 1
    theta_shape = (2,)
    theta_layout = "[μ, s]: mean and log standard deviation"
    capabilities = frozenset({
        Capability.EXACT_GRADIENT, Capability.STOCHASTIC_POLICY, Capability.ORACLE_VALUES, Capability.VALUE_BASIS,
        Capability.ENTROPY_OBJECTIVE, Capability.FISHER, Capability.OPTIMUM,
    })

    def __init__(self, config: GaussianBanditConfig):
        self.config = config
        self.target = config.target
        self.policy = ScalarGaussian()

    def default_theta(self) -> torch.Tensor:
        return torch.zeros(2, dtype=torch.float64)

    def parameter_name(self, index: int) -> str:
        return ("μ", "s")[index]

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return -((theta[0] - self.target) ** 2 + torch.exp(2 * theta[1]))

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.to(torch.float64)
        return torch.stack([-2 * (theta[0] - self.target), -2 * torch.exp(2 * theta[1])])

    value_basis = TableBasis(1)  # one state: V_0 = J, V_1 = 0

    def oracle_values(self, theta: torch.Tensor) -> ValueFunction:
        value = self.objective(theta.to(torch.float64)).detach()
        return ValueFunction(self.value_basis, torch.stack([value, torch.zeros_like(value)])[:, None])

    def entropy_objective(self, theta: torch.Tensor) -> torch.Tensor:
        return self.policy.entropy(theta, torch.zeros(()))

    def fisher(self, theta: torch.Tensor) -> torch.Tensor:
        """E[ψψᵀ] with ψ = [z/σ, z² − 1]: diag(1/σ², 2)."""
        return torch.diag(torch.stack([torch.exp(-2 * theta[1]), torch.tensor(2.0, dtype=theta.dtype)])).detach()

    def optimal_objective(self) -> float:
        """J* = sup over all action distributions of E[−(a − c)²] = 0: any distribution has
        E[−(a − c)²] = −((E a − c)² + Var a) ≤ 0, and the point mass at c reaches 0. The Gaussian class
        has J = −((μ − c)² + e^{2s}) < 0 everywhere: it approaches 0 as μ → c, s → −∞ and never attains it."""
        self.require(Capability.OPTIMUM)
        return 0.0

    def sample(self, theta: torch.Tensor, reps: int, batch_size: int, generator: torch.Generator,
               group_size: int = 1) -> Batch:  # no state: a group is any G draws
        noise = torch.randn(reps, batch_size, 1, dtype=torch.float64, generator=generator)
        actions = theta[0].detach() + torch.exp(theta[1].detach()) * noise
        return _one_step_batch(actions, -((actions - self.target) ** 2))


class SoftmaxBandit(TabularProblem):
    """The one-state tabular MDP whose arm k pays 1 with probability p_k (rewards=bernoulli) or exactly p_k
    (rewards=deterministic, the bandit of Chung et al. 2021), so that the generic sampler and backward recursion
    apply; J and ∇J (the same for both) are overridden by their closed forms."""

    theta_layout = "softmax logits, one per arm"

    def __init__(self, config: SoftmaxBanditConfig):
        probs = config.probs
        arms = len(probs)
        if config.rewards == "deterministic":
            table = {0: {k: [(1.0, 0, p, True)] for k, p in enumerate(probs)}}
        else:
            table = {0: {k: [(p, 0, 1.0, True), (1.0 - p, 0, 0.0, True)] for k, p in enumerate(probs)}}
        super().__init__(config, TabularMDP.from_outcomes([1.0], table), 1.0, 1)
        self.arm_probs = torch.tensor(probs, dtype=torch.float64)
        self.theta_shape = (arms,)

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.softmax(theta, -1) @ self.arm_probs

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        pi = torch.softmax(theta.to(torch.float64), -1)
        return pi * (self.arm_probs - pi @ self.arm_probs)

    def arm_outcome(self, theta: torch.Tensor) -> str:
        """"sub-optimal" when an arm with p_k < max p holds ≥ SETTLED_PROBABILITY of π_θ (the commitment of Chung et
        al. 2021), "optimal" when a best arm does, else "undecided"."""
        pi = torch.softmax(torch.as_tensor(theta, dtype=torch.float64), -1)
        arm = int(pi.argmax())
        if float(pi[arm]) < SETTLED_PROBABILITY:
            return "undecided"
        return "optimal" if float(self.arm_probs[arm]) == float(self.arm_probs.max()) else "sub-optimal"

    def optimal_objective(self) -> float:
        """J* = max_k p_k (one step: the best arm; no distribution over arms does better). The softmax class
        approaches it as the best arm's logit → +∞ relative to the others and attains it only in that limit."""
        self.require(Capability.OPTIMUM)
        return float(self.arm_probs.max())


@PROBLEMS.entry("gaussian-bandit")
class GaussianBanditConfig(ProblemConfig):
    target: float = option(Float(), 1.0, "reward is −(a − target)²")

    doc = "one step, a ~ N(μ, exp(s)²), reward −(a − target)², θ = [μ, s] (default [0, 0])"

    def build(self) -> GaussianBandit:
        return GaussianBandit(self)


@PROBLEMS.entry("softmax-bandit")
class SoftmaxBanditConfig(ProblemConfig):
    probs: tuple[float, ...] = option(FloatList(0.0, 1.0, 2), (0.9, 0.4, 0.1),
                                      "mean reward p_k of each arm")
    rewards: str = option(Choice(("bernoulli", "deterministic")), "bernoulli",
                          "arm k pays 1 with probability p_k, or exactly p_k")

    doc = "one step, K arms paying Bernoulli(p_k) or p_k, softmax policy, θ = K logits (default zeros)"

    def build(self) -> SoftmaxBandit:
        return SoftmaxBandit(self)


# θ has one logit per (context, arm) and every measurement holds M × N_chunk per-trajectory gradients of that
# size: beyond 10⁶ even M = 2 batches of a few trajectories take gigabytes.
MAX_CONTEXT_LOGITS = 1_000_000


class ContextualBandit(TabularProblem):
    """C contexts drawn uniformly, K arms, reward ~ Bernoulli(p[c, k]), π(k|c) = softmax(θ[c, :]) —
    softmax-linear in one-hot context features. Closed forms:
        J = (1/C) Σ_c Σ_k π(k|c) p[c, k],   ∂J/∂θ[c, k] = (1/C) π(k|c) (p[c, k] − J_c),  J_c = Σ_k π(k|c) p[c, k].
    The contexts differ in reward scale, so a group baseline that divides by the group's standard
    deviation reweights contexts and changes the gradient's direction, not just its scale."""

    theta_layout = "softmax logits θ[context, arm]"

    def __init__(self, config: ContextualBanditConfig):
        contexts, arms = config.contexts, config.arms
        check_bytes(table_bytes(contexts, arms, 2, 1), f"env contextual-bandit with contexts × arms = {contexts} × "
                    f"{arms} = {contexts * arms} logits", "contexts or arms")
        rng = np.random.default_rng(config.reward_seed)
        # context c's success probabilities are scaled by (c + 1)/C: small and large reward scales
        probs = rng.uniform(size=(contexts, arms)) * (np.arange(1, contexts + 1)[:, None] / contexts)
        # the outcome tables of P[c][k] = [(p, c, 1, terminal), (1 − p, c, 0, terminal)], built as arrays
        mdp = TabularMDP(
            torch.full((contexts,), 1.0 / contexts, dtype=torch.float64),
            torch.as_tensor(np.stack([probs, 1.0 - probs], -1)),
            torch.arange(contexts)[:, None, None].expand(contexts, arms, 2).contiguous(),
            torch.tensor([1.0, 0.0], dtype=torch.float64).expand(contexts, arms, 2).contiguous(),
            torch.ones(contexts, arms, 2, dtype=torch.bool),
        )
        super().__init__(config, mdp, 1.0, 1)
        self.success = torch.as_tensor(probs)  # p [C, K]

    def objective(self, theta: torch.Tensor) -> torch.Tensor:
        return (self.policy.probs(theta) * self.success).sum(-1).mean()

    def exact_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        pi = self.policy.probs(theta.to(torch.float64))
        per_context = (pi * self.success).sum(-1, keepdim=True)
        return (pi * (self.success - per_context) / len(pi)).reshape(-1)

    def optimal_objective(self) -> float:
        """J* = E_c[max_k p[c, k]] = (1/C) Σ_c max_k p[c, k] under the uniform context distribution (one step:
        the best arm of each context). The per-context softmax class approaches it as each context's best logit
        → +∞ relative to the others, and attains it only in that limit."""
        self.require(Capability.OPTIMUM)
        return float(self.success.amax(-1).mean())


@PROBLEMS.entry("contextual-bandit")
class ContextualBanditConfig(ProblemConfig):
    contexts: int = option(Int(1, 10_000), 4, "number of contexts C, drawn uniformly")
    arms: int = option(Int(2, 1_000), 3, "number of arms K")
    reward_seed: int = option(Int(0), 0, "seed of the success probabilities p[c, k]")

    doc = ("one step, C uniform contexts × K Bernoulli arms, softmax policy per context, θ = [C, K] logits (zeros); "
           f"C × K ≤ {MAX_CONTEXT_LOGITS}")

    def validate(self) -> None:
        contexts, arms = self.contexts, self.arms
        if contexts * arms > MAX_CONTEXT_LOGITS:
            raise ConfigError(f"env contextual-bandit: contexts × arms = {contexts} × {arms} = {contexts * arms} logits, "
                              f"more than the {MAX_CONTEXT_LOGITS} allowed; lower contexts or arms")

    def build(self) -> ContextualBandit:
        return ContextualBandit(self)
