"""Sweeps: config validation, expansion into cells, executors that agree, and a store that survives
SIGKILL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cells import expand, expand_training
from bench.store import ResultsStore
from bench.sweep import load_config, run_sweep, sweep_meta
from envs.spec import ConfigError
from reports.families import parse_tables
from tests.sweeps import kill_then_resume, stored_rows, write

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


def rows(results: Path) -> pd.DataFrame:
    return stored_rows(results, VOLATILE)


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


def test_cell_ids_and_seeds_are_pinned(tmp_path):
    # Finished cells are reused by id: a refactor that changed a Cell's fields, their order or values, the
    # seed derivation or the expansion order would silently recompute (or mix) every stored result.
    cells, _ = expand(load_config(write(tmp_path, SMALL)))
    first = cells[0]
    assert (first.problem, first.variant, first.batch_size, first.repetition) == ("softmax-bandit", "reinforce", 1, 0)
    # re-pinned once when softmax-bandit gained its `rewards` option (its resolved options, part of the problem's
    # identity, now say rewards=bernoulli): its cells have new ids and seeds, every other problem's are unchanged
    assert (first.cell_id, first.seed) == ("3dba821c4be730054976", 8150408033578492768)
    assert (cells[-1].cell_id, cells[-1].seed) == ("0a23422c48d2a5e13b09", 4330662659331777322)
    every = " ".join(f"{c.cell_id}:{c.seed}" for c in cells)
    assert hashlib.sha256(every.encode()).hexdigest() == \
        "429b1653d8694541e757c060ec841664b9a13ea2458ec6f9e19b5e52aac8002a"


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


def test_batch_sizes_an_estimator_tables_own_win_then_the_problems_then_the_sweeps(tmp_path):
    # garnet has its own N range; softmax-bandit has none (the sweep's [1, 4]); the gae table has its own [4], which
    # applies on every problem it runs on, garnet too
    text = SMALL.replace('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = [2, 8]').replace(
        "[report]", '[[estimators]]\nname = "gae"\nbatch_sizes = [4]\n\n[report]')
    config = load_config(write(tmp_path, text))
    cells, _ = expand(config)
    sizes = {(c.env, c.estimator): set() for c in cells}
    for c in cells:
        sizes[(c.env, c.estimator)].add(c.batch_size)
    assert sizes == {("softmax-bandit", "reinforce"): {1, 4}, ("garnet", "reinforce"): {2, 8},
                     ("softmax-bandit", "gae"): {4}, ("garnet", "gae"): {4}}
    # a problem's range is shorthand: the same cells (ids, seeds, order) as estimator tables restricted to it
    spelled_out = SMALL.replace("[[estimators]]", '[[estimators]]\nproblems = ["softmax-bandit"]', 1).replace(
        "[report]", '[[estimators]]\nname = "reinforce"\nsweep.baseline = ["none", "rloo"]\n'
                    'sweep.discount_score = [true, false]\nproblems = ["garnet"]\n'
                    'batch_sizes = [2, 8]\n\n[[estimators]]\nname = "gae"\nbatch_sizes = [4]\n\n[report]')
    assert expand(load_config(write(tmp_path, spelled_out, "spelled.toml")))[0] == cells
    # recorded in _sweep.json only where set, so a sweep without it keeps the record it had; the report reads from
    # the record the N each table is configured for (its coverage findings) as the expansion chose them
    meta = json.loads(json.dumps(sweep_meta(config, cells)))
    assert [p.get("batch_sizes") for p in meta["config"]["problems"]] == [None, [2, 8]]
    tables = parse_tables(meta["config"]["estimators"], meta["config"]["batch_sizes"], meta["table_variants"],
                          meta["config"]["problems"])
    assert [set(t.batch_sizes) for t in tables] == [{1, 4, 2, 8}, {4}]
    # where no table uses it (each one running on garnet has its own) it would be ignored: refused
    unused = text.replace("sweep.discount_score = [true, false]", "sweep.discount_score = [true, false]\n"
                                                                  "batch_sizes = [1]")
    with pytest.raises(ConfigError, match=r"^[^\n]*sweep.toml: problems\[1\]\.batch_sizes: apply to no "
                                          r"\[\[estimators\]\] table: a table's own batch_sizes win, and every "
                                          r"table running on 'garnet' has its own$"):
        load_config(write(tmp_path, unused))


def test_a_problems_batch_sizes_apply_in_a_training_sweep_as_an_estimator_tables_do(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "configs" / "train.toml").read_text()
    base = load_config(write(tmp_path, text))
    first = base.problems[0].label or base.problems[0].env
    assert 16 not in base.batch_sizes
    cells, _ = expand_training(load_config(write(tmp_path, text.replace("[[problems]]\n",
                                                                        "[[problems]]\nbatch_sizes = [16]\n", 1))))
    assert {c.batch_size for c in cells if c.problem == first} == {16}
    assert [c for c in cells if c.problem != first] == [c for c in expand_training(base)[0] if c.problem != first]


# configs/default.toml as it was before its REINFORCE tables were merged into one per variant with each problem's
# N range on its [[problems]] table (commit 16ea91f): the count and sha256 of its sorted "cell_id:seed" strings,
# printed by expanding that file. The rewrite had to keep every cell; finished results stay reusable by id.
DEFAULT_CELLS = 1977
DEFAULT_CELLS_DIGEST = "24888c5cee4ad6057a32297109ac63fdd8daf88a0f4c07ba36f0fbedcc0eaaa2"


def test_the_default_config_expands_to_the_cells_it_always_had():
    cells, skipped = expand(load_config(Path(__file__).resolve().parents[1] / "configs" / "default.toml"))
    every = " ".join(sorted(f"{c.cell_id}:{c.seed}" for c in cells))
    assert (len(cells), hashlib.sha256(every.encode()).hexdigest()) == (DEFAULT_CELLS, DEFAULT_CELLS_DIGEST)
    assert len(skipped) == 25  # rloo, batch_mean, optimal(_per_param) at N = 1 on the problems measured from N = 1


def test_a_table_with_its_own_repetitions_adds_seeds_and_leaves_every_other_cell_alone(tmp_path):
    # A block of the sweep repeated 10 times (for rliable) must not move the ids or seeds of any other cell: finished
    # cells are reused by id. Its repetitions 0, 1 are the sweep's cells of the same variant (the same id, kept once);
    # 2..9 have seeds of their own, shared by every variant of that (problem, N, repetition) (common random numbers).
    base, _ = expand(load_config(write(tmp_path, SMALL)))
    block = SMALL.replace("[report]", """[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]
