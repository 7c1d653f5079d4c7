"""Hostile input (issue 14): one table of cases, each a thing a hostile or careless user does to `pgvar`.

Every case runs in a fresh working folder (`tmp_path/work`, the current directory of the command) with
`CI=true` and `PGVAR_CACHE_DIR` outside that folder. The kinds of outcome:

- error: exit code 2, stderr exactly one non-empty line starting with `pgvar: error:`, no "Traceback"
  anywhere, and the working folder unchanged (a snapshot of every file's sha256 and every directory,
  before and after) except inside the results/out folders the case names as allowed (most allow none).
- warn: what the issue calls a note or a warning, not an error: exit 0, the report written, the offending
  file named in stderr or on the report page, no traceback, nothing changed outside the out folder.
- flags: the measurement runs (exit 0) and its JSON record carries the flags the issue asks for
  (`nonfinite_fraction`, `degenerate`, `trustworthy`); some cases accept a one-line refusal instead.
- api-error: a Python call refused with one ConfigError line.
- scenario: a sequence (kill a report mid-build, two sweeps on one folder, a failing cell in a process
  pool, a corrupt cell file, duplicate cells) with its own assertions.

Cases run in-process through `pgvar.cli.main` (stderr through capsys; Python warnings and log records,
which the real command prints on stderr, are added to it), except those that would allocate more than the
machine holds if a resource guard were missing: they run `python -m pgvar` in a child process limited to
4 GiB of address space (RLIMIT_AS) and 120 s, so a missing guard fails the case instead of the machine.
`pytest -v tests/test_hostile.py` prints the case table; with `HOSTILE_VERBOSE=1` and `-s` every command's
output too (the messages of the passing cases). Against 2675de6, the commit issue 14 was filed at, every case
the issue lists fails here (the `name = ".."` one with the canary file, the config and a sibling sweep deleted).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import logging
import math
import os
import pathlib
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pytest

from pgvar.cli import main
from envs.spec import ConfigError

MEMORY_LIMIT = 4 << 30  # bytes of address space for a child that might allocate without a guard
CHILD_TIMEOUT = 120.0  # seconds
VOLATILE = ["seconds", "seconds_per_estimate"]  # cell columns that legitimately differ between runs
REPORT = ("report", "results/base", "--out", "out")
GENERIC = "PGVAR_DEBUG=1"  # in the top-level guard's last-resort line only (pgvar/cli.py): a case needs its own
SIZE_WORDS = ("memory", "byte", "GB", "GiB", "TB", "TiB", "allowed", "limit", "lower")  # a resource guard's line

# ------------------------------------------------------------------------------------------ configs

BASE = """
name = "base"
reps = 20
repetitions = 2
seed = 0
batch_sizes = [2, 4]

[[problems]]
env = "softmax-bandit"

[[problems]]
env = "garnet"
options = { states = 4, horizon = 5, gamma = 0.9 }

[[estimators]]
name = "reinforce"
sweep.baseline = ["none", "rloo"]

[report]
reference_variant = "reinforce"
pairs = [["reinforce baseline=rloo", "reinforce"]]
bootstrap_reps = 100
"""
BASE_CELLS = 2 * 2 * 2 * 2  # problems × baselines × batch sizes × repetitions


def config(name: str = "base", edit: Callable[[str], str] = lambda text: text, **replace: str) -> str:
    """BASE renamed, with `key = value` lines replaced (replace={"reps": "7"}) and any further edit."""
    text = BASE.replace('name = "base"', f"name = {json.dumps(name)}" if name is not None else "")
    for key, value in replace.items():
        text, count = re.subn(rf"^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert count == 1, key
    return edit(text)


def with_table(table: str) -> Callable[[str], str]:
    """An edit that inserts a TOML table before [report]."""
    return lambda text: text.replace("[report]", textwrap.dedent(table).strip() + "\n\n[report]")


# The tables of an estimator (natural gradient, dense solve) whose cells fail at run time on the softmax bandit:
# its Fisher matrix is singular (the logits' softmax ignores a common shift) and a damping of 1e-300 leaves it so,
# so torch.linalg.solve raises. A natural failure that no config validation can foresee.
FAILING_TABLE = """
[[estimators]]
name = "natural"
options = { solver = "direct", damping = 1e-300 }
problems = ["softmax-bandit"]
batch_sizes = [4]
"""

# Importance weights that overflow: lqr at H = 100 with a behaviour policy far off (tests/test_off_policy.py) has
# most estimates non-finite, and the finite remainder all exactly zero.
NONFINITE_TABLE = """
[[estimators]]
name = "is-trajectory"
options = { behaviour = "distance:100" }
problems = ["lqr"]
"""


# --------------------------------------------------------------------------------------- the harness

@dataclass
class Outcome:
    argv: Sequence[str]
    code: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def describe(self) -> str:
        out = self.out if len(self.out) < 1500 else self.out[:700] + "\n[...]\n" + self.out[-700:]
        err = self.err if len(self.err) < 4000 else self.err[:1500] + "\n[...]\n" + self.err[-2500:]
        return (f"  command: pgvar {' '.join(map(str, self.argv))}\n  exit code: {self.code}"
                f"{' (TIMED OUT, killed)' if self.timed_out else ''}, {self.seconds:.1f} s\n"
                f"  stdout:\n{textwrap.indent(out.rstrip() or '(empty)', '    ')}\n"
                f"  stderr:\n{textwrap.indent(err.rstrip() or '(empty)', '    ')}")


Snapshot = dict[str, str]


def snapshot(root: Path) -> Snapshot:
    """Relative path → sha256 of the content (files), "dir" (directories) or the link target (symlinks)."""
    entries: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in dirs:
            path = here / name
            entries[str(path.relative_to(root))] = f"link→{os.readlink(path)}" if path.is_symlink() else "dir"
        for name in files:
            path = here / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                entries[rel] = f"link→{os.readlink(path)}"
            else:
                try:
                    entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError as err:
                    entries[rel] = f"unreadable ({err})"
    return entries


def changes(before: Snapshot, after: Snapshot, allowed: Iterable[str] = (),
            append_only: Iterable[str] = ()) -> list[str]:
    """What differs, outside the `allowed` folders (relative paths; their parent folders may appear), and
    inside the `append_only` ones anything but a new file (what was there must stay as it was)."""
    allowed = [a.rstrip("/") for a in allowed]
    append_only = [a.rstrip("/") for a in append_only]

    def excused(path: str) -> bool:
        if before.get(path) is None and any(path == f or path.startswith(f + "/") for f in append_only):
            return True
        for folder in allowed:
            if path == folder or path.startswith(folder + "/"):
                return True
            if folder.startswith(path + "/") and "dir" in (before.get(path), after.get(path)):
                return True  # a parent folder of an allowed one, created or removed with it
        return False

    found = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new or excused(path):
            continue
        what = "created" if old is None else "DELETED" if new is None else "modified"
        found.append(f"{what}: {path}" + ("/" if "dir" in (old, new) else ""))
    return found


def available_memory() -> float:
    """MemAvailable of /proc/meminfo in bytes (what the resource guards compare with)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return math.inf


def _limit_memory() -> None:  # preexec_fn of the children
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class Ctx:
    """One case's world: the working folder, the module's prepared results, and ways to run `pgvar`."""

    def __init__(self, tmp: Path, prepared: "Prepared", capsys, caplog, monkeypatch):
        self.tmp, self.prepared, self.capsys, self.caplog = tmp, prepared, capsys, caplog
        self.monkeypatch = monkeypatch
        self.work, self.cache = tmp / "work", tmp / "cache"
        self.work.mkdir()
        self.cache.mkdir()
        self.info: dict[str, Any] = {}
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("CI", "true")
        monkeypatch.setenv("PGVAR_CACHE_DIR", str(self.cache))
        monkeypatch.delenv("PGVAR_DEBUG", raising=False)
        self.env = {**os.environ, "CI": "true", "PGVAR_CACHE_DIR": str(self.cache)}
        self.env.pop("PGVAR_DEBUG", None)

    # files
    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
        return path

    def results(self, source: str = "base", dest: str | None = None) -> Path:
        """A copy (with times) of one of the module's results folders at results/<dest>."""
        target = self.work / "results" / (dest or source)
        shutil.copytree(self.prepared.folders[source], target)
        return target

    def cells(self, folder: str = "results/base") -> list[Path]:
        return sorted((self.work / folder).glob("cell-*.parquet"))

    def snapshot(self) -> Snapshot:
        return snapshot(self.work)

    # running pgvar
    def cli(self, *argv: str) -> Outcome:
        """`pgvar argv` in this process; an exception escaping main() is reported as the traceback it prints."""
        argv = [str(a) for a in argv]
        self.capsys.readouterr()
        self.caplog.clear()
        began, escaped = time.perf_counter(), ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # what the command shows: Python's default filters
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # noqa: BLE001 - what the real command would print and exit 1 with
                code, escaped = 1, traceback.format_exc()
        seconds = time.perf_counter() - began
        captured = self.capsys.readouterr()
        shown = "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
        logged = "".join(f"{r.levelname}:{r.name}:{r.getMessage()}\n" for r in self.caplog.records
                         if r.levelno >= logging.WARNING)
        return shown_if_asked(Outcome(argv, code, captured.out, captured.err + shown + logged + escaped, seconds))

    def popen(self, *argv: str, limit: bool = False) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pgvar", *map(str, argv)], cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_limit_memory if limit else None)

    def sub(self, *argv: str, limit: bool = True, timeout: float = CHILD_TIMEOUT) -> Outcome:
        """`python -m pgvar argv` in a child process (its own process group), ≤ 4 GiB and `timeout` s."""
        began = time.perf_counter()
        proc = self.popen(*argv, limit=limit)
        return shown_if_asked(finish(proc, argv, began, timeout))


