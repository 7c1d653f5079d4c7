"""gradient_cosine, every measurement's mean cosine to ∇J whatever its estimator targets: the same number as
cosine_mean (and no second reference) for ∇J estimators, ∇J's reference reused from the cache for the others,
a typed column of the stored rows that older results without it still load around, and the report's findings
and figures that put the natural gradient's and the entropy bonus's beside the rest.
(The closed-form checks on the softmax bandit are in tests/test_natural.py, the loop twin in tests/test_metrics.py.)"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench.harness import measure
from bench.reference import ReferenceConfig
from bench.store import ResultsStore
from bench.sweep import load_config, run_sweep
from envs import make_problem
from estimators.registry import Target
from reports import figures
from reports.findings import fmt_metric, gradient_cosine_findings
from reports.results import GRADIENT_COSINE_COLUMNS, PLAIN_TARGET, aggregate_repetitions, load_sweep, summary_table
from tests.conftest import random_theta
from tests.sweeps import write

CONFIG = """
name = "cosines"
reps = 12
repetitions = 2
seed = 0
batch_sizes = [4, 8]

[[problems]]
env = "softmax-bandit"
theta = "random:1.5:0"

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[[estimators]]
name = "natural"

[[estimators]]
name = "reinforce"
options = { entropy_coef = 0.1 }