problems = ["garnet"]
batch_sizes = [4]
repetitions = 10

[[estimators]]
name = "gae"
problems = ["garnet"]
batch_sizes = [4]
repetitions = 10

[report]""")
    cells, _ = expand(load_config(write(tmp_path, block)))
    assert cells[:len(base)] == base  # the same cells, ids and seeds, in the same order
    added = cells[len(base):]
    # reinforce (none, rloo) × 8 new repetitions, gae × 10 (it is new at every repetition)
    assert len(added) == 2 * 8 + 10 and {c.problem for c in added} == {"garnet states=5 gamma=0.9 horizon=10"}
    seeds = {}
    for c in cells:
        if c.env == "garnet" and c.batch_size == 4:
            assert seeds.setdefault(c.repetition, c.seed) == c.seed  # one seed per repetition, for every variant
    assert sorted(seeds) == list(range(10)) and len(set(seeds.values())) == 10
    # a sweep-wide repetitions = 10 gives the block's cells the very same ids
    wide, _ = expand(load_config(write(tmp_path, SMALL.replace("repetitions = 2", "repetitions = 10"))))
    assert {c.cell_id for c in added if c.estimator == "reinforce"} <= {c.cell_id for c in wide}


def test_own_repetitions_apply_only_to_a_measurement_sweep(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "configs" / "train.toml").read_text()
    text = text.replace("[[estimators]]\n", "[[estimators]]\nrepetitions = 10\n", 1)
    with pytest.raises(ConfigError, match=r"^[^\n]*estimators\[0\]\.repetitions: applies only to a measurement sweep"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("edit,message", [
    (("reps = 20", "reps = 1"), "sweep.toml: reps: expected an integer ≥ 2, got 1"),
    (("reps = 20", "reps = 20\nbogus = 1"), "sweep.toml: bogus: unknown key; allowed:"),
    (("batch_sizes = [1, 4]", "batch_sizes = [0]"), "batch_sizes: expected a non-empty list of batch sizes, each an integer ≥ 1"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = [0]'),
     "sweep.toml: problems[1].batch_sizes: expected a non-empty list of batch sizes, each an integer ≥ 1, got [0]"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = []'),
     "sweep.toml: problems[1].batch_sizes: expected a non-empty list of batch sizes, each an integer ≥ 1, got []"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = 4'),
     "sweep.toml: problems[1].batch_sizes: expected a non-empty list of batch sizes, each an integer ≥ 1, got 4"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = [4, 2.5]'),
     "sweep.toml: problems[1].batch_sizes: expected a non-empty list of batch sizes, each an integer ≥ 1, got [4, 2.5]"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:2"\nbatch_sizes = [1000000000000]'), "N=1000000000000"),
    (('env = "garnet"', 'env = "garnett"'), "problems[1].env: unknown env 'garnett'; valid: frozenlake"),
    (("gamma = 0.9", "gamma = 1.5"), "problems[1]: option gamma=1.5 for env garnet: expected a number in [0, 1]"),
    (('sweep.baseline = ["none", "rloo"]', 'sweep.baseline = ["none", "nope"]'),
     "estimators[0]: option baseline='nope' for estimator reinforce"),
    (('sweep.baseline = ["none", "rloo"]', 'sweep.baseline = "rloo"'), "estimators[0].sweep.baseline: expected a non-empty list"),
    (('theta = "random:0.5:2"', 'theta = "random:x"'), "problems[1].theta: expected 'default' or 'random:"),
    (('pairs = [["reinforce baseline=rloo", "reinforce"]]', 'pairs = [["reinforce baseline=optimal", "reinforce"]]'),
     "report: variant 'reinforce baseline=optimal' is not in the sweep"),
    (('name = "small"', 'name = "a/b"'), "name: expected a plain name (letters, digits, '-', '_' and '.' (not "
                                         "first), at most 100 characters), got 'a/b'"),
    (('name = "small"', 'name = ".."'), "name: expected a plain name"),
    (('name = "small"', 'name = "."'), "name: expected a plain name"),
    (('name = "small"', 'name = ""'), "name: expected a plain name"),
    (('name = "small"', 'name = ".hidden"'), "name: expected a plain name"),
    (('name = "small"', 'name = "a b"'), "name: expected a plain name"),
    (('name = "small"', 'name = 3'), "name: expected a plain name"),
    (('theta = "random:0.5:2"', 'theta = "random:inf:2"'), "problems[1].theta: expected 'default' or 'random:<finite"),
    (('theta = "random:0.5:2"', 'theta = "random:nan:2"'), "problems[1].theta: expected 'default' or 'random:<finite"),
    (('theta = "random:0.5:2"', 'theta = "random:1e400:0"'), "problems[1].theta: expected"),
    (('theta = "random:0.5:2"', 'theta = "random:0.5:-1"'), "problems[1].theta: expected"),
    (('theta = "random:0.5:2"', 'theta = 3'), "problems[1].theta: expected"),
    # finite scale, but θ = default + N(0, 1e308²) overflows to ±inf
    (('theta = "random:0.5:2"', 'theta = "random:1e308:0"'), "problems[1] (garnet states=5 gamma=0.9 horizon=10): "
                                                            "theta for garnet contains non-finite values"),
    # the second garnet, unlabelled, is named like the first: the report could not tell them apart
    (("[[estimators]]", '[[problems]]\nenv = "garnet"\noptions = { states = 5, horizon = 10, gamma = 0.9 }\n'
                        '[[estimators]]'), "problems[2]: label 'garnet states=5 gamma=0.9 horizon=10' also names a "
                                           "different problem of problems[1]"),
    (('env = "softmax-bandit"', 'env = "softmax-bandit"\nlabel = "g"'), None),  # distinct labels: accepted
    (("reps = 20", "reps = 1000000000000"), "reps=1000000000000"),
    (("batch_sizes = [1, 4]", "batch_sizes = [1, 1000000000000]"), "N=1000000000000"),
    (("repetitions = 2", "repetitions = 1000000000000"), "expands to more than 1000000 cells"),
    (('sweep.discount_score = [true, false]', 'sweep.discount_score = [true, false]\nrepetitions = 0'),
     "sweep.toml: estimators[0].repetitions: expected an integer ≥ 1, got 0"),
    (('sweep.discount_score = [true, false]', 'sweep.discount_score = [true, false]\nrepetitions = "ten"'),
     "sweep.toml: estimators[0].repetitions: expected an integer ≥ 1, got 'ten'"),
    (('sweep.discount_score = [true, false]', 'sweep.discount_score = [true, false]\nrepetitions = 2.5'),
     "estimators[0].repetitions: expected an integer ≥ 1, got 2.5"),
    (('sweep.discount_score = [true, false]', 'sweep.discount_score = [true, false]\nrepetitions = 1000000000000'),
     "expands to more than 1000000 cells"),
    (("[report]", "[report]\nseed = 4294967296"), "report.seed: expected an integer ≥ 0 and ≤ 4294967295, got 4294967296"),
    (("[report]", "[report]\nbootstrap_reps = 1000000000000"), "report.bootstrap_reps: expected an integer ≥ 100 and ≤ 100000"),
    (("[report]", "[reference]\nsamples = 10\n[report]"), "reference: reference samples=10: expected an integer ≥ 128 (2 × reference batch size"),
    (("[report]", "[reference]\nsample = 10\n[report]"), "reference.sample: unknown key; allowed: batch_size, samples"),
])
def test_bad_config_is_one_clear_error(tmp_path, edit, message):
    old, new = edit
    assert old in SMALL
    if message is None:
        load_config(write(tmp_path, SMALL.replace(old, new)))
        return
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
    path = write(tmp_path, SMALL.replace("reps = 20", "reps = 400").replace("repetitions = 2", "repetitions = 4"))
    kill_then_resume(path, tmp_path, "small", len(expand(load_config(path))[0]), rows)


# ------------------------------------------------------------------- the store under attack (issue 14)

def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder): a snapshot to compare before and after."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", ["..", "."])
def test_dot_names_are_refused_before_anything_is_written_or_deleted(tmp_path, monkeypatch, name):
    """Issue 14: `name = ".."` with --fresh deleted the working directory's files, `name = "."` every other
    sweep's results. The config and a canary beside it, and a sibling sweep under results/, must survive."""
    monkeypatch.chdir(tmp_path)
    config_path = write(tmp_path, SMALL.replace('name = "small"', f'name = "{name}"'))
    (tmp_path / "canary.txt").write_text("a user's file beside the config")
    sibling = tmp_path / "results" / "other"
    sibling.mkdir(parents=True)
    (sibling / "cell-0123456789abcdef0123.parquet").write_bytes(b"another sweep's cell")
    (sibling / "_sweep.json").write_text("{}")
    before = tree(tmp_path)
    with pytest.raises(ConfigError) as err:
        run_sweep(load_config(config_path), "results", executor="inprocess", fresh=True)
    assert "name: expected a plain name" in str(err.value) and "\n" not in str(err.value)
    assert tree(tmp_path) == before

    # Defence in depth: a config whose name slipped past the parser is refused by the store itself.
    import dataclasses

    smuggled = dataclasses.replace(load_config(write(tmp_path, SMALL, "ok.toml")), name=name)
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="sweep name: expected a plain name"):
        run_sweep(smuggled, "results", executor="inprocess", fresh=True)
    assert tree(tmp_path) == before
    with pytest.raises(ConfigError, match="not a folder inside the results root"):
        ResultsStore(tmp_path / "results" / name, tmp_path / "results").prepare({}, fresh=True)
    assert tree(tmp_path) == before