def shown_if_asked(outcome: Outcome) -> Outcome:
    """HOSTILE_VERBOSE=1: every command and its output on the terminal (to read the messages of passing cases)."""
    if os.environ.get("HOSTILE_VERBOSE") == "1":
        print("\n" + outcome.describe(), file=sys.__stderr__, flush=True)
    return outcome


def note(text: str) -> None:
    if os.environ.get("HOSTILE_VERBOSE") == "1":
        print("\n" + text, file=sys.__stderr__, flush=True)


def finish(proc: subprocess.Popen, argv: Sequence[str], began: float, timeout: float = CHILD_TIMEOUT) -> Outcome:
    try:
        out, err = proc.communicate(timeout=max(0.1, timeout - (time.perf_counter() - began)))
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    return Outcome(list(map(str, argv)), None if timed_out else proc.returncode, out, err,
                   time.perf_counter() - began, timed_out)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it and any workers it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------------------ checks

def error_problems(outcome: Outcome, mentions: Sequence[str] = ()) -> list[str]:
    """Why `outcome` is not a clean one-line error (empty: it is)."""
    problems = []
    if outcome.code != 2:
        problems.append(f"exit code {outcome.code}, expected 2")
    lines = outcome.err_lines
    if len(lines) != 1:
        problems.append(f"stderr has {len(lines)} non-empty lines, expected exactly 1")
    if lines and not lines[0].startswith("pgvar: error:"):
        problems.append("stderr does not start with 'pgvar: error:'")
    if lines and lines[0].strip() == "pgvar: error:":
        problems.append("the error line says nothing")
    if "Traceback" in outcome.out + outcome.err:
        problems.append("a traceback was printed")
    if GENERIC in outcome.err:
        problems.append("the last-resort message of the top-level guard, not a message of its own for this case")
    if mentions and not any(m.lower() in outcome.err.lower() for m in mentions):
        problems.append(f"the error does not name what is wrong (expected one of {list(mentions)})")
    return problems


def no_traceback(outcome: Outcome) -> list[str]:
    return ["a traceback was printed"] if "Traceback" in outcome.out + outcome.err else []


def fail_if(problems: list[str], *details: str) -> None:
    if problems:
        pytest.fail("\n".join(["- " + p for p in problems] + [d for d in details if d]), pytrace=False)


def changed_text(changed: list[str]) -> str:
    return "  changed outside the allowed folders:\n" + "\n".join(f"    {c}" for c in changed) if changed else ""


def report_counts(html: str) -> tuple[int, int] | None:
    """(finished, planned) from the report's "N finished of M planned"."""
    found = re.search(r"(\d+) finished of (\d+) planned", html)
    return (int(found[1]), int(found[2])) if found else None


def sweep_summary(out: str) -> tuple[int, int, int] | None:
    """(cells, run, reused) from `pgvar sweep`'s last line."""
    found = re.search(r"(\d+) cells, (\d+) run,(?: \d+ failed,)? (\d+) reused", out)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


def read_cell(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - unreadable is the answer
        return None


def stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in VOLATILE if c in frame]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # error | warn | flags | api-error | scenario
    what: str  # what it checks, one line
    run: Callable[[Ctx], None] = field(repr=False)
    issue: bool = True  # listed in issue 14 (False: one of this file's own)


def error(id: str, what: str, argv: Sequence[str], setup: Callable[[Ctx], Any] | None = None,
          allowed: Sequence[str] = (), mentions: Sequence[str] = (), child: bool = False,
          timeout: float = CHILD_TIMEOUT, max_seconds: float | None = None, issue: bool = True,
          append_only: Sequence[str] = (), skip_if_fits: float | None = None) -> Case:
    def run(ctx: Ctx) -> None:
        if skip_if_fits is not None and skip_if_fits < 0.5 * available_memory():
            pytest.skip(f"this machine could hold the {skip_if_fits / 1e9:.3g} GB the case needs, which a "
                        "4 GiB child cannot: not a hostile size here")
        if setup:
            setup(ctx)
        before = ctx.snapshot()
        outcome = ctx.sub(*argv, timeout=timeout) if child else ctx.cli(*argv)
        changed = changes(before, ctx.snapshot(), allowed, append_only)
        problems = error_problems(outcome, mentions)
        if changed:
            problems.append(f"{len(changed)} change(s) outside the allowed folders {list(allowed)}"
                            + (f" (in {list(append_only)} only new files are allowed)" if append_only else ""))
        if max_seconds is not None and outcome.seconds > max_seconds:
            problems.append(f"took {outcome.seconds:.1f} s, expected under {max_seconds:g} s")
        fail_if(problems, outcome.describe(), changed_text(changed))

    return Case(id, "error", what, run, issue)


def warn(id: str, what: str, setup: Callable[[Ctx], Any], names: Callable[[Ctx], Sequence[str | re.Pattern]],
         finished: Callable[[Ctx], int] | None = None, argv: Sequence[str] = REPORT, issue: bool = True) -> Case:
    """`pgvar report` on a results folder with something wrong in it: exit 0, the page written, the offending
    file named (any of `names`, a string or a regex, in stderr or index.html), `finished` cells counted."""

    def run(ctx: Ctx) -> None:
        setup(ctx)
        before = ctx.snapshot()
        outcome = ctx.cli(*argv)
        changed = changes(before, ctx.snapshot(), ["out"])
        problems = no_traceback(outcome)
        if outcome.code != 0:
            problems.append(f"exit code {outcome.code}, expected 0 (a warning, and the report of the rest)")
        index = ctx.work / "out" / "index.html"
        html = index.read_text(encoding="utf-8", errors="replace") if index.is_file() else ""
        if not html:
            problems.append("no out/index.html written")
        wanted = list(names(ctx))
        text = outcome.err + "\n" + html
        if not any((w.search(text) if isinstance(w, re.Pattern) else w in text) for w in wanted):
            problems.append("neither stderr nor the report page names the offending file: expected one of "
                            + ", ".join(w.pattern if isinstance(w, re.Pattern) else repr(w) for w in wanted))
        counts = report_counts(html)
        if html and finished is not None:
            expected = finished(ctx)
            if counts is None:
                problems.append("the page has no 'N finished of M planned'")
            elif counts[0] != expected:
                problems.append(f"the page counts {counts[0]} finished cells (of {counts[1]} planned), "
                                f"expected {expected}")
        if counts and counts[0] > counts[1]:
            problems.append(f"more cells finished ({counts[0]}) than planned ({counts[1]}): foreign cells mixed in")
        if changed:
            problems.append(f"{len(changed)} change(s) outside out/")
        fail_if(problems, outcome.describe(), changed_text(changed))

    return Case(id, "warn", what, run, issue)


def flags(id: str, what: str, argv: Sequence[str], check: Callable[[dict], list[str]],
          refusal_accepted: bool = False, setup: Callable[[Ctx], Any] | None = None, issue: bool = True) -> Case:
    """`pgvar measure ... --json`: exit 0 and `check(record)` empty, or (if accepted) a clean one-line refusal."""

    def run(ctx: Ctx) -> None:
        if setup:
            setup(ctx)
        before = ctx.snapshot()
        outcome = ctx.cli(*argv, "--json")
        changed = changes(before, ctx.snapshot())
        if refusal_accepted and outcome.code == 2:
            problems = error_problems(outcome)
        else:
            problems = no_traceback(outcome)
            if outcome.code != 0:
                problems.append(f"exit code {outcome.code}, expected 0 with flags"
                                + (" (or 2 with one line)" if refusal_accepted else ""))
            else:
                try:
                    problems += check(json.loads(outcome.out))
                except json.JSONDecodeError as err:
                    problems.append(f"stdout is not one JSON object ({err})")
        if changed:
            problems.append(f"{len(changed)} change(s) in the working folder")
        fail_if(problems, outcome.describe(), changed_text(changed))

    return Case(id, "flags", what, run, issue)


