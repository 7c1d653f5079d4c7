"""The `pgvar` command end to end, through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pgvar.cli import main
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
    return subprocess.run([sys.executable, "-m", "pgvar", *args], capture_output=True, text=True, timeout=300)


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
    for name, config_class in PROBLEMS.items() + ESTIMATORS.items():
        assert name in out.stdout
        for option, spec in config_class.options().items():
            assert f"{option} = " in out.stdout
            if spec.only_if:
                assert f"; only with {spec.only_if}" in out.stdout
    for name, config_class in ESTIMATORS.items():
        assert config_class.bias_text and f"estimates {config_class.target_text}; {config_class.bias_text}" in \
            out.stdout, name


HORIZON_OPTION = {name for name, config_class in PROBLEMS.items() if "horizon" in config_class.options()}
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
    ({}, ["--est-opt", "returns=total", "--est-opt", "discount_score=false"], "option discount_score applies only to returns=reward_to_go"),
    ({}, ["--theta", "WRONG"], "theta has 10 values (shape [10]); frozenlake expects 64"),
    ({}, ["--theta", "/no/such.npy"], "--theta /no/such.npy: no such file"),
    ({"--seed": None}, [], "the following arguments are required: --seed"),
    ({}, ["--reference", "exact2"], "argument --reference: invalid choice: 'exact2'"),
    ({}, ["--reference-samples", "10", "--reference", "sampled"], "reference samples=10: expected an integer ≥ 128 (2 × reference batch size"),
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


# ------------------------------------------------------------------------------------ hostile input (issue 14)

def one_error_line(capsys) -> str:
    """The single `pgvar: error:` line on stderr (nothing on stdout, no traceback)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgvar: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == "", captured
    return lines[0]


def write_theta_files(folder) -> None:
    """θ files a hostile user might pass, each for frozenlake (64 values) unless named otherwise."""
    import torch

    np.save(folder / "strings.npy", np.array(["a"] * 64))
    np.save(folder / "numeric-strings.npy", np.array(["0.5"] * 64))
    np.save(folder / "record.npy", np.zeros(64, dtype=[("a", "f8")]))
    np.save(folder / "complex.npy", np.full(64, 1 + 2j))
    np.save(folder / "bool.npy", np.ones(64, dtype=bool))
    np.save(folder / "transposed.npy", np.zeros((4, 16)))  # 64 values, not the documented [16, 4]
    np.save(folder / "inf.npy", np.full(64, np.inf))
    np.save(folder / "overflow.npy", np.array([0.0, 800.0]))  # gaussian-bandit: σ = e^800
    with open(folder / "disguised.npy", "wb") as handle:  # an .npz under an .npy name
        np.savez(handle, theta=np.zeros(64))
    (folder / "text.npy").write_text("not an array\n")
    torch.save({"theta": torch.zeros(64)}, folder / "dict.pt")
    torch.save(torch.zeros(64, dtype=torch.complex64), folder / "complex.pt")
    (folder / "a-file").write_text("x")


FROZENLAKE = ["measure", "--env", "frozenlake", "--estimator", "reinforce", "--batch-size", "4", "--reps", "10",
              "--seed", "0"]
CARTPOLE = ["measure", "--env", "cartpole", "--estimator", "reinforce", "--batch-size", "4", "--reps", "10",
            "--seed", "0", "--reference-samples", "256", "--reference-batch-size", "8"]
