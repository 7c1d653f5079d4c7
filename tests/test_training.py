"""Training runs (bench/training.py, `pgvar train`): the exact-gradient control against an independent gradient-ascent
loop, lr → 0, divergence and non-finite estimates kept and counted, reproducibility and common random numbers, a
noisy estimator that learns, and the command line. Statistical tests use fixed seeds and state their false-positive
rate (the probability that they fail for a correct implementation)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.sampling import make_generator
from bench.training import DIVERGED_SCORE, SAMPLE, TRAIN_STREAM, TrainSettings, train
from envs import make_problem
from envs.problem import Capability
from envs.spec import ConfigError
from estimators import resolve_estimator
from pgvar.cli import main
from tests.twins import gradient_ascent_loop

# ---------------------------------------------------------------------- (a) the exact control is gradient ascent

# Step sizes where 30 steps move J most of the way without leaving the region where the iteration is stable (lqr's
# ‖∇J‖ ≈ 640 at θ₀: lr = 3e-3 diverges within 3 steps, tested below). The twin uses autograd through `objective`,
# the run the problem's `exact_gradient` (closed forms on the bandits): they agree to a few ulps per step, and in
# these contracting settings 30 steps keep that below 1e-10 relative (measured ≤ 1e-13).
CONTROL_CASES = [("softmax-bandit", "sgd", 0.5), ("frozenlake", "sgd", 1.0), ("lqr", "sgd", 1e-3),
                 ("softmax-bandit", "adam", 0.1), ("frozenlake", "adam", 0.1), ("lqr", "adam", 0.01)]
STEPS = 30


@pytest.mark.parametrize("name,optimizer,lr", CONTROL_CASES)
def test_exact_control_equals_an_independent_gradient_ascent_loop(name, optimizer, lr):
    """`exact` + torch.optim SGD/Adam (maximize=True) = θ ← θ + lr·∇J / the textbook Adam update with bias
    correction, written by hand in tests/twins.py: every J_k and the final θ to rounding."""
    problem = make_problem(name)
    run = train(problem, "exact", TrainSettings(optimizer=optimizer, lr=lr, batch_size=1, budget=STEPS, seed=0),
                show_progress=False)
    thetas, objectives = gradient_ascent_loop(problem, problem.default_theta(), lr, STEPS, optimizer)
    assert not run.diverged and len(objectives) == STEPS + 1 == len(run.objective)
    scale = max(abs(v) for v in objectives)
    np.testing.assert_allclose(run.objective, objectives, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(run.theta, thetas[-1].numpy(), rtol=1e-10, atol=1e-12)
    assert run.objective[-1] > run.objective[0]  # it learned: the comparison is not of two standing runs
    assert run.nonfinite == 0 and run.objective_kind == "exact" and (run.objective_se == 0).all()


def test_exact_estimator_returns_the_exact_gradient_for_every_batch():
    problem = make_problem("frozenlake")
    config = make_config("exact")
    theta = problem.default_theta() + 0.1
    batch = problem.sample(theta, 3, 2, torch.Generator().manual_seed(0))
    prepared = config.prepare(problem, theta, torch.Generator().manual_seed(1))
    estimate = config.estimate(problem.policy, theta, batch, prepared)
    assert estimate.shape == (3, problem.num_params)
    assert torch.equal(estimate, problem.exact_gradient(theta).expand(3, -1))
    with pytest.raises(ConfigError, match="exact"):
        config.check(make_problem("cartpole"), 4)  # no exact gradient there


def make_config(name, **options):
    return resolve_estimator(name, options)


# ------------------------------------------------------------------------------------------------- (b) lr → 0

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["softmax-bandit", "lqr"])  # dense rewards: the estimates are not all 0
def test_zero_learning_rate_leaves_theta_and_every_objective_exactly_unchanged(name, optimizer):
    problem = make_problem(name)
    run = train(problem, "reinforce", TrainSettings(optimizer=optimizer, lr=0.0, batch_size=4, budget=40, seed=1),
                {"baseline": "rloo"}, show_progress=False)
    assert np.array_equal(run.theta, run.theta0)
    assert (run.objective == run.objective[0]).all() and len(run.objective) == 11
    assert (run.grad_norm[:-1] > 0).any()  # the estimates were not zero: lr = 0 is what held θ


@pytest.mark.parametrize("name", ["softmax-bandit", "frozenlake", "lqr", "gaussian-bandit"])
def test_tiny_learning_rate_changes_j_by_lr_times_squared_gradient_norm(name):
    """One SGD step of the exact control with lr = ε: J(θ + εg) − J(θ) = ε‖g‖² + ½ε² gᵀHg + O(ε³‖g‖³), H the
    Hessian of J (autograd). The tolerance is twice the second-order term, ε²|gᵀHg| (so the third-order remainder,
    ε/6·D³J[g,g,g]/(½ gᵀHg) ≈ 1e-4 of it at this step length, may be as large as the second-order term itself),
    plus 16 ulps of J for the rounding of the two objectives. ε = 1e-4/‖g‖ (a step of length 1e-4) makes the
    first-order term dominate the tolerance, which is asserted so the check is not vacuous."""
    problem = make_problem(name)
    theta = problem.default_theta()
    g = problem.exact_gradient(theta)
    hessian = torch.func.hessian(problem.objective)(theta)
    eps = 1e-4 / float(g.norm())
    run = train(problem, "exact", TrainSettings(lr=eps, batch_size=1, budget=1, seed=0), show_progress=False)
    change, first = run.objective[1] - run.objective[0], eps * float(g @ g)
    tolerance = eps**2 * abs(float(g @ hessian @ g)) + 16 * np.spacing(abs(run.objective[0]))
    assert abs(change - first) <= tolerance, (change, first, tolerance)
    assert first > 10 * tolerance


# ------------------------------------------------------------------------- (c) divergence and non-finite estimates

def test_a_diverging_run_is_kept_and_marked_at_the_update_where_j_overflows():
    """Gaussian bandit, exact SGD with lr = 1e6: μ − c grows by |1 − 2·lr| per step until (μ − c)² overflows.
    The run stops at the update where J first is −∞, which the independent loop finds too; it is kept, diverged,
    scored −∞ (null in JSON) and failed."""
    problem = make_problem("gaussian-bandit")
    run = train(problem, "exact", TrainSettings(lr=1e6, batch_size=2, budget=400, seed=0), show_progress=False)
    _, objectives = gradient_ascent_loop(problem, problem.default_theta(), 1e6, 200)
    first_bad = next(k for k, j in enumerate(objectives) if not math.isfinite(j))
    assert run.diverged and run.diverged_at == first_bad and len(run.objective) == first_bad + 1
    assert 1 < first_bad < 200 and not math.isfinite(run.objective[-1])
    assert run.final_score == DIVERGED_SCORE == run.auc and run.failed
    record = run.to_dict()
    assert record["diverged"] is True and record["diverged_at"] == first_bad and record["final_score"] is None
    assert record["failed"] is True and record["nonfinite"] == 0 and len(record["curve"]["objective"]) == first_bad + 1
    json.dumps(record, allow_nan=False)


def test_non_finite_estimates_are_skipped_and_counted():
    """REINFORCE with Adam at lr = 1e3 on the Gaussian bandit drives s = log σ to −1e3 in one step: σ underflows to 0
    and every later score z/σ is non-finite. Each such update is skipped (θ and J unchanged), counted and listed."""
    problem = make_problem("gaussian-bandit")
    run = train(problem, "reinforce", TrainSettings(optimizer="adam", lr=1e3, batch_size=8, budget=160, seed=0),
                show_progress=False)
    bad = [k for k in range(len(run.grad_norm) - 1) if not math.isfinite(run.grad_norm[k])]
    assert not run.diverged and len(bad) > 0 and list(run.nonfinite_updates) == bad and run.nonfinite == len(bad)
    for k in bad:
        assert run.objective[k + 1] == run.objective[k]
    record = run.to_dict()
    assert record["nonfinite"] == len(bad) and record["nonfinite_updates"] == bad


def test_an_entropy_driven_noisy_run_that_diverges_is_kept():
    """With entropy_coef = 10 and Adam lr = 1e3 the first step raises s = log σ by ~1e3: e^{2s} overflows, J = −∞."""
    problem = make_problem("gaussian-bandit")
    run = train(problem, "reinforce", TrainSettings(optimizer="adam", lr=1e3, batch_size=8, budget=80, seed=0),
                {"entropy_coef": 10.0}, show_progress=False)
    assert run.diverged and run.diverged_at == 1 and run.objective[-1] == -math.inf and run.to_dict()["failed"]


# ------------------------------------------------------------------------ (d) reproducibility, common random numbers

def curve(run) -> dict:
    record = run.to_dict()
    return {key: value for key, value in record["curve"].items() if key != "seconds"}


@pytest.mark.parametrize("name", ["softmax-bandit", "frozenlake"])
def test_same_seed_gives_the_same_curve_and_other_seeds_differ(name):
    problem = make_problem(name)
    settings = TrainSettings(lr=0.5, batch_size=4, budget=64, seed=7)
    a, b = (train(problem, "reinforce", settings, {"baseline": "rloo"}, show_progress=False) for _ in range(2))
    assert curve(a) == curve(b) and np.array_equal(a.theta, b.theta)
    other = train(problem, "reinforce", settings.replace(seed=8), {"baseline": "rloo"}, show_progress=False)
    assert curve(other)["objective"] != curve(a)["objective"]


def test_learning_rates_optimizers_and_estimators_share_the_sampling_stream():
    """Common random numbers: the k-th batch comes from (seed, k) alone, so at θ₀ every run with the same seed
    draws the same first batch, whatever its learning rate or optimizer, and a baseline changes only the estimate."""
    problem = make_problem("softmax-bandit")
    base = TrainSettings(lr=0.1, batch_size=8, budget=16, seed=3)
    runs = [train(problem, "reinforce", base.replace(**change), {"baseline": "rloo"}, show_progress=False)
            for change in ({}, {"lr": 1.0}, {"optimizer": "adam"})]
    assert len({run.grad_norm[0] for run in runs}) == 1
    config, theta = make_config("reinforce", baseline="rloo"), problem.default_theta()
    batch = problem.sample(theta, 1, 8, make_generator(3, TRAIN_STREAM, SAMPLE, 0))
    expected = config.estimate(problem.policy, theta, batch, config.prepare(problem, theta, torch.Generator()))
    assert runs[0].grad_norm[0] == float(expected[0].norm())


def test_a_problem_without_exact_j_is_evaluated_on_held_out_batches():
    """Cartpole: J is the mean discounted return of eval_episodes trajectories with its SE, at every eval_every-th
    update and the last; no J*, so s is NaN and `failed` unknown."""
    # float64: with float32's draws at seed 0 all 8 held-out episodes reach H at the last evaluations (SE 0), as
    # float64's do at seeds 1 and 2 — luck of the seed, not of the dtype
    problem = make_problem("cartpole", {"horizon": 20, "hidden": (8,), "dtype": "float64"})
    run = train(problem, "reinforce", TrainSettings(lr=0.05, batch_size=4, budget=40, seed=0, eval_episodes=8,
                                                    eval_every=4), show_progress=False)
    assert run.objective_kind == "evaluated" and not problem.supports(Capability.EXACT_GRADIENT)
    assert list(run.evaluated) == [0, 4, 8, 10]
    assert (run.objective_se[run.evaluated] > 0).all() and np.isnan(run.score).all() and run.failed is None
    assert run.env_steps[-1] > 0


# ------------------------------------------------------------------------------- (e) a noisy estimator learns

def test_reinforce_improves_j_on_average_over_ten_seeds():
    """REINFORCE (rloo) with SGD lr = 0.1, N = 8, 32 updates on the softmax bandit, seeds 0–9: ΔJ = J_K − J_0 per seed.
    Asserted: the one-sided t lower bound mean − t_{0.999, 9}·SE (SE = sd/√10 over the seeds) is above 0, i.e. a
    run that did not learn (E ΔJ ≤ 0) would pass with probability ≤ 1e-3. The false-positive rate (a correct
    implementation failing): measured on seeds 100–159, ΔJ has mean 0.123 and sd 0.0094, so mean/SE ≈ 41 against
    the critical 4.30; under normality the failure probability is below 1e-30."""
    problem = make_problem("softmax-bandit")
    gains = np.array([train(problem, "reinforce", TrainSettings(lr=0.1, batch_size=8, budget=256, seed=seed),
                            {"baseline": "rloo"}, show_progress=False).objective[-1]
                      - problem.objective(problem.default_theta()).item() for seed in range(10)])
    se = gains.std(ddof=1) / math.sqrt(len(gains))
    assert se > 0  # the estimator is noisy: the runs differ
    assert gains.mean() - stats.t.ppf(0.999, len(gains) - 1) * se > 0, (gains.mean(), se)


# ------------------------------------------------------------------------------------------------- (f) the CLI

EXAMPLE = ["train", "--env", "softmax-bandit", "--estimator", "reinforce", "--est-opt", "baseline=rloo",
           "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "8", "--budget", "4096", "--seed", "0"]


def test_train_json_has_the_curve_and_summary(capsys):
    assert main([*EXAMPLE, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["env"] == "softmax-bandit" and record["estimator"] == "reinforce"
    assert record["estimator_options"]["baseline"] == "rloo" and record["optimizer"] == "sgd"
    assert record["lr"] == 0.1 and record["batch_size"] == 8 and record["budget"] == 4096 and record["seed"] == 0
    assert record["updates"] == record["updates_planned"] == 512 and record["samples"] == 4096
    assert record["objective_kind"] == "exact" and len(record["curve"]["objective"]) == 513
    assert record["curve"]["objective"][0] == pytest.approx(make_problem("softmax-bandit").objective(
        make_problem("softmax-bandit").default_theta()).item())
    for key in ("final_score", "auc", "updates_to_50", "samples_to_50", "updates_to_90", "samples_to_90", "failed",
                "diverged", "diverged_at", "nonfinite", "optimum"):
        assert key in record, key
    if record["optimum"] is not None:  # J* declared: the score is normalized
        assert record["curve"]["score"][0] == 0.0 and record["final_score"] is not None


def test_train_table(capsys):
    assert main(EXAMPLE) == 0
    out = capsys.readouterr().out
    assert "final J" in out and "samples" in out and len(out.splitlines()) < 25


@pytest.mark.parametrize("change,message", [
    (["--lr", "-1"], "option lr='-1' for training run: expected a number in [0, ∞)"),
    (["--optimizer", "foo"], "option optimizer='foo' for training run: expected one of sgd, adam"),
    (["--budget", "4"], "budget=4 is below batch_size=8"),
    (["--batch-size", "0"], "option batch_size='0' for training run: expected an integer ≥ 1"),
    (["--estimator", "exact", "--env", "cartpole", "--est-opt", "baseline=rloo"], "unknown option 'baseline'"),
    (["--estimator", "exact", "--env", "cartpole"], "estimator exact: env cartpole has no exact objective"),
])
def test_bad_training_input_is_one_clear_line(change, message, capsys):
    argv = list(EXAMPLE)
    for flag, value in zip(change[::2], change[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    if "exact" in change and "baseline=rloo" not in change:  # exact has no options: drop the example's
        del argv[argv.index("--est-opt"):argv.index("--est-opt") + 2]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgvar: error: ") and captured.out == "", captured
    assert message in lines[0], lines[0]