def api_error(id: str, what: str, call: Callable[[], Any], issue: bool = True) -> Case:
    def run(ctx: Ctx) -> None:
        try:
            call()
        except ConfigError as err:
            message = str(err)
            fail_if(["the ConfigError message is empty"] if not message.strip() else
                    ["the ConfigError message has more than one line"] if "\n" in message.strip() else [],
                    f"  message: {message}")
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"- raised {type(err).__name__} instead of ConfigError: {err}\n{traceback.format_exc()}",
                        pytrace=False)
        else:
            pytest.fail("- accepted: expected a ConfigError", pytrace=False)

    return Case(id, "api-error", what, run, issue)


def scenario(id: str, what: str, run: Callable[[Ctx], None], issue: bool = True) -> Case:
    return Case(id, "scenario", what, run, issue)


# --------------------------------------------------------------------------------------------- measure

MEASURE = ("measure", "--env", "frozenlake", "--estimator", "reinforce", "--batch-size", "4", "--reps", "10",
           "--seed", "0")
SAMPLED = ("measure", "--env", "cartpole", "--env-opt", "hidden=4", "--env-opt", "horizon=10", "--estimator",
           "reinforce", "--batch-size", "4", "--reps", "10", "--seed", "0", "--reference-samples", "256",
           "--reference-batch-size", "8")


def measure_with(*extra: str, base: Sequence[str] = MEASURE, **flags_: str) -> list[str]:
    """`base` with --flag values replaced (flags_={"batch_size": "0"}) and `extra` appended."""
    argv = list(base)
    for key, value in flags_.items():
        flag = "--" + key.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv + list(extra)


def env_case(env: str, *options: str, batch_size: str = "4", reps: str = "10") -> list[str]:
    argv = ["measure", "--env", env, "--estimator", "reinforce", "--batch-size", batch_size, "--reps", reps,
            "--seed", "0", "--reference-samples", "256", "--reference-batch-size", "8"]
    for option in options:
        argv += ["--env-opt", option]
    return argv


def regular_file(rel: str) -> Callable[[Ctx], Any]:
    return lambda ctx: ctx.write(rel, "a regular file, not a folder\n")


def theta_file(rel: str, value: Any, how: str = "npy") -> Callable[[Ctx], Any]:
    def setup(ctx: Ctx) -> None:
        path = ctx.work / rel
        if how == "npy":
            np.save(path, value, allow_pickle=False)
            if path.suffix != ".npy":  # np.save appends .npy
                path.with_name(path.name + ".npy").rename(path)
        elif how == "npz-as-npy":
            np.savez(ctx.work / "theta.npz", theta=value)
            (ctx.work / "theta.npz").rename(path)
        elif how == "pt":
            import torch

            torch.save(value, path)
        elif how == "bytes":
            path.write_bytes(value)
        elif how == "dir":
            path.mkdir()

    return setup


def theta_case(id: str, what: str, value: Any, env: str = "frozenlake", how: str = "npy", rel: str = "theta.npy",
               issue: bool = True, mentions: Sequence[str] = ("theta",)) -> Case:
    return error(id, what, measure_with("--theta", rel, env=env), setup=theta_file(rel, value, how),
                 mentions=mentions, issue=issue)


def record_flags(nonfinite_over: float | None = None, degenerate: bool | None = None,
                 trustworthy: bool | None = None) -> Callable[[dict], list[str]]:
    """A check of `measure(...).to_dict()` flags (names as in bench/metrics.py)."""

    def check(record: dict) -> list[str]:
        problems = []
        for key in ("nonfinite_fraction", "degenerate", "trustworthy"):
            if key not in record:
                problems.append(f"the record has no '{key}'")
        if nonfinite_over is not None and "nonfinite_fraction" in record:
            fraction = record["nonfinite_fraction"]
            if fraction is None or not fraction > nonfinite_over:
                problems.append(f"nonfinite_fraction = {fraction}, expected > {nonfinite_over} "
                                f"(nonfinite = {record.get('nonfinite')} of {record.get('reps')})")
            elif record.get("nonfinite") is not None and abs(fraction - record["nonfinite"] / record["reps"]) > 1e-12:
                problems.append(f"nonfinite_fraction = {fraction} ≠ nonfinite / reps")
        if degenerate is not None and record.get("degenerate", not degenerate) is not degenerate:
            problems.append(f"degenerate = {record.get('degenerate')}, expected {degenerate}")
        if trustworthy is not None and record.get("trustworthy", not trustworthy) is not trustworthy:
            problems.append(f"trustworthy = {record.get('trustworthy')}, expected {trustworthy} "
                            f"(reasons: {record.get('untrustworthy_reasons')})")
        if trustworthy is False and record.get("trustworthy") is False and not record.get("untrustworthy_reasons"):
            problems.append("untrustworthy without a stated reason ('untrustworthy_reasons' empty)")
        if degenerate and record.get("bias_pvalue") is not None:
            problems.append(f"a degenerate measurement still has a bias p-value ({record['bias_pvalue']})")
        return problems

    return check


def api_measure(seed: Any) -> Callable[[], Any]:
    def call():
        from bench.harness import measure
        from envs import make_problem

        return measure(make_problem("frozenlake", {}), "reinforce", 4, 10, seed=seed, show_progress=False)

    return call


MEASURE_CASES = [
    error("measure-seed-negative", "--seed -1 (SeedSequence's ValueError)", measure_with(seed="-1"),
          mentions=("seed",)),
    error("measure-reference-seed-negative", "--reference-seed -1 on a sampled reference",
          measure_with("--reference-seed", "-1", base=SAMPLED), mentions=("seed",)),
    error("measure-reference-cache-is-a-regular-file", "--reference-cache names a regular file",
          measure_with("--reference-cache", "cache.txt", base=SAMPLED), setup=regular_file("cache.txt"),
          mentions=("cache",)),
    error("measure-reference-cache-unwritable-below-a-file", "--reference-cache below a regular file "
          "(unwritable even for root)", measure_with("--reference-cache", "cache.txt/references", base=SAMPLED),
          setup=regular_file("cache.txt"), mentions=("cache",)),
    error("measure-reference-cache-unwritable-under-proc", "--reference-cache under /proc (unwritable even for root)",
          measure_with("--reference-cache", "/proc/pgvar-references", base=SAMPLED), mentions=("cache",),
          issue=False),
    error("measure-batch-size-1e12", "--batch-size 10**12: refused by the memory guard, not the allocator",
          measure_with(batch_size=str(10**12)), child=True, mentions=SIZE_WORDS),
    error("measure-reps-1e12", "--reps 10**12: refused by the memory guard",
          measure_with(reps=str(10**12)), child=True, mentions=SIZE_WORDS),
    error("measure-cartpole-hidden-100000x2", "cartpole hidden=100000,100000 (10^10 parameters)",
          env_case("cartpole", "hidden=100000,100000", "horizon=10"), child=True,
          mentions=SIZE_WORDS),
    error("measure-garnet-at-its-maximum", "garnet states=10000 actions=1000 branching=10000 (its allowed maximum)",
          env_case("garnet", "states=10000", "actions=1000", "branching=10000"), child=True,
          mentions=SIZE_WORDS),
    error("measure-contextual-bandit-10000x1000", "contextual-bandit contexts=10000 arms=1000 at N = 1000 "
          "(80 GB of per-trajectory gradients)", env_case("contextual-bandit", "contexts=10000", "arms=1000",
                                                          batch_size="1000"), child=True,
          mentions=SIZE_WORDS),
    error("measure-lqr-100x100-horizon-10000", "lqr state_dim=100 action_dim=100 horizon=10000 at N = 1000",
          env_case("lqr", "state_dim=100", "action_dim=100", "horizon=10000", batch_size="1000"), child=True,
          mentions=SIZE_WORDS, skip_if_fits=18.4e9),
    error("measure-batch-size-zero", "--batch-size 0", measure_with(batch_size="0"), mentions=("batch",),
          issue=False),
    error("measure-reps-one", "--reps 1 (a variance needs two)", measure_with(reps="1"), mentions=("reps",),
          issue=False),
    error("measure-reference-samples-negative", "--reference-samples -256 on a sampled reference",
          measure_with(base=SAMPLED, reference_samples="-256"), mentions=("samples",), issue=False),
    error("measure-reference-batch-size-zero", "--reference-batch-size 0 on a sampled reference",
          measure_with(base=SAMPLED, reference_batch_size="0"), mentions=("batch",), issue=False),
    # θ files
    theta_case("theta-string-array", "a .npy of strings", np.array(["a"] * 64)),
    theta_case("theta-structured-array", "a .npy of a structured dtype",
               np.zeros(64, dtype=[("x", "f8"), ("y", "i4")])),
    theta_case("theta-npz-renamed-npy", "an .npz archive named .npy", np.zeros(64), how="npz-as-npy"),
    theta_case("theta-complex-array", "complex values (the imaginary part must not be dropped silently)",
               np.zeros(64) + 1j),
    theta_case("theta-numeric-strings", "numbers as strings ('0.5')", np.array(["0.5"] * 64)),
    theta_case("theta-transposed-4x16-for-16x4", "a [4, 16] array where frozenlake documents [16, 4]",
               np.zeros((4, 16))),
    theta_case("theta-gaussian-sigma-overflows", "θ = [0, 800] on the Gaussian bandit: σ = exp(800) overflows",
               np.array([0.0, 800.0]), env="gaussian-bandit"),
    theta_case("theta-bool-array", "a .npy of booleans (not a real number dtype)", np.ones(64, dtype=bool),
               issue=False),
    theta_case("theta-nan", "a θ with a NaN", np.full(64, np.nan), issue=False),
    theta_case("theta-zero-byte-file", "an empty .npy file", b"", how="bytes", issue=False),
    theta_case("theta-is-a-directory", "--theta names a directory", None, how="dir", rel="theta.npy", issue=False),
    theta_case("theta-pt-holding-a-dict", "a .pt file holding a dict, not a tensor", {"theta": [0.0] * 64},
               how="pt", rel="theta.pt", issue=False),
    # numbers that mislead
    flags("measure-nonfinite-majority-flagged", "lqr H=100, is-per-decision behaviour=distance:100: most "
          "estimates non-finite → nonfinite_fraction > 5%, untrustworthy",
          ["measure", "--env", "lqr", "--env-opt", "horizon=100", "--estimator", "is-per-decision", "--est-opt",
           "behaviour=distance:100", "--batch-size", "4", "--reps", "50", "--seed", "3"],
          record_flags(nonfinite_over=0.05, trustworthy=False)),
    flags("measure-underflowed-weights-flagged-degenerate", "garnet H=100, is-trajectory behaviour=distance:50: "
          "importance weights underflow, estimates ~0 → degenerate, no p-value, untrustworthy",
          ["measure", "--env", "garnet", "--env-opt", "horizon=100", "--estimator", "is-trajectory", "--est-opt",
           "behaviour=distance:50", "--batch-size", "8", "--reps", "100", "--seed", "0"],
          record_flags(degenerate=True, trustworthy=False)),
    flags("theta-1e308-on-softmax-bandit", "θ = [1e308, 0, 0] saturates the softmax: all estimates 0 → refused "
          "in one line, or measured and flagged untrustworthy",
          ["measure", "--env", "softmax-bandit", "--estimator", "reinforce", "--theta", "big.npy", "--batch-size",
           "4", "--reps", "50", "--seed", "0"], record_flags(trustworthy=False), refusal_accepted=True,
          setup=theta_file("big.npy", np.array([1e308, 0.0, 0.0]))),
    api_error("api-measure-seed-none", "measure(problem, 'reinforce', 4, 10, seed=None): not reproducible",
              api_measure(None)),
    api_error("api-measure-seed-negative", "measure(..., seed=-1)", api_measure(-1), issue=False),
    api_error("api-measure-seed-float", "measure(..., seed=1.5)", api_measure(1.5), issue=False),
    api_error("api-measure-seed-string", "measure(..., seed='0')", api_measure("0"), issue=False),
]