def test_a_symlinked_sweep_folder_leading_out_of_the_results_root_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "_sweep.json").write_text("not ours")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "small").symlink_to(outside)
    before = tree(outside)
    with pytest.raises(ConfigError, match="not a folder inside the results root"):
        run_sweep(load_config(write(tmp_path, SMALL)), tmp_path / "results", executor="inprocess", fresh=True)
    assert tree(outside) == before


TWO = """
name = "two"
reps = 10
seed = 1
batch_sizes = [4]

[[problems]]
env = "softmax-bandit"

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]
"""


def test_fresh_deletes_only_the_files_the_store_wrote_and_says_how_many(tmp_path):
    config = load_config(write(tmp_path, TWO))
    run_sweep(config, tmp_path, executor="inprocess")
    folder = tmp_path / "two"
    (folder / "notes.txt").write_text("the user's notes")
    (folder / "plots").mkdir()
    (folder / "plots" / "cell-0123.parquet").write_text("not the store's: inside a subfolder")
    (folder / "_failed-0123456789abcdef0123.json").write_text("{}")  # a failure record of the store
    (folder / ".cell-0123456789abcdef0123.parquet.77.tmp").write_text("a killed run's temporary file")
    summary = run_sweep(config, tmp_path, executor="inprocess", fresh=True)
    assert summary.deleted == 2 + 1 + 1 + 1  # two cells, _sweep.json, the failure record, the temporary file
    assert summary.ran == 2 and summary.reused == 0
    assert (folder / "notes.txt").read_text() == "the user's notes"
    assert (folder / "plots" / "cell-0123.parquet").is_file()
    assert not list(folder.glob("_failed-*")) and not list(folder.glob(".*.tmp"))
    assert len(list(folder.glob("cell-*.parquet"))) == 2


