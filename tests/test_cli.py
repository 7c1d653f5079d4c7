"""The `pgvar` command end to end, through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.cli import main
from envs import PROBLEMS
from estimators import ESTIMATORS

EXAMPLE = ["measure", "--env", "frozenlake", "--estimator", "reinforce", "--est-opt", "baseline=rloo",
           "--batch-size", "16", "--reps", "1000", "--seed", "0", "--json"]
REQUIRED_KEYS = {
    "env", "estimator", "env_options", "estimator_options", "batch_size", "reps", "seed", "theta", "objective",
    "reference_kind", "reference_grad", "mean_grad", "bias_norm", "bias_norm_ci", "relative_bias", "bias_pvalue",
    "variance_trace", "variance_trace_ci", "cosine_mean", "cosine_mean_ci", "pairwise_cosine", "snr", "mse",
    "seconds", "env_steps",
}


def pgvar(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


def test_measure_json_has_the_documented_fields_and_is_deterministic():
    first, second = pgvar(*EXAMPLE), pgvar(*EXAMPLE)
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert REQUIRED_KEYS <= set(a)
    assert a["reference_kind"] == "exact" and a["declared_unbiased"] is True
    assert len(a["theta"]) == len(a["reference_grad"]) == len(a["mean_grad"]) == 64
    assert a["env_steps"] > 0 and a["nonfinite"] == 0
    for timing in ("seconds", "seconds_per_estimate", "reference_seconds"):
        a.pop(timing), b.pop(timing)
    assert a == b


def test_measure_on_a_simulated_problem_reports_its_sampled_reference(tmp_path):
    """The issue's example at a small scale: a sampled reference with its sample count and bias resolution,
    computed once and then read from the cache (same numbers)."""
    argv = ["measure", "--env", "cartpole", "--estimator", "reinforce", "--est-opt", "baseline=rloo",
            "--env-opt", "horizon=50", "--env-opt", "hidden=8,8", "--batch-size", "8", "--reps", "20", "--seed", "0",
            "--reference-samples", "2048", "--reference-batch-size", "32", "--reference-cache", str(tmp_path), "--json"]
    first, second = pgvar(*argv), pgvar(*argv)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["reference_kind"] == "sampled" and a["reference_samples"] == 2048
    assert a["reference_cached"] is False and b["reference_cached"] is True and len(list(tmp_path.iterdir())) == 1
    assert a["bias_resolution"] > 0 and len(a["reference_se"]) == a["num_params"] == 8 * 4 + 8 + 8 * 8 + 8 + 2 * 8 + 2
    assert a["objective_se"] > 0 and 1 <= a["objective"] <= 50
    for key in ("reference_grad", "reference_se", "objective", "bias_norm", "bias_pvalue", "mean_grad"):
        assert a[key] == b[key], key
    table = pgvar(*argv[:-1])
    assert table.returncode == 0 and "sampled: reinforce(returns=reward_to_go, baseline=rloo) N=32, 2048 trajectories, " \
        "from the cache; bias resolution" in table.stdout, table.stdout


def test_measure_table_and_theta_file(tmp_path):
    theta = np.linspace(-1, 1, 64).reshape(16, 4)  # the documented [S, A] layout is accepted as is
    np.save(tmp_path / "theta.npy", theta)
    out = pgvar("measure", "--env", "frozenlake", "--estimator", "reinforce", "--theta", str(tmp_path / "theta.npy"),
                "--batch-size", "4", "--reps", "50", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert "variance_trace" in out.stdout and "bias_pvalue" in out.stdout


def test_list_shows_every_registered_name_and_option():
    out = pgvar("list")
    assert out.returncode == 0
    for name, spec in PROBLEMS.items() + ESTIMATORS.items():
        assert name in out.stdout
        for option in spec.options:
            assert f"{option} = " in out.stdout
    for name, spec in ESTIMATORS.items():
        assert spec.bias and f"estimates {spec.target}; {spec.bias}" in out.stdout, name


HORIZON_OPTION = {name for name, spec in PROBLEMS.items() if "horizon" in spec.options}  # kept short here
BASE = {"--env": "frozenlake", "--estimator": "reinforce", "--batch-size": "4", "--reps": "10", "--seed": "0"}


@pytest.mark.parametrize("override,extra,message", [
    ({"--env": "nope"}, [], "unknown env 'nope'; valid: frozenlake"),
    ({"--estimator": "nope"}, [], "unknown estimator 'nope'; valid: " + ", ".join(ESTIMATORS.names())),
    ({}, ["--est-opt", "baseline=foo"], "option baseline='foo' for estimator reinforce: expected one of none"),
    ({}, ["--est-opt", "base=rloo"], "unknown option 'base' for estimator reinforce; valid options: returns"),
    ({}, ["--env-opt", "gamma=2"], "option gamma='2' for env frozenlake: expected a number in [0, 1]"),
    ({}, ["--env-opt", "gamma"], "--env-opt 'gamma': expected KEY=VALUE"),
    ({"--batch-size": "0"}, [], "batch_size=0: expected an integer ≥ 1"),
    ({"--reps": "1"}, [], "reps=1: expected an integer ≥ 2"),
    ({"--batch-size": "x"}, [], "argument --batch-size: invalid int value"),
    ({"--batch-size": "1"}, ["--est-opt", "baseline=rloo"], "baseline=rloo needs batch_size ≥ 2"),
    ({}, ["--est-opt", "returns=total", "--est-opt", "discount_score=false"], "discount_score=false applies only"),
    ({}, ["--theta", "WRONG"], "theta has 10 values (shape [10]); frozenlake expects 64"),
    ({}, ["--theta", "/no/such.npy"], "--theta /no/such.npy: no such file"),
    ({"--seed": None}, [], "the following arguments are required: --seed"),
    ({}, ["--reference", "exact2"], "argument --reference: invalid choice: 'exact2'"),
    ({}, ["--reference-samples", "10", "--reference", "sampled"], "reference samples=10: expected an integer ≥ 2 ×"),
    ({"--env": "cartpole"}, ["--reference", "exact"], "env cartpole has no exact gradient: use a sampled reference"),
    ({"--env": "cartpole", "--estimator": "natural"}, [], "estimator natural: env cartpole has no exact Fisher matrix"),
])
def test_bad_input_is_one_clear_line(override, extra, message, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros(10))
    flags = {**BASE, **override}
    argv = ["measure"] + [x for flag, value in flags.items() if value is not None for x in (flag, value)]
    argv += [str(tmp_path / "wrong.npy") if x == "WRONG" else x for x in extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured.err
    assert message in lines[0]


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_measure_runs_or_refuses_in_one_line_for_every_estimator_and_problem(estimator, capsys, tmp_path):
    """`pgvar measure` with each estimator's defaults on each problem's defaults either measures or,
    where the combination does not apply, exits 2 with one line naming the estimator."""
    small_reference = ["--reference-samples", "256", "--reference-batch-size", "8", "--reference-cache", str(tmp_path)]
    for env in PROBLEMS.names():
        short = ["--env-opt", "horizon=5"] if env in HORIZON_OPTION else []
        code = main(["measure", "--env", env, "--estimator", estimator, "--batch-size", "4", "--reps", "3",
                     "--seed", "0", *short, *small_reference])
        captured = capsys.readouterr()
        if code == 2:
            lines = captured.err.strip().splitlines()
            assert len(lines) == 1 and estimator in lines[0] and captured.out == "", (env, captured.err)
        else:
            assert code == 0 and "variance_trace" in captured.out, (env, captured.err)