# ------------------------------------------------------------------------------------------ sweep

def sweep_error(id: str, what: str, text: str | None, *flags_: str, setup: Callable[[Ctx], Any] | None = None,
                allowed: Sequence[str] = (), mentions: Sequence[str] = (), child: bool = False,
                issue: bool = True, timeout: float = CHILD_TIMEOUT, max_seconds: float | None = None,
                append_only: Sequence[str] = ()) -> Case:
    def prepare(ctx: Ctx) -> None:
        if text is not None:
            ctx.write("sweep.toml", text)
        if setup:
            setup(ctx)

    executor = [] if "--executor" in flags_ else ["--executor", "inprocess"]
    return error(id, what, ["sweep", "sweep.toml", *executor, *flags_], setup=prepare,
                 allowed=allowed, mentions=mentions, child=child, issue=issue, timeout=timeout,
                 max_seconds=max_seconds, append_only=append_only)


def canary_and_sibling(ctx: Ctx) -> None:
    """A file beside the config and a sibling sweep's finished results under results/."""
    ctx.write("canary.txt", "a user's file: must survive\n")
    ctx.results("base", "other")


def prior_run(ctx: Ctx) -> None:
    """The finished results of an earlier, valid run of the sweep: a config refused now must not replace its
    _sweep.json or touch its cells (only new files, e.g. a lock, may appear there)."""
    ctx.results("base")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dask_nobody_listens() -> Case:
    def run(ctx: Ctx) -> None:  # the port is chosen when the case runs
        ctx.write("sweep.toml", config())
        before = ctx.snapshot()
        outcome = ctx.sub("sweep", "sweep.toml", "--executor", "dask", "--scheduler",
                          f"tcp://127.0.0.1:{free_port()}", timeout=40)
        changed = changes(before, ctx.snapshot(), ["results/base"])
        problems = error_problems(outcome, ("scheduler", "connect", "dask", "127.0.0.1"))
        if outcome.seconds > 20:
            problems.append(f"took {outcome.seconds:.1f} s, expected well under 30 s (< 20 s)")
        if changed:
            problems.append(f"{len(changed)} change(s) outside results/base")
        fail_if(problems, outcome.describe(), changed_text(changed))

    return Case("sweep-dask-scheduler-nobody-listens", "error", "--executor dask --scheduler at a port where "
                "nothing listens: one line in well under 30 s (< 20 s)", run)


SWEEP_CASES = [
    sweep_error("sweep-name-dotdot-fresh-deletes-nothing", 'name = ".." with --fresh (deleted the working folder): '
                "refused before anything is deleted; the canary beside the config and a sibling sweep survive",
                config(".."), "--fresh", setup=canary_and_sibling, mentions=("name",)),
    sweep_error("sweep-name-dot-fresh-keeps-other-sweeps", 'name = "." with --fresh (deleted every other sweep '
                "under results/): refused, nothing deleted", config("."), "--fresh", setup=canary_and_sibling,
                mentions=("name",)),
    sweep_error("sweep-name-dotdot-writes-nothing-into-the-root", 'name = ".." without --fresh (wrote _sweep.json '
                "and cells into the project root): refused, nothing written", config(".."),
                setup=canary_and_sibling, mentions=("name",)),
    sweep_error("sweep-name-leading-dot", 'name = ".hidden": a leading "." is not a plain identifier',
                config(".hidden"), setup=canary_and_sibling, mentions=("name",), issue=False),
    sweep_error("sweep-name-with-slash", 'name = "../escape"', config("../escape"), setup=canary_and_sibling,
                mentions=("name",), issue=False),
    sweep_error("sweep-name-with-nul", 'name = "a\\u0000b" (an embedded NUL)', config("a\u0000b"),
                mentions=("name",), issue=False),
    sweep_error("sweep-name-empty", 'name = ""', config(""), mentions=("name",), issue=False),
    sweep_error("sweep-name-not-a-string", "name = 5", config(None, lambda t: "name = 5\n" + t), mentions=("name",),
                issue=False),
    sweep_error("sweep-duplicate-problem-labels-refused-before-compute", "two [[problems]] labelled alike: refused "
                "at config time, not by the report after the compute",
                config(edit=lambda t: t.replace('env = "softmax-bandit"', 'env = "softmax-bandit"\nlabel = "same"')
                       .replace('env = "garnet"', 'env = "garnet"\nlabel = "same"')),
                setup=prior_run, append_only=["results/base"], mentions=("label", "same")),
    sweep_error("sweep-same-automatic-label-different-theta", "two softmax-bandit problems differing only in θ "
                "(both labelled 'softmax-bandit'): refused at config time",
                config(edit=lambda t: t.replace('[[problems]]\nenv = "garnet"',
                                                '[[problems]]\nenv = "softmax-bandit"\ntheta = "random:0.5:1"\n\n'
                                                '[[problems]]\nenv = "garnet"')),
                setup=prior_run, append_only=["results/base"], mentions=("label", "softmax-bandit"), issue=False),
    sweep_error("sweep-config-is-a-directory", "the config path is a directory (IsADirectoryError)", None,
                setup=lambda ctx: (ctx.work / "sweep.toml").mkdir(), mentions=("sweep.toml",)),
    sweep_error("sweep-config-invalid-utf8", "a config with invalid UTF-8 (UnicodeDecodeError)", None,
                setup=lambda ctx: ctx.write("sweep.toml", b'name = "caf\xe9"\n' + config().encode()),
                mentions=("sweep.toml",)),
    sweep_error("sweep-config-empty-file", "a zero-byte config", "", mentions=("sweep.toml",), issue=False),
    sweep_error("sweep-reps-a-string", 'reps = "ten"', config(reps='"ten"'), mentions=("reps",), issue=False),
    sweep_error("sweep-theta-random-infinite-scale", 'theta = "random:1e400:0" (scale inf)',
                config(edit=lambda t: t.replace('env = "softmax-bandit"', 'env = "softmax-bandit"\n'
                                                'theta = "random:1e400:0"')),
                setup=prior_run, append_only=["results/base"], mentions=("theta",), issue=False),
    sweep_error("sweep-theta-random-nan-scale", 'theta = "random:nan:0"',
                config(edit=lambda t: t.replace('env = "softmax-bandit"', 'env = "softmax-bandit"\n'
                                                'theta = "random:nan:0"')),
                setup=prior_run, append_only=["results/base"], mentions=("theta",), issue=False),
    sweep_error("sweep-estimator-table-names-an-unknown-problem", 'problems = ["nope"] in an [[estimators]] table',
                config(edit=with_table('[[estimators]]\nname = "reinforce"\noptions = { baseline = "batch_mean" }\n'
                                       'problems = ["nope"]')), mentions=("problems", "nope"), issue=False),
    sweep_error("sweep-results-is-a-regular-file", "--results names a regular file (NotADirectoryError)",
                config(), "--results", "results", setup=regular_file("results"), mentions=("results",)),
    sweep_error("sweep-results-below-a-regular-file", "--results below a regular file", config(), "--results",
                "blocker/results", setup=regular_file("blocker"), mentions=("results", "blocker"), issue=False),
    dask_nobody_listens(),
    sweep_error("sweep-batch-sizes-1e12", "batch_sizes = [10**12] (8 TB asked of the allocator): the memory guard",
                config(batch_sizes=f"[{10**12}]"), allowed=["results/base"], child=True,
                mentions=SIZE_WORDS),
    sweep_error("sweep-reps-1e12", "reps = 10**12 (killed by the kernel after filling memory): the memory guard",
                config(reps=str(10**12)), allowed=["results/base"], child=True,
                mentions=SIZE_WORDS),
    sweep_error("sweep-workers-zero", "--workers 0 (was accepted)", config(), "--workers", "0",
                allowed=["results/base"], mentions=("workers",)),
    sweep_error("sweep-workers-zero-processes", "--executor processes --workers 0", config(), "--executor",
                "processes", "--workers", "0", allowed=["results/base"], mentions=("workers",), issue=False),
    sweep_error("sweep-unknown-executor", "--executor threads", config(), "--executor", "threads",
                mentions=("executor",), issue=False),
]


