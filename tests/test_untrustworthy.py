"""Untrustworthy measurements in the report: a point whose estimates collapsed (importance weights
that underflowed) or are mostly non-finite is never ranked and never a win, in a real sweep and in
results written before the flags were stored; and the wording rules of the ratio findings."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.metrics import trust_flags
from bench.store import CELL_PREFIX
from bench.sweep import load_config, run_sweep
from reports.findings import untrusted_ratio
from reports.report import build_report

DEGENERATE = "is-trajectory behaviour=distance:50"
NEW_COLUMNS = ["nonfinite_fraction", "degenerate", "trustworthy"]

# garnet with H = 100: at behaviour=distance:50 every is-trajectory estimate is ≤ 1e-30 of ‖∇J‖
# (tests/test_metrics.py), so its MSE ≈ ‖∇J‖² ≈ 9 is far below REINFORCE's (≈ 3300 at N = 8) and its
# variance ≈ 1e-74: before the flags the report ranked it first ("lowest MSE … the CIs do not overlap")
# and had it "cut variance 1e+76×".
CONFIG = f"""
name = "untrusted"
reps = 100
repetitions = 3
seed = 0
batch_sizes = [8]

[[problems]]
env = "garnet"
options = {{ horizon = 100 }}

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[[estimators]]
name = "is-trajectory"
options = {{ behaviour = "distance:50" }}

[report]
reference_variant = "reinforce"
pairs = [["{DEGENERATE}", "reinforce"]]
bootstrap_reps = 100
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "untrusted.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    root = tmp_path_factory.mktemp("results")
    run_sweep(config, root, executor="inprocess")
    return root / config.name


def _lines(findings: str, heading: str) -> list[str]:
    """The items of one findings section."""
    section = findings[findings.index(heading):].split("\n\n")[0]
    return [line for line in section.split("\n")[1:] if line.startswith("- ")]


def test_stored_rows_carry_the_flags(results):
    rows = pd.read_parquet(results)
    assert set(NEW_COLUMNS) <= set(rows.columns)
    degenerate = rows[rows["variant"] == DEGENERATE]
    assert len(degenerate) == 3 and degenerate["degenerate"].all() and not degenerate["trustworthy"].any()
    assert degenerate["bias_pvalue"].isna().all()  # no p-value claimed for collapsed estimates
    others = rows[rows["variant"] != DEGENERATE]
    assert others["trustworthy"].all() and (others["nonfinite_fraction"] == 0).all()


def test_a_degenerate_point_is_neither_ranked_nor_a_win(results, tmp_path):
    index, _ = build_report(results, tmp_path / "out")
    summary = pd.read_csv(index.parent / "summary.csv").set_index("variant")
    # It has the lowest MSE of the three, so a ranking by MSE alone would put it first.
    assert summary.loc[DEGENERATE, "mse"] < summary["mse"].drop(DEGENERATE).min()
    assert math.isnan(summary.loc[DEGENERATE, "mse_rank"]) and not summary.loc[DEGENERATE, "trustworthy"]
    assert "degenerate 3/3" in summary.loc[DEGENERATE, "untrustworthy_reasons"]
    assert summary["mse_rank"].drop(DEGENERATE).sort_values().tolist() == [1, 2]

    findings = (index.parent / "findings.txt").read_text(encoding="utf-8")
    assert f"lowest MSE {DEGENERATE}" not in findings and f"next {DEGENERATE}" not in findings
    assert f"untrustworthy, not ranked: {DEGENERATE} (" in findings
    assert f"{DEGENERATE} cuts variance" not in findings and "(N=8) cuts variance" not in findings
    for heading in ("Variance against the reference", "Configured comparisons"):
        mentioning = [line for line in _lines(findings, heading) if DEGENERATE in line]
        assert mentioning and all("not a finding, untrustworthy" in line for line in mentioning), heading
    reliability = _lines(findings, "Reliability of the measurements")
    assert any("3 of 9 measurements are degenerate" in line and DEGENERATE in line for line in reliability)


def test_results_without_the_flag_columns_still_load_and_still_keep_it_out(results, tmp_path):
    """Cells written before the flags existed: `degenerate` is unknown (taken as False) and
    nonfinite_fraction is derived from nonfinite / reps; the collapsed point is still kept out of the
    ranking and the wins, by its heavy tails (tail kurtosis ≈ 70–100 here), as before."""
    old = tmp_path / "old" / results.name
    old.mkdir(parents=True)
    for path in results.iterdir():
        if path.name.startswith(CELL_PREFIX):
            pd.read_parquet(path).drop(columns=NEW_COLUMNS).to_parquet(old / path.name, index=False)
        else:
            (old / path.name).write_bytes(path.read_bytes())
    index, _ = build_report(old, tmp_path / "out")
    summary = pd.read_csv(index.parent / "summary.csv").set_index("variant")
    assert math.isnan(summary.loc[DEGENERATE, "mse_rank"])
    assert summary.loc[DEGENERATE, "untrustworthy_reasons"] == "heavy-tailed 3/3"
    findings = (index.parent / "findings.txt").read_text(encoding="utf-8")
    assert f"lowest MSE {DEGENERATE}" not in findings and "(N=8) cuts variance" not in findings
    mentioning = [line for line in _lines(findings, "Configured comparisons") if DEGENERATE in line]
    assert mentioning and all("not established, the lower variance is heavy-tailed" in line for line in mentioning)


def test_trust_flags_of_rows_derive_what_older_results_lack():
    rows = pd.DataFrame({"nonfinite": [0, 6, 5, 0], "reps": 100, "heavy_tailed": [False, False, False, True]})
    flagged = trust_flags(rows)
    assert flagged["nonfinite_fraction"].tolist() == [0.0, 0.06, 0.05, 0.0]
    assert flagged["excess_nonfinite"].tolist() == [False, True, False, False]
    assert not flagged["degenerate"].any()
    assert flagged["trustworthy"].tolist() == [True, False, True, False]
    # Cells of both kinds in one folder: a missing value of a stored flag is derived too.
    mixed = rows.assign(degenerate=[None, None, True, None], nonfinite_fraction=[None, 0.06, 0.05, None])
    assert trust_flags(mixed)["trustworthy"].tolist() == [True, False, False, False]


def _ratio(low, high, invalid=False, x_heavy=False, y_heavy=False):
    return SimpleNamespace(ratio=math.sqrt(low * high), ratio_lo=low, ratio_hi=high, invalid=invalid,
                           x_heavy_tailed=x_heavy, y_heavy_tailed=y_heavy, flags="x: flagged")


@pytest.mark.parametrize("row,wording", [
    (_ratio(2.0, 3.0), None),  # trustworthy: the usual words ("cuts variance")
    (_ratio(2.0, 3.0, invalid=True), "not a finding, untrustworthy"),
    (_ratio(0.2, 0.3, invalid=True), "not a finding, untrustworthy"),  # invalid either way round
    (_ratio(2.0, 3.0, x_heavy=True), "not established, the lower variance is heavy-tailed"),  # favours heavy X
    (_ratio(0.2, 0.3, y_heavy=True), "not established, the lower variance is heavy-tailed"),  # favours heavy Y
    (_ratio(2.0, 3.0, y_heavy=True), None),  # favours the trustworthy X: kept, with the caller's note
    (_ratio(0.5, 2.0, x_heavy=True), None),  # no direction claimed
])
def test_a_ratio_never_reads_as_a_win_of_an_untrustworthy_point(row, wording):
    words = untrusted_ratio(row)
    assert (words is None) if wording is None else (wording in words)
