"""What the sweep tests of measurements (test_sweep.py) and of training runs (test_train_sweep.py) share: killing a
sweep with SIGKILL mid-way and checking that the rerun gives every cell once and the uninterrupted numbers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.store import ResultsStore
from bench.sweep import load_config, run_sweep


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    """A sweep config file from TOML text (dedented)."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def toml_value(value: Any) -> str:
    """A number, string, bool, list or table (dict) as a TOML value: JSON's form but for tables, `{ k = v, … }`."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def set_keys(text: str, table: str, **values: Any) -> str:
    """The sweep config `text` with keys of its `[table]` set: a key's `key = …` line of that table replaced by the
    value (`toml_value`), a key it does not have added under the header; the rest of the text unchanged."""
    header = f"[{table}]\n"
    before, found, after = text.partition(header)
    assert found and header not in after, f"expected one [{table}] table"
    end = re.search(r"^\[", after, re.MULTILINE)  # where the next table starts
    body, rest = (after[:end.start()], after[end.start():]) if end else (after, "")
    for key, value in values.items():
        line = f"{key} = {toml_value(value)}\n"
        body, count = re.subn(rf"^{re.escape(key)} = .*\n", lambda _: line, body, flags=re.MULTILINE)
        body = body if count else line + body
    return before + header + body + rest


def stored_rows(results: Path, volatile: list[str]) -> pd.DataFrame:
    """The rows of a results folder by cell id, without the `volatile` columns (timings) that differ between runs."""
    return pd.read_parquet(results).drop(columns=volatile).sort_values("cell_id").reset_index(drop=True)


def kill_then_resume(path: Path, tmp_path: Path, name: str, total: int,
                     rows: Callable[[Path], pd.DataFrame]) -> None:
    """Run the sweep at `path` (results folder `name`, `total` planned cells) in a new process group with two
    workers, SIGKILL the whole group once 5 cells are written, rerun it, and compare with a clean run: every cell
    exactly once, no temporary file left, and `rows` (the stored rows without their timings) equal."""
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    command = [sys.executable, "-m", "pgvar", "sweep", str(path), "--results", str(killed_root), "--workers", "2"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ResultsStore(killed_root / name)
    deadline = time.monotonic() + 120
    while len(store.finished()) < 5:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, "no cell finished within 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 5 <= len(store.finished()) < total, "the kill must interrupt the sweep"

    summary = run_sweep(load_config(path), killed_root, executor="processes", workers=2)
    assert summary.reused >= 5 and summary.reused + summary.ran == total
    files = sorted(p.name for p in (killed_root / name).iterdir() if p.name.startswith("cell-"))
    assert len(files) == total == len(set(files))
    assert not list((killed_root / name).glob(".*.tmp"))

    run_sweep(load_config(path), clean_root, executor="processes", workers=2)
    killed, clean = rows(killed_root / name), rows(clean_root / name)
    assert killed["cell_id"].is_unique and len(killed) == total
    pd.testing.assert_frame_equal(killed, clean)