# ---------------------------------------------------------------------------------- sweep scenarios

def run_clean(ctx: Ctx, text: str) -> tuple[set[str], tuple[int, int, int] | None]:
    """The same sweep without duplicates, in a results root outside the working folder: its cell files."""
    path = ctx.tmp / "clean.toml"
    path.write_text(text)
    outcome = ctx.cli("sweep", str(path), "--executor", "inprocess", "--results", str(ctx.tmp / "clean"))
    assert outcome.code == 0, "the duplicate-free twin of the config must run\n" + outcome.describe()
    name = re.search(r'^name = "(.*)"$', text, re.M)[1]
    return {p.name for p in (ctx.tmp / "clean" / name).glob("cell-*.parquet")}, sweep_summary(outcome.out)


def duplicates(id: str, what: str, duplicated: str, clean: str) -> Case:
    """Each distinct cell computed once and planned once; a one-line refusal before anything is written
    is accepted too (it computes nothing twice either)."""

    def run(ctx: Ctx) -> None:
        ctx.write("sweep.toml", duplicated)
        before = ctx.snapshot()
        outcome = ctx.cli("sweep", "sweep.toml", "--executor", "inprocess")
        after = ctx.snapshot()
        if outcome.code == 2:
            changed = changes(before, after)
            problems = error_problems(outcome) + ([f"{len(changed)} change(s) although refused"] if changed else [])
            fail_if(problems, outcome.describe(), changed_text(changed))
            return
        expected, clean_summary = run_clean(ctx, clean)
        written = {p.name for p in ctx.cells("results/dup")}
        summary = sweep_summary(outcome.out)
        problems = no_traceback(outcome)
        if outcome.code != 0:
            problems.append(f"exit code {outcome.code}, expected 0 (duplicates computed once) or 2 (refused)")
        if summary is None:
            problems.append("no 'N cells, R run, U reused' line")
        elif summary[0] != len(expected) or summary[1] != len(expected):
            problems.append(f"planned {summary[0]} cells and ran {summary[1]}; the {len(expected)} distinct cells "
                            f"must be planned and computed once each")
        if written != expected:
            problems.append(f"{len(written)} cell files, expected the {len(expected)} of the duplicate-free config")
        meta = ctx.work / "results" / "dup" / "_sweep.json"
        if meta.is_file():
            planned = json.loads(meta.read_text()).get("cells")
            if planned != len(expected):
                problems.append(f"_sweep.json plans {planned} cells, expected {len(expected)}")
        changed = changes(before, after, ["results/dup"])
        if changed:
            problems.append(f"{len(changed)} change(s) outside results/dup")
        fail_if(problems, outcome.describe(), changed_text(changed))

    return scenario(id, what, run)


DUP = config("dup")


def corrupt_cell_is_recomputed(id: str, what: str, damage: Callable[[Path], None], issue: bool = True) -> Case:
    def run(ctx: Ctx) -> None:
        ctx.results("base")
        ctx.write("sweep.toml", config())
        cells = ctx.cells()
        victim = cells[len(cells) // 2]
        original = stable(pd.read_parquet(victim))
        damage(victim)
        others = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cells if p != victim}
        before = ctx.snapshot()
        outcome = ctx.cli("sweep", "sweep.toml", "--executor", "inprocess")
        changed = changes(before, ctx.snapshot(), ["results/base"])
        problems = no_traceback(outcome)
        if outcome.code != 0:
            problems.append(f"exit code {outcome.code}, expected 0")
        summary = sweep_summary(outcome.out)
        if summary is None or summary[1:] != (1, BASE_CELLS - 1):
            problems.append(f"sweep summary {summary}: expected the damaged cell run again and the "
                            f"{BASE_CELLS - 1} others reused")
        row = read_cell(victim) if victim.is_file() else None
        if row is None:
            problems.append(f"{victim.name} still does not read back whole")
        else:
            try:
                pd.testing.assert_frame_equal(stable(row), original)
            except AssertionError as err:
                problems.append(f"the recomputed cell differs from the original: {str(err)[:300]}")
        now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ctx.cells() if p.name in others}
        if now != others:
            problems.append("the intact cells were rewritten or removed")
        if changed:
            problems.append(f"{len(changed)} change(s) outside results/base")
        fail_if(problems, f"  damaged: {victim.name}", outcome.describe(), changed_text(changed))

    return scenario(id, what, run, issue)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def fresh_deletes_only_store_files(ctx: Ctx) -> None:
    folder = ctx.results("base")
    ctx.write("results/base/notes.txt", "a user's notes in the results folder\n")
    ctx.write("sweep.toml", config())
    before = ctx.snapshot()
    outcome = ctx.cli("sweep", "sweep.toml", "--executor", "inprocess", "--fresh")
    changed = changes(before, ctx.snapshot(), ["results/base"])
    problems = no_traceback(outcome)
    if outcome.code != 0:
        problems.append(f"exit code {outcome.code}, expected 0")
    if not (folder / "notes.txt").is_file():
        problems.append("--fresh deleted results/base/notes.txt, a file the store did not write")
    summary = sweep_summary(outcome.out)
    if summary is None or summary[1] != BASE_CELLS:
        problems.append(f"sweep summary {summary}: --fresh must recompute all {BASE_CELLS} cells")
    if not re.search(r"(delet|remov)[^\n]*\d|\d[^\n]*(delet|remov)", outcome.out + outcome.err, re.I):
        problems.append(f"--fresh does not say how many files it deleted ({BASE_CELLS} cells and _sweep.json)")
    if changed:
        problems.append(f"{len(changed)} change(s) outside results/base")
    fail_if(problems, outcome.describe(), changed_text(changed))


