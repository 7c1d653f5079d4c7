"""Training sweeps: the [train] table, its expansion into training runs (common random numbers), the rows they
store, executors that agree and a training sweep that survives SIGKILL with every run exactly once."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cells import NoiseCell, TrainCell, expand, expand_training, path_point, run, train_axes
from bench.sweep import load_config, run_sweep
from envs import make_problem
from envs.spec import ConfigError
from tests.sweeps import kill_then_resume, set_keys, stored_rows, write

TINY = """
name = "tt"
seed = 1
batch_sizes = [1, 4]

[[problems]]
env = "softmax-bandit"

[[problems]]
env = "lqr"
options = { horizon = 5 }

[[estimators]]
name = "exact"

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[train]
lr = [0.1, 10.0]
budget = 16
seeds = 2
"""

# The same tables as a measurement sweep (no [train] table).
MEASUREMENT = TINY.replace("[train]\nlr = [0.1, 10.0]\nbudget = 16\nseeds = 2\n", "").replace("seed = 1", "seed = 1\nreps = 10")
assert MEASUREMENT != TINY and "[train]" not in MEASUREMENT

# The run's wall time legitimately differs between runs; everything else must be identical.
VOLATILE = ["seconds"]

# The stored schema of a training run (the report reads exactly these columns; provenance comes after them).
TRAIN_COLUMNS = [
    "kind", "cell_id", "sweep", "problem", "env", "env_options", "theta", "estimator", "variant", "estimator_options",
    "optimizer", "lr", "batch_size", "budget", "seed_index", "seed", "updates", "J0", "J_star", "final_J",
    "final_score", "auc", "samples_to_50", "samples_to_90", "updates_to_50", "updates_to_90", "failed",
    "failed_defined", "diverged", "diverged_at", "nonfinite", "env_steps", "seconds", "curve_updates",
    "curve_samples", "curve_J", "curve_score", "curve_grad_norm", "arm_outcome"]


def rows(results: Path) -> pd.DataFrame:
    return stored_rows(results, VOLATILE)


def test_expansion_counts_skips_and_common_random_numbers(tmp_path):
    cells, skipped = expand_training(load_config(write(tmp_path, TINY)))
    # 2 problems × 3 variants × 2 N × 2 lr × 2 seeds = 48, less rloo at N = 1 (2 problems × 2 lr × 2 seeds)
    assert len(cells) == 48 - 8 and all(isinstance(c, TrainCell) for c in cells)
    assert len(skipped) == 2 and all("N=1" in s and "needs batch_size ≥ 2" in s for s in skipped)
    assert len({c.cell_id for c in cells}) == len(cells)
    # the seed is a function of (problem, seed index) only: shared by every variant, lr and N (CRN)
    seeds = {}
    for c in cells:
        seeds.setdefault((c.problem, c.seed_index), set()).add(c.seed)
    assert all(len(s) == 1 for s in seeds.values()) and len(seeds) == 4
    assert len({next(iter(s)) for s in seeds.values()}) == 4  # distinct across problems and seed indices
    bandit = [c for c in cells if c.problem == "softmax-bandit" and c.seed_index == 1]
    assert {c.variant for c in bandit} == {"exact", "reinforce", "reinforce baseline=rloo"}
    assert {c.lr for c in bandit} == {0.1, 10.0} and {c.batch_size for c in bandit} == {1, 4}
    assert all(c.budget == 16 and c.optimizer == "sgd" for c in cells)


def test_training_cell_ids_and_seeds_are_pinned(tmp_path):
    # Finished cells are reused by id (test_sweep.py pins the measurement cells'): these are the ids and seeds of the
    # code before noise_path existed (15967e8), on problems whose options have not changed since. A noise-scale cell at
    # θ₀ (path_score 0, the default) keeps its id; a point further along the path is a cell of its own.
    text = set_keys(TINY.replace('env = "softmax-bandit"', 'env = "garnet"\noptions = { states = 5, horizon = 10, '
                                                           'gamma = 0.9 }'), "train", noise_reps=20)
    cells = expand_training(load_config(write(tmp_path, text)))[0]
    pinned = {TrainCell: (40, "72b98a9c397de5dc608f8bd07e52ecefe08b56d48b2bb2c2d5a6862afd1e8102"),
              NoiseCell: (10, "5802118a93816c919fa70ca7f00a193efebe19a08dd2cea8ea3ac8a20a48a2bb")}
    for kind, (count, digest) in pinned.items():
        of_kind = [c for c in cells if isinstance(c, kind)]
        every = " ".join(f"{c.cell_id}:{c.seed}" for c in of_kind)
        assert (len(of_kind), hashlib.sha256(every.encode()).hexdigest()) == (count, digest), kind.__name__
    along = expand_training(load_config(write(tmp_path, set_keys(text, "train", noise_path=[0, 0.5]))))[0]
    at_start = {c.cell_id for c in cells if isinstance(c, NoiseCell)}
    further = {c.cell_id for c in along if isinstance(c, NoiseCell) and c.path_score == 0.5}
    assert at_start < {c.cell_id for c in along} and len(further) == 10 and not further & at_start


def test_log_grid_and_optimizers(tmp_path):
    text = set_keys(TINY, "train", lr={"low": 0.01, "high": 10.0, "count": 7}, optimizers=["sgd", "adam"])
    config = load_config(write(tmp_path, text))
    assert config.train.lr == (0.01, 0.0316227766017, 0.1, 0.316227766017, 1.0, 3.16227766017, 10.0)
    assert config.train.optimizers == ("sgd", "adam") and (config.reps, config.repetitions) == (0, 0)
    cells, _ = expand_training(config)
    assert len(cells) == 40 * 7 // 2 * 2  # (48 − 8) runs at 2 lrs → 7 lrs × 2 optimizers
    same = {(c.optimizer, c.lr, c.seed) for c in cells if c.problem == "lqr horizon=5" and c.seed_index == 0}
    assert len({seed for _, _, seed in same}) == 1


OWN_TRAIN = ('name = "exact"', 'name = "exact"\ntrain = { lr = [0.5], seeds = 3, budget = 8 }')


def test_an_estimator_table_may_carry_its_own_train_settings(tmp_path):
    """Its `train` keys replace the sweep's for its runs only; the others keep the [train] table's."""
    cells, _ = expand_training(load_config(write(tmp_path, TINY.replace(*OWN_TRAIN))))
    exact = [c for c in cells if c.variant == "exact"]
    others = [c for c in cells if c.variant != "exact"]
    assert len(exact) == 2 * 2 * 1 * 3  # 2 problems × 2 N × 1 lr × 3 seeds
    assert {(c.lr, c.budget) for c in exact} == {(0.5, 8)} and {c.seed_index for c in exact} == {0, 1, 2}
    assert len(others) == 40 - 16 and {c.lr for c in others} == {0.1, 10.0} and {c.budget for c in others} == {16}
    # seed index 0 of a problem is the same stream whatever table its run comes from (common random numbers)
    assert len({c.seed for c in cells if c.problem == "lqr horizon=5" and c.seed_index == 0}) == 1


def test_train_axes_record_the_noise_reps_of_the_planned_noise_cells(tmp_path):
    """An estimator table's own noise_reps is what its noise-scale cells use, and what `_sweep.json`'s axes say, not
    the [train] table's value (0 here: no noise scale but for the table that asks for one)."""
    own = TINY.replace('name = "exact"', 'name = "exact"\ntrain = { noise_reps = 30 }')
    cells = expand_training(load_config(write(tmp_path, own)))[0]
    assert {c.reps for c in cells if isinstance(c, NoiseCell)} == {30}
    assert train_axes(cells)["noise_reps"] == [30]
    both = expand_training(load_config(write(tmp_path, set_keys(own, "train", noise_reps=20))))[0]
    assert train_axes(both)["noise_reps"] == [20, 30]


