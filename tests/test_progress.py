"""Progress on stderr when it is not a terminal: a line every interval while work runs (measure, train, sweep),
none for work shorter than the interval, none with --quiet or under CI=true. Lines come from a timer thread, so
the tests wait for content (a line, polled), never assert a duration."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from bench.progress import INTERVAL_ENV, PROGRESS_SECONDS, ProgressLines, progress_bar, progress_seconds

LINE = re.compile(r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) \(\d+%\)(, \d+ failed)?, \d+ s elapsed(, ~\d+ s left)?$")


def environment(**changes: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("CI", INTERVAL_ENV)}
    env.update({key: value for key, value in changes.items() if value is not None})
    return env


def pgvar(args: list[str], cwd=None, **env: str | None) -> subprocess.CompletedProcess:
    """stderr to a pipe, so not a terminal."""
    return subprocess.run([sys.executable, "-m", "pgvar", *args], capture_output=True, text=True, timeout=600,
                          env=environment(**env), cwd=cwd)


MEASURE = ["measure", "--env", "frozenlake", "--estimator", "reinforce", "--batch-size", "16", "--reps", "400",
           "--seed", "0"]  # ~0.3 s of batches on an idle machine: many intervals of 0.02 s


def test_measure_prints_progress_lines_when_stderr_is_a_pipe():
    out = pgvar(MEASURE, **{INTERVAL_ENV: "0.02"})
    assert out.returncode == 0 and "variance_trace" in out.stdout, out.stderr
    lines = out.stderr.splitlines()
    assert lines, "no progress line"
    for line in lines:
        match = LINE.match(line)
        assert match and match["desc"] == "frozenlake/reinforce N=16" and match["total"] == "400", line


@pytest.mark.parametrize("quiet", [{"args": ["--quiet"]}, {"CI": "true"}], ids=["--quiet", "CI=true"])
def test_progress_is_silent_when_asked(quiet):
    out = pgvar(MEASURE + quiet.get("args", []), **{INTERVAL_ENV: "0.02", "CI": quiet.get("CI")})
    assert out.returncode == 0 and "variance_trace" in out.stdout
    assert out.stderr == ""


def test_sweep_prints_cell_progress_and_a_short_one_prints_none(tmp_path):
    (tmp_path / "s.toml").write_text(textwrap.dedent("""
        name = "progress"
        reps = 100
        repetitions = 2
        seed = 0
        batch_sizes = [16, 32]
        [[problems]]
        env = "frozenlake"
        [[estimators]]
        name = "reinforce"
        sweep.baseline = ["none", "rloo"]
    """))
    out = pgvar(["sweep", "s.toml", "--executor", "inprocess"], cwd=tmp_path, **{INTERVAL_ENV: "0.02"})
    assert out.returncode == 0, out.stderr
    cells = [LINE.match(line) for line in out.stderr.splitlines() if line.startswith("sweep progress: cells")]
    assert cells and all(m and m["total"] == "8" for m in cells), out.stderr
    # the same sweep again reuses every cell: well under the default interval, so no progress line at all
    again = pgvar(["sweep", "s.toml", "--executor", "inprocess"], cwd=tmp_path)
    assert again.returncode == 0 and "8 reused" in again.stdout and again.stderr == "", again.stderr


def test_lines_format_and_no_line_at_close():
    stream = io.StringIO()
    with ProgressLines(200, "work", interval=3600, stream=stream) as lines:
        assert LINE.match(lines.line()) and "left" not in lines.line()  # nothing done: no ETA
        lines.update(3)
        assert "left" not in lines.line()  # 3 of 200: fewer than 1/50, an ETA would rest on too little
        lines.update(97)
        lines.set_postfix_str("2 failed")
        text = lines.line()
        assert LINE.match(text) and text.startswith("work: 100/200 (50%), 2 failed, ") and "s left" in text
    assert stream.getvalue() == ""  # closed before its first interval: silent


def test_lines_are_written_while_a_step_runs():
    """A line arrives although no update happens: a single long step still shows signs of life."""
    stream = io.StringIO()
    with ProgressLines(10, "slow", interval=0.01, stream=stream):
        for _ in range(1000):
            if stream.getvalue():
                break
            time.sleep(0.01)
    assert LINE.match(stream.getvalue().splitlines()[0])


def test_progress_bar_chooses_by_terminal_and_environment(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with progress_bar(5, "x") as bar:
        assert isinstance(bar, ProgressLines)
    with progress_bar(5, "x", enabled=False) as bar:
        assert bar.disable
    monkeypatch.setenv("CI", "true")
    with progress_bar(5, "x") as bar:
        assert bar.disable
    for value, expected in (("0.5", 0.5), ("0", PROGRESS_SECONDS), ("-1", PROGRESS_SECONDS), ("x", PROGRESS_SECONDS),
                            ("inf", PROGRESS_SECONDS)):
        monkeypatch.setenv(INTERVAL_ENV, value)
        assert progress_seconds() == expected


def test_report_prints_its_stages_when_stderr_is_a_pipe(tmp_path):
    """`pgvar report` (the longest step of `make report` after the sweeps) shows signs of life too: lines
    `report: k/3 …` while it builds, none with --quiet."""
    (tmp_path / "s.toml").write_text(textwrap.dedent("""
        name = "progress"
        reps = 20
        seed = 0
        batch_sizes = [4]
        [[problems]]
        env = "softmax-bandit"
        [[estimators]]
        name = "reinforce"
        sweep.baseline = ["none", "rloo"]
    """))
    assert pgvar(["sweep", "s.toml", "--executor", "inprocess"], cwd=tmp_path).returncode == 0
    out = pgvar(["report", "results/progress", "--out", "out"], cwd=tmp_path, **{INTERVAL_ENV: "0.02"})
    assert out.returncode == 0 and "report:" in out.stdout, out.stderr
    stages = [LINE.match(line) for line in out.stderr.splitlines() if line.startswith("report: ")]
    assert stages and all(m and m["total"] == "3" for m in stages), out.stderr
    quiet = pgvar(["report", "results/progress", "--out", "out", "--force", "--quiet"], cwd=tmp_path,
                  **{INTERVAL_ENV: "0.02"})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