def one_failing_cell_in_a_pool(ctx: Ctx) -> None:
    """A process pool with one failing cell: the others written as they finish, the failure recorded and
    counted by the report, exit 2 with one line."""
    ctx.write("sweep.toml", config("failing", repetitions="1", edit=with_table(FAILING_TABLE)))
    before = ctx.snapshot()
    outcome = ctx.cli("sweep", "sweep.toml", "--executor", "processes", "--workers", "2")
    folder = ctx.work / "results" / "failing"
    written = sorted(folder.glob("cell-*.parquet"))
    good = 2 * 2 * 2  # the reinforce cells: problems × baselines × batch sizes, one repetition
    problems = error_problems(outcome)
    if len(written) != good:
        problems.append(f"{len(written)} cell files written, expected the {good} cells that did not fail")
    unreadable = [p.name for p in written if read_cell(p) is None]
    if unreadable:
        problems.append(f"unreadable cell files: {unreadable}")
    recorded = [p.name for p in folder.rglob("*") if p.is_file() and not p.name.startswith("cell-")
                and re.search(rb"singular|LinAlgError", p.read_bytes())]
    if not recorded:
        problems.append("the failing cell's error (torch.linalg.solve: ... singular) is recorded nowhere in the store")
    changed = changes(before, ctx.snapshot(), ["results/failing"])
    if changed:
        problems.append(f"{len(changed)} change(s) outside results/failing")
    report = ctx.cli("report", "results/failing", "--out", "out")
    html_path = ctx.work / "out" / "index.html"
    html = html_path.read_text(encoding="utf-8", errors="replace") if html_path.is_file() else ""
    if report.code != 0 or not html:
        problems.append(f"the report of the sweep with a failed cell: exit {report.code}, page written: {bool(html)}")
    elif not re.search(r"fail", html, re.I):
        problems.append("the report page does not count the failed cell")
    problems += no_traceback(report)
    fail_if(problems, f"  cell files: {[p.name for p in written]}\n  error recorded in: {recorded}",
            outcome.describe(), changed_text(changed), "  the report:\n" + report.describe())