SIZE_LIMIT = "over the memory limit 8 GB (50% of the 16 GB available); lower "
HOSTILE = [
    (FROZENLAKE[:-1] + ["-1"], "seed=-1: expected an integer ≥ 0 and ≤ 9223372036854775807 (a fixed seed"),
    (FROZENLAKE + ["--reference-seed", "-1"], "reference seed=-1: expected an integer ≥ 0 and ≤ 9223372036854775807 (a fixed seed"),
    (FROZENLAKE + ["--reference-batch-size", "1"], "reference batch_size=1: expected an integer ≥ 2"),
    (FROZENLAKE + ["--reference-samples", "-5"], "reference samples=-5: expected an integer ≥ 128 (2 × reference batch size"),
    (FROZENLAKE + ["--reference-cache", "TMP/a-file"], "--reference-cache TMP/a-file: is not a folder"),
    (FROZENLAKE + ["--reference-cache", "TMP/a-file/below"], "lies under TMP/a-file, which is not a folder"),
    (CARTPOLE + ["--reference-cache", "/proc/pgvar-cache"], "--reference-cache /proc/pgvar-cache: cannot write in /proc"),
    (FROZENLAKE + ["--theta", "TMP/strings.npy"], "theta for frozenlake has dtype <U1; expected real floating"),
    (FROZENLAKE + ["--theta", "TMP/numeric-strings.npy"], "theta for frozenlake has dtype <U3"),
    (FROZENLAKE + ["--theta", "TMP/record.npy"], "theta for frozenlake has dtype [('a', '<f8')]"),
    (FROZENLAKE + ["--theta", "TMP/complex.npy"], "theta for frozenlake has dtype complex128"),
    (FROZENLAKE + ["--theta", "TMP/complex.pt"], "theta for frozenlake has dtype torch.complex64"),
    (FROZENLAKE + ["--theta", "TMP/bool.npy"], "theta for frozenlake has dtype bool"),
    (FROZENLAKE + ["--theta", "TMP/transposed.npy"], "theta has shape [4, 16]; frozenlake expects shape [16, 4] or flat"),
    (FROZENLAKE + ["--theta", "TMP/inf.npy"], "theta for frozenlake contains non-finite values (θ[0, 0] = inf)"),
    (FROZENLAKE + ["--theta", "TMP/disguised.npy"], "--theta TMP/disguised.npy: an .npz archive, not one array"),
    (FROZENLAKE + ["--theta", "TMP/text.npy"], "--theta TMP/text.npy: not an .npy array of numbers"),
    (FROZENLAKE + ["--theta", "TMP/dict.pt"], "--theta TMP/dict.pt: holds a dict, not one tensor"),
    (FROZENLAKE + ["--theta", "TMP"], "--theta TMP: not a regular file"),
    (["measure", "--env", "gaussian-bandit"] + FROZENLAKE[3:] + ["--theta", "TMP/overflow.npy"],
     "theta for gaussian-bandit makes the objective non-finite (J(θ) = -inf, ∇J non-finite in 1 of 2 coordinates) "
     "at s = 800"),
    # sizes: each refused from the sizes alone, before anything is allocated
    (FROZENLAKE[:5] + ["--batch-size", str(10**12), "--reps", "10", "--seed", "0"],
     SIZE_LIMIT + "--batch-size (one batch of N trajectories is the smallest chunk)"),
    (FROZENLAKE[:7] + ["--reps", str(10**12), "--seed", "0"], SIZE_LIMIT + "--reps"),
    (CARTPOLE + ["--reference-batch-size", str(10**12), "--reference-samples", str(10**13), "--no-reference-cache"],
     SIZE_LIMIT + "--reference-batch-size"),
    (CARTPOLE + ["--env-opt", "hidden=100000,100000"], "env cartpole with hidden=100000,100000"),
    (FROZENLAKE + ["--env", "garnet", "--env-opt", "states=10000", "--env-opt", "actions=1000", "--env-opt",
                   "branching=10000"], "env garnet with states × actions × branching = 10000 × 1000 × 10000"),
    (FROZENLAKE + ["--env", "contextual-bandit", "--env-opt", "contexts=10000", "--env-opt", "arms=1000"],
     "contexts × arms = 10000 × 1000 = 10000000 logits, more than the 1000000 allowed"),
    (FROZENLAKE + ["--env", "lqr", "--env-opt", "state_dim=100", "--env-opt", "action_dim=100", "--env-opt",
                   "horizon=10000"], "env lqr with state_dim 100, action_dim 100 and horizon 10000"),
    (FROZENLAKE + ["--est-opt", "baseline=value", "--est-opt", "critic=fitted", "--est-opt", "critic_samples=10000000"],
     "estimator reinforce with critic=fitted on 10000000 trajectories"),
    (FROZENLAKE + ["--env", "taxi", "--estimator", "natural", "--env-opt", "horizon=5"],
     "estimator natural on env taxi"),
]


