"""Policy classes, pure functions of a flat θ [P]: a stochastic one is `log_prob(θ, obs, actions)`,
a deterministic one `action(θ, obs)`."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from envs.threads import single_thread


@dataclass(frozen=True)
class SoftmaxTabular:
    """π_θ(a|s) = softmax(θ[s, :])_a with θ the [S, A] logits flattened row-major.

    A bandit is the one-state case (S = 1, obs all zeros).
    """

    num_states: int
    num_actions: int

    def probs(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → π [S, A]."""
        return torch.softmax(theta.reshape(self.num_states, self.num_actions), dim=-1)

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [...] long, actions [...] long → log π(a|s) [...].

        Normalises only the visited rows when there are fewer visits than states (one trajectory of
        taxi: 50 visits, 500 states), else the whole table once; both are the same row-wise softmax."""
        logits = theta.reshape(self.num_states, self.num_actions)
        if obs.numel() < self.num_states:
            return torch.log_softmax(logits[obs], dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return torch.log_softmax(logits, dim=-1)[obs, actions]

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [...] long → H(π(·|s)) = −Σ_a π log π [...]."""
        log_pi = torch.log_softmax(theta.reshape(self.num_states, self.num_actions), dim=-1)[obs]
        return -(log_pi.exp() * log_pi).sum(-1)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_GAUSSIAN_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)  # of N(0, 1)


