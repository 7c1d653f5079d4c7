"""Progress of long work (a measurement's batches, a sampled reference, a training run, a sweep's cells) on stderr:
a tqdm bar on a terminal; elsewhere (a log file, a pipe, a CI log) a line every PROGRESS_SECONDS; nothing when the
caller disables it (`--quiet`, `show_progress=False`) or under CI=true."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from tqdm import tqdm

PROGRESS_SECONDS = 20.0  # between two lines when stderr is not a terminal
INTERVAL_ENV = "PGVAR_PROGRESS_SECONDS"  # overrides it (a positive number of seconds), e.g. for tests


def progress_bar(total: int, desc: str, enabled: bool = True) -> tqdm | ProgressLines:
    """A tqdm bar on stderr if it is a terminal, else `ProgressLines`; silent (a disabled tqdm) when not `enabled`
    or under CI=true. Either is used as `with progress_bar(...) as bar: bar.update(n)`."""
    if not enabled or os.environ.get("CI", "").lower() == "true":
        return tqdm(total=total, desc=desc, disable=True)
    if not sys.stderr.isatty():
        return ProgressLines(total, desc, progress_seconds())
    return tqdm(total=total, desc=desc, leave=False)


def progress_seconds() -> float:
    """PROGRESS_SECONDS, or $PGVAR_PROGRESS_SECONDS when it is a positive number (anything else is ignored: a
    progress interval is not worth failing a command for)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return PROGRESS_SECONDS
    return value if 0 < value < float("inf") else PROGRESS_SECONDS


class ProgressLines:
    """The part of tqdm's interface the callers use (`update`, `set_postfix_str`, `disable`, a context manager), as
    lines `<desc>: <done>/<total> (<p>%), <t> s elapsed, ~<s> s left` written every `interval` seconds by a timer
    thread, so that a log shows signs of life even while one long step (a chunk of batches, a slow cell) runs.
    No line at the end: the command's own output says it finished, so work shorter than the interval prints
    nothing. The postfix (e.g. "2 failed") is appended when set."""

    disable = False

    def __init__(self, total: int, desc: str, interval: float, stream: TextIO | None = None):
        self.total, self.desc, self.interval = total, desc, interval
        self.stream = stream if stream is not None else sys.stderr
        self.n, self.postfix = 0, ""
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name=f"progress {desc}", daemon=True)
        self._thread.start()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def line(self) -> str:
        elapsed = time.monotonic() - self.began
        done, total = self.n, self.total
        text = f"{self.desc}: {done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")
        text += (f", {self.postfix}" if self.postfix else "") + f", {elapsed:.0f} s elapsed"
        if max(1, total // 50) <= done < total:  # a linear ETA, once it rests on more than the first few steps
            text += f", ~{elapsed / done * (total - done):.0f} s left"
        return text

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                print(self.line(), file=self.stream, flush=True)
            except (OSError, ValueError):  # stderr closed (a reader left): progress is not worth an error
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