@pytest.mark.parametrize("argv,message", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_measure_input_is_one_specific_line(argv, message, tmp_path, capsys, monkeypatch):
    """Exit 2, one line naming what was wrong, no traceback; the size cases without allocating (the memory a
    machine has is pinned to 16 GB, so that the numbers in the messages are the same everywhere)."""
    import resource

    write_theta_files(tmp_path)
    monkeypatch.setattr("envs.memory.available_bytes", lambda: 16e9)
    monkeypatch.setenv("PGVAR_CACHE_DIR", str(tmp_path / "cache"))
    if "natural" in argv:  # the taxi Fisher matrix (3000²) fits 16 GB; a small machine does not
        monkeypatch.setattr("envs.memory.available_bytes", lambda: 0.4e9)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main([x.replace("TMP", str(tmp_path)) for x in argv]) == 2
    assert message.replace("TMP", str(tmp_path)) in one_error_line(capsys)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # kB


def test_python_api_refuses_seeds_it_cannot_reproduce():
    from bench.harness import measure
    from bench.reference import ReferenceConfig
    from envs import make_problem
    from envs.spec import ConfigError

    problem = make_problem("softmax-bandit")
    for seed in (None, -1, 2**63, 1.5, "0", True):
        with pytest.raises(ConfigError, match=r"seed=.*: expected an integer ≥ 0 and ≤ 9223372036854775807 \(a fixed seed"):
            measure(problem, "reinforce", 2, 2, seed)
        with pytest.raises(ConfigError, match=r"reference seed=.*: expected an integer"):
            ReferenceConfig(seed=seed)
    assert measure(problem, "reinforce", 2, 2, np.int64(3), show_progress=False).seed == 3


def test_check_memory_estimates_without_allocating_and_names_the_knob(monkeypatch):
    from bench.harness import check_memory
    from envs import make_problem
    from envs.spec import ConfigError

    problem = make_problem("frozenlake")
    small = check_memory(problem, 16, 1000)
    assert 0 < small < 1e9
    monkeypatch.setattr("envs.memory.available_bytes", lambda: small)  # the limit is half of it
    with pytest.raises(ConfigError, match=r"measure on frozenlake with N = 16, M = 1000 .* needs ≈ .*, over the "
                                          r"memory limit .*; lower --reps or --batch-size$"):
        check_memory(problem, 16, 1000)
    monkeypatch.setattr("envs.memory.available_bytes", lambda: 16e9)
    with pytest.raises(ConfigError, match="lower --batch-size"):
        check_memory(problem, 10**12, 2)
    with pytest.raises(ConfigError, match="lower --reps$"):
        check_memory(problem, 1, 10**12)
    with pytest.raises(ConfigError, match="group_size=3 must divide batch_size=16"):
        check_memory(problem, 16, 10, group_size=3)


def test_the_table_renders_a_record_whose_numbers_are_none():
    """NaN and ±∞ become None in to_dict; the table says n/a instead of raising a TypeError."""
    from pgvar.cli import render_table
    from bench.harness import measure
    from bench.reference import ReferenceConfig
    from envs import make_problem

    record = measure(make_problem("cartpole", {"horizon": 5, "hidden": "4"}), "reinforce", 2, 3, 0, show_progress=False,
                     reference_config=ReferenceConfig(samples=32, batch_size=8, cache=False)).to_dict()
    for key, value in record.items():
        if isinstance(value, float):
            record[key] = None
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
            record[key] = [None, None]
    table = render_table(record)
    assert "n/a" in table and "bias resolution n/a" in table


def test_help_version_and_bare_pgvar_exit_without_a_traceback(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pgvar {version('pgvar')}"
    for argv in (["--help"], ["measure", "--help"], ["sweep", "--help"], ["report", "--help"], ["list", "--help"]):
        assert main(argv) == 0
        assert "usage: pgvar" in capsys.readouterr().out
    assert main([]) == 0  # bare: the commands and how to ask for more, on stdout
    captured = capsys.readouterr()
    assert all(command in captured.out for command in ("list", "measure", "train", "sweep", "report"))
    assert "usage: pgvar" in captured.out and captured.err == ""
    assert main(["frobnicate"]) == 2  # a bad command: one line naming the valid ones
    assert capsys.readouterr().err.strip() == ("pgvar: error: argument COMMAND: invalid choice: 'frobnicate' (choose "
                                               "from 'list', 'measure', 'train', 'sweep', 'report')")


HEAVY_MODULES = ("torch", "numpy", "scipy", "pandas", "envs", "estimators", "bench.harness")


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["measure", "--help"], ["train", "--help"],
                                  ["sweep", "--help"], ["report", "--help"], ["list", "--help"]], ids=" ".join)