@dataclass(frozen=True)
class ScalarGaussian:
    """a ~ N(μ, exp(s)²), θ = [μ, s]; the observation is ignored (a bandit)."""

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [2], actions [...] float → log N(a; μ, e^{2s}) [...]."""
        mean, log_std = theta[0], theta[1]
        z = (actions - mean) * torch.exp(-log_std)
        return -0.5 * z * z - log_std - _HALF_LOG_2PI

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """H = s + ½ log(2πe), the same at every obs [...] → [...]."""
        return (theta[1] + _GAUSSIAN_ENTROPY).expand(obs.shape)


@dataclass(frozen=True)
class LinearGaussian:
    """u = −K x + σ ε, ε ~ N(0, I), θ = [K (action_dim × state_dim, row-major), log σ]."""

    state_dim: int
    action_dim: int

    def gain(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → K [action_dim, state_dim]."""
        return theta[: self.action_dim * self.state_dim].reshape(self.action_dim, self.state_dim)

    def action_variance(self, theta: torch.Tensor) -> torch.Tensor:
        """σ² (scalar) of the action noise."""
        return torch.exp(2 * theta[-1])

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs x [..., state_dim], actions u [..., action_dim] → log π(u|x) [...]."""
        log_std = theta[-1]
        z = (actions + obs @ self.gain(theta).T) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """H = action_dim · (log σ + ½ log(2πe)), the same at every obs [..., state_dim] → [...]."""
        return (self.action_dim * (theta[-1] + _GAUSSIAN_ENTROPY)).expand(obs.shape[:-1])


@dataclass(frozen=True)
class LinearDeterministic:
    """u = μ_θ(x) = −K x, θ = K (action_dim × state_dim, row-major). No noise, so no log π: the
    score-function estimators do not apply, the deterministic policy gradient does."""

    state_dim: int
    action_dim: int

    def gain(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → K [action_dim, state_dim]."""
        return theta.reshape(self.action_dim, self.state_dim)

    def action_variance(self, theta: torch.Tensor) -> torch.Tensor:
        """σ² = 0: the σ → 0 limit of `LinearGaussian`, so the LQR recursions serve both."""
        return theta.new_zeros(())

    def action(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs x [..., state_dim] → μ_θ(x) = −K x [..., action_dim], differentiable in θ."""
        return -obs @ self.gain(theta).T


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh x = 2σ(2x) − 1 (equal to rounding, ~2e-16): float64 sigmoid costs about half of torch.tanh
    (measured 3.1 vs 5.7 ns per element), and the rollouts spend most of their policy time here."""
    return 2 * torch.sigmoid(2 * x) - 1


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0); a function of this module rather than `torch.relu` itself, so that the registry of options is
    built without importing torch (`pgvar list`)."""
    return torch.relu(x)


ACTIVATIONS = {"tanh": tanh, "relu": relu}
# The factor folded into a hidden layer's W and b for `activate_scaled_`: tanh(y) = 2σ(2y) − 1, an exact scaling.
ACTIVATION_SCALES = {"tanh": 2.0, "relu": 1.0}


def activate_scaled_(name: str, x: torch.Tensor) -> torch.Tensor:
    """The activation `name`, in place, of x = ACTIVATION_SCALES[name] × the pre-activation (no autograd): tanh as
    2σ(x) − 1, half the cost of torch.tanh in float64 (3.0 vs 6.2 ns per element on one core)."""
    if name == "tanh":
        return torch.sigmoid_(x).mul_(2.0).sub_(1.0)
    return torch.relu_(x)


@dataclass(frozen=True)
class MLP:
    """f_θ: obs_dim → hidden[0] → … → hidden[-1] → out_dim, `activation` (tanh | relu) after every
    layer but the last.

    Layout of θ [P]: for each layer from the input, W [out, in] row-major then b [out] — the order of
    `torch.nn.Sequential(Linear, Tanh, …, Linear).parameters()`, so `torch.nn.utils.parameters_to_vector`
    and `vector_to_parameters` convert between the two. The forward pass is a pure function of θ
    (`torch.func` applies).
    """

    obs_dim: int
    hidden: tuple[int, ...]
    out_dim: int
    activation: str = "tanh"

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """(in, out) of each layer, from the input."""
        widths = (self.obs_dim, *self.hidden, self.out_dim)
        return list(itertools.pairwise(widths))

    @property
    def num_params(self) -> int:
        return sum(n_out * n_in + n_out for n_in, n_out in self.layer_sizes)

    def layers(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """θ [≥ num_params] → [(W [out, in], b [out])] per layer, views of θ's first num_params entries."""
        out, start = [], 0
        for n_in, n_out in self.layer_sizes:
            weight = theta[start: start + n_out * n_in].reshape(n_out, n_in)
            start += n_out * n_in
            out.append((weight, theta[start: start + n_out]))
            start += n_out
        return out

    def __call__(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim] → f_θ(s) [..., out_dim], computed in θ's dtype (float32 observations of a
        float32 rollout are exact in float64)."""
        *hidden_layers, (weight, bias) = self.layers(theta)
        activation = ACTIVATIONS[self.activation]
        h = obs.to(theta.dtype)
        for w, b in hidden_layers:
            h = activation(torch.nn.functional.linear(h, w, b))
        return torch.nn.functional.linear(h, weight, bias)

    def scaled_layers(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """θ [P] → [(W, b)] detached, the hidden layers × ACTIVATION_SCALES[activation] (for `activations`)."""
        scale = ACTIVATION_SCALES[self.activation]
        *hidden_layers, output = [(w.detach(), b.detach()) for w, b in self.layers(theta)]
        return [(w * scale, b * scale) for w, b in hidden_layers] + [output]

    def activations(self, layers: list[tuple[torch.Tensor, torch.Tensor]], obs: torch.Tensor) -> list[torch.Tensor]:
        """The forward pass without autograd, keeping what a backward pass needs: layers = `scaled_layers(θ)`,
        obs [R, obs_dim] → [h_0 = obs, h_1, …, h_{K−1}, z = f_θ(s)], each [R, width], in the layers' dtype. Equal to
        `__call__` to rounding; the rollouts (envs/classic.py) and the packed backprop (estimators/mlp_backprop.py)
        share it."""
        out = [obs.to(layers[-1][0].dtype)]
        for w, b in layers[:-1]:
            out.append(activate_scaled_(self.activation, torch.addmm(b, out[-1], w.T)))
        w, b = layers[-1]
        out.append(torch.addmm(b, out[-1], w.T))
        return out

    def init_weights(self, theta: torch.Tensor, generator: torch.Generator) -> None:
        """Fill θ's layers in place as PPO implementations initialise a policy network: orthogonal weights
        with gain √2 on the hidden layers and 0.01 on the output layer (a near-uniform initial policy),
        zero biases (Engstrom et al. 2020, "Implementation Matters in Deep RL"; Huang et al. 2022, "The
        37 Implementation Details of PPO")."""
        layers = self.layers(theta)
        with single_thread():  # the QR's last bits depend on the thread count: θ must not
            for k, (weight, bias) in enumerate(layers):
                gain = 0.01 if k == len(layers) - 1 else math.sqrt(2)
                torch.nn.init.orthogonal_(weight, gain=gain, generator=generator)
                bias.zero_()


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """probs [B, A], uniforms u [B] → a = #{k < A − 1 : u·CDF_{A−1} ≥ CDF_k} [B] long (the CDF's last entry rescales
    u, so rounding in Σπ cannot make a = A)."""
    cdf = torch.cumsum(probs, dim=-1)
    return (u[:, None] * cdf[:, -1:] >= cdf[:, :-1]).sum(-1)


@dataclass(frozen=True)
class MLPCategorical:
    """π_θ(·|s) = softmax(f_θ(s)) over num_actions actions, f_θ an `MLP` obs_dim → hidden → num_actions
    (θ in `MLP`'s layout, torch.nn.Sequential order)."""

    obs_dim: int
    hidden: tuple[int, ...]
    num_actions: int
    activation: str = "tanh"

    @property
    def net(self) -> MLP:
        return MLP(self.obs_dim, self.hidden, self.num_actions, self.activation)

    @property
    def num_params(self) -> int:
        return self.net.num_params

    def logits(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim] → f_θ(s) [..., num_actions]."""
        return self.net(theta, obs)

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim], actions [...] long → log π(a|s) [...]."""
        log_pi = torch.log_softmax(self.logits(theta, obs), dim=-1)
        return log_pi.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim] → H(π(·|s)) = −Σ_a π log π [...]."""
        log_pi = torch.log_softmax(self.logits(theta, obs), dim=-1)
        return -(log_pi.exp() * log_pi).sum(-1)

    def sample(self, theta: torch.Tensor, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """θ [P], obs [B, obs_dim] → a ~ π_θ(·|s) [B] long (`sample_logits`)."""
        return self.sample_logits(self.logits(theta, obs), generator)

    def sample_logits(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """logits z [B, A] → a ~ softmax(z) [B] long, one uniform u per row (`inverse_cdf`); for two actions by one
        comparison, a = 1 iff u ≥ π(0|s) = σ(z₀ − z₁), the same draw to rounding."""
        u = torch.rand(logits.shape[0], dtype=logits.dtype, generator=generator)
        if logits.shape[1] == 2:
            return (u >= torch.sigmoid_(logits[:, 0] - logits[:, 1])).long()
        return inverse_cdf(torch.softmax(logits, dim=-1), u)

    def init_theta(self, generator: torch.Generator) -> torch.Tensor:
        """θ [P] float64 by `MLP.init_weights` (near-uniform initial policy)."""
        theta = torch.zeros(self.num_params, dtype=torch.float64)
        self.net.init_weights(theta, generator)
        return theta


@dataclass(frozen=True)
class MLPGaussian:
    """π_θ(·|s) = N(f_θ(s), diag(exp(2ℓ))), f_θ an `MLP` obs_dim → hidden → action_dim and ℓ [action_dim]
    a state-independent log standard deviation (the continuous-control policy of PPO implementations).

    Layout of θ [P]: the MLP's parameters (torch.nn.Sequential order), then ℓ."""

    obs_dim: int
    hidden: tuple[int, ...]
    action_dim: int
    activation: str = "tanh"

    @property
    def net(self) -> MLP:
        return MLP(self.obs_dim, self.hidden, self.action_dim, self.activation)

    @property
    def num_params(self) -> int:
        return self.net.num_params + self.action_dim

    def mean(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim] → f_θ(s) [..., action_dim]."""
        return self.net(theta, obs)

    def log_std(self, theta: torch.Tensor) -> torch.Tensor:
        """θ [P] → ℓ [action_dim]."""
        return theta[-self.action_dim:]

    def log_prob(self, theta: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """θ [P], obs [..., obs_dim], actions [..., action_dim] → log π(a|s) [...]."""
        log_std = self.log_std(theta)
        z = (actions - self.mean(theta, obs)) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """H = Σ_i (ℓ_i + ½ log 2πe), the same at every obs [..., obs_dim] → [...]."""
        return (self.log_std(theta) + _GAUSSIAN_ENTROPY).sum().expand(obs.shape[:-1])

    def sample(self, theta: torch.Tensor, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """θ [P], obs [B, obs_dim] → a = f_θ(s) + exp(ℓ) ⊙ ε, ε ~ N(0, I) [B, action_dim]."""
        return self.sample_mean(theta, self.mean(theta, obs), generator)

    def sample_mean(self, theta: torch.Tensor, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """θ [P], mean f_θ(s) [B, action_dim] → a = mean + exp(ℓ) ⊙ ε [B, action_dim]."""
        noise = torch.randn(mean.shape, dtype=mean.dtype, generator=generator)
        return mean + torch.exp(self.log_std(theta)) * noise

    def init_theta(self, generator: torch.Generator) -> torch.Tensor:
        """θ [P] float64: `MLP.init_weights` for the mean (near zero), ℓ = 0 (σ = 1), as cleanrl's PPO."""
        theta = torch.zeros(self.num_params, dtype=torch.float64)
        self.net.init_weights(theta, generator)
        return theta