def test_sweep_json_records_the_planned_distinct_cell_ids(tmp_path):

    config = load_config(write(tmp_path, TWO))
    run_sweep(config, tmp_path, executor="inprocess")
    meta = json.loads((tmp_path / "two" / "_sweep.json").read_text())
    ids = [c.cell_id for c in expand(config)[0]]
    assert meta["cell_ids"] == ids and meta["cells"] == len(ids) == 2


def test_duplicate_tables_axis_values_and_batch_sizes_compute_each_cell_once(tmp_path):
    duplicated = TWO.replace("batch_sizes = [4]", "batch_sizes = [4, 4, 2]").replace(
        'sweep.baseline = ["none", "rloo"]', 'sweep.baseline = ["none", "rloo", "none"]') + """
[[estimators]]
name = "reinforce"
sweep.baseline = ["rloo"]

[[problems]]
env = "softmax-bandit"
"""
    config = load_config(write(tmp_path, duplicated))
    cells, skipped = expand(config)
    # softmax-bandit × {none, rloo} × N ∈ {4, 2}, once each; rloo at N = 2 applies; nothing twice
    assert [(c.variant, c.batch_size) for c in cells] == [
        ("reinforce", 4), ("reinforce", 2), ("reinforce baseline=rloo", 4), ("reinforce baseline=rloo", 2)]
    assert skipped == []
    summary = run_sweep(config, tmp_path, executor="inprocess")
    assert (summary.cells, summary.ran) == (4, 4)
    assert len(pd.read_parquet(tmp_path / "two")) == 4


