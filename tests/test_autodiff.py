"""The autodiff methods (packed, vmap, surrogate, naive) compute the same numbers, "auto" picks packed
exactly for the MLP policies, the packed layout covers every alive step once, and the MLP policy is the
torch.nn network it documents. All checks are deterministic (no false positives)."""

from __future__ import annotations

import pytest
import torch

from envs import make_problem
from envs.policies import MLPCategorical, MLPGaussian, SoftmaxTabular
from envs.problem import Batch, Policy
from envs.spec import ConfigError
from envs.problem import Capability
from estimators import mlp_backprop, resolve_estimator
from estimators.registry import Prepared
from estimators.autodiff import (
    AUTODIFF_OPTION,
    resolve_method,
    weighted_entropy_gradient_per_replicate,
    weighted_score_per_replicate,
    weighted_score_per_trajectory,
)
from estimators.score import BaselineParser
from tests.conftest import case_id, random_theta, synthetic_mlp_batch
from tests.twins import torch_nn_twin

SLOW_METHODS = ["surrogate", "naive"]  # the twins of vmap, for every policy
# The naive loop is one backward pass per step: on the classic-control problems' long episodes (up to 4 × 999
# steps here) it would take most of this file's runtime, and the MLP policies meet it in the synthetic tests.
NAIVE_MAX_STEPS = 400
GRADIENTS = [weighted_score_per_replicate, weighted_score_per_trajectory, weighted_entropy_gradient_per_replicate]
# (kind, unit_dims) of each of GRADIENTS in mlp_backprop's terms (unit_dims 1: divided by N)
PACKED_CALLS = {weighted_score_per_replicate: ("score", 1), weighted_score_per_trajectory: ("score", 2),
                weighted_entropy_gradient_per_replicate: ("entropy", 1)}
# The first two and the last two differ in whether mlp_backprop sums the first layer as its transpose.
MLP_POLICY_CASES = [MLPCategorical(3, (16, 5), 4, "tanh"), MLPGaussian(2, (9, 4), 2, "relu"),
                    MLPCategorical(3, (6,), 2, "relu"), MLPGaussian(2, (5, 6), 1, "tanh")]