@pytest.mark.parametrize("own,message", [
    ("train = { lr = [-1] }", "estimators[0].train.lr: expected a non-empty list of at most 1000 learning rates"),
    ("train = { seeds = 1 }", "estimators[0].train.seeds: expected an integer ≥ 2 and ≤ 100000, got 1"),
    ("train = { steps = 3 }", "estimators[0].train.steps: unknown key; allowed: budget"),
    ("train = 3", "estimators[0].train: expected a table"),
])
def test_bad_own_train_settings_are_one_clear_error(tmp_path, own, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, TINY.replace('name = "exact"', f'name = "exact"\n{own}')))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_own_train_settings_in_a_measurement_sweep_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"estimators\[0\]\.train: applies only to a training sweep"):
        load_config(write(tmp_path, MEASUREMENT.replace(*OWN_TRAIN), "m.toml"))


def test_a_measurement_config_expands_as_before_and_ids_never_collide(tmp_path):
    config = load_config(write(tmp_path, MEASUREMENT, "m.toml"))
    assert config.train is None and not config.is_training
    measured = {c.cell_id for c in expand(config)[0]}
    trained = {c.cell_id for c in expand_training(load_config(write(tmp_path, TINY)))[0]}
    assert measured and not measured & trained


@pytest.mark.parametrize("edit,message", [
    (("lr = [0.1, 10.0]", ""), "train.lr: expected a list of learning rates or a log grid"),
    (("lr = [0.1, 10.0]", "lr = [0.1, -1]"), "train.lr: expected a non-empty list of at most 1000 learning rates, "
                                             "each a number in [0, ∞)"),
    (("lr = [0.1, 10.0]", "lr = []"), "train.lr: expected a non-empty list"),
    (("lr = [0.1, 10.0]", 'lr = "0.1"'), "train.lr: expected a non-empty list"),
    (("lr = [0.1, 10.0]", "lr = { low = 0, high = 1, count = 5 }"), "train.lr.low: expected a number in (0, ∞), got 0"),
    (("lr = [0.1, 10.0]", "lr = { low = 1, high = 0.1, count = 5 }"), "train.lr.high: expected a number above low=1"),
    (("lr = [0.1, 10.0]", "lr = { low = 0.1, high = 1, count = 1 }"),
     "train.lr.count: expected an integer ≥ 2 and ≤ 1000, got 1"),
    (("lr = [0.1, 10.0]", "lr = { low = 0.1, high = 1 }"), "train.lr.count: missing; a log grid is {low, high, count}"),
    (("lr = [0.1, 10.0]", "lr = { low = 0.1, high = 1, count = 3, base = 2 }"), "train.lr.base: unknown key; allowed: "
                                                                               "count, high, low"),
    (("seeds = 2", "seeds = 1"), "train.seeds: expected an integer ≥ 2 and ≤ 100000, got 1"),
    (("seeds = 2", "seeds = 2.5"), "train.seeds: expected an integer ≥ 2"),
    (("budget = 16", "budget = 0"), "train.budget: expected an integer ≥ 1, got 0"),
    (("budget = 16", "budget = 2"), "batch size 4 is above train.budget=2"),
    (("seeds = 2", 'seeds = 2\noptimizers = ["rmsprop"]'), "train.optimizers: expected a non-empty list, each one of "
                                                           "sgd, adam, got ['rmsprop']"),
    (("seeds = 2", "seeds = 2\noptimizers = []"), "train.optimizers: expected a non-empty list"),
    (("seeds = 2", "seeds = 2\neval_every = 0"), "train.eval_every: expected an integer ≥ 1, got 0"),
    (("seeds = 2", "seeds = 2\neval_episodes = 1"), "train.eval_episodes: expected an integer ≥ 2, got 1"),
    (("seeds = 2", "seeds = 2\nnoise_reps = 1"), "train.noise_reps: expected 0 (no noise-scale measurement) or an "
                                                 "integer ≥ 2, got 1"),
    (("seeds = 2", "seeds = 2\nnoise_reps = -3"), "train.noise_reps: expected an integer ≥ 0"),
    (("seeds = 2", "seeds = 2\nsteps = 3"), "train.steps: unknown key; allowed: budget, eval_episodes, eval_every, "
                                            "lr, noise_path, noise_reps, optimizers, seeds"),
    (("seed = 1", "seed = 1\nreps = 10"), "reps: applies only to a measurement sweep; this one has a [train] table"),
    (("seed = 1", "seed = 1\nrepetitions = 3"), "repetitions: applies only to a measurement sweep"),
    (("[train]", "[report]\npairs = [['natural', 'exact']]\n[train]"), "report: variant 'natural' is not in the sweep"),
])
def test_bad_train_values_are_one_clear_error(tmp_path, edit, message):
    old, new = edit
    assert old in TINY
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, TINY.replace(old, new)))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "sweep.toml"))