FAILING = """
name = "failing"
reps = 10
seed = 2
batch_sizes = [4]

[[problems]]
env = "softmax-bandit"

[[problems]]
env = "lqr"
theta = "random:1000:0"    # finite θ, but log σ ≈ 640: J(θ) is not finite, so the lqr cells raise when they run

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]
"""


@pytest.mark.parametrize("executor", ["inprocess", "processes", "dask"])
def test_a_failing_cell_fails_alone_and_is_recorded(tmp_path, executor):

    config = load_config(write(tmp_path, FAILING))  # valid: the failure shows only when the cell is measured
    summary = run_sweep(config, tmp_path, executor=executor, workers=2)
    folder = tmp_path / "failing"
    assert summary.cells == 4 and len(summary.failed) == 2
    assert {f["problem"] for f in summary.failed} == {"lqr"}
    written = pd.read_parquet(folder)  # the failure records never break reading the dataset
    assert sorted(written["problem"]) == ["softmax-bandit"] * 2
    records = sorted(folder.glob("_failed-*.json"))
    assert len(records) == 2
    record = json.loads(records[0].read_text())
    assert record["cell_id"] in records[0].name and record["cell"]["env"] == "lqr"
    assert record["error"].startswith("ConfigError: theta for lqr makes the objective non-finite")
    assert "\n" not in record["error"]
    again = run_sweep(config, tmp_path, executor="inprocess")  # a rerun retries the failed cells only
    assert (again.ran, again.reused, len(again.failed)) == (2, 2, 2)


def test_a_cell_that_succeeds_on_a_rerun_loses_its_failure_record(tmp_path):
    from bench.executors import failure_record

    config = load_config(write(tmp_path, TWO))
    run_sweep(config, tmp_path, executor="inprocess")
    cell = expand(config)[0][0]
    store = ResultsStore(tmp_path / "two")
    store.remove_cell(cell.cell_id)
    store.record_failure(cell.cell_id, failure_record(cell, RuntimeError("a transient failure")))
    summary = run_sweep(config, tmp_path, executor="inprocess")
    assert (summary.ran, summary.failed) == (1, [])
    assert not list((tmp_path / "two").glob("_failed-*"))