def assert_equal_to_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to 1e-10 relative: elementwise, with an absolute floor of 1e-10 × the largest entry, so that
    entries that cancel to ~0 are compared at the scale of the computation."""
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


def assert_methods_agree(policy: Policy, theta: torch.Tensor, batch: Batch, weights: torch.Tensor,
                         methods: list[str]) -> None:
    for gradient in GRADIENTS:
        reference = gradient(policy, theta, batch, weights, method="vmap")
        assert reference.abs().max() > 0  # a vacuous comparison of zeros would pass anything
        for method in methods:
            assert_equal_to_rounding(gradient(policy, theta, batch, weights, method=method), reference)


def twins_of_vmap(policy: Policy) -> list[str]:
    return SLOW_METHODS + (["packed"] if mlp_backprop.supports(policy) else [])


def test_methods_agree_on_every_problem(problem):
    """Per replicate, per trajectory and the entropy gradient, on each problem's own batches (the MLP
    policies of the classic-control problems through packed as well)."""
    if not problem.supports(Capability.STOCHASTIC_POLICY):
        pytest.skip("a deterministic policy has no log π")
    if "dtype" in problem.options:  # twins agree to 1e-10 in float64 (float32: tests/test_float32.py)
        problem = problem.config.replace(dtype="float64").build()
    theta = random_theta(problem, seed=30)
    batch = problem.sample(theta, 2, 2, torch.Generator().manual_seed(31))
    weights = torch.randn(batch.mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(32))
    methods = twins_of_vmap(problem.policy)
    if batch.env_steps > NAIVE_MAX_STEPS:
        methods.remove("naive")
    assert_methods_agree(problem.policy, theta, batch, weights * batch.mask, methods)


@pytest.mark.parametrize("policy", MLP_POLICY_CASES, ids=lambda p: f"{type(p).__name__}-{p.net.activation}")
def test_methods_agree_on_mlp_policies(policy):
    """Both MLP policy classes and activations, random θ, ragged episodes including an empty one; packed,
    surrogate and naive against vmap, per replicate, per trajectory and for the entropy gradient."""
    generator = torch.Generator().manual_seed(33)
    batch, weights = synthetic_mlp_batch(policy, reps=2, batch_size=4, horizon=6, generator=generator, full=False)
    batch.mask[1, 2], weights[1, 2] = 0.0, 0.0  # an empty episode
    assert 0 < batch.mask.mean() < 1  # the skipping of finished steps is exercised
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    assert_methods_agree(policy, theta, batch, weights, twins_of_vmap(policy))


@pytest.mark.parametrize("policy", MLP_POLICY_CASES, ids=lambda p: f"{type(p).__name__}-{p.net.activation}")
def test_packed_in_small_chunks_matches_vmap(policy):
    """Chunks of 12 rows: several lengths share a chunk, a length group spans chunks, and units longer than a
    chunk are cut into pieces whose sums are added; the result must not depend on any of it."""
    generator = torch.Generator().manual_seed(40)
    batch, weights = synthetic_mlp_batch(policy, reps=3, batch_size=5, horizon=9, generator=generator, full=False)
    batch.mask[0, 3], weights[0, 3] = 0.0, 0.0  # an empty episode
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    chunks = []
    for gradient, (kind, unit_dims) in PACKED_CALLS.items():
        alive = (batch.mask > 0).reshape(weights.shape[:unit_dims].numel(), -1)
        chunks += mlp_backprop.pack_steps(alive, chunk_rows=12).chunks
        scale = batch.batch_size if unit_dims == 1 else 1
        chunked = mlp_backprop.weighted_gradients(kind, policy, theta, batch.obs, batch.actions, weights, batch.mask,
                                                  unit_dims, chunk_rows=12) / scale
        assert_equal_to_rounding(chunked, gradient(policy, theta, batch, weights, method="vmap"))
    assert any(chunk.partial for chunk in chunks) and any(len(chunk.segments) > 1 for chunk in chunks)
    assert any(len({s.length for s in chunk.segments}) > 1 for chunk in chunks)


def test_pack_steps_layout():
    """Every alive step exactly once, each unit's steps contiguous and in time order, units sorted by their
    number of steps, segments and chunks as documented; masks need not be prefixes."""
    generator = torch.Generator().manual_seed(41)
    alive = torch.rand(40, 9, generator=generator) < torch.rand(40, 1, generator=generator)
    alive[3] = False
    chunk_rows = 7
    packed = mlp_backprop.pack_steps(alive, chunk_rows)
    steps = alive.shape[1]
    assert sorted(packed.index.tolist()) == alive.reshape(-1).nonzero()[:, 0].tolist()
    counts = alive.sum(1)
    seen: dict[int, list[int]] = {}
    last_length, row = 0, 0
    for chunk in packed.chunks:
        assert chunk.start == row and 0 < chunk.stop - chunk.start <= chunk_rows
        local = 0
        for segment in chunk.segments:
            assert segment.start == local and segment.length >= (last_length if not chunk.partial else 0)
            rows = packed.index[chunk.start + local: chunk.start + local + segment.count * segment.length]
            for unit, unit_rows in zip(segment.ids.tolist(), rows.view(segment.count, segment.length), strict=True):
                assert (unit_rows // steps == unit).all()
                seen.setdefault(unit, []).extend((unit_rows % steps).tolist())
            local += segment.count * segment.length
            last_length = segment.length if not chunk.partial else last_length
        row = chunk.stop
    assert row == packed.index.numel()
    for unit in range(alive.shape[0]):
        assert seen.get(unit, []) == alive[unit].nonzero()[:, 0].tolist()  # in order, pieces included
    expected_accumulated = ((counts == 0) | (counts > chunk_rows)).nonzero()[:, 0]
    assert sorted(packed.accumulated.tolist()) == expected_accumulated.tolist()
    assert (counts == 0).any() and (counts > chunk_rows).any()


def test_auto_picks_packed_for_mlp_policies_and_one_backward_for_one_sum():
    """"auto": packed for the MLP policies whatever the number of sums; for the others one backward pass when there is
    one sum (M = 1, a training update), vmap for more; an explicit method is kept (the methods agree: above)."""
    assert AUTODIFF_OPTION.default == "auto"
    for policy in MLP_POLICY_CASES:
        assert resolve_method("auto", policy) == "packed" == resolve_method("auto", policy, units=1)
        assert resolve_method("vmap", policy) == "vmap" == resolve_method("vmap", policy, units=1)
    tabular = SoftmaxTabular(3, 2)
    assert resolve_method("auto", tabular) == "vmap" == resolve_method("vmap", tabular, units=1)
    assert resolve_method("auto", tabular, units=1) == "surrogate"
    with pytest.raises(ConfigError, match="autodiff=packed needs an MLPCategorical or MLPGaussian policy"):
        resolve_method("packed", tabular)


def test_unknown_method_is_refused():
    policy = MLPCategorical(obs_dim=2, hidden=(3,), num_actions=2)
    batch, weights = synthetic_mlp_batch(policy, 1, 2, 3, torch.Generator().manual_seed(0), full=True)
    with pytest.raises(ValueError, match="autodiff method 'jax'"):
        weighted_score_per_replicate(policy, torch.zeros(policy.num_params, dtype=torch.float64), batch, weights, "jax")
    with pytest.raises(ConfigError, match="option autodiff='jax' for estimator reinforce"):
        resolve_estimator("reinforce", {"autodiff": "jax"})


REINFORCE_CASES = [("garnet", {"gamma": 0.9, "horizon": 20, "states": 6, "branching": 2}), ("lqr", {}),
                   ("cartpole", {"hidden": (8, 8), "horizon": 30, "dtype": "float64"}),
                   ("pendulum", {"hidden": (6,), "activation": "relu", "horizon": 10, "dtype": "float64"})]


@pytest.mark.parametrize("baseline", BaselineParser().examples)
@pytest.mark.parametrize("case", REINFORCE_CASES, ids=[case_id(c) for c in REINFORCE_CASES])
def test_reinforce_autodiff_options_agree(case, baseline):
    """Every baseline (the optimal ones go through the per-trajectory gradients), with the entropy
    bonus on so that its direct gradient is computed by the chosen method too; the default (auto) too."""
    problem = make_problem(*case)
    if baseline == "value" and not problem.supports(Capability.VALUE_BASIS):
        pytest.skip(f"{problem.name} has no critic model class")
    theta = random_theta(problem, seed=34)
    config = resolve_estimator("reinforce", {"baseline": baseline, "entropy_coef": 0.5})
    kwargs = dict(config.prepare(problem, theta, torch.Generator().manual_seed(35)).kwargs)
    batch = problem.sample(theta, 2, 4, torch.Generator().manual_seed(36))

    def estimate(method: str) -> torch.Tensor:
        return config.estimate(problem.policy, theta, batch, Prepared({**kwargs, "autodiff": method}))

    fast = estimate("vmap")
    assert fast.abs().max() > 0
    assert kwargs["autodiff"] == "auto"
    for method in ["auto", *twins_of_vmap(problem.policy)]:
        assert_equal_to_rounding(estimate(method), fast)


@pytest.mark.parametrize("hidden", [(), (7,), (6, 5)])
def test_mlp_matches_torch_nn(hidden):
    policy = MLPCategorical(obs_dim=4, hidden=hidden, num_actions=3)
    generator = torch.Generator().manual_seed(37)
    theta = torch.randn(policy.num_params, dtype=torch.float64, generator=generator)
    network = torch_nn_twin(policy, theta)
    obs = torch.randn(5, 2, 4, dtype=torch.float64, generator=generator)
    actions = torch.randint(3, (5, 2), generator=generator)
    with torch.no_grad():
        reference = torch.distributions.Categorical(logits=network(obs))
    torch.testing.assert_close(policy.log_prob(theta, obs, actions), reference.log_prob(actions), rtol=1e-12, atol=0)
    torch.testing.assert_close(policy.entropy(theta, obs), reference.entropy(), rtol=1e-12, atol=0)
    # one step, as the naive loop evaluates it: obs [obs_dim], action []
    torch.testing.assert_close(policy.log_prob(theta, obs[0, 0], actions[0, 0]), reference.log_prob(actions)[0, 0])


def test_mlp_init_theta_is_seeded_orthogonal():
    policy = MLPCategorical(obs_dim=4, hidden=(16, 8), num_actions=3)
    theta = policy.init_theta(torch.Generator().manual_seed(38))
    assert torch.equal(theta, policy.init_theta(torch.Generator().manual_seed(38)))
    assert not torch.equal(theta, policy.init_theta(torch.Generator().manual_seed(39)))
    layers = policy.net.layers(theta)
    for k, (weight, bias) in enumerate(layers):
        gain = 0.01 if k == len(layers) - 1 else 2**0.5
        small = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight  # rows or columns
        torch.testing.assert_close(small, gain**2 * torch.eye(min(weight.shape), dtype=torch.float64))
        assert torch.equal(bias, torch.zeros_like(bias))
