"""Sweeps: config validation, expansion into cells, executors that agree, and a store that survives
SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.store import ResultsStore
from bench.sweep import expand, load_config, run_sweep
from envs.spec import ConfigError

SMALL = """
name = "small"
reps = 20
repetitions = 2
seed = 3
batch_sizes = [1, 4]

[[problems]]
env = "softmax-bandit"

[[problems]]
env = "garnet"
options = { states = 5, horizon = 10, gamma = 0.9 }
theta = "random:0.5:2"

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]
sweep.discount_score = [true, false]

[report]
pairs = [["reinforce baseline=rloo", "reinforce"]]
"""

# Cost and provenance columns legitimately differ between runs; everything else must be identical.
VOLATILE = ["seconds", "seconds_per_estimate"]


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def rows(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results).drop(columns=VOLATILE).sort_values("cell_id").reset_index(drop=True)


def test_expansion_counts_skips_and_shares_seeds(tmp_path):
    cells, skipped = expand(load_config(write(tmp_path, SMALL)))
    # 2 problems × 4 variants × 2 batch sizes × 2 repetitions = 32, less rloo at N = 1 (2 variants × 2 problems × 2)
    assert len(cells) == 32 - 8
    assert len(skipped) == 4 and all("needs batch_size ≥ 2" in s for s in skipped)
    assert len({c.cell_id for c in cells}) == len(cells)
    # common random numbers: the seed depends on (problem, θ, N, repetition), not on the variant
    by_key = {}
    for c in cells:
        by_key.setdefault((c.problem, c.batch_size, c.repetition), set()).add(c.seed)
    assert all(len(seeds) == 1 for seeds in by_key.values())
    assert len({next(iter(s)) for s in by_key.values()}) == len(by_key)


def test_estimator_tables_can_restrict_problems_and_batch_sizes(tmp_path):
    text = SMALL.replace("[report]", """[[estimators]]
name = "gae"
sweep.lambda = [0.0, 1.0]
problems = ["garnet"]
batch_sizes = [4, 8]

[report]""")
    config = load_config(write(tmp_path, text))
    assert config.name == "small"
    cells, _ = expand(config)
    gae = [c for c in cells if c.estimator == "gae"]
    assert len(gae) == 2 * 2 * 2  # λ × N × repetitions, on garnet only
    assert {c.env for c in gae} == {"garnet"} and {c.batch_size for c in gae} == {4, 8}
    garnet_seeds = {(c.batch_size, c.repetition): c.seed for c in cells if c.env == "garnet"}
    assert all(garnet_seeds[(c.batch_size, c.repetition)] == c.seed for c in gae if c.batch_size == 4)
    with pytest.raises(ConfigError, match=r"estimators\[1\].problems: expected a list of problem labels"):
        load_config(write(tmp_path, text.replace('problems = ["garnet"]', 'problems = ["nope"]')))
    with pytest.raises(ConfigError, match=r"estimators\[1\].batch_sizes: expected a non-empty list"):
        load_config(write(tmp_path, text.replace("batch_sizes = [4, 8]", "batch_sizes = []")))


@pytest.mark.parametrize("edit,message", [
    (("reps = 20", "reps = 1"), "sweep.toml: reps: expected an integer ≥ 2, got 1"),
    (("reps = 20", "reps = 20\nbogus = 1"), "sweep.toml: bogus: unknown key; allowed:"),
    (("batch_sizes = [1, 4]", "batch_sizes = [0]"), "batch_sizes: expected a non-empty list of integers ≥ 1"),
    (('env = "garnet"', 'env = "garnett"'), "problems[1].env: unknown env 'garnett'; valid: frozenlake"),
    (("gamma = 0.9", "gamma = 1.5"), "problems[1]: option gamma=1.5 for env garnet: expected a number in [0, 1]"),
    (('sweep.baseline = ["none", "rloo"]', 'sweep.baseline = ["none", "nope"]'),
     "estimators[0]: option baseline='nope' for estimator reinforce"),
    (('sweep.baseline = ["none", "rloo"]', 'sweep.baseline = "rloo"'), "estimators[0].sweep.baseline: expected a non-empty list"),
    (('theta = "random:0.5:2"', 'theta = "random:x"'), "problems[1].theta: expected 'default' or 'random:"),
    (('pairs = [["reinforce baseline=rloo", "reinforce"]]', 'pairs = [["reinforce baseline=optimal", "reinforce"]]'),
     "report: variant 'reinforce baseline=optimal' is not in the sweep"),
    (('name = "small"', 'name = "a/b"'), "name: expected a non-empty name"),
    (("[report]", "[reference]\nsamples = 10\n[report]"), "reference: reference samples=10: expected an integer ≥ 2 ×"),
    (("[report]", "[reference]\nsample = 10\n[report]"), "reference.sample: unknown key; allowed: batch_size, samples"),
])
def test_bad_config_is_one_clear_error(tmp_path, edit, message):
    old, new = edit
    assert old in SMALL
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, SMALL.replace(old, new)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such sweep config"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "reps = [", "bad.toml"))


def test_executors_give_identical_rows(tmp_path):
    config = load_config(write(tmp_path, SMALL))
    run_sweep(config, tmp_path / "a", executor="inprocess")
    run_sweep(config, tmp_path / "b", executor="processes", workers=2)
    run_sweep(config, tmp_path / "c", executor="dask", workers=2)
    a, b, c = rows(tmp_path / "a" / "small"), rows(tmp_path / "b" / "small"), rows(tmp_path / "c" / "small")
    assert len(a) == 24
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


SAMPLED = """
name = "sampled"
reps = 10
seed = 0
batch_sizes = [4]