def test_rows_follow_the_schema_and_a_diverged_run_is_kept(tmp_path):
    config = load_config(write(tmp_path, TINY))
    summary = run_sweep(config, tmp_path, executor="inprocess")
    assert (summary.cells, summary.ran, summary.failed) == (40, 40, [])
    table = pd.read_parquet(tmp_path / "tt")
    assert len(table) == 40 and table["cell_id"].is_unique and (table["kind"] == "train").all()
    assert list(table.columns[:len(TRAIN_COLUMNS)]) == TRAIN_COLUMNS
    assert {"git_commit", "torch_version"} <= set(table.columns)
    for column, kind in [("lr", "f"), ("J_star", "f"), ("samples_to_90", "f"), ("updates", "i"), ("diverged_at", "i"),
                         ("env_steps", "i"), ("failed", "b"), ("failed_defined", "b"), ("diverged", "b")]:
        assert table[column].dtype.kind == kind, column
    first = table[~table["diverged"]].iloc[0]  # exact J at every update k = 0 … K
    assert len(first["curve_updates"]) == len(first["curve_J"]) == len(first["curve_score"]) == first["updates"] + 1
    assert list(first["curve_samples"]) == [k * first["batch_size"] for k in first["curve_updates"]]
    bandit = table[table.problem == "softmax-bandit"]
    assert np.allclose(bandit["J_star"], 0.9) and (bandit["failed_defined"]).all()
    assert (table["updates"] == 16 // table["batch_size"]).where(~table["diverged"], True).all()
    # the exact control is deterministic: every seed of a (problem, N, lr) gives the same final score
    exact = bandit[bandit.variant == "exact"].groupby(["batch_size", "lr"])["final_score"].nunique()
    assert (exact == 1).all()
    # large steps on LQR diverge: each such run is stored, marked and scored worst
    diverged = table[table["diverged"]]
    assert set(diverged["problem"]) == {"lqr horizon=5"}
    assert table.loc[(table.problem == "lqr horizon=5") & (table.lr == 10.0), "diverged"].mean() > 0.5
    assert (diverged["final_score"] == -math.inf).all() and (diverged["auc"] == -math.inf).all()
    assert (diverged["failed"]).all() and (diverged["diverged_at"] >= 0).all()
    assert (table.loc[~table["diverged"], "diverged_at"] == -1).all()
    # censored samples-to-target are NaN, never a number
    never = table[table["final_score"] < 0.5]
    assert never["samples_to_90"].isna().all()

    meta = json.loads((tmp_path / "tt" / "_sweep.json").read_text())
    assert meta["kind"] == "train" and meta["cells"] == 40
    assert meta["cell_ids"] == [c.cell_id for c in expand_training(config)[0]]
    assert meta["config"]["train"]["lr"] == [0.1, 10.0] and meta["config"]["train"]["seeds"] == 2
    axes = meta["train_axes"]
    assert axes["lr"] == [0.1, 10.0] and axes["batch_sizes"] == [1, 4] and axes["seed_indices"] == [0, 1]
    assert axes["optimizers"] == ["sgd"] and axes["budget"] == [16] and len(axes["train_cell_ids"]) == 40
    assert axes["noise_cell_ids"] == [] and axes["noise_reps"] == [] and axes["problems"] == ["softmax-bandit",
                                                                                              "lqr horizon=5"]

    again = run_sweep(config, tmp_path, executor="inprocess")
    assert (again.ran, again.reused) == (0, 40)


def test_a_measurement_sweep_records_no_train_key(tmp_path):
    config = load_config(write(tmp_path, MEASUREMENT.replace('sweep.baseline = ["none", "rloo"]', ""), "m.toml"))
    run_sweep(config, tmp_path, executor="inprocess")
    text = (tmp_path / "tt" / "_sweep.json").read_text()
    meta = json.loads(text)
    assert "train" not in meta["config"] and "kind" not in meta and "train_axes" not in meta
    assert not any("train" in table for table in meta["config"]["estimators"]) and "null" not in text


def test_a_training_sweep_records_only_what_applies_to_it(tmp_path):
    run_sweep(load_config(write(tmp_path, set_keys(TINY.replace(*OWN_TRAIN), "train", budget=8))), tmp_path,
              executor="inprocess")
    text = (tmp_path / "tt" / "_sweep.json").read_text()
    config = json.loads(text)["config"]
    assert not {"reps", "repetitions", "reference"} & set(config) and "null" not in text
    own, plain = config["estimators"]
    assert own["train"]["lr"] == [0.5] and own["train"]["seeds"] == 3 and "train" not in plain
    assert "repetitions" not in own and "repetitions" not in plain


def test_executors_give_identical_training_rows(tmp_path):
    config = load_config(write(tmp_path, set_keys(TINY, "train", optimizers=["adam"])))
    run_sweep(config, tmp_path / "a", executor="inprocess")
    run_sweep(config, tmp_path / "b", executor="processes", workers=2)
    run_sweep(config, tmp_path / "c", executor="dask", workers=2)
    a, b, c = rows(tmp_path / "a" / "tt"), rows(tmp_path / "b" / "tt"), rows(tmp_path / "c" / "tt")
    assert len(a) == 40
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_a_failing_run_fails_alone_and_is_recorded(tmp_path):
    # θ₀ with log σ ≈ 640: J(θ₀) is not finite, so every lqr run raises when it starts; the bandit runs finish
    text = TINY.replace('options = { horizon = 5 }', 'options = { horizon = 5 }\ntheta = "random:1000:0"')
    config = load_config(write(tmp_path, text))
    summary = run_sweep(config, tmp_path, executor="inprocess")
    assert len(summary.failed) == 20 and summary.ran == 40
    record = summary.failed[0]
    assert record["kind"] == "train" and record["problem"] == "lqr horizon=5" and "seed_index" in record
    assert len(list((tmp_path / "tt").glob("_failed-*.json"))) == 20
    assert len(pd.read_parquet(tmp_path / "tt")) == 20


def test_sigkill_mid_training_sweep_then_resume_gives_every_run_once_and_same_numbers(tmp_path):
    """Kill the whole process group (parent and worker pool) with SIGKILL once some runs are written; the rerun
    must finish with each run exactly once and the uninterrupted numbers."""
    path = write(tmp_path, set_keys(TINY, "train", budget=256, seeds=4))
    kill_then_resume(path, tmp_path, "tt", len(expand_training(load_config(path))[0]), rows)


def test_the_cli_runs_a_training_sweep_with_progress_lines(tmp_path):
    path = write(tmp_path, TINY)
    # stderr is a pipe, not a tty: a progress line every PGVAR_PROGRESS_SECONDS (none under CI=true, none at the end)
    env = {**{k: v for k, v in os.environ.items() if k != "CI"}, "PGVAR_PROGRESS_SECONDS": "0.02"}
    done = subprocess.run([sys.executable, "-m", "pgvar", "sweep", str(path), "--results", str(tmp_path),
                           "--executor", "inprocess"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "sweep tt: 40 cells, 40 run, 0 reused" in done.stdout
    assert re.search(r"^sweep tt: cells: \d+/40 \(\d+%\), \d+ s elapsed", done.stderr, re.MULTILINE), done.stderr
    assert "skipped 2 combinations" in done.stderr


def test_a_noise_scale_cell_per_problem_variant_and_batch_size(tmp_path):
    pytest.importorskip("bench.noise_scale")
    text = set_keys(TINY, "train", noise_reps=20, lr=[0.1])
    config = load_config(write(tmp_path, text))
    cells, skipped = expand_training(config)
    noise = [c for c in cells if isinstance(c, NoiseCell)]
    # 2 problems × (exact, reinforce at N ∈ {1, 4}; rloo at N = 4): 2 × 5; the seed is shared by the variants of (problem, N)
    assert len(noise) == 10 and all(c.reps == 20 for c in noise)
    by_key = {}
    for c in noise:
        by_key.setdefault((c.problem, c.batch_size), set()).add(c.seed)
    assert all(len(s) == 1 for s in by_key.values()) and len(by_key) == 4
    cell = next(c for c in noise if c.problem == "softmax-bandit" and c.variant == "reinforce baseline=rloo")
    row = run(cell)
    assert row["kind"] == "noise_scale" and row["cell_id"] == cell.cell_id and row["variant"] == cell.variant
    assert row["batch_size"] == 4 and row["reps"] == 20 and "optimizer" not in row and "lr" not in row
    for key in ("grad_norm_sq", "trace_sigma", "b_simple", "curvature", "trace_h_sigma", "b_noise", "eps_max",
                "eps_opt", "step_length", "model_applies", "nonfinite"):
        assert key in row, key
    assert row["grad_norm_sq"] > 0 and row["trace_sigma"] > 0
    assert math.isclose(row["b_simple"], 4 * row["trace_sigma"] / row["grad_norm_sq"], rel_tol=1e-9)
    meta_axes_ids = {c.cell_id for c in noise}
    summary = run_sweep(load_config(write(tmp_path, text.replace('name = "tt"', 'name = "tn"'), "n.toml")), tmp_path,
                        executor="inprocess")
    assert summary.failed == [] and summary.cells == len(cells)
    meta = json.loads((tmp_path / "tn" / "_sweep.json").read_text())
    assert len(meta["train_axes"]["noise_cell_ids"]) == len(meta_axes_ids)


def test_noise_scale_along_the_exact_gradient_path(tmp_path):
    """noise_path = [0, 0.5]: one cell per point; the s = 0.5 cell measures at a θ of the exact-gradient path whose
    normalized score is ≥ 0.5 (and within a few path steps of it), the θ₀ cell at θ₀."""
    text = set_keys(TINY, "train", noise_reps=20, noise_path=[0.5, 0], lr=[0.1])
    config = load_config(write(tmp_path, text))
    assert config.train.noise_path == (0.0, 0.5)
    noise = [c for c in expand_training(config)[0] if isinstance(c, NoiseCell)]
    assert len(noise) == 20 and {c.path_score for c in noise} == {0.0, 0.5}
    at = {c.path_score: c for c in noise if c.problem == "lqr horizon=5" and c.variant == "reinforce"
          and c.batch_size == 4}
    start, half = run(at[0.0]), run(at[0.5])
    assert (start["path_target"], start["path_score"], start["path_steps"], start["path_reached"]) == (0.0, 0.0, 0, True)
    assert half["path_target"] == 0.5 and half["path_reached"] and 0.5 <= half["path_score"] < 0.6
    assert half["path_steps"] > 0 and half["grad_norm_sq"] < start["grad_norm_sq"]


def test_the_path_point_is_computed_once_for_every_variant_and_batch_size(tmp_path):
    """path_point caches exact_path_point per (problem, θ₀, score): the noise cells of every variant and N there share
    one computation, and after they ran it is still the point a fresh computation gives (no cell changed its θ)."""
    from bench.noise_scale import exact_path_point

    text = set_keys(TINY, "train", noise_reps=20, noise_path=[0.5], lr=[0.1])
    noise = [c for c in expand_training(load_config(write(tmp_path, text)))[0]
             if isinstance(c, NoiseCell) and c.problem == "lqr horizon=5"]
    assert len(noise) == 5 and {c.path_score for c in noise} == {0.5}
    path_point.cache_clear()
    rows = [run(c) for c in noise]
    assert (path_point.cache_info().misses, path_point.cache_info().hits) == (1, 4)
    problem = make_problem("lqr", {"horizon": 5})
    fresh = exact_path_point(problem, problem.default_theta(), 0.5)
    cached = path_point(noise[0].env, noise[0].env_options, noise[0].theta, 0.5)
    assert torch.equal(cached.theta, fresh.theta) and (cached.score, cached.steps) == (fresh.score, fresh.steps)
    assert {(r["path_score"], r["path_steps"]) for r in rows} == {(fresh.score, fresh.steps)}


@pytest.mark.parametrize("value,message", [("[1.0]", "train.noise_path: expected a non-empty list of at most 20 "
                                                     "normalized scores, each a number in [0, 0.99]"),
                                           ("[]", "train.noise_path: expected a non-empty list"),
                                           ("0.5", "train.noise_path: expected a non-empty list")])
def test_bad_noise_path_is_one_clear_error(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, TINY.replace("seeds = 2", f"seeds = 2\nnoise_path = {value}")))
    assert message in str(err.value)


def test_a_bad_sweep_train_value_is_named_in_train_even_with_an_estimator_override(tmp_path):
    text = set_keys(TINY.replace(*OWN_TRAIN), "train", seeds=1)
    assert 'train = { lr = [0.5], seeds = 3, budget = 8 }' in text and "\nseeds = 1\n" in text
    with pytest.raises(ConfigError, match=r"sweep.toml: train.seeds: expected an integer ≥ 2"):
        load_config(write(tmp_path, text))
