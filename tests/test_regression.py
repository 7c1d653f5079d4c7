"""Outputs of the code before a change: valid input must give the same numbers after it.

`fixtures/measure_2675de6.json` holds `pgvar measure ... --json` of commit 2675de6 for the README's example
and one case of each estimator (made by `fixtures/make_measure_fixture.py` from that commit's tree, cost and
cache fields dropped); `fixtures/results_2675de6/` is a results folder that commit's `pgvar sweep` wrote
(config beside it), so results written before a schema change must still load and report.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest

from pgvar.cli import main
from reports.report import build_report

FIXTURES = Path(__file__).parent / "fixtures"
BEFORE = json.loads((FIXTURES / "measure_2675de6.json").read_text())
# Same config and seed give bit-identical numbers on one machine; across machines of this kind, BLAS may pick
# another kernel (other summation order), which moves float64 results by a few ulps, amplified at most ~1e3×
# through the metrics' reductions. 1e-9 relative is far above that and far below any real change of a number.
RELATIVE = 1e-9


def same(before, after, where: str) -> list[str]:
    """Where `after` differs from `before` (keys `after` added are allowed)."""
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{where}: {after!r} is not an object"]
        return [d for key, value in before.items()
                for d in (same(value, after[key], f"{where}.{key}") if key in after else [f"{where}.{key}: missing"])]
    if isinstance(before, list):
        if not isinstance(after, list) or len(after) != len(before):
            return [f"{where}: length {len(after) if isinstance(after, list) else after!r} ≠ {len(before)}"]
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in same(b, a, f"{where}[{i}]")]
    if isinstance(before, float) and isinstance(after, (int, float)) and not isinstance(after, bool):
        ok = math.isclose(before, after, rel_tol=RELATIVE, abs_tol=0.0) or before == after
        return [] if ok else [f"{where}: {after!r} ≠ {before!r}"]
    return [] if before == after and type(before) is type(after) else [f"{where}: {after!r} ≠ {before!r}"]


@pytest.mark.parametrize("case", sorted(BEFORE))
def test_measure_json_gives_the_numbers_of_the_code_before(case, tmp_path, monkeypatch):
    monkeypatch.setenv("PGVAR_CACHE_DIR", str(tmp_path / "cache"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["measure", *BEFORE[case]["args"].split(), "--json"]) == 0
    differences = same(BEFORE[case]["output"], json.loads(out.getvalue()), case)
    assert not differences, "\n".join(differences[:20])


def test_same_catches_a_changed_number():
    assert same({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 * (1 + 1e-6)], "new": 3}, "x")
    assert same({"a": 1}, {}, "x") == ["x.a: missing"]
    assert not same({"a": [1.0, None, "s"]}, {"a": [1.0, None, "s"], "b": 0}, "x")


def test_results_written_before_still_load_and_report(tmp_path):
    results = tmp_path / "results" / "old-schema"
    shutil.copytree(FIXTURES / "results_2675de6", results)
    index, rebuilt = build_report(results, tmp_path / "out")
    assert rebuilt and index.is_file() and "softmax-bandit" in index.read_text(encoding="utf-8")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(index.parent.stat().st_mode) == 0o777 & ~umask  # a report folder others may read, as usual