def two_sweeps_at_once(ctx: Ctx) -> None:
    """A second sweep on a results folder a first is still writing: refused with one line; the first
    completes with every cell once."""
    text = config("race", reps="500", repetitions="2", batch_sizes="[8, 32]",
                  edit=lambda t: t.replace("states = 4, horizon = 5", "states = 20, horizon = 100"))
    ctx.write("sweep.toml", text)
    folder = ctx.work / "results" / "race"
    argv = ("sweep", "sweep.toml", "--executor", "inprocess")
    began = time.perf_counter()
    first = ctx.popen(*argv)
    try:
        while not (folder / "_sweep.json").exists() and first.poll() is None:
            assert time.perf_counter() - began < 60, "the first sweep wrote no _sweep.json within 60 s"
            time.sleep(0.02)
        # Stopped while it holds the folder, the first sweep cannot finish before the second has tried (no race
        # on the machine's speed); it resumes afterwards.
        os.killpg(first.pid, signal.SIGSTOP)
        started_second = time.perf_counter()
        try:
            second = finish(ctx.popen(*argv), argv, started_second, timeout=120)
            first_running = first.poll() is None
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        first_done = finish(first, argv, began, timeout=300)
    finally:
        kill_group(first)
    note("  the second sweep:\n" + second.describe() + "\n  the first sweep:\n" + first_done.describe())
    problems = ["the second sweep, on a folder the first is writing: " + p for p in error_problems(second)]
    if not first_running:
        problems.append("inconclusive: the first sweep had finished before it could be stopped; lengthen the race config")
    if first_done.code != 0:
        problems.append(f"the first sweep exited {first_done.code}, expected 0")
    problems += ["the first sweep: " + p for p in no_traceback(first_done)]
    summary = sweep_summary(first_done.out)
    files = sorted(p.name for p in folder.glob("cell-*.parquet"))
    if summary is None:
        problems.append("the first sweep printed no summary")
    else:
        if len(files) != summary[0] or len(set(files)) != len(files):
            problems.append(f"{len(files)} cell files, expected each of the {summary[0]} cells once")
        if summary[1] != summary[0]:
            problems.append(f"the first sweep ran {summary[1]} of {summary[0]} cells: the second computed some")
    leftovers = [p.name for p in folder.glob(".*") if p.name.endswith(".tmp")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    bad = [p for p in files if read_cell(folder / p) is None]
    if bad:
        problems.append(f"unreadable cells: {bad}")
    fail_if(problems, "  the second sweep:\n" + second.describe(), "  the first sweep:\n" + first_done.describe())


def mostly_nonfinite_variant_never_wins(ctx: Ctx) -> None:
    """A variant whose estimates are mostly non-finite (and the rest exactly 0) is never ranked or called a win."""
    text = config("nonfinite", batch_sizes="[4]", edit=lambda t: with_table(NONFINITE_TABLE)(
        t.replace('[[problems]]\nenv = "softmax-bandit"', '[[problems]]\nenv = "lqr"\noptions = { horizon = 100 }')
        .replace('sweep.baseline = ["none", "rloo"]', "")
        .replace('pairs = [["reinforce baseline=rloo", "reinforce"]]',
                 'pairs = [["is-trajectory behaviour=distance:100", "reinforce"]]')))
    ctx.write("sweep.toml", text)
    swept = ctx.cli("sweep", "sweep.toml", "--executor", "inprocess")
    assert swept.code == 0, "the sweep itself must run\n" + swept.describe()
    rows = pd.read_parquet(ctx.work / "results" / "nonfinite")
    flagged = rows[rows["variant"].str.startswith("is-trajectory") & (rows["problem"] == "lqr horizon=100")]
    assert len(flagged) and (flagged["nonfinite"] / flagged["reps"] > 0.05).all(), \
        "the scenario needs is-trajectory over 5% non-finite on lqr:\n" + flagged[["nonfinite", "reps"]].to_string()
    report = ctx.cli("report", "results/nonfinite", "--out", "out")
    problems = no_traceback(report)
    findings_path = ctx.work / "out" / "findings.txt"
    if report.code != 0 or not findings_path.is_file():
        problems.append(f"report exit {report.code}, findings.txt written: {findings_path.is_file()}")
        fail_if(problems, report.describe())
    findings = findings_path.read_text(encoding="utf-8")
    label = "is-trajectory behaviour=distance:100"
    wins = [line for line in findings.splitlines() if label in line and "lqr" in line and (
        re.search(rf"lowest MSE {re.escape(label)}", line) or re.search(rf"{re.escape(label)}[^;]*cuts variance", line)
        or re.search(r"cuts variance", line) and line.lstrip("- ").startswith(f"{label} vs"))]
    if wins:
        problems.append("the mostly non-finite variant is called a win:\n" + "\n".join("    " + w for w in wins))
    if not any(label in line and re.search(r"untrustworthy|never ranked|not a finding", line)
               for line in findings.splitlines()):
        problems.append("findings.txt never says the variant is untrustworthy / not ranked")
    summary = pd.read_csv(ctx.work / "out" / "summary.csv")
    rank_columns = [c for c in summary.columns if "rank" in c.lower()]
    for column in rank_columns:
        ranked = summary[(summary["variant"] == label) & summary[column].notna()] if "variant" in summary else []
        if len(ranked):
            problems.append(f"summary.csv ranks the variant ({column} = {list(ranked[column])})")
    fail_if(problems, report.describe(), "  findings.txt:\n" + textwrap.indent(findings, "    "))


SWEEP_SCENARIOS = [
    scenario("sweep-processes-one-failing-cell-keeps-the-others", "--executor processes with one failing cell "
             "(natural, singular Fisher): the 8 others written, the failure recorded and counted, exit 2",
             one_failing_cell_in_a_pool),
    corrupt_cell_is_recomputed("sweep-recomputes-a-truncated-cell", "a truncated cell file is recomputed by the "
                               "next `pgvar sweep` (it was reused forever)", truncate),
    corrupt_cell_is_recomputed("sweep-recomputes-a-zero-byte-cell", "a zero-byte cell file is recomputed",
                               lambda path: path.write_bytes(b""), issue=False),
    scenario("sweep-two-at-once-second-refused", "two sweeps on one results folder: the second exits 2 with one "
             "line, the first completes with every cell once", two_sweeps_at_once),
    duplicates("sweep-duplicate-estimator-tables-computed-once", "the same [[estimators]] table twice",
               with_table('[[estimators]]\nname = "reinforce"\nsweep.baseline = ["none", "rloo"]')(DUP), DUP),
    duplicates("sweep-duplicate-axis-values-computed-once", 'sweep.baseline = ["none", "none", "rloo"]',
               DUP.replace('["none", "rloo"]', '["none", "none", "rloo"]'), DUP),
    duplicates("sweep-duplicate-batch-sizes-computed-once", "batch_sizes = [2, 2, 4]",
               DUP.replace("batch_sizes = [2, 4]", "batch_sizes = [2, 2, 4]"), DUP),
    scenario("sweep-fresh-deletes-only-store-files", "--fresh keeps a user's file in the results folder and says "
             "how many files it deleted", fresh_deletes_only_store_files, issue=False),
    scenario("report-mostly-nonfinite-variant-never-a-win", "is-trajectory distance:100 on lqr H=100 (most "
             "estimates non-finite, the rest 0): not ranked lowest MSE, no 'cuts variance', named untrustworthy",
             mostly_nonfinite_variant_never_wins),
]


# ------------------------------------------------------------------------------------------ report

def first_cell(ctx: Ctx) -> Path:
    return ctx.cells()[0]


def damaged(how: Callable[[Ctx, Path], Any]) -> Callable[[Ctx], Any]:
    def setup(ctx: Ctx) -> None:
        ctx.results("base")
        victim = first_cell(ctx)
        ctx.info["victim"] = victim.name
        how(ctx, victim)

    return setup


def victim_named(ctx: Ctx) -> list[str | re.Pattern]:
    name = ctx.info["victim"]
    return [name, name[len("cell-"):-len(".parquet")]]


def cell_of_wrong_type(ctx: Ctx, path: Path) -> None:
    row = pd.read_parquet(path)
    row["variance_trace"] = row["variance_trace"].map(lambda v: f"{v} (text)")
    row["batch_size"] = row["batch_size"].astype(str)
    row.to_parquet(path, index=False)


def cell_of_other_schema(ctx: Ctx, path: Path) -> None:
    path.unlink()
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(path, index=False)


def cell_is_a_directory(ctx: Ctx, path: Path) -> None:
    path.unlink()
    path.mkdir()


def stale_names(ctx: Ctx) -> list[str | re.Pattern]:
    stale = ctx.prepared.stale_cells
    return [*stale, *(s[len("cell-"):-len(".parquet")] for s in stale),
            re.compile(rf"\b{len(stale)}\b[^\n]{{0,120}}(stale|left out|older|not (in|part of)|other config)", re.I),
            re.compile(rf"(stale|left out|older|not (in|part of)|other config)[^\n]{{0,120}}\b{len(stale)}\b", re.I)]


REPORT_CASES = [
    warn("report-stale-cells-of-an-older-config-left-out", "cells of an earlier, larger config (16 files, 8 "
         "planned): left out and listed, '8 finished of 8 planned'", lambda ctx: ctx.results("stale", "base"),
         stale_names, finished=lambda ctx: BASE_CELLS // 2),
    warn("report-cell-path-is-a-directory", "a cell path that is a directory (skipped silently with exit 0): named",
         damaged(cell_is_a_directory), victim_named, finished=lambda ctx: BASE_CELLS - 1),
    warn("report-truncated-cell", "a truncated cell file: a named warning and a count, the rest reported",
         damaged(lambda ctx, p: truncate(p)), victim_named, finished=lambda ctx: BASE_CELLS - 1),
    warn("report-zero-byte-cell", "a zero-byte cell file: named, the rest reported",
         damaged(lambda ctx, p: p.write_bytes(b"")), victim_named, finished=lambda ctx: BASE_CELLS - 1),
    warn("report-foreign-text-file", "a foreign text file in the results folder: named, not read as a cell",
         lambda ctx: (ctx.results("base"), ctx.write("results/base/notes.txt", "my notes\n")),
         lambda ctx: ["notes.txt"], finished=lambda ctx: BASE_CELLS),
    warn("report-subfolder", "a subfolder in the results folder: named, not read as cells",
         lambda ctx: (ctx.results("base"), ctx.write("results/base/extra/readme.txt", "hello\n")),
         lambda ctx: ["extra"], finished=lambda ctx: BASE_CELLS),
    warn("report-parquet-of-another-schema", "a Parquet file of another schema beside the cells: named",
         lambda ctx: (ctx.results("base"), pd.DataFrame({"a": [1]}).to_parquet(
             ctx.work / "results" / "base" / "other.parquet")), lambda ctx: ["other.parquet"],
         finished=lambda ctx: BASE_CELLS),
    warn("report-cell-file-of-another-schema", "a cell-*.parquet of another schema: named, not a crash",
         damaged(cell_of_other_schema), victim_named, finished=lambda ctx: BASE_CELLS - 1, issue=False),
    warn("report-column-of-the-wrong-type", "a cell whose columns hold text where numbers belong: named",
         damaged(cell_of_wrong_type), victim_named, finished=lambda ctx: BASE_CELLS - 1),
    error("report-out-is-the-results-folder", "--out equal to the results folder (the next report read its own "
          "CSVs as cells): refused, nothing written", ["report", "results/base", "--out", "results/base"],
          setup=lambda ctx: ctx.results("base"), mentions=("out",)),
    error("report-out-inside-the-results-folder", "--out results/base/report: refused, nothing written",
          ["report", "results/base", "--out", "results/base/report"], setup=lambda ctx: ctx.results("base"),
          mentions=("out",), issue=False),
    error("report-out-is-a-regular-file", "--out names a regular file", ["report", "results/base", "--out", "out"],
          setup=lambda ctx: (ctx.results("base"), ctx.write("out", "a file\n")), mentions=("out",)),
    error("report-out-unwritable-below-a-file", "--out below a regular file (unwritable even for root)",
          ["report", "results/base", "--out", "blocker/out"],
          setup=lambda ctx: (ctx.results("base"), ctx.write("blocker", "a file\n")), mentions=("out", "blocker")),
    error("report-out-unwritable-under-proc", "--out under /proc", ["report", "results/base", "--out",
                                                                      "/proc/pgvar-report"],
          setup=lambda ctx: ctx.results("base"), mentions=("out", "/proc"), issue=False),
    error("report-out-is-the-current-folder", "--out . (a report replaces its --out folder whole): refused, "
          "nothing deleted", ["report", "results/base", "--out", "."],
          setup=lambda ctx: (ctx.results("base"), ctx.write("canary.txt", "a user's file\n")), mentions=("out",),
          issue=False),
    error("report-out-is-a-parent-folder", "--out .. : refused, nothing deleted", ["report", "results/base",
                                                                                   "--out", ".."],
          setup=lambda ctx: (ctx.results("base"), ctx.write("canary.txt", "a user's file\n")), mentions=("out",),
          issue=False),
    error("report-out-holds-a-users-files", "--out a folder holding a user's files (replaced whole, they would "
          "be lost): refused, nothing changed", ["report", "results/base", "--out", "mine"],
          setup=lambda ctx: (ctx.results("base"), ctx.write("mine/thesis.tex", "\\documentclass{article}\n")),
          mentions=("out", "mine"), issue=False),
    error("report-results-folder-is-a-regular-file", "the results folder argument is a regular file",
          ["report", "results/base", "--out", "out"], setup=regular_file("results/base"), issue=False),
    error("report-sweep-json-corrupt", "an unreadable _sweep.json", REPORT,
          setup=lambda ctx: (ctx.results("base"), ctx.write("results/base/_sweep.json", "{not json")),
          mentions=("_sweep.json",), issue=False),
]


# --------------------------------------------------------------------------------- report scenarios

class DiskFull:
    """Makes the first write of a file whose name contains "index.html" write half its text, then raise
    ENOSPC, whichever way it is written (Path.write_text/write_bytes, Path.open, open)."""

    def __init__(self, monkeypatch):
        self.fired = []
        real_write_text, real_write_bytes, real_open = pathlib.Path.write_text, pathlib.Path.write_bytes, builtins.open
        real_path_open, outer = pathlib.Path.open, self

        def hit(target) -> bool:
            return not outer.fired and "index.html" in os.fspath(target) if isinstance(target, (str, os.PathLike)) \
                else False

        def full(target):
            outer.fired.append(os.fspath(target))
            return OSError(errno.ENOSPC, "No space left on device", os.fspath(target))

        def write_text(self_, data, *args, **kwargs):
            if hit(self_):
                real_write_text(self_, data[: len(data) // 2], *args, **kwargs)
                raise full(self_)
            return real_write_text(self_, data, *args, **kwargs)

        def write_bytes(self_, data):
            if hit(self_):
                real_write_bytes(self_, bytes(data)[: len(data) // 2])
                raise full(self_)
            return real_write_bytes(self_, data)

        class HalfFile:
            def __init__(self, handle, target):
                self.handle, self.target = handle, target

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                raise full(self.target)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()
                return False

            def __getattr__(self, name):
                return getattr(self.handle, name)

        def opener(real):
            def open_(file, mode="r", *args, **kwargs):
                handle = real(file, mode, *args, **kwargs)
                if any(m in mode for m in "wxa") and hit(file):
                    return HalfFile(handle, file)
                return handle
            return open_

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
        monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
        monkeypatch.setattr(pathlib.Path, "open", opener(real_path_open))
        monkeypatch.setattr(builtins, "open", opener(real_open))
        monkeypatch.setattr(io, "open", opener(io.open))


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.is_dir() else {}


def complete_page(path: Path) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8", errors="replace").rstrip().endswith("</html>")


def built_report(ctx: Ctx) -> dict[str, str]:
    """results/base and a complete report of it in out/; then one cell fewer, so the next build differs."""
    ctx.results("base")
    first = ctx.cli(*REPORT)
    assert first.code == 0 and complete_page(ctx.work / "out" / "index.html"), \
        "the first report must build\n" + first.describe()
    previous = folder_hashes(ctx.work / "out")
    ctx.cells()[-1].unlink()
    return previous


def cut_off_while_writing_index(ctx: Ctx, monkeypatch) -> None:
    previous = built_report(ctx)
    before = ctx.snapshot()
    with monkeypatch.context() as patch:
        disk = DiskFull(patch)
        cut = ctx.cli(*REPORT)
    problems = [] if disk.fired else ["inconclusive: the report never wrote a file named *index.html* "
                                      "through Path.write_text/write_bytes/open or open()"]
    problems += ["the cut-off build (disk full while writing index.html): " + p for p in error_problems(cut)]
    out = ctx.work / "out"
    left = folder_hashes(out)
    kept = left == previous
    again = ctx.cli(*REPORT)
    problems += ["the next build: " + p for p in no_traceback(again)]
    if again.code != 0:
        problems.append(f"the next build exited {again.code}")
    if not kept and "up to date" in again.out:
        problems.append("the cut-off build left a changed report and the next build calls it up to date")
    if not complete_page(out / "index.html"):
        problems.append("after the next build index.html is still not complete (no closing </html>)")
    html = (out / "index.html").read_text(encoding="utf-8", errors="replace") if (out / "index.html").is_file() else ""
    if report_counts(html) != (BASE_CELLS - 1, BASE_CELLS):
        problems.append(f"after the next build the page counts {report_counts(html)}, expected "
                        f"({BASE_CELLS - 1}, {BASE_CELLS}): the previous report was kept as up to date")
    changed = changes(before, ctx.snapshot(), ["out"])
    if changed:
        problems.append(f"{len(changed)} change(s) outside out/ (temporary files left behind?)")
    mixed = sorted(k for k in set(left) | set(previous) if left.get(k) != previous.get(k))
    fail_if(problems, f"  injected ENOSPC into: {disk.fired}\n  the cut-off build left out/ "
            + ("identical to the previous report" if kept else f"changed in {mixed}"),
            "  the cut-off build:\n" + cut.describe(), "  the next build:\n" + again.describe(),
            changed_text(changed))


def killed_report_keeps_the_previous(ctx: Ctx) -> None:
    """SIGKILL a `pgvar report` child from the moment it starts writing (a new entry in out/ or beside it, or a
    changed file in out/) to just before it would have finished: out/ must always be the previous report whole
    or the new one whole, never a mix (or, killed between two renames, out/ absent with the previous report whole
    beside it for the next build to restore); the rerun then gives the complete new report and leaves nothing
    beside out/."""
    previous = built_report(ctx)
    out, saved = ctx.work / "out", ctx.tmp / "previous-out"
    shutil.copytree(out, saved)
    reference = ctx.tmp / "reference-out"  # the complete new report, built undisturbed elsewhere
    built = ctx.cli("report", "results/base", "--out", str(reference))
    assert built.code == 0, "the reference build must succeed\n" + built.describe()
    new = folder_hashes(reference)
    stable_names = [n for n in new if n.endswith((".csv", ".txt"))]  # index.html may carry volatile text

    def state() -> tuple:
        listing = []
        for folder in (ctx.work, out):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []:
                try:
                    stat = entry.stat(follow_symlinks=False)
                    listing.append((folder.name, entry.name, stat.st_size, stat.st_mtime_ns))
                except FileNotFoundError:
                    pass
        return tuple(listing)

    def is_new(files: dict[str, str]) -> bool:
        return set(files) == set(new) and all(files.get(n) == new[n] for n in stable_names) \
            and complete_page(out / "index.html")

    def classify() -> str:
        now = folder_hashes(out)
        if now == previous:
            return "previous"
        if is_new(now):
            return "new"
        if not out.exists():
            beside = [p for p in ctx.work.iterdir() if p.is_dir() and p.name.startswith(f".{out.name}.")]
            if any(folder_hashes(p) == previous for p in beside):
                return "previous-beside"
            return "ABSENT (no whole previous report beside it: " + ", ".join(p.name for p in beside) + ")"
        return "A MIX: " + ", ".join(sorted(k for k in set(now) | set(previous) if now.get(k) != previous.get(k)))

    def start() -> tuple[subprocess.Popen, float | None, float]:
        """A child on out/ = the previous report; returns it, when it first wrote (None: it never did), start."""
        if out.exists() or not any(p.name.startswith(f".{out.name}.") for p in ctx.work.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(saved, out)
        quiet, began = state(), time.perf_counter()
        proc = ctx.popen(*REPORT)
        while proc.poll() is None and time.perf_counter() - began < CHILD_TIMEOUT:
            if state() != quiet:
                return proc, time.perf_counter() - began, began
            time.sleep(0.002)
        return proc, None, began

    problems, log = [], []
    baseline_work = ctx.snapshot()
    # An undisturbed build first: how long it writes, from its first write to its exit.
    proc, first_write, began = start()
    untouched = finish(proc, REPORT, began)
    span = max(0.0, untouched.seconds - (first_write or untouched.seconds))
    log.append(f"    undisturbed: exit {untouched.code}, first write at {first_write} s, writing for {span:.2f} s; "
               f"out/ = {classify()}")
    if untouched.code != 0:
        problems.append(f"the undisturbed build exited {untouched.code}")
    for fraction in (0.0, 0.35, 0.7, 0.9, 0.97):
        proc, first_write, began = start()
        if first_write is not None:
            time.sleep(fraction * span)
        finished_first = proc.poll() is not None
        kill_group(proc)
        proc.communicate()
        found = classify()
        log.append(f"    killed {fraction:.0%} into the writing ({fraction * span:.2f} s after the first write at "
                   f"{first_write} s){' — it had already exited' if finished_first else ''}: out/ = {found}")
        if found not in ("previous", "new", "previous-beside"):
            problems.append(f"killed {fraction:.0%} into its writing, the report left out/ neither the previous "
                            "report nor the complete new one")
    rerun = ctx.cli(*REPORT)
    problems += ["the rerun: " + p for p in no_traceback(rerun)]
    if rerun.code != 0 or not is_new(folder_hashes(out)):
        problems.append(f"the rerun (exit {rerun.code}) did not leave the complete new report in out/")
    beside = changes(baseline_work, ctx.snapshot(), ["out"])
    if beside:
        problems.append("killed builds left files beside out/ that the next build did not remove")
    note("  builds:\n" + "\n".join(log))
    fail_if(problems, "  builds:\n" + "\n".join(log), "  the rerun:\n" + rerun.describe(), changed_text(beside))


REPORT_SCENARIOS = [
    Case("report-cut-off-while-writing-index-is-not-up-to-date", "scenario", "disk full while writing index.html "
         "(a rebuild after a change): one-line error, the previous report kept whole or the next build rebuilds; "
         "never a truncated page taken as up to date", lambda ctx: cut_off_while_writing_index(ctx, ctx.monkeypatch)),
    scenario("report-sigkill-keeps-the-previous-report", "SIGKILL of `pgvar report` mid-build, at several moments: "
             "out/ is the previous report or the complete new one, never CSVs without their index.html; the rerun "
             "completes and nothing is left beside out/", killed_report_keeps_the_previous),
]

CASES = MEASURE_CASES + SWEEP_CASES + SWEEP_SCENARIOS + REPORT_CASES + REPORT_SCENARIOS
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


# ------------------------------------------------------------------------------------------ fixtures

@dataclass(frozen=True)
class Prepared:
    folders: dict[str, Path]  # name → a finished results folder: base (BASE), stale (see below)
    stale_cells: tuple[str, ...]  # the cell files of `stale` that its _sweep.json does not plan


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Prepared:
    """BASE run once; and `stale`: the sweep of BASE at N = 4 only, its folder also holding the N = 2 cells of
    the earlier, larger BASE run (the same cell ids at N = 4)."""
    from bench.sweep import load_config, run_sweep

    root = tmp_path_factory.mktemp("prepared")
    cache = root / "cache"
    old = os.environ.get("PGVAR_CACHE_DIR")
    os.environ["PGVAR_CACHE_DIR"] = str(cache)
    try:
        (root / "base.toml").write_text(config())
        run_sweep(load_config(root / "base.toml"), root / "results", executor="inprocess")
        (root / "small.toml").write_text(config(batch_sizes="[4]"))
        run_sweep(load_config(root / "small.toml"), root / "small", executor="inprocess")
    finally:
        if old is None:
            os.environ.pop("PGVAR_CACHE_DIR", None)
        else:
            os.environ["PGVAR_CACHE_DIR"] = old
    base, stale = root / "results" / "base", root / "small" / "base"
    planned = {p.name for p in stale.glob("cell-*.parquet")}
    extra = sorted({p.name for p in base.glob("cell-*.parquet")} - planned)
    assert len(list(base.glob("cell-*.parquet"))) == BASE_CELLS and len(planned) == len(extra) == BASE_CELLS // 2
    for name in extra:
        shutil.copy2(base / name, stale / name)
    return Prepared({"base": base, "stale": stale}, tuple(extra))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, prepared, tmp_path, capsys, caplog, monkeypatch):
    case.run(Ctx(tmp_path, prepared, capsys, caplog, monkeypatch))


def test_the_table_covers_the_issue():
    """Issue 14 lists 51 inputs that did not hold; each is a case here (plus this file's own)."""
    assert sum(c.issue for c in CASES) >= 51