[[problems]]
env = "cartpole"
options = { horizon = 10, hidden = [4] }

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[[estimators]]
name = "natural"

[reference]
samples = 256
batch_size = 16
"""


def test_sweep_on_a_problem_without_exact_gradient_shares_one_sampled_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("PGVAR_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(write(tmp_path, SAMPLED))
    cells, skipped = expand(config)
    assert len(cells) == 2 and len(skipped) == 1 and "no exact Fisher matrix" in skipped[0]
    run_sweep(config, tmp_path / "a", executor="processes", workers=2)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # computed once, before the workers started
    table = rows(tmp_path / "a" / "sampled")
    assert (table.reference_kind == "sampled").all() and (table.reference_samples == 256).all()
    assert table.reference_norm.nunique() == 1 and (table.bias_resolution > 0).all()
    assert (table.objective_se > 0).all() and table.objective.nunique() == 1


def test_sweeps_accept_gym_ids_and_name_bad_ones(tmp_path):
    text = SAMPLED.replace('env = "cartpole"', 'env = "gym:CartPole-v1"')
    cells, _ = expand(load_config(write(tmp_path, text)))
    assert {cell.env for cell in cells} == {"gym:CartPole-v1"} and len(cells) == 2
    with pytest.raises(ConfigError, match="problems\\[0\\].env: .*CartPole-v99"):
        load_config(write(tmp_path, SAMPLED.replace('env = "cartpole"', 'env = "gym:CartPole-v99"')))


def test_rerun_reuses_and_fresh_restarts(tmp_path):
    config = load_config(write(tmp_path, SMALL))
    first = run_sweep(config, tmp_path, executor="inprocess")
    meta = tmp_path / "small" / "_sweep.json"
    written = meta.stat().st_mtime_ns
    again = run_sweep(config, tmp_path, executor="inprocess")
    assert (first.ran, again.ran, again.reused) == (24, 0, 24)
    assert meta.stat().st_mtime_ns == written, "an unchanged sweep must not touch its files (the report depends on them)"
    assert run_sweep(config, tmp_path, executor="inprocess", fresh=True).ran == 24


def test_sigkill_mid_sweep_then_resume_gives_every_cell_once_and_same_numbers(tmp_path):
    """Kill the whole process group (parent and worker pool) with SIGKILL once some cells are
    written; the rerun must finish with each cell exactly once and the uninterrupted numbers."""
    text = SMALL.replace("reps = 20", "reps = 400").replace("repetitions = 2", "repetitions = 4")
    path = write(tmp_path, text)
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "bench", "sweep", str(path), "--results", str(killed_root), "--workers", "2"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ResultsStore(killed_root / "small")
    deadline = time.monotonic() + 120
    while len(store.finished()) < 5:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "no cell finished within 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = len(expand(load_config(path))[0])
    assert 5 <= len(store.finished()) < total, "the kill must interrupt the sweep"

    summary = run_sweep(load_config(path), killed_root, executor="processes", workers=2)
    assert summary.reused >= 5 and summary.reused + summary.ran == total
    files = sorted(p.name for p in (killed_root / "small").iterdir() if p.name.startswith("cell-"))
    assert len(files) == total == len(set(files))
    assert not list((killed_root / "small").glob(".*.tmp"))

    run_sweep(load_config(path), clean_root, executor="processes", workers=2)
    killed, clean = rows(killed_root / "small"), rows(clean_root / "small")
    assert killed["cell_id"].is_unique
    pd.testing.assert_frame_equal(killed, clean)