def test_help_version_and_bare_pgvar_import_no_torch(argv):
    """Through a fresh interpreter (this one has imported torch long ago): the help and version paths import neither
    torch nor numpy nor any problem or estimator module, exit 0, print to stdout and nothing to stderr."""
    code = ("import sys; from pgvar.cli import main; code = main(sys.argv[1:]); "
            f"print('LOADED', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr); "
            "sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert out.stderr.strip() == "LOADED []", out.stderr


def test_list_imports_the_registries_but_not_the_harness():
    """`pgvar list` needs the problems and estimators, not the harness, the metrics (scipy) or the store (pandas), and
    not torch: their modules `import torch` at their top but read none of its attributes at import time, so torch's
    import is never run (pgvar/deferred.py; a real import would leave torch and torch._C in sys.modules)."""
    code = ("import sys; from pgvar.cli import main; code = main(['list']); "
            "print('LOADED', sorted(m for m in ('scipy', 'pandas', 'bench.harness', 'bench.metrics', 'torch', "
            "'torch._C') if m in sys.modules), file=sys.stderr); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Estimators (--estimator NAME" in out.stdout, out.stderr
    assert out.stderr.strip() == "LOADED []", out.stderr


def test_help_through_the_installed_command():
    """The `%` of a help string once crashed argparse's formatting, only when the help was printed."""
    out = pgvar("--help")
    assert out.returncode == 0 and "measure" in out.stdout and out.stderr == "", out.stderr
    out = pgvar("measure", "--help")
    assert out.returncode == 0 and "95% CIs" not in out.stderr and "--reference-cache" in out.stdout, out.stderr


@pytest.mark.parametrize("error,shown", [
    (OSError(28, "No space left on device"), "pgvar: error: OSError: [Errno 28] No space left on device"),
    (ValueError("bad\nvalue"), "pgvar: error: ValueError: bad value"),
    (MemoryError(), "pgvar: error: out of memory: MemoryError"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 8000000000000 bytes."), "pgvar: error: out of memory: [enforce fail"),
])
def test_the_last_resort_guard_is_one_line_unless_debugging(error, shown, capsys, monkeypatch):
    def fail(_):
        raise error

    monkeypatch.setattr("pgvar.cli.cmd_list", fail)
    assert main(["list"]) == 2
    assert one_error_line(capsys).startswith(shown)
    monkeypatch.setenv("PGVAR_DEBUG", "1")
    with pytest.raises(type(error)):
        main(["list"])


def test_an_internal_runtime_error_keeps_its_traceback(monkeypatch):
    """Only allocator failures among RuntimeErrors are the user's to fix; any other is a bug to see."""
    def fail(_):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("pgvar.cli.cmd_list", fail)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["list"])


def test_check_memory_bounds_what_a_measurement_takes():
    """The estimate is meant as an upper bound: the peak resident memory a measurement adds stays below it
    (measured 174 MB against 237 MB here). In a child process whose peak (VmHWM) is reset first, so that
    neither the imports nor anything else counts."""
    script = ("from pathlib import Path; from bench.harness import check_memory, measure; from envs import make_problem\n"
              "def kb(key): return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(key))\n"
              "p = make_problem('frozenlake'); estimate = check_memory(p, 16, 1000)\n"
              "Path('/proc/self/clear_refs').write_text('5'); before = kb('VmRSS:')\n"
              "measure(p, 'reinforce', 16, 1000, 0, show_progress=False)\n"
              "print(estimate, (kb('VmHWM:') - before) * 1024)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    estimate, grown = map(float, out.stdout.split())
    assert 0 < grown < estimate < 10 * grown, (estimate, grown)


@pytest.mark.parametrize("option, exact, rounded", [
    ("baseline=constant:{}", 0.479401936, 0.479402),
    ("critic=oracle_noisy:{}", 0.123456789, 0.123457),
])
def test_number_options_run_with_every_digit_given(option, exact, rounded, capsys):
    """A `kind:<number>` value is used as given, not rounded to the 6 digits of its label. The constant
    baseline's estimate is affine in c, g(c) = g(0) + c·(g(1) − g(0)) on common random numbers, so the
    measured mean gradient must sit at c = 0.479401936 and not at 0.479402: float64 error of the affine
    reconstruction is ~1e-16 relative, the rounding moves it by (0.479402 − 0.479401936)·‖g(1) − g(0)‖."""
    def run(value) -> dict:
        args = ["measure", "--env", "softmax-bandit", "--estimator", "reinforce", "--batch-size", "4", "--reps", "20",
                "--seed", "0", "--json", "--est-opt", option.format(value)]
        if option.startswith("critic"):
            args += ["--est-opt", "baseline=value"]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out)

    record = run(exact)
    key, _, text = option.partition("=")
    assert record["estimator_options"][key] == text.format(exact)
    if key == "baseline":
        g0, g1 = (np.array(run(c)["mean_grad"]) for c in (0, 1))
        measured = np.array(record["mean_grad"])
        shift = np.linalg.norm((rounded - exact) * (g1 - g0))
        assert shift > 0
        assert np.linalg.norm(measured - (g0 + exact * (g1 - g0))) < 1e-3 * shift
        assert np.linalg.norm(measured - (g0 + rounded * (g1 - g0))) > 0.5 * shift


def test_a_deferred_module_runs_at_its_first_use_and_then_is_the_real_one(tmp_path, monkeypatch):
    """pgvar/deferred.py: inside the block `import` binds a stand-in; the module's code runs only when an attribute is
    read, which then returns the real value, and the real module is what sys.modules holds afterwards."""
    from pgvar.deferred import deferred_import

    runs = tmp_path / "runs"
    (tmp_path / "deferred_probe.py").write_text(f"open({str(runs)!r}, 'a').write('ran ')\nanswer = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "deferred_probe", raising=False)
    with deferred_import("deferred_probe"):
        import deferred_probe as used
        import deferred_probe as unused_twice  # noqa: F401 (a second import binds the same stand-in, runs nothing)
    assert not runs.exists() and "deferred_probe" not in sys.modules  # nothing read: nothing ran, nothing left
    assert used.answer == 42 and runs.read_text() == "ran "
    assert sys.modules["deferred_probe"].answer == 42 and used.answer == 42 and runs.read_text() == "ran "  # once
    with deferred_import("deferred_probe"):  # imported already: a no-op
        import deferred_probe as again
    assert again is sys.modules["deferred_probe"] and runs.read_text() == "ran "
    monkeypatch.delitem(sys.modules, "deferred_probe")