def test_cli_sweep_with_failing_cells_exits_2_with_one_line_naming_where_the_errors_are(tmp_path, capsys):
    from pgvar.cli import main

    path = write(tmp_path, FAILING)
    code = main(["sweep", str(path), "--results", str(tmp_path), "--executor", "inprocess"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pgvar: error: 2 of 4 cells failed (first: lqr / reinforce")
    assert f"{tmp_path / 'failing'}/_failed-<cell id>.json" in err and "Traceback" not in err


def test_a_corrupt_cell_file_is_detected_named_and_recomputed(tmp_path):
    config = load_config(write(tmp_path, TWO))
    run_sweep(config, tmp_path, executor="inprocess")
    before = rows(tmp_path / "two")
    first, second = sorted((tmp_path / "two").glob("cell-*.parquet"))
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    second.write_bytes(b"")  # zero bytes
    notes = []
    summary = run_sweep(config, tmp_path, executor="inprocess", log=notes.append)
    assert (summary.ran, summary.reused) == (2, 0)
    assert sorted(line.split(":")[0] for line in summary.corrupt) == [first.name, second.name]
    assert len(notes) == 1 and "2 corrupt cell files" in notes[0] and first.name in notes[0]
    pd.testing.assert_frame_equal(rows(tmp_path / "two"), before)
    assert run_sweep(config, tmp_path, executor="inprocess").corrupt == []


LOCK_HOLDER = """
import sys, time
from bench.store import ResultsStore
store = ResultsStore(sys.argv[1])
store.lock()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_sweep_on_a_locked_folder_is_refused_and_touches_nothing(tmp_path):
    config = load_config(write(tmp_path, TWO))
    folder = tmp_path / "two"
    folder.mkdir()
    in_flight = folder / ".cell-0123456789abcdef0123.parquet.99999.tmp"  # the other sweep's file being written
    in_flight.write_text("half a cell")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as err:
            run_sweep(config, tmp_path, executor="inprocess", fresh=True)
        message = str(err.value)
        assert message.startswith(f"{folder}: another pgvar sweep (pid {holder.pid}) is running") and "\n" not in message
        assert in_flight.read_text() == "half a cell"
        assert not (folder / "_sweep.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run_sweep(config, tmp_path, executor="inprocess").ran == 2  # the lock died with its process
    assert not in_flight.exists()  # now a dead run's leftover: cleaned up


def test_bad_paths_and_options_are_one_line_errors_before_any_work(tmp_path):
    config = load_config(write(tmp_path, TWO))
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin.toml").write_bytes(b'name = "caf\xe9"\n')  # Latin-1, not UTF-8: é is byte 11
    cases = [
        (lambda: load_config(tmp_path / "adir"), "adir: is a folder; expected a sweep TOML file"),
        (lambda: load_config(tmp_path / "latin.toml"), "latin.toml: not UTF-8 text (byte 11)"),
        (lambda: run_sweep(config, write(tmp_path, "", "plain-file"), executor="inprocess"),
         "--results " + str(tmp_path / "plain-file") + ": is not a folder"),
        (lambda: run_sweep(config, tmp_path / "r", executor="inprocess", workers=0), "--workers 0: expected an integer ≥ 1"),
        (lambda: run_sweep(config, tmp_path / "r", executor="processes", workers=-2), "--workers -2: expected"),
        (lambda: run_sweep(config, tmp_path / "r", executor="inprocess", scheduler="tcp://127.0.0.1:1"),
         "--scheduler tcp://127.0.0.1:1: applies only to --executor dask"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError) as err:
            call()
        assert message in str(err.value) and "\n" not in str(err.value), message
    assert not (tmp_path / "r").exists()


def test_a_dask_scheduler_where_nothing_listens_is_one_line_naming_the_address(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ConfigError) as err:
        run_sweep(load_config(write(tmp_path, TWO)), tmp_path, executor="dask", scheduler=address)
    assert str(err.value).startswith(f"--scheduler {address}: cannot connect to a Dask scheduler there")
    assert "\n" not in str(err.value)
