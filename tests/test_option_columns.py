"""The typed opt_<name> columns of measure rows: one per option of every registered estimator, of the option's type,
the resolved value where the option applies and null elsewhere; a folder of cells of different estimators reads back
as one dataset with all of them (`pd.read_parquet`), and the report's reader still reads it."""

from __future__ import annotations

import json

import pandas as pd

from bench.cells import OPTION_PREFIX, option_columns
from bench.store import NULLABLE_DTYPES, ResultsStore
from bench.sweep import load_config, run_sweep
from estimators import ESTIMATORS, resolve_estimator
from reports.results import load_sweep
from tests.sweeps import write

CONFIG = """
name = "opts"
reps = 10
repetitions = 1
seed = 0
batch_sizes = [4]

[[problems]]
env = "softmax-bandit"

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[[estimators]]
name = "reinforce"
options = { baseline = "oracle_optimal:200" }

[[estimators]]
name = "reinforce"
options = { baseline = "value", critic = "fitted", critic_samples = 50 }

[[estimators]]
name = "gae"
sweep.lambda = [0.0, 0.5]

[report]
reference_variant = "reinforce"
"""


def test_every_registered_option_has_one_scalar_column_type():
    columns = option_columns()  # raises TypeError on a name declared with two types or a non-scalar option
    expected = {OPTION_PREFIX + key for _, config in ESTIMATORS.items() for key in config.options()}
    assert set(columns) == expected
    assert set(columns.values()) <= {bool, int, float, str}


def test_sweep_rows_carry_typed_option_columns_and_still_read(tmp_path):
    config = load_config(write(tmp_path, CONFIG))
    run_sweep(config, tmp_path / "results", executor="inprocess")
    folder = tmp_path / "results" / "opts"
    rows = pd.read_parquet(folder)
    assert set(rows["estimator"]) == {"reinforce", "gae"} and len(rows) == 6
    for column, kind in option_columns().items():
        assert column in rows, column
        assert str(rows[column].dtype) == pd.api.types.pandas_dtype(NULLABLE_DTYPES[kind]).name, column
    for _, row in rows.iterrows():
        resolved = resolve_estimator(row["estimator"], json.loads(row["estimator_options"]))
        specs, values = resolved.options(), resolved.as_dict()
        for column in option_columns():
            key = column.removeprefix(OPTION_PREFIX)
            applies = key in specs and (specs[key].only_if is None or specs[key].only_if.holds(resolved))
            if applies:
                assert row[column] == values[key], (row["variant"], column)
            else:
                assert pd.isna(row[column]), (row["variant"], column)
    by_variant = rows.set_index("variant")
    gae = by_variant.loc["gae lambda=0.5"]
    assert gae["opt_lambda"] == 0.5 and pd.isna(gae["opt_baseline"])
    # the critic's options apply to the value baseline only
    value = by_variant.loc["reinforce baseline=value critic=fitted critic_samples=50"]
    assert value["opt_critic"] == "fitted" and value["opt_critic_samples"] == 50 and value["opt_discount_score"]
    oracle = by_variant.loc["reinforce baseline=oracle_optimal:200"]
    assert oracle["opt_baseline"] == "oracle_optimal:200" and pd.isna(oracle["opt_critic"])
    # every file has the same schema, whichever estimator wrote it
    store = ResultsStore(folder)
    schemas = {str(store.read_cell(cell_id).schema.remove_metadata()) for cell_id in store.finished()}
    assert len(schemas) == 1
    assert len(load_sweep(folder).rows) == 6  # the report's reader


def test_store_writes_a_null_column_as_its_declared_type(tmp_path):
    store = ResultsStore(tmp_path)
    store.write("aa", {"cell_id": "aa", "opt_x": None}, {"opt_x": int})
    store.write("bb", {"cell_id": "bb", "opt_x": 3}, {"opt_x": int})
    assert str(store.read_cell("aa").schema.field("opt_x").type) == "int64"
    rows = pd.read_parquet(tmp_path).sort_values("cell_id")
    assert str(rows["opt_x"].dtype) == "Int64" and pd.isna(rows["opt_x"].iloc[0]) and rows["opt_x"].iloc[1] == 3
