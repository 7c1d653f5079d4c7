"""Per-unit weighted gradients of the MLP policies by hand-written backprop over the packed alive steps.

For an `MLPCategorical` or `MLPGaussian` policy (envs/policies.py) with network f_θ and a per-step value
φ_θ(s, a) that depends on θ through z = f_θ(s) and, for the Gaussian, its log standard deviation ℓ:

    g_u = Σ_{steps s of unit u with mask_s > 0} w_s ∇_θ φ_θ(s_s, a_s)      (units: replicates or trajectories)

Reverse mode written out, per step (layers k = 1..K, h_0 = s, h_k = act(W_k h_{k−1} + b_k) for k < K,
z = W_K h_{K−1} + b_K; Rumelhart, Hinton & Williams 1986):

    δ_K = w ∂φ/∂z,   δ_{k−1} = (W_kᵀ δ_k) ⊙ act'_{k−1},   act' = 1 − h² (tanh) or 1[h > 0] (relu)
    ∂/∂W_k = Σ_{s∈u} δ_{k,s} h_{k−1,s}ᵀ,   ∂/∂b_k = Σ_{s∈u} δ_{k,s},   ∂/∂ℓ = Σ_{s∈u} w_s ∂φ/∂ℓ

with the output cotangents, p = softmax(z), ζ = (a − z) e^{−ℓ}:

    score   φ = log π(a|s):  categorical ∂φ/∂z = e_a − p;              Gaussian ∂φ/∂z = ζ e^{−ℓ}, ∂φ/∂ℓ = ζ² − 1
    entropy φ = H(π(·|s)):   categorical ∂φ/∂z = −p ⊙ (log p + H);     Gaussian ∂φ/∂z = 0,       ∂φ/∂ℓ = 1

Why it is fast. `torch.func.vmap` (estimators/autodiff.py) differentiates all T steps of every padded
trajectory, dead or alive (at CartPole's near-uniform initial policy the longest episode is ~4× the mean);
here only the S alive steps are computed, in the observations' dtype (float32 for the classic-control
problems by default, `envs.control.DTYPE`). The per-unit sums of outer products Σ_s δ_s h_sᵀ are batched
matmuls without padding: the units are sorted by their number of alive steps L and each unit's steps laid out
contiguously (`pack_steps`), so n units of L steps are one [n, L, width] view and one `torch.bmm`; with
per-replicate units (every estimator but REINFORCE's optimal baselines, which need per-trajectory scores) that
is one [width × S_m] × [S_m × width] product per layer and batch. Rows are processed in chunks of at most
`CHUNK_ROWS` steps, whose activations stay in cache; a unit longer than a chunk is cut into pieces whose sums
are added. The forward pass is not recomputed when the rollout kept its activations (`envs.classic.KeptActivations`):
they are gathered chunk by chunk instead (else `MLP.activations`, the rollout's own forward pass, recomputes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from envs.classic import KeptActivations
from envs.policies import MLP, MLPCategorical, MLPGaussian

MLP_POLICIES = (MLPCategorical, MLPGaussian)
# Alive steps per chunk: a [CHUNK_ROWS, 64] float64 activation is 4 MiB (L3: 32 MiB); 4096–16384 measured
# equal within noise on CartPole batches.
CHUNK_ROWS = 8192

if TYPE_CHECKING:  # annotations only: `pgvar list` imports this module without torch (pgvar/cli.py)
    # (z [R, out], actions [R, ...], log std ℓ [A] | None) → (∂φ/∂z [R, out], ∂φ/∂ℓ [R, A] | None), unweighted
    CotangentPair = tuple[torch.Tensor, torch.Tensor | None]
    Cotangent = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], CotangentPair]


def _categorical_score(z: torch.Tensor, actions: torch.Tensor, log_std: torch.Tensor | None) -> CotangentPair:
    """e_a − softmax(z); for two actions [−c, c] with c = a − σ(z₁ − z₀) (= e_a − p, a softmax of two entries being
    a sigmoid), one elementwise pass instead of a softmax over rows of two (2× on CartPole's chunks)."""
    if z.shape[1] == 2:
        c = actions.to(z.dtype).sub_(torch.sigmoid(z[:, 1] - z[:, 0]))
        return torch.stack((-c, c), 1), None
    return _categorical_score_by_softmax(z, actions, log_std)


def _categorical_score_by_softmax(z: torch.Tensor, actions: torch.Tensor, log_std: torch.Tensor | None) -> CotangentPair:
    """e_a − softmax(z) for any number of actions (the twin of the two-action form)."""
    taken = actions[:, None] == torch.arange(z.shape[1], device=z.device)  # one-hot e_a [R, out]
    return taken.to(z.dtype).sub_(torch.softmax(z, dim=-1)), None


def _gaussian_score(z: torch.Tensor, actions: torch.Tensor, log_std: torch.Tensor | None) -> CotangentPair:
    zeta = (actions - z) * torch.exp(-log_std)
    return zeta * torch.exp(-log_std), zeta.square().sub_(1.0)


def _categorical_entropy(z: torch.Tensor, actions: torch.Tensor, log_std: torch.Tensor | None) -> CotangentPair:
    log_p = torch.log_softmax(z, dim=-1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1, keepdim=True)
    return -p * (log_p + entropy), None


def _gaussian_entropy(z: torch.Tensor, actions: torch.Tensor, log_std: torch.Tensor | None) -> CotangentPair:
    return torch.zeros_like(z), torch.ones_like(z)


COTANGENTS: dict[tuple[str, type], Cotangent] = {
    ("score", MLPCategorical): _categorical_score,
    ("score", MLPGaussian): _gaussian_score,
    ("entropy", MLPCategorical): _categorical_entropy,
    ("entropy", MLPGaussian): _gaussian_entropy,
}


def supports(policy: object) -> bool:
    """True for the policies this module differentiates: exactly `MLP_POLICIES` (a subclass may redefine
    log π)."""
    return type(policy) in MLP_POLICIES


@dataclass(frozen=True)
class Segment:
    """`count` units (ids [count] into the flattened units) of `length` consecutive packed rows each, from
    chunk-local row `start`: the rows [start, start + count·length) viewed as [count, length, ·]."""

    start: int
    count: int
    length: int
    ids: torch.Tensor


@dataclass(frozen=True)
class Chunk:
    """Packed rows [start, stop) and their segments; `partial`: the segments are pieces of one unit longer
    than a chunk, whose sums are accumulated over chunks (every other unit lies in exactly one chunk)."""

    start: int
    stop: int
    segments: list[Segment]
    partial: bool


@dataclass(frozen=True)
class PackedSteps:
    """The alive steps of U units, the units sorted by their number of alive steps and each unit's steps
    contiguous and in order: index [S] into the flattened [U · L] steps; the chunks cover rows 0..S;
    accumulated [≤ U] the units whose sums start from 0 (cut into pieces, or without alive steps)."""

    index: torch.Tensor
    chunks: list[Chunk]
    accumulated: torch.Tensor


def pack_steps(alive: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> PackedSteps:
    """alive [U, L] bool → the packed layout (see `PackedSteps`), chunks of ≤ chunk_rows rows."""
    steps = alive.shape[1]
    counts = alive.sum(1)
    order = torch.argsort(counts, stable=True)
    sorted_counts = counts[order]
    flat = alive[order].reshape(-1).nonzero()[:, 0]  # [S] positions in the sorted [U, L] layout
    index = order[flat // steps] * steps + flat % steps
    lengths, units = torch.unique_consecutive(sorted_counts, return_counts=True)
    chunks: list[Chunk] = []
    segments: list[Segment] = []
    start = row = first = 0

    def close() -> None:
        nonlocal segments, start
        if segments:
            chunks.append(Chunk(start, row, segments, partial=False))
        segments, start = [], row

    for length, count in zip(lengths.tolist(), units.tolist(), strict=True):
        if 0 < length <= chunk_rows:
            per_segment = chunk_rows // length
            for unit in range(first, first + count, per_segment):
                size = min(per_segment, first + count - unit)
                if row + size * length - start > chunk_rows:
                    close()
                segments.append(Segment(row - start, size, length, order[unit: unit + size]))
                row += size * length
        elif length > chunk_rows:  # each unit alone, in chunks of chunk_rows rows (the last shorter)
            close()
            for unit in range(first, first + count):
                for piece in range(0, length, chunk_rows):
                    rows = min(chunk_rows, length - piece)
                    chunks.append(Chunk(row, row + rows, [Segment(0, 1, rows, order[unit: unit + 1])], partial=True))
                    row += rows
                    start = row
        first += count
    close()
    accumulated = order[(sorted_counts == 0) | (sorted_counts > chunk_rows)]
    return PackedSteps(index, chunks, accumulated)


def _through_activation(name: str, delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """δ ⊙ act'(pre-activation), with act' written through the activation h, in place in δ."""
    if name == "tanh":
        return delta.addcmul_(delta * h, h, value=-1.0)  # 1 − tanh²
    return delta.masked_fill_(h <= 0, 0.0)  # relu: h > 0 ⇔ pre-activation > 0


@dataclass(frozen=True)
class _Network:
    """θ's layers as the backprop uses them (detached), and where each layer's gradient goes in θ [P]."""

    net: MLP
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # (W [out, in], b [out]) from the input
    scaled: list[tuple[torch.Tensor, torch.Tensor]]  # for `MLP.activations`: the hidden layers × the activation's scale
    activation: str
    offsets: list[int]  # start of each layer's W in θ; its b follows W
    num_net_params: int  # where the Gaussian's ℓ starts
    log_std: torch.Tensor | None

    @staticmethod
    def of(policy: MLPCategorical | MLPGaussian, theta: torch.Tensor) -> _Network:
        layers = [(w.detach(), b.detach()) for w, b in policy.net.layers(theta)]
        offsets = [0]
        for n_in, n_out in policy.net.layer_sizes:
            offsets.append(offsets[-1] + n_out * n_in + n_out)
        log_std = policy.log_std(theta).detach() if isinstance(policy, MLPGaussian) else None
        return _Network(policy.net, layers, policy.net.scaled_layers(theta), policy.net.activation, offsets[:-1],
                        offsets[-1], log_std)


def _chunk_gradients(network: _Network, cotangent: Cotangent, chunk: Chunk, inputs: list[torch.Tensor],
                     actions: torch.Tensor, weights: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """The chunk's per-unit sums (per piece, for a unit cut into pieces): inputs [h_0 = obs, …, h_{K−1}] of each
    layer [R, width], actions [R, ...], weights [R] → [(first entry in θ, sums [units, entries])], the units in the
    order of the chunk's segments."""
    w_out, b_out = network.layers[-1]
    obs = inputs[0]
    delta, extra = cotangent(torch.addmm(b_out, inputs[-1], w_out.T), actions, network.log_std)
    delta.mul_(weights[:, None])
    units = sum(s.count for s in chunk.segments)
    first_units = [0]
    for segment in chunk.segments:
        first_units.append(first_units[-1] + segment.count)
    # per segment: its rows in the chunk, its units among the chunk's units, the segment
    views = [(slice(s.start, s.start + s.count * s.length), slice(u, u + s.count), s)
             for s, u in zip(chunk.segments, first_units, strict=False)]
    sums = []
    if extra is not None:
        extra.mul_(weights[:, None])
        extra_sums = obs.new_empty(units, extra.shape[1])
        for rows, at, segment in views:
            torch.sum(extra[rows].view(segment.count, segment.length, -1), 1, out=extra_sums[at])
        sums.append((network.num_net_params, extra_sums))
    for k in reversed(range(len(network.layers))):
        weight, _ = network.layers[k]
        n_out, n_in = weight.shape
        h = inputs[k]
        # MKL's batched product is 3–5× faster with the short side first (measured: [4, 64] vs [64, 4] per
        # unit), so a first layer with few inputs is summed as its transpose Σ h δᵀ and transposed back
        transposed = 4 * n_in <= n_out
        weight_sums = obs.new_empty(units, *((n_in, n_out) if transposed else (n_out, n_in)))
        bias_sums = obs.new_empty(units, n_out)
        for rows, at, segment in views:
            d = delta[rows].view(segment.count, segment.length, n_out)
            x = h[rows].view(segment.count, segment.length, n_in)
            torch.bmm(*((x.mT, d) if transposed else (d.mT, x)), out=weight_sums[at])
            torch.sum(d, 1, out=bias_sums[at])
        weight_sums = weight_sums.mT.reshape(units, -1) if transposed else weight_sums.view(units, -1)
        sums += [(network.offsets[k], weight_sums), (network.offsets[k] + n_out * n_in, bias_sums)]
        if k > 0:
            delta = _through_activation(network.activation, delta @ weight, h)
    return sums


def weighted_gradients(kind: str, policy: MLPCategorical | MLPGaussian, theta: torch.Tensor, obs: torch.Tensor,
                       actions: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, unit_dims: int,
                       chunk_rows: int = CHUNK_ROWS, kept: KeptActivations | None = None) -> torch.Tensor:
    """Σ_{s ∈ u, mask_s > 0} w_s ∇_θ φ_θ(s_s, a_s) for every unit u, φ = log π (kind "score") or H(π(·|s))
    ("entropy"); the units are the leading `unit_dims` dimensions of weights [M, N, T] (1: replicates →
    [M, P]; 2: trajectories → [M, N, P]). obs [M, N, T, O]; actions [M, N, T] long or [M, N, T, A].
    Steps where mask is 0 are skipped (every caller's w is 0 there). Computed in the dtype of floating obs (a
    float32 rollout's: `envs.control.DTYPE`), else θ's; returned in θ's. `kept`: the rollout's activations of
    these steps at this θ (`RolloutBatch.kept_for`), gathered instead of recomputing the forward pass."""
    unit_shape = weights.shape[:unit_dims]
    alive = (mask > 0).reshape(unit_shape.numel(), -1)
    packed = pack_steps(alive, chunk_rows)
    dtype = obs.dtype if obs.is_floating_point() else theta.dtype
    # Gathers by index_select: ~7× advanced indexing x[index] on one thread (measured on [355k, 64] float32 rows)
    if kept is not None:  # the kept row of each packed row [S]
        kept_row = torch.empty(alive.numel(), dtype=torch.long)
        kept_row[kept.position] = torch.arange(len(kept.position))
        rows_of = kept_row.index_select(0, packed.index)
    else:
        obs = obs.reshape(alive.numel(), -1).index_select(0, packed.index).to(dtype)  # [S, O], packed order
    actions = actions.reshape(alive.numel(), *actions.shape[3:]).index_select(0, packed.index)
    actions = actions.to(dtype) if actions.is_floating_point() else actions
    weights = weights.detach().reshape(-1).index_select(0, packed.index).to(dtype)  # [S]
    network = _Network.of(policy, theta.to(dtype))
    cotangent = COTANGENTS[(kind, type(policy))]
    out = theta.new_empty(unit_shape.numel(), theta.numel())
    out[packed.accumulated] = 0.0
    for chunk in packed.chunks:
        rows = slice(chunk.start, chunk.stop)
        units = torch.cat([s.ids for s in chunk.segments])
        if kept is not None:
            inputs = [h.index_select(0, rows_of[rows]) for h in kept.inputs]
        else:
            inputs = network.net.activations(network.scaled, obs[rows])[:-1]
        for start, sums in _chunk_gradients(network, cotangent, chunk, inputs, actions[rows], weights[rows]):
            target = out[:, start: start + sums.shape[1]]
            if chunk.partial:
                target.index_add_(0, units, sums.to(out.dtype))
            else:
                target[units] = sums.to(out.dtype)
    return out.reshape(*unit_shape, theta.numel())