[report]
reference_variant = "reinforce"
"""


def test_the_plain_target_is_the_policy_gradient():
    assert Target().label == PLAIN_TARGET


@pytest.mark.parametrize("kind", ["exact", "sampled"])
def test_gradient_estimators_reuse_their_reference_and_their_cosine(kind, tmp_path):
    """For an estimator of ∇J, ∇J's reference is its own (the same object: nothing more computed) and
    gradient_cosine is cosine_mean and its interval, identical."""
    problem = make_problem("softmax-bandit")
    config = ReferenceConfig(kind, samples=1024, batch_size=32, cache_dir=str(tmp_path))
    for estimator, options in [("reinforce", {"baseline": "rloo"}), ("gae", {"lambda": 0.5})]:
        result = measure(problem, estimator, 4, reps=20, seed=1, theta=random_theta(problem, 2),
                         estimator_options=options, show_progress=False, reference_config=config)
        assert result.gradient_reference is result.reference and result.reference.kind == kind
        m = result.metrics
        assert m.gradient_cosine == m.cosine_mean and m.gradient_cosine_ci == m.cosine_mean_ci
        record = result.to_dict()
        assert record["gradient_cosine"] == record["cosine_mean"]
        assert record["gradient_cosine_ci"] == record["cosine_mean_ci"]


def test_entropy_bonus_against_a_sampled_gradient_reads_the_cached_reference(tmp_path):
    """With a sampled reference the entropy bonus's gradient_cosine is against the sampled ∇J reference that a
    REINFORCE measurement at the same θ and settings computed and cached: read back, not recomputed."""
    problem = make_problem("softmax-bandit")
    theta = random_theta(problem, 2)
    config = ReferenceConfig("sampled", samples=1024, batch_size=32, cache_dir=str(tmp_path))
    plain = measure(problem, "reinforce", 4, reps=20, seed=1, theta=theta, show_progress=False,
                    reference_config=config)
    bonus = measure(problem, "reinforce", 4, reps=20, seed=1, theta=theta, estimator_options={"entropy_coef": 0.1},
                    show_progress=False, reference_config=config)
    assert not plain.reference.cached and bonus.gradient_reference.cached
    np.testing.assert_array_equal(bonus.gradient_reference.grad, plain.reference.grad)
    assert not np.array_equal(bonus.reference.grad, plain.reference.grad)  # its own target's, ∇(J + 0.1·H)
    assert bonus.metrics.gradient_cosine != bonus.metrics.cosine_mean


@pytest.fixture(scope="module")
def cosine_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosines")
    run_sweep(load_config(write(root, CONFIG)), root / "results", executor="inprocess", show_progress=False)
    return root / "results" / "cosines"


def test_sweep_rows_carry_gradient_cosine_typed_and_finite(cosine_sweep):
    rows = pd.read_parquet(cosine_sweep)
    assert len(rows) == 4 * 2 * 2  # 4 variants × 2 N × 2 repetitions
    for column in GRADIENT_COSINE_COLUMNS:
        assert rows[column].dtype == np.float64 and np.isfinite(rows[column]).all(), column
    plain = rows["target"] == PLAIN_TARGET
    assert set(rows.loc[~plain, "estimator"]) == {"natural", "reinforce"} and (~plain).sum() == 8
    for end in ("", "_lo", "_hi"):  # the ∇J estimators: the same numbers; the others: another direction
        assert (rows.loc[plain, f"gradient_cosine{end}"] == rows.loc[plain, f"cosine_mean{end}"]).all()
        assert (rows.loc[~plain, f"gradient_cosine{end}"] != rows.loc[~plain, f"cosine_mean{end}"]).all()


def test_results_without_gradient_cosine_still_load(cosine_sweep, tmp_path):
    """A cell file written before the column existed loads: cosine_mean where the target is ∇J, NaN elsewhere."""
    import shutil

    folder = tmp_path / "cosines"
    shutil.copytree(cosine_sweep, folder)
    store = ResultsStore(folder)
    for cell_id in store.finished():
        path = store.cell_path(cell_id)
        pq.write_table(pq.read_table(path).drop_columns(list(GRADIENT_COSINE_COLUMNS)), path)
    rows = load_sweep(folder).rows
    assert not load_sweep(folder).unreadable and len(rows) == 16
    plain = rows["target"] == PLAIN_TARGET
    assert (rows.loc[plain, "gradient_cosine_lo"] == rows.loc[plain, "cosine_mean_lo"]).all()
    assert rows.loc[~plain, "gradient_cosine"].isna().all()
    items = gradient_cosine_findings(aggregate_repetitions(rows))[1]
    assert len(items) == 4 and all("no cosine to ∇J (results stored before it was measured" in i for i in items)


def test_findings_and_summary_put_the_natural_gradients_cosine_to_the_gradient_beside_the_rest(cosine_sweep):
    points = aggregate_repetitions(load_sweep(cosine_sweep).rows)
    heading, items = gradient_cosine_findings(points)
    assert "Cosine to ∇J" in heading and len(items) == 4  # natural and the entropy bonus at N = 4 and 8
    natural = points[(points["variant"] == "natural") & (points["batch_size"] == 8)].iloc[0]
    line = next(item for item in items if item.startswith("softmax-bandit (N=8), natural:"))
    assert f"cos to ∇J {fmt_metric(natural, 'gradient_cosine')}, cos to its target" in line
    assert "cos to its target (F + 0.01·I)⁻¹∇J" in line and "the 2 trustworthy ∇J estimators there" in line
    summary = summary_table(points)
    assert {"gradient_cosine", "gradient_cosine_lo", "gradient_cosine_hi"} <= set(summary.columns)


def test_family_figure_draws_the_cosine_to_the_gradient_dotted_for_other_targets(cosine_sweep):
    """One dotted series per variant whose target is not ∇J, in the cosine panel, at its gradient_cosine values."""
    points = aggregate_repetitions(load_sweep(cosine_sweep).rows)
    style = figures.variant_style(sorted(points["variant"].unique()))
    with figures.report_style():
        fig = figures.family_figure(points, style)
    cosine_panel = fig.axes[2]
    dotted = [line for line in cosine_panel.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 2
    expected = {tuple(points.loc[points["variant"] == v].sort_values("batch_size")["gradient_cosine"])
                for v in ("natural", "reinforce entropy_coef=0.1")}
    assert {tuple(np.asarray(line.get_ydata(), dtype=float)) for line in dotted} == expected
    assert any("cos(ĝ, ∇J)" in text.get_text() for text in fig.legends[0].get_texts())
    plt.close(fig)
    plain = points[points["target"] == PLAIN_TARGET]
    with figures.report_style():
        fig = figures.family_figure(plain, figures.style_subset(style, list(plain["variant"].unique())))
    assert not [line for line in fig.axes[2].get_lines() if line.get_linestyle() == ":"]
    assert not any("cos(ĝ, ∇J)" in text.get_text() for text in fig.legends[0].get_texts())
    plt.close(fig)
